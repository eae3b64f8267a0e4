# SPDX-License-Identifier: GPL-2.0-only
# The module ends an enclave's connections itself: its conntrack entries are gone as soon as
# `seng enclave del`, a move to another host or application, a change of its application's
# categories, `seng flush` or a restore that drops or changes it returns, while other addresses'
# entries and a re-registration with the same metadata keep theirs.
. /vmtest/lib.sh

SENG=/usr/local/bin/seng
A=d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0
B=d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792
OTHER=192.168.28.3

# flows ADDR: conntrack entries whose original source is ADDR.
flows() { $CONNTRACK -L 2>/dev/null | grep -c "src=$1 "; }

# connect ADDR: sends a datagram from ADDR into tunFA and waits for its conntrack entry.
connect() {
	run $INJECT udp --dev $TUN_DEV --src "$1" --dst $TUN_ADDR --dport 4711 --count 1
	has_flow() { [ "$(flows "$1")" = 1 ]; }
	retry 50 has_flow "$1" || fail "no conntrack entry for $1: $($CONNTRACK -L 2>&1)"
}

# expect_flows WHAT ENCLAVE_COUNT: the enclave has that many entries and $OTHER still has one.
expect_flows() {
	assert_eq "$(flows $TUN_PEER)" "$2" "entries of the enclave $1"
	assert_eq "$(flows $OTHER)" 1 "entries of the unregistered $OTHER $1"
}

setup_tun
run $MODPROBE seng
ipt=$(iptables_for legacy)
run $ipt -A INPUT -i $TUN_DEV -m conntrack --ctstate NEW,ESTABLISHED -j ACCEPT
run $SENG enclave add $TUN_PEER --app $A --host 10.0.0.5
connect $TUN_PEER
connect $OTHER

run $SENG enclave add $TUN_PEER --app $A --host 10.0.0.5
expect_flows "after re-registering with the same metadata" 1
run $SENG enclave add $TUN_PEER --app $A --host 10.0.0.5 --cat Browser
expect_flows "after re-registering with one more category" 0
connect $TUN_PEER
run $SENG app cat add $A Browser
expect_flows "after attaching a category the application has" 1
run $SENG app cat del $A Browser
expect_flows "after seng app cat del" 0
connect $TUN_PEER
run $SENG app cat add $A Mail
expect_flows "after seng app cat add" 0
connect $TUN_PEER
run $SENG enclave add $TUN_PEER --app $A --host 10.0.0.6
expect_flows "after moving it to another host" 0

connect $TUN_PEER
run $SENG enclave add $TUN_PEER --app $B --host 10.0.0.6
expect_flows "after moving it to another application" 0

connect $TUN_PEER
run $SENG enclave del $TUN_PEER
expect_flows "after enclave del" 0

run $SENG enclave add $TUN_PEER --app $A --host 10.0.0.5
connect $TUN_PEER
run $SENG flush
expect_flows "after flush" 0

run $SENG enclave add $TUN_PEER --app $A --host 10.0.0.5
connect $TUN_PEER
echo "enclave add $TUN_PEER --app $A --host 10.0.0.5" >/tmp/nl-ct-same
run $SENG restore /tmp/nl-ct-same
expect_flows "after a restore keeping it unchanged" 1
echo "enclave add $TUN_PEER --app $A --host 10.0.0.5 --cat Mail" >/tmp/nl-ct-cat
run $SENG restore /tmp/nl-ct-cat
expect_flows "after a restore changing its categories" 0
connect $TUN_PEER
echo "enclave add 192.168.28.20 --app $A --host 10.0.0.5" >/tmp/nl-ct-drop
run $SENG restore /tmp/nl-ct-drop
expect_flows "after a restore dropping it" 0

run $ipt -D INPUT -i $TUN_DEV -m conntrack --ctstate NEW,ESTABLISHED -j ACCEPT
