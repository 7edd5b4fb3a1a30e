#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
#
# Runs examples/clients/python/buddy_list.py against the demo broker (examples/run-broker.sh,
# in a private network namespace, see lib.sh) twice: with the system's paho-mqtt (Debian 12's
# 1.6), and with paho-mqtt 2.x from Debian 13 (scripts/cache-paho2.sh unpacks it once per machine into
# /var/cache/mosquitto-presence/paho-mqtt-2 and this test puts it on PYTHONPATH).
#
# Each run, as bob watching alice, carol and zed: carol (offline, retained document) and zed
# (never seen, answered by the query) are shown once each, alice going online, changing her
# state and going offline is shown, alice going invisible removes her (the zero-length message
# on presence/alice) and going visible again shows her again, and a status typed on stdin
# becomes bob's state. Then the
# backend example, examples/clients/python/offline_alerts.py, reports alice's comings and goings.
# shellcheck source=tests/examples/lib.sh
. "$(dirname "$0")/lib.sh"

# Outside the namespace: the network is needed once, to fetch paho 2 into the cache. Where the
# system's paho is 2.x already (the Debian sid chroot of tests/compat/run.sh), the system run
# covers 2.x and nothing is fetched.
system_paho=$(/usr/bin/python3 -c 'import paho.mqtt; print(paho.mqtt.__version__)' 2>&1 || true)
if [ "${PRESENCE_PRIVATE_NET:-}" != 1 ] && [[ "$system_paho" != 2.* ]]; then
	if ! PAHO2_PATH=$(bash "$src/scripts/cache-paho2.sh"); then
		echo "FAIL: scripts/cache-paho2.sh could not provide paho-mqtt 2"
		exit 1
	fi
	export PAHO2_PATH
fi
enter_private_network "$@"
make_work_dir python-buddy-list
python=/usr/bin/python3
debian=$(cat /etc/debian_version 2>/dev/null || echo unknown) # 12.x: the system's paho must be 1.x
example=$src/examples/clients/python/buddy_list.py
start_demo_broker PORT=1883 WS_PORT=0

# carol comes and goes before the buddy list starts: her retained document says offline.
mosquitto_sub -p 1883 -u carol -P carol-pw -t presence/carol -C 1 -W 10 >/dev/null

# Succeeds when file $1 has a line matching $3 after the last line matching $2 (extended
# regular expressions).
has_line_after() {
	awk -v a="$2" -v b="$3" '$0 ~ a { seen = 1; found = 0; next } seen && $0 ~ b { found = 1 }
		END { exit !found }' "$1" 2>/dev/null
}

run_once() { # LABEL PYTHONPATH
	local label=$1 out="$work/$1.out" fifo="$work/$1.stdin" pid alice status version
	version=$(PYTHONPATH=$2 "$python" -c 'import paho.mqtt; print(paho.mqtt.__version__)')
	echo "--- $label: paho-mqtt $version"
	# The system's paho (1.6 on Debian 12, where this suite runs; 2.x in the Debian sid chroot of
	# tests/compat/run.sh), then Debian 13's 2.x.
	case "$label:$version:$debian" in
		system:1.*:* | system:2.*:[!1]* | paho2:2.*:*) pass "$label: paho-mqtt $version is the one imported" ;;
		*) fail "$label: expected another paho-mqtt, got $version" ;;
	esac
	mkfifo "$fifo"
	PYTHONPATH=$2 timeout -k 5 120 "$python" "$example" -H 127.0.0.1 -p 1883 -u bob -P bob-pw \
		alice carol zed <"$fifo" >"$out" 2>&1 &
	pid=$!
	exec 7>"$fifo" # stdin of the example stays open until fd 7 is closed
	expect_line "$out" '^bob is online \(1 session\) since [0-9:]+, state \{\}$' "$label: bob sees himself online"
	expect_line "$out" '^carol is offline \(0 sessions\) since [0-9:]+, state \{\}$' "$label: carol is shown offline"
	expect_line "$out" '^zed is unknown \(never seen\)$' "$label: the query says zed is unknown"

	mosquitto_sub -p 1883 -u alice -P alice-pw -i alice-phone -t presence/alice/error >/dev/null &
	alice=$!
	expect_line "$out" '^alice is online \(1 session\) since' "$label: alice goes online"
	mosquitto_pub -p 1883 -u alice -P alice-pw -t presence/alice/state/status -m away
	expect_line "$out" "^alice is online \\(2 sessions\\) since [0-9:]+, state \\{\"status\":\"away\"\\}\$" \
		"$label: alice's new state is shown"
	# Invisible: bob's list loses alice; visible again: she is back (a document newer than any).
	mosquitto_pub -p 1883 -u alice -P alice-pw -t presence/alice/privacy -m '{"visible_to":"nobody"}'
	expect_line "$out" '^alice is gone \(forgotten, or hidden from you\)$' \
		"$label: alice goes invisible: the zero-length message removes her"
	mosquitto_pub -p 1883 -u alice -P alice-pw -t presence/alice/privacy -m '{"visible_to":"everyone"}'
	if wait_for 15 has_line_after "$out" '^alice is gone ' \
		'^alice is online \(1 session\) since [0-9:]+, state \{"status":"away"\}$'; then
		pass "$label: alice visible again: shown online again, with her state"
	else
		fail "$label: alice visible again: not shown again" "$(tail -n 20 "$out")"
	fi
	echo busy >&7
	expect_line "$out" '^bob is online \(1 session\) since [0-9:]+, state \{"status":"busy"\}$' \
		"$label: a status typed on stdin becomes bob's state"
	kill -INT "$alice"
	wait "$alice" || true
	expect_line "$out" '^alice is offline \(0 sessions\) since [0-9:]+, state \{\}$' "$label: alice goes offline"

	exec 7>&- # end of stdin: the example disconnects and exits
	status=0
	wait "$pid" || status=$?
	if [ "$status" -eq 0 ]; then pass "$label: exits 0 at the end of stdin"; else fail "$label: exit status $status" "$(cat "$out")"; fi
	if [ "$(grep -c '^carol ' "$out")" -eq 1 ] && [ "$(grep -c '^zed ' "$out")" -eq 1 ]; then
		pass "$label: carol and zed are shown once each (the query's answers and the retained documents, ordered by seq)"
	else
		fail "$label: carol and zed should be shown once each" "$(cat "$out")"
	fi
}

# examples/clients/python/offline_alerts.py, the backend example, as carol: reports alice
# coming online and going offline, and nothing about what was retained before it started.
run_alerts() { # LABEL PYTHONPATH
	local label=$1 out="$work/$1-alerts.out" pid alice
	# --foreground: our SIGINT reaches the example once; without it timeout also signals its
	# whole process group, and a second SIGINT landing after Python restored the default
	# handler at exit would kill it (status 130).
	PYTHONPATH=$2 timeout --foreground -k 5 120 "$python" "$src/examples/clients/python/offline_alerts.py" \
		-H 127.0.0.1 -p 1883 -u carol -P carol-pw >"$out" 2>&1 &
	pid=$!
	expect_line "$out" '^watching presence/\+$' "$label alerts: subscribed"
	mosquitto_sub -p 1883 -u alice -P alice-pw -t presence/alice/error >/dev/null &
	alice=$!
	expect_line "$out" '^alice came online at [0-9:]+$' "$label alerts: alice came online"
	kill -INT "$alice"
	wait "$alice" || true
	expect_line "$out" '^alice went offline at [0-9:]+ \(online since [0-9:]+\)$' "$label alerts: alice went offline"
	# To the example itself: timeout (here $pid) started in the background inherits SIGINT
	# ignored, and newer coreutils (Debian sid's) then neither catch nor relay it.
	pkill -INT -P "$pid"
	local status=0
	wait "$pid" || status=$?
	if [ "$status" -eq 0 ]; then pass "$label alerts: Ctrl-C disconnects and exits 0"; else fail "$label alerts: exit status $status after Ctrl-C"; fi
	if [ "$(wc -l <"$out")" -eq 3 ]; then
		pass "$label alerts: nothing else reported (retained documents are not events)"
	else
		fail "$label alerts: expected three lines" "$(cat "$out")"
	fi
}

run_once system ""
run_alerts system ""
if [ -n "${PAHO2_PATH:-}" ]; then
	run_once paho2 "$PAHO2_PATH"
	run_alerts paho2 "$PAHO2_PATH"
fi
finish
