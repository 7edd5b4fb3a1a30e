#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
# The log flood of issue 11, measured against one plugin build.
#
#   tests/bench/log_flood.sh PLUGIN.so [COUNT]
#
# Starts /usr/sbin/mosquitto (or $MOSQUITTO_BIN) on a free port of 127.0.0.1 with PLUGIN.so
# (auth allow, acl allow, metrics every second), then one MQTT 3.1.1 client of user alice sends
# COUNT (default 10000) state writes that are rejected ("[]" merged into the state) and one
# anonymous client sends COUNT publishes to presence/x, which are denied, all at QoS 0
# (mosquitto_pub -l, one message per line). Prints how long that took, how many lines the plugin
# logged (about these, and in all) and the plugin's $SYS counters once they reach COUNT.
set -euo pipefail

plugin="$1"
count="${2:-10000}"
mosquitto="${MOSQUITTO_BIN:-/usr/sbin/mosquitto}"
work="$(mktemp -d)"
broker=""
cleanup() {
	[ -z "$broker" ] || kill "$broker" 2>/dev/null || true
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

while :; do
	port=$((20000 + RANDOM % 20000))
	ss -ltn "sport = :$port" | grep -q LISTEN || break
done
cat >"$work/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
log_type all
log_dest file $work/broker.log
plugin $plugin
plugin_opt_auth allow
plugin_opt_acl allow
plugin_opt_metrics_interval 1
CONF
if [ "$(id -u)" -eq 0 ]; then echo "user root" >>"$work/mosquitto.conf"; fi
"$mosquitto" -c "$work/mosquitto.conf" >/dev/null 2>&1 &
broker=$!
for _ in $(seq 100); do
	mosquitto_pub -p "$port" -t ping -n 2>/dev/null && break
	sleep 0.1
done

start=$(date +%s.%N)
yes '[]' | head -n "$count" | mosquitto_pub -p "$port" -V 311 -u alice -i alice1 -q 0 \
	-t presence/alice/state -l &
writer=$!
yes '{}' | head -n "$count" | mosquitto_pub -p "$port" -V 311 -i anon1 -q 0 -t presence/x -l &
denied=$!
wait "$writer" "$denied"
# The counters (retained, published every second) say when the broker has handled every
# message; at most 60 s. A build without publishes/denied is waited for until then.
for _ in $(seq 60); do
	mosquitto_sub -p "$port" -t '$SYS/broker/presence/state/rejected' \
		-t '$SYS/broker/presence/publishes/denied' -v -C 2 -W 2 >"$work/counters" 2>/dev/null || true
	[ "$(awk -v n="$count" '$2 >= n' "$work/counters" | wc -l)" -eq 2 ] && break
	sleep 1
done
end=$(date +%s.%N)
sleep 2 # the last "suppressed" summary comes about a second after the flood
echo "sent $count rejected writes and $count denied publishes in $(echo "$end - $start" | bc) s"
echo "plugin lines about them: $(grep -c 'mosquitto-presence: \(rejected state write\|denied publish\|[0-9]* more lines\)' "$work/broker.log")"
echo "plugin lines in all: $(grep -c 'mosquitto-presence:' "$work/broker.log")"
cat "$work/counters"
