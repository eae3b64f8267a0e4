# SPDX-License-Identifier: GPL-2.0-only
# The end-to-end comparison can fail: after a real run of the sample scenario agrees, seng-sim
# is told a timed reassignment did not happen, and the comparison must name the rule whose
# counters then differ from the kernel's, and the missing event; a kernel counter changed by one
# packet must be named too.
. /vmtest/lib.sh
. /vmtest/e2e/e2e.sh

e2e_kernel
e2e_run sample-rules legacy
[ $E2E_FAILED -eq 0 ] || fail "the unchanged sample scenario does not agree: $E2E_FIRST"
w=$E2E_LAST_WORK
dir=$SCENARIOS/sample-rules

compare() {
	$E2E compare --name mutant --sim "$1" --inject "$w/inject.json" --ipv4 "$2" --ipv6 "$w/kernel6"
}

sed '/^@3/d' "$dir/enclaves.txt" >"$w/mutant-enclaves"
$SIM replay "$dir/capture.pcap" "$dir/rules.txt" --enclaves "$w/mutant-enclaves" --backend legacy --json >"$w/mutant.json" ||
	fail "seng-sim failed on the mutated enclave script"
OUT=$(compare "$w/mutant.json" "$w/kernel4")
rc=$?
printf '%s\n' "$OUT"
assert_eq "$rc" 1 "compare's exit status for a simulation without the reassignment"
assert_contains "$OUT" "DIFFERENCE: IPv4 INPUT rule 1: kernel " "the differences"
assert_contains "$OUT" "    kernel:   -A INPUT -s 192.168.28.0/24 -i tunFA -p tcp -m tcp --dport 8391 -m seng --src-app d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0 -j ACCEPT" "the differences"
assert_contains "$OUT" "REPLAY INCOMPLETE: timed enclave events applied: the replay has 2, seng-sim 1" "the replay checks"

# The kernel's OUTPUT rule counted one packet more than it did.
awk '/^\[[0-9]+:[0-9]+\] -A OUTPUT/ { split(substr($1, 2), c, ":"); $1 = "[" c[1] + 1 ":" c[2] + 40 "]" } { print }' \
	"$w/kernel4" >"$w/mutant-kernel4"
OUT=$(compare "$w/sim.json" "$w/mutant-kernel4")
rc=$?
printf '%s\n' "$OUT"
assert_eq "$rc" 1 "compare's exit status for a changed kernel counter"
assert_match "$OUT" "DIFFERENCE: IPv4 OUTPUT rule 1: kernel [0-9]+ packets/[0-9]+ bytes, seng-sim " "the differences"
