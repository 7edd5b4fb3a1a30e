#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
# The test matrix: the project's whole unit and integration suite (what tests/run.sh runs,
# README examples included) against each Mosquitto that users have.
#
#   tests/compat/run.sh [2.0.11|2.0.21|2.1.2|all] [ctest arguments]     (default: all)
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
# the .deb), sid/ (the chroot, about 1 GB; sid/.presence-chroot-ready marks a finished one, so a
# half-built one is rebuilt), sid.lock (held while the chroot is built or checked). The Debian
# mirror is taken from this machine's apt sources at run time.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${PRESENCE_CACHE_DIR:-/var/cache/mosquitto-presence}"

all_versions=(2.0.11 2.0.21 2.1.2)
backports_version="2.0.21-1~bpo12+1"
broker_2_0_21="$cache/mosquitto-2.0.21/usr/sbin/mosquitto"
chroot_dir="$cache/sid"
chroot_stamp="$chroot_dir/.presence-chroot-ready"
# What the suite needs inside the chroot: the packages of scripts/ensure-deps.sh and
# tests/run.sh, python3-paho-mqtt for manual checks, libc6-dev (only a Recommends of gcc: without
# it, CMake's compiler check fails) and binutils (nm, for the import check).
chroot_packages=(mosquitto mosquitto-dev libmosquitto-dev mosquitto-clients libcjson-dev
	libcmocka-dev uthash-dev libhiredis-dev redis-server cmake gcc make pkg-config python3-paho-mqtt valgrind libc6-dev
	binutils)

mounted=()        # mount points made by this script, in mount order
declare -A result # version -> one summary line

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

log() {
	echo "compat: $*" >&2
}

die() {
	log "$*"
	exit 2
}

# The Debian mirror of this machine's apt sources: the first URIs of a deb822 stanza (or the
# first one-line `deb` entry) whose suite is not a -security one.
debian_mirror() {
	local uri
	uri=$(awk '
		function flush() { if (uris != "" && suites != "" && suites !~ /-security/) { print uris; exit } uris = suites = "" }
		/^[[:space:]]*$/ { flush(); next }
		tolower($1) == "uris:" { uris = $2 }
		tolower($1) == "suites:" { $1 = ""; suites = $0 }
		END { flush() }' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
	if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
		uri=$(awk '$1 == "deb" && $3 !~ /-security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' \
			/etc/apt/sources.list)
	fi
	[ -n "$uri" ] || die "no Debian mirror found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list"
	echo "$uri"
}

# The version line of a broker binary, e.g. "2.0.21" (run with the given command prefix).
broker_version() {
	"$@" -h 2>&1 | sed -n 's/^mosquitto version //p' | head -n 1
}

# ---------------------------------------------------------------------------------------------
# 2.0.21: bookworm-backports' package, unpacked into the cache
# ---------------------------------------------------------------------------------------------

ensure_2_0_21() {
	local dir="$cache/mosquitto-2.0.21" apt="$cache/apt-backports" unpack deb
	# The broker links Debian 12's libwebsockets17, which 2.0.11 does not need.
	bash "$root/scripts/ensure-deps.sh" libwebsockets17
	if [ -x "$broker_2_0_21" ] && [ "$(broker_version "$broker_2_0_21")" = 2.0.21 ]; then
		return 0
	fi
	log "downloading mosquitto=$backports_version from bookworm-backports into $apt"
	mkdir -p "$apt/lists/partial" "$apt/archives/partial"
	echo "deb $(debian_mirror) bookworm-backports main" >"$apt/sources.list"
	# apt-get with a sources list and package lists of its own: the machine's apt sources and
	# lists stay as they are. The mirror may be a dated snapshot whose Release has expired.
	local opts=(-o "Dir::Etc::sourcelist=$apt/sources.list" -o "Dir::Etc::sourceparts=-"
		-o "Dir::State::Lists=$apt/lists" -o "Dir::Cache::archives=$apt/archives"
		-o "Acquire::Check-Valid-Until=false" -o "APT::Sandbox::User=root" -q)
	apt-get "${opts[@]}" update >&2
	(cd "$apt" && rm -f mosquitto_*.deb && apt-get "${opts[@]}" download "mosquitto=$backports_version" >&2)
	deb=$(ls "$apt"/mosquitto_*.deb)
	unpack="$dir.new"
	rm -rf "$unpack"
	dpkg -x "$deb" "$unpack"
	rm -rf "$dir"
	mv "$unpack" "$dir"
	[ "$(broker_version "$broker_2_0_21")" = 2.0.21 ] || die "$broker_2_0_21 is not mosquitto 2.0.21"
}

# ---------------------------------------------------------------------------------------------
# 2.1.2: a Debian sid chroot
# ---------------------------------------------------------------------------------------------

# Fails when anything is mounted below the chroot (a run in progress, or one that died without
# its clean-up): deleting it then would delete through the mounts.
chroot_unmounted() {
	if findmnt -rn -o TARGET | grep -q "^$chroot_dir/"; then
		log "something is mounted below $chroot_dir:"
		findmnt -rn -o TARGET | grep "^$chroot_dir/" >&2
		return 1
	fi
}

chroot_run() {
	chroot "$chroot_dir" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
		DEBIAN_FRONTEND=noninteractive "$@"
}

# debootstrap minbase, apt configured for the (possibly dated) mirror, no service starts.
build_chroot() {
	local mirror
	mirror=$(debian_mirror)
	chroot_unmounted || die "not rebuilding $chroot_dir"
	log "building a Debian sid chroot in $chroot_dir from $mirror (a few minutes, about 1 GB)"
	rm -rf --one-file-system "$chroot_dir"
	bash "$root/scripts/ensure-deps.sh" debootstrap
	debootstrap --variant=minbase sid "$chroot_dir" "$mirror" >&2
	echo 'Acquire::Check-Valid-Until "false";' >"$chroot_dir/etc/apt/apt.conf.d/99no-check-valid-until"
	printf '#!/bin/sh\nexit 101\n' >"$chroot_dir/usr/sbin/policy-rc.d"
	chmod +x "$chroot_dir/usr/sbin/policy-rc.d"
}

# Installs those of chroot_packages that are missing (all of them in a new chroot).
install_chroot_packages() {
	local pkg missing=()
	for pkg in "${chroot_packages[@]}"; do
		# shellcheck disable=SC2016 # a dpkg-query format, not a shell expansion
		case "$(chroot_run dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)" in
		ii*) ;;
		*) missing+=("$pkg") ;;
		esac
	done
	[ ${#missing[@]} -gt 0 ] || return 0
	log "installing into the chroot: ${missing[*]}"
	# apt-get needs /proc for some maintainer scripts.
	mount_in_chroot proc /proc -t proc
	chroot_run apt-get update -q >&2
	chroot_run apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
	unmount_all
}

# Makes sure a finished chroot with every package is there. A chroot without the stamp is
# half-built: one whose debootstrap did not finish (debootstrap removes its debootstrap/
# folder when it succeeds) is made again; one whose base system is complete only gets the
# packages.
ensure_chroot() {
	exec 9>"$cache/sid.lock"
	flock 9
	if [ ! -f "$chroot_stamp" ]; then
		if [ -d "$chroot_dir/debootstrap" ] || [ ! -x "$chroot_dir/usr/bin/apt-get" ]; then
			build_chroot
		fi
		install_chroot_packages
		date -u +%FT%TZ >"$chroot_stamp"
	else
		install_chroot_packages
	fi
	flock -u 9
	[ "$(broker_version chroot_run /usr/sbin/mosquitto)" = 2.1.2 ] ||
		die "the chroot's mosquitto is $(broker_version chroot_run /usr/sbin/mosquitto), not 2.1.2"
}

# mount_in_chroot SOURCE TARGET [mount options...]: mounts SOURCE at chroot_dir/TARGET (a bind
# mount unless options say otherwise) and remembers it for unmount_all.
mount_in_chroot() {
	local source="$1" target="$chroot_dir$2"
	shift 2
	mkdir -p "$target"
	if [ $# -gt 0 ]; then
		mount "$@" "$source" "$target"
	else
		mount --bind "$source" "$target"
	fi
	mounted+=("$target")
}

# Unmounts what mount_in_chroot mounted, in reverse order (lazily when busy).
unmount_all() {
	local i
	for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
		umount "${mounted[$i]}" 2>/dev/null || umount -l "${mounted[$i]}" ||
			log "could not unmount ${mounted[$i]}"
	done
	mounted=()
}
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
	local log="$1" status=0
	mount_in_chroot proc /proc -t proc
	mount_in_chroot /dev /dev
	mount_in_chroot /dev/shm /dev/shm
	mount_in_chroot "$root" "$root"
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
	counts=$(grep -E '^[0-9]+% tests passed' "$log" | tail -n 1 || true)
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
	2.0.11 | 2.0.21 | 2.1.2) versions=("$selection") ;;
	-h | --help) sed -n '2,25p' "${BASH_SOURCE[0]}"; exit 0 ;;
	*) die "unknown version $selection (2.0.11, 2.0.21, 2.1.2 or all)" ;;
	esac
	[ "$(id -u)" -eq 0 ] || die "needs root (apt-get, debootstrap, chroot, mount)"
	mkdir -p "$cache"
	# Brokers first (any failure here ends the script), then the suites (each runs, whatever
	# the others did).
	for v in "${versions[@]}"; do
		case "$v" in
		2.0.21) ensure_2_0_21 ;;
		2.1.2) ensure_chroot ;;
		esac
	done
	for v in "${versions[@]}"; do
		run_version "$v" || failed=1
	done
	echo
	echo "compat: summary (logs in build-compat/<version>.log)"
	for v in "${versions[@]}"; do
		printf '  mosquitto %-7s %s\n' "$v" "${result[$v]}"
	done
	return "$failed"
}

main "$@"
