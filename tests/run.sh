#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
# The project's test command (see README): `tests/run.sh [ctest arguments]`.
#
# 1. Checks that the Debian 12 packages the build and the tests need are installed
#    (scripts/ensure-deps.sh): as root it installs the missing ones with apt-get, keeping the
#    mosquitto package from starting a system broker; otherwise it prints the exact sudo
#    command and exits 1. A system broker on 1883 would not interfere anyway: every test broker
#    listens on a free port of 127.0.0.1.
# 2. Configures build-test/ with the sanitizers and -Werror, builds it with all cores.
# 3. Configures build-fuzz/ (<build dir>-fuzz with PRESENCE_BUILD_DIR) with clang and
#    -DPRESENCE_FUZZ=ON: the core and its libFuzzer
#    harnesses (tests/fuzz/), built with all cores.
# 4. Runs ctest with two jobs in build-test/, then in build-fuzz/ (each harness over its seed
#    corpus, then a few seconds of fuzzing); extra arguments are passed on to both, e.g.
#    `tests/run.sh -L unit`, `tests/run.sh -L fuzz` or `tests/run.sh -R integration.test_harness`.
# Exits non-zero when anything fails.
#
# Environment (used by tests/compat/run.sh, which runs this suite against other brokers):
# PRESENCE_BUILD_DIR (default build-test) and PRESENCE_CMAKE_ARGS (extra configure arguments,
# split on spaces, e.g. "-DMOSQUITTO_BIN=/path/to/mosquitto"; see tests/CMakeLists.txt).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The shared installer (also used by examples/run-broker.sh); valgrind, chromium (the browser
# test), debootstrap (the package test's chroot), clang (the fuzz harnesses),
# python3-paho-mqtt (the Python examples, run by their test and by the browser test), openssl
# (the certificates of the cluster's TLS tests), stunnel4 (TLS to Redis where hiredis has
# none) and musl-tools (the musl build check, tests/check_musl_build.sh) are for the tests only.
bash scripts/ensure-deps.sh valgrind chromium debootstrap clang python3-paho-mqtt openssl stunnel4 \
  musl-tools
# libFuzzer comes with the clang of the same major version (Debian 12: libfuzzer-14-dev).
bash scripts/ensure-deps.sh "libfuzzer-$(clang -dumpversion | cut -d. -f1)-dev"

build="${PRESENCE_BUILD_DIR:-build-test}"
read -r -a extra_cmake_args <<< "${PRESENCE_CMAKE_ARGS:-}"
# The cluster tests run on Redis and on Valkey. Debian 12 has Valkey only in bookworm-backports:
# where the system has no valkey-server, that one is fetched once per machine and used from the
# cache (tests/compat/brokers.sh).
if ! command -v valkey-server >/dev/null; then
  root=$PWD
  # shellcheck source=tests/compat/brokers.sh
  . tests/compat/brokers.sh
  ensure_valkey_backports
  extra_cmake_args+=("-DVALKEY_SERVER_BIN=$valkey_backports_bin")
fi
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPRESENCE_SANITIZE=ON -DPRESENCE_WERROR=ON ${extra_cmake_args[@]+"${extra_cmake_args[@]}"}
cmake --build "$build" -j"$(nproc)"

fuzz_build="${PRESENCE_BUILD_DIR:+$PRESENCE_BUILD_DIR-fuzz}"
fuzz_build="${fuzz_build:-build-fuzz}"
cmake -S . -B "$fuzz_build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPRESENCE_FUZZ=ON -DPRESENCE_WERROR=ON
cmake --build "$fuzz_build" -j"$(nproc)"

ctest --test-dir "$build" --output-on-failure -j2 "$@"
ctest --test-dir "$fuzz_build" --output-on-failure -j2 "$@"
