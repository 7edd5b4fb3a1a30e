#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
# What bounds cost over a long life (issue 15): the plugin with many known users against the
# bare broker holding as many retained documents, the state file's writes, and Redis.
#
#   tests/bench/lifetime.sh [--sizes 1000,100000,1000000] [--runs N] [--redis-users N]
#                           [--smoke] [--keep DIR]
#
# For each size N (known users), in one run:
# - plugin: a broker whose state file (written here, version 2, after an unclean stop) records
#   N offline users u0000000..; the plugin republishes their N documents at startup. Measured:
#   the time from starting the broker to its first accepted connection, its RSS, and again
#   after a clean restart (the clean start publishes nothing).
# - bare: the same broker binary without the plugin, filled with the same N retained documents
#   (loadgen --mode fill: same bytes, same MQTT 5 properties). Its RSS.
# - memory per known user beyond the broker's own retained store: (RSS plugin - RSS bare) / N.
# - broker CPU per connect and per disconnect: loadgen storms of 1000 of the known users (10
#   cycles), on both brokers, alternating, --runs times; medians, and the ratio plugin/bare.
# - state file bytes per state write: one user writes its state 100 times a second for 10 s
#   (mosquitto_pub -l, QoS 1); the broker's bytes written (/proc/PID/io wchar) over the writes.
#   And per session start or end: 1000 users connect and disconnect once.
# Then, in cluster mode with a real redis-server (--redis-users, default 100000): Redis memory
# per user (used_memory after that many users came and went through a broker), and its peak
# growth while one user with 4 sessions floods 8 KB states for 15 s (no write limit).
#
# --smoke uses tiny sizes (seconds). Prints one table; figures go to tests/bench/README.md by
# hand. Every broker and server started here is stopped on exit.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
sizes="1000,100000,1000000"
runs=3
redis_users=100000
smoke=false
keep=""
while [ $# -gt 0 ]; do
	case "$1" in
	--sizes) sizes="$2"; shift 2 ;;
	--runs) runs="$2"; shift 2 ;;
	--redis-users) redis_users="$2"; shift 2 ;;
	--smoke) smoke=true; shift ;;
	--keep) keep="$2"; shift 2 ;;
	-h | --help) sed -n '2,27p' "${BASH_SOURCE[0]}"; exit 0 ;;
	*) echo "lifetime.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
done
writes=1000
flood_s=15
if $smoke; then
	sizes="1000,3000"; runs=1; redis_users=2000; writes=100; flood_s=2
fi

bash "$root/scripts/ensure-deps.sh" redis-server
build="$root/${PRESENCE_BENCH_BUILD_DIR:-build-bench}"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DPRESENCE_SANITIZE=OFF \
	-DPRESENCE_WERROR=ON >/dev/null
cmake --build "$build" --target mosquitto_presence presence_loadgen -j"$(nproc)" >/dev/null
plugin="$build/plugin/mosquitto_presence.so"
loadgen="$build/tests/bench/loadgen"
mosquitto="${MOSQUITTO_BIN:-/usr/sbin/mosquitto}"
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# shellcheck source=tests/bench/common.sh
. "$here/common.sh"
bench_begin lifetime.sh

rows=()
row() { rows+=("$(printf '| %-28s | %-10s | %14s | %s |' "$1" "$2" "$3" "$4")"); }

now_ms() { date +%s%3N; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
wchar() { awk '/^wchar:/ { print $2 }' "/proc/$1/io"; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { tr ' ' '\n' | awk -F= -v k="$1" '$1 == k { print $2 }'; }

# start NAME KIND [extra lines]: starts a broker (bare or plugin) in $work/NAME; sets $port,
# $pid and $start_ms (how long until it accepted a connection).
start() {
	local kind="$2" extra="${3:-}" dir="$work/$1" t0
	mkdir -p "$dir"
	port=$((20000 + RANDOM % 12000))
	{
		echo "listener $port 127.0.0.1"
		echo "allow_anonymous true"
		echo "persistence false"
		echo "log_dest file $dir/broker.log"
		echo "log_type error"
		echo "log_type warning"
		echo "log_type information"
		echo "connection_messages false"
		echo "sys_interval 0"
		echo "set_tcp_nodelay true"
		echo "max_queued_messages 0"
		[ "$(id -u)" != 0 ] || echo "user root"
		if [ "$kind" != bare ]; then
			echo "plugin $plugin"
			echo "plugin_opt_auth allow"
			echo "plugin_opt_acl allow"
			echo "plugin_opt_max_writes_per_second 0"
			echo "plugin_opt_metrics_interval 0"
		fi
		[ -z "$extra" ] || printf '%s\n' "$extra"
	} >"$dir/mosquitto.conf"
	t0=$(now_ms)
	"$mosquitto" -c "$dir/mosquitto.conf" >>"$dir/broker.log" 2>&1 &
	pid=$!
	bench_pids+=("$pid")
	"$loadgen" --mode ping --port "$port" --timeout 600 >/dev/null
	start_ms=$(($(now_ms) - t0))
}


# state_file PATH N: a version 2 snapshot of N offline users (seq 1) and a journal that ends
# without a stop record (the broker was killed).
state_file() {
	awk -v n="$2" 'BEGIN {
		print "{\"format\":\"mosquitto-presence-state\",\"version\":2,\"generation\":1,\"seq_floor\":0}"
		for (i = 0; i < n; i++)
			printf "{\"username\":\"u%07d\",\"seq\":1,\"since\":1764265200000,\"available\":false}\n", i
		printf "{\"end\":true,\"users\":%d}\n", n
	}' >"$1"
	printf '%s\n%s\n' '{"format":"mosquitto-presence-journal","version":2,"generation":1}' \
		'{"start":true,"seq_shift":0}' >"$1.journal"
}

storm_cpu() { # PORT PID: broker CPU us per connect and per disconnect
	"$loadgen" --mode storm --pattern plain --port "$1" --broker-pid "$2" --users 1000 \
		--cycles 10 --timeout 600
}

IFS=, read -r -a size_list <<<"$sizes"
for n in "${size_list[@]}"; do
	echo "lifetime.sh: $n known users" >&2
	state_file "$work/state-$n.json" "$n"
	start "plugin-$n" plugin "plugin_opt_state_file $work/state-$n.json
plugin_opt_forget_after 0"
	ppid=$pid pport=$port
	row "startup, unclean ($n)" plugin "${start_ms} ms" "loads $n users, republishes their documents"
	start "bare-$n" bare
	bpid=$pid bport=$port
	"$loadgen" --mode fill --port "$bport" --broker-pid "$bpid" --users "$n" --seq 1001 \
		--timeout 1200 >"$work/fill-$n.txt"
	sleep 1
	prss=$(rss_kib "$ppid") brss=$(rss_kib "$bpid")
	row "RSS ($n known)" plugin "$prss KiB" ""
	row "RSS ($n retained)" bare "$brss KiB" ""
	row "memory per known user ($n)" plugin "$(( (prss - brss) * 1024 / n )) B" "RSS plugin - RSS bare, / users"
	pc=() pd=() bc=() bd=()
	for _ in $(seq 1 "$runs"); do
		line=$(storm_cpu "$pport" "$ppid"); pc+=("$(field cpu_us_per_connect <<<"$line")"); pd+=("$(field cpu_us_per_disconnect <<<"$line")")
		line=$(storm_cpu "$bport" "$bpid"); bc+=("$(field cpu_us_per_connect <<<"$line")"); bd+=("$(field cpu_us_per_disconnect <<<"$line")")
	done
	mpc=$(printf '%s\n' "${pc[@]}" | median) mbc=$(printf '%s\n' "${bc[@]}" | median)
	mpd=$(printf '%s\n' "${pd[@]}" | median) mbd=$(printf '%s\n' "${bd[@]}" | median)
	row "CPU us/connect ($n)" plugin "$mpc" "bare $mbc: x$(awk -v a="$mpc" -v b="$mbc" 'BEGIN { printf "%.3f", a / b }')"
	row "CPU us/disconnect ($n)" plugin "$mpd" "bare $mbd: x$(awk -v a="$mpd" -v b="$mbd" 'BEGIN { printf "%.3f", a / b }')"
	# State file bytes per state write: one user, 100 writes a second.
	w0=$(wchar "$ppid")
	for i in $(seq 1 "$writes"); do
		echo "v$i"
		sleep 0.01
	done | mosquitto_pub -l -p "$pport" -q 1 -i writer -u u0000000 -t presence/u0000000/state/k
	sleep 2.5
	w1=$(wchar "$ppid")
	row "state file B/state write ($n)" plugin "$(( (w1 - w0) / writes ))" "$writes writes at 100/s; wchar"
	w0=$(wchar "$ppid")
	"$loadgen" --mode storm --pattern plain --port "$pport" --users 1000 --cycles 1 --timeout 600 >/dev/null
	sleep 2.5
	w1=$(wchar "$ppid")
	row "state file B/session start or end ($n)" plugin "$(( (w1 - w0) / 2000 ))" "1000 users, once"
	bench_stop "$bpid" 60
	# A clean stop, then a clean start: nothing to republish.
	bench_stop "$ppid" 60
	start "plugin-$n" plugin "plugin_opt_state_file $work/state-$n.json
plugin_opt_forget_after 0"
	row "startup, clean ($n)" plugin "${start_ms} ms" "loads $n users"
	row "state file size ($n)" plugin "$(( $(stat -c %s "$work/state-$n.json") + $(stat -c %s "$work/state-$n.json.journal") )) B" "snapshot + journal"
	bench_stop "$pid" 60
done

# Cluster mode: Redis memory per user, and under a flood.
sock="$work/redis.sock"
redis-server --port 0 --unixsocket "$sock" --save "" --appendonly no --dir "$work" \
	--logfile "$work/redis.log" >/dev/null &
bench_pids+=("$!")
for _ in $(seq 100); do redis-cli -s "$sock" ping >/dev/null 2>&1 && break; sleep 0.1; done
used() { redis-cli -s "$sock" info memory | awk -F: '/^used_memory:/ { print $2 + 0 }'; }
start cluster cluster "plugin_opt_cluster_url unix:$sock
plugin_opt_broker_id b1
plugin_opt_forget_after 0
plugin_opt_max_state_bytes 9000"
cpid=$pid cport=$port
m0=$(used)
"$loadgen" --mode storm --pattern plain --port "$cport" --users "$redis_users" --batch 10000 \
	--hosts 8 --cycles 1 --timeout 1200 >/dev/null
sleep 3
m1=$(used)
row "Redis B/user ($redis_users)" cluster "$(( (m1 - m0) / redis_users ))" "used_memory, users came and went (their stream records included)"
streammem=$(redis-cli -s "$sock" memory usage '{presence}:log' samples 0)
logbytes=$(redis-cli -s "$sock" get '{presence}:logbytes')
row "stream after the users" cluster "$(( streammem / 1024 )) KiB" "MEMORY USAGE; counted $logbytes B (budget 16777216)"
# The flood: 4 sessions of one user, 8 KB states, QoS 1, as fast as acknowledged.
m0=$(used) peak=$m0
blob=$(head -c 8000 /dev/zero | tr '\0' x)
flooders=()
for s in 1 2 3 4; do
	(
		end=$(($(date +%s) + flood_s))
		i=0
		while [ "$(date +%s)" -lt "$end" ]; do
			for _ in $(seq 50); do i=$((i + 1)); echo "{\"blob\":\"$s-$i-$blob\"}"; done
		done | mosquitto_pub -l -p "$cport" -q 1 -i "flood$s" -u flood -t presence/flood/state
	) &
	flooders+=("$!")
done
end=$(($(date +%s) + flood_s + 1))
while [ "$(date +%s)" -lt "$end" ]; do
	m=$(used)
	[ "$m" -le "$peak" ] || peak=$m
	sleep 0.5
done
wait "${flooders[@]}"
logbytes=$(redis-cli -s "$sock" get '{presence}:logbytes')
streammem=$(redis-cli -s "$sock" memory usage '{presence}:log' samples 0)
row "Redis growth under flood" cluster "$(( (peak - m0) / 1024 )) KiB" "${flood_s} s, 4 sessions, 8 KB states, from a stream of $redis_users users' records"
row "stream at the end" cluster "$(( streammem / 1024 )) KiB" "MEMORY USAGE; counted $logbytes B (budget 16777216)"
bench_stop "$cpid" 60

printf '| %-28s | %-10s | %14s | %s |\n' measure config value note
printf '|%s|%s|%s|%s|\n' "------------------------------" "------------" "----------------:" "------"
printf '%s\n' "${rows[@]}"
