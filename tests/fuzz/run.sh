#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
# The libFuzzer harnesses of tests/fuzz/ (see CMakeLists.txt there).
#
# Long runs:  tests/fuzz/run.sh [-t SECONDS] [NAME...]
#   Builds build-fuzz/ (clang, -DPRESENCE_FUZZ=ON), then fuzzes each harness (all by default;
#   NAME is e.g. merge for fuzz_merge) for SECONDS (default 600) with the dictionary, starting
#   from its seed corpus tests/fuzz/corpus/NAME/, and merges the new inputs that add coverage
#   into that corpus (libFuzzer -merge=1): review and commit them. A crash stops the run with
#   the crashing input saved in build-fuzz/fuzz-artifacts/; reproduce it with
#   build-fuzz/tests/fuzz/fuzz_NAME <file>, fix it, and add the input to the corpus and a unit
#   test.
#
# CI check (what ctest runs for each harness, from tests/run.sh):
#   tests/fuzz/run.sh --check BINARY CORPUS_DIR SECONDS ARTIFACT_DIR
#   runs every input of CORPUS_DIR, then fuzzes for SECONDS seeded from it; new inputs go to a
#   scratch directory that is removed afterwards, so the check never changes the repository.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dict="$here/presence.dict"
# Bounded per input: a slow input is a finding too.
common=(-dict="$dict" -timeout=10 -rss_limit_mb=2048 -max_len=16384 -print_final_stats=0)

if [ "${1:-}" = "--check" ]; then
  bin="$2" corpus="$3" seconds="$4" artifacts="$5"
  mkdir -p "$artifacts"
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
  # Every seed input, once.
  "$bin" "${common[@]}" -runs=0 -artifact_prefix="$artifacts/" "$corpus"
  # Then a short, bounded fuzz run: new inputs go to the scratch directory (the first one).
  "$bin" "${common[@]}" -max_total_time="$seconds" -artifact_prefix="$artifacts/" \
    "$scratch" "$corpus"
  exit 0
fi

seconds=600
if [ "${1:-}" = "-t" ]; then
  seconds="$2"
  shift 2
fi
cd "$here/../.."
build=build-fuzz
bash scripts/ensure-deps.sh clang
bash scripts/ensure-deps.sh "libfuzzer-$(clang -dumpversion | cut -d. -f1)-dev"
cmake -S . -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPRESENCE_FUZZ=ON -DPRESENCE_WERROR=ON >/dev/null
cmake --build "$build" -j"$(nproc)"
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for src in "$here"/fuzz_*.c; do
    name="$(basename "$src" .c)"
    names+=("${name#fuzz_}")
  done
fi
artifacts="$build/fuzz-artifacts"
mkdir -p "$artifacts"
for name in "${names[@]}"; do
  bin="$build/tests/fuzz/fuzz_$name"
  corpus="$here/corpus/$name"
  work="$build/fuzz-work/$name"
  mkdir -p "$corpus" "$work"
  echo "== fuzz_$name: $seconds s" >&2
  "$bin" "${common[@]}" -max_total_time="$seconds" -artifact_prefix="$artifacts/" \
    "$work" "$corpus"
  # Keep only the new inputs that add coverage to the seed corpus.
  "$bin" "${common[@]}" -merge=1 "$corpus" "$work"
done
