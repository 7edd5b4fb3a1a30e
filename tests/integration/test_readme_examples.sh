#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
# Runs the examples in README.md against the demo broker and checks that they print what the
# README says they print, so the README cannot rot.
#
# The broker is the one a reader starts: `PORT=<free port> examples/run-broker.sh` (it builds
# the plugin into build/). README.md marks what this script runs with HTML comments, which are
# invisible when the README is rendered. Each stands on its own line; all but "interrupt" are
# followed on the next line by a fenced code block:
#
#   <!-- example: NAME -->             ```sh block: run it (bash -e); it must exit 0. What it
#                                       prints (stdout and stderr) is recorded as NAME.
#   <!-- example: NAME background -->  the same, started in the background: a long-running
#                                       subscriber in "another terminal". One command only.
#   <!-- interrupt: NAME -->           Ctrl-C in that terminal: SIGINT, then a bounded wait.
#   <!-- output: NAME -->              ```text block: the next lines NAME prints, exactly
#                                       (waits, bounded, until they are there).
#   <!-- log: NAME -->                 ```text block: lines NAME prints, in this order, among
#                                       others. NAME "broker" is the demo broker's log.
#   <!-- config-error: NAME -->        ```conf block: lines appended to examples/mosquitto.conf;
#                                       the broker must refuse to start. Its log is NAME.
#
# Commands are written as a reader types them against the default 127.0.0.1:1883, without -h
# or -p; this script adds `-h 127.0.0.1 -p <port>` to every mosquitto_sub, mosquitto_pub and
# mosquitto_rr (replacing a `-p 1883` or `-h localhost` that is there) and bounds every
# mosquitto_sub and mosquitto_rr with -W unless it has one. Before comparing, what differs from
# run to run is masked: "since" values, "seq" values taken from the broker's clock (13 digits
# or more: a user who became visible to more watchers, README "Who sees whom"), log timestamps,
# generated client ids (auto-<uuid>), the plugin version, the values of the $SYS/broker/presence/ metrics (they are sampled every
# metrics_interval seconds, so what a subscriber gets depends on timing) and the port in the
# demo's state file name (run-broker.sh uses examples/.run/presence-state-<port>.json; this
# script removes that file before and after, so the demo starts as a first start). A "since"
# value, or a "seq" from the clock, that the README repeats (anywhere) must be repeated in the
# real output too.
#
# The outputs are deterministic: Mosquitto 2.0 reads at most one packet per client per loop
# iteration and the plugin publishes at the end of each iteration; 2.1 handles all of a
# client's buffered packets in one iteration, and the plugin publishes a session's start and a
# state write in their own event there. Either way the CONNECT, PUBLISH and DISCONNECT of a
# mosquitto_pub each produce their own document, and every output block is compared exactly,
# on every version. Steps are ordered by waiting for the output the README shows before them
# (a background subscriber's SUBSCRIBE follows its CONNACK at once, long before the later
# steps' clients have even connected).
#
# Every wait is bounded; nothing sleeps in the hope that something has happened. Environment:
# PRESENCE_SOURCE_DIR (default: the repository around this script), PRESENCE_WORK_DIR (where to
# keep the logs; default: a temporary directory), PRESENCE_TIMEOUT_SCALE (integer factor for
# every deadline), MOSQUITTO_BIN (default: mosquitto from PATH, else /usr/sbin/mosquitto; also
# the demo broker's). Under ctest (PRESENCE_WORK_DIR set) the demo builds its plugin in
# $PRESENCE_WORK_DIR/demo-build instead of build/, so that test builds for other brokers (e.g.
# the Debian sid chroot of tests/compat/run.sh) never share a build folder. Ends with "N passed,
# M failed" and exits non-zero on any failure.
set -euo pipefail

src=${PRESENCE_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
# Debian installs the broker in /usr/sbin, which is not on an ordinary user's PATH.
mosquitto_bin=${MOSQUITTO_BIN:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
readme="$src/README.md"
scale=${PRESENCE_TIMEOUT_SCALE:-1}
case "$scale" in '' | *[!0-9]* | 0) scale=1 ;; esac

# Deadlines, in seconds.
wait_s=$((10 * scale))     # an expected output line, a log line, an exit after Ctrl-C
start_s=$((600 * scale))   # build + start of the demo broker
broker_s=$((900 * scale))  # the demo broker's whole life (hard bound)
sub_w=$((60 * scale))      # -W for background subscribers
fg_sub_w=$((10 * scale))   # -W for foreground subscribers

if [ -n "${PRESENCE_WORK_DIR:-}" ]; then
	mkdir -p "$PRESENCE_WORK_DIR"
	export PRESENCE_DEMO_BUILD_DIR="$PRESENCE_WORK_DIR/demo-build"
	work=$(mktemp -d "$PRESENCE_WORK_DIR/readme-examples.XXXXXX")
else
	work=$(mktemp -d "${TMPDIR:-/tmp}/readme-examples.XXXXXX")
fi

passed=0
failed=0
port=
broker_pid=
broker_log="$work/broker.log"
declare -A out_file=()  # NAME -> file holding what NAME printed
declare -A bg_pid=()    # NAME -> pid of a background example still running
declare -A consumed=()  # NAME -> lines of NAME's output already compared

# ------------------------------------------------------------------------------------------
# Reporting and clean-up
# ------------------------------------------------------------------------------------------

pass() {
	passed=$((passed + 1))
	printf 'ok   %s\n' "$1"
}

fail() {
	failed=$((failed + 1))
	printf 'FAIL %s\n' "$1"
	if [ $# -gt 1 ]; then
		printf '%s\n' "$2" | sed 's/^/     /'
	fi
}

cleanup() {
	local name
	for name in "${!bg_pid[@]}"; do
		kill "${bg_pid[$name]}" 2>/dev/null || true
	done
	if [ -n "$broker_pid" ]; then
		# `timeout` runs the broker in its own process group: stop all of it.
		kill -TERM -- "-$broker_pid" 2>/dev/null || kill -TERM "$broker_pid" 2>/dev/null || true
		wait "$broker_pid" 2>/dev/null || true
	fi
	remove_state_file
	if [ "$failed" -eq 0 ] && [ -z "${PRESENCE_WORK_DIR:-}" ]; then
		rm -rf "$work"
	else
		echo "logs kept in $work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs "$@" until it succeeds or $1 seconds pass. Returns its last status.
wait_for() {
	local seconds=$1
	shift
	local deadline=$((SECONDS + seconds))
	until "$@"; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			"$@"
			return
		fi
		sleep 0.05
	done
}

line_count() {
	if [ -f "$1" ]; then
		wc -l < "$1"
	else
		echo 0
	fi
}

has_lines() {
	[ "$(line_count "$1")" -ge "$2" ]
}

# ------------------------------------------------------------------------------------------
# README parsing: one step per marker, kept in parallel arrays.
# ------------------------------------------------------------------------------------------

step_kind=()
step_name=()
step_opt=()
step_body=()
step_line=()

parse_readme() {
	local marker_re='^<!-- (example|interrupt|output|log|config-error): ([A-Za-z0-9_-]+)( background)? -->$'
	local line n=0 kind="" name="" opt="" at=0 body="" want="" in_fence=false collecting=false
	local expect_fence=false

	while IFS= read -r line || [ -n "$line" ]; do
		n=$((n + 1))
		if $expect_fence; then
			expect_fence=false
			if [[ $line != '```'$want ]]; then
				echo "README.md:$at: the $kind marker must be followed by a \`\`\`$want block" >&2
				return 1
			fi
			in_fence=true
			collecting=true
			body=""
			continue
		fi
		if $in_fence; then
			if [[ $line == '```'* ]]; then
				in_fence=false
				if $collecting; then
					collecting=false
					step_kind+=("$kind")
					step_name+=("$name")
					step_opt+=("$opt")
					step_body+=("$body")
					step_line+=("$at")
				fi
			elif $collecting; then
				body+="$line"$'\n'
			fi
			continue
		fi
		if [[ $line == '```'* ]]; then
			in_fence=true
			continue
		fi
		if [[ $line =~ $marker_re ]]; then
			kind=${BASH_REMATCH[1]}
			name=${BASH_REMATCH[2]}
			opt=${BASH_REMATCH[3]# }
			at=$n
			if [ -n "$opt" ] && [ "$kind" != example ]; then
				echo "README.md:$at: only example markers take \"background\"" >&2
				return 1
			fi
			case "$kind" in
			interrupt)
				step_kind+=("$kind")
				step_name+=("$name")
				step_opt+=("")
				step_body+=("")
				step_line+=("$at")
				;;
			example) want=sh expect_fence=true ;;
			config-error) want=conf expect_fence=true ;;
			*) want=text expect_fence=true ;;
			esac
		elif [[ $line == '<!-- '*:* ]] && [[ $line == *' -->' ]]; then
			echo "README.md:$n: unrecognised marker: $line" >&2
			return 1
		fi
	done < "$readme"
	if $expect_fence || $in_fence; then
		echo "README.md: a marked code block is not closed" >&2
		return 1
	fi
	if [ "${#step_kind[@]}" -eq 0 ]; then
		echo "README.md has no <!-- example: ... --> markers" >&2
		return 1
	fi
}

# ------------------------------------------------------------------------------------------
# The demo broker
# ------------------------------------------------------------------------------------------

port_answers() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
	local candidate i
	for i in $(seq 1 100); do
		candidate=$((20000 + RANDOM % 40000))
		if ! port_answers "$candidate"; then
			echo "$candidate"
			return 0
		fi
	done
	echo "no free port found on 127.0.0.1" >&2
	return 1
}

# The demo broker's state file for $port (see run-broker.sh), its journal and their temporary
# files (plugin/core/store.c), so that no run leaves one behind in examples/.run/.
remove_state_file() {
	if [ -n "$port" ]; then
		rm -f "$src/examples/.run/presence-state-$port.json" \
			"$src/examples/.run/presence-state-$port.json".{tmp,journal,journal.next,journal.tmp}
	fi
}

broker_ready() {
	port_answers "$port" || ! kill -0 "$broker_pid" 2>/dev/null
}

# Starts examples/run-broker.sh on a free port and waits (bounded) until the port answers.
# A port taken in between (run-broker.sh then exits saying so) is retried on another port.
start_broker() {
	local _
	for _ in 1 2 3; do
		port=$(free_port)
		# A file left by an earlier run on the same port would make this a restart.
		remove_state_file
		# `timeout` bounds the broker's life and puts it in a process group of its own, so
		# that cleanup can stop run-broker.sh, the build and mosquitto together.
		# WS_PORT=0: no websockets listener (Mosquitto 2.0.11 would bind it on every interface;
		# the browser test covers it, in a private network namespace).
		(cd "$src" && export PORT="$port" WS_PORT=0 MOSQUITTO_BIN="$mosquitto_bin" &&
			exec timeout -k 5 "$broker_s" examples/run-broker.sh) \
			< /dev/null > "$broker_log" 2>&1 &
		broker_pid=$!
		wait_for "$start_s" broker_ready || true
		if port_answers "$port" && kill -0 "$broker_pid" 2>/dev/null; then
			pass "demo broker started: PORT=$port examples/run-broker.sh"
			return 0
		fi
		if kill -0 "$broker_pid" 2>/dev/null; then
			fail "demo broker did not open port $port within ${start_s}s" "$(tail -n 30 "$broker_log")"
			return 1
		fi
		wait "$broker_pid" 2>/dev/null || true
		broker_pid=
		if ! grep -q "already in use" "$broker_log"; then
			fail "examples/run-broker.sh exited" "$(tail -n 30 "$broker_log")"
			return 1
		fi
	done
	fail "examples/run-broker.sh: every port tried was taken" "$(tail -n 5 "$broker_log")"
	return 1
}

# ------------------------------------------------------------------------------------------
# Running examples
# ------------------------------------------------------------------------------------------

# Rewrites README commands for the test broker (see the head of this file). $1: the block,
# $2: the -W bound for subscribers.
localise() {
	printf '%s' "$1" | sed -E \
		-e '/mosquitto_(sub|pub|rr)/{s/ +-p +1883\b//g; s/ +-h +(localhost|127\.0\.0\.1)\b//g}' \
		-e 's/\bmosquitto_(sub|pub|rr)\b/& -h 127.0.0.1 -p '"$port"'/g' \
		-e '/ -W +[0-9]/!s/\bmosquitto_(sub|rr) -h 127\.0\.0\.1 -p [0-9]+/& -W '"$2"'/g'
}

# The commands of a block: without comments and blank lines.
commands_of() {
	printf '%s' "$1" | sed -e '/^[[:space:]]*#/d' -e '/^[[:space:]]*$/d'
}

run_example() {
	local name=$1 opt=$2 body=$3 at=$4 script status
	if [ -n "${out_file[$name]:-}" ]; then
		fail "README.md:$at: example $name is defined twice"
		return
	fi
	out_file[$name]="$work/$name.out"
	consumed[$name]=0
	if [ "$opt" = background ]; then
		script=$(commands_of "$body")
		if [ -z "$script" ] || [ "$(printf '%s\n' "$script" | wc -l)" -ne 1 ]; then
			fail "README.md:$at: background example $name must be exactly one command"
			return
		fi
		script=$(localise "$script" "$sub_w")
		# exec: the recorded pid is the command itself, which gets the Ctrl-C.
		(cd "$src" && eval "exec $script") < /dev/null > "${out_file[$name]}" 2>&1 &
		bg_pid[$name]=$!
		pass "README.md:$at: $name started in the background"
		return
	fi
	script=$(localise "$body" "$fg_sub_w")
	status=0
	(cd "$src" && bash -e -o pipefail -c "$script") < /dev/null > "${out_file[$name]}" 2>&1 \
		|| status=$?
	if [ "$status" -eq 0 ]; then
		pass "README.md:$at: $name ran"
	else
		fail "README.md:$at: $name exited with status $status" "$(cat "${out_file[$name]}")"
	fi
}

process_gone() {
	! kill -0 "$1" 2>/dev/null
}

interrupt_example() {
	local name=$1 at=$2 pid
	pid=${bg_pid[$name]:-}
	if [ -z "$pid" ]; then
		fail "README.md:$at: interrupt of $name, which is not running in the background"
		return
	fi
	kill -INT "$pid" 2>/dev/null || true
	if wait_for "$wait_s" process_gone "$pid"; then
		wait "$pid" 2>/dev/null || true
		unset "bg_pid[$name]"
		pass "README.md:$at: $name stopped with Ctrl-C"
	else
		fail "README.md:$at: $name did not exit within ${wait_s}s of Ctrl-C"
	fi
}

# Masks what differs between runs (see the head of this file).
mask() {
	sed -E \
		-e 's/"since":[0-9]+/"since":<ms>/g' \
		-e 's/"seq":[0-9]{13,}/"seq":<clock>/g' \
		-e 's/^[0-9]+: /<time>: /' \
		-e 's/auto-[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}/auto-<id>/g' \
		-e 's/mosquitto-presence: version [^ ]+ started/mosquitto-presence: version <v> started/' \
		-e 's#^(\$SYS/broker/presence/[a-z/]+) [0-9]+$#\1 <n>#' \
		-e 's/presence-state-[0-9]+\.json/presence-state-<port>.json/g' \
		-e "s|${PRESENCE_DEMO_BUILD_DIR:-build}/plugin/|build/plugin/|g"
}

# Prints the "since" values of each line of $1, one "line-number value" pair per value.
since_values() {
	grep -no '"since":[0-9]*' "$1" | sed -E 's/^([0-9]+):"since":/\1 /' || true
}

# Succeeds when the "since" values of the expected file $1 and the actual file $2 agree with
# each other and with every block compared before: a value the README shows several times (in
# any block) is one moment, so the real output must show one value there too. The pairs seen
# so far are kept in $work/since.map.
since_consistent() {
	values_consistent since_values "$work/since.map" "$1" "$2"
}

# As since_values, for the "seq" values taken from the broker's clock (13 digits or more).
clock_seq_values() {
	grep -noE '"seq":[0-9]{13,}' "$1" | sed -E 's/^([0-9]+):"seq":/\1 /' || true
}

# As since_consistent, for the "seq" values taken from the clock: one moment in the README is
# one value in the real output.
clock_seq_consistent() {
	values_consistent clock_seq_values "$work/seq.map" "$1" "$2"
}

# values_consistent EXTRACT MAP EXPECTED ACTUAL: since_consistent for the values that the
# function EXTRACT prints, remembered in MAP.
values_consistent() {
	local extract=$1 map=$2 pairs
	shift 2
	touch "$map"
	pairs=$(paste -d ' ' <("$extract" "$1") <("$extract" "$2"))
	printf '%s\n' "$pairs" | awk -v map="$map" '
		FILENAME == map { seen[$1] = $2; next }
		NF == 0 { next }
		NF != 4 || $1 != $3 { bad = 1; next }
		($2 in seen) && seen[$2] != $4 { bad = 1 }
		{ seen[$2] = $4; print $2, $4 >> map }
		END { exit bad }' "$map" -
}

compare_output() {
	local name=$1 body=$2 at=$3 file want from expected actual
	file=${out_file[$name]:-}
	if [ -z "$file" ]; then
		fail "README.md:$at: output of $name, which has not been run"
		return
	fi
	want=$(printf '%s' "$body" | wc -l)
	from=${consumed[$name]}
	expected="$work/expected.$at"
	actual="$work/actual.$at"
	printf '%s' "$body" > "$expected"
	consumed[$name]=$((from + want))
	wait_for "$wait_s" has_lines "$file" $((from + want)) || true
	sed -n "$((from + 1)),$((from + want))p" "$file" > "$actual"
	if ! diff -u --label "README.md:$at ($name)" --label "actual" \
		<(mask < "$expected") <(mask < "$actual") > "$work/diff.$at"; then
		fail "README.md:$at: output of $name differs" "$(cat "$work/diff.$at")"
	elif ! since_consistent "$expected" "$actual"; then
		fail "README.md:$at: output of $name: \"since\" does not repeat where the README repeats it" \
			"$(cat "$actual")"
	elif ! clock_seq_consistent "$expected" "$actual"; then
		fail "README.md:$at: output of $name: a \"seq\" from the clock does not repeat where the README repeats it" \
			"$(cat "$actual")"
	else
		pass "README.md:$at: output of $name matches"
	fi
}


# Succeeds when the lines of file $1 appear in file $2 in order (after masking).
contains_in_order() {
	awk 'NR == FNR { want[++n] = $0; next }
		i < n && $0 == want[i + 1] { i++ }
		END { exit !(i == n) }' <(mask < "$1") <(mask < "$2")
}

compare_log() {
	local name=$1 body=$2 at=$3 file expected
	if [ "$name" = broker ]; then
		file=$broker_log
	else
		file=${out_file[$name]:-}
	fi
	if [ -z "$file" ]; then
		fail "README.md:$at: log of $name, which has not been run"
		return
	fi
	expected="$work/expected.$at"
	printf '%s' "$body" > "$expected"
	if wait_for "$wait_s" contains_in_order "$expected" "$file"; then
		pass "README.md:$at: log of $name has the lines shown"
	else
		fail "README.md:$at: log of $name lacks these lines (in this order):" \
			"$(mask < "$expected")"$'\n'"--- log (masked) ---"$'\n'"$(mask < "$file" | tail -n 40)"
	fi
}

# Starts the broker on examples/mosquitto.conf plus the lines of the block, on a port nobody
# uses, and expects it to exit non-zero within the deadline.
run_config_error() {
	local name=$1 body=$2 at=$3 conf status cwd
	out_file[$name]="$work/$name.out"
	consumed[$name]=0
	conf="$work/$name.conf"
	sed -E -e "s/^listener 1883 127\.0\.0\.1$/listener $(free_port) 127.0.0.1/" \
		-e '/^listener 9001 127\.0\.0\.1$/,/^http_dir /d' \
		-e "s|^plugin build/plugin/|plugin ${PRESENCE_DEMO_BUILD_DIR:-build}/plugin/|" \
		"$src/examples/mosquitto.conf" > "$conf"
	if [ "$(id -u)" -eq 0 ]; then
		printf '\nuser root\n' >> "$conf"
	fi
	printf '%s' "$body" >> "$conf"
	# The config's relative paths (build/plugin/..., examples/...) name the demo's files: run
	# from a folder where they lead there, also when the demo builds outside build/.
	cwd="$work/$name.cwd"
	mkdir -p "$cwd"
	ln -sfn "$src/examples" "$cwd/examples"
	ln -sfn "${PRESENCE_DEMO_BUILD_DIR:-$src/build}" "$cwd/build"
	status=0
	(cd "$cwd" && timeout -k 5 "$wait_s" "$mosquitto_bin" -c "$conf") > "${out_file[$name]}" 2>&1 \
		|| status=$?
	if [ "$status" -ne 0 ] && [ "$status" -ne 124 ] && [ "$status" -ne 137 ]; then
		pass "README.md:$at: $name: the broker refuses to start (status $status)"
	else
		fail "README.md:$at: $name: the broker did not refuse to start (status $status)" \
			"$(tail -n 20 "${out_file[$name]}")"
	fi
}

# After the last step: every recorded output must have been shown in full by the README.
check_nothing_left() {
	local name total
	for name in "${!bg_pid[@]}"; do
		fail "example $name is still running at the end of README.md (no interrupt marker)"
	done
	for name in "${!out_file[@]}"; do
		total=$(line_count "${out_file[$name]}")
		if [ "${consumed[$name]}" -gt 0 ] && [ "$total" -gt "${consumed[$name]}" ]; then
			fail "$name printed more than README.md shows" \
				"$(sed -n "$((consumed[$name] + 1)),\$p" "${out_file[$name]}")"
		fi
	done
}

# ------------------------------------------------------------------------------------------

main() {
	local i
	if ! parse_readme; then
		fail "README.md cannot be parsed"
	elif start_broker; then
		for i in "${!step_kind[@]}"; do
			case "${step_kind[$i]}" in
			example) run_example "${step_name[$i]}" "${step_opt[$i]}" "${step_body[$i]}" "${step_line[$i]}" ;;
			interrupt) interrupt_example "${step_name[$i]}" "${step_line[$i]}" ;;
			output) compare_output "${step_name[$i]}" "${step_body[$i]}" "${step_line[$i]}" ;;
			log) compare_log "${step_name[$i]}" "${step_body[$i]}" "${step_line[$i]}" ;;
			config-error) run_config_error "${step_name[$i]}" "${step_body[$i]}" "${step_line[$i]}" ;;
			esac
		done
		check_nothing_left
	fi
	echo "$passed passed, $failed failed"
	[ "$failed" -eq 0 ]
}

main
