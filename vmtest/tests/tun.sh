# SPDX-License-Identifier: GPL-2.0-only
# The tun driver works: tunFA can be created, addressed and brought up as on a SENG gateway.
. /vmtest/lib.sh

setup_tun
run $IP -o addr show dev $TUN_DEV
assert_contains "$OUT" "inet $TUN_ADDR/24" "tunFA addresses"
run $IP -o link show dev $TUN_DEV
assert_match "$OUT" "<([A-Z_-]+,)*UP[,>]" "tunFA flags"
run $IP route show dev $TUN_DEV
assert_contains "$OUT" "192.168.28.0/24" "routes via tunFA"
run $IP link del $TUN_DEV
