#!/usr/bin/env bash
# Builds the plugin and runs Mosquitto in the foreground with examples/mosquitto.conf, on
# 127.0.0.1 port $PORT (default 1883), with the demo users alice, bob and carol.
#
# Usage: examples/run-broker.sh            (PORT=18830 examples/run-broker.sh for another port)
# Stop it with Ctrl-C.
# The README test (tests/integration/test_readme_examples.sh) sets PRESENCE_DEMO_BUILD_DIR (the
# build folder, default build/) and MOSQUITTO_BIN (the broker, default mosquitto from PATH) to
# run the demo against the broker of the test build (tests/compat/run.sh).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
port=${PORT:-1883}

case "$port" in
  ''|*[!0-9]*) echo "PORT must be a number, got '$port'" >&2; exit 1 ;;
esac
if [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
  echo "PORT must be between 1 and 65535, got $port" >&2
  exit 1
fi

scripts/ensure-deps.sh

# Refuse early, with a clear message, when something already listens on the port.
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "Port $port on 127.0.0.1 is already in use (another broker?)." >&2
  echo "Stop it, or choose another port: PORT=18830 examples/run-broker.sh" >&2
  exit 1
fi

build=${PRESENCE_DEMO_BUILD_DIR:-build}
echo "Building the plugin in $build/ ..." >&2
# The demo loads the plugin into the stock broker: no sanitizers, no tests.
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPRESENCE_SANITIZE=OFF -DPRESENCE_TESTS=OFF \
  >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null

run=examples/.run
mkdir -p "$run"
rm -f "$run/passwd"
touch "$run/passwd"
chmod 600 "$run/passwd"
for user in alice bob carol; do
  mosquitto_passwd -b "$run/passwd" "$user" "$user-pw"
done

# One state file per port: two demo brokers (this one and the one tests/run.sh starts for the
# README examples) must never share one.
sed -e "s/^listener 1883 127.0.0.1$/listener $port 127.0.0.1/" \
  -e "s|^plugin_opt_state_file examples/.run/presence-state.json$|plugin_opt_state_file $run/presence-state-$port.json|" \
  -e "s|^plugin build/plugin/|plugin $build/plugin/|" \
  examples/mosquitto.conf > "$run/mosquitto.conf"
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
# Debian installs the broker in /usr/sbin, which is not on an ordinary user's PATH.
mosquitto_bin=${MOSQUITTO_BIN:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
exec "$mosquitto_bin" -c "$run/mosquitto.conf"
