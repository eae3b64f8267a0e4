# SPDX-License-Identifier: GPL-2.0-only
# In-kernel match cost of seng against its peers, on the same packets in one boot: 60-byte UDP
# packets written into tunFA for a local port pass an INPUT chain of 10 rules that all get
# evaluated (no rule has a target, so none ends the chain), then an ACCEPT. The rules:
#   seng-L / seng-N  `-m seng --src-app <no match>` (iptables legacy / nft backend)
#   ipset            `-m set --match-set S src` against one hash:ip set of M entries (legacy)
#   nftset           native nft `ip saddr @s` against one set of M elements
#   plain-L/plain-N  `-s 10.9.9.9` (iptables legacy / nft backend)
#   length-L/length-N  `-m length --length 9999`: a match extension that fails at once, the
#                    floor of any `-m` rule (both backends call it through x_tables), at M=10
# with M = 10, 10k, 100k and 1M entries, from 8 registered sources (in every table and set) and
# from 1,024 unregistered ones. The guest clock counts instructions (QEMU -icount, see xtask/src/vm.rs),
# so packets/s is work done, not host load; note that it charges nothing for cache misses.
# Prints the median and the spread (min-max) of RUNS runs, the ratios of the medians, and the
# time and kernel memory of loading 1M entries each way. Prints figures only; asserts nothing.
. /vmtest/lib.sh

BENCH=/usr/local/bin/seng-bench
SENG=/usr/local/bin/seng
LEG=$(iptables_for legacy)
NFTB=$(iptables_for nft)
NFT=/usr/sbin/nft
IPSET=/usr/sbin/ipset
PACKETS=${PACKETS:-10000}
RUNS=${RUNS:-5}
# A measurement nobody registers, so every seng rule is evaluated and fails.
NO_MATCH=00000000000000000000000000000000000000000000000000000000000000ff
# seng-bench gen puts entry i at 10.0.0.0 + i + 1: 10.0.0.1 to 10.0.0.8 are always among them.
# Each run spreads its packets over several sources: where a table's random seed puts one
# address decides its cost (an absent one at 1M entries walks a longer or shorter chain), and
# each boot draws new seeds, so one source made runs of different boots differ by 5%.
REGISTERED=10.0.0.1
REGISTERED_SOURCES=8
UNREGISTERED=10.255.0.1
UNREGISTERED_SOURCES=1024
CONFIGS="seng-L seng-N ipset nftset plain-L plain-N"
# They cost the same at every M: measured once.
FLOORS="length-L length-N"

# clean: no rules anywhere; the loaded table and sets stay.
clean() {
	$LEG -F INPUT 2>/dev/null
	# Without its table, legacy iptables costs the nft configurations nothing.
	grep -q '^iptable_filter ' /proc/modules && $RMMOD iptable_filter 2>/dev/null
	$NFT delete table ip filter 2>/dev/null
	$NFT flush chain ip bench input 2>/dev/null && $NFT delete chain ip bench input
	return 0
}

# chain CONFIG: INPUT gets 10 rules of CONFIG and a final ACCEPT.
chain() {
	clean
	if [ "$1" = nftset ]; then
		{
			echo "add chain ip bench input { type filter hook input priority 0; policy accept; }"
			for _ in 1 2 3 4 5 6 7 8 9 10; do echo "add rule ip bench input iifname \"$TUN_DEV\" ip saddr @s"; done
			echo "add rule ip bench input accept"
		} >/tmp/chain.nft
		$NFT -f /tmp/chain.nft || echo "FAILED: nft chain"
		return
	fi
	case $1 in
	*-L | ipset) ipt=$LEG ;;
	*) ipt=$NFTB ;;
	esac
	case $1 in
	seng-*) match="-m seng --src-app $NO_MATCH" ;;
	ipset) match="-m set --match-set S src" ;;
	plain-*) match="-s 10.9.9.9" ;;
	length-*) match="-m length --length 9999" ;;
	esac
	{
		echo "*filter"
		for _ in 1 2 3 4 5 6 7 8 9 10; do echo "-A INPUT -i $TUN_DEV $match"; done
		echo "-A INPUT -j ACCEPT"
		echo COMMIT
	} >/tmp/chain.rules
	$ipt-restore -n </tmp/chain.rules || echo "FAILED: $1 chain"
}

# rate SOURCE COUNT: packets/s of one run from COUNT sources from SOURCE on.
rate() {
	$INJECT udp --src "$1" --sources "$2" --dst $TUN_ADDR --dport 9 --count $PACKETS --len 60 |
		sed -n 's/.*(\([0-9]*\) packets\/s)$/\1/p'
}

# stats SOURCE COUNT: "median min max" of RUNS runs from COUNT sources from SOURCE on.
stats() {
	i=0
	while [ $i -lt $RUNS ]; do
		rate "$1" "$2"
		i=$((i + 1))
	done | sort -n | awk '{ v[NR] = $1 } END { printf "%d %d %d\n", v[int((NR + 1) / 2)], v[1], v[NR] }'
}

# ratio A B: A/B with three decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "-" }'; }

# kernel_kb: unreclaimable slab, vmalloc and per-CPU memory in KiB.
kernel_kb() {
	awk '$1 == "SUnreclaim:" || $1 == "VmallocUsed:" || $1 == "Percpu:" { kb += $2 } END { print kb }' /proc/meminfo
}

# load_peer PEER M TIMED: PEER (seng, ipset or nft) loads /tmp/in.PEER; with TIMED=timed,
# prints the time and the kernel memory it took.
load_peer() {
	case $1 in
	seng) set -- "$@" $SENG restore /tmp/in.seng ;;
	ipset) set -- "$@" $IPSET restore -file /tmp/in.ipset ;;
	nft) set -- "$@" $NFT -f /tmp/in.nft ;;
	esac
	peer=$1 m=$2 how=$3
	shift 3
	if [ "$how" != timed ]; then
		"$@" >/dev/null || echo "FAILED: $*"
		return
	fi
	before=$(kernel_kb)
	timed "load $m entries by $peer ($*)" "$@"
	# Freed memory (replaced arrays, netlink buffers) goes after a grace period.
	sleep 2
	after=$(kernel_kb)
	echo "kernel memory of $m entries by $peer: $(((after - before) / 1024)) MiB, $(((after - before) * 1024 / m)) bytes per entry"
}

# load M [timed]: the seng table, the ipset set and the nft set hold M entries each.
load() {
	clean
	$SENG flush
	$IPSET destroy S 2>/dev/null
	$NFT delete table ip bench 2>/dev/null
	$BENCH gen "$1" --v6-every 0 >/tmp/in.seng
	$BENCH gen "$1" --v6-every 0 --format ipset >/tmp/in.ipset
	$BENCH gen "$1" --v6-every 0 --format nft >/tmp/in.nft
	sleep 2
	for peer in seng ipset nft; do
		load_peer $peer "$1" "$2"
	done
	[ "$2" = timed ] && $IPSET list -t S | grep -i 'memory' | sed 's/^/ipset: /'
	rm -f /tmp/in.seng /tmp/in.ipset /tmp/in.nft
}

setup_tun
$MODPROBE seng
echo "kernel $(uname -r), 1 vCPU under QEMU TCG -icount (1 instruction = 1 ns), $PACKETS packets per run, $RUNS runs"
for m in 10 10000 100000 1000000; do
	if [ $m = 1000000 ]; then
		echo "bulk loads of 1M entries (time on the instruction-counted clock):"
		load $m timed
	else
		load $m
	fi
	echo "M=$m loaded (uptime $(cut -d' ' -f1 /proc/uptime) s)"
	configs=$CONFIGS
	[ $m = 10 ] && configs="$CONFIGS $FLOORS"
	for config in $configs; do
		chain $config
		for src in reg unreg; do
			case $src in
			reg) sources="$REGISTERED $REGISTERED_SOURCES" ;;
			*) sources="$UNREGISTERED $UNREGISTERED_SOURCES" ;;
			esac
			echo "$m $src $config $(stats $sources)" >>/tmp/results
		done
	done
done
clean

echo
echo "packets/s: median (min-max of $RUNS runs)"
printf '%-8s %-6s' M source
for c in $CONFIGS; do printf ' %24s' "$c"; done
echo
for m in 10 10000 100000 1000000; do
	for src in reg unreg; do
		printf '%-8s %-6s' $m $src
		for c in $CONFIGS; do
			awk -v m=$m -v s=$src -v c=$c '$1 == m && $2 == s && $3 == c { printf " %24s", sprintf("%d (%d-%d)", $4, $5, $6) }' /tmp/results
		done
		echo
	done
done
echo
echo "ratios of the medians"
printf '%-8s %-6s %12s %12s %14s %14s %12s\n' M source seng-L/ipset seng-N/nftset seng-L/plain-L seng-N/plain-N seng-L/nftset
for m in 10 10000 100000 1000000; do
	for src in reg unreg; do
		med() { awk -v m=$m -v s=$src -v c=$1 '$1 == m && $2 == s && $3 == c { print $4 }' /tmp/results; }
		printf '%-8s %-6s %12s %12s %14s %14s %12s\n' $m $src \
			"$(ratio "$(med seng-L)" "$(med ipset)")" "$(ratio "$(med seng-N)" "$(med nftset)")" \
			"$(ratio "$(med seng-L)" "$(med plain-L)")" "$(ratio "$(med seng-N)" "$(med plain-N)")" \
			"$(ratio "$(med seng-L)" "$(med nftset)")"
	done
done
echo
echo "the floor of a match extension, at M=10: 10 rules that call one and fail at once"
printf '%-6s %16s %16s %16s %16s\n' source length-L/plain-L length-N/plain-N seng-L/length-L seng-N/length-N
for src in reg unreg; do
	med() { awk -v s=$src -v c=$1 '$1 == 10 && $2 == s && $3 == c { print $4 }' /tmp/results; }
	printf '%-6s %16s %16s %16s %16s\n' $src \
		"$(ratio "$(med length-L)" "$(med plain-L)")" "$(ratio "$(med length-N)" "$(med plain-N)")" \
		"$(ratio "$(med seng-L)" "$(med length-L)")" "$(ratio "$(med seng-N)" "$(med length-N)")"
done
$SENG flush
$IPSET destroy S
$NFT delete table ip bench
