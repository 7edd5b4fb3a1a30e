#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
#
# Cluster-mode benchmarks (README "Several brokers", tests/bench/README.md "Cluster mode"):
#   tests/bench/cluster.sh [--runs N] [--keep DIR] [--scenarios C1,C2,...]
#
# Builds the Release plugin and loadgen in build-bench/ (as run.sh does), starts one
# redis-server on a unix socket (persistence off) and brokers on 127.0.0.1, and measures:
#   C1 broker CPU per connect and per disconnect, N=2000 users x 3 cycles, MQTT 5: bare broker,
#      single-broker plugin, cluster plugin (one broker of a 3-broker cluster takes the load);
#      CPU of the broker's main thread (loadgen --cpu main) and of all its threads.
#   C2 state writes: 100 users, QoS 0, 3 s: documents/s and CPU per write, single vs cluster.
#   C3 Redis commands per event, from INFO commandstats around C1 and C2 (cluster runs).
#   C4 storms spread over the three brokers at once: 3 x 2000 distinct users, and 3 x 2000
#      sessions of the same 2000 users (every user on every broker).
#   C5 dead-broker detection: kill -9 of a broker holding one session, time until a subscriber
#      on another broker gets the user's available:false document; heartbeat 200 ms / lease
#      500 ms and the defaults 1000 / 2500 ms.
#   C6 the broker loop's latency (CONNECT -> a retained message to a subscriber, Last-Will
#      pattern, no presence involved) with Redis answering and while Redis sleeps (DEBUG SLEEP).
# Every run is one loadgen line (key=value); the script prints them and a summary of medians.
# Bounded: every loadgen run has --timeout, every wait a deadline. Nothing is left running.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
runs=3
keep=""
scenarios=C1,C2,C4,C5,C6
while [ $# -gt 0 ]; do
	case "$1" in
	--runs) runs=$2; shift 2 ;;
	--keep) keep=$2; shift 2 ;;
	--scenarios) scenarios=$2; shift 2 ;;
	*) echo "usage: $0 [--runs N] [--keep DIR] [--scenarios C1,C2,C4,C5,C6]" >&2; exit 2 ;;
	esac
done
# want Cn: whether scenario Cn runs (C3 comes with C1 and C2).
want() { [[ ",$scenarios," == *",$1,"* ]]; }

bash "$root/scripts/ensure-deps.sh"
build="$root/build-bench"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DPRESENCE_SANITIZE=OFF \
	-DPRESENCE_WERROR=ON >/dev/null
cmake --build "$build" --target mosquitto_presence presence_loadgen -j"$(nproc)" >/dev/null
plugin="$build/plugin/mosquitto_presence.so"
loadgen="$build/tests/bench/loadgen"
mosquitto=${MOSQUITTO_BIN:-/usr/sbin/mosquitto}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [ -n "$keep" ]; then
	mkdir -p "$keep"
	work=$keep
else
	work=$(mktemp -d)
fi
pids=()
redis_pid=""
cleanup() {
	local p
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${pids[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	if [ -n "$redis_pid" ]; then
		kill -CONT "$redis_pid" 2>/dev/null || true
		kill "$redis_pid" 2>/dev/null || true
		wait "$redis_pid" 2>/dev/null || true
	fi
	[ -n "$keep" ] || rm -rf "$work"
}
trap cleanup EXIT

sock="$work/redis.sock"
redis-server --port 0 --unixsocket "$sock" --unixsocketperm 700 --save '' --appendonly no \
	--dir "$work" --logfile "$work/redis.log" --enable-debug-command local &
redis_pid=$!
for _ in $(seq 1 500); do
	redis-cli -s "$sock" ping >/dev/null 2>&1 && break
	sleep 0.01
done
rcli() { redis-cli -s "$sock" "$@"; }

# start_broker NAME KIND [HEARTBEAT LEASE]: KIND bare | single | cluster. Sets port and pid.
start_broker() {
	local name=$1 kind=$2 hb=${3:-1000} lease=${4:-2500} conf="$work/$1.conf" _try
	for _try in 1 2 3 4 5; do
		port=$((20000 + RANDOM % 12000))
		{
			echo "listener $port 127.0.0.1"
			echo "allow_anonymous true"
			echo "persistence false"
			echo "log_dest file $work/$name.log"
			echo "log_type error"
			echo "log_type warning"
			echo "connection_messages false"
			echo "sys_interval 0"
			echo "set_tcp_nodelay true"
			[ "$(id -u)" != 0 ] || echo "user root"
			if [ "$kind" != bare ]; then
				echo "plugin $plugin"
				echo "plugin_opt_auth allow"
				echo "plugin_opt_acl allow"
				# The benchmarks measure what writes cost, not the write limit.
				echo "plugin_opt_max_writes_per_second 0"
			fi
			if [ "$kind" = cluster ]; then
				echo "plugin_opt_cluster_url unix:$sock"
				echo "plugin_opt_broker_id $name"
				echo "plugin_opt_cluster_heartbeat_ms $hb"
				echo "plugin_opt_cluster_lease_ms $lease"
			fi
		} >"$conf"
		"$mosquitto" -c "$conf" >>"$work/$name.log" 2>&1 &
		pid=$!
		pids+=("$pid")
		if "$loadgen" --mode ping --port "$port" --timeout 10 >/dev/null 2>&1 &&
			kill -0 "$pid" 2>/dev/null; then
			if [ "$kind" != cluster ]; then
				return 0
			fi
			# Registered with Redis: its epoch is there.
			for _ in $(seq 1 500); do
				[ -z "$(rcli hget '{presence}:epoch' "$name")" ] || return 0
				sleep 0.01
			done
		fi
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	echo "cluster.sh: broker $name did not start" >&2
	exit 1
}

stop_broker() {
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

results="$work/results.txt"
: >"$results"
# record SCENARIO CONFIG LINE: keeps a loadgen line, fails on a broken run.
record() {
	echo "$1 $2 $3" >>"$results"
	echo "  $1 $2: $3"
	case "$3" in
	*status=OK*) ;;
	*) echo "cluster.sh: BROKEN run" >&2; exit 1 ;;
	esac
}
# value KEY LINE
value() { sed -n "s/.*\<$1=\([^ ]*\).*/\1/p" <<<"$2"; }
# median of numbers on stdin
median() { sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "-"}'; }
# commands_total [COMMAND]: calls of every command (those scripts run inside included), or of
# one command (fcall: the plugin's function calls).
commands_total() {
	rcli info commandstats | sed -n "s/^cmdstat_${1:-[^:]*}:calls=\([0-9]*\),.*/\1/p" |
		awk '{s+=$1} END {print s+0}'
}

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"

# The cluster: three brokers (c1 takes the load in C1/C2).
start_broker c1 cluster; c1_port=$port; c1_pid=$pid
start_broker c2 cluster; c2_port=$port; c2_pid=$pid
start_broker c3 cluster; c3_port=$port
start_broker single single; single_port=$port; single_pid=$pid
start_broker bare bare; bare_port=$port; bare_pid=$pid

base=0
want C1 && echo "C1 storm N=2000 x 3 cycles"
want C1 && for run in $(seq 1 "$runs"); do
	for config in bare single cluster; do
		case $config in
		bare) p=$bare_port; bp=$bare_pid; pattern=plain ;;
		single) p=$single_port; bp=$single_pid; pattern=presence ;;
		cluster) p=$c1_port; bp=$c1_pid; pattern=presence ;;
		esac
		# Fresh users every run: the cluster has seen earlier runs' users.
		base=$((base + 2000))
		before=$(commands_total)
		before_f=$(commands_total fcall)
		line=$("$loadgen" --mode storm --pattern "$pattern" --users 2000 --user-base "$base" \
			--cycles 3 --port "$p" --broker-pid "$bp" --cpu main --timeout 120) || true
		after=$(commands_total)
		after_f=$(commands_total fcall)
		record C1 "$config-main" "$line"
		if [ "$config" = cluster ]; then
			echo "C3 cluster-storm fcalls=$((after_f - before_f)) commands_incl_inside_functions=$((after - before)) events=12000" >>"$results"
		fi
		line=$("$loadgen" --mode storm --pattern "$pattern" --users 2000 \
			--user-base $((base + 1000000)) --cycles 3 --port "$p" --broker-pid "$bp" \
			--cpu all --timeout 120) || true
		record C1 "$config-all" "$line"
	done
done

want C2 && echo "C2 state writes K=100 QoS 0, 3 s"
want C2 && for run in $(seq 1 "$runs"); do
	for config in single cluster; do
		case $config in
		single) p=$single_port; bp=$single_pid ;;
		cluster) p=$c1_port; bp=$c1_pid ;;
		esac
		before=$(commands_total)
		before_f=$(commands_total fcall)
		line=$("$loadgen" --mode state --pattern presence --users 100 --user-base $((500000 + run * 1000)) \
			--qos 0 --duration 3 --port "$p" --broker-pid "$bp" --cpu main --timeout 60) || true
		after=$(commands_total)
		after_f=$(commands_total fcall)
		record C2 "$config-main" "$line"
		if [ "$config" = cluster ]; then
			echo "C3 cluster-state fcalls=$((after_f - before_f)) commands_incl_inside_functions=$((after - before)) writes=$(value writes_done "$line")" >>"$results"
		fi
	done
done

want C4 && echo "C4 storms on three brokers at once"
want C4 && for run in $(seq 1 "$runs"); do
	for kind in distinct same; do
		i=0
		loads=()
		for p in $c1_port $c2_port $c3_port; do
			b=$((700000 + run * 10000))
			[ "$kind" = same ] || b=$((b + i * 2000))
			"$loadgen" --mode storm --pattern plain --users 2000 --user-base "$b" --cycles 2 \
				--port "$p" --timeout 120 >"$work/c4.$i" 2>&1 &
			loads+=($!)
			i=$((i + 1))
		done
		for l in "${loads[@]}"; do
			wait "$l" || true
		done
		for i in 0 1 2; do
			record C4 "$kind-b$((i + 1))" "$(cat "$work/c4.$i")"
		done
	done
done

want C5 && echo "C5 dead-broker detection"
want C5 && stop_broker "$c2_pid"
detect() {
	local hb=$1 lease=$2 n=$3 k out sub client t0 t1
	for k in $(seq 1 "$n"); do
		start_broker "d$hb" cluster "$hb" "$lease"
		local dport=$port dpid=$pid user="dead-$hb-$k-$RANDOM"
		out="$work/detect.out"
		: >"$out"
		mosquitto_sub -p "$c1_port" -t "presence/$user" -C 2 -W 30 -F '%U %p' >"$out" &
		sub=$!
		# A session of the user on the broker that will die.
		mosquitto_sub -p "$dport" -u "$user" -i "$user" -t "x/$user" -W 60 >/dev/null &
		client=$!
		for _ in $(seq 1 1000); do
			[ ! -s "$out" ] || break
			sleep 0.005
		done
		# (A subscriber that came late would have missed it: then the user is retried.)
		if [ ! -s "$out" ]; then
			kill "$client" "$sub" 2>/dev/null || true
			stop_broker "$dpid"
			continue
		fi
		# The broker dies with the session: the client is not stopped first (its clean
		# disconnect would be seen at once).
		t0=$(date +%s.%N)
		kill -9 "$dpid"
		wait "$dpid" 2>/dev/null || true
		wait "$sub" 2>/dev/null || true
		t1=$(sed -n '2s/ .*//p' "$out")
		if grep -q '"available":false' <(sed -n 2p "$out"); then
			echo "C5 hb$hb-lease$lease detect_ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", (b - a) * 1000}')" |
				tee -a "$results"
		else
			echo "C5 hb$hb-lease$lease MISSED $(cat "$out")" | tee -a "$results"
		fi
		kill "$client" 2>/dev/null || true
		wait "$client" 2>/dev/null || true
	done
}
if want C5; then
	detect 200 500 10
	detect 1000 2500 5
fi

want C6 && echo "C6 loop latency while Redis sleeps"
want C6 && for run in $(seq 1 "$runs"); do
	line=$("$loadgen" --mode latency --pattern lastwill --prefix lw --count 2000 \
		--port "$c1_port" --timeout 60) || true
	record C6 redis-up "$line"
	rcli debug sleep 3 >/dev/null &
	sleeper=$!
	sleep 0.05
	line=$("$loadgen" --mode latency --pattern lastwill --prefix lw --count 2000 \
		--port "$c1_port" --timeout 60) || true
	record C6 redis-asleep "$line"
	wait "$sleeper" || true
done

echo
echo "Summary (medians over runs):"
summ() { # SCENARIO CONFIG KEY
	grep "^$1 $2 " "$results" | while read -r _ _ rest; do value "$3" "$rest"; done | median
}
for config in bare single cluster; do
	for scope in main all; do
		printf '  C1 %-15s connects/s %8s  disconnects/s %8s  CPU us/connect %6s  us/disconnect %6s\n' \
			"$config-$scope" "$(summ C1 "$config-$scope" connects_per_s)" \
			"$(summ C1 "$config-$scope" disconnects_per_s)" \
			"$(summ C1 "$config-$scope" cpu_us_per_connect)" \
			"$(summ C1 "$config-$scope" cpu_us_per_disconnect)"
	done
done
for config in single cluster; do
	printf '  C2 %-15s docs/s %8s  CPU us/write (main thread) %6s\n' "$config-main" \
		"$(summ C2 "$config-main" docs_per_s)" "$(summ C2 "$config-main" cpu_us_per_write)"
done
grep '^C3' "$results" | sed 's/^/  /'
for kind in distinct same; do
	for b in 1 2 3; do
		printf '  C4 %-15s connects/s %8s  disconnects/s %8s\n' "$kind-b$b" \
			"$(summ C4 "$kind-b$b" connects_per_s)" "$(summ C4 "$kind-b$b" disconnects_per_s)"
	done
done
for t in hb200-lease500 hb1000-lease2500; do
	printf '  C5 %-18s detection ms: %s\n' "$t" \
		"$(grep "^C5 $t detect_ms=" "$results" | sed 's/.*=//' | sort -n | tr '\n' ' ')"
done
for config in redis-up redis-asleep; do
	printf '  C6 %-15s p50 us %8s  p99 us %8s  max us %8s\n' "$config" \
		"$(summ C6 "$config" p50_us)" "$(summ C6 "$config" p99_us)" "$(summ C6 "$config" max_us)"
done
