#!/bin/sh
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
#
# Fails unless every source file of the project (C, shell, CMake, Python, JavaScript, HTML)
# names its licence in an SPDX line within its first three lines (see LICENSE).
# Usage: check_spdx.sh SOURCE_DIR
set -eu
cd "$1"
missing=$(find . \( -path ./.git -o -name 'build*' -o -name node_modules -o -name .run \) -prune -o \
  -type f \( -name '*.c' -o -name '*.h' -o -name '*.sh' -o -name '*.cmake' -o -name CMakeLists.txt \
  -o -name '*.py' -o -name '*.js' -o -name '*.html' -o -path ./.ci/run \) -print |
  sort | while read -r f; do
    head -n 3 "$f" | grep -q 'SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause' || echo "$f"
  done)
if [ -n "$missing" ]; then
  echo "no SPDX-License-Identifier line in the first three lines of:"
  echo "$missing"
  exit 1
fi
echo "every source file has its SPDX line"
