#!/usr/bin/env bash
# The project's test command (see README): `tests/run.sh [ctest arguments]`.
#
# 1. Checks that the Debian 12 packages the build and the tests need are installed. As root it
#    installs the missing ones with apt-get; otherwise it prints the exact command and exits 1.
#    (Installing the mosquitto package may start the distribution's broker on port 1883 where
#    services are allowed to start; the tests never use that port: every test broker listens
#    on a free port of 127.0.0.1, so such a service does not interfere and is left alone.)
# 2. Configures build-test/ with the sanitizers and -Werror, builds it with all cores.
# 3. Runs ctest with two jobs; extra arguments are passed on, e.g. `tests/run.sh -L unit` or
#    `tests/run.sh -R integration.test_harness`.
# Exits non-zero when anything fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

packages=(mosquitto mosquitto-dev libmosquitto-dev mosquitto-clients libcjson-dev libcmocka-dev
          uthash-dev cmake pkg-config gcc make valgrind)

if command -v dpkg-query >/dev/null 2>&1; then
  missing=()
  for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
      missing+=("$p")
    fi
  done
  if ((${#missing[@]} > 0)); then
    if [[ $(id -u) -eq 0 ]]; then
      echo "tests/run.sh: installing ${missing[*]}"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update
      apt-get install -y --no-install-recommends "${missing[@]}"
    else
      echo "tests/run.sh: missing packages: ${missing[*]}" >&2
      echo "Install them with:" >&2
      echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
      exit 1
    fi
  fi
else
  echo "tests/run.sh: no dpkg-query (not Debian?); assuming these are installed: ${packages[*]}" >&2
fi

build="build-test"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPRESENCE_SANITIZE=ON -DPRESENCE_WERROR=ON
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure -j2 "$@"
