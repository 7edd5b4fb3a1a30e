#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
#
# Runs examples/clients/c/device.c (built by the project's CMake; its path in $PRESENCE_DEVICE)
# against the demo broker started for a sleepy device, KEEP_STATE=true OFFLINE_DELAY=5
# examples/run-broker.sh, in a private network namespace (see lib.sh).
#
# The device wakes up twice without sleeping in between: a subscriber sees alice come online,
# her state become {"battery":87}, nothing about the short gap between the two wake-ups (it is
# within offline_delay, and the second write changes nothing), and, once the delay has passed,
# one offline document that keeps the battery level (keep_state). A second run with -b 86
# shows the new level. Wrong credentials make the device exit 1.
# shellcheck source=tests/examples/lib.sh
. "$(dirname "$0")/lib.sh"
enter_private_network "$@"
make_work_dir c-device
device=${PRESENCE_DEVICE:-$src/build/examples/clients/c/device}
if [ ! -x "$device" ]; then
	fail "no device example at $device (configure with -DPRESENCE_EXAMPLES=ON)"
	finish
fi
start_demo_broker PORT=1883 WS_PORT=0 KEEP_STATE=true OFFLINE_DELAY=5

watch=$work/watch.out
mosquitto_sub -p 1883 -u carol -P carol-pw -t presence/alice -v -W 120 >"$watch" &
watcher=$!
# The watcher's own document tells that its subscription is in place: subscribe to carol's too.
mosquitto_sub -p 1883 -u carol -P carol-pw -t presence/carol -C 1 -W 10 >/dev/null

doc() { # AVAILABLE SESSIONS STATE -> a regular expression for alice's document
	echo "^presence/alice \{\"username\":\"alice\",\"available\":$1,\"sessions\":$2,\"since\":[0-9]+,\"seq\":[0-9]+,\"state\":$3\}$"
}

if "$device" -h 127.0.0.1 -p 1883 -u alice -P alice-pw -b 87 -s 0 -n 2 >"$work/device.out" 2>&1; then
	pass "the device wakes up twice and exits 0"
else
	fail "the device failed" "$(cat "$work/device.out")"
fi
expect_line "$work/device.out" '^device: wake-up 2: alice set \{"battery":87\}$' "the device reports its second wake-up"
expect_line "$watch" "$(doc true 1 '\{\}')" "alice comes online"
expect_line "$watch" "$(doc true 1 '\{"battery":87\}')" "her state becomes {\"battery\":87}"
expect_line "$watch" "$(doc false 0 '\{"battery":87\}')" "after offline_delay she is offline, the battery level kept" 20
if [ "$(wc -l <"$watch")" -eq 3 ]; then
	pass "exactly these three documents: nothing about the gap between the wake-ups"
else
	fail "expected exactly three documents" "$(cat "$watch")"
fi

"$device" -h 127.0.0.1 -p 1883 -u alice -P alice-pw -b 86 -n 1 >>"$work/device.out" 2>&1 || true
expect_line "$watch" "$(doc true 1 '\{"battery":86\}')" "a later wake-up sets the new level"

status=0
"$device" -h 127.0.0.1 -p 1883 -u alice -P wrong -n 1 >"$work/refused.out" 2>&1 || status=$?
if [ "$status" -eq 1 ] && grep -q 'connection refused' "$work/refused.out"; then
	pass "wrong credentials: the device says the connection was refused and exits 1"
else
	fail "wrong credentials: status $status" "$(cat "$work/refused.out")"
fi
kill "$watcher" 2>/dev/null || true
wait "$watcher" 2>/dev/null || true
finish
