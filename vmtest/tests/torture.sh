# SPDX-License-Identifier: GPL-2.0-only
# The torture of seng.ko, on the debug kernel only (it needs kmemleak and failslab, and is worth
# its minutes only where KASAN, lockdep and the other checks watch): seng-torture's writers,
# chaos processes, dumps, packets under both iptables backends, namespace cycling and unload
# attempts, with the module's allocations failing at random, for vmtest.torture_seconds
# (`cargo xtask vmtest --soak MINUTES`; 150 by default). Then the rules go, the module must
# unload, and a kmemleak scan must find nothing. Any kernel report fails the test (init.sh).
. /vmtest/lib.sh

DEBUGFS=/sys/kernel/debug
[ -d $DEBUGFS/kmemleak ] || mount -t debugfs debugfs $DEBUGFS 2>/dev/null
[ -e $DEBUGFS/kmemleak ] || skip "not a debug kernel (no kmemleak)"
[ -d $DEBUGFS/failslab ] || skip "not a debug kernel (no failslab)"

SECONDS_TO_RUN=$(cmdline torture_seconds)
SECONDS_TO_RUN=${SECONDS_TO_RUN:-150}

# Leaks from before the test (boot, earlier tests) are not this test's: scan and forget them.
echo scan >$DEBUGFS/kmemleak
echo clear >$DEBUGFS/kmemleak

# A small table per namespace: the model holds the same capacity, and namespaces come and go.
run $MODPROBE tun
run $MODPROBE seng capacity=4096
setup_tun
A0=$(printf 'c8%.0s' $(seq 32))
for backend in $IPTABLES_BACKENDS; do
	run $(iptables_for $backend) -A INPUT -i $TUN_DEV -m seng --src-cat c1 -j ACCEPT
	run $(iptables_for $backend) -A INPUT -i $TUN_DEV -m seng ! --src-app $A0 --src-host 10.99.200.1 -j ACCEPT
done

# Failures for the tasks that ask for them (make-it-fail), sleeping allocations too, quietly:
# a stack trace per failure would read as a kernel problem.
FS=$DEBUGFS/failslab
echo 25 >$FS/probability
echo 1 >$FS/interval
echo 100000000 >$FS/times
echo 0 >$FS/space
echo 0 >$FS/verbose
echo Y >$FS/task-filter
echo N >$FS/ignore-gfp-wait

# The summary also goes to the host: target/vmtest/<release>/files/torture-summary.txt.
/usr/local/bin/seng-torture --seconds "$SECONDS_TO_RUN" --failslab --chaos-dev $TUN_DEV --chaos-dst $TUN_ADDR >/tmp/torture-summary.txt
rc=$?
cat /tmp/torture-summary.txt
export_file /tmp/torture-summary.txt
echo 0 >$FS/probability
[ $rc -eq 0 ] || fail "seng-torture failed (exit $rc)"

# The rules' counters moved: packets went through seng's match under both backends.
for backend in $IPTABLES_BACKENDS; do
	packets=$($(iptables_for $backend) -L INPUT -v -n -x | awk '/seng/ { n += $1 } END { print n + 0 }')
	log "$backend: $packets packets accepted by seng rules"
	[ "$packets" -gt 0 ] || fail "no packet matched a seng rule under iptables-$backend"
done

# Idle and without rules, the module unloads, and nothing it allocated is left behind.
for backend in $IPTABLES_BACKENDS; do
	run $(iptables_for $backend) -F INPUT
done
run $RMMOD seng
# kmemleak reports an object only once it has been unreferenced for a while and over two scans.
sleep 6
echo scan >$DEBUGFS/kmemleak
sleep 1
echo scan >$DEBUGFS/kmemleak
leaks=$(cat $DEBUGFS/kmemleak)
if [ -n "$leaks" ]; then
	printf '%s\n' "$leaks" | head -n 60
	fail "kmemleak: $(printf '%s\n' "$leaks" | grep -c 'unreferenced object') unreferenced objects after unloading seng"
fi
log "kmemleak: no leak"
exit 0
