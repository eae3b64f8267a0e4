# SPDX-License-Identifier: GPL-2.0-only
# `seng agent` against an etcd that authenticates its clients (issue 16): TLS with client
# certificates, then users and passwords. A wrong password and a missing password file fail
# clearly (named in the log, nothing published); an agent started while etcd is down keeps local
# enforcement working, says so in its status, and converges once etcd comes up.
. /vmtest/lib.sh
. /vmtest/lib-agent.sh

user_space_elsewhere && skip "the agent (user space) is tested on another kernel of this run; the module paths it drives run here in nl-origins and torture"

A=d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0
B=d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792
TTL=3

agents_trap

# not_published GW: etcd holds no key of GW.
not_published() {
	run etcdctl get --prefix ${AGENT_PREFIX}$1/ --keys-only
	assert_eq "$OUT" "" "$1's keys in etcd"
}

run $MODPROBE seng
gateways
reg gw-a 192.168.28.11 $A 10.0.1.11 Browser
reg gw-b 192.168.28.21 $B 10.0.2.21

# TLS with client certificates: each gateway presents its own.
etcd_start tls
for gw in gw-a gw-b; do
	agent_start $gw --etcd "$(etcd_url)" --lease-ttl $TTL \
		--ca $ETCD_TLS/ca.crt --cert $ETCD_TLS/$gw.crt --key $ETCD_TLS/$gw.key
done
for gw in gw-a gw-b; do
	agent_connected $gw
	model_state $gw up
done
converge "TLS with client certificates"
# Without a client certificate etcd refuses the handshake: gw-c never connects nor publishes.
agent_start gw-c --etcd "$(etcd_url)" --lease-ttl $TTL --ca $ETCD_TLS/ca.crt
wait_for "[ -s $AGENT_DIR/gw-c.log ]" 30 || fail "gw-c's agent without a client certificate logged nothing"
sleep $((TTL * 2))
agent_says gw-c '"etcd":"connected"' && fail "gw-c's agent connected without a client certificate"
not_published gw-c
agent_alive gw-c && agent_stop gw-c KILL
for gw in gw-a gw-b; do
	agent_stop $gw TERM
	assert_eq "$AGENT_RC" 0 "exit status of $gw's agent after SIGTERM"
	model_state $gw down
done
etcd_destroy

# Users and passwords (lib.sh makes gw-a, gw-b and gw-c with the password "<name>-pw").
etcd_start auth
for gw in $GATEWAYS; do echo "$gw-pw" >$AGENT_DIR/$gw.password; done
echo "not-the-password" >$AGENT_DIR/wrong.password
for gw in gw-a gw-b; do
	agent_start $gw --etcd "$(etcd_url)" --lease-ttl $TTL --user $gw --password-file $AGENT_DIR/$gw.password
done
for gw in gw-a gw-b; do
	agent_connected $gw
	model_state $gw up
done
# The remote part of the TLS run was flushed or replaced by the new snapshot.
converge "users and passwords"

# A wrong password: refused by etcd, said so in the log, nothing published.
agent_start gw-c --etcd "$(etcd_url)" --lease-ttl $TTL --user gw-c --password-file $AGENT_DIR/wrong.password
wait_for "grep -Eqi 'auth|password' $AGENT_DIR/gw-c.log" 30 ||
	fail "gw-c's agent with a wrong password did not say why it cannot connect: $(tail -n 3 $AGENT_DIR/gw-c.log)"
agent_says gw-c '"etcd":"connected"' && fail "gw-c's agent says connected with a wrong password"
not_published gw-c
agent_alive gw-c && agent_stop gw-c KILL
: >$AGENT_DIR/gw-c.log

# A missing password file: the agent exits non-zero naming the file.
agent_start gw-c --etcd "$(etcd_url)" --lease-ttl $TTL --user gw-c --password-file $AGENT_DIR/missing.password
wait_for "! agent_alive gw-c" 30 || fail "gw-c's agent runs without its password file"
agent_stop gw-c KILL
[ "$AGENT_RC" -ne 0 ] || fail "gw-c's agent exited 0 without its password file"
grep -qF "$AGENT_DIR/missing.password" $AGENT_DIR/gw-c.log ||
	fail "gw-c's agent did not name its missing password file: $(tail -n 3 $AGENT_DIR/gw-c.log)"
not_published gw-c
: >$AGENT_DIR/gw-c.log

# Started while etcd is down: retries, local enforcement untouched, the status says so; when
# etcd comes up it converges with the others.
etcd_stop
reg gw-c 192.168.28.31 $A 10.0.3.31
agent_start gw-c --etcd "$(etcd_url)" --lease-ttl $TTL --user gw-c --password-file $AGENT_DIR/gw-c.password
wait_for "agent_says gw-c '\"etcd\":\"connecting\"' || agent_says gw-c '\"etcd\":\"unreachable\"'" 30 ||
	fail "gw-c's status does not say it cannot reach etcd: $(agent_status gw-c)"
reg gw-c 192.168.28.32 $B 10.0.3.32
run in_gw gw-c $SENG save
assert_eq "$(actual gw-c)" "$(model_part gw-c "" | canon)" "gw-c's local part while etcd is down"
etcd_start
model_state gw-c up
for gw in $GATEWAYS; do agent_connected $gw; done
converge "gw-c started while etcd was down" 60
for gw in $GATEWAYS; do
	agent_stop $gw TERM
	assert_eq "$AGENT_RC" 0 "exit status of $gw's agent after SIGTERM"
done
exit 0
