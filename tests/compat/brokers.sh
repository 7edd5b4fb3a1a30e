# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
# shellcheck shell=bash
# The brokers of the test matrix, for tests/compat/run.sh and tests/bench/run.sh (sourced:
# `root=<checkout> . tests/compat/brokers.sh`). See tests/compat/run.sh for what each is and
# where it is cached. Callers set `trap unmount_all EXIT` before they mount anything.
#
#   ensure_2_0_21            downloads and unpacks bookworm-backports' 2.0.21 (once), sets
#                            nothing: the broker is $broker_2_0_21
#   ensure_valkey_backports  the same for bookworm-backports' Valkey 8.0: $valkey_backports_bin
#   ensure_chroot            builds the Debian sid chroot $chroot_dir (once), installs missing
#                            packages into it, checks that its broker is 2.1.2
#   mount_for_run            mounts /proc, /dev, /dev/shm and the checkout $root (at the same
#                            path) into the chroot
#   chroot_run CMD...        runs CMD in the chroot with a clean environment (NAME=VALUE words
#                            first, as for env)
#   unmount_all              undoes every mount made here, in reverse order

: "${root:?brokers.sh: set root to the checkout first}"
cache="${PRESENCE_CACHE_DIR:-/var/cache/mosquitto-presence}"

backports_version="2.0.21-1~bpo12+1"
broker_2_0_21="$cache/mosquitto-2.0.21/usr/sbin/mosquitto"
valkey_backports_bin="$cache/valkey-backports/usr/bin/valkey-server"
chroot_dir="$cache/sid"
chroot_stamp="$chroot_dir/.presence-chroot-ready"
# What the suite needs inside the chroot: the packages of scripts/ensure-deps.sh and
# tests/run.sh (valgrind, chromium), libc6-dev (only a Recommends of gcc: without it, CMake's
# compiler check fails), binutils (nm, for the import check), python3-paho-mqtt (2.x in sid; the
# Python example), nodejs and npm (the browser test; Node.js comes with the host's image, not
# from Debian 12), iproute2 (`ip`, for the examples' private network namespace), libhiredis-dev,
# libssl-dev and redis-server (cluster mode, TLS to Redis, and their tests), openssl (the TLS
# tests' certificates), valkey-server (the cluster tests again, on Valkey).
chroot_packages=(mosquitto mosquitto-dev libmosquitto-dev mosquitto-clients libcjson-dev
	libcmocka-dev uthash-dev libhiredis-dev libssl-dev redis-server cmake gcc make pkg-config
	python3-paho-mqtt valgrind libc6-dev binutils chromium nodejs npm iproute2
	valkey-server openssl)

mounted=() # mount points made here, in mount order

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

log() {
	echo "compat: $*" >&2
}

die() {
	log "$*"
	exit 2
}

# The Debian mirror of this machine's apt sources: the first URIs of a deb822 stanza (or the
# first one-line `deb` entry) whose suite is not a -security one.
debian_mirror() {
	local uri
	uri=$(awk '
		function flush() { if (uris != "" && suites != "" && suites !~ /-security/) { print uris; exit } uris = suites = "" }
		/^[[:space:]]*$/ { flush(); next }
		tolower($1) == "uris:" { uris = $2 }
		tolower($1) == "suites:" { $1 = ""; suites = $0 }
		END { flush() }' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
	if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
		uri=$(awk '$1 == "deb" && $3 !~ /-security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' \
			/etc/apt/sources.list)
	fi
	[ -n "$uri" ] || die "no Debian mirror found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list"
	echo "$uri"
}

# The version line of a broker binary, e.g. "2.0.21" (run with the given command prefix).
broker_version() {
	"$@" -h 2>&1 | sed -n 's/^mosquitto version //p' | head -n 1
}

# ---------------------------------------------------------------------------------------------
# 2.0.21: bookworm-backports' package, unpacked into the cache
# ---------------------------------------------------------------------------------------------

# backports_download DIR PACKAGE=VERSION|PACKAGE...: downloads the .debs from the mirror's
# bookworm-backports into DIR, with apt-get's own sources list and package lists under
# $cache/apt-backports: the machine's apt sources and lists stay as they are. The mirror may be
# a dated snapshot whose Release has expired.
backports_download() {
	local into="$1" apt="$cache/apt-backports"
	shift
	mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$into"
	echo "deb $(debian_mirror) bookworm-backports main" >"$apt/sources.list"
	local opts=(-o "Dir::Etc::sourcelist=$apt/sources.list" -o "Dir::Etc::sourceparts=-"
		-o "Dir::State::Lists=$apt/lists" -o "Dir::Cache::archives=$apt/archives"
		-o "Acquire::Check-Valid-Until=false" -o "APT::Sandbox::User=root" -q)
	apt-get "${opts[@]}" update >&2
	(cd "$into" && apt-get "${opts[@]}" download "$@" >&2)
}

ensure_2_0_21() {
	local dir="$cache/mosquitto-2.0.21" apt="$cache/apt-backports" unpack deb
	# The broker links Debian 12's libwebsockets17, which 2.0.11 does not need.
	bash "$root/scripts/ensure-deps.sh" libwebsockets17
	if [ -x "$broker_2_0_21" ] && [ "$(broker_version "$broker_2_0_21")" = 2.0.21 ]; then
		return 0
	fi
	log "downloading mosquitto=$backports_version from bookworm-backports into $apt"
	rm -f "$apt"/mosquitto_*.deb
	backports_download "$apt" "mosquitto=$backports_version"
	deb=$(ls "$apt"/mosquitto_*.deb)
	unpack="$dir.new"
	rm -rf "$unpack"
	dpkg -x "$deb" "$unpack"
	rm -rf "$dir"
	mv "$unpack" "$dir"
	[ "$(broker_version "$broker_2_0_21")" = 2.0.21 ] || die "$broker_2_0_21 is not mosquitto 2.0.21"
}

# Valkey for Debian 12 (bookworm-backports' valkey-server 8.0, unpacked like 2.0.21, once): the
# cluster tests run on it too. Its libraries (libjemalloc2, liblzf1, libatomic1) are Debian
# 12's, installed with redis-server or by ensure-deps.sh.
ensure_valkey_backports() {
	local dir="$cache/valkey-backports" unpack deb
	bash "$root/scripts/ensure-deps.sh" libatomic1 libjemalloc2 liblzf1
	if "$valkey_backports_bin" --version 2>/dev/null | grep -q '^Valkey server v=8'; then
		return 0
	fi
	log "downloading valkey-server and valkey-tools from bookworm-backports into $dir.debs"
	rm -rf "$dir.debs"
	backports_download "$dir.debs" valkey-server valkey-tools
	unpack="$dir.new"
	rm -rf "$unpack"
	for deb in "$dir.debs"/*.deb; do
		dpkg -x "$deb" "$unpack"
	done
	rm -rf "$dir" "$dir.debs"
	mv "$unpack" "$dir"
	"$valkey_backports_bin" --version | grep -q '^Valkey server v=8' ||
		die "$valkey_backports_bin is not Valkey 8"
}

# ---------------------------------------------------------------------------------------------
# 2.1.2: a Debian sid chroot
# ---------------------------------------------------------------------------------------------

# Fails when anything is mounted below the chroot (a run in progress, or one that died without
# its clean-up): deleting it then would delete through the mounts.
chroot_unmounted() {
	if findmnt -rn -o TARGET | grep -q "^$chroot_dir/"; then
		log "something is mounted below $chroot_dir:"
		findmnt -rn -o TARGET | grep "^$chroot_dir/" >&2
		return 1
	fi
}

chroot_run() {
	chroot "$chroot_dir" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
		DEBIAN_FRONTEND=noninteractive "$@"
}

# debootstrap minbase, apt configured for the (possibly dated) mirror, no service starts.
build_chroot() {
	local mirror
	mirror=$(debian_mirror)
	chroot_unmounted || die "not rebuilding $chroot_dir"
	log "building a Debian sid chroot in $chroot_dir from $mirror (a few minutes, about 2.5 GB)"
	rm -rf --one-file-system "$chroot_dir"
	bash "$root/scripts/ensure-deps.sh" debootstrap
	debootstrap --variant=minbase sid "$chroot_dir" "$mirror" >&2
	echo 'Acquire::Check-Valid-Until "false";' >"$chroot_dir/etc/apt/apt.conf.d/99no-check-valid-until"
	printf '#!/bin/sh\nexit 101\n' >"$chroot_dir/usr/sbin/policy-rc.d"
	chmod +x "$chroot_dir/usr/sbin/policy-rc.d"
}

# Installs those of chroot_packages that are missing (all of them in a new chroot).
install_chroot_packages() {
	local pkg missing=()
	for pkg in "${chroot_packages[@]}"; do
		# shellcheck disable=SC2016 # a dpkg-query format, not a shell expansion
		case "$(chroot_run dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)" in
		ii*) ;;
		*) missing+=("$pkg") ;;
		esac
	done
	[ ${#missing[@]} -gt 0 ] || return 0
	log "installing into the chroot: ${missing[*]}"
	# apt-get needs /proc for some maintainer scripts.
	mount_in_chroot proc /proc -t proc
	chroot_run apt-get update -q >&2
	chroot_run apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
	unmount_all
}

# Makes sure a finished chroot with every package is there. A chroot without the stamp is
# half-built: one whose debootstrap did not finish (debootstrap removes its debootstrap/
# folder when it succeeds) is made again; one whose base system is complete only gets the
# packages.
ensure_chroot() {
	exec 9>"$cache/sid.lock"
	flock 9
	if [ ! -f "$chroot_stamp" ]; then
		if [ -d "$chroot_dir/debootstrap" ] || [ ! -x "$chroot_dir/usr/bin/apt-get" ]; then
			build_chroot
		fi
		install_chroot_packages
		date -u +%FT%TZ >"$chroot_stamp"
	else
		install_chroot_packages
	fi
	flock -u 9
	[ "$(broker_version chroot_run /usr/sbin/mosquitto)" = 2.1.2 ] ||
		die "the chroot's mosquitto is $(broker_version chroot_run /usr/sbin/mosquitto), not 2.1.2"
}

# mount_in_chroot SOURCE TARGET [mount options...]: mounts SOURCE at chroot_dir/TARGET (a bind
# mount unless options say otherwise) and remembers it for unmount_all.
mount_in_chroot() {
	local source="$1" target="$chroot_dir$2"
	shift 2
	mkdir -p "$target"
	if [ $# -gt 0 ]; then
		mount "$@" "$source" "$target"
	else
		mount --bind "$source" "$target"
	fi
	mounted+=("$target")
}

# Unmounts what mount_in_chroot mounted, in reverse order (lazily when busy).
unmount_all() {
	local i
	for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
		umount "${mounted[$i]}" 2>/dev/null || umount -l "${mounted[$i]}" ||
			log "could not unmount ${mounted[$i]}"
	done
	mounted=()
}

# Mounts what a run in the chroot needs: /proc, /dev, /dev/shm, and the checkout at its own
# path (so that paths in logs and in build folders are the same inside and out).
mount_for_run() {
	mount_in_chroot proc /proc -t proc
	mount_in_chroot /dev /dev
	mount_in_chroot /dev/shm /dev/shm
	mount_in_chroot "$root" "$root"
}
