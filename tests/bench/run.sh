#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
# The benchmarks: what the presence plugin costs the broker, against the same broker without it.
#
#   tests/bench/run.sh [--runs N] [--scenarios 1,2,3,4,5] [--smoke]
#                      [--plugin FILE --loadgen FILE] [--mosquitto FILE] [--keep DIR]
#                      [--broker 2.0.11|2.0.21|2.1.2]
#
# Builds the Release plugin and the load generator in build-bench/ (unless --plugin and
# --loadgen name prebuilt ones), then, for each scenario, starts the SAME mosquitto binary with
# and without the plugin from generated configs in a temporary directory and drives it with
# loadgen (127.0.0.1 only). Runs alternate between the configurations (A B, then B A, ...), N of
# each (default 5); every number in the table is the median over the runs, with the spread
# (min-max) and the ratio to the reference configuration. Broker CPU time comes from
# /proc/<pid>/task/*/schedstat. See tests/bench/README.md for what each scenario measures.
#
# --smoke runs every scenario once at a tiny size (seconds): it only checks that everything runs
# and counts correctly. That is what the test suite runs (smoke.sh); it never runs the real
# benchmarks. --keep DIR keeps the configs, broker logs and raw results there.
#
# --broker picks a broker of the test matrix (tests/compat/run.sh, which says where each comes
# from and caches it): 2.0.11 is Debian 12's /usr/sbin/mosquitto (the default); 2.0.21 is
# bookworm-backports' package unpacked in the cache, measured with the plugin built here; 2.1.2
# runs this script inside the Debian sid chroot, which builds the plugin and the tools there
# (against 2.1's headers) into build-bench-2.1.2/ (--keep DIR must then be inside the checkout).
# --mosquitto FILE (or $MOSQUITTO_BIN) names any other broker binary.
#
# Exits 1 when any run is BROKEN (lost or unexpected documents, a refused connect, a deadline),
# 0 otherwise; a missed target is reported in the table, not as a failure. Every broker started
# here is stopped on exit, also on Ctrl-C.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

runs=5
scenarios="1,2,3,4,5"
smoke=false
plugin=""
loadgen=""
mosquitto="${MOSQUITTO_BIN:-}"
keep=""
broker=""
args=("$@")

while [ $# -gt 0 ]; do
	case "$1" in
	--broker) broker="$2"; shift 2 ;;
	--runs) runs="$2"; shift 2 ;;
	--scenarios) scenarios="$2"; shift 2 ;;
	--smoke) smoke=true; shift ;;
	--plugin) plugin="$2"; shift 2 ;;
	--loadgen) loadgen="$2"; shift 2 ;;
	--mosquitto) mosquitto="$2"; shift 2 ;;
	--keep) keep="$2"; shift 2 ;;
	-h | --help) sed -n '2,29p' "${BASH_SOURCE[0]}"; exit 0 ;;
	*) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
done
case "$runs" in '' | *[!0-9]* | 0) echo "run.sh: --runs wants a positive number" >&2; exit 2 ;; esac

# A broker of the test matrix.
case "$broker" in
'') ;;
2.0.11) mosquitto=/usr/sbin/mosquitto ;;
2.0.21 | 2.1.2)
	# shellcheck source=tests/compat/brokers.sh
	. "$root/tests/compat/brokers.sh"
	if [ "$broker" = 2.0.21 ]; then
		ensure_2_0_21
		mosquitto="$broker_2_0_21"
	else
		# The same command inside the chroot, without --broker.
		inner=()
		for ((i = 0; i < ${#args[@]}; i++)); do
			if [ "${args[$i]}" = --broker ]; then
				i=$((i + 1))
			else
				inner+=("${args[$i]}")
			fi
		done
		ensure_chroot
		trap unmount_all EXIT
		mount_for_run
		status=0
		chroot_run PRESENCE_BENCH_BUILD_DIR=build-bench-2.1.2 \
			bash "$root/tests/bench/run.sh" ${inner[@]+"${inner[@]}"} || status=$?
		unmount_all
		exit "$status"
	fi
	;;
*) echo "run.sh: --broker wants 2.0.11, 2.0.21 or 2.1.2" >&2; exit 2 ;;
esac

# Sizes. The issue's sizes by default; tiny ones for the smoke run.
if $smoke; then
	runs=1
	storm_sizes="200"; storm_cycles_small=1; storm_cycles_large=1
	state_sizes="20"; state_duration=0.3
	latency_count=50
	scale_small=100; scale_large=1000; scale_measure=100; scale_cycles=1; scale_hosts=2
	memory_users=200; memory_spu=4
	# Each memory run waits for two $SYS rounds (seconds): the smoke run keeps two configs.
	memory_configs="bare plugin+state"
	timeout=60
else
	storm_sizes="2000 10000"; storm_cycles_small=5; storm_cycles_large=2
	state_sizes="100 1000"; state_duration=2
	latency_count=1000
	scale_small=1000; scale_large=100000; scale_measure=1000; scale_cycles=10; scale_hosts=8
	memory_users=10000; memory_spu=10
	memory_configs="bare plugin plugin+state bare-shared plugin-shared"
	timeout=300
fi
memory_state_bytes=1024

# ---------------------------------------------------------------------------------------------
# Build and tools
# ---------------------------------------------------------------------------------------------

if [ -z "$mosquitto" ]; then
	mosquitto="$(command -v mosquitto || true)"
	[ -n "$mosquitto" ] || [ ! -x /usr/sbin/mosquitto ] || mosquitto=/usr/sbin/mosquitto
fi
if [ -z "$mosquitto" ] || [ ! -x "$mosquitto" ]; then
	echo "run.sh: no mosquitto binary (install the Debian package mosquitto, or pass --mosquitto)" >&2
	exit 2
fi
if [ -z "$plugin" ] || [ -z "$loadgen" ]; then
	# An unsanitized Release build of its own, so that neither the test build (sanitizers)
	# nor a debug build is what gets measured.
	bash "$root/scripts/ensure-deps.sh"
	build="$root/${PRESENCE_BENCH_BUILD_DIR:-build-bench}"
	cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DPRESENCE_SANITIZE=OFF \
		-DPRESENCE_WERROR=ON >/dev/null
	cmake --build "$build" --target mosquitto_presence presence_loadgen presence_memprobe \
		-j"$(nproc)" >/dev/null
	plugin="$build/plugin/mosquitto_presence.so"
	loadgen="$build/tests/bench/loadgen"
fi
# The core memory probe is built beside the load generator.
memprobe="$(dirname "$loadgen")/memprobe"
for f in "$plugin" "$loadgen" "$memprobe"; do
	[ -f "$f" ] || { echo "run.sh: $f does not exist" >&2; exit 2; }
done

# Enough descriptors for 10 000 connections on each side (the broker inherits the limit).
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
need_fds=$((memory_users + 200))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need_fds" ]; then
	echo "run.sh: ulimit -n is $(ulimit -n), the benchmarks need $need_fds; raise the hard limit" >&2
	exit 2
fi

# shellcheck source=tests/bench/common.sh
. "$here/common.sh"
bench_begin run.sh
results="$work/results.txt"
: >"$results"
broken=0

# ---------------------------------------------------------------------------------------------
# Brokers
# ---------------------------------------------------------------------------------------------

# start_broker NAME KIND [extra config lines]: KIND is bare or plugin (bench_start_broker, whose
# logging and $SYS settings are the same for both, so that the broker's log formatting is not
# what gets compared; s5 turns $SYS on for memory).
start_broker() {
	local lines=""
	if [ "$2" = plugin ]; then
		# The benchmarks measure what writes cost, not the write limit.
		lines="plugin $plugin
plugin_opt_auth allow
plugin_opt_acl allow
plugin_opt_max_writes_per_second 0"
	fi
	[ -z "${3:-}" ] || lines="${lines:+$lines
}$3"
	bench_start_broker "$1" "$lines"
}


# measure SCENARIO SIZE CONFIG RUN PORT PID loadgen-arguments...: one loadgen run; its line goes
# to the results with the labels in front.
measure() {
	local s="$1" size="$2" config="$3" run="$4" p="$5" bpid="$6" line rc=0
	shift 6
	line="$("$loadgen" --port "$p" --broker-pid "$bpid" --timeout "$timeout" "$@" 2>>"$work/loadgen.err")" || rc=$?
	echo "S=$s size=$size config=$config run=$run $line" >>"$results"
	if [ "$rc" != 0 ]; then
		broken=$((broken + 1))
		echo "  BROKEN: scenario $s size $size $config run $run: ${line:-loadgen exit $rc}" >&2
	fi
}

# order RUN CONFIG...: the configs in A B order on odd runs, B A on even ones.
order() {
	local run="$1"
	shift
	if [ $((run % 2)) = 1 ]; then
		printf '%s\n' "$@"
	else
		printf '%s\n' "$@" | tac
	fi
}

# one_run S SIZE CONFIG RUN: starts the broker the config needs, runs loadgen, stops it.
one_run() {
	local s="$1" size="$2" config="$3" run="$4" kind args=()
	case "$config" in
	bare | lastwill | retained*) kind=bare ;;
	*) kind=plugin ;;
	esac
	case "$s:$config" in
	1:bare | 1:plugin) args=(--mode storm --pattern plain) ;;
	1:plugin+sub) args=(--mode storm --pattern presence) ;;
	1:lastwill) args=(--mode storm --pattern lastwill) ;;
	2:*) ;;
	3:plugin) args=(--mode latency --pattern presence --count "$latency_count") ;;
	3:lastwill) args=(--mode latency --pattern lastwill --count "$latency_count") ;;
	esac
	if [ "$s" = 1 ]; then
		local cycles=$storm_cycles_small
		[ "$size" -le 2000 ] || cycles=$storm_cycles_large
		args+=(--users "$size" --cycles "$cycles")
	fi
	if [ "$s" = 2 ]; then
		local k="${size%%/*}" q="${size##*qos}"
		if [ "$kind" = plugin ]; then
			args=(--mode state --pattern presence)
		else
			args=(--mode state --pattern retained)
		fi
		args+=(--users "$k" --qos "$q" --duration "$state_duration")
	fi
	if [ "$s" = 3 ]; then
		args+=(--users "$latency_count")
	fi
	start_broker "s$s-$config-$run" "$kind"
	measure "$s" "$size" "$config" "$run" "$port" "$pid" "${args[@]}"
	bench_stop "$pid"
}

has_scenario() {
	case ",$scenarios," in *",$1,"*) return 0 ;; *) return 1 ;; esac
}

started=$(date +%s)
echo "run.sh: mosquitto $("$mosquitto" -h 2>&1 | sed -n 's/^mosquitto version //p' | head -n 1)," \
	"$(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $runs run(s) per configuration" >&2

# 1. Connection storm.
if has_scenario 1; then
	for size in $storm_sizes; do
		echo "run.sh: scenario 1, connection storm, N=$size" >&2
		for run in $(seq 1 "$runs"); do
			for config in $(order "$run" bare plugin lastwill plugin+sub); do
				one_run 1 "$size" "$config" "$run"
			done
		done
	done
fi

# 2. State writes.
if has_scenario 2; then
	for k in $state_sizes; do
		for q in 0 1; do
			echo "run.sh: scenario 2, state writes, K=$k QoS $q" >&2
			for run in $(seq 1 "$runs"); do
				for config in $(order "$run" retained plugin); do
					one_run 2 "$k/qos$q" "$config" "$run"
				done
			done
		done
	done
fi

# 3. Latency.
if has_scenario 3; then
	echo "run.sh: scenario 3, CONNECT to document latency" >&2
	for run in $(seq 1 "$runs"); do
		for config in $(order "$run" lastwill plugin); do
			one_run 3 "$latency_count" "$config" "$run"
		done
	done
fi

# 4. Scale: the same measured storm on brokers that already know few or many users. The four
# brokers are preloaded once and stay up; the measured runs alternate between them.
if has_scenario 4; then
	echo "run.sh: scenario 4, preloading $scale_small and $scale_large known users" >&2
	declare -A s4_port s4_pid
	for config in bare-small bare-large plugin-small plugin-large; do
		kind="${config%-*}"
		known=$scale_small
		[ "${config#*-}" = small ] || known=$scale_large
		start_broker "s4-$config" "$kind"
		s4_port[$config]=$port
		s4_pid[$config]=$pid
		if ! "$loadgen" --mode storm --pattern plain --port "$port" --users "$known" \
			--batch 10000 --hosts "$scale_hosts" --timeout "$timeout" >"$work/s4-$config.preload" \
			2>>"$work/loadgen.err"; then
			echo "run.sh: preloading $config failed: $(cat "$work/s4-$config.preload")" >&2
			broken=$((broken + 1))
		fi
	done
	echo "run.sh: scenario 4, measuring" >&2
	for run in $(seq 1 "$runs"); do
		for config in $(order "$run" bare-small bare-large plugin-small plugin-large); do
			measure 4 "$scale_measure" "$config" "$run" "${s4_port[$config]}" "${s4_pid[$config]}" \
				--mode storm --pattern plain --users "$scale_measure" --cycles "$scale_cycles"
		done
	done
	for config in bare-small bare-large plugin-small plugin-large; do
		bench_stop "${s4_pid[$config]}"
	done
fi

# 5. Memory: RSS and the broker's own heap counter ($SYS/broker/heap/current, published every
# second here) before and while the sessions are connected.
if has_scenario 5; then
	echo "run.sh: scenario 5, memory with $memory_users sessions" >&2
	few_users=$((memory_users / memory_spu))
	for run in $(seq 1 "$runs"); do
		# shellcheck disable=SC2086 # a list of names
		for config in $(order "$run" $memory_configs); do
			args=(--mode memory --users "$memory_users")
			case "$config" in
			*-shared) args=(--mode memory --users "$few_users" --sessions-per-user "$memory_spu") ;;
			esac
			[ "$config" != plugin+state ] || args+=(--state-bytes "$memory_state_bytes")
			kind=plugin
			case "$config" in bare*) kind=bare ;; esac
			start_broker "s5-$config-$run" "$kind" "sys_interval 1"
			measure 5 "$memory_users" "$config" "$run" "$port" "$pid" "${args[@]}"
			bench_stop "$pid"
		done
	done
	# The plugin's own bytes, exactly: the core alone, driven as the adapter drives it
	# (deterministic, so once is enough).
	# probe+pending: what the last published state costs while a change waits for its
	# document; probe-offline and probe-waiting: what a known user costs once its sessions
	# are gone (and while it waits out an offline delay); probe-save: a complete save of the
	# state file (all users, fsync included), which a broker with plugin_opt_state_file makes
	# about once a second while anything changes.
	for config in probe probe+state probe-shared probe+pending probe-offline probe-waiting \
		probe-save; do
		args=(--users "$memory_users")
		case "$config" in
		probe+state) args+=(--state-bytes "$memory_state_bytes") ;;
		probe-shared) args=(--users "$few_users" --sessions-per-user "$memory_spu") ;;
		probe+pending) args+=(--state-bytes "$memory_state_bytes" --pending-change) ;;
		probe-offline) args+=(--disconnect) ;;
		probe-waiting) args+=(--disconnect --offline-delay-ms 60000) ;;
		probe-save) args+=(--save-file "$work/state.json") ;;
		esac
		line="$("$memprobe" "${args[@]}" 2>>"$work/loadgen.err")" || broken=$((broken + 1))
		echo "S=5 size=$memory_users config=$config run=1 $line" >>"$results"
	done
fi

elapsed=$(($(date +%s) - started))

# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------

# Rows: scenario | size | config | metric | reference config | better | target. A target is a
# ratio to the reference (higher: at least; lower: at most); for bytes it is a difference in
# bytes per session (at most), after subtracting the state's own bytes for plugin+state.
spec() {
	cat <<-'EOF'
		1|*|bare|connects_per_s|||
		1|*|plugin|connects_per_s|bare|higher|0.95
		1|*|bare|disconnects_per_s|||
		1|*|plugin|disconnects_per_s|bare|higher|0.95
		1|*|bare|cpu_us_per_connect|||
		1|*|plugin|cpu_us_per_connect|bare|lower|
		1|*|bare|cpu_us_per_disconnect|||
		1|*|plugin|cpu_us_per_disconnect|bare|lower|
		1|*|lastwill|connects_per_s|||
		1|*|plugin+sub|connects_per_s|lastwill|higher|1.00
		1|*|lastwill|disconnects_per_s|||
		1|*|plugin+sub|disconnects_per_s|lastwill|higher|1.00
		1|*|lastwill|cpu_us_per_cycle|||
		1|*|plugin+sub|cpu_us_per_cycle|lastwill|lower|1.00
		2|*|retained|docs_per_s|||
		2|*|plugin|docs_per_s|retained|higher|0.90
		2|*|retained|cpu_us_per_write|||
		2|*|plugin|cpu_us_per_write|retained|lower|
		3|*|lastwill|p50_us|||
		3|*|plugin|p50_us|lastwill|lower|1.00
		3|*|lastwill|p99_us|||
		3|*|plugin|p99_us|lastwill|lower|
		4|*|bare-small|cpu_us_per_connect|||
		4|*|bare-large|cpu_us_per_connect|bare-small|lower|
		4|*|bare-small|cpu_us_per_disconnect|||
		4|*|bare-large|cpu_us_per_disconnect|bare-small|lower|
		4|*|plugin-small|cpu_us_per_connect|||
		4|*|plugin-large|cpu_us_per_connect|plugin-small|lower|1.10
		4|*|plugin-small|cpu_us_per_disconnect|||
		4|*|plugin-large|cpu_us_per_disconnect|plugin-small|lower|1.10
		4|*|plugin-small|cpu_us_per_cycle|||
		4|*|plugin-large|cpu_us_per_cycle|plugin-small|lower|1.10
		5|*|bare|rss_bytes_per_session|||
		5|*|plugin|rss_bytes_per_session|bare||
		5|*|plugin+state|rss_bytes_per_session|bare||
		5|*|bare|heap_bytes_per_session|||
		5|*|plugin|heap_bytes_per_session|bare||
		5|*|plugin+state|heap_bytes_per_session|bare||
		5|*|bare|own_bytes_per_session|||
		5|*|plugin|own_bytes_per_session|bare||
		5|*|plugin+state|own_bytes_per_session|bare||
		5|*|bare-shared|rss_bytes_per_session|||
		5|*|plugin-shared|rss_bytes_per_session|bare-shared||
		5|*|bare-shared|own_bytes_per_session|||
		5|*|plugin-shared|own_bytes_per_session|bare-shared||
		5|*|probe|bytes_per_session_beyond_state||max|256
		5|*|probe+state|bytes_per_session_beyond_state||max|256
		5|*|probe+state|bytes_per_session|||
		5|*|probe-shared|bytes_per_session|||
		5|*|probe+pending|pending_bytes_per_user|||
		5|*|probe+pending|published_bytes_per_user|||
		5|*|probe-offline|offline_bytes_per_user|||
		5|*|probe-waiting|offline_bytes_per_user|probe-offline||
		5|*|probe-save|save_ms|||
		5|*|probe-save|save_ns_per_user|||
	EOF
}

table() {
	spec | awk -v results="$results" -v state_bytes="$memory_state_bytes" \
		-v memory_spu="$memory_spu" '
	function median(list, n,    a, i, j, t) {
		n = split(list, a, " ")
		for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
		if (n == 0) return ""
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	function minmax(list,    a, i, n, lo, hi) {
		n = split(list, a, " ")
		lo = hi = a[1] + 0
		for (i = 2; i <= n; i++) { if (a[i] + 0 < lo) lo = a[i] + 0; if (a[i] + 0 > hi) hi = a[i] + 0 }
		return fmt(lo) "-" fmt(hi)
	}
	function fmt(v) {
		if (v == "") return "-"
		v += 0
		if (v >= 1000 || v <= -1000) return sprintf("%.0f", v)
		if (v >= 100 || v <= -100) return sprintf("%.1f", v)
		return sprintf("%.2f", v)
	}
	BEGIN {
		while ((getline line < results) > 0) {
			delete kv
			n = split(line, f, " ")
			for (i = 1; i <= n; i++) { p = index(f[i], "="); kv[substr(f[i], 1, p - 1)] = substr(f[i], p + 1) }
			if (kv["status"] != "OK") continue
			if ("rss_bytes_per_session" in kv) kv["own_bytes_per_session"] = kv["rss_bytes_per_session"] - kv["heap_bytes_per_session"]
			key = kv["S"] SUBSEP kv["size"] SUBSEP kv["config"]
			if (!(kv["S"] SUBSEP kv["size"] in seen_size)) { seen_size[kv["S"] SUBSEP kv["size"]] = 1; sizes[kv["S"]] = sizes[kv["S"]] " " kv["size"] }
			for (k in kv) vals[key, k] = vals[key, k] " " kv[k]
		}
		names["connects_per_s"] = "connects/s"; names["disconnects_per_s"] = "disconnects/s"
		names["cpu_us_per_connect"] = "CPU us/connect"; names["cpu_us_per_disconnect"] = "CPU us/disconnect"
		names["cpu_us_per_cycle"] = "CPU us/connect+disconnect"; names["docs_per_s"] = "documents/s"
		names["cpu_us_per_write"] = "CPU us/write"; names["p50_us"] = "p50 us"; names["p99_us"] = "p99 us"
		names["rss_bytes_per_session"] = "RSS B/session"; names["heap_bytes_per_session"] = "broker heap B/session"
		names["own_bytes_per_session"] = "RSS-heap B/session"
		names["bytes_per_session"] = "plugin heap B/session"; names["bytes_per_session_beyond_state"] = "plugin B/session - state"
		names["pending_bytes_per_user"] = "B/user, change pending"; names["published_bytes_per_user"] = "B/user, published"
		names["offline_bytes_per_user"] = "B/offline user"
		names["save_ms"] = "state file save ms"; names["save_ns_per_user"] = "save ns/user"
		titles[1] = "1 storm N"; titles[2] = "2 state K/qos"; titles[3] = "3 latency n"; titles[4] = "4 scale measured N"; titles[5] = "5 memory sessions"
		printf "| %-22s | %-13s | %-26s | %10s | %-19s | %-12s | %-17s |\n", "scenario", "config", "metric", "median", "min-max", "vs", "target"
		printf "|%s|%s|%s|%s|%s|%s|%s|\n", "------------------------", "---------------", "----------------------------", "-----------:", "---------------------", "--------------", "-------------------"
	}
	{
		split($0, r, "|")
		s = r[1]; cfg = r[2] == "*" ? "" : r[2]
		nsz = split(sizes[s], szl, " ")
		for (z = 1; z <= nsz; z++) {
			sz = szl[z]
			key = s SUBSEP sz SUBSEP r[3]
			list = vals[key, r[4]]
			if (list == "") continue
			m = median(list)
			vs = ""; verdict = ""
			if (r[6] == "max" && r[7] != "") {
				verdict = (m + 0 <= r[7] + 0 ? "met" : "MISSED") sprintf(" (<=%d)", r[7])
			}
			if (r[5] != "") {
				ref = median(vals[s SUBSEP sz SUBSEP r[5], r[4]])
				if (ref != "" && ref + 0 != 0) {
					if (r[6] == "bytes" || r[4] ~ /bytes/) {
						d = m - ref
						vs = sprintf("%+.0f B", d)
						if (r[6] == "bytes" && r[7] != "") {
							extra = r[3] == "plugin+state" ? state_bytes : 0
							verdict = (d - extra <= r[7] + 0 ? "met" : "MISSED") sprintf(" (<=%d%s)", r[7], extra ? "+state" : "")
						}
					} else {
						ratio = m / ref
						vs = sprintf("x%.3f", ratio)
						if (r[7] != "") {
							ok = r[6] == "higher" ? ratio >= r[7] : ratio <= r[7]
							verdict = (ok ? "met" : "MISSED") sprintf(" (%s%s)", r[6] == "higher" ? ">=" : "<=", r[7])
						}
					}
					vs = vs " " r[5]
				}
			}
			printf "| %-22s | %-13s | %-26s | %10s | %-19s | %-12s | %-17s |\n", titles[s] " " sz, r[3], names[r[4]], fmt(m), minmax(list), vs, verdict
		}
	}'
}

table | tee "$work/table.md"

# Per session and per user, from the core probe: with S sessions of S users (d1 bytes per
# session) and S sessions of S/k users (dk), d1 = session + user and dk = session + user/k.
awk -v results="$results" -v k="$memory_spu" '
	BEGIN {
		while ((getline line < results) > 0) {
			if (line !~ /S=5 / || line !~ /status=OK/) continue
			delete kv; n = split(line, f, " ")
			for (i = 1; i <= n; i++) { p = index(f[i], "="); kv[substr(f[i], 1, p - 1)] = substr(f[i], p + 1) }
			if ("bytes_per_session" in kv) probe[kv["config"]] = kv["bytes_per_session"]
		}
		if (!("probe" in probe) || !("probe-shared" in probe)) exit
		d1 = probe["probe"]; dk = probe["probe-shared"]
		user = (d1 - dk) / (1 - 1 / k); session = d1 - user
		printf "\nPlugin memory (core probe, malloc headers included): %.0f B per session+user with an empty state;\n", d1
		printf "about %.0f B per session and %.0f B per user (from the %d-sessions-per-user probe).\n", session, user, k
	}' | tee -a "$work/table.md"

echo
echo "run.sh: $runs run(s) per configuration in ${elapsed}s; load now $(cut -d' ' -f1-3 /proc/loadavg)" >&2
if [ "$broken" != 0 ]; then
	echo "run.sh: $broken run(s) BROKEN (see above); their figures are left out of the table" >&2
	exit 1
fi
