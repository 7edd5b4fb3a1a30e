#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
#
# Builds the plugin and runs Mosquitto in the foreground with examples/mosquitto.conf: MQTT on
# 127.0.0.1 port $PORT, websockets on port $WS_PORT serving the browser buddy list
# (examples/clients/web/), with the demo users alice, bob and carol.
#
# Usage: examples/run-broker.sh       Stop it with Ctrl-C. Environment, all optional:
#   PORT=1883           the MQTT listener (127.0.0.1)
#   WS_PORT=9001        the websockets listener, which also serves the web page; 0: none.
#                       Mosquitto 2.0.11 binds it on EVERY interface (README, "In the browser").
#   HTTP_PORT=9002      Mosquitto 2.1 only, whose websockets listeners serve no files: the
#                       http_api listener (127.0.0.1) that serves the web page instead
#   USERS="dave erin:secret"  more demo users, NAME or NAME:PASSWORD (default NAME-pw), each
#                       with the same rights as alice and bob, in the group "team"
#                       (examples/groups)
#   KEEP_STATE=true, OFFLINE_DELAY=30   plugin_opt_keep_state / plugin_opt_offline_delay
#   PLUGIN=path/to/mosquitto_presence.so   load this build instead of building build/
#   RUN_DIR=examples/.run   where the generated configuration, passwords, ACL, groups and
#                       state file go
#   PRESENCE_DEMO_BUILD_DIR=build   the build folder (the README test uses its own)
#   MOSQUITTO_BIN       the broker (default: mosquitto from PATH, else /usr/sbin/mosquitto);
#                       the README test runs the demo against the broker of the test build
#                       (tests/compat/run.sh)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
port=${PORT:-1883}
ws_port=${WS_PORT:-9001}
http_port=${HTTP_PORT:-9002}
keep_state=${KEEP_STATE:-false}
offline_delay=${OFFLINE_DELAY:-0}
run=${RUN_DIR:-examples/.run}

check_port() { # NAME VALUE MIN
  case "$2" in
    ''|*[!0-9]*) echo "$1 must be a number, got '$2'" >&2; exit 1 ;;
  esac
  if [ "$2" -lt "$3" ] || [ "$2" -gt 65535 ]; then
    echo "$1 must be between $3 and 65535, got $2" >&2
    exit 1
  fi
}
check_port PORT "$port" 1
check_port WS_PORT "$ws_port" 0
check_port HTTP_PORT "$http_port" 1
# Debian installs the broker in /usr/sbin, which is not on an ordinary user's PATH.
mosquitto_bin=${MOSQUITTO_BIN:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
# Mosquitto 2.1's own websockets serve no files (http_dir works only on an http_api listener
# there): the page then comes from an http_api listener on HTTP_PORT and is told which
# websockets port to use. (`mosquitto -h` exits non-zero after printing its usage.)
serves_page_on_ws=true
case "$("$mosquitto_bin" -h 2>&1 | sed -n 's/^mosquitto version //p' | head -n 1 || true)" in
  2.0.*|'') ;;
  *) serves_page_on_ws=false ;;
esac
page_port=$ws_port
page_url="http://localhost:$ws_port/"
if [ "$ws_port" -ne 0 ] && ! $serves_page_on_ws; then
  page_port=$http_port
  page_url="http://localhost:$http_port/?broker=ws://localhost:$ws_port/"
fi
case "$keep_state" in true|false) ;; *) echo "KEEP_STATE must be true or false" >&2; exit 1 ;; esac
case "$offline_delay" in ''|*[!0-9]*) echo "OFFLINE_DELAY must be whole seconds" >&2; exit 1 ;; esac
# Demo users: NAME or NAME:PASSWORD, separated by spaces or commas.
users=(alice:alice-pw bob:bob-pw carol:carol-pw)
users_env=${USERS:-}
for entry in ${users_env//,/ }; do
  name=${entry%%:*}
  case "$name" in
    ''|*[!A-Za-z0-9_.-]*) echo "USERS: '$name' is not a demo user name ([A-Za-z0-9_.-]+)" >&2; exit 1 ;;
  esac
  if [ "$entry" = "$name" ]; then entry="$name:$name-pw"; fi
  users+=("$entry")
done

scripts/ensure-deps.sh

# Refuse early, with a clear message, when something already listens on a port.
for p in "$port" "$ws_port" "$page_port"; do
  if [ "$p" -ne 0 ] && (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "Port $p on 127.0.0.1 is already in use (another broker?)." >&2
    echo "Stop it, or choose other ports: PORT=18830 WS_PORT=19001 examples/run-broker.sh" >&2
    exit 1
  fi
done

if [ -n "${PLUGIN:-}" ]; then
  plugin=$PLUGIN
else
  build=${PRESENCE_DEMO_BUILD_DIR:-build}
  echo "Building the plugin in $build/ ..." >&2
  # The demo loads the plugin into the stock broker: no sanitizers, no tests.
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPRESENCE_SANITIZE=OFF -DPRESENCE_TESTS=OFF \
    >/dev/null
  cmake --build "$build" -j"$(nproc)" >/dev/null
  plugin=$build/plugin/mosquitto_presence.so
fi

web=examples/clients/web
if [ "$ws_port" -ne 0 ] && [ ! "$web/node_modules/.package-lock.json" -nt "$web/package-lock.json" ]; then
  # MQTT.js for the page, exactly as pinned in the lock file; served from the page's folder.
  # Debian's npm where there is none (as root; otherwise ensure-deps.sh says what to run).
  command -v npm >/dev/null || scripts/ensure-deps.sh npm || true
  if command -v npm >/dev/null; then
    echo "Installing MQTT.js in $web/node_modules (npm ci) ..." >&2
    (cd "$web" && npm ci --ignore-scripts --no-audit --no-fund >/dev/null)
  else
    echo "npm is missing: the web page needs it once for MQTT.js (apt-get install npm)." >&2
  fi
fi

mkdir -p "$run"
rm -f "$run/passwd"
touch "$run/passwd"
chmod 600 "$run/passwd"
cp examples/acl "$run/acl"
chmod 600 "$run/acl"
cp examples/groups "$run/groups"
for entry in "${users[@]}"; do
  name=${entry%%:*}
  mosquitto_passwd -b "$run/passwd" "$name" "${entry#*:}"
  # shellcheck disable=SC2016 # $CONTROL is a topic, not a variable
  case "$name" in
    alice|bob|carol) ;;
    *) printf '\n# Added by run-broker.sh from USERS.\nuser %s\ntopic read presence/#\ntopic write $CONTROL/presence/v1\ntopic readwrite chat/%s/#\ntopic read chat/#\n' \
      "$name" "$name" >> "$run/acl"
      printf '\n# Added by run-broker.sh from USERS.\ngroup team\nuser %s\n' "$name" >> "$run/groups" ;;
  esac
done

# One state file per port: two demo brokers (this one and the one tests/run.sh starts for the
# README examples) must never share one.
ws_lines="s/^listener 9001 127.0.0.1$/listener $ws_port 127.0.0.1/"
if [ "$ws_port" -eq 0 ]; then
  ws_lines='/^listener 9001 127.0.0.1$/,/^http_dir /d'
fi
sed -e "s/^listener 1883 127.0.0.1$/listener $port 127.0.0.1/" -e "$ws_lines" \
  -e "s|^plugin build/plugin/mosquitto_presence.so$|plugin $plugin|" \
  -e "s|^plugin_opt_keep_state false$|plugin_opt_keep_state $keep_state|" \
  -e "s|^plugin_opt_offline_delay 0$|plugin_opt_offline_delay $offline_delay|" \
  -e "s|^plugin_opt_state_file examples/.run/presence-state.json$|plugin_opt_state_file $run/presence-state-$port.json|" \
  -e "s|examples/.run/|$run/|" \
  examples/mosquitto.conf > "$run/mosquitto.conf"
if [ "$page_port" -ne "$ws_port" ]; then
  # Mosquitto 2.1: the page comes from an http_api listener, which asks the browser for a
  # broker user's name and password (HTTP Basic) and checks the URL's path as a topic to read
  # against the ACL. The same listener answers /api/v1/systree (the broker's $SYS counters),
  # /api/v1/listeners and /api/v1/version, checked the same way: the ACL grants each demo user
  # the page's own files, by exact path, and nothing under /api/, which no demo user may read
  # over MQTT either. 2.1 can also check a websocket's Origin: only the page's own is let in
  # (non-browser clients, which send no Origin, are not affected).
  sed -i -e '/^http_dir /d' \
    -e "s|^protocol websockets\$|&\nwebsockets_origin http://localhost:$page_port\nwebsockets_origin http://127.0.0.1:$page_port|" \
    "$run/mosquitto.conf"
  printf '\n# Added by run-broker.sh: Mosquitto 2.1 serves the web page on an http_api listener,\n# to broker users who may read its path as a topic (the ACL grants the page, not /api/).\nlistener %s 127.0.0.1\nprotocol http_api\nhttp_dir %s\n' \
    "$page_port" "$root/$web" >> "$run/mosquitto.conf"
  # Every demo user may read the web page: its files, each a topic (its path), and / for
  # index.html. Never "topic read /#": that would grant /api/v1/... as well.
  grants=
  for file in / /index.html /app.js /node_modules/mqtt/dist/mqtt.min.js; do
    grants="$grants\\ntopic read $file"
  done
  sed -i "s|^user .*|&$grants|" "$run/acl"
fi
if [ "$(id -u)" -eq 0 ]; then
  # Mosquitto started as root switches to the "mosquitto" user, which may not be able to
  # read this checkout; a demo broker on loopback keeps root instead.
  printf '\n# Added by run-broker.sh (started as root).\nuser root\n' >> "$run/mosquitto.conf"
fi

cat >&2 <<EOT

mosquitto-presence demo broker on 127.0.0.1:$port (Ctrl-C stops it). Try, in other terminals
(README.md, "Walkthrough", shows what each prints):

  # 1: watch everybody's presence (one retained document per user, then every change)
  mosquitto_sub -p $port -u carol -P carol-pw -t 'presence/+' -v

  # 2: bring alice online; this also shows notices about her rejected state writes
  mosquitto_sub -p $port -u alice -P alice-pw -i alice-phone -t presence/alice/error -v

  # 3: set one key of alice's state, then merge a JSON object into it
  mosquitto_pub -p $port -u alice -P alice-pw -t presence/alice/state/status -m away
  mosquitto_pub -p $port -u alice -P alice-pw -t presence/alice/state -m '{"status":"busy","until":"15:00"}'

  # Stop 2 with Ctrl-C: alice goes offline and her state is cleared.

  # 4: ask once about several users, known or not (README, "Queries")
  mosquitto_rr -p $port -u bob -P bob-pw -t '\$CONTROL/presence/v1' -e '\$CONTROL/presence/v1/response' -m '{"commands":[{"command":"getPresence","usernames":["alice","zed"]}]}'

EOT
if [ "$ws_port" -ne 0 ]; then
  cat >&2 <<EOT
  # 5: the browser buddy list: open $page_url and log in as bob / bob-pw.
  #    The Python and C clients in examples/clients/ show up there as they come and go.

EOT
fi
if [ "$ws_port" -ne 0 ] && $serves_page_on_ws; then
  cat >&2 <<EOT
WARNING: Mosquitto 2.0.11 opens the websockets listener (port $ws_port) on EVERY network
interface, whatever address the configuration gives, and the demo passwords are public.
Anyone who can reach this machine on port $ws_port can log in as a demo user: use it on a
trusted network, block the port in your firewall, or start with WS_PORT=0 (no websockets).

EOT
fi
exec "$mosquitto_bin" -c "$run/mosquitto.conf"
