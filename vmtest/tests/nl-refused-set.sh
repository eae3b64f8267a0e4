# SPDX-License-Identifier: GPL-2.0-only
# An ENCLAVE_SET applies completely or not at all: requests whose first nests are valid (a new
# enclave, a registered one moved to another host) and whose last nest pushes the application
# past 32 categories, or is malformed, are refused naming that nest, and leave the table
# (`seng save`), the generation (`seng stats`), the enclave's connections and `seng monitor`
# (no event) as they were. A change made afterwards shows that each of these can move.
. /vmtest/lib.sh

SENG=/usr/local/bin/seng
# nlprobe's application.
A=$(printf '5e%.0s' $(seq 32))
W=/tmp/nl-refused-set

stat_of() { $SENG stats | awk -v k="$1" '$1 == k { print $2 }'; }
flows() { $CONNTRACK -L 2>/dev/null | grep -c "src=$1 "; }

setup_tun
run $MODPROBE seng
run $(iptables_for legacy) -A INPUT -i $TUN_DEV -m conntrack --ctstate NEW,ESTABLISHED -j ACCEPT
mkdir -p $W
cats=
for i in $(seq 30); do cats="$cats --cat c$(printf %02d $i)"; done
run $SENG enclave add $TUN_PEER --app $A --host 10.0.0.1 $cats
run $SENG enclave add fd00:9::2 --app $(printf '6f%.0s' $(seq 32)) --host 2001:db8::1 --cat Mail
run $INJECT udp --dev $TUN_DEV --src $TUN_PEER --dst $TUN_ADDR --dport 4711 --count 1
has_flow() { [ "$(flows $TUN_PEER)" = 1 ]; }
retry 50 has_flow || fail "no conntrack entry for $TUN_PEER: $($CONNTRACK -L 2>&1)"

monitor_start $W/monitor
run $SENG save
saved=$OUT
generation=$(stat_of generation)
[ -n "$generation" ] || fail "seng stats shows no generation"

run /usr/local/bin/nlprobe refused-set $TUN_PEER
assert_eq "$(printf '%s\n' "$OUT" | grep -c '^ok ')" 4 "requests refused naming their last nest"

run $SENG save
assert_eq "$OUT" "$saved" "seng save after the refused requests"
assert_eq "$(stat_of generation)" "$generation" "generation after the refused requests"
assert_eq "$(flows $TUN_PEER)" 1 "conntrack entries of $TUN_PEER after the refused requests"

# What the second nest asked for, alone: it applies, is announced, steps the generation and ends
# the enclave's connections.
run $SENG enclave add $TUN_PEER --app $A --host 10.0.0.2
moved() { grep -q "^enclave add $TUN_PEER " $W/monitor; }
retry 50 moved || fail "seng monitor missed the move of $TUN_PEER"
kill $MONITOR
wait $MONITOR
assert_eq "$(monitor_since_probe $W/monitor)" "enclave add $TUN_PEER --app $A --host 10.0.0.2" "events since the monitor started"
[ "$(stat_of generation)" != "$generation" ] || fail "the generation did not move with the table"
assert_eq "$(flows $TUN_PEER)" 0 "conntrack entries of $TUN_PEER after it moved"
run $SENG save
assert_contains "$OUT" "enclave add $TUN_PEER --app $A --host 10.0.0.2 " "seng save after the move"
