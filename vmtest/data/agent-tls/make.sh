#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# Makes the test PKI of vmtest/tests/agent-tls.sh (committed; run again to replace it): a CA,
# etcd's server certificate for 10.77.0.1 (lib.sh's ETCD_ADDR), and client certificates for
# the gateways and etcdctl. P-256 keys, valid for 100 years; test material only.
set -eu
cd "$(dirname "$0")"
days=36500
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt \
	-days $days -subj /CN=seng-vmtest-ca 2>/dev/null
issue() {
	name=$1 ext=$2
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$name.key" \
		-out "$name.csr" -subj "/CN=$name" 2>/dev/null
	printf '%s\n' "$ext" >"$name.ext"
	openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days $days \
		-extfile "$name.ext" -out "$name.crt" 2>/dev/null
	rm -f "$name.csr" "$name.ext"
}
issue etcd "subjectAltName=IP:10.77.0.1,IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth,clientAuth"
for client in gw-a gw-b gw-c root; do
	issue $client "extendedKeyUsage=clientAuth"
done
rm -f ca.srl ca.key
