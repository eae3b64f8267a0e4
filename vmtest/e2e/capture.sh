# SPDX-License-Identifier: GPL-2.0-only
# Captures real programs' traffic on a SENG gateway for the real-* scenarios (busybox sh in the
# test VM; source after /vmtest/lib.sh). Nothing is synthesized: busybox wget, httpd, nc, ping,
# traceroute and nslookup, and `inject udp-echo` (plain kernel UDP sockets), talk through the
# kernel, and tcpdump records what crosses tunFA. Source after /vmtest/lib.sh and e2e.sh.
#
# The network, as on a SENG gateway: the root namespace is the gateway, with tunFA
# (192.168.28.1/24, fd00:28::1/64) and eth0 (no address, default routes) as seng-sim assumes.
# Namespace `enclave` (192.168.28.10, fd00:28::10) sits behind tunFA, namespace `web`
# (198.51.100.7, 2001:db8:100::7) behind eth0. Each link is a pair of tun devices joined by
# `inject relay`, as the SENG server's tunnel joins tunFA to an enclave: point-to-point, no
# neighbour discovery, and checksums complete in the capture (tun does no offloading).
#
# A session runs its traffic in three phases; in each pause between them the gateway sends a
# marker datagram to the enclave's port 9. The scenario's `enclaves.in` times its events
# `@mark1`, `@mark2`, which `seng-e2e place-events` turns into the markers' times in the capture
# at hand, so the events fall between the phases however long each phase took.

CAP_ENCLAVE="$IP netns exec enclave"
CAP_WEB="$IP netns exec web"
CAP_PIDS=

# cap_bg CMD...: runs CMD in the background and remembers it for cap_teardown.
cap_bg() {
	"$@" >/dev/null 2>&1 &
	CAP_PIDS="$CAP_PIDS $!"
}

cap_carrier() {
	[ "$(cat "/sys/class/net/$1/carrier" 2>/dev/null)" = 1 ]
}

# cap_setup: builds the gateway, the two namespaces and the links, and starts the servers.
cap_setup() {
	run $MODPROBE tun
	e2e_forwarding
	for dev in tunFA tunE eth0 tunW; do
		run $IP tuntap add dev $dev mode tun
		run $IP link set dev $dev addrgenmode none
		run $IP link set dev $dev up
	done
	cap_bg $INJECT relay tunFA tunE
	cap_bg $INJECT relay eth0 tunW
	for dev in tunFA tunE eth0 tunW; do
		retry 50 cap_carrier $dev || fail "$dev has no carrier: the relay did not attach"
	done
	run $IP netns add enclave
	run $IP netns add web
	run $IP link set tunE netns enclave
	run $IP link set tunW netns web

	run $IP addr add 192.168.28.1/24 brd + dev tunFA
	run $IP -6 addr add fd00:28::1/64 nodad dev tunFA
	run $IP -4 route add default dev eth0
	run $IP -6 route add default dev eth0
	# Hosts without link-local addresses (addrgenmode none) solicit no routers and, not being
	# routers, join no all-routers group: no MLD or ND traffic crosses tunFA.
	for ns in enclave web; do
		run $IP -n $ns link set lo up
	done
	run $IP -n enclave link set dev tunE addrgenmode none
	run $IP -n enclave addr add 192.168.28.10/24 dev tunE
	run $IP -n enclave -6 addr add fd00:28::10/64 nodad dev tunE
	run $IP -n enclave link set dev tunE up
	run $IP -n enclave -4 route add default dev tunE
	run $IP -n enclave -6 route add default dev tunE
	run $IP -n web link set dev tunW addrgenmode none
	run $IP -n web addr add 198.51.100.7/24 dev tunW
	run $IP -n web -6 addr add 2001:db8:100::7/64 nodad dev tunW
	run $IP -n web link set dev tunW up
	run $IP -n web -4 route add default dev tunW
	run $IP -n web -6 route add default dev tunW

	mkdir -p /tmp/www
	echo "hello from a SENG gateway test" >/tmp/www/hello.txt
	cap_bg httpd -f -p 8080 -h /tmp/www
	cap_bg $CAP_ENCLAVE httpd -f -p 4711 -h /tmp/www
	cap_bg $CAP_WEB httpd -f -p 80 -h /tmp/www
	cap_bg $INJECT udp-echo --listen "[::]:7"
	cap_bg $CAP_WEB $INJECT udp-echo --listen "[::]:7"
	cap_bg $CAP_ENCLAVE $INJECT udp-echo --listen "[::]:5353"
	# The servers need a moment to listen; the network is checked end to end meanwhile.
	retry 50 $CAP_ENCLAVE ping -c 1 -W 1 198.51.100.7 >/dev/null || fail "the enclave cannot reach the web through the gateway"
	retry 50 $CAP_ENCLAVE wget -q -O /dev/null http://192.168.28.1:8080/hello.txt || fail "the gateway's httpd does not answer"
}

# cap_teardown: stops everything cap_setup started and removes the network.
cap_teardown() {
	for pid in $CAP_PIDS; do
		kill "$pid" 2>/dev/null
	done
	for pid in $CAP_PIDS; do
		wait "$pid" 2>/dev/null
	done
	CAP_PIDS=
	$IP netns del enclave 2>/dev/null
	$IP netns del web 2>/dev/null
	for dev in tunFA eth0; do
		$IP link del $dev 2>/dev/null
	done
}

# cap_record FILE CMD...: runs CMD while tcpdump writes what crosses tunFA to FILE.
cap_record() {
	file=$1
	shift
	/usr/bin/tcpdump -i tunFA -s 0 -U -n -Z root -w "$file" 2>"$file.log" &
	dump=$!
	listening() { grep -q "listening on" "$file.log"; }
	retry 100 listening || fail "tcpdump did not start: $(cat "$file.log")"
	"$@"
	# Let the last answers arrive before the capture ends.
	sleep 0.5
	kill -INT $dump
	wait $dump
	cat "$file.log"
}

# cap_pause: a pause between phases, with its marker datagram in the middle.
cap_pause() {
	sleep 0.6
	ok $INJECT udp-echo --to 192.168.28.10:9 --count 1 --interval-ms 0
	sleep 0.6
}

# Ignore failures of single exchanges: a refused connection or a timeout is traffic too.
ok() { "$@" >/dev/null 2>&1 || true; }

# TCP: HTTP to the gateway (IPv4 and IPv6), through it to the web and from the web back in,
# the gateway's own requests to the enclave, a refused connection, and one nc connection open
# through all three phases.
session_tcp() {
	cap_bg nc -l -p 7777
	sleep 0.2
	(
		echo "phase one"
		sleep 2.5
		echo "phase two"
		sleep 2
		echo "phase three"
	) | $CAP_ENCLAVE nc 192.168.28.1 7777 >/dev/null 2>&1 &
	client=$!
	for phase in 1 2 3; do
		ok $CAP_ENCLAVE wget -q -O /dev/null http://192.168.28.1:8080/hello.txt
		ok $CAP_ENCLAVE wget -q -O /dev/null "http://[fd00:28::1]:8080/hello.txt"
		ok $CAP_ENCLAVE wget -q -O /dev/null http://198.51.100.7/hello.txt
		ok $CAP_WEB wget -q -O /dev/null http://192.168.28.10:4711/hello.txt
		ok wget -q -O /dev/null http://192.168.28.10:4711/hello.txt
		ok $CAP_ENCLAVE wget -q -O /dev/null http://192.168.28.1:9/
		[ $phase = 3 ] || cap_pause
	done
	wait $client
}

# UDP: echoes with the gateway (both ways, IPv4 and IPv6) and through it with the web, a DNS
# query to a gateway without a DNS server (port unreachable), and a traceroute through the
# gateway (time exceeded from the gateway, port unreachable from the web).
session_udp() {
	for phase in 1 2 3; do
		ok $CAP_ENCLAVE $INJECT udp-echo --to 192.168.28.1:7 --count 2 --interval-ms 50
		ok $CAP_ENCLAVE $INJECT udp-echo --to "[fd00:28::1]:7" --count 2 --interval-ms 50
		ok $CAP_ENCLAVE $INJECT udp-echo --to 198.51.100.7:7 --count 2 --interval-ms 50
		ok $CAP_ENCLAVE $INJECT udp-echo --to "[2001:db8:100::7]:7" --count 1
		ok $INJECT udp-echo --to 192.168.28.10:5353 --count 2 --interval-ms 50
		ok $CAP_ENCLAVE nslookup seng.example 192.168.28.1
		[ $phase = 2 ] && ok $CAP_ENCLAVE traceroute -n -q 1 -w 1 -m 2 198.51.100.7
		[ $phase = 3 ] || cap_pause
	done
}

# ICMP: pings to and through the gateway (IPv4 and IPv6), from the gateway, one with a TTL
# that expires at the gateway, and a slow ping running through all three phases.
session_icmp() {
	$CAP_ENCLAVE ping -c 8 -i 0.6 192.168.28.1 >/dev/null 2>&1 &
	slow=$!
	for phase in 1 2 3; do
		ok $CAP_ENCLAVE ping -c 2 -i 0.2 192.168.28.1
		ok $CAP_ENCLAVE ping -c 1 198.51.100.7
		ok $CAP_ENCLAVE ping6 -c 2 -i 0.2 fd00:28::1
		ok $CAP_ENCLAVE ping6 -c 1 2001:db8:100::7
		ok ping -c 2 -i 0.2 192.168.28.10
		ok ping6 -c 1 fd00:28::10
		[ $phase = 2 ] && ok $CAP_ENCLAVE ping -c 1 -W 1 -t 1 198.51.100.7
		[ $phase = 3 ] || cap_pause
	done
	wait $slow
}

# cap_session NAME DIR: records session NAME (tcp, udp, icmp) into DIR/capture.pcap and places
# the events of /vmtest/scenarios/real-NAME/enclaves.in into DIR/enclaves.txt.
cap_session() {
	mkdir -p "$2"
	cap_record "$2/capture.pcap" session_$1
	OUT=$($E2E place-events "$2/capture.pcap" "$SCENARIOS/real-$1/enclaves.in" 2>&1) || fail "placing the events of real-$1: $OUT"
	printf '%s\n' "$OUT" >"$2/enclaves.txt"
	cp "$SCENARIOS/real-$1/rules.txt" "$2/rules.txt"
}
