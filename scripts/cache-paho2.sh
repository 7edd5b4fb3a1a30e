#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
#
# Makes paho-mqtt 2.x available to Debian 12's python3 without installing it, for the second
# run of the Python example's test (examples/clients/python/ must work with paho 1.6, Debian
# 12's python3-paho-mqtt, and with 2.x, Debian 13's and PyPI's).
#
# Debian 13 ("trixie") packages paho-mqtt 2.1 as python3-paho-mqtt, pure Python. This script
# downloads that one .deb with apt-get (its own apt state in the cache folder, trixie's index
# verified with Debian's archive keyring, the mirror taken from this machine's apt sources),
# unpacks it with dpkg -x and prints the folder to put on PYTHONPATH. Done once per machine:
# later runs print the cached folder at once. Nothing is installed into the system.
#
# Usage: scripts/cache-paho2.sh    (prints e.g. /var/cache/mosquitto-presence/paho-mqtt-2/root/usr/lib/python3/dist-packages)
# Environment: PRESENCE_CACHE (default /var/cache/mosquitto-presence), PAHO2_SUITE (trixie).
set -euo pipefail

cache=${PRESENCE_CACHE:-/var/cache/mosquitto-presence}/paho-mqtt-2
suite=${PAHO2_SUITE:-trixie}
site=$cache/root/usr/lib/python3/dist-packages

if [ -f "$site/paho/mqtt/client.py" ]; then
	echo "$site"
	exit 0
fi
# One fetcher at a time (two test runs on one machine); the others wait, then find it ready.
mkdir -p "$cache"
exec 9>"$cache/.lock"
if ! flock -w 600 9; then
	echo "cache-paho2.sh: $cache/.lock is held by another fetch for 10 minutes" >&2
	exit 1
fi
if [ -f "$site/paho/mqtt/client.py" ]; then
	echo "$site"
	exit 0
fi

# The Debian mirror this machine uses (deb822 sources first, then the one-line format).
mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)\/*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
if [ -z "$mirror" ]; then
	mirror=$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\/debian\)\/\?[[:space:]].*/\2/p' \
		/etc/apt/sources.list 2>/dev/null | head -n 1)
fi
if [ -z "$mirror" ]; then
	echo "cache-paho2.sh: no Debian mirror (a URI ending in /debian) in this machine's apt sources" >&2
	exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/paho2.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lists/partial" "$tmp/archives/partial" "$tmp/etc/preferences.d" "$tmp/etc/sources.list.d"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" > "$tmp/etc/sources.list"
: > "$tmp/status"
apt_opts=(-o "Dir::Etc::SourceList=$tmp/etc/sources.list" -o "Dir::Etc::SourceParts=$tmp/etc/sources.list.d"
	-o "Dir::Etc::PreferencesParts=$tmp/etc/preferences.d" -o "Dir::State::Lists=$tmp/lists"
	-o "Dir::State::status=$tmp/status" -o "Dir::Cache::Archives=$tmp/archives"
	-o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o "APT::Architecture=amd64"
	-o "Acquire::Languages=none" -o "APT::Sandbox::User=root")
echo "cache-paho2.sh: fetching python3-paho-mqtt from Debian $suite ($mirror)" >&2
apt-get "${apt_opts[@]}" -q update >&2
(cd "$tmp" && apt-get "${apt_opts[@]}" -q download python3-paho-mqtt >&2)
deb=$(ls "$tmp"/python3-paho-mqtt_*_all.deb)
rm -rf "$cache/root.new"
dpkg -x "$deb" "$cache/root.new"
cp "$deb" "$cache/"
rm -rf "$cache/root"
mv "$cache/root.new" "$cache/root"
echo "$site"
