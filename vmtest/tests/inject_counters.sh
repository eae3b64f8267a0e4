# SPDX-License-Identifier: GPL-2.0-only
# Packets written into tunFA by the injector traverse INPUT like received traffic: the counters
# of a matching rule read exactly what was sent, under both iptables backends.
. /vmtest/lib.sh

setup_tun
for backend in $IPTABLES_BACKENDS; do
	ipt=$(iptables_for $backend)
	run $ipt -A INPUT -i $TUN_DEV -p udp -j ACCEPT
	run $INJECT udp --dev $TUN_DEV --src $TUN_PEER --dst $TUN_ADDR --dport 4711 --count 10 --len 60
	counted() { [ "$(ipt_counters $backend INPUT $TUN_DEV)" = "10 600" ]; }
	retry 20 counted || fail "$backend: INPUT rule counters are '$(ipt_counters $backend INPUT $TUN_DEV)', expected '10 600'"
	run $ipt -D INPUT -i $TUN_DEV -p udp -j ACCEPT
done
