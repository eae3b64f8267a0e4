# SPDX-License-Identifier: GPL-2.0-only
# Each network namespace has its own enclave table: registrations in one are invisible to rules
# and listings in another, and a namespace's table goes with the namespace.
. /vmtest/lib.sh

SENG=/usr/local/bin/seng
A=d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0
B=d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792
ENCLAVE=192.168.28.10

# In namespace $1 (empty: the initial one), a tunFA and a rule counting packets of app B.
in_ns() { if [ -n "$NS" ]; then $IP netns exec "$NS" "$@"; else "$@"; fi; }
prepare() {
	NS=$1
	in_ns $IP tuntap add dev $TUN_DEV mode tun || fail "tuntap in '${NS:-init}'"
	in_ns $IP addr add $TUN_ADDR/24 dev $TUN_DEV
	in_ns $IP link set $TUN_DEV up
	in_ns $(iptables_for legacy) -A INPUT -i $TUN_DEV -m seng --src-app $B -j ACCEPT || fail "rule in '${NS:-init}'"
}
count() {
	NS=$1
	in_ns $(iptables_for legacy) -L INPUT -v -n -x | awk '/seng/ { print $1 }'
}

run $MODPROBE tun
run $MODPROBE seng
run $IP netns add other
prepare ""
prepare other

run $SENG enclave add $ENCLAVE --app $A --host 10.0.0.5
run $IP netns exec other $SENG list
assert_not_contains "$OUT" "$ENCLAVE" "the other namespace's table"
run $IP netns exec other $SENG enclave add $ENCLAVE --app $B --host 10.0.0.6
run $SENG get $ENCLAVE
assert_contains "$OUT" "$A" "the initial namespace's entry"

run $INJECT udp --dev $TUN_DEV --src $ENCLAVE --dst $TUN_ADDR --dport 4711 --count 3
run $IP netns exec other $INJECT udp --dev $TUN_DEV --src $ENCLAVE --dst $TUN_ADDR --dport 4711 --count 5
assert_eq "$(count "")" 0 "app-B rule in the initial namespace (enclave of app A there)"
assert_eq "$(count other)" 5 "app-B rule in the other namespace"

# The namespace's table (with its entry) is freed with it; the initial one is untouched.
run $IP netns exec other $(iptables_for legacy) -F INPUT
run $IP netns del other
run $SENG get $ENCLAVE
assert_contains "$OUT" "$A" "the initial namespace's entry after the other namespace went"
run $(iptables_for legacy) -F INPUT
exit 0
