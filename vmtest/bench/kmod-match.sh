# SPDX-License-Identifier: GPL-2.0-only
# In-kernel match cost against table size, measured the way the original was: 60-byte UDP packets
# written into tunFA for a local port pass an INPUT chain of 10 rules that all get evaluated,
# either `-m seng --src-app <no match>` or plain `-s 10.9.9.9`, then `-j ACCEPT`; with M = 10,
# 10k and 1M registered enclaves, from a registered and an unregistered source. Prints packets/s
# and the seng/plain ratio per M (targets: >= 0.9 at every M; 1M within 1.1x of 10), and the time
# to register 1M enclaves singly and batched. Prints figures only; nothing is asserted.
. /vmtest/lib.sh

BENCH=/usr/local/bin/seng-bench
SENG=/usr/local/bin/seng
IPT=$(iptables_for legacy)
PACKETS=${PACKETS:-100000}
# A measurement nobody registers, so every seng rule is evaluated and fails.
NO_MATCH=00000000000000000000000000000000000000000000000000000000000000ff
# seng-bench registers enclave i at 10.0.0.0 + i + 1: 10.0.0.1 is always one of them.
REGISTERED=10.0.0.1
UNREGISTERED=10.255.255.254

# chain KIND: INPUT gets 10 rules of KIND (seng or plain) and a final ACCEPT.
chain() {
	$IPT -F INPUT
	i=0
	while [ $i -lt 10 ]; do
		case $1 in
		seng) $IPT -A INPUT -i $TUN_DEV -m seng --src-app $NO_MATCH -j ACCEPT ;;
		plain) $IPT -A INPUT -i $TUN_DEV -s 10.9.9.9 -j ACCEPT ;;
		esac
		i=$((i + 1))
	done
	$IPT -A INPUT -j ACCEPT
}

# rate SOURCE: packets/s of one run from SOURCE.
rate() {
	$INJECT udp --src "$1" --dst $TUN_ADDR --dport 9 --count $PACKETS --len 60 |
		sed -n 's/.*(\([0-9]*\) packets\/s)$/\1/p'
}

# max A B: the larger.
max() { [ "${1:-0}" -gt "${2:-0}" ] && echo "${1:-0}" || echo "${2:-0}"; }

# ratio A B: A/B with three decimals.
ratio() {
	echo $(($1 * 1000 / $2)) | sed 's/\(...\)$/.\1/; s/^\./0./'
}

setup_tun
$MODPROBE seng
echo "kernel $(uname -r), 1 vCPU under QEMU TCG, $PACKETS packets per run, iptables-legacy"
printf '%9s %12s %12s %12s %12s %8s %8s\n' M "plain reg" "seng reg" "plain unreg" "seng unreg" "reg" "unreg"
for m in 10 10000 1000000; do
	$SENG flush
	$BENCH register $m --batch --v6-every 0 >/dev/null || echo "FAILED: registering $m enclaves"
	# Best of three, plain and seng interleaved so that drift in the host's load hits both.
	plain_reg=0 plain_unreg=0 seng_reg=0 seng_unreg=0
	for _ in 1 2 3; do
		chain plain
		plain_reg=$(max $plain_reg "$(rate $REGISTERED)")
		plain_unreg=$(max $plain_unreg "$(rate $UNREGISTERED)")
		chain seng
		seng_reg=$(max $seng_reg "$(rate $REGISTERED)")
		seng_unreg=$(max $seng_unreg "$(rate $UNREGISTERED)")
	done
	printf '%9s %12s %12s %12s %12s %8s %8s\n' "$m" "$plain_reg" "$seng_reg" "$plain_unreg" "$seng_unreg" \
		"$(ratio "$seng_reg" "$plain_reg")" "$(ratio "$seng_unreg" "$plain_unreg")"
	eval "seng_reg_$m=$seng_reg seng_unreg_$m=$seng_unreg"
done
echo "seng 1M/10 (registered source): $(ratio "$seng_reg_10" "$seng_reg_1000000") slowdown factor"
echo "seng 1M/10 (unregistered source): $(ratio "$seng_unreg_10" "$seng_unreg_1000000") slowdown factor"
echo "ratio columns: seng/plain packets/s; slowdown factor: packets/s at 10 over packets/s at 1M"

$IPT -F INPUT
$SENG flush
timed "register 1M enclaves batched (many per message)" $BENCH register 1000000 --batch --v6-every 0
$SENG flush
timed "register 1M enclaves singly (one acked message each)" $BENCH register 1000000 --single --v6-every 0
$SENG flush
