#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
#
# The browser test: examples/run-broker.sh serves the web buddy list (examples/clients/web/) on
# its websockets listener, and tests/browser/buddy_list.test.js drives Debian's headless
# chromium through it (playwright-core, installed with `npm ci` from tests/browser's lock
# file; it downloads no browser). alice comes and goes with the Python example, carol with the
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

start_demo_broker PORT=1883 WS_PORT=9001
if grep -q 'open http://localhost:9001/' "$work/broker.log"; then
	pass "run-broker.sh says where to open the page"
else
	fail "run-broker.sh does not print the page's address" "$(head -n 40 "$work/broker.log")"
fi

if (cd "$src/tests/browser" && PAGE_URL=http://127.0.0.1:9001/ MQTT_PORT=1883 \
	SCREENSHOT="$work/buddy-list.png" SCREENSHOT_OFFLINE="$work/buddy-list-offline.png" \
	timeout -k 5 120 node buddy_list.test.js) >"$work/browser.log" 2>&1; then
	pass "the page shows alice online, her state, bob's own status and alice offline"
else
	fail "the browser checks" "$(cat "$work/browser.log")"
fi
grep -E '^(PASS|FAIL)' "$work/browser.log" | sed 's/^/    /' || true
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
