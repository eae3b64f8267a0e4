# SPDX-License-Identifier: GPL-2.0-only
# `seng monitor` prints every change as the script line that makes it, whoever makes it: the CLI,
# a batch (one line per enclave) and a restore (a comment line).
. /vmtest/lib.sh

SENG=/usr/local/bin/seng
BENCH=/usr/local/bin/seng-bench
A=d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0
B=d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792

run $MODPROBE seng
$SENG monitor >/tmp/nl-mon 2>/tmp/nl-mon.err &
monitor=$!
# The monitor is listening once a change shows up in its output.
probe() {
	$SENG enclave add 192.168.99.1 --app $A --host 10.0.0.1 >/dev/null 2>&1
	grep -q '192.168.99.1' /tmp/nl-mon
}
retry 100 probe || fail "seng monitor printed nothing: $(cat /tmp/nl-mon.err)"
run $SENG enclave del 192.168.99.1
marker() { grep -q '^enclave del 192.168.99.1$' /tmp/nl-mon; }
retry 50 marker || fail "no event for enclave del"

run $SENG enclave add 192.168.28.10 --app $A --host 10.0.0.5 --cat Browser --cat "Web Mail"
run $SENG enclave add fd00:28::10 --app $B --host 2001:db8::5
run $SENG app cat add $B Mail
run $SENG app cat del $A Browser
run $SENG enclave del 192.168.28.10
echo "enclave add 192.168.28.20 --app $A --host 10.0.0.5" >/tmp/nl-mon-script
run $SENG restore /tmp/nl-mon-script
run $SENG flush
run $BENCH register 2000 --batch
run $SENG flush
done_() { [ "$(grep -c '^flush$' /tmp/nl-mon)" = 2 ]; }
retry 100 done_ || fail "the events of the second flush did not arrive"
kill $monitor
wait $monitor

sed -n '/^enclave del 192.168.99.1$/,$p' /tmp/nl-mon | tail -n +2 >/tmp/nl-mon-after
cat /tmp/nl-mon-after | head -n 12
assert_eq "$(head -n 8 /tmp/nl-mon-after)" "enclave add 192.168.28.10 --app $A --host 10.0.0.5 --cat Browser --cat \"Web Mail\"
enclave add fd00:28::10 --app $B --host 2001:db8::5
app cat add $B Mail
app cat del $A Browser
enclave del 192.168.28.10
# table replaced
flush
enclave add 10.0.0.1 --app $(printf '01%.0s' $(seq 32)) --host 172.16.0.1 --cat cat-0" "monitor output"
assert_eq "$(grep -c '^enclave add ' /tmp/nl-mon-after)" 2002 "events: 2 added by the CLI and 2000 by the batch"
assert_eq "$(tail -n 1 /tmp/nl-mon-after)" "flush" "last event"
assert_not_contains "$(cat /tmp/nl-mon)" "events lost" "monitor output"
