#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
#
# Makes sure a clean Debian 12 ("bookworm") chroot exists at
# ${PRESENCE_CACHE:-/var/cache/mosquitto-presence}/bookworm and prints its path. The package
# test (tests/examples/test_package.sh) installs the .deb into a throwaway overlay on top of it,
# so the cached tree itself stays exactly as built.
#
# Built once per machine: debootstrap --variant=minbase from the Debian mirror of this machine's
# apt sources, then the .debs that installing mosquitto-presence will need (mosquitto,
# libcjson1 and their dependencies), and those of the README's steps for cluster mode
# (redis-server, libhiredis0.14), are DOWNLOADED into its apt cache, not installed, so that
# each test run installs offline and still proves the package's Depends. The tree is built under
# a temporary name and renamed when complete: an interrupted build is never mistaken for a
# cached one; bookworm.lock next to it serialises builders. Needs root and debootstrap
# (installed with apt-get when missing).
set -euo pipefail

cache=${PRESENCE_CACHE:-/var/cache/mosquitto-presence}
root=$cache/bookworm
stamp=$root/.mosquitto-presence-ready

# What installing the package, and following the README's steps for cluster mode, pulls in.
downloads=(mosquitto libcjson1 redis-server libhiredis0.14)
# A chroot of an older version of this script lacks some of them: they are downloaded into it.
downloads_stamp=$root/.mosquitto-presence-downloads-2

if [ -f "$stamp" ] && [ -f "$downloads_stamp" ]; then
	echo "$root"
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "bookworm-chroot.sh: building the chroot needs root" >&2
	exit 1
fi
# One builder at a time (two test runs on one machine); the others wait, then find it ready.
mkdir -p "$cache"
exec 9>"$cache/bookworm.lock"
if ! flock -w 1800 9; then
	echo "bookworm-chroot.sh: $cache/bookworm.lock is held by another build for 30 minutes" >&2
	exit 1
fi
if [ -f "$stamp" ] && [ ! -f "$downloads_stamp" ]; then
	echo "bookworm-chroot.sh: downloading ${downloads[*]} into $root" >&2
	chroot "$root" apt-get update -q >&2
	chroot "$root" apt-get install -y -q --download-only --no-install-recommends "${downloads[@]}" >&2
	rm -rf "$root/var/lib/apt/lists/partial" "$root/var/cache/apt/archives/partial"
	touch "$downloads_stamp"
fi
if [ -f "$stamp" ]; then
	echo "$root"
	exit 0
fi
if ! command -v debootstrap >/dev/null; then
	apt-get install -y -q --no-install-recommends debootstrap >&2
fi

# The Debian mirror this machine uses (deb822 sources first, then the one-line format).
mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)\/*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
if [ -z "$mirror" ]; then
	mirror=$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\/debian\)\/\?[[:space:]].*/\2/p' \
		/etc/apt/sources.list 2>/dev/null | head -n 1)
fi
if [ -z "$mirror" ]; then
	echo "bookworm-chroot.sh: no Debian mirror (a URI ending in /debian) in this machine's apt sources" >&2
	exit 1
fi

mkdir -p "$cache"
new=$root.new
if mountpoint -q "$new/proc" 2>/dev/null; then umount "$new/proc"; fi
rm -rf "$new"
echo "bookworm-chroot.sh: debootstrap bookworm from $mirror into $new (once per machine)" >&2
debootstrap --variant=minbase bookworm "$new" "$mirror" >&2
echo "deb $mirror bookworm main" > "$new/etc/apt/sources.list"
# Download (not install) what the package will pull in; the chroot shares the host network
# for this step only.
chroot "$new" apt-get update -q >&2
chroot "$new" apt-get install -y -q --download-only --no-install-recommends "${downloads[@]}" >&2
rm -rf "$new/var/lib/apt/lists/partial" "$new/var/cache/apt/archives/partial"
touch "$new/.mosquitto-presence-ready" "$new/${downloads_stamp##*/}"
rm -rf "$root"
mv "$new" "$root"
echo "$root"
