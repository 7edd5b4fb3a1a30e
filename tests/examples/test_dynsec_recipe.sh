#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
#
# The README's recipe "A broker behind dynamic-security", run as written: the ```conf block
# after <!-- recipe dynsec-conf --> is the broker's configuration and the ```sh block after
# <!-- recipe dynsec --> is run line by line (the lines before "# Start the broker now" before
# the broker starts). Only paths change: the installed plugin becomes the tested build and
# /var/lib/mosquitto/ a work directory. In a private network namespace (see lib.sh).
#
# Checks: alice, a dynamic-security client, gets her presence document, sets her state with no
# grant for it and can query; admin, in ignore_users, has no presence; an unknown user is refused.
# shellcheck source=tests/examples/lib.sh
. "$(dirname "$0")/lib.sh"
enter_private_network "$@"
make_work_dir dynsec-recipe
mkdir -p "$work/var"

localise() {
	sed -e "s|/usr/lib/x86_64-linux-gnu/mosquitto_presence.so|$plugin|g" \
		-e "s|/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so|/usr/lib/$(gcc -print-multiarch)/mosquitto_dynamic_security.so|g" \
		-e "s|/var/lib/mosquitto/|$work/var/|g"
}
conf=$work/mosquitto.conf
readme_block '<!-- recipe dynsec-conf -->' | localise >"$conf"
readme_block '<!-- recipe dynsec -->' | localise >"$work/recipe.sh"
if [ -s "$conf" ] && grep -q '^# Start the broker now' "$work/recipe.sh"; then
	pass "README: the recipe's configuration and commands"
else
	fail "README: no <!-- recipe dynsec-conf --> / <!-- recipe dynsec --> blocks"
	finish
fi
printf '\nlog_dest stderr\nlog_type all\n' >>"$conf"
if [ "$(id -u)" -eq 0 ]; then printf 'user root\n' >>"$conf"; fi

if bash -e <(sed '/^# Start the broker now/,$d' "$work/recipe.sh") >"$work/init.log" 2>&1; then
	pass "the commands before the start (dynsec init, chown)"
else
	fail "the commands before the start" "$(cat "$work/init.log")"
	finish
fi
"${MOSQUITTO_BIN:-mosquitto}" -c "$conf" >"$work/broker.log" 2>&1 &
broker_pid=$!
if wait_for 30 broker_up_or_gone && broker_running; then
	pass "the broker starts with the recipe's configuration"
else
	fail "the broker did not start" "$(cat "$work/broker.log")"
	finish
fi
if bash -e <(sed '1,/^# Start the broker now/d' "$work/recipe.sh") >"$work/ctrl.log" 2>&1; then
	pass "the mosquitto_ctrl commands"
else
	fail "the mosquitto_ctrl commands" "$(cat "$work/ctrl.log")"
	finish
fi

out=$(mosquitto_sub -p 1883 -u alice -P alice-pw -t presence/alice -C 1 -W 10 2>&1 || true)
if [[ "$out" =~ ^\{\"username\":\"alice\",\"available\":true,\"sessions\":1, ]]; then
	pass "alice, a dynamic-security client, gets her presence document: $out"
else
	fail "alice's presence document" "$out"$'\n'"$(tail -n 20 "$work/broker.log")"
fi
mosquitto_sub -p 1883 -u alice -P alice-pw -t presence/alice -W 30 >"$work/alice.out" 2>&1 &
watcher=$!
expect_line "$work/alice.out" '"available":true' "alice watches her own document"
mosquitto_pub -p 1883 -u alice -P alice-pw -t presence/alice/state/status -m away
expect_line "$work/alice.out" '"state":\{"status":"away"\}' "alice sets her state without any grant for it"
kill "$watcher" 2>/dev/null || true
wait "$watcher" 2>/dev/null || true
# shellcheck disable=SC2016 # $CONTROL is a topic, not a variable
out=$(mosquitto_rr -p 1883 -u alice -P alice-pw -t '$CONTROL/presence/v1' -e '$CONTROL/presence/v1/response' -W 10 \
	-m '{"commands":[{"command":"getPresence","usernames":["alice","admin"]}]}' 2>&1 || true)
if [[ "$out" == *'"username":"alice","available":'*'"known":true}'* ]] &&
	[[ "$out" == *'{"username":"admin","available":false,"known":false}'* ]]; then
	pass "alice may query; admin (ignore_users) has no presence: $out"
else
	fail "the query" "$out"
fi
if ! mosquitto_pub -p 1883 -u mallory -P x -t test -m x 2>"$work/mallory.log" &&
	grep -q 'not authorised' "$work/mallory.log"; then
	pass "a user dynamic-security does not know is refused"
else
	fail "an unknown user should be refused" "$(cat "$work/mallory.log")"
fi
finish
