# SPDX-License-Identifier: GPL-2.0-only
# The drop-in C library: a C program built through user-library/ (CMake) against
# seng_netfilter_api.h and linked with libsengnetfilter.so calls every function (as the SENG server does) and checks
# the table through the `seng` CLI; its original-protocol requests also reach `seng monitor`.
. /vmtest/lib.sh

SENG=/usr/local/bin/seng
CAPI_TEST=/usr/local/bin/seng-capi-test
A=d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0

run $MODPROBE seng
$SENG monitor >/tmp/nl-capi-mon 2>&1 &
monitor=$!
probe() {
	$SENG flush >/dev/null 2>&1
	grep -q '^flush$' /tmp/nl-capi-mon
}
retry 100 probe || fail "seng monitor printed nothing"

run env SENG=$SENG $CAPI_TEST
assert_contains "$OUT" "checks, 0 failed" "C test program"

sent() { grep -q '^enclave add 10.103.0.50 ' /tmp/nl-capi-mon && [ "$(tail -n 1 /tmp/nl-capi-mon)" = flush ]; }
retry 50 sent || fail "the C program's last changes did not reach the monitor"
kill $monitor
wait $monitor
assert_contains "$(cat /tmp/nl-capi-mon)" "enclave add 192.168.28.10 --app $A --host 10.0.0.5 --cat Browser
enclave add 192.168.28.11 --app $A --host 10.0.0.6" "legacy registrations as events"
assert_contains "$(cat /tmp/nl-capi-mon)" "app cat del $A Browser" "legacy detach as an event"
assert_contains "$(cat /tmp/nl-capi-mon)" "enclave del 192.168.28.10" "legacy unregister as an event"
