#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
#
# The browser test: examples/run-broker.sh serves the web buddy list (examples/clients/web/) on
# its websockets listener (on Mosquitto 2.1: on an http_api listener), and
# tests/browser/buddy_list.test.js drives Debian's headless chromium through it
# (playwright-core, installed with `npm ci` from tests/browser's lock file; it downloads no
# browser). alice comes and goes with the Python example, carol with the
# C example. Everything runs in a private network namespace (see lib.sh).
#
# Artifacts in the work directory: buddy-list.png (the page while alice is online and bob has
# set his status) and buddy-list-offline.png. UPDATE_README_SCREENSHOT=1 also copies the first
# to docs/buddy-list.png, the screenshot shown in the README.
# shellcheck source=tests/examples/lib.sh
. "$(dirname "$0")/lib.sh"
# npm needs the registry, and the private network namespace has no route out: install the
# locked packages (playwright-core for the test, MQTT.js for the page) before entering it.
if [ "${PRESENCE_PRIVATE_NET:-}" != 1 ] && command -v npm >/dev/null; then
	for dir in "$src/tests/browser" "$src/examples/clients/web"; do
		if [ ! "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
			if ! (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund) >&2; then
				echo "FAIL: npm ci in $dir"
				exit 1
			fi
		fi
	done
fi
enter_private_network "$@"
make_work_dir browser

for tool in chromium node npm; do
	if ! command -v "$tool" >/dev/null; then
		fail "$tool is not installed (tests/run.sh installs chromium; Node.js 20 and npm are required)"
		finish
	fi
done

export PRESENCE_DEVICE=${PRESENCE_DEVICE:-$src/build/examples/clients/c/device}
if [ ! -x "$PRESENCE_DEVICE" ]; then
	fail "no C example at $PRESENCE_DEVICE (configure with -DPRESENCE_EXAMPLES=ON)"
	finish
fi

lock=$src/tests/browser/package-lock.json
if [ ! "$src/tests/browser/node_modules/.package-lock.json" -nt "$lock" ]; then
	if (cd "$src/tests/browser" && npm ci --ignore-scripts --no-audit --no-fund) >"$work/npm.log" 2>&1; then
		pass "npm ci in tests/browser (playwright-core, as locked)"
	else
		fail "npm ci in tests/browser" "$(tail -n 20 "$work/npm.log")"
		finish
	fi
fi

# Where the page is: on 2.0 the websockets listener serves it; Mosquitto 2.1's websockets
# serve no files, so the demo serves it on an http_api listener (HTTP_PORT), the address names
# the websockets port, and that listener asks the browser for a broker user's name and
# password (HTTP Basic) before it serves anything. (`mosquitto -h` exits non-zero after
# printing its usage.)
page_user=
case "$("${MOSQUITTO_BIN:-/usr/sbin/mosquitto}" -h 2>&1 | sed -n 's/^mosquitto version //p' | head -n 1 || true)" in
2.0.*) page=http://localhost:9001/ ;;
*) page='http://localhost:9002/?broker=ws://localhost:9001/' page_user=bob ;;
esac
start_demo_broker PORT=1883 WS_PORT=9001 HTTP_PORT=9002
if grep -qF "open $page and log in" "$work/broker.log"; then
	pass "run-broker.sh says where to open the page: $page"
else
	fail "run-broker.sh does not print the page's address ($page)" "$(head -n 40 "$work/broker.log")"
fi

# The same address on 127.0.0.1, where the listeners are.
if (cd "$src/tests/browser" && PAGE_URL=${page//localhost/127.0.0.1} MQTT_PORT=1883 \
	PAGE_USER=$page_user PAGE_PASSWORD=${page_user:+$page_user-pw} \
	SCREENSHOT="$work/buddy-list.png" SCREENSHOT_OFFLINE="$work/buddy-list-offline.png" \
	timeout -k 5 120 node buddy_list.test.js) >"$work/browser.log" 2>&1; then
	pass "the page shows alice online, her state, bob's own status and alice offline"
else
	fail "the browser checks" "$(cat "$work/browser.log")"
fi
grep -E '^(PASS|FAIL)' "$work/browser.log" | sed 's/^/    /' || true

# The first line of the answer to a websocket upgrade on port 9001 with Origin $1 (none when
# empty), or "closed"; bounded by read's timeout.
ws_upgrade() {
	local line=closed
	exec 3<>/dev/tcp/127.0.0.1/9001
	printf 'GET / HTTP/1.1\r\nHost: 127.0.0.1:9001\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n%s\r\n' \
		"${1:+Origin: $1$'\r\n'}" >&3
	IFS= read -r -t 10 line <&3 || true
	exec 3<&-
	echo "${line%$'\r'}"
}
# expect_upgrade ORIGIN let-in|refused WHAT: a websocket upgrade with that Origin is answered
# as expected.
expect_upgrade() {
	local got let_in=refused
	got=$(ws_upgrade "$1")
	[[ "$got" != "HTTP/1.1 101 "* ]] || let_in=let-in
	if [ "$let_in" = "$2" ]; then pass "$3"; else fail "$3 (answer: ${got:-closed})"; fi
}
# Mosquitto 2.1 checks a websocket's Origin where websockets_origin is set, and the demo sets
# the page's own; 2.0 has no such check (README, "In the browser").
if [ -n "$page_user" ]; then
	origin=${page%%/\?*}
	for o in "$origin" "${origin//localhost/127.0.0.1}" ""; do
		expect_upgrade "$o" let-in "a websocket with Origin '${o:-none}' is let in"
	done
	expect_upgrade http://elsewhere.example refused "a websocket from another page's Origin is refused"
else
	expect_upgrade http://elsewhere.example let-in \
		"Mosquitto 2.0 lets in a websocket from any Origin (the README says so)"
fi
if [ -s "$work/buddy-list.png" ]; then
	pass "screenshot saved: $work/buddy-list.png"
	if [ "${UPDATE_README_SCREENSHOT:-}" = 1 ]; then
		mkdir -p "$src/docs"
		cp "$work/buddy-list.png" "$src/docs/buddy-list.png"
	fi
else
	fail "no screenshot at $work/buddy-list.png"
fi
finish
