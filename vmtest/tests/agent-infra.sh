# SPDX-License-Identifier: GPL-2.0-only
# The ground the agent tests stand on (issue 16), without an agent: etcd started by the test
# (plain, TLS with client certificates, users and passwords) answers the gateways' namespaces
# over their veths, keeps its data across a restart and compacts; a DROP rule in a gateway's
# namespace cuts that gateway off; and the table model of lib-agent.sh equals `seng save` when
# the test itself applies each gateway's part to the others as their agents would
# (`seng restore --origin`).
. /vmtest/lib.sh
. /vmtest/lib-agent.sh

user_space_elsewhere && skip "the agent (user space) is tested on another kernel of this run; the module paths it drives run here in nl-origins and torture"

A=d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0
B=d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792

agents_trap

# gw_etcdctl GW ARGS...: etcdctl inside GW's namespace, with short timeouts.
gw_etcdctl() {
	g=$1
	shift
	in_gw $g env ETCDCTL_API=3 $ETCDCTL_BIN --endpoints "$(etcd_url)" --dial-timeout 2s --command-timeout 3s "$@"
}

run $MODPROBE seng
etcd_start plain
gateways
for gw in $GATEWAYS; do
	run gw_etcdctl $gw put ${AGENT_PREFIX}probe/$gw here
done
run gw_etcdctl gw-c get --prefix ${AGENT_PREFIX}probe/ --keys-only
assert_eq "$(printf '%s\n' "$OUT" | grep -c probe)" 3 "keys put from the three namespaces"

# A DROP rule on OUTPUT to etcd's port cuts one gateway off, and only that one.
ipt_b="in_gw gw-b $(iptables_for legacy)"
run $ipt_b -A OUTPUT -p tcp --dport $ETCD_PORT -j DROP
run_fails gw_etcdctl gw-b get ${AGENT_PREFIX}probe/gw-b
run gw_etcdctl gw-a get ${AGENT_PREFIX}probe/gw-b
run $ipt_b -D OUTPUT -p tcp --dport $ETCD_PORT -j DROP
run gw_etcdctl gw-b get ${AGENT_PREFIX}probe/gw-b

# etcd keeps its data across a restart; compaction works.
etcd_stop
run_fails gw_etcdctl gw-a get ${AGENT_PREFIX}probe/gw-a
etcd_start
run etcdctl get ${AGENT_PREFIX}probe/gw-a --print-value-only
assert_eq "$OUT" here "a key after etcd restarted"
rev=$(etcd_revision)
[ -n "$rev" ] || fail "no revision in etcd's status"
run etcdctl compact --physical "$rev"
run_fails etcdctl get ${AGENT_PREFIX}probe/gw-a --rev 1

# The model against the kernel: local parts, per-origin categories, a local entry winning, and a
# cut-off gateway holding its local part only.
reg gw-a 192.168.28.11 $A 10.0.1.11 Browser Mail
reg gw-a 192.168.28.12 $B 10.0.1.12
reg gw-b 192.168.28.21 $A 10.0.2.21
reg gw-b 192.168.28.11 $B 10.0.2.11 VPN
reg gw-c 192.168.28.31 $B 10.0.3.31
cat_add gw-c $B Browser
for gw in $GATEWAYS; do model_state $gw up; done
# by_hand: what the agents would do: each gateway's part applied to the others, the local
# entries of an address winning, the first gateway's entry of an address kept.
by_hand() {
	for gw in $GATEWAYS; do
		for peer in $GATEWAYS; do
			[ $peer = $gw ] && continue
			if [ "$(state_of $gw)" = up ] && [ "$(state_of $peer)" = up ]; then
				model_part $peer " --origin $peer" >/tmp/agent-part
			else
				: >/tmp/agent-part
			fi
			# Addresses another origin already holds at $gw stay out of $peer's part.
			in_gw $gw $SENG save | awk -v p="$peer" '$NF != p { print $3 }' >/tmp/agent-taken
			awk 'FILENAME == ARGV[1] { taken[$1] = 1; next } !taken[$3]' /tmp/agent-taken /tmp/agent-part >/tmp/agent-apply
			run in_gw $gw $SENG restore --origin $peer /tmp/agent-apply
		done
	done
}
by_hand
converge "every part applied by hand" 5
run in_gw gw-c $SENG save
assert_contains "$OUT" "enclave add 192.168.28.11 --app $A --host 10.0.1.11 --cat Browser --cat Mail --origin gw-a" "gw-a's entry at gw-c"
assert_contains "$OUT" "enclave add 192.168.28.31 --app $B --host 10.0.3.31 --cat Browser" "gw-c's local entry"
model_state gw-b cut
for peer in gw-a gw-c; do run in_gw gw-b $SENG flush --origin $peer; done
by_hand
converge "gw-b cut off, by hand" 5
run in_gw gw-b $SENG save
assert_eq "$OUT" "enclave add 192.168.28.11 --app $B --host 10.0.2.11 --cat VPN
enclave add 192.168.28.21 --app $A --host 10.0.2.21" "gw-b's table when cut off"

# TLS with client certificates: a gateway's certificate is accepted, none is refused.
etcd_destroy
etcd_start tls
tls_etcdctl() {
	g=$1
	shift
	in_gw $g env ETCDCTL_API=3 $ETCDCTL_BIN --endpoints "$(etcd_url)" --dial-timeout 2s --command-timeout 3s --cacert $ETCD_TLS/ca.crt "$@"
}
run tls_etcdctl gw-a --cert $ETCD_TLS/gw-a.crt --key $ETCD_TLS/gw-a.key put ${AGENT_PREFIX}probe/tls yes
run_fails tls_etcdctl gw-a get ${AGENT_PREFIX}probe/tls
run etcdctl get ${AGENT_PREFIX}probe/tls --print-value-only
assert_eq "$OUT" yes "a key put over TLS"

# Users and passwords: a gateway's password is accepted, a wrong one refused.
etcd_destroy
etcd_start auth
run gw_etcdctl gw-a --user gw-a:gw-a-pw put ${AGENT_PREFIX}probe/auth yes
run_fails gw_etcdctl gw-a --user gw-a:wrong get ${AGENT_PREFIX}probe/auth
assert_contains "$OUT" "authentication failed" "etcdctl's refusal of a wrong password"
run_fails gw_etcdctl gw-a get ${AGENT_PREFIX}probe/auth
run etcdctl get ${AGENT_PREFIX}probe/auth --print-value-only
assert_eq "$OUT" yes "a key put with a password"
exit 0
