#!/bin/sh
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
# Usage: make-certs.sh DIR
# Makes the certificates of the cluster's TLS tests in DIR with openssl: a CA (ca.crt), a
# certificate for Redis signed by it for the host name "localhost" only (redis.crt,
# redis.key), a client certificate signed by it (client.crt, client.key), and another CA that
# signed nothing the tests trust (other-ca.crt). Keys are EC P-256; everything is valid for
# two days.
set -eu
dir=$1
mkdir -p "$dir"
cd "$dir"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ca() {
	key "$1.key"
	openssl req -x509 -new -key "$1.key" -out "$1.crt" -days 2 -subj "/CN=$2" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
		2>/dev/null
}
signed() {
	key "$1.key"
	openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
	printf '%s\n' "$3" >"$1.ext"
	openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" \
		-days 2 -extfile "$1.ext" 2>/dev/null
	rm -f "$1.csr" "$1.ext"
}
ca ca "presence test CA"
ca other-ca "another CA"
signed redis localhost "subjectAltName=DNS:localhost
extendedKeyUsage=serverAuth"
signed client presence-broker "extendedKeyUsage=clientAuth"
chmod 600 ./*.key
