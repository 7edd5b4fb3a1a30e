#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
#
# The README's recipe "A multi-tenant fleet", run as written: the ```conf block after
# <!-- recipe fleet-conf --> goes below the plugin line of a broker whose acl_file is the block
# after <!-- recipe fleet-acl -->, with a password file for two customers' devices and
# dashboards and the operator's console. In a private network namespace (see lib.sh).
#
# Checks: acme/dashboard gets acme's documents, live and retained on subscribe, never globex's,
# and its queries answer globex's devices as never seen; globex/dashboard the other way round;
# fleet-console (see_everyone) sees both.
# shellcheck source=tests/examples/lib.sh
. "$(dirname "$0")/lib.sh"
enter_private_network "$@"
make_work_dir fleet-recipe

conf=$work/mosquitto.conf
readme_block '<!-- recipe fleet-conf -->' >"$work/recipe.conf"
readme_block '<!-- recipe fleet-acl -->' >"$work/acl"
if grep -q '^plugin_opt_visibility group$' "$work/recipe.conf" && [ -s "$work/acl" ]; then
	pass "README: the recipe's options and ACL"
else
	fail "README: no <!-- recipe fleet-conf --> / <!-- recipe fleet-acl --> blocks"
	finish
fi
users=(acme/sensor-17 acme/dashboard globex/sensor-3 globex/dashboard fleet-console)
: >"$work/passwd"
chmod 600 "$work/passwd" "$work/acl"
for user in "${users[@]}"; do
	mosquitto_passwd -b "$work/passwd" "$user" "$user-pw"
done
{
	printf 'listener 1883 127.0.0.1\nplugin %s\n' "$plugin"
	cat "$work/recipe.conf"
	printf 'allow_anonymous false\npassword_file %s\nacl_file %s\n' "$work/passwd" "$work/acl"
	printf 'persistence false\nlog_dest stderr\nlog_type all\n'
	if [ "$(id -u)" -eq 0 ]; then printf 'user root\n'; fi
} >"$conf"
"${MOSQUITTO_BIN:-mosquitto}" -c "$conf" >"$work/broker.log" 2>&1 &
broker_pid=$!
if wait_for 30 broker_up_or_gone && broker_running; then
	pass "the broker starts with the recipe's options"
else
	fail "the broker did not start" "$(cat "$work/broker.log")"
	finish
fi

# sub USER FILE ARGS...: a background subscriber as USER, its output in FILE; its pid in $!.
sub() {
	local user=$1 file=$2
	shift 2
	mosquitto_sub -p 1883 -u "$user" -P "$user-pw" -v -W 60 "$@" >"$file" 2>&1 &
}
# query USER NAME...: USER's query about the NAMEs; prints the answer.
query() {
	local user=$1 names
	shift
	names=$(printf '"%s",' "$@")
	# shellcheck disable=SC2016 # $CONTROL is a topic, not a variable
	mosquitto_rr -p 1883 -u "$user" -P "$user-pw" -t '$CONTROL/presence/v1' \
		-e '$CONTROL/presence/v1/response' -W 10 \
		-m "{\"commands\":[{\"command\":\"getPresence\",\"usernames\":[${names%,}]}]}" 2>&1 || true
}

pids=()
sub acme/dashboard "$work/acme.out" -t 'presence/+'
pids+=($!)
sub globex/dashboard "$work/globex.out" -t 'presence/+'
pids+=($!)
sub fleet-console "$work/console.out" -t 'presence/+'
pids+=($!)
expect_line "$work/acme.out" '^presence/acme%2Fdashboard \{"username":"acme/dashboard","available":true' \
	"acme/dashboard sees itself"
expect_line "$work/globex.out" '^presence/globex%2Fdashboard \{' "globex/dashboard sees itself"
expect_line "$work/console.out" '^presence/globex%2Fdashboard \{' "fleet-console sees globex/dashboard"

# The devices come online, globex's first: documents reach one subscriber in the order they are
# published, so once acme/dashboard has acme's device, a globex document would have come before.
sub globex/sensor-3 "$work/globex-sensor.out" -t 'presence/globex%2Fsensor-3/error'
pids+=($!)
expect_line "$work/console.out" '^presence/globex%2Fsensor-3 \{"username":"globex/sensor-3","available":true' \
	"fleet-console (see_everyone) sees globex/sensor-3 come online"
sub acme/sensor-17 "$work/acme-sensor.out" -t 'presence/acme%2Fsensor-17/error'
pids+=($!)
expect_line "$work/console.out" '^presence/acme%2Fsensor-17 \{"username":"acme/sensor-17","available":true' \
	"fleet-console sees acme/sensor-17 come online"
expect_line "$work/acme.out" '^presence/acme%2Fsensor-17 \{"username":"acme/sensor-17","available":true' \
	"acme/dashboard sees acme/sensor-17 come online"
expect_line "$work/globex.out" '^presence/globex%2Fsensor-3 \{"username":"globex/sensor-3","available":true' \
	"globex/dashboard sees globex/sensor-3 come online"
if ! grep -q globex "$work/acme.out" && ! grep -q '^presence/acme' "$work/globex.out"; then
	pass "no dashboard gets a document of the other customer"
else
	fail "a dashboard got a document of the other customer" "$(cat "$work/acme.out" "$work/globex.out")"
fi

# Retained on subscribe: a new subscription of acme/dashboard gets acme's documents (its own
# and its sensor's), and nothing else.
out=$(mosquitto_sub -p 1883 -u acme/dashboard -P acme/dashboard-pw -t 'presence/+' -v -C 2 -W 10 2>&1 || true)
if [[ "$out" == *'presence/acme%2Fsensor-17 {'* ]] && [[ "$out" == *'presence/acme%2Fdashboard {'* ]] &&
	[[ "$out" != *globex* ]]; then
	pass "a new subscription of acme/dashboard gets acme's retained documents only"
else
	fail "acme/dashboard's retained documents" "$out"
fi

out=$(query acme/dashboard acme/sensor-17 globex/sensor-3)
if [[ "$out" == *'{"username":"acme/sensor-17","available":true,'*'"known":true}'* ]] &&
	[[ "$out" == *'{"username":"globex/sensor-3","available":false,"known":false}'* ]]; then
	pass "acme/dashboard's query: its device known, globex's as never seen: $out"
else
	fail "acme/dashboard's query" "$out"
fi
out=$(query fleet-console acme/sensor-17 globex/sensor-3)
if [[ "$out" == *'{"username":"acme/sensor-17","available":true,'*'"known":true}'* ]] &&
	[[ "$out" == *'{"username":"globex/sensor-3","available":true,'*'"known":true}'* ]]; then
	pass "fleet-console's query answers for both customers"
else
	fail "fleet-console's query" "$out"
fi
for pid in "${pids[@]}"; do
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
done
finish
