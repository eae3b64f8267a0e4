# SPDX-License-Identifier: GPL-2.0-only
# Helpers for the guest tests (vmtest/tests/*.sh source this file).
#
# A test is a busybox sh script that exits 0 to pass, 77 to skip, anything else to fail. Its
# output is shown only when it fails; `fail` records the one-line reason the host prints.
#
# Call tools by full path: busybox sh runs its own applets (ip, modprobe, ...) for bare names.

IP=/usr/sbin/ip
MODPROBE=/sbin/modprobe
INSMOD=/sbin/insmod
RMMOD=/sbin/rmmod
CONNTRACK=/usr/sbin/conntrack
INJECT=/usr/local/bin/inject
SENG_KO=/lib/modules/$(uname -r)/extra/seng.ko
# iptables backends: `$(iptables_for legacy)` is iptables-legacy, and so on.
IPTABLES_BACKENDS="legacy nft"

# The enclave tunnel of a SENG gateway, as in the original documentation.
TUN_DEV=tunFA
TUN_ADDR=192.168.28.1
TUN_PEER=192.168.28.2

iptables_for() { echo "/usr/sbin/iptables-$1"; }
ip6tables_for() { echo "/usr/sbin/ip6tables-$1"; }

log() { echo "# $*"; }

# cmdline NAME: the value of vmtest.NAME on the kernel command line (empty if absent).
cmdline() {
	for word in $(cat /proc/cmdline); do
		case $word in vmtest.$1=*) echo "${word#*=}" ;; esac
	done
}

# light: whether this boot runs the longest tests at a smaller scale (vmtest.light=1, which
# `cargo xtask vmtest --debug-light` sets on the debug kernel, where a process start costs about ten
# times what it does on the other kernels). The same code paths run, fewer times.
light() {
	[ "$(cmdline light)" = 1 ]
}

# fail MESSAGE: ends the test as failed with MESSAGE as its reason.
fail() {
	echo "FAIL: $*"
	echo "$*" >>"${SENG_DETAIL:-/dev/null}"
	exit 1
}

# skip MESSAGE: ends the test as skipped.
skip() {
	echo "SKIP: $*"
	echo "$*" >>"${SENG_DETAIL:-/dev/null}"
	exit 77
}

# run CMD...: runs CMD, shows its output, fails the test if it exits non-zero. The output is
# left in $OUT.
run() {
	echo "+ $*"
	OUT=$("$@" 2>&1)
	rc=$?
	[ -z "$OUT" ] || printf '%s\n' "$OUT"
	[ $rc -eq 0 ] || fail "\`$*\` exited $rc${OUT:+: $(printf '%s\n' "$OUT" | tail -n 1)}"
}

# run_fails CMD...: runs CMD and fails the test if it succeeds. The output is left in $OUT.
run_fails() {
	echo "+ ! $*"
	OUT=$("$@" 2>&1)
	rc=$?
	[ -z "$OUT" ] || printf '%s\n' "$OUT"
	[ $rc -ne 0 ] || fail "\`$*\` succeeded but should have failed"
}

# assert_eq ACTUAL EXPECTED [WHAT]
assert_eq() {
	[ "$1" = "$2" ] || fail "${3:-value}: expected '$2', got '$1'"
}

# assert_contains TEXT NEEDLE [WHAT]: NEEDLE is a fixed string.
assert_contains() {
	case $1 in
	*"$2"*) ;;
	*) fail "${3:-output} does not contain '$2'" ;;
	esac
}

# assert_not_contains TEXT NEEDLE [WHAT]
assert_not_contains() {
	case $1 in
	*"$2"*) fail "${3:-output} contains '$2'" ;;
	esac
}

# assert_match TEXT REGEX [WHAT]: REGEX is an extended regular expression matched per line.
assert_match() {
	printf '%s\n' "$1" | grep -Eq -- "$2" || fail "${3:-output} does not match /$2/"
}

# retry TRIES CMD...: runs CMD until it succeeds, TRIES times at most, 0.1 s apart.
retry() {
	tries=$1
	shift
	while ! "$@"; do
		tries=$((tries - 1))
		[ $tries -gt 0 ] || return 1
		sleep 0.1
	done
}

# kernel_log: the whole kernel log (busybox dmesg reads only 16 KiB unless told more).
kernel_log() { dmesg -s 1048576; }

# dmesg_mark; ...; dmesg_since: the kernel log lines stamped after the mark (by time stamp, so
# a wrapped log buffer does not shift them).
dmesg_mark() {
	DMESG_MARK=$(kernel_log | awk -F'[][]' 'END { print $2 + 0 }')
}
dmesg_since() {
	kernel_log | awk -F'[][]' -v mark="${DMESG_MARK:-0}" '$2 + 0 > mark'
}

# kernel_reports: the lines since dmesg_mark that report a kernel problem: an oops or BUG, a
# WARN, a KASAN, KFENCE or UBSAN report, lockdep (locking and RCU), debug objects, kmemleak.
# The host reads the whole log for these too (xtask/src/vm.rs); here they fail the test that
# caused them.
kernel_reports() {
	dmesg_since | grep -E 'BUG:|WARNING:|Oops|Call Trace|KASAN|KFENCE|UBSAN:|ODEBUG:|suspicious RCU usage|possible circular locking|suspected memory leak|unreferenced object|general protection'
}

# export_file PATH [NAME]: sends a file to the host (target/vmtest/<kernel>/files/NAME).
export_file() {
	{
		echo "SENG-FILE-BEGIN ${2:-$(basename "$1")}"
		base64 "$1"
		echo "SENG-FILE-END ${2:-$(basename "$1")}"
	} >&3
}

# setup_tun [DEV] [ADDR]: loads tun and brings up DEV (default tunFA) with ADDR/24.
setup_tun() {
	dev=${1:-$TUN_DEV}
	run $MODPROBE tun
	[ -c /dev/net/tun ] || fail "/dev/net/tun is missing after modprobe tun"
	run $IP tuntap add dev "$dev" mode tun
	run $IP addr add "${2:-$TUN_ADDR}/24" dev "$dev"
	run $IP link set "$dev" up
}

# ipt_counters BACKEND CHAIN TEXT: "PACKETS BYTES" of the first rule of CHAIN whose
# `-L -v -n -x` line contains TEXT.
ipt_counters() {
	$(iptables_for "$1") -L "$2" -v -n -x | awk -v t="$3" 'NR > 2 && index($0, t) { print $1, $2; exit }'
}

# vmtest_reset: puts the guest back into a clean state between tests (the runner calls it;
# tests should still clean up what they create).
vmtest_reset() {
	for dev in $(ls /sys/class/net); do
		[ "$dev" = lo ] || $IP link del "$dev" 2>/dev/null
	done
	if [ -e /proc/net/ip_tables_names ]; then
		for table in $(cat /proc/net/ip_tables_names); do
			/usr/sbin/iptables-legacy -t "$table" -F
			/usr/sbin/iptables-legacy -t "$table" -X
		done
	fi
	if [ -e /proc/net/ip6_tables_names ]; then
		for table in $(cat /proc/net/ip6_tables_names); do
			/usr/sbin/ip6tables-legacy -t "$table" -F
			/usr/sbin/ip6tables-legacy -t "$table" -X
		done
	fi
	# nf_tables built in (the Rust-for-Linux kernel) has no /sys/module entry.
	if [ -d /sys/module/nf_tables ] || grep -q '/nf_tables\.ko$' "/lib/modules/$(uname -r)/modules.builtin" 2>/dev/null; then
		for family in iptables ip6tables; do
			for table in $(/usr/sbin/$family-nft-save | sed -n 's/^\*//p'); do
				/usr/sbin/$family-nft -t "$table" -F
				/usr/sbin/$family-nft -t "$table" -X
			done
		done
	fi
	[ -d /sys/module/nf_conntrack ] && $CONNTRACK -F 2>/dev/null
	# Last: rules left behind by a failed test would keep seng in use.
	grep -q '^seng ' /proc/modules && $RMMOD seng
	return 0
}

# timed WHAT CMD...: runs CMD (its output discarded) and prints how long it took, on the clock
# and as user and kernel CPU time (for a netlink client, kernel time is mostly the module's work).
timed() {
	what=$1
	shift
	time -o /tmp/timed -f '%e s (user %U s, kernel %S s)' "$@" >/dev/null || echo "FAILED: $*"
	echo "$what: $(cat /tmp/timed)"
}

# monitor_start FILE: runs `seng monitor` in the background into FILE ($MONITOR is its pid) and
# returns once it is listening: a probe enclave it registers and removes shows up there.
monitor_start() {
	/usr/local/bin/seng monitor >"$1" 2>&1 &
	MONITOR=$!
	monitor_probe() {
		/usr/local/bin/seng enclave add 192.168.99.1 --app $(printf 'ee%.0s' $(seq 32)) --host 10.0.0.1 >/dev/null 2>&1
		grep -q '^enclave add 192.168.99.1 ' "$1"
	}
	retry 100 monitor_probe "$1" || fail "seng monitor printed nothing: $(cat "$1")"
	run /usr/local/bin/seng enclave del 192.168.99.1
	monitor_probed() { grep -q '^enclave del 192.168.99.1$' "$1"; }
	retry 50 monitor_probed "$1" || fail "seng monitor missed the probe's removal"
}

# monitor_since_probe FILE: what the monitor printed after the probe of monitor_start.
monitor_since_probe() { sed -n '/^enclave del 192.168.99.1$/,$p' "$1" | tail -n +2; }
