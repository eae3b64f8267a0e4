#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# /init of the VM test initramfs (built by `cargo xtask vmtest`): mounts the kernel file
# systems, runs the planned tests (or the benchmarks), reports over the serial console in the
# line protocol that xtask/src/vm.rs parses, dumps the kernel log and powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
hostname vmtest
/usr/sbin/ip link set lo up

. /vmtest/lib.sh

# Per-test limit (`cargo xtask vmtest --test-timeout`); the host also kills the whole VM after
# its --timeout.
TEST_TIMEOUT=$(cmdline test_timeout)
TEST_TIMEOUT=${TEST_TIMEOUT:-300}

# Uptime in centiseconds (the leading 1 keeps "08" from reading as octal).
uptime_cs() {
	read -r up _ </proc/uptime
	echo $((${up%.*} * 100 + 1${up#*.} - 100))
}

seconds_since() {
	d=$(($(uptime_cs) - $1))
	printf '%d.%02ds' $((d / 100)) $((d % 100))
}

run_tests() {
	mkdir -p /tmp/vmtest
	while read -r file; do
		[ -n "$file" ] || continue
		name=${file%.sh}
		log=/tmp/vmtest/$name.log
		detail=/tmp/vmtest/$name.detail
		vmtest_reset >/dev/null 2>&1
		case $file in
		*.sh) set -- sh "/vmtest/tests/$file" ;;
		*) set -- "/vmtest/tests/$file" ;;
		esac
		start=$(uptime_cs)
		dmesg_mark
		# fd 3 stays the console so tests can send files back (export_file).
		(cd /tmp && SENG_TEST=$name SENG_DETAIL=$detail exec timeout -s KILL $TEST_TIMEOUT "$@") \
			3>&1 >"$log" 2>&1 </dev/null
		rc=$?
		took=$(seconds_since "$start")
		msg=$(tail -n 1 "$detail" 2>/dev/null)
		# A kernel report during the test fails it, whatever the test itself concluded.
		reports=$(kernel_reports)
		if [ -n "$reports" ]; then
			{
				echo "kernel reports during the test:"
				dmesg_since
			} >>"$log"
			first=$(printf '%s\n' "$reports" | head -n 1 | sed 's/^\[[^]]*\] *//')
			case $rc in
			0 | 77) msg="kernel report: $first" ;;
			*) msg="${msg:-exit status $rc}; kernel report: $first" ;;
			esac
			rc=1
		fi
		case $rc in
		0) echo "SENG-TEST $name PASS $took" ;;
		77) echo "SENG-TEST $name SKIP ${msg:-skipped} ($took)" ;;
		*)
			[ $rc -eq 137 ] && msg="killed after ${TEST_TIMEOUT}s"
			echo "SENG-TEST $name FAIL ${msg:-exit status $rc} ($took)"
			echo "SENG-LOG-BEGIN $name"
			cat "$log"
			echo "SENG-LOG-END $name"
			;;
		esac
	done </vmtest/plan
	echo SENG-DONE
}

run_bench() {
	while read -r file; do
		[ -n "$file" ] || continue
		script=/vmtest/bench/$file
		name=${file%.sh}
		vmtest_reset >/dev/null 2>&1
		echo "SENG-BENCH-BEGIN $name"
		(cd /tmp && exec sh "$script") 3>&1 2>&1 </dev/null
		echo "SENG-BENCH-END $name $?"
	done </vmtest/plan
	echo SENG-DONE
}

echo "SENG-BOOTED $(uname -r)"
case $(cmdline mode) in
bench) run_bench ;;
*) run_tests ;;
esac

echo SENG-DMESG-BEGIN
kernel_log
echo SENG-DMESG-END

if [ "$(cmdline keep)" = 1 ]; then
	echo "vmtest: tests done; exit this shell to power off"
	setsid cttyhack sh -l
fi
poweroff -f
