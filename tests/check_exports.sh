#!/bin/sh
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
# Fails unless the plugin exports exactly mosquitto_plugin_version, _init and _cleanup.
set -eu
got=$(nm -D --defined-only "$1" | awk '$2 ~ /^[TDBRV]$/ {print $3}' | sort | tr '\n' ' ')
want="mosquitto_plugin_cleanup mosquitto_plugin_init mosquitto_plugin_version "
if [ "$got" != "$want" ]; then
  echo "exported symbols: $got"
  echo "expected:         $want"
  exit 1
fi
echo "exports ok: $got"
