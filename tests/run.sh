#!/usr/bin/env bash
# The project's test command (see README): `tests/run.sh [ctest arguments]`.
#
# 1. Checks that the Debian 12 packages the build and the tests need are installed
#    (scripts/ensure-deps.sh): as root it installs the missing ones with apt-get, keeping the
#    mosquitto package from starting a system broker; otherwise it prints the exact sudo
#    command and exits 1. A system broker on 1883 would not interfere anyway: every test broker
#    listens on a free port of 127.0.0.1.
# 2. Configures build-test/ with the sanitizers and -Werror, builds it with all cores.
# 3. Configures build-fuzz/ with clang and -DPRESENCE_FUZZ=ON: the core and its libFuzzer
#    harnesses (tests/fuzz/), built with all cores.
# 4. Runs ctest with two jobs in build-test/, then in build-fuzz/ (each harness over its seed
#    corpus, then a few seconds of fuzzing); extra arguments are passed on to both, e.g.
#    `tests/run.sh -L unit`, `tests/run.sh -L fuzz` or `tests/run.sh -R integration.test_harness`.
# Exits non-zero when anything fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The shared installer (also used by examples/run-broker.sh); valgrind is for the tests only.
bash scripts/ensure-deps.sh valgrind clang libfuzzer-14-dev

build="build-test"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPRESENCE_SANITIZE=ON -DPRESENCE_WERROR=ON
cmake --build "$build" -j"$(nproc)"

fuzz_build="build-fuzz"
cmake -S . -B "$fuzz_build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPRESENCE_FUZZ=ON -DPRESENCE_WERROR=ON
cmake --build "$fuzz_build" -j"$(nproc)"

ctest --test-dir "$build" --output-on-failure -j2 "$@"
ctest --test-dir "$fuzz_build" --output-on-failure -j2 "$@"
