# SPDX-License-Identifier: GPL-2.0-only
# Real programs' traffic, captured afresh (vmtest/e2e/capture.sh), replays through the kernel
# exactly as seng-sim predicts under both iptables backends; the captures go back to the host
# (target/vmtest/<release>/files/real-*), where vmtest/e2e/update-captures.sh commits them.
. /vmtest/lib.sh
. /vmtest/e2e/e2e.sh
. /vmtest/e2e/capture.sh

fresh=/tmp/e2e-capture
cap_setup
for session in tcp udp icmp; do
	cap_session $session $fresh/real-$session
	export_file $fresh/real-$session/capture.pcap real-$session.pcap
	export_file $fresh/real-$session/enclaves.txt real-$session.enclaves.txt
done
cap_teardown

# What each session must have recorded (tcpdump filters, at least one packet each).
expect() {
	n=$(/usr/bin/tcpdump -Z root -r "$fresh/real-$1/capture.pcap" -n "$2" 2>/dev/null | wc -l)
	[ "$n" -gt 0 ] || fail "real-$1: no packet in the capture matches '$2'"
}
expect tcp 'tcp[tcpflags] & tcp-syn != 0 and dst port 8080'
expect tcp 'ip6 and tcp and dst port 8080'
expect tcp 'tcp and dst host 198.51.100.7'
expect tcp 'tcp and src host 198.51.100.7 and dst port 4711'
expect tcp 'tcp and src host 192.168.28.1 and dst port 4711'
expect tcp 'tcp[tcpflags] & tcp-rst != 0 and src host 192.168.28.1'
expect tcp 'tcp and dst port 7777'
expect udp 'udp and dst port 7 and dst host 192.168.28.1'
expect udp 'ip6 and udp and dst port 7'
expect udp 'udp and dst host 198.51.100.7'
expect udp 'udp and src host 192.168.28.1 and dst port 5353'
expect udp 'icmp[icmptype] == icmp-unreach and src host 192.168.28.1'
expect udp 'icmp[icmptype] == icmp-timxceed'
expect icmp 'icmp[icmptype] == icmp-echo and dst host 192.168.28.1'
expect icmp 'icmp[icmptype] == icmp-echoreply and src host 198.51.100.7'
expect icmp 'icmp6 and ip6[40] == 128'
expect icmp 'icmp[icmptype] == icmp-echo and src host 192.168.28.1'
expect icmp 'icmp[icmptype] == icmp-timxceed'

e2e_kernel
for session in tcp udp icmp; do
	backends=$IPTABLES_BACKENDS
	# A light run replays each capture under one backend, the two taking turns.
	if light; then
		case $session in udp) backends=nft ;; *) backends=legacy ;; esac
	fi
	for backend in $backends; do
		e2e_run $fresh/real-$session "$backend"
	done
done
e2e_finish
