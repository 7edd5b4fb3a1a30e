#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
# The query amplification attack of issue 11, measured against one plugin build.
#
#   tests/bench/query_attack.sh PLUGIN.so QUERYATTACK [REQUESTS]
#
# Starts /usr/sbin/mosquitto (or $MOSQUITTO_BIN) on a free port of 127.0.0.1 with PLUGIN.so
# (auth allow, acl allow, keep_state true), makes 100 users big0..big99 with a state of 8000
# bytes each, and prints:
#   - the reply to one 9 KB request naming big0 1000 times, and to one naming big0..big6 and
#     big0..big99 (reply_bytes);
#   - the broker's resident memory (VmRSS, kB) before and after an MQTT 3.1.1 client sends
#     REQUESTS (default 200) of the 9 KB requests at QoS 0 and never reads its socket, and again
#     for REQUESTS x 10 requests naming big0..big6 (the largest reply that fits the default
#     budget), each attack on a fresh broker. "After" is read once the broker's memory has not
#     moved for 3 s (at most 120 s).
# QUERYATTACK is the queryattack binary (tests/bench/queryattack.c). Every broker and client
# started here is stopped on exit.
set -euo pipefail

plugin="$1"
qa="$2"
requests="${3:-200}"
mosquitto="${MOSQUITTO_BIN:-/usr/sbin/mosquitto}"
work="$(mktemp -d)"
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

start_broker() {
	port=0
	while :; do
		port=$((20000 + RANDOM % 20000))
		ss -ltn "sport = :$port" | grep -q LISTEN || break
	done
	cat >"$work/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
log_type error
sys_interval 0
plugin $plugin
plugin_opt_auth allow
plugin_opt_acl allow
plugin_opt_keep_state true
CONF
	if [ "$(id -u)" -eq 0 ]; then echo "user root" >>"$work/mosquitto.conf"; fi
	"$mosquitto" -c "$work/mosquitto.conf" >"$work/broker.log" 2>&1 &
	broker=$!
	pids+=("$broker")
	for _ in $(seq 100); do
		"$qa" reply "$port" nobody 1 >/dev/null 2>&1 && break
		sleep 0.1
	done
	"$qa" setup "$port" 100 8000
}

# Waits until the broker's RSS has not moved by more than 1% for 3 s (at most 120 s).
settle() {
	local last now stable=0
	last=$(rss "$broker")
	for _ in $(seq 120); do
		sleep 1
		now=$(rss "$broker")
		if [ $((now - last)) -le $((last / 100)) ] && [ $((last - now)) -le $((last / 100)) ]; then
			stable=$((stable + 1))
			[ $stable -ge 3 ] && break
		else
			stable=0
		fi
		last=$now
	done
	echo "$now"
}

attack() {
	local label="$1" mode="$2" count="$3" arg="$4" before after
	start_broker
	before=$(rss "$broker")
	mkfifo "$work/hold"
	"$qa" "$mode" "$port" "$count" $arg <"$work/hold" >"$work/flood.out" &
	pids+=("$!")
	exec 3>"$work/hold"
	for _ in $(seq 600); do grep -q sent "$work/flood.out" 2>/dev/null && break; sleep 0.1; done
	after=$(settle)
	echo "$label: $(cat "$work/flood.out") rss_before_kb=$before rss_after_kb=$after"
	exec 3>&-
	rm -f "$work/hold"
	kill "$broker"
	wait "$broker" 2>/dev/null || true
}

start_broker
echo "reply big0 x1000: $("$qa" reply "$port" big0 1000)"
echo "reply big0..big6: $("$qa" replymany "$port" 7)"
echo "reply big0..big99: $("$qa" replymany "$port" 100)"
kill "$broker"
wait "$broker" 2>/dev/null || true

attack "flood big0 x1000" flood "$requests" "big0 1000"
attack "flood big0..big6" floodmany "$((requests * 10))" "7"
