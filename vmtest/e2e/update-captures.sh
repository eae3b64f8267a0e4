#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# Re-captures the real-* scenarios (host side): boots the 6.1 guest to run the e2e-capture test
# (vmtest/e2e/capture.sh records busybox and kernel-socket traffic with tcpdump), then copies
# the captures and their enclave scripts into vmtest/scenarios/real-*/. Review and commit them.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cargo xtask vmtest --kernel 6.1 --filter e2e-capture
files=$(ls -d "${CARGO_TARGET_DIR:-target}"/vmtest/6.1.*/files | tail -n 1)
for session in tcp udp icmp; do
	cp "$files/real-$session.pcap" "vmtest/scenarios/real-$session/capture.pcap"
	cp "$files/real-$session.enclaves.txt" "vmtest/scenarios/real-$session/enclaves.txt"
done
echo "updated vmtest/scenarios/real-{tcp,udp,icmp}/{capture.pcap,enclaves.txt}"
