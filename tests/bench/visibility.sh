#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
# Issue 18's cost of "who may see whom": a presence/+ storm watched by 1 and by 100 watchers,
# broker CPU per delivered document under `visibility everyone` and under `visibility group`.
#
#   tests/bench/visibility.sh [--runs N] [--users N] [--cycles C] [--groups G]
#                             [--watchers "1 100"] [--plugin FILE --loadgen FILE] [--keep DIR]
#                             [--smoke]
#
# Storm: N users (default 2000) connect (64 handshakes in flight) and all disconnect, C cycles
# (default 3); W watchers (usernames w0000000..) subscribe to presence/+ and every document
# each may see must reach it exactly once (loadgen --watchers: one it may not see, or one lost,
# breaks the run). Configurations, each on a fresh broker, alternating (A B ..., then ... B A)
# N times (default 5):
#   bare       the bare broker, the Last-Will pattern (each client publishes a retained
#              "online" and leaves a retained will "offline"): the floor, no plugin;
#   everyone   the plugin with `visibility everyone`: every watcher sees every user;
#   group-all  `visibility group`, a groups_file of G groups (default 4): user u<n> in group
#              g<n % G>, every watcher in all G groups: the same deliveries as everyone, so the
#              difference is the cost of the check;
#   group      the same groups_file but watcher w<i> only in g<i % G>: each sees 1/G of the users
#              (the broker still asks the plugin for every subscriber);
#   prefix     `group_from_username /`, usernames g<k>/u<n> and g<k>/w<i> (k = n % G, i % G):
#              the same sight as group.
# Broker CPU is utime + stime of the broker process (/proc/<pid>/stat, clock ticks) and the sum
# of its threads' schedstat (ns), over the connect and disconnect phases only. Prints a table
# per watcher count: medians (min-max) of the CPU per delivered document and per user change
# (one connect or one disconnect), and the ratio to `everyone`.
#
# Builds an unsanitized Release plugin and loadgen in build-bench/ unless --plugin and
# --loadgen name prebuilt ones (as run.sh). --smoke: 1 run, 100 users, 1 cycle, 1 and 4
# watchers. Exits 1 when a run is BROKEN.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

runs=5
users=2000
cycles=3
groups=4
watcher_counts="1 100"
plugin=""
loadgen=""
mosquitto="${MOSQUITTO_BIN:-/usr/sbin/mosquitto}"
keep=""
smoke=false
timeout=300

while [ $# -gt 0 ]; do
	case "$1" in
	--runs) runs="$2"; shift 2 ;;
	--users) users="$2"; shift 2 ;;
	--cycles) cycles="$2"; shift 2 ;;
	--groups) groups="$2"; shift 2 ;;
	--watchers) watcher_counts="$2"; shift 2 ;;
	--plugin) plugin="$2"; shift 2 ;;
	--loadgen) loadgen="$2"; shift 2 ;;
	# (common.sh copies the scratch directory there on exit.)
	--keep) keep="$2"; shift 2 ;;
	--smoke) smoke=true; shift ;;
	-h | --help) sed -n '2,33p' "${BASH_SOURCE[0]}"; exit 0 ;;
	*) echo "visibility.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
done
if $smoke; then
	runs=1 users=100 cycles=1 watcher_counts="1 4" timeout=60
fi
configs=(bare everyone group-all group prefix)

if [ -z "$plugin" ] || [ -z "$loadgen" ]; then
	bash "$root/scripts/ensure-deps.sh"
	build="$root/${PRESENCE_BENCH_BUILD_DIR:-build-bench}"
	cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DPRESENCE_SANITIZE=OFF \
		-DPRESENCE_WERROR=ON >/dev/null
	cmake --build "$build" --target mosquitto_presence presence_loadgen -j2 >/dev/null
	plugin="$build/plugin/mosquitto_presence.so"
	loadgen="$build/tests/bench/loadgen"
fi
for f in "$plugin" "$loadgen" "$mosquitto"; do
	[ -f "$f" ] || { echo "visibility.sh: $f does not exist" >&2; exit 2; }
done
ulimit -n 65536 2>/dev/null || true

# shellcheck source=tests/bench/common.sh
. "$here/common.sh"
bench_begin visibility.sh
results="$work/results.txt"
: >"$results"
broken=0

# groups_file FILE LAYOUT WATCHERS: G groups g<k>; user u<n> in g<n % G>; watchers in every
# group (LAYOUT all) or w<i> in g<i % G> (split).
groups_file() {
	awk -v g="$groups" -v n="$users" -v w="$3" -v layout="$2" 'BEGIN {
		print "# visibility.sh: " layout
		for (k = 0; k < g; k++) {
			printf "\ngroup g%d\n", k
			for (u = k; u < n; u += g) printf "user u%07d\n", u
			for (i = 0; i < w; i++) if (layout == "all" || i % g == k) printf "user w%07d\n", i
		}
	}' >"$1"
}

# start_broker NAME EXTRA: the bare broker (EXTRA = bare) or the plugin with EXTRA config
# lines (bench_start_broker, as run.sh). Sets $port and $pid.
start_broker() {
	if [ "$2" = bare ]; then
		bench_start_broker "$1" ""
	else
		bench_start_broker "$1" "plugin $plugin
plugin_opt_auth allow
plugin_opt_acl allow
$2"
	fi
}

# one_run WATCHERS CONFIG RUN
one_run() {
	local w="$1" config="$2" run="$3" extra line rc=0 pattern=presence sight=0 more=()
	case "$config" in
	bare) extra=bare pattern=lastwill ;;
	everyone) extra="plugin_opt_visibility everyone" ;;
	group-all | group)
		local layout=all
		[ "$config" = group-all ] || { layout="split"; sight="$groups"; }
		groups_file "$work/groups-$config-$w" "$layout" "$w"
		extra="plugin_opt_visibility group
plugin_opt_groups_file $work/groups-$config-$w"
		;;
	prefix)
		extra="plugin_opt_visibility group
plugin_opt_group_from_username /"
		sight="$groups"
		more=(--user-groups "$groups")
		;;
	esac
	start_broker "$config-w$w-r$run" "$extra"
	line="$("$loadgen" --port "$port" --broker-pid "$pid" --timeout "$timeout" --mode storm \
		--pattern "$pattern" --users "$users" --cycles "$cycles" --watchers "$w" \
		--watcher-groups "$sight" "${more[@]}" 2>>"$work/loadgen.err")" || rc=$?
	bench_stop "$pid"
	echo "W=$w config=$config run=$run $line" >>"$results"
	if [ "$rc" != 0 ]; then
		broken=$((broken + 1))
		echo "  BROKEN: $w watchers, $config, run $run: ${line:-loadgen exit $rc}" >&2
	fi
}

echo "visibility.sh: $users users, $cycles cycles, $groups groups, watchers: $watcher_counts," \
	"$runs runs; $(nproc) CPUs, $(uname -r), $("$mosquitto" -h 2>/dev/null | head -1)" >&2
for run in $(seq 1 "$runs"); do
	for w in $watcher_counts; do
		order=("${configs[@]}")
		if [ $((run % 2)) = 0 ]; then mapfile -t order < <(printf '%s\n' "${configs[@]}" | tac); fi
		for config in "${order[@]}"; do
			one_run "$w" "$config" "$run"
		done
	done
done

# The table: per watcher count and config, medians (min-max) over the runs that were OK.
awk -v configs="${configs[*]}" -v wl="$watcher_counts" '
function field(line, key,   i, n, kv) {
	n = split(line, kv, " ")
	for (i = 1; i <= n; i++) if (index(kv[i], key "=") == 1) return substr(kv[i], length(key) + 2)
	return ""
}
function median(list,   a, n, i, j, t) {
	n = split(list, a, " ")
	for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
	lo = a[1]; hi = a[n]
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
/status=OK/ {
	k = field($0, "W") SUBSEP field($0, "config")
	stat[k] = stat[k] " " field($0, "stat_us_per_delivery")
	sched[k] = sched[k] " " field($0, "cpu_us_per_delivery")
	change[k] = change[k] " " field($0, "cpu_us_per_connect") + field($0, "cpu_us_per_disconnect")
	deliveries[k] = field($0, "deliveries")
}
END {
	nc = split(configs, c, " ")
	nw = split(wl, ws, " ")
	for (x = 1; x <= nw; x++) {
		w = ws[x]
		printf "\n%s watcher(s), broker CPU in us: medians (min-max)\n\n", w
		print "| config | deliveries per run | utime+stime per delivery | ratio to everyone | schedstat per delivery | ratio to everyone | schedstat per user change |"
		print "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
		ref = median(stat[w SUBSEP "everyone"]); sref = median(sched[w SUBSEP "everyone"])
		for (i = 1; i <= nc; i++) {
			k = w SUBSEP c[i]
			if (stat[k] == "") { printf "| %s | BROKEN | | | | | |\n", c[i]; continue }
			m = median(stat[k]); r = sprintf("%.2f-%.2f", lo, hi)
			s = median(sched[k]); sr = sprintf("%.2f-%.2f", lo, hi)
			ch = median(change[k]) / 2; chr = sprintf("%.1f-%.1f", lo / 2, hi / 2)
			ra = "-"; sa = "-"
			if (ref > 0) ra = sprintf("%.2fx", m / ref)
			if (sref > 0) sa = sprintf("%.2fx", s / sref)
			printf "| %s | %d | %.2f (%s) | %s | %.2f (%s) | %s | %.1f (%s) |\n", c[i], deliveries[k], m, r, ra, s, sr, sa, ch, chr
		}
	}
}' "$results"
exit $((broken > 0))
