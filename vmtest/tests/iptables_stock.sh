# SPDX-License-Identifier: GPL-2.0-only
# Both iptables backends (legacy and nft) work in the guest with a stock rule: add, list,
# save, delete.
. /vmtest/lib.sh

rule="-A INPUT -i $TUN_DEV -p udp -j ACCEPT"
for backend in $IPTABLES_BACKENDS; do
	ipt=$(iptables_for $backend)
	run $ipt $rule
	run $ipt -L INPUT -v -n -x
	assert_match "$OUT" "^ *0 +0 +ACCEPT +(udp|17) .* $TUN_DEV " "$backend: iptables -L"
	run $ipt -S INPUT
	assert_contains "$OUT" "$rule" "$backend: iptables -S"
	run $ipt-save
	assert_contains "$OUT" "$rule" "$backend: iptables-save"
	run $ipt -D INPUT -i $TUN_DEV -p udp -j ACCEPT
	run $ipt -S INPUT
	assert_not_contains "$OUT" "$rule" "$backend: iptables -S after -D"
done
