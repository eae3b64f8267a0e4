# SPDX-License-Identifier: GPL-2.0-only
# Batched registration (many enclaves per message, many messages per sendmsg) registers every
# enclave, dumps stay complete and duplicate-free while the table changes underneath (a dump
# interrupted by a change is restarted), and a batch the module partly refuses reports which
# enclaves were refused while the accepted messages stay applied.
. /vmtest/lib.sh

SENG=/usr/local/bin/seng
BENCH=/usr/local/bin/seng-bench
N=50000

stat_of() { $SENG stats | awk -v k="$1" '$1 == k { print $2 }'; }

run $MODPROBE seng
run $BENCH register $N --batch
assert_eq "$(stat_of enclaves) $(stat_of apps)" "$N 16" "enclaves and apps after the batch"
run $SENG get 10.0.0.1
assert_eq "$OUT" "10.0.0.1 app $(printf '01%.0s' $(seq 32)) host 172.16.0.1 cat cat-0" "first enclave"
run $SENG get fd00::a
assert_eq "$OUT" "fd00::a app $(printf '0a%.0s' $(seq 32)) host 172.16.9.1 cat cat-9" "an IPv6 enclave"
run $SENG get fd00::c350
assert_contains "$OUT" "fd00::c350 app " "last enclave"

# A dump that a change interrupts (NLM_F_DUMP_INTR) is restarted, so each dump is complete and
# lists no address twice while another process changes the table in bursts; dump until one was
# restarted. The pauses outlast a dump on a loaded machine, so a restarted dump can complete
# (a client gives up after 8 interrupted attempts in a row). Dumps go on for as long as the
# churn runs: a fixed number of them can all fall between two bursts.
$BENCH churn 240 --burst 4 --pause-ms 1500 >/tmp/nl-churn.log 2>&1 &
churn=$!
restarts=0
i=0
while [ $i -lt 2000 ] && [ -d /proc/$churn ]; do
	i=$((i + 1))
	run $BENCH dump
	set -- $OUT
	assert_eq "$2 $4" "$N 0" "enclaves outside the churned range, and duplicates, in dump $i"
	restarts=$((restarts + $6))
	[ $restarts -gt 0 ] && [ $i -ge 3 ] && break
done
kill $churn 2>/dev/null
wait $churn
cat /tmp/nl-churn.log
[ $restarts -gt 0 ] || fail "no dump was interrupted by the concurrent changes"

# A module with room for 1000 enclaves takes the first messages of a 1500-enclave batch and
# refuses the rest, naming them.
run $RMMOD seng
run $MODPROBE seng capacity=1000
OUT=$($BENCH register 1500 --batch 2>&1)
RC=$?
echo "$OUT"
assert_eq "$RC" 1 "exit status of an overfull batch"
assert_match "$OUT" "message\(s\) carrying [0-9]+ of 1500 enclaves refused; enclaves #[0-9]+\.\.#[0-9]+: no room: the enclaves would exceed the table's capacity" "overfull batch"
refused=$(printf '%s\n' "$OUT" | sed -n 's/.*carrying \([0-9]*\) of 1500.*/\1/p')
assert_eq "$(stat_of enclaves)" "$((1500 - refused))" "enclaves registered by the accepted messages"
[ "$refused" -gt 500 ] && [ "$refused" -lt 1500 ] || fail "refused $refused of 1500 enclaves"
