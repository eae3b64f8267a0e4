# SPDX-License-Identifier: GPL-2.0-only
# The match data libxt_seng.so writes means to seng.ko what its saved form says: rules added
# with iptables-legacy and iptables-nft count packets from a registered enclave exactly when
# their options (negated or not, with prefix or dotted masks) hold, and never count packets
# from an address that is not an enclave.
. /vmtest/lib.sh

SENG=/usr/local/bin/seng
A=d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0
B=d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792
ENCLAVE=$TUN_PEER
STRANGER=192.168.28.3

[ -x $SENG ] || skip "$SENG is not in the guest"
# Rules left behind by a failure would keep seng.ko in use after this test.
ipt=
trap '[ -z "$ipt" ] || $ipt -F INPUT' EXIT
setup_tun
run $MODPROBE seng
run $SENG enclave add $ENCLAVE --app $A --host 10.0.0.5 --cat Browser

# Counting rules (no target) and whether a packet from the enclave to us matches each.
RULES="1|-m seng --src-app $A
0|-m seng ! --src-app $A
0|-m seng --src-app $B
1|-m seng ! --src-app $B
1|-m seng --src-cat Browser
0|-m seng ! --src-cat Browser
0|-m seng --src-cat Mail
1|-m seng --src-host 10.0.0.0/26
0|-m seng ! --src-host 10.0.0.0/26
1|-m seng --src-host 10.0.0.4/255.255.255.252
0|-m seng --src-host 10.0.0.0/255.255.255.252
1|-m seng --src-app $A --src-cat Browser ! --src-host 10.0.1.0/24
0|-m seng --src-app $A ! --src-cat Browser
0|-m seng --dst-app $A
0|-m seng ! --dst-app $A
0|-m seng ! --dst-host 10.0.0.0/8"

# counts BACKEND: the packet counters of INPUT's rules, in order, space-separated.
counts() {
	$(iptables_for "$1") -L INPUT -v -n -x | awk 'NR > 2 { printf "%s%s", sep, $1; sep = " " }'
}

# send SRC: one UDP packet from SRC into tunFA, to us.
send() {
	run $INJECT udp --dev $TUN_DEV --src "$1" --dst $TUN_ADDR --dport 8391
}

for backend in $IPTABLES_BACKENDS; do
	ipt=$(iptables_for $backend)
	want=
	none=
	while IFS='|' read -r match rule <&4; do
		eval "set -- $rule"
		run $ipt -A INPUT -i $TUN_DEV -p udp --dport 8391 "$@"
		want="$want${want:+ }$match"
		none="$none${none:+ }0"
	done 4<<EOF
$RULES
EOF
	# Last, a rule without seng that counts every packet: it tells when one has passed.
	run $ipt -A INPUT -i $TUN_DEV -p udp --dport 8391
	want="$want 1"
	none="$none 1"
	counted() { [ "$(counts $backend)" = "$1" ]; }
	send $ENCLAVE
	retry 20 counted "$want" || fail "$backend: counters after a packet from enclave $ENCLAVE are '$(counts $backend)', expected '$want'"
	run $ipt -Z INPUT
	send $STRANGER
	retry 20 counted "$none" || fail "$backend: counters after a packet from non-enclave $STRANGER are '$(counts $backend)', expected '$none'"
	run $ipt -F INPUT
done
run $SENG flush
