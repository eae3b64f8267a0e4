# SPDX-License-Identifier: GPL-2.0-only
# Readers never see freed memory: packets are classified by seng rules while, concurrently, an
# enclave is registered and unregistered thousands of times (each unregister cuts flows after a
# grace period) and the whole table is replaced over and over. The harness fails the run on any
# Oops, BUG, WARNING or Call Trace in the kernel log; counters must add up.
. /vmtest/lib.sh

SENG=/usr/local/bin/seng
BENCH=/usr/local/bin/seng-bench
ipt=$(iptables_for legacy)
A=d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0

setup_tun
run $MODPROBE seng
run $ipt -A INPUT -i $TUN_DEV -m conntrack --ctstate ESTABLISHED -j ACCEPT
run $ipt -A INPUT -i $TUN_DEV -m seng --src-cat cat-0 -j ACCEPT
run $ipt -A INPUT -i $TUN_DEV -m seng ! --src-app $A -j ACCEPT
run $ipt -A INPUT -i $TUN_DEV -j DROP
$BENCH gen 20000 >/tmp/stress-table

$BENCH churn 8 --burst 20 >/tmp/stress-churn 2>&1 &
churn=$!
(
	for _ in 1 2 3 4; do
		$SENG restore /tmp/stress-table || exit 1
		$SENG flush || exit 1
	done
) >/tmp/stress-restore 2>&1 &
restore=$!
sent=0
while kill -0 $churn 2>/dev/null; do
	# 10.200.0.x are the churned addresses; 10.0.0.x come and go with the restores.
	run $INJECT udp --src 10.200.0.7 --dst $TUN_ADDR --dport 4711 --count 2000
	run $INJECT udp --src 10.0.0.17 --dst $TUN_ADDR --dport 4711 --count 2000
	sent=$((sent + 4000))
done
wait $churn || fail "churn failed: $(tail -n 1 /tmp/stress-churn)"
wait $restore || fail "restore/flush loop failed: $(tail -n 1 /tmp/stress-restore)"
log "$(cat /tmp/stress-churn)"

# Every packet met exactly one terminating rule.
total=$($ipt -L INPUT -v -n -x | awk 'NR > 2 { n += $1 } END { print n }')
assert_eq "$total" "$sent" "packets counted by the INPUT rules"
run $ipt -F INPUT
exit 0
