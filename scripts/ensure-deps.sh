#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
# Makes sure the Debian 12 packages the project needs are installed.
#
# Usage: scripts/ensure-deps.sh [extra packages...]
# As root, missing packages are installed with apt-get. Otherwise the exact command to run is
# printed and the script exits 1. Sourcing is not needed: run it as a command.
set -euo pipefail

packages=(mosquitto mosquitto-dev libmosquitto-dev mosquitto-clients libcjson-dev
  libcmocka-dev uthash-dev libhiredis-dev libssl-dev redis-server cmake pkg-config gcc make "$@")

missing=()
for pkg in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
  case "$status" in
    ii*) ;;
    *) missing+=("$pkg") ;;
  esac
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "Missing Debian packages: ${missing[*]}" >&2
  echo "Install them with:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "Installing missing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >&2
# policy-rc.d keeps the Debian mosquitto package from starting a system broker on port 1883
# while it is installed (where init scripts run at all).
policy=/usr/sbin/policy-rc.d
created_policy=false
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod +x "$policy"
  created_policy=true
fi
status=0
apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 || status=$?
if $created_policy; then
  rm -f "$policy"
fi
exit $status
