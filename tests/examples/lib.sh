# shellcheck shell=bash
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
#
# Shared by the example tests (tests/examples/test_*.sh), sourced. Each test runs itself again
# inside a private network namespace (`unshare --net`, loopback only), so that the demo broker
# can use its default ports 1883 and 9001 without colliding with anything, and so that
# Mosquitto 2.0.11's websockets listener, which binds every interface whatever address it is
# given, is reachable from nowhere but this namespace.
#
# Environment (set by ctest, see tests/CMakeLists.txt): PRESENCE_SOURCE_DIR, PRESENCE_PLAIN_PLUGIN
# (the unsanitized plugin: the stock broker cannot load an ASan build without a preload),
# PRESENCE_WORK_DIR (where logs and artifacts are kept), MOSQUITTO_BIN.

set -euo pipefail

src=${PRESENCE_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
plugin=${PRESENCE_PLAIN_PLUGIN:-$src/build/plugin/mosquitto_presence.so}
PATH=$PATH:/usr/sbin # Debian's mosquitto
passed=${passed:-0} # carried over when a test re-executes itself
failed=${failed:-0}
broker_pid=

pass() { passed=$((passed + 1)); echo "PASS: $*"; }
fail() {
	failed=$((failed + 1))
	echo "FAIL: $1"
	if [ $# -gt 1 ]; then printf '%s\n' "$2" | sed 's/^/    /'; fi
}

# Re-executes the calling test in a new network namespace with only loopback up, unless it
# already runs in one. $@: the test's arguments.
enter_private_network() {
	if [ "${PRESENCE_PRIVATE_NET:-}" = 1 ]; then
		ip link set lo up
		return 0
	fi
	if ! unshare --net true 2>/dev/null; then
		echo "FAIL: cannot create a network namespace (unshare --net needs root or user namespaces)"
		exit 1
	fi
	PRESENCE_PRIVATE_NET=1 exec unshare --net -- bash "$0" "$@"
}

# A fresh work directory for this test: $work.
make_work_dir() { # NAME
	local base=${PRESENCE_WORK_DIR:-${TMPDIR:-/tmp}}
	mkdir -p "$base"
	work=$(mktemp -d "$base/$1.XXXXXX")
}

# Waits (bounded: $1 seconds) until "$2..." succeeds, checking every 50 ms.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			"$@"
			return
		fi
		sleep 0.05
	done
}

broker_running() { grep -q ' running$' "$work/broker.log"; }
broker_up_or_gone() { broker_running || ! kill -0 "$broker_pid" 2>/dev/null; }

# Starts examples/run-broker.sh with the tested plugin, in the background, with its files in
# $work/run and its log in $work/broker.log; extra environment as arguments (WS_PORT=0 ...).
start_demo_broker() {
	(cd "$src" && exec env PLUGIN="$plugin" RUN_DIR="$work/run" "$@" \
		timeout -k 5 600 examples/run-broker.sh) </dev/null >"$work/broker.log" 2>&1 &
	broker_pid=$!
	wait_for 120 broker_up_or_gone || true
	if broker_running; then
		pass "demo broker running: $* examples/run-broker.sh"
	else
		fail "the demo broker did not start" "$(tail -n 30 "$work/broker.log")"
		finish
	fi
}

stop_demo_broker() {
	if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
		kill -TERM "$broker_pid" 2>/dev/null || true
		wait "$broker_pid" 2>/dev/null || true
	fi
	broker_pid=
}

# The fenced block of the README after the marker line $1 (such as <!-- recipe dynsec -->).
readme_block() {
	awk -v marker="$1" '
		$0 == marker { found = 1; next }
		found == 1 && /^```/ { found = 2; next }
		found == 2 && /^```/ { exit }
		found == 2 { print }' "$src/README.md"
}

# Succeeds when file $1 has a line matching the extended regular expression $2.
has_line() { grep -Eq -- "$2" "$1" 2>/dev/null; }

# Waits (bounded) until file $1 has a line matching $2; a test step named $3.
expect_line() {
	if wait_for "${4:-15}" has_line "$1" "$2"; then
		pass "$3"
	else
		fail "$3: no line matching /$2/ in $1" "$(tail -n 20 "$1" 2>/dev/null)"
	fi
}

finish() {
	stop_demo_broker
	echo "$passed passed, $failed failed"
	if [ "$failed" -ne 0 ] || [ "$passed" -eq 0 ]; then exit 1; fi
	exit 0
}
