# SPDX-License-Identifier: GPL-2.0-only
# A client on libnl that behaves as the original SENG user library (joins seng_mcgrp, one
# command 1 request at a time, any message but its ack is an error) has every request of a
# register / attach / detach / unregister / flush run acknowledged in order while `seng monitor`
# receives every change: events go to seng_events, and seng_mcgrp stays silent. Joined to
# seng_events instead, the same client fails: it does notice a stray message.
. /vmtest/lib.sh

SENG=/usr/local/bin/seng
CLIENT=/usr/local/bin/seng-libnl-client
A=d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0
B=d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792

run $MODPROBE seng
monitor_start /tmp/nl-libnl-mon

run $CLIENT
assert_contains "$OUT" "7 requests, 0 failed" "the original-library-style client"
run $SENG save
assert_eq "$OUT" "" "table after the client's flush"

flushed() { grep -q '^flush$' /tmp/nl-libnl-mon; }
retry 50 flushed || fail "the client's flush did not reach the monitor"
kill $MONITOR
wait $MONITOR
assert_eq "$(monitor_since_probe /tmp/nl-libnl-mon)" "enclave add 192.168.28.10 --app $A --host 10.0.0.5 --cat Browser
enclave add 192.168.28.11 --app $A --host 10.0.0.6
enclave add 192.168.28.12 --app $B --host 10.0.0.7
app cat add $A Mail
app cat del $A Browser
enclave del 192.168.28.11
flush" "events seen by seng monitor"

# The control: on the event group, the client meets its own events and fails as libnl does.
run_fails $CLIENT seng_events
assert_contains "$OUT" "not ok 1 - register 192.168.28.10 with a category: Message sequence number mismatch" "client on the event group"
exit 0
