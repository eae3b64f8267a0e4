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

# user_space_elsewhere: whether the tests whose subject is user space run in full on another kernel
# (vmtest.userspace=0, which `cargo xtask vmtest --user-space-on KERNEL` sets on every other kernel,
# as a light run does): the agent tests skip (the module paths they drive run everywhere in
# nl-origins and torture) and the xt tests check only the kernel's side of their rules.
user_space_elsewhere() {
	[ "$(cmdline userspace)" = 0 ]
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

# wait_for CONDITION TIMEOUT: evaluates the shell command CONDITION every 0.1 s until it
# succeeds (returns 0) or TIMEOUT seconds have passed (returns 1). Timeouts bound a wait; they
# are not measurements.
wait_for() {
	wait_until=$(($(uptime_s) + $2))
	until eval "$1"; do
		[ "$(uptime_s)" -lt $wait_until ] || return 1
		sleep 0.1
	done
}

# uptime_s: whole seconds since boot.
uptime_s() {
	read -r up _ </proc/uptime
	echo "${up%.*}"
}

# ---- etcd and gateways (the `seng agent` tests, issue 16) ----
#
# The test starts its own etcd in the initial namespace, listening at $ETCD_ADDR on its lo; each
# gateway is a network namespace with its own seng table, a veth routed to the initial namespace
# (no bridge: the kernels built here have none) and its own tunFA. etcd keeps its data in $ETCD_DIR across etcd_stop/etcd_start.
ETCD=/usr/bin/etcd
ETCDCTL_BIN=/usr/bin/etcdctl
ETCD_ADDR=10.77.0.1
ETCD_PORT=2379
ETCD_DIR=/tmp/etcd
ETCD_LOG=/tmp/etcd.log
ETCD_TLS=/vmtest/data/agent-tls
# What etcd_start started: plain, tls (client certificates required) or auth (users and
# passwords, root's password $ETCD_ROOT_PASSWORD).
ETCD_MODE=plain
ETCD_ROOT_PASSWORD=root-pw

# etcd_url: the client URL gateways use for the running mode.
etcd_url() {
	case $ETCD_MODE in
	tls) echo "https://$ETCD_ADDR:$ETCD_PORT" ;;
	*) echo "http://$ETCD_ADDR:$ETCD_PORT" ;;
	esac
}

# etcd_net: etcd's address on the initial namespace's lo (idempotent).
etcd_net() {
	run $IP link set lo up
	$IP -4 addr show dev lo | grep -q " $ETCD_ADDR/" && return 0
	run $IP addr add $ETCD_ADDR/32 dev lo
}

# etcdctl ARGS...: etcdctl against the test's etcd as its administrator (v3 API, the client
# certificate "root" in tls mode, user root in auth mode).
etcdctl() {
	case $ETCD_MODE in
	tls) ETCDCTL_API=3 $ETCDCTL_BIN --endpoints "$(etcd_url)" --dial-timeout 3s \
		--cacert $ETCD_TLS/ca.crt --cert $ETCD_TLS/root.crt --key $ETCD_TLS/root.key "$@" ;;
	auth) ETCDCTL_API=3 $ETCDCTL_BIN --endpoints "$(etcd_url)" --dial-timeout 3s \
		--user root:$ETCD_ROOT_PASSWORD "$@" ;;
	*) ETCDCTL_API=3 $ETCDCTL_BIN --endpoints "$(etcd_url)" --dial-timeout 3s "$@" ;;
	esac
}

# etcd_revision: etcd's current revision.
etcd_revision() { etcdctl endpoint status -w json | grep -o '"revision":[0-9]*' | head -n 1 | cut -d: -f2; }

etcd_healthy() { etcdctl endpoint health >/dev/null 2>&1; }

# etcd_start [plain|tls|auth]: starts etcd in the background ($ETCD_PID; its log appended to
# $ETCD_LOG) and returns once it answers. The first start in auth mode creates the users
# root, gw-a, gw-b and gw-c (password "<name>-pw"; the gateways may read and write /seng/)
# and enables authentication; later starts keep what $ETCD_DIR holds.
etcd_start() {
	ETCD_MODE=${1:-$ETCD_MODE}
	etcd_net
	scheme=http
	tls_args=
	if [ "$ETCD_MODE" = tls ]; then
		scheme=https
		tls_args="--client-cert-auth --trusted-ca-file $ETCD_TLS/ca.crt --cert-file $ETCD_TLS/etcd.crt --key-file $ETCD_TLS/etcd.key"
	fi
	# An etcd a failed or killed test left behind would hold the port.
	[ -n "$ETCD_PID" ] || etcd_stop_stale
	# This test's etcd log starts empty.
	[ -n "$ETCD_LOGGING" ] || : >$ETCD_LOG
	ETCD_LOGGING=1
	fresh=0
	[ -d $ETCD_DIR/member ] || fresh=1
	echo "+ etcd ($ETCD_MODE) at $(etcd_url)"
	# shellcheck disable=SC2086 # tls_args is a word list
	$ETCD --name vmtest --data-dir $ETCD_DIR \
		--listen-client-urls "$scheme://$ETCD_ADDR:$ETCD_PORT,$scheme://127.0.0.1:$ETCD_PORT" \
		--advertise-client-urls "$scheme://$ETCD_ADDR:$ETCD_PORT" \
		--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
		--initial-cluster vmtest=http://127.0.0.1:2380 --initial-cluster-state new \
		--heartbeat-interval 200 --election-timeout 2000 $tls_args >>$ETCD_LOG 2>&1 &
	ETCD_PID=$!
	echo $ETCD_PID >$ETCD_DIR.pid
	wait_for etcd_healthy 60 || fail "etcd did not come up: $(tail -n 5 $ETCD_LOG)"
	if [ "$ETCD_MODE" = auth ] && [ $fresh = 1 ]; then
		ETCD_MODE=plain
		run etcdctl user add root:$ETCD_ROOT_PASSWORD
		run etcdctl user grant-role root root
		run etcdctl role add seng
		run etcdctl role grant-permission seng --prefix=true readwrite /seng/
		for gw in gw-a gw-b gw-c; do
			run etcdctl user add $gw:$gw-pw
			run etcdctl user grant-role $gw seng
		done
		run etcdctl auth enable
		ETCD_MODE=auth
	fi
}

# etcd_stop: stops the running etcd (SIGTERM) and waits for it; its data stays.
etcd_stop() {
	[ -n "$ETCD_PID" ] || return 0
	kill "$ETCD_PID" 2>/dev/null
	wait "$ETCD_PID" 2>/dev/null
	rm -f $ETCD_DIR.pid
	ETCD_PID=
}

# running PID: whether process PID runs (a zombie nobody waited for does not).
running() {
	[ -r /proc/$1/stat ] && [ "$(sed 's/.*) //; s/ .*//' /proc/$1/stat 2>/dev/null)" != Z ]
}

# etcd_stop_stale: kills the etcd of an earlier test (by its pid file) and removes its data.
etcd_stop_stale() {
	stale=$(cat $ETCD_DIR.pid 2>/dev/null) || return 0
	kill -9 "$stale" 2>/dev/null
	wait_for "! running $stale" 10
	rm -rf $ETCD_DIR $ETCD_DIR.pid
}

# etcd_destroy: stops etcd and deletes its data (the next etcd_start is a fresh cluster).
etcd_destroy() {
	etcd_stop
	rm -rf $ETCD_DIR
}

# gateway NAME INDEX: the network namespace NAME of a gateway: lo up, a veth 10.77.INDEX.2/24
# whose peer 10.77.INDEX.1 in the initial namespace is its route to etcd, and its own tunFA
# ($TUN_ADDR/24, the tun module loaded).
gateway() {
	etcd_net
	run $MODPROBE tun
	run $MODPROBE veth
	run $IP netns add "$1"
	run $IP -n "$1" link set lo up
	run $IP link add "v-$1" type veth peer name eth0 netns "$1"
	run $IP addr add "10.77.$2.1/24" dev "v-$1"
	run $IP link set "v-$1" up
	run $IP -n "$1" addr add "10.77.$2.2/24" dev eth0
	run $IP -n "$1" link set eth0 up
	run $IP -n "$1" route add default via "10.77.$2.1"
	run $IP -n "$1" tuntap add dev $TUN_DEV mode tun
	run $IP -n "$1" addr add $TUN_ADDR/24 dev $TUN_DEV
	run $IP -n "$1" link set $TUN_DEV up
}

# in_gw NAME CMD...: runs CMD in gateway NAME's namespace.
in_gw() {
	in_gw_ns=$1
	shift
	$IP netns exec "$in_gw_ns" "$@"
}
