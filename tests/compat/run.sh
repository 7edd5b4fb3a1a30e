#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
# The test matrix: the project's whole unit and integration suite (what tests/run.sh runs,
# README examples included) against each Mosquitto that users have.
#
#   tests/compat/run.sh [VERSIONS] [ctest arguments]
#
# VERSIONS: all (the default), or one or more of 2.0.11, 2.0.21 and 2.1.2, comma-separated
# (`tests/compat/run.sh 2.0.21,2.1.2 -L unit`).
#
# - 2.0.11: Debian 12's broker (the system package): tests/run.sh, built into build-compat/2.0.11.
# - 2.0.21: Debian 12 bookworm-backports' broker (the 2.0.21 of Debian 13), downloaded with
#   apt-get and unpacked with dpkg -x into $cache/mosquitto-2.0.21 (the system broker is not
#   touched). The plugin and the tests are built on the host (Debian 12 headers) into
#   build-compat/2.0.21, with MOSQUITTO_BIN pointing at that broker.
# - 2.1.2: Debian sid's broker, in a Debian sid chroot ($cache/sid, made with debootstrap). The
#   source tree is bind-mounted into it at the same path, and tests/run.sh builds the plugin
#   and the tests there against 2.1's headers, into build-compat/2.1.2, and runs them against
#   the chroot's /usr/sbin/mosquitto (which shares the host's loopback).
#
# Runs every version asked for, also after a failure, then prints one summary line per version;
# exits non-zero when any failed. Needs root (apt-get, debootstrap, chroot, mount).
#
# Cache ($PRESENCE_CACHE_DIR, default /var/cache/mosquitto-presence; built once per machine,
# outside the clone): mosquitto-2.0.21/ (the unpacked package), apt-backports/ (apt's lists and
# the .deb), sid/ (the chroot, about 2.5 GB; sid/.presence-chroot-ready marks a finished one, so a
# half-built one is rebuilt), sid.lock (held while the chroot is built or checked). The Debian
# mirror is taken from this machine's apt sources at run time.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

all_versions=(2.0.11 2.0.21 2.1.2)
declare -A result # version -> one summary line

# shellcheck source=tests/compat/brokers.sh
. "$root/tests/compat/brokers.sh"
trap unmount_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------

# run_host VERSION BROKER [further brokers for the import check...]: tests/run.sh on the host,
# in build-compat/VERSION, against BROKER. Output goes to the terminal and to $log.
run_host() {
	local version="$1" broker="$2" log="$3"
	shift 3
	local brokers
	brokers=$(IFS=';' && echo "$*")
	PRESENCE_BUILD_DIR="build-compat/$version" \
		PRESENCE_CMAKE_ARGS="-DMOSQUITTO_BIN=$broker -DPRESENCE_IMPORT_CHECK_BROKERS=$brokers" \
		bash "$root/tests/run.sh" "${ctest_args[@]}" 2>&1 | tee "$log"
}

# run_chroot LOG: tests/run.sh inside the chroot, on the bind-mounted source tree.
run_chroot() {
	local log="$1" status=0 dir
	# The browser test's npm packages are installed here, on the host: the chroot trusts only
	# Debian's CA list, not what this machine adds to reach the npm registry (a proxy's CA),
	# and the packages are plain JavaScript, the same for the chroot's Node.js. The test inside
	# then finds them up to date and does not call npm.
	if command -v npm >/dev/null; then
		for dir in "$root/tests/browser" "$root/examples/clients/web"; do
			if [ ! "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
				(cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund) >&2 ||
					log "npm ci in $dir failed; the browser test in the chroot will try again"
			fi
		done
	fi
	mount_for_run
	chroot_run PRESENCE_BUILD_DIR=build-compat/2.1.2 ${PRESENCE_TIMEOUT_SCALE:+PRESENCE_TIMEOUT_SCALE=$PRESENCE_TIMEOUT_SCALE} \
		bash "$root/tests/run.sh" "${ctest_args[@]}" 2>&1 | tee "$log" || status=$?
	unmount_all
	return "$status"
}

# run_version VERSION: prepares the broker, runs the suite, records the summary line.
run_version() {
	local version="$1" started status=0 counts
	local log="$root/build-compat/$version.log"
	started=$SECONDS
	mkdir -p "$root/build-compat"
	: >"$log"
	log "=== mosquitto $version ==="
	case "$version" in
	2.0.11)
		local also=()
		[ ! -x "$broker_2_0_21" ] || also=("$broker_2_0_21")
		run_host 2.0.11 /usr/sbin/mosquitto "$log" "${also[@]}" || status=$?
		;;
	2.0.21) run_host 2.0.21 "$broker_2_0_21" "$log" /usr/sbin/mosquitto || status=$? ;;
	2.1.2) run_chroot "$log" || status=$? ;;
	esac
	# tests/run.sh runs ctest twice (the suite, then the fuzz harnesses): add up both.
	counts=$(awk '/^[0-9]+% tests passed, [0-9]+ tests failed out of [0-9]+$/ {
			runs++; failed += $4; total += $9 }
		END { if (runs) printf "%d of %d tests passed in %d ctest run(s)", total - failed, total, runs }' "$log")
	if [ "$status" -eq 0 ]; then
		result[$version]="passed: ${counts:-?} ($((SECONDS - started)) s)"
	else
		result[$version]="FAILED: ${counts:-build or setup failed, see $log} ($((SECONDS - started)) s)"
	fi
	return "$status"
}

main() {
	local selection="${1:-all}" versions=() v failed=0
	[ $# -eq 0 ] || shift
	ctest_args=("$@")
	case "$selection" in
	all) versions=("${all_versions[@]}") ;;
	-h | --help) sed -n "2,$(($(grep -n '^set -euo' "${BASH_SOURCE[0]}" | cut -d: -f1) - 1))p" "${BASH_SOURCE[0]}"; exit 0 ;;
	*)
		IFS=, read -r -a versions <<<"$selection"
		for v in "${versions[@]}"; do
			case "$v" in
			2.0.11 | 2.0.21 | 2.1.2) ;;
			*) die "unknown version $v (2.0.11, 2.0.21, 2.1.2 or all)" ;;
			esac
		done
		;;
	esac
	[ "$(id -u)" -eq 0 ] || die "needs root (apt-get, debootstrap, chroot, mount)"
	mkdir -p "$cache"
	# Brokers first (any failure here ends the script), then the suites (each runs, whatever
	# the others did).
	local prepared=$SECONDS
	for v in "${versions[@]}"; do
		case "$v" in
		2.0.21) ensure_2_0_21 ;;
		2.1.2) ensure_chroot ;;
		esac
	done
	prepared=$((SECONDS - prepared))
	for v in "${versions[@]}"; do
		run_version "$v" || failed=1
	done
	echo
	echo "compat: summary (logs in build-compat/<version>.log; brokers ready in $prepared s)"
	for v in "${versions[@]}"; do
		printf '  mosquitto %-7s %s\n' "$v" "${result[$v]}"
	done
	return "$failed"
}

main "$@"
