#!/bin/sh
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
# Compiles every plugin source with musl-gcc (Debian's musl-tools) and links them into a shared
# object, as the official Mosquitto container images (Alpine, musl) would: code that needs glibc
# (its extensions, its private struct members) fails here. The broker's and cJSON's functions
# are left undefined, as in the real plugin (resolved when the broker loads it).
#
# Usage: check_musl_build.sh OUTDIR "DEFINES" "INCLUDE_DIRS" SOURCE...
#   DEFINES: space-separated NAME=VALUE pairs for -D; INCLUDE_DIRS: space-separated folders
#   whose third-party headers (Mosquitto, cJSON, uthash, hiredis, OpenSSL) are made visible.
# Only those headers are linked into OUTDIR/include: the C library's headers stay musl's, so a
# source that includes a glibc-only header fails too.
set -eu

out=$1
defines=$2
dirs=$3
shift 3

if ! command -v musl-gcc >/dev/null; then
  echo "musl-gcc not found: apt-get install musl-tools (scripts/ensure-deps.sh)" >&2
  exit 1
fi

rm -rf "$out"
mkdir -p "$out/include" "$out/obj"
inc="$out/include"
# Third-party headers only: the project's own folders are passed whole (-I), the system include
# folder only for the libraries the plugin uses.
for d in $dirs; do
  case "$d" in
    /usr/include|/usr/include/x86_64-linux-gnu) ;;
    *) set -- "$@" "-I$d" ;;
  esac
done
for h in cjson hiredis mosquitto uthash.h utlist.h mosquitto.h mosquitto_broker.h \
  mosquitto_plugin.h mqtt_protocol.h; do
  if [ -e "/usr/include/$h" ]; then
    ln -s "/usr/include/$h" "$inc/$h"
  fi
done
# OpenSSL's headers are split between the generic folder and the architecture's one.
if [ -d /usr/include/openssl ]; then
  mkdir "$inc/openssl"
  for f in /usr/include/openssl/* /usr/include/*-linux-gnu/openssl/*; do
    [ -e "$f" ] && ln -sf "$f" "$inc/openssl/"
  done
fi

# The arguments after the sources (from the loop above) are -I flags; split them off.
sources=""
includes="-I$inc"
for a in "$@"; do
  case "$a" in
    -I*) includes="$includes $a" ;;
    *) sources="$sources $a" ;;
  esac
done
flags="-std=gnu11 -O1 -fPIC -fvisibility=hidden -Wall -Wextra -Werror -Wno-unused-parameter
  -D_POSIX_C_SOURCE=200809L -DHASH_NONFATAL_OOM=1"
for d in $defines; do
  flags="$flags -D$d"
done

objs=""
n=0
for src in $sources; do
  n=$((n + 1))
  obj="$out/obj/$n-$(basename "$src" .c).o"
  # shellcheck disable=SC2086 # flags and includes are lists of words
  if ! musl-gcc $flags $includes -c "$src" -o "$obj"; then
    echo "musl: cannot compile $src" >&2
    exit 1
  fi
  objs="$objs $obj"
done
# shellcheck disable=SC2086
musl-gcc -shared -o "$out/mosquitto_presence.so" $objs -Wl,--unresolved-symbols=ignore-all
echo "musl build ok: $n sources -> $out/mosquitto_presence.so"
