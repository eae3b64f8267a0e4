# SPDX-License-Identifier: GPL-2.0-only
# seng-sim agrees with the kernel at scale: 100,000 packets from 10,000 enclaves of eight apps
# (IPv4 and IPv6), with a timed enclave event every 100 ms, through both iptables backends.
. /vmtest/lib.sh
. /vmtest/e2e/e2e.sh

e2e_kernel
# A light run replays it under one backend (the large scenario's table churn is what it adds).
backends=$IPTABLES_BACKENDS
light && backends=legacy
for backend in $backends; do
	e2e_run large "$backend"
done
e2e_finish
