#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
#
# The Debian package: builds it the way the README says (a release build, then cpack), checks
# what it contains, then installs it into a clean Debian 12 chroot and runs the broker there.
#
# 1. Contents: exactly the plugin in /usr/lib/<multiarch>/, the disabled snippet
#    /etc/mosquitto/conf.d/00-presence.conf (a conffile) naming that path, README, LICENSE,
#    a machine-readable copyright file and changelog.Debian.gz; Depends on mosquitto and
#    libcjson1; nothing vendored (no other library, no header). The Maintainer is the project.
# 2. `cmake --install --prefix /usr` of a build configured for /usr/local puts the plugin in
#    /usr/lib/<multiarch>/ too.
# 3. In a throwaway overlay on the cached chroot (scripts/bookworm-chroot.sh), in private mount
#    and network namespaces (everything mounted vanishes with them; loopback only): apt-get
#    installs the .deb offline, pulling in mosquitto and libcjson1 through its Depends. The
#    broker with Debian's stock configuration and the snippet as installed runs without the
#    plugin and accepts a login with a username as before; with the snippet enabled as the
#    README says but no password_file it refuses such a login (as the snippet warns); with a
#    password_file and an acl_file too it publishes alice's presence document. Then the README's
#    steps for Redis on Debian (installed offline from the chroot's cache too) and its
#    configuration: the broker registers in the cluster through Redis' unix socket and
#    publishes alice's document from there.
# shellcheck source=tests/examples/lib.sh
. "$(dirname "$0")/lib.sh"

if [ "${PRESENCE_PRIVATE_NET:-}" != 1 ]; then
	make_work_dir package
	export work
	# Build and inspect outside the namespaces; the chroot needs the network once, to be built.
	build=$work/build
	if cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPRESENCE_TESTS=OFF \
		-DPRESENCE_EXAMPLES=OFF >"$work/build.log" 2>&1 &&
		cmake --build "$build" -j2 >>"$work/build.log" 2>&1 &&
		(cd "$build" && cpack) >>"$work/build.log" 2>&1; then
		pass "cmake, cmake --build and cpack build the package"
	else
		fail "building the package" "$(tail -n 30 "$work/build.log")"
		finish
	fi
	deb=$(ls "$build"/mosquitto-presence_*.deb)
	multiarch=$(gcc -print-multiarch)
	plugin_path=/usr/lib/$multiarch/mosquitto_presence.so

	files=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print $6}' | sort | tr '\n' ' ')
	want=$(printf '%s\n' ./etc/mosquitto/conf.d/00-presence.conf ".$plugin_path" \
		./usr/share/doc/mosquitto-presence/LICENSE ./usr/share/doc/mosquitto-presence/README.md \
		./usr/share/doc/mosquitto-presence/copyright \
		./usr/share/doc/mosquitto-presence/changelog.Debian.gz \
		./usr/share/doc/mosquitto-presence/examples/00-presence.conf | sort | tr '\n' ' ')
	if [ "$files" = "$want" ]; then
		pass "the package holds exactly: $files"
	else
		fail "the package's files" "got:  $files"$'\n'"want: $want"
	fi
	depends=$(dpkg-deb -f "$deb" Depends)
	if [[ "$depends" =~ (^|, )mosquitto\ \(\>=\ 2 ]] && [[ "$depends" =~ (^|, )libcjson1( |,|$) ]]; then
		pass "Depends: $depends"
	else
		fail "Depends should name mosquitto and libcjson1: $depends"
	fi
	suggests=$(dpkg-deb -f "$deb" Suggests)
	if [ "$suggests" = "libhiredis0.14, redis-server | valkey-server" ]; then
		pass "Suggests what cluster mode needs: $suggests"
	else
		fail "Suggests should name libhiredis0.14 and a Redis: $suggests"
	fi
	maintainer=$(dpkg-deb -f "$deb" Maintainer)
	if [ "$maintainer" = "mosquitto-presence developers <mosquitto-presence@users.noreply.github.com>" ]; then
		pass "Maintainer: $maintainer"
	else
		fail "Maintainer should be the project's address: $maintainer"
	fi
	mkdir -p "$work/deb"
	dpkg-deb -x "$deb" "$work/deb"
	dpkg-deb -e "$deb" "$work/deb/DEBIAN"
	doc=$work/deb/usr/share/doc/mosquitto-presence
	# DEP-5: the format line, a Files: * paragraph under the dual licence, and a standalone
	# License paragraph with the text of each of the two (every line of it indented).
	if [ "$(head -n 1 "$doc/copyright")" = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/" ] &&
		grep -qx 'Files: \*' "$doc/copyright" &&
		grep -qx 'License: EPL-2.0 or BSD-3-Clause' "$doc/copyright" &&
		grep -A 8 -x 'License: BSD-3-Clause' "$doc/copyright" | grep -q '^ Redistribution and use in source and binary forms' &&
		grep -A 8 -x 'License: EPL-2.0' "$doc/copyright" | grep -q '^ *THE ACCOMPANYING PROGRAM IS PROVIDED UNDER THE TERMS OF THIS ECLIPSE' &&
		! grep -q '^$' <(sed -n '/^License: EPL-2.0$/,$p' "$doc/copyright"); then
		pass "copyright: machine-readable (DEP-5), EPL-2.0 or BSD-3-Clause, both licence texts"
	else
		fail "the copyright file" "$(head -n 30 "$doc/copyright" 2>&1)"
	fi
	# changelog.Debian.gz: gzip -9n (no name, no time stamp: flags and mtime zero), an entry
	# for this version by the maintainer.
	version=$(dpkg-deb -f "$deb" Version)
	gz_header=$(od -An -tx1 -N9 "$doc/changelog.Debian.gz" 2>/dev/null | tr -d ' \n')
	changelog=$(zcat "$doc/changelog.Debian.gz" 2>/dev/null || true)
	if [ "$gz_header" = 1f8b08000000000002 ] &&
		[[ "$(head -n 1 <<<"$changelog")" == "mosquitto-presence ($version) "*"; urgency="* ]] &&
		grep -q '^  \* .*Mosquitto' <<<"$changelog" &&
		grep -qx " -- $maintainer  [A-Z][a-z][a-z], [0-9][0-9] [A-Z][a-z][a-z] 20[0-9][0-9] [0-9:]* [+-][0-9]*" <<<"$changelog"; then
		pass "changelog.Debian.gz: gzip -9n, an entry for $version signed by the maintainer"
	else
		fail "changelog.Debian.gz" "header $gz_header"$'\n'"$changelog"
	fi
	if [ "$(cat "$work/deb/DEBIAN/conffiles")" = /etc/mosquitto/conf.d/00-presence.conf ]; then
		pass "the snippet is a conffile: dpkg keeps the operator's edits"
	else
		fail "conffiles" "$(cat "$work/deb/DEBIAN/conffiles" 2>&1)"
	fi
	snippet=$work/deb/etc/mosquitto/conf.d/00-presence.conf
	if ! grep -Ev '^(#|[[:space:]]*$)' "$snippet" >/dev/null &&
		grep -qx "#plugin $plugin_path" "$snippet"; then
		pass "the snippet is disabled (comments only) and names $plugin_path"
	else
		fail "the snippet" "$(cat "$snippet")"
	fi
	libs=$(ldd "$work/deb$plugin_path" 2>&1 || true)
	if sh "$src/tests/check_exports.sh" "$work/deb$plugin_path" >/dev/null &&
		[[ "$libs" != *"not found"* ]] && [[ "$libs" == *libcjson.so.1* ]]; then
		pass "the packaged plugin exports only its entry points and links Debian's libcjson.so.1"
	else
		fail "the packaged plugin" "$libs"
	fi

	# A build configured for /usr/local, installed with --prefix /usr.
	if DESTDIR=$work/usr-install cmake --install "$build" --prefix /usr >"$work/install.log" 2>&1 &&
		[ -f "$work/usr-install$plugin_path" ] &&
		grep -qx "#plugin $plugin_path" "$work/usr-install/etc/mosquitto/conf.d/00-presence.conf"; then
		pass "cmake --install --prefix /usr (build configured for /usr/local) installs $plugin_path"
	else
		fail "cmake --install --prefix /usr" "$(cat "$work/install.log")"
	fi

	if chroot_dir=$(bash "$src/scripts/bookworm-chroot.sh" 2>"$work/chroot.log"); then
		pass "clean Debian 12 chroot: $chroot_dir"
	else
		fail "scripts/bookworm-chroot.sh" "$(tail -n 20 "$work/chroot.log")"
		finish
	fi
	cp "$deb" "$work/mosquitto-presence.deb"
	export chroot_dir passed failed
	exec unshare --net --mount --propagation private -- env PRESENCE_PRIVATE_NET=1 bash "$0" "$@"
fi

# --- Inside private network and mount namespaces: the chroot part. -------------------------
ip link set lo up
lower=$chroot_dir
top=$work/overlay
root=$top/root
mkdir -p "$top/upper" "$top/work" "$root"
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$top/upper,workdir=$top/work" "$root"
mount -t proc proc "$root/proc"
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	stop_demo_broker
	umount "$root/proc" 2>/dev/null || true
	# The overlay's upper layer holds the installed files: dropped once nothing is mounted.
	if umount "$root" 2>/dev/null; then rm -rf "$top"; fi
}
trap cleanup EXIT
# Keep maintainer scripts from starting services inside the chroot.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
cp "$work/mosquitto-presence.deb" "$root/tmp/"
if chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	--no-install-recommends /tmp/mosquitto-presence.deb >"$work/apt.log" 2>&1; then
	pass "apt-get installs the .deb into the clean chroot, with its Depends, offline"
else
	fail "apt-get install in the chroot" "$(tail -n 30 "$work/apt.log")"
	finish
fi
for pkg in mosquitto libcjson1 mosquitto-presence; do
	# shellcheck disable=SC2016 # a dpkg-query format
	if [[ "$(chroot "$root" dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null)" == ii* ]]; then
		pass "installed in the chroot: $pkg"
	else
		fail "not installed in the chroot: $pkg"
	fi
done
mkdir -p "$root/run/mosquitto"
chroot "$root" chown mosquitto /run/mosquitto
log=$root/var/log/mosquitto/mosquitto.log

# Runs the chroot's broker with Debian's configuration until it logs that it runs.
start_chroot_broker() {
	: >"$log"
	chroot "$root" chown mosquitto /var/log/mosquitto/mosquitto.log
	chroot "$root" /usr/sbin/mosquitto -c /etc/mosquitto/mosquitto.conf >"$work/broker-stderr.log" 2>&1 &
	broker_pid=$!
	if wait_for 30 chroot_broker_up_or_gone && grep -q ' running$' "$log"; then
		pass "the chroot's broker runs ($1)"
	else
		fail "the chroot's broker did not start ($1)" "$(cat "$log" "$work/broker-stderr.log")"
		finish
	fi
}
# shellcheck disable=SC2317 # called through wait_for
chroot_broker_up_or_gone() { grep -q ' running$' "$log" || ! kill -0 "$broker_pid" 2>/dev/null; }

# 1. As installed: the snippet changes nothing.
start_chroot_broker "stock configuration, snippet as installed"
if mosquitto_pub -h 127.0.0.1 -p 1883 -u someone -t test -m x 2>"$work/pub.log" &&
	! grep -q mosquitto-presence "$log"; then
	pass "as installed, the plugin is not loaded and a login with a username works as before"
else
	fail "as installed, the broker should behave as before" "$(cat "$work/pub.log" "$log")"
fi
stop_demo_broker

# 2. Enabled as the README says ("Install on Debian"), on a broker without password_file.
conf=$root/etc/mosquitto/conf.d/00-presence.conf
sed -i -e '/^# ENABLE$/,/^# END$/{/^# \(ENABLE\|END\)$/!s/^#//}' "$conf"
start_chroot_broker "snippet enabled, no password_file"
if grep -q 'mosquitto-presence: version .* started' "$log" &&
	! mosquitto_pub -h 127.0.0.1 -p 1883 -u someone -t test -m x 2>"$work/pub.log" &&
	grep -q 'not authorised' "$work/pub.log"; then
	pass "enabled without a password_file: the plugin loads and a login with a username is refused, as the snippet warns"
else
	fail "enabled without a password_file" "$(cat "$work/pub.log" "$log")"
fi
stop_demo_broker

# 3. With a password_file and an acl_file (a file that sorts after 00-presence.conf).
cat >"$root/etc/mosquitto/conf.d/50-local.conf" <<'EOF'
listener 1883 127.0.0.1
password_file /etc/mosquitto/passwd
acl_file /etc/mosquitto/acl
EOF
printf 'user alice\ntopic read presence/#\n' >"$root/etc/mosquitto/acl"
chroot "$root" sh -c 'touch /etc/mosquitto/passwd && chmod 640 /etc/mosquitto/passwd &&
	chown root:mosquitto /etc/mosquitto/passwd && mosquitto_passwd -b /etc/mosquitto/passwd alice alice-pw'
start_chroot_broker "snippet enabled, password_file and acl_file"
if out=$(mosquitto_sub -h 127.0.0.1 -p 1883 -u alice -P alice-pw -t presence/alice -C 1 -W 10 2>&1) &&
	[[ "$out" =~ ^\{\"username\":\"alice\",\"available\":true,\"sessions\":1,\"since\":[0-9]+,\"seq\":1,\"state\":\{\}\}$ ]]; then
	pass "the installed plugin publishes alice's presence document: $out"
else
	fail "no presence document from the installed plugin" "$out"$'\n'"$(cat "$log")"
fi
if [ -s "$root/var/lib/mosquitto/presence-state.json" ]; then
	pass "the state file is written to /var/lib/mosquitto/presence-state.json"
else
	fail "no state file in /var/lib/mosquitto" "$(ls -la "$root/var/lib/mosquitto")"
fi
stop_demo_broker

# 4. Cluster mode as the README's "Setting up Redis on Debian" says: its commands as written,
# but for what a chroot without systemd or a terminal needs (no sudo, apt-get without
# questions, Redis started as its user the way its systemd unit does), then its configuration.
readme_block '<!-- recipe redis-debian -->' >"$work/redis-recipe.sh"
sed -i -e 's/^sudo //' \
	-e 's/^apt-get install /apt-get install -y -q --no-install-recommends /' \
	-e 's|^systemctl restart redis-server$|install -d -o redis -g redis -m 2755 /run/redis \&\& su -s /bin/sh redis -c "redis-server /etc/redis/redis.conf --daemonize yes"|' \
	"$work/redis-recipe.sh"
if grep -q '^apt-get install -y -q --no-install-recommends redis-server' "$work/redis-recipe.sh" &&
	grep -q '^install -d -o redis' "$work/redis-recipe.sh" && ! grep -q sudo "$work/redis-recipe.sh"; then
	pass "README: the steps for Redis on Debian"
else
	fail "README: the steps for Redis on Debian changed; adapt this test" "$(cat "$work/redis-recipe.sh")"
	finish
fi
cp "$work/redis-recipe.sh" "$root/tmp/redis-recipe.sh"
redis_sock=$root/run/redis/redis-server.sock
# shellcheck disable=SC2317 # called through wait_for
redis_gone() { ! kill -0 "$1" 2>/dev/null; }
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup_redis() {
	local pid
	# Debian's redis.conf names this pid file; Redis runs in this test's namespaces only.
	pid=$(cat "$root/run/redis/redis-server.pid" 2>/dev/null || true)
	if [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null; then
		wait_for 10 redis_gone "$pid" || true
	fi
	cleanup
}
trap cleanup_redis EXIT
if chroot "$root" env DEBIAN_FRONTEND=noninteractive sh -e /tmp/redis-recipe.sh >"$work/redis-recipe.log" 2>&1 &&
	wait_for 30 test -S "$redis_sock"; then
	pass "the steps install Redis offline and start it on its unix socket"
else
	fail "the steps for Redis on Debian" "$(tail -n 30 "$work/redis-recipe.log")"
	finish
fi
if grep -qx 'appendonly yes' "$root/etc/redis/redis.conf" &&
	grep -qx 'unixsocketperm 770' "$root/etc/redis/redis.conf" &&
	chroot "$root" id -nG mosquitto | grep -qw redis; then
	pass "redis.conf has appendonly yes and the socket for the redis group; mosquitto is in it"
else
	fail "after the steps for Redis" "$(grep -E '^(appendonly|unixsocket)' "$root/etc/redis/redis.conf"; chroot "$root" id mosquitto)"
fi
readme_block '<!-- recipe redis-debian-conf -->' >>"$conf"
start_chroot_broker "cluster mode through Redis' unix socket"
if wait_for 30 grep -q 'registered in the cluster as broker broker1' "$log"; then
	pass "the broker registers in the cluster as broker1"
else
	fail "the broker did not register in the cluster" "$(cat "$log")"
fi
# -R: not the retained document of step 3 (alice offline, seq 2, kept in Mosquitto's
# persistence); the cluster numbers alice's documents on from the state file's seq.
if out=$(mosquitto_sub -R -h 127.0.0.1 -p 1883 -u alice -P alice-pw -t presence/alice -C 1 -W 10 2>&1) &&
	[[ "$out" =~ ^\{\"username\":\"alice\",\"available\":true,\"sessions\":1,\"since\":[0-9]+,\"seq\":([0-9]+),\"state\":\{\}\}$ ]] &&
	[ "${BASH_REMATCH[1]}" -gt 2 ]; then
	pass "in cluster mode, alice's presence document, seq going on from step 3: $out"
else
	fail "no presence document in cluster mode" "$out"$'\n'"$(cat "$log")"
fi
finish
