#!/bin/sh
# Fails when the plugin calls a mosquitto_* function not listed in tests/broker-imports.txt
# (see that file for why the list matters).
set -eu
plugin=$1
allowed=$2
used=$(nm -D --undefined-only "$plugin" | awk '{print $2}' | sed 's/@.*//' | grep '^mosquitto_' | sort -u)
bad=""
for sym in $used; do
  grep -qx "$sym" "$allowed" || bad="$bad $sym"
done
if [ -n "$bad" ]; then
  echo "the plugin calls broker functions not in $allowed:$bad"
  exit 1
fi
echo "broker imports ok: $(echo $used | wc -w) functions"
