# SPDX-License-Identifier: GPL-2.0-only
# seng agent figures (issue 16; targets: p99 under 250 ms, late join under 2 s). Three gateways
# (namespaces with their own table and agent) share 10,000 enclaves each through one etcd in the
# VM; gw-a's local SENG server makes 1,000 changes per second (registrations, then their
# unregistrations), and each change's delay from its acknowledgement at gw-a to its event in
# gw-b's kernel table is measured (p50, p99, max; one process holds both sockets, one clock).
# Then gw-a grows its part until 100,000 entries are published, and a fresh gateway's agent is
# started: the time until its table holds them all. Prints figures only; nothing is asserted.
# `agent-short.sh` runs the same at the scale of every CI run. Under `--bench` the VM counts
# instructions (-icount), so times are the guest's virtual clock, comparable run to run.
. /vmtest/lib.sh
. /vmtest/lib-agent.sh

BENCH=/usr/local/bin/seng-agent-bench
PER_GATEWAY=${AGENT_BENCH_PER_GATEWAY:-10000}
CHANGES=${AGENT_BENCH_CHANGES:-5000}
RATE=${AGENT_BENCH_RATE:-1000}
LATE=${AGENT_BENCH_LATE:-100000}
TTL=10

agents_trap

enclaves_at() { in_gw "$1" $SENG stats | awk '$1 == "enclaves" { print $2 }'; }
# wait_enclaves GW N WHAT: waits until GW's table holds N enclaves, prints how long it took.
wait_enclaves() {
	t0=$(uptime_cs)
	wait_for "[ \"\$(enclaves_at $1)\" = $2 ]" 600 || fail "$3: $1 holds $(enclaves_at $1) of $2 enclaves"
	echo "$3: $(seconds_since "$t0")"
}
uptime_cs() {
	read -r up _ </proc/uptime
	echo $((${up%.*} * 100 + 1${up#*.} - 100))
}
seconds_since() {
	d=$(($(uptime_cs) - $1))
	printf '%d.%02d s' $((d / 100)) $((d % 100))
}

echo "kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) CPU(s) under QEMU TCG; $PER_GATEWAY enclaves per gateway, $CHANGES changes at $RATE/s, late join of $LATE"
$MODPROBE seng
etcd_start plain >/dev/null
gateways >/dev/null
gateway gw-late 4 >/dev/null
i=1
for gw in $GATEWAYS; do
	$BENCH gen 10.$i.0.0 $PER_GATEWAY >/tmp/agent-bench-$gw
	in_gw $gw $SENG restore /tmp/agent-bench-$gw || fail "cannot load $gw's enclaves"
	i=$((i + 1))
done
for gw in $GATEWAYS; do
	agent_start $gw --etcd "$(etcd_url)" --lease-ttl $TTL >/dev/null
done
for gw in $GATEWAYS; do
	wait_enclaves $gw $((PER_GATEWAY * 3)) "first exchange of $PER_GATEWAY enclaves per gateway, complete at $gw"
done

$BENCH propagation --from gw-a --to gw-b 10.11.0.0 $CHANGES --rate $RATE

extra=$((LATE - PER_GATEWAY * 3))
if [ $extra -gt 0 ]; then
	{
		cat /tmp/agent-bench-gw-a
		$BENCH gen 10.4.0.0 $extra
	} >/tmp/agent-bench-gw-a-grown
	in_gw gw-a $SENG restore /tmp/agent-bench-gw-a-grown || fail "cannot grow gw-a's part"
	# At both peers, so that the late join does not share the CPU with one still applying them.
	for gw in gw-b gw-c; do
		wait_enclaves $gw $LATE "gw-a's $extra new enclaves published and applied at $gw"
	done
fi
# CPU ticks (100 a second) of every process (kernel threads too), of interrupts and softirqs,
# and idle: where the late join's time went.
cpu_ticks() {
	agents=" $(for gw in $GATEWAYS; do printf '%s ' "$(agent_pid $gw)"; done)"
	for stat in /proc/[0-9]*/stat; do
		pid=${stat#/proc/}
		case $agents in *" ${pid%/stat} "*) continue ;; esac
		awk '{ sub(/^[0-9]+ \(/, ""); name = $0; sub(/\) .*/, "", name); sub(/^.*\) /, "")
			print name, $12 + $13 }' "$stat" 2>/dev/null
	done
	for gw in $GATEWAYS; do awk -v gw=$gw '{ sub(/^.*\) /, ""); print "agent-" gw, $12 + $13 }' /proc/$(agent_pid $gw)/stat; done
	awk '$1 == "cpu" { print "irq+softirq", $6 + $7 + $8; print "idle", $5 }' /proc/stat
}
# The agents still digest the last burst after their tables are complete (gw-a its own
# writes, echoed by its watch): the late join starts once they are idle (together under 3% of
# the CPU), or after 30 s.
agents_ticks() { for gw in $GATEWAYS; do awk '{ sub(/^.*\) /, ""); print $12 + $13 }' /proc/$(agent_pid $gw)/stat; done | awk '{ s += $1 } END { print s }'; }
t0=$(uptime_cs)
last=$(agents_ticks)
idle="not idle"
for _ in $(seq 30); do
	sleep 1
	now=$(agents_ticks)
	[ $((now - last)) -lt 3 ] && idle=idle && break
	last=$now
done
echo "agents $idle after $(seconds_since "$t0")"
cpu_ticks >/tmp/agent-bench-cpu-before
$BENCH late-join --netns gw-late --expect $LATE -- \
	$SENG agent --name gw-late --netns gw-late --etcd "$(etcd_url)" --lease-ttl $TTL \
	--status-file $AGENT_DIR/gw-late.status 2>>$AGENT_DIR/gw-late.log ||
	{ echo "late join failed:"; tail -n 5 $AGENT_DIR/gw-late.log; }
cpu_ticks >/tmp/agent-bench-cpu-after
echo "late join: CPU time meanwhile (s): $(awk 'NR == FNR { before[$1] += $2; next } { after[$1] += $2 }
	END { for (n in after) if (after[n] - before[n] > 0) printf "%s %.2f\n", n, (after[n] - before[n]) / 100 }' \
	/tmp/agent-bench-cpu-before /tmp/agent-bench-cpu-after | sort -k2 -rn | head -n 6 | tr '\n' ',' | sed 's/,$//; s/,/, /g')"
echo "agent memory (VmRSS): $(for gw in $GATEWAYS; do printf '%s %s kB  ' $gw "$(awk '/^VmRSS/ { print $2 }' /proc/$(agent_pid $gw)/status)"; done)"
echo "etcd memory (VmRSS): $(awk '/^VmRSS/ { print $2 }' /proc/$ETCD_PID/status) kB"
