# SPDX-License-Identifier: GPL-2.0-only
# Origins: the local SENG server's entries and other gateways' share the table. A command acts
# for its origin only: flushes, unregistrations, category changes and replace transactions
# leave the other origins' entries (and their connections) alone; a gateway's entry never
# replaces another origin's, a local one replaces a gateway's and ends its connections. The C
# API and the original protocol act for the local part as they always did: the SENG server's
# own calls, flush_module included, run unchanged beside gateways' entries. `seng list`, `get`,
# `save` and `monitor` show origins, `seng save | seng restore` round trips them, and a client
# older than origins reads the local part only.
. /vmtest/lib.sh

SENG=/usr/local/bin/seng
A=d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0
B=d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792

stat_of() { $SENG stats | awk -v k="$1" '$1 == k { print $2 }'; }

# refused WHAT STATUS TEXT CMD...: CMD exits with STATUS and says TEXT.
refused() {
	what=$1 status=$2 text=$3
	shift 3
	OUT=$("$@" 2>&1)
	assert_eq "$?" "$status" "exit status of $what"
	assert_contains "$OUT" "$text" "refusal of $what"
}

run $MODPROBE seng
monitor_start /tmp/nl-origins-mon

# Two gateways' entries and a local one; each origin gives application A its own categories.
run $SENG enclave add 10.1.0.1 --app $A --host 10.0.1.5 --cat Browser --origin gw-b
run $SENG enclave add 10.1.0.2 --app $B --host 10.0.1.5 --origin gw-b
run $SENG enclave add 10.2.0.1 --app $A --host 10.0.2.5 --origin gw-c
run $SENG enclave add 192.168.28.10 --app $A --host 10.0.0.5 --cat Mail
TABLE="192.168.28.10 app $A host 10.0.0.5 cat Mail
10.1.0.1 app $A host 10.0.1.5 cat Browser origin gw-b
10.1.0.2 app $B host 10.0.1.5 origin gw-b
10.2.0.1 app $A host 10.0.2.5 origin gw-c"
run $SENG list
assert_eq "$OUT" "$TABLE" "seng list"
assert_eq "$(stat_of apps)" 4 "applications (one per origin and measurement)"
run $SENG list --origin gw-c
assert_eq "$OUT" "10.2.0.1 app $A host 10.0.2.5 origin gw-c" "seng list --origin gw-c"
run $SENG list --json --origin gw-b
assert_contains "$OUT" '"addr":"10.1.0.1","app":"'$A'","categories":["Browser"],"host":"10.0.1.5","origin":"gw-b"' "seng list --json"
run $SENG get 10.2.0.1
assert_eq "$OUT" "10.2.0.1 app $A host 10.0.2.5 origin gw-c" "seng get of a gateway's entry"
run /usr/local/bin/nlprobe old-client 192.168.28.10 10.1.0.2

# A category change of one origin's application leaves the others'.
run $SENG app cat add $A Mail --origin gw-c
run $SENG app cat del $A Browser --origin gw-b
run $SENG list
assert_eq "$OUT" "192.168.28.10 app $A host 10.0.0.5 cat Mail
10.1.0.1 app $A host 10.0.1.5 origin gw-b
10.1.0.2 app $B host 10.0.1.5 origin gw-b
10.2.0.1 app $A host 10.0.2.5 cat Mail origin gw-c" "table after category changes of gw-b and gw-c"
refused "detaching a category gw-b's application lacks" 1 "application does not have this category" \
	$SENG app cat del $A Mail --origin gw-b

# Precedence: a gateway's entry never replaces another origin's.
gen=$(stat_of generation)
refused "a gateway's registration over a local enclave" 1 "a gateway's entry never replaces the local SENG server's" \
	$SENG enclave add 192.168.28.10 --app $B --host 10.0.1.5 --origin gw-b
refused "a gateway's registration over another gateway's enclave" 1 "never replaces another origin's" \
	$SENG enclave add 10.2.0.1 --app $B --host 10.0.1.5 --origin gw-b
refused "unregistering another origin's enclave" 1 "the address is another origin's enclave" \
	$SENG enclave del 10.2.0.1
refused "a bad origin" 2 "gateway name must start with an ASCII letter or digit" $SENG flush --origin _gw
assert_eq "$(stat_of generation)" "$gen" "generation after refused changes"

# Connections: a flush ends the connections of its origin's enclaves only; a local registration
# takes a gateway's address and ends its connections.
flows() { $CONNTRACK -L 2>/dev/null | grep -c "src=$1 "; }
connect() {
	run $INJECT udp --dev $TUN_DEV --src "$1" --dst $TUN_ADDR --dport 4711 --count 1
	has_flow() { [ "$(flows "$1")" = 1 ]; }
	retry 50 has_flow "$1" || fail "no conntrack entry for $1: $($CONNTRACK -L 2>&1)"
}
setup_tun
ipt=$(iptables_for legacy)
run $ipt -A INPUT -i $TUN_DEV -m conntrack --ctstate NEW,ESTABLISHED -j ACCEPT
run $SENG enclave add 192.168.28.2 --app $A --host 10.0.1.5 --origin gw-b
run $SENG enclave add 192.168.28.3 --app $A --host 10.0.0.5
connect 192.168.28.2
connect 192.168.28.3
run $SENG flush
assert_eq "$(flows 192.168.28.3) $(flows 192.168.28.2)" "0 1" "flows of the local and gw-b's enclave after seng flush"
assert_eq "$($SENG list --origin local)" "" "local entries after seng flush"
run $SENG flush --origin gw-b
assert_eq "$(flows 192.168.28.2)" 0 "flows of gw-b's enclave after seng flush --origin gw-b"
run $SENG list
assert_eq "$OUT" "10.2.0.1 app $A host 10.0.2.5 cat Mail origin gw-c" "table after flushing the local and gw-b's parts"
run $SENG enclave add 192.168.28.2 --app $A --host 10.0.1.5 --origin gw-b
connect 192.168.28.2
run $SENG enclave add 192.168.28.2 --app $A --host 10.0.1.5
assert_eq "$(flows 192.168.28.2)" 0 "flows of gw-b's enclave after a local registration of its address"
run $SENG get 192.168.28.2
assert_eq "$OUT" "192.168.28.2 app $A host 10.0.1.5" "the local registration took the address"
run $ipt -D INPUT -i $TUN_DEV -m conntrack --ctstate NEW,ESTABLISHED -j ACCEPT
run $SENG enclave del 192.168.28.2

# The SENG server's calls through the C API act for the local part, flush_module included: both
# programs check the local part (`seng save --origin local`) after every step, as they check
# the whole table where no gateway has entries.
run $SENG enclave add 10.1.0.1 --app $A --host 10.0.1.5 --cat Browser --origin gw-b
cat >/tmp/nl-origins-local-seng <<'WRAPPER'
#!/bin/sh
exec /usr/local/bin/seng "$@" --origin local
WRAPPER
chmod +x /tmp/nl-origins-local-seng
run env SENG=/tmp/nl-origins-local-seng /usr/local/bin/seng-capi-test
assert_contains "$OUT" "checks, 0 failed" "the C test program beside gateways' entries"
for consumer in /usr/local/bin/seng-server-consumer*; do
	run env SENG=/tmp/nl-origins-local-seng $consumer
	assert_contains "$OUT" "checks, 0 failed" "$consumer beside gateways' entries"
done
run $SENG list
assert_eq "$OUT" "10.1.0.1 app $A host 10.0.1.5 cat Browser origin gw-b
10.2.0.1 app $A host 10.0.2.5 cat Mail origin gw-c" "gateways' entries after the SENG server's calls and flush_module"

# A replace transaction replaces the parts of the origins it names, and only those.
run $SENG enclave add 192.168.28.10 --app $A --host 10.0.0.5 --cat Mail
cat >/tmp/nl-origins-gwc <<SCRIPT
enclave add 10.2.0.7 --app $B --host 10.0.2.5 --cat VPN --origin gw-c
enclave add 10.2.0.8 --app $B --host 10.0.2.6 --origin gw-c
SCRIPT
run $SENG restore --origin gw-c /tmp/nl-origins-gwc
run $SENG list
assert_eq "$OUT" "192.168.28.10 app $A host 10.0.0.5 cat Mail
10.1.0.1 app $A host 10.0.1.5 cat Browser origin gw-b
10.2.0.7 app $B host 10.0.2.5 cat VPN origin gw-c
10.2.0.8 app $B host 10.0.2.6 cat VPN origin gw-c" "table after replacing gw-c's part"
# A script without origins replaces the local part, as it always did.
echo "enclave add 192.168.28.11 --app $B --host 10.0.0.6" >/tmp/nl-origins-local
run $SENG restore /tmp/nl-origins-local
run $SENG list --origin local
assert_eq "$OUT" "192.168.28.11 app $B host 10.0.0.6" "local part after restoring a script without origins"
assert_eq "$(stat_of enclaves)" 4 "enclaves after restoring the local part"
# A gateway's entry of the replacement may not take a local address: refused, nothing changed.
gen=$(stat_of generation)
echo "enclave add 192.168.28.11 --app $A --host 10.0.1.5 --origin gw-b" >/tmp/nl-origins-clash
refused "a replacement of gw-b's part taking a local address" 1 "a gateway's entry never replaces the local SENG server's; the live table is unchanged" \
	$SENG restore --origin gw-b /tmp/nl-origins-clash
assert_eq "$(stat_of generation)" "$gen" "generation after a refused replacement"

# seng save | seng restore round trips every origin's part.
run $SENG save
SAVED="$OUT"
assert_eq "$SAVED" "enclave add 192.168.28.11 --app $B --host 10.0.0.6
enclave add 10.1.0.1 --app $A --host 10.0.1.5 --cat Browser --origin gw-b
enclave add 10.2.0.7 --app $B --host 10.0.2.5 --cat VPN --origin gw-c
enclave add 10.2.0.8 --app $B --host 10.0.2.6 --cat VPN --origin gw-c" "seng save"
$SENG save >/tmp/nl-origins-saved || fail "seng save failed"
run $SENG flush --origin gw-b
run $SENG flush --origin gw-c
run $SENG enclave add 10.2.0.9 --app $A --host 10.0.2.5 --origin gw-c
run $SENG restore /tmp/nl-origins-saved
run $SENG save
assert_eq "$OUT" "$SAVED" "seng save after restoring what it saved"
$SENG save | $SENG restore || fail "seng save | seng restore failed"
run $SENG save
assert_eq "$OUT" "$SAVED" "seng save after seng save | seng restore"
run $SENG restore --test /tmp/nl-origins-saved
assert_eq "$OUT" "/tmp/nl-origins-saved: a table of 4 enclaves of 3 applications" "restore --test of a script with origins"

# Events name the origin.
run $SENG enclave del 10.1.0.1 --origin gw-b
events() { grep -q '^enclave del 10.1.0.1 --origin gw-b$' /tmp/nl-origins-mon; }
retry 50 events || fail "the monitor missed the last event: $(tail -n 3 /tmp/nl-origins-mon)"
kill $MONITOR
wait $MONITOR
EVENTS=$(monitor_since_probe /tmp/nl-origins-mon)
assert_contains "$EVENTS" "enclave add 10.1.0.1 --app $A --host 10.0.1.5 --cat Browser --origin gw-b
enclave add 10.1.0.2 --app $B --host 10.0.1.5 --origin gw-b" "events of gw-b's registrations"
assert_contains "$EVENTS" "app cat add $A Mail --origin gw-c
app cat del $A Browser --origin gw-b" "events of category changes"
assert_contains "$EVENTS" "flush --origin gw-b" "event of a gateway's flush"
assert_contains "$EVENTS" "# table replaced" "event of a replacement"
