# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
# shellcheck shell=bash
# Sourced by the benchmark scripts (run.sh, lifetime.sh): their scratch directory and the
# processes they start.
#
# bench_stop PID [SECONDS] stops a broker: SIGTERM every half second (2.0.11 can lose one sent
# right after it starts), SIGKILL after SECONDS (default 5; a broker saving 1 M users takes
# longer).
#
# bench_begin NAME sets $work to a fresh directory and arranges that on exit (and on Ctrl-C)
# every PID added to bench_pids is killed (SIGKILL: a benchmark's brokers and servers keep
# nothing worth a clean stop), $work is copied to $keep when keep is set, and $work is removed.
#
# bench_start_broker NAME LINES starts $mosquitto on a free port of 127.0.0.1 with the
# benchmarks' settings (errors and warnings only, no connection messages, no $SYS, TCP_NODELAY)
# and the config LINES after them; waits until $loadgen gets a PINGRESP. Sets $port and $pid;
# exits with the broker's log if it does not start.

bench_begin() {
	bench_name="$1"
	work="$(mktemp -d "${TMPDIR:-/tmp}/presence-$1.XXXXXX")"
	bench_pids=()
	trap bench_cleanup EXIT
	trap 'exit 130' INT TERM
}

bench_cleanup() {
	local pid
	for pid in "${bench_pids[@]}"; do
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if [ -n "${keep:-}" ]; then
		mkdir -p "$keep" && cp -r "$work"/. "$keep"/ &&
			echo "$bench_name: kept $work in $keep" >&2
	fi
	rm -rf "$work"
}

bench_stop() {
	local pid="$1" tenths=$((${2:-5} * 10)) i
	for i in $(seq 1 "$tenths"); do
		kill -0 "$pid" 2>/dev/null || break
		[ $((i % 5)) != 1 ] || kill -TERM "$pid" 2>/dev/null || true
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# $mosquitto and $loadgen are the sourcing script's.
# shellcheck disable=SC2154
bench_start_broker() {
	local name="$1" lines="$2" conf="$work/$1.conf" log="$work/$1.log" _try
	for _try in 1 2 3 4 5; do
		port=$((20000 + RANDOM % 12000))
		{
			echo "listener $port 127.0.0.1"
			echo "allow_anonymous true"
			echo "persistence false"
			echo "log_dest file $log"
			echo "log_type error"
			echo "log_type warning"
			echo "connection_messages false"
			echo "sys_interval 0"
			# Without it, Nagle and delayed ACKs stall small writes by 40 ms now and then;
			# presence traffic is all small writes.
			echo "set_tcp_nodelay true"
			# As root, mosquitto would drop to the user "mosquitto" (and could not write
			# the log here) unless told otherwise.
			[ "$(id -u)" != 0 ] || echo "user root"
			[ -z "$lines" ] || printf '%s\n' "$lines"
		} >"$conf"
		: >"$log"
		"$mosquitto" -c "$conf" >>"$log" 2>&1 &
		pid=$!
		bench_pids+=("$pid")
		if "$loadgen" --mode ping --port "$port" --timeout 10 >/dev/null 2>>"$log" &&
			kill -0 "$pid" 2>/dev/null; then
			return 0
		fi
		# The port was taken (or the broker failed): try another one.
		bench_stop "$pid"
	done
	echo "$bench_name: broker $name did not start; its log:" >&2
	cat "$log" >&2
	exit 1
}
