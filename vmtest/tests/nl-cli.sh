# SPDX-License-Identifier: GPL-2.0-only
# Every `seng` command against the real module over real netlink: enclave add/del, get, list
# (text and JSON), app cat add/del, flush, stats, with IPv4 and IPv6, and the messages and exit
# codes of refused operations (1: the module refused, 2: bad usage).
. /vmtest/lib.sh

SENG=/usr/local/bin/seng
A=d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0
B=d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792

# status CMD...: runs CMD and leaves its exit status in $RC and its output in $OUT.
status() {
	echo "+ $*"
	OUT=$("$@" 2>&1)
	RC=$?
	[ -z "$OUT" ] || printf '%s\n' "$OUT"
}

# refused RC TEXT CMD...: CMD must exit with RC and say TEXT.
refused() {
	want_rc=$1 text=$2
	shift 2
	status "$@"
	assert_eq "$RC" "$want_rc" "exit status of \`$*\`"
	assert_contains "$OUT" "$text" "message of \`$*\`"
}

stat_of() { $SENG stats | awk -v k="$1" '$1 == k { print $2 }'; }

run $MODPROBE seng
assert_eq "$(stat_of enclaves)" 0 "enclaves after load"
gen0=$(stat_of generation)

run $SENG enclave add 192.168.28.10 --app $A --host 10.0.0.5 --cat Browser
run $SENG enclave add fd00:28::10 --app $A --host 2001:db8::5 --cat "Web Mail"
run $SENG enclave add 192.168.28.11 --app $B --host 10.0.0.6
run $SENG get 192.168.28.10
assert_eq "$OUT" "192.168.28.10 app $A host 10.0.0.5 cat Browser cat \"Web Mail\"" "get of an IPv4 enclave"
run $SENG get fd00:28::10 --json
assert_eq "$OUT" "{\"addr\":\"fd00:28::10\",\"app\":\"$A\",\"categories\":[\"Browser\",\"Web Mail\"],\"host\":\"2001:db8::5\",\"origin\":\"local\"}" "get --json of an IPv6 enclave"
run $SENG list
assert_eq "$OUT" "192.168.28.10 app $A host 10.0.0.5 cat Browser cat \"Web Mail\"
192.168.28.11 app $B host 10.0.0.6
fd00:28::10 app $A host 2001:db8::5 cat Browser cat \"Web Mail\"" "list"
run $SENG list --json
assert_eq "$(printf '%s' "$OUT" | grep -o '"addr":' | wc -l)" 3 "objects in list --json"
assert_contains "$OUT" "{\"addr\":\"192.168.28.11\",\"app\":\"$B\",\"categories\":[],\"host\":\"10.0.0.6\",\"origin\":\"local\"}" "list --json"
assert_eq "$(stat_of enclaves) $(stat_of apps)" "3 2" "enclaves and apps"

run $SENG app cat add $B Mail
run $SENG app cat del $A Browser
run $SENG get 192.168.28.11
assert_eq "$OUT" "192.168.28.11 app $B host 10.0.0.6 cat Mail" "category attached"
run $SENG get fd00:28::10
assert_eq "$OUT" "fd00:28::10 app $A host 2001:db8::5 cat \"Web Mail\"" "category detached"

# Re-registering moves the enclave to another application and host.
run $SENG enclave add 192.168.28.10 --app $B --host 10.0.0.7
run $SENG get 192.168.28.10
assert_eq "$OUT" "192.168.28.10 app $B host 10.0.0.7 cat Mail" "re-registered enclave"
run $SENG enclave del fd00:28::10
assert_eq "$(stat_of enclaves) $(stat_of apps)" "2 1" "the application goes with its last enclave"
[ "$(stat_of generation)" -gt "$gen0" ] || fail "generation did not move"

refused 1 "enclave del 192.168.28.99: not found: address is not a registered enclave" $SENG enclave del 192.168.28.99
refused 1 "get 192.168.28.99: address is not a registered enclave" $SENG get 192.168.28.99
refused 1 "no enclave of this application is registered" $SENG app cat add $A Mail
refused 1 "application does not have this category" $SENG app cat del $B Nope
cats=""
for i in $(seq 1 33); do cats="$cats --cat c$i"; done
refused 1 "invalid request: too many categories in one enclave" $SENG enclave add 192.168.28.12 --app $A --host 10.0.0.5 $cats
refused 2 "at most 20 are allowed" $SENG enclave add 192.168.28.12 --app $A --host 10.0.0.5 --cat 123456789012345678901
refused 2 "192.168.28.300" $SENG enclave add 192.168.28.300 --app $A --host 10.0.0.5
refused 2 "must be exactly 64 hex digits" $SENG app cat add abc Mail
refused 2 "--host" $SENG enclave add 192.168.28.12 --app $A
refused 2 "frobnicate" $SENG frobnicate
assert_eq "$(stat_of enclaves)" 2 "enclaves after refused operations"

run $SENG flush
run $SENG list
assert_eq "$OUT" "" "list after flush"
assert_eq "$(stat_of enclaves) $(stat_of apps)" "0 0" "counters after flush"
run $SENG stats --json
assert_match "$OUT" '^\{"apps":0,"capacity":[0-9]+,"enclaves":0,"generation":[0-9]+,"slots":[0-9]+\}$' "stats --json"
