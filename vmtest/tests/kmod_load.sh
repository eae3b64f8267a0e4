# SPDX-License-Identifier: GPL-2.0-only
# seng.ko loads on this kernel, registers its match and netlink family, and unloads cleanly;
# modprobe finds it; a bad capacity parameter is refused.
. /vmtest/lib.sh

dmesg_mark
run $MODPROBE seng
grep -q '^seng ' /proc/modules || fail "seng is not in /proc/modules after modprobe"
assert_contains "$(dmesg_since)" "seng: loaded (capacity 1048576 enclaves per namespace)" "kernel log after modprobe"
grep -q '^seng$' /proc/net/ip_tables_matches 2>/dev/null || $MODPROBE ip_tables
run cat /proc/net/ip_tables_matches
assert_contains "$OUT" "seng" "ip_tables_matches"
run $MODPROBE -r seng
grep -q '^seng ' /proc/modules && fail "seng is still loaded after removal"

# Parameters.
run $MODPROBE seng capacity=1000
assert_eq "$(cat /sys/module/seng/parameters/capacity)" 1000 "capacity parameter"
run $MODPROBE -r seng
run_fails $MODPROBE seng capacity=0
grep -q '^seng ' /proc/modules && fail "seng loaded with capacity=0"
exit 0
