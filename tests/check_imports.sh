#!/bin/sh
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
# Usage: check_imports.sh PLUGIN LIST GENERATION BROKER...
#
# Fails unless the mosquitto_* functions the plugin imports (its undefined dynamic symbols)
#  1. are exactly those LIST (tests/broker-imports.txt) names for GENERATION (20 or 21, the
#     Mosquitto headers the plugin was built against: CMake's PRESENCE_MOSQUITTO_GENERATION),
#     so that the list documents what the plugin calls, and
#  2. are exported by each BROKER binary given, or by a shared library that the broker or the
#     plugin loads (`ldd`): that is where the dynamic linker looks when the broker dlopen()s the
#     plugin. A 2.0 broker built the upstream way exports only its src/linker.syms (34
#     functions in Debian's 2.0.21), Debian 12's 2.0.11 exports 89, Debian's 2.1.2 exports 150
#     (the MQTT 5 property functions among them); a plugin importing anything else does not
#     load there. Weak imports too: a broker the plugin is meant for must have them all (the
#     2.1 build imports its 2.1-only functions weakly only to refuse a 2.0 broker with a
#     message).
# tests/CMakeLists.txt passes the broker the suite runs against ($MOSQUITTO_BIN) and those of
# PRESENCE_IMPORT_CHECK_BROKERS (tests/compat/run.sh lists the other brokers of the matrix).
set -eu

if [ $# -lt 4 ]; then
	echo "usage: $0 PLUGIN LIST GENERATION BROKER..." >&2
	exit 2
fi
plugin=$1
list=$2
generation=$3
shift 3

# The mosquitto_* names a binary or library defines for others.
exports_of() {
	nm -D --defined-only "$1" | awk '$2 ~ /^[TWiV]$/ && $3 ~ /^mosquitto_/ {sub(/@.*/, "", $3); print $3}'
}

# The shared libraries a binary loads, as paths (fails when one is not found).
libraries_of() {
	deps=$(ldd "$1") || return 1
	if printf '%s\n' "$deps" | grep -q 'not found'; then
		printf '%s: %s\n' "$1" "$(printf '%s\n' "$deps" | grep 'not found' | tr -s ' \t' ' ')" >&2
		return 1
	fi
	printf '%s\n' "$deps" | awk '$2 == "=>" && $3 ~ /^\// {print $3}'
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
nm -D --undefined-only "$plugin" | awk '{sub(/@.*/, "", $2); print $2}' | grep '^mosquitto_' |
	sort -u >"$tmp/used"
count=$(wc -l <"$tmp/used")
plugin_libs=$(libraries_of "$plugin")
status=0

awk -v g="$generation" '$1 !~ /^#/ { for (i = 2; i <= NF; i++) if ($i == g) print $1 }' "$list" |
	sort -u >"$tmp/documented"
undocumented=$(comm -23 "$tmp/used" "$tmp/documented" | tr "\n" " ")
unused=$(comm -13 "$tmp/used" "$tmp/documented" | tr "\n" " ")
if [ -n "$undocumented" ]; then
	echo "the plugin ($generation build) calls broker functions that $list does not list for $generation:" "$undocumented"
	status=1
fi
if [ -n "$unused" ]; then
	echo "$list lists for $generation functions that the plugin ($generation build) does not call:" "$unused"
	status=1
fi

for broker in "$@"; do
	if [ ! -x "$broker" ]; then
		echo "$broker: not an executable"
		status=1
		continue
	fi
	libs=$(libraries_of "$broker") || { status=1; continue; }
	# shellcheck disable=SC2086 # lists of paths without spaces
	for f in "$broker" $libs $plugin_libs; do exports_of "$f"; done | sort -u >"$tmp/available"
	missing=$(comm -23 "$tmp/used" "$tmp/available" | tr "\n" " ")
	version=$("$broker" -h 2>&1 | sed -n 's/^mosquitto version //p' | head -n 1)
	if [ -n "$missing" ]; then
		echo "$broker (mosquitto ${version:-?}) does not export what the plugin imports:" "$missing"
		status=1
	else
		echo "$broker (mosquitto ${version:-?}): all $count imports exported"
	fi
done
exit $status
