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
