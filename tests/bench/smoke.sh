#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
# ctest's smoke run of the benchmarks (label integration): every scenario of run.sh once, and
# every configuration of visibility.sh once, at a tiny size, against a real broker with the
# unsanitized plugin. It asserts only that the load generator and the scripts complete and
# count correctly (they exit non-zero on any BROKEN run: a refused connect, a lost or
# unexpected document, a document a watcher may not see, a deadline); it never asserts a timing.
# Environment (tests/CMakeLists.txt): PRESENCE_PLAIN_PLUGIN, LOADGEN, MOSQUITTO_BIN.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$here/run.sh" --smoke --plugin "$PRESENCE_PLAIN_PLUGIN" --loadgen "$LOADGEN" \
	--mosquitto "$MOSQUITTO_BIN"
MOSQUITTO_BIN="$MOSQUITTO_BIN" bash "$here/visibility.sh" --smoke \
	--plugin "$PRESENCE_PLAIN_PLUGIN" --loadgen "$LOADGEN"
