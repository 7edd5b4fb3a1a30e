#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
#
# The browser test: examples/run-broker.sh serves the web dashboard (examples/clients/web/) on
# its websockets listener (on Mosquitto 2.1: on an http_api listener), and
# tests/browser/buddy_list.test.js drives Debian's headless chromium through it
# (playwright-core, installed with `npm ci` from tests/browser's lock file; it downloads no
# browser), with real clients: the Python and the C examples, and mosquitto_pub. Halfway, the
# driver asks for a broker restart (a line "BROKER stop", then "BROKER start", on its output),
# which this script makes with the same configuration and state file. Everything runs in a
# private network namespace (see lib.sh).
#
# On Mosquitto 2.1 it also checks that the http_api listener gives a demo user the page and
# nothing else (not /api/v1/...: the MQTT ACL grants no $SYS topic); on 2.0 that no such
# listener is there.
#
# Artifacts in the work directory: buddy-list.png (900 px wide, while alice, bob and dave are
# online) and buddy-list-phone.png (390 px wide). UPDATE_README_SCREENSHOT=1 also copies them
# to docs/, the screenshots shown in the README.
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
# dave, erin and frank as well: six users, for the count, the order and the search.
demo_env=(PORT=1883 WS_PORT=9001 HTTP_PORT=9002 "USERS=dave erin frank")
start_demo_broker "${demo_env[@]}"
if grep -qF "open $page and log in" "$work/broker.log"; then
	pass "run-broker.sh says where to open the page: $page"
else
	fail "run-broker.sh does not print the page's address ($page)" "$(head -n 40 "$work/broker.log")"
fi

# The driver, on the same address on 127.0.0.1 (where the listeners are); its output goes to
# browser.log, and its last line is "EXIT <status>".
run_driver() {
	local status=0
	(cd "$src/tests/browser" && PAGE_URL=${page//localhost/127.0.0.1} MQTT_PORT=1883 \
		PAGE_USER=$page_user PAGE_PASSWORD=${page_user:+$page_user-pw} \
		SCREENSHOT="$work/buddy-list.png" SCREENSHOT_PHONE="$work/buddy-list-phone.png" \
		exec timeout -k 5 180 node buddy_list.test.js) 2>&1 || status=$?
	echo "EXIT $status"
}
driver_status=
while IFS= read -r line; do
	case "$line" in
	'BROKER stop') stop_demo_broker ;;
	'BROKER start') start_demo_broker "${demo_env[@]}" ;;
	'EXIT '*) driver_status=${line#EXIT } ;;
	esac
	printf '%s\n' "$line" >>"$work/browser.log"
done < <(run_driver)
if [ "$driver_status" = 0 ]; then
	pass "the dashboard: count, order, search, states, dates, phone layout, the invisible switch, status through a restart"
else
	fail "the browser checks (exit status ${driver_status:-none})" "$(cat "$work/browser.log")"
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
# The status code of a GET of path $2 on 127.0.0.1 port $1, with HTTP Basic credentials $3
# (user:password; none when empty), or "closed"; bounded by read's timeout.
http_status() {
	local line=closed auth=
	if [ -n "${3:-}" ]; then auth="Authorization: Basic $(printf '%s' "$3" | base64 -w0)"$'\r\n'; fi
	if ! exec 3<>"/dev/tcp/127.0.0.1/$1"; then
		echo closed
		return
	fi 2>/dev/null
	printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\n%sConnection: close\r\n\r\n' "$2" "$1" "$auth" >&3
	IFS= read -r -t 10 line <&3 || true
	exec 3<&-
	line=${line%$'\r'}
	case "$line" in HTTP/*) line=${line#* } && echo "${line%% *}" ;; *) echo "$line" ;; esac
}
# expect_http PORT PATH USER:PASSWORD STATUS WHAT
expect_http() {
	local got
	got=$(http_status "$1" "$2" "$3")
	if [ "$got" = "$4" ]; then pass "$5"; else fail "$5 (answer: $got, not $4)"; fi
}
# The HTTP API grants a demo user nothing its MQTT ACL does not: Mosquitto 2.1's http_api
# listener checks the path as a topic to read, and the demo's ACL grants the page's files by
# exact path, so every /api/ path is refused (401) to every demo user, and to nobody logged in;
# the page is served. Mosquitto 2.0 has no HTTP API: nothing listens on HTTP_PORT, and its
# websockets listener serves only the page's folder.
if [ -n "$page_user" ]; then
	for user in alice bob carol dave; do
		for path in /api/v1/systree /api/v1/listeners /api/v1/version; do
			expect_http 9002 "$path" "$user:$user-pw" 401 "the HTTP API refuses $path to $user"
		done
	done
	expect_http 9002 /api/v1/systree '' 401 "the HTTP API refuses /api/v1/systree without a login"
	for path in / /index.html /app.js /node_modules/mqtt/dist/mqtt.min.js; do
		expect_http 9002 "$path" bob:bob-pw 200 "the http_api listener serves the page's $path to bob"
	done
	expect_http 9002 /package.json bob:bob-pw 401 "the http_api listener serves nothing else of the folder (/package.json)"
else
	expect_http 9002 / '' closed "Mosquitto 2.0: no http_api listener (nothing on port 9002)"
	expect_http 9001 /api/v1/systree '' 404 "Mosquitto 2.0's websockets listener has no /api/v1/systree"
fi
for shot in buddy-list.png buddy-list-phone.png; do
	if [ -s "$work/$shot" ]; then
		pass "screenshot saved: $work/$shot"
		if [ "${UPDATE_README_SCREENSHOT:-}" = 1 ]; then
			mkdir -p "$src/docs"
			cp "$work/$shot" "$src/docs/$shot"
		fi
	else
		fail "no screenshot at $work/$shot"
	fi
done
finish
