# SPDX-License-Identifier: GPL-2.0-only
# seng-sim agrees with the kernel packet for packet: every scenario of vmtest/scenarios (but the
# slow ones) replayed through seng.ko and the legacy iptables backend leaves the same counters on
# every rule and policy as seng-sim computes for the same capture, rules and enclave events.
. /vmtest/lib.sh
. /vmtest/e2e/e2e.sh

e2e_corpus legacy
