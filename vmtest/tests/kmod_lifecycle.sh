# SPDX-License-Identifier: GPL-2.0-only
# seng.ko unloads cleanly with a populated table (IPv4 and IPv6 enclaves, categories) and stays
# pinned while a rule of either iptables backend uses its match.
. /vmtest/lib.sh

SENG=/usr/local/bin/seng
A=d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0

setup_tun
run $MODPROBE seng
run $SENG enclave add 192.168.28.10 --app $A --host 10.0.0.5 --cat Browser
run $SENG enclave add fd00:28::10 --app $A --host 2001:db8::5
run /usr/local/bin/seng-bench register 5000 --batch
run $SENG stats
assert_contains "$OUT" "enclaves 5002" "stats before unloading"
run $MODPROBE -r seng

for backend in $IPTABLES_BACKENDS; do
	ipt=$(iptables_for $backend)
	run $MODPROBE seng
	run $SENG enclave add 192.168.28.10 --app $A --host 10.0.0.5
	run $ipt -A INPUT -i $TUN_DEV -m seng --src-app $A -j ACCEPT
	run_fails $MODPROBE -r seng
	grep -q '^seng ' /proc/modules || fail "seng unloaded while an $backend rule uses it"
	run $ipt -D INPUT -i $TUN_DEV -m seng --src-app $A -j ACCEPT
	# nft_compat releases the match after its own grace period.
	unloaded() { $MODPROBE -r seng 2>/dev/null; }
	retry 50 unloaded || fail "seng stays loaded after the $backend rule is gone"
done
exit 0
