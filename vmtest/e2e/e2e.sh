# SPDX-License-Identifier: GPL-2.0-only
# The end-to-end comparison in the guest (busybox sh; source after /vmtest/lib.sh): replays a
# scenario of /vmtest/scenarios through seng.ko and one iptables backend, and compares every
# rule and policy counter of every table with what seng-sim computes for the same inputs. README.md next to
# this file describes scenarios and the procedure.

E2E=/usr/local/bin/seng-e2e
SIM=/usr/local/bin/seng-sim
SENG=/usr/local/bin/seng
SCENARIOS=/vmtest/scenarios
E2E_WORK=/tmp/e2e
# The firewall mark of replayed packets. Everything else the gateway's stack sends (resets,
# ICMP errors and echo replies to replayed traffic, REJECT's answers, IPv6 MLD reports) is not
# in the capture and not simulated, so a raw-table guard drops it before conntrack and filter.
# The guard tests only the low 16 bits: a scenario's own raw rules under nft run beside it at
# the same priority and may set marks in the upper bits first.
E2E_MARK=0x5e9
E2E_GUARD_MARK=$E2E_MARK/0xffff
# The legacy guard also needs conntrack (a state match every packet passes): conntrack, and
# with it nf_defrag's reassembly before the tables, runs in a network namespace only while
# some rule needs it, and seng-sim assumes it runs, as on a seng gateway.
E2E_GUARD_CT="-m conntrack --ctstate INVALID,NEW,RELATED,ESTABLISHED,UNTRACKED"
# Scenarios run, and those that failed with their one-line reasons.
E2E_RAN=0
E2E_FAILED=0
E2E_FIRST=
E2E_LAST=

sysctl_set() {
	echo "$2" >"/proc/sys/$(echo "$1" | tr . /)" || fail "cannot set $1 = $2"
}

# e2e_console TEXT: a line on the console too (the test log is only shown on failure).
e2e_console() {
	echo "$*"
	echo "$*" >&3
}

# e2e_forwarding: the gateway forwards IPv4 and IPv6. IPv6 forwarding depends only on
# `all.forwarding`; devices created afterwards keep their own `forwarding` off, so they join
# no all-routers group and send no MLD reports. (Writing `all` also writes `default`.)
e2e_forwarding() {
	sysctl_set net.ipv4.ip_forward 1
	sysctl_set net.ipv6.conf.all.forwarding 1
	sysctl_set net.ipv6.conf.default.forwarding 0
}

# e2e_kernel: the settings every run shares, and the guard against the stack's own packets.
e2e_kernel() {
	run $MODPROBE tun
	run $MODPROBE nf_conntrack
	e2e_forwarding
	sysctl_set net.ipv4.conf.all.rp_filter 0
	sysctl_set net.ipv4.conf.default.rp_filter 0
	# seng-sim tracks TCP without windows, as the liberal mode does.
	sysctl_set net.netfilter.nf_conntrack_tcp_be_liberal 1
	sysctl_set net.netfilter.nf_conntrack_tcp_loose 1
	# The kernel replays in its own time, faster or slower than the capture; no entry may
	# expire on the wall clock. (seng-e2e compare fails if seng-sim expires one by capture time.)
	for t in udp_timeout udp_timeout_stream icmp_timeout icmpv6_timeout generic_timeout \
		tcp_timeout_syn_sent tcp_timeout_syn_recv tcp_timeout_fin_wait tcp_timeout_close_wait \
		tcp_timeout_last_ack tcp_timeout_time_wait tcp_timeout_close tcp_timeout_max_retrans \
		tcp_timeout_unacknowledged; do
		sysctl_set net.netfilter.nf_conntrack_$t 3600
	done
	for family in iptables ip6tables; do
		run /usr/sbin/$family-legacy -t raw -A OUTPUT -m mark ! --mark $E2E_GUARD_MARK $E2E_GUARD_CT -j DROP
	done
	E2E_DEVS=
	E2E_NET=
}

# e2e_network [SIM_ARGS]: replaces the previous scenario's network by the gateway's network as
# seng-sim sees it (default: tunFA 192.168.28.1/24 and fd00:28::1/64, eth0 without addresses
# carrying the default routes), every interface a tun device the injector attaches to. Sets
# E2E_DEVS, E2E_IN_DEV and E2E_CHECKSUM.
e2e_network() {
	OUT=$($E2E net ${1:+"$1"} 2>&1) || { echo "$OUT"; return 1; }
	# The same network as the previous scenario's is kept.
	[ -n "$E2E_DEVS" ] && [ "$OUT" = "$E2E_NET" ] && return 0
	for dev in $E2E_DEVS; do
		$IP link del "$dev" 2>/dev/null
	done
	$IP -4 addr flush dev lo scope global 2>/dev/null
	$IP -6 addr flush dev lo scope global 2>/dev/null
	echo "$OUT"
	E2E_NET=$OUT
	eval "$OUT" || return 1
	sysctl_set net.netfilter.nf_conntrack_checksum "$E2E_CHECKSUM"
}

# e2e_empty_table TABLE BACKEND: an iptables-restore block that empties TABLE (raw, mangle,
# nat, filter), policies ACCEPT; the legacy raw table keeps the guard of e2e_kernel.
e2e_empty_table() {
	case $1 in
	raw) chains="PREROUTING OUTPUT" ;;
	mangle) chains="PREROUTING INPUT FORWARD OUTPUT POSTROUTING" ;;
	nat) chains="PREROUTING INPUT OUTPUT POSTROUTING" ;;
	filter) chains="INPUT FORWARD OUTPUT" ;;
	*) return 0 ;;
	esac
	echo "*$1"
	for chain in $chains; do echo ":$chain ACCEPT [0:0]"; done
	[ "$1:$2" = raw:legacy ] && echo "-A OUTPUT -m mark ! --mark $E2E_GUARD_MARK $E2E_GUARD_CT -j DROP"
	echo COMMIT
}

# e2e_clear_tables: empties every table of both backends (and always the filter tables), so
# one backend's or scenario's rules do not act on the next run (a restore replaces only the
# tables it names). Tables nothing loaded stay unloaded, as seng-sim assumes.
e2e_clear_tables() {
	for tool in iptables-legacy ip6tables-legacy iptables-nft ip6tables-nft; do
		# (Not $backend: e2e_run's.)
		tool_backend=${tool#*-}
		tables=$( (echo filter; /usr/sbin/$tool-save 2>/dev/null | sed -n 's/^\*//p') | sort -u)
		for table in $tables; do e2e_empty_table "$table" "$tool_backend"; done |
			/usr/sbin/$tool-restore 2>/dev/null
	done
}

# e2e_guard FAMILY BACKEND RULES: a scenario's raw table (in RULES, restored with BACKEND)
# replaced the guard (legacy) or runs beside it (nft) at the same priority: the guard goes
# first into its OUTPUT chain, so the scenario's raw rules never see the stack's own packets.
# seng-e2e compare leaves it out of the kernel's counters.
e2e_guard() {
	grep -q '^\*raw' "$3" || return 0
	ct=
	[ "$2" = legacy ] && ct=$E2E_GUARD_CT
	/usr/sbin/$1-$2 -t raw -I OUTPUT 1 -m mark ! --mark $E2E_GUARD_MARK $ct -j DROP
}

# e2e_fail NAME REASON: records a failed scenario (the test goes on with the next one); E2E_LAST
# keeps the reason.
e2e_fail() {
	E2E_FAILED=$((E2E_FAILED + 1))
	[ -n "$E2E_FIRST" ] || E2E_FIRST="$1: $2"
	E2E_LAST=$2
	e2e_console "e2e $1: FAILED: $2"
}

# e2e_step NAME WHAT CMD...: runs CMD (output into the log), records a failure if it fails.
e2e_step() {
	name=$1
	what=$2
	shift 2
	echo "+ $*"
	if ! "$@" >"$E2E_OUT" 2>&1; then
		cat "$E2E_OUT"
		e2e_fail "$name" "$what failed: $(tail -n 1 "$E2E_OUT")"
		return 1
	fi
	cat "$E2E_OUT"
}

# e2e_run SCENARIO BACKEND: one scenario (a name in /vmtest/scenarios, or a directory laid out
# the same way) on one backend, after e2e_kernel.
e2e_run() {
	case $1 in
	*/*)
		dir=$1
		scenario=$(basename "$1")
		name="$scenario (fresh) [$2]"
		;;
	*)
		dir=$SCENARIOS/$1
		scenario=$1
		name="$scenario [$2]"
		;;
	esac
	backend=$2
	work=$E2E_WORK/$(echo "$name" | tr -c 'A-Za-z0-9-\n' _)
	E2E_OUT=$work/out
	E2E_LAST_WORK=$work
	E2E_RAN=$((E2E_RAN + 1))
	rm -rf "$work"
	mkdir -p "$work"
	echo "=== $name"
	# Big inputs are generated at test time (deterministically) instead of being committed.
	if [ -f "$dir/generated" ]; then
		e2e_step "$name" "generating the inputs" $E2E gen "$scenario" "$work" || return
	fi
	capture=$dir/capture.pcap
	[ -f "$work/capture.pcap" ] && capture=$work/capture.pcap
	enclaves=$dir/enclaves.txt
	[ -f "$work/enclaves.txt" ] && enclaves=$work/enclaves.txt
	args_file=
	sim_args=
	if [ -f "$dir/sim-args" ]; then
		args_file=$dir/sim-args
		sim_args=$(sed 's/#.*//' "$args_file")
	fi
	e2e_step "$name" "splitting the rules" $E2E split-rules "$dir/rules.txt" "$work/rules4" "$work/rules6" || return
	e2e_step "$name" "building its network" e2e_network $args_file || return

	e2e_clear_tables
	$MODPROBE seng || { e2e_fail "$name" "modprobe seng failed"; return; }
	# Untimed lines before the first packet (seng restore swaps the whole table in); timed
	# lines are the injector's.
	sed '/^[[:space:]]*@/d' "$enclaves" >"$work/untimed"
	e2e_step "$name" "seng restore" $SENG restore "$work/untimed" || return
	e2e_step "$name" "iptables-$backend-restore" /usr/sbin/iptables-$backend-restore "$work/rules4" || return
	e2e_step "$name" "ip6tables-$backend-restore" /usr/sbin/ip6tables-$backend-restore "$work/rules6" || return
	e2e_step "$name" "the IPv4 raw guard" e2e_guard iptables "$backend" "$work/rules4" || return
	e2e_step "$name" "the IPv6 raw guard" e2e_guard ip6tables "$backend" "$work/rules6" || return
	$CONNTRACK -F >/dev/null 2>&1
	$CONNTRACK -f ipv6 -F >/dev/null 2>&1

	set --
	for dev in $E2E_DEVS; do set -- "$@" --dev "$dev"; done
	[ -n "$E2E_IN_DEV" ] && set -- "$@" --in-dev "$E2E_IN_DEV"
	# The simulator first: how many packets it says leave the gateway tells the injector how
	# long to keep reading the devices.
	# shellcheck disable=SC2086 # sim-args are words
	if ! $SIM replay "$capture" "$dir/rules.txt" --enclaves "$enclaves" --backend "$backend" $sim_args --json >"$work/sim.json" 2>"$E2E_OUT"; then
		cat "$E2E_OUT"
		e2e_fail "$name" "seng-sim failed: $(tail -n 1 "$E2E_OUT")"
		return
	fi
	expect_out=$($E2E expect-out "$work/sim.json") || { e2e_fail "$name" "cannot read the seng-sim report"; return; }
	e2e_step "$name" "the replay" $INJECT pcap "$capture" "$@" --events "$enclaves" --mark $E2E_MARK \
		--expect-out "$expect_out" --summary "$work/inject.json" || return
	/usr/sbin/iptables-$backend-save -c >"$work/kernel4" || { e2e_fail "$name" "iptables-$backend-save failed"; return; }
	/usr/sbin/ip6tables-$backend-save -c >"$work/kernel6" || { e2e_fail "$name" "ip6tables-$backend-save failed"; return; }
	$E2E compare --name "$name" --sim "$work/sim.json" --inject "$work/inject.json" \
		--ipv4 "$work/kernel4" --ipv6 "$work/kernel6" >"$E2E_OUT" 2>&1
	rc=$?
	while read -r line; do e2e_console "$line"; done <"$E2E_OUT"
	if [ $rc -ne 0 ]; then
		echo "--- kernel, IPv4:"
		cat "$work/kernel4"
		echo "--- kernel, IPv6:"
		cat "$work/kernel6"
		e2e_fail "$name" "$(grep -m 1 -E 'DIFFERENCE|INCOMPLETE|error' "$E2E_OUT" | sed 's/^e2e [^:]*: //')"
	fi
}

# e2e_corpus BACKEND [SCENARIO...]: e2e_run for the named scenarios (default: every scenario
# but those with a `slow` file), then ends the test with the verdict.
e2e_corpus() {
	backend=$1
	shift
	[ $# -gt 0 ] || set -- $(for d in "$SCENARIOS"/*/; do [ -f "$d/slow" ] || basename "$d"; done)
	e2e_kernel
	# A light run gives each scenario one backend: legacy the odd ones, nft the even ones.
	skipped_parity=
	if light; then
		case $backend in legacy) skipped_parity=0 ;; nft) skipped_parity=1 ;; esac
	fi
	index=0
	for scenario in "$@"; do
		index=$((index + 1))
		[ "$((index % 2))" = "$skipped_parity" ] && continue
		e2e_run "$scenario" "$backend"
	done
	e2e_finish
}

# e2e_finish: ends the test: passes if every scenario run agreed. No DROP policy (nor NAT) is
# left for the next test.
e2e_finish() {
	e2e_clear_tables
	[ $E2E_RAN -gt 0 ] || fail "no scenario ran"
	[ $E2E_FAILED -eq 0 ] || fail "$E2E_FAILED of $E2E_RAN scenario runs failed; first: $E2E_FIRST"
	e2e_console "e2e: all $E2E_RAN scenario runs agree"
}
