# SPDX-License-Identifier: GPL-2.0-only
# Three gateways share one view of their enclaves through etcd (issue 16): each is a network
# namespace with its own seng table, tunFA, rules and `seng agent`. A registration at one is
# matched by the others' --src-app and --src-cat rules; categories, unregistrations and local
# flushes propagate; a local entry beats a remote one; a killed agent's entries leave its peers
# with their connections; a restarted agent converges; so does everything after an etcd restart,
# a compaction behind a stopped agent's watch, an agent cut off by a firewall rule (it fails
# closed meanwhile) and bad values under the prefix (skipped, named in the log). At every
# checkpoint each gateway's `seng save` equals the table the test's model computes.
. /vmtest/lib.sh
. /vmtest/lib-agent.sh

user_space_elsewhere && skip "the agent (user space) is tested on another kernel of this run; the module paths it drives run here in nl-origins and torture"

A=d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0
B=d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792
C=c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00
# gw-a and gw-b hold short leases (kill and cut-off cases), gw-c a long one: its entries leaving
# at once on SIGTERM can only be the revocation.
TTL_SHORT=3
TTL_LONG=60
ttl_of() { case $1 in gw-c) echo $TTL_LONG ;; *) echo $TTL_SHORT ;; esac; }
start() {
	agent_start "$1" --etcd "$(etcd_url)" --lease-ttl "$(ttl_of "$1")"
	agent_connected "$1"
	model_state "$1" up
}

agents_trap

run $MODPROBE seng
etcd_start plain
gateways
for gw in $GATEWAYS; do
	ipt="in_gw $gw $(iptables_for legacy)"
	run $ipt -A INPUT -i $TUN_DEV -p udp --dport 4711 -m seng --src-app $A -j ACCEPT
	run $ipt -A INPUT -i $TUN_DEV -p udp --dport 4712 -m seng --src-cat Browser -j ACCEPT
	# Conntrack in the namespace: each datagram leaves a flow whose cut the test can see.
	run $ipt -A INPUT -i $TUN_DEV -p udp -m conntrack --ctstate NEW,ESTABLISHED -j ACCEPT
done

# The local SENG servers register before the agents start: an agent publishes what it finds.
reg gw-a 192.168.28.11 $A 10.0.1.11 Browser
reg gw-b 192.168.28.21 $B 10.0.2.21
for gw in $GATEWAYS; do start $gw; done
converge "agents started"
reg gw-c 192.168.28.31 $A 10.0.3.31
reg gw-a 192.168.28.12 $B 10.0.1.12
converge "registrations at gw-a and gw-c"

# What gw-a published: an owner key and its entries, all under one lease.
run etcdctl get ${AGENT_PREFIX}gw-a/owner
assert_contains "$OUT" "${AGENT_PREFIX}gw-a/owner" "gw-a's owner key"
run etcdctl get ${AGENT_PREFIX}gw-a/enclave/192.168.28.11 --print-value-only
assert_contains "$OUT" "\"app\":\"$A\"" "gw-a's published enclave"
assert_contains "$OUT" "\"host\":\"10.0.1.11\"" "gw-a's published enclave"
run etcdctl get ${AGENT_PREFIX}gw-a/app/$A --print-value-only
assert_contains "$OUT" '"categories":["Browser"]' "gw-a's published application"
leases=$(etcdctl get --prefix ${AGENT_PREFIX}gw-a/ -w json | grep -o '"lease":[0-9]*' | sort -u)
assert_eq "$(printf '%s\n' "$leases" | grep -c .)" 1 "leases of gw-a's keys ($leases)"
assert_eq "$(printf '%s\n' "$leases" | grep -c '"lease":0$')" 0 "gw-a's keys without a lease"
run etcdctl get --prefix ${AGENT_PREFIX}gw-a/ --keys-only
assert_eq "$(printf '%s\n' "$OUT" | grep -c .)" 5 "gw-a's keys (owner, two enclaves, two applications: $OUT)"
wait_for "agent_says gw-b '\"local\":1' && agent_says gw-b '\"gw-a\":2' && agent_says gw-b '\"gw-c\":1'" 30 ||
	fail "gw-b's status does not count its entries: $(agent_status gw-b)"

# Packets: gw-a's enclave of A with Browser is matched at gw-b and gw-c; gw-c's enclave of A has
# no category (categories are their origin's); an unregistered address matches nothing.
for gw in gw-b gw-c; do
	app=$(hits $gw 4711) cat=$(hits $gw 4712)
	send $gw 192.168.28.11 4711 3
	send $gw 192.168.28.11 4712 2
	send $gw 192.168.28.99 4711 1
	assert_eq "$(hits $gw 4711) $(hits $gw 4712)" "$((app + 3)) $((cat + 2))" "--src-app and --src-cat at $gw for gw-a's enclave"
done
app=$(hits gw-b 4711) cat=$(hits gw-b 4712)
send gw-b 192.168.28.31 4711 1
send gw-b 192.168.28.31 4712 1
assert_eq "$(hits gw-b 4711) $(hits gw-b 4712)" "$((app + 1)) $cat" "rules at gw-b for gw-c's enclave of A (no category)"

# Categories propagate; a detached one stops matching at the peers.
cat_add gw-a $A Mail
converge "a category attached at gw-a"
cat_del gw-a $A Browser
converge "a category detached at gw-a"
cat=$(hits gw-b 4712)
send gw-b 192.168.28.11 4712 1
assert_eq "$(hits gw-b 4712)" "$cat" "--src-cat Browser at gw-b after gw-a detached it"
cat_add gw-a $A Browser

# Unregistration and a local flush propagate, and end the peers' connections.
send gw-a 192.168.28.21 4713 1
wait_for "[ \$(flows gw-a 192.168.28.21) -ge 1 ]" 10 || fail "no flow at gw-a from gw-b's enclave"
unreg gw-b 192.168.28.21
converge "an unregistration at gw-b"
assert_eq "$(flows gw-a 192.168.28.21)" 0 "flows at gw-a from gw-b's unregistered enclave"
reg gw-c 192.168.28.32 $C 10.0.3.32 VPN
converge "a second enclave at gw-c"
flush_local gw-c
converge "a local flush at gw-c"
reg gw-c 192.168.28.31 $A 10.0.3.31
reg gw-b 192.168.28.21 $B 10.0.2.21
converge "registrations again"

# Local beats remote: gw-b's SENG server takes gw-a's address; gw-a keeps its own, gw-c keeps
# gw-a's (which it had first). When gw-b's goes, gw-b applies gw-a's entry again.
reg gw-b 192.168.28.11 $C 10.0.2.99
converge "gw-b's local registration of gw-a's address"
unreg gw-b 192.168.28.11
converge "gw-b's local entry of gw-a's address gone"

# Restores at gw-b reach the peers as watch replies of many entries each, installed in bulk:
# 300 enclaves; then half of them with another application and host, the rest gone; then
# gw-b's part as it was.
cp $AGENT_DIR/local-gw-b $AGENT_DIR/bulk-before
i=0
while [ $i -lt 300 ]; do
	echo "192.168.$((29 + i / 250)).$((i % 250 + 1)) $B 10.0.2.$((i % 200 + 1))"
	i=$((i + 1))
done >$AGENT_DIR/bulk-grown
{
	cat $AGENT_DIR/bulk-before
	head -n 150 $AGENT_DIR/bulk-grown | awk -v app=$C '{ print $1, app, "10.0.2.250" }'
} >$AGENT_DIR/bulk-changed
cat $AGENT_DIR/bulk-before $AGENT_DIR/bulk-grown >$AGENT_DIR/bulk-all
restore_local gw-b $AGENT_DIR/bulk-all
converge "300 enclaves restored at gw-b"
restore_local gw-b $AGENT_DIR/bulk-changed
converge "150 of them changed at gw-b, 150 gone"
restore_local gw-b $AGENT_DIR/bulk-before
converge "gw-b's part restored as it was"

# kill -9 gw-a's agent: its lease runs out and its entries leave the peers with their flows.
for gw in gw-b gw-c; do
	send $gw 192.168.28.11 4713 1
	wait_for "[ \$(flows $gw 192.168.28.11) -ge 1 ]" 10 || fail "no flow at $gw from gw-a's enclave"
done
agent_stop gw-a KILL
model_state gw-a down
converge "gw-a's agent killed" $((TTL_SHORT * 5))
for gw in gw-b gw-c; do
	assert_eq "$(flows $gw 192.168.28.11)" 0 "flows at $gw from gw-a's enclave after gw-a's lease ran out"
done
run etcdctl get --prefix ${AGENT_PREFIX}gw-a/ --keys-only
assert_eq "$OUT" "" "gw-a's keys after its lease ran out"
# Changes while gw-a has no agent, at gw-a and elsewhere; restarted, it converges.
reg gw-a 192.168.28.13 $A 10.0.1.13
reg gw-b 192.168.28.22 $B 10.0.2.22
start gw-a
converge "gw-a's agent restarted"

# etcd restarts (its data kept); a change made meanwhile arrives.
etcd_stop
reg gw-b 192.168.28.23 $B 10.0.2.23
etcd_start
for gw in $GATEWAYS; do agent_connected $gw; done
converge "etcd restarted" 60

# A compaction behind a stopped agent's watch: gw-c (long lease) is stopped, gw-b changes its
# part many times, etcd compacts its history to the present; continued, gw-c catches up (by a
# fresh snapshot if its watch was compacted).
agent_signal gw-c STOP
rev_before=$(etcd_revision)
for n in $(seq 40 69); do reg gw-b 192.168.28.$n $B 10.0.2.$n; done
for n in $(seq 40 59); do unreg gw-b 192.168.28.$n; done
# Many small revisions (net zero: each address registered, then unregistered) to fill the
# stopped watcher's buffers, so that etcd moves it to its unsynced watchers.
run in_gw gw-b /usr/local/bin/seng-bench churn 5 --burst 2 --pause-ms 5
wait_for "[ \$(etcdctl get --prefix ${AGENT_PREFIX}gw-b/enclave/ --keys-only | grep -c .) = 13 ]" 30 ||
	fail "gw-b's changes did not reach etcd: $(etcdctl get --prefix ${AGENT_PREFIX}gw-b/enclave/ --keys-only)"
rev=$(etcd_revision)
log "revisions while gw-c was stopped: $((rev - rev_before))"
run etcdctl compact --physical "$rev"
agent_signal gw-c CONT
converge "gw-c continued after a compaction" 60
# Whether its watch was cancelled for the compaction depends on how much etcd had buffered for
# it; either way it converged. Said, not asserted.
if grep -qi compact $AGENT_DIR/gw-c.log; then
	log "gw-c's agent saw the compaction: $(grep -i compact $AGENT_DIR/gw-c.log | tail -n 1)"
else
	log "gw-c's watch was not compacted (etcd had sent it everything before the compaction)"
fi

# gw-b cut off from etcd: it fails closed (remote entries gone, status unreachable) and its own
# entries leave the peers; changes meanwhile on both sides; the rule gone, all converge.
ipt_b="in_gw gw-b $(iptables_for legacy)"
run $ipt_b -A OUTPUT -p tcp --dport $ETCD_PORT -j DROP
model_state gw-b cut
reg gw-a 192.168.28.14 $A 10.0.1.14
reg gw-b 192.168.28.24 $B 10.0.2.24
wait_for "agent_says gw-b '\"etcd\":\"unreachable\"'" $((TTL_SHORT * 10)) ||
	fail "gw-b's status does not say unreachable: $(agent_status gw-b)"
# gw-b's peers drop its part as its lease runs out; its own table keeps the local part only.
converge "gw-b cut off" $((TTL_SHORT * 10))
run $ipt_b -D OUTPUT -p tcp --dport $ETCD_PORT -j DROP
agent_connected gw-b
model_state gw-b up
converge "gw-b back" 60

# Bad values under the prefix: skipped with the key named in every agent's log; nothing else
# breaks.
BAD_KEYS="${AGENT_PREFIX}gw-x/enclave/192.168.28.77 ${AGENT_PREFIX}gw-x/enclave/not-an-address ${AGENT_PREFIX}gw-x/enclave/192.168.28.78 ${AGENT_PREFIX}gw-x/app/$A ${AGENT_PREFIX}gw-x/app/not-hex ${AGENT_PREFIX}bad_name!/enclave/192.168.28.79"
run etcdctl put ${AGENT_PREFIX}gw-x/enclave/192.168.28.77 'not json'
run etcdctl put ${AGENT_PREFIX}gw-x/enclave/not-an-address "{\"app\":\"$A\",\"host\":\"10.0.9.1\"}"
run etcdctl put ${AGENT_PREFIX}gw-x/enclave/192.168.28.78 '{"app":"abc","host":"10.0.9.1"}'
run etcdctl put ${AGENT_PREFIX}gw-x/app/$A '{"categories":"Browser"}'
run etcdctl put ${AGENT_PREFIX}gw-x/app/not-hex '{"categories":["Browser"]}'
run etcdctl put "${AGENT_PREFIX}bad_name!/enclave/192.168.28.79" "{\"app\":\"$A\",\"host\":\"10.0.9.1\"}"
for gw in $GATEWAYS; do
	for key in $BAD_KEYS; do
		wait_for "grep -qF '$key' $AGENT_DIR/$gw.log" 30 || fail "$gw's agent did not name the bad key $key"
	done
	agent_alive $gw || fail "$gw's agent exited after bad values"
done
reg gw-a 192.168.28.15 $A 10.0.1.15
converge "bad values under the prefix"
for key in $BAD_KEYS; do run etcdctl del "$key"; done

# SIGTERM: gw-c's agent revokes its (long) lease and exits 0; its entries leave the peers at once.
agent_stop gw-c TERM
assert_eq "$AGENT_RC" 0 "exit status of gw-c's agent after SIGTERM"
model_state gw-c down
converge "gw-c's agent stopped" 20
run etcdctl get --prefix ${AGENT_PREFIX}gw-c/ --keys-only
assert_eq "$OUT" "" "gw-c's keys after its agent stopped"
for gw in gw-a gw-b; do
	agent_stop $gw TERM
	assert_eq "$AGENT_RC" 0 "exit status of $gw's agent after SIGTERM"
done
exit 0
