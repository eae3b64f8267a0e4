// SPDX-License-Identifier: GPL-2.0-only
//! The synthetic captures of the corpus in `vmtest/scenarios/`, one generator per scenario.
//! Each tells a story against that scenario's hand-written `rules.txt` and `enclaves.txt`
//! (read those for the why); the comments here say which traffic plays which part.
//!
//! Output is deterministic: `seng-e2e gen --all vmtest/scenarios` rewrites the committed
//! captures byte for byte (a unit test checks they are current), and the large scenario,
//! which is not committed, is generated in the guest the same way every run.

use std::fmt::Write as _;

use seng_sim::gen::Rng;
use seng_sim::packet::tcp_flag::{ACK, FIN, RST, SYN};

use crate::story::{between, Story, Tcp};

const GW: &str = "192.168.28.1";
const GW6: &str = "fd00:28::1";
/// Hosts beyond eth0.
const WEB: &str = "198.51.100.7";
const WEB6: &str = "2001:db8:100::7";
/// The gateway's public addresses on eth0 (the NAT scenarios' sim-args).
const PUBLIC: &str = "203.0.113.1";
const PUBLIC6: &str = "2001:db8::1";

/// A generated file of a scenario.
pub struct File {
    /// Its name in the scenario directory.
    pub name: &'static str,
    /// Its content.
    pub data: Vec<u8>,
    /// Committed to git (small) or made at test time (large).
    pub committed: bool,
}

/// The generated scenarios, by name.
pub const GENERATED: &[&str] = &[
    "negated-options",
    "categories",
    "reassign",
    "unregistered",
    "ipv6",
    "user-chains",
    "ctstate",
    "output-forward",
    "edge-cases",
    "nat-masquerade",
    "nat-dnat",
    "nat-clash",
    "mangle-marks",
    "raw-notrack",
    "fragments",
    "large",
];

/// The files of scenario `name`.
pub fn generate(name: &str) -> Option<Vec<File>> {
    let capture = |story: Story| {
        vec![File {
            name: "capture.pcap",
            data: story.pcap(),
            committed: true,
        }]
    };
    Some(match name {
        "negated-options" => capture(negated_options()),
        "categories" => capture(categories()),
        "reassign" => capture(reassign()),
        "unregistered" => capture(unregistered()),
        "ipv6" => capture(ipv6()),
        "user-chains" => capture(user_chains()),
        "ctstate" => capture(ctstate()),
        "output-forward" => capture(output_forward()),
        "edge-cases" => capture(edge_cases()),
        "nat-masquerade" => capture(nat_masquerade()),
        "nat-dnat" => capture(nat_dnat()),
        "nat-clash" => capture(nat_clash()),
        "mangle-marks" => capture(mangle_marks()),
        "raw-notrack" => capture(raw_notrack()),
        "fragments" => capture(fragments()),
        "large" => large(100_000, 10_000),
        _ => return None,
    })
}

/// Enclaves out through MASQUERADE: the web answers the public address, the gateway forwards
/// the answers to the enclave.
fn nat_masquerade() -> Story {
    let mut s = Story::default();
    let e10 = "192.168.28.10";
    // .10 (app A) browses; the server answers 203.0.113.1, the source port kept.
    let mut web = Tcp::new(e10, 40100, WEB, 443).translated(PUBLIC, 40100, WEB, 443);
    web.exchange(&mut s, 100);
    // A DNS query and its answer; a second query answered by an ICMP error about it.
    let out = between(e10, WEB);
    let back = between(WEB, PUBLIC);
    s.at(200, out.udp(5001, 53, b"query"));
    s.at(201, back.udp(53, 5001, b"answer"));
    s.at(210, out.udp(5002, 53, b"query"));
    s.at(211, back.icmp_error(3, 3, &between(PUBLIC, WEB).udp(5002, 53, b"query")));
    // A ping: the echo identifier is kept as well.
    s.at(300, out.icmp_echo(true, 77, 1));
    s.at(301, back.icmp_echo(false, 77, 1));
    // .11 (app B) is not forwarded, so not masqueraded: the "answer" is the gateway's own.
    s.at(400, between("192.168.28.11", WEB).udp(5003, 53, b"query"));
    s.at(401, back.udp(53, 5003, b"answer"));
    // IPv6, masqueraded to 2001:db8::1.
    let mut web6 = Tcp::new("fd00:28::10", 40200, WEB6, 443).translated(PUBLIC6, 40200, WEB6, 443);
    web6.exchange(&mut s, 600);
    // A connection open across @1 (.10 unregistered): its entry goes, so the server's next
    // segment is not de-NATed and reaches the gateway itself.
    let mut cut = Tcp::new(e10, 40300, WEB, 443).translated(PUBLIC, 40300, WEB, 443);
    s.at(900, cut.syn());
    s.at(901, cut.syn_ack());
    s.at(902, cut.ack(true));
    s.at(1100, cut.data(false, b"late"));
    s
}

/// A public port forwarded to an enclave server, a forwarded port range, a REDIRECT, the
/// server's own SNATed connection, IPv6 DNAT, and a forwarded connection cut by @1.
fn nat_dnat() -> Story {
    let mut s = Story::default();
    let (e20, e21) = ("192.168.28.20", "192.168.28.21");
    // The web reaches .20:80 (app A) through 203.0.113.1:8080.
    let mut web = Tcp::new(WEB, 45000, PUBLIC, 8080).translated(WEB, 45000, e20, 80);
    web.exchange(&mut s, 100);
    // A port of the forwarded range reaches .21 (app B), port kept; the answer leaves from the
    // public address.
    s.at(200, between(WEB, PUBLIC).udp(6000, 5005, b"hello"));
    s.at(201, between(e21, WEB).udp(5005, 6000, b"hello back"));
    // A port that is not forwarded is the gateway's, and INPUT drops it.
    s.at(250, Tcp::new(WEB, 45001, PUBLIC, 22).syn());
    // .10 (app A) to port 8081 anywhere is redirected to the gateway's 8391.
    s.at(300, Tcp::new("192.168.28.10", 45002, WEB, 8081).syn());
    // The server's own connection out, SNATed to the public address.
    let mut out = Tcp::new(e20, 45003, WEB, 443).translated(PUBLIC, 45003, WEB, 443);
    out.exchange(&mut s, 400);
    // IPv6: [2001:db8::1]:8080 forwarded to [fd00:28::20]:80.
    let mut web6 = Tcp::new(WEB6, 45004, PUBLIC6, 8080).translated(WEB6, 45004, "fd00:28::20", 80);
    web6.exchange(&mut s, 500);
    // Open across @1 (.20 unregistered): the client's next segment is a new connection, DNATed
    // afresh, which FORWARD no longer admits.
    let mut cut = Tcp::new(WEB, 45005, PUBLIC, 8080).translated(WEB, 45005, e20, 80);
    s.at(900, cut.syn());
    s.at(901, cut.syn_ack());
    s.at(902, cut.ack(true));
    s.at(1100, cut.data(true, b"after"));
    s
}

/// Connections NAT gives a tuple another connection holds: a single SNAT port taken (UDP and
/// TCP), dropped at confirmation after FORWARD counted them, and the gateway's own packet whose
/// reply tuple a DNATed connection holds, whose null binding moves its source port so that the
/// DNATed connection keeps its next packet.
fn nat_clash() -> Story {
    let mut s = Story::default();
    let (e10, e11, outside) = ("192.168.28.10", "192.168.28.11", "198.51.100.8");
    // .10 takes 203.0.113.1:4000; .11's query from the same port gets no free tuple.
    s.at(100, between(e10, WEB).udp(5000, 53, b"first query"));
    s.at(101, between(e11, WEB).udp(5000, 53, b"second query"));
    s.at(102, between(WEB, PUBLIC).udp(53, 4000, b"answer"));
    // The same with TCP on 203.0.113.1:4001: the server answers .10's SYN only.
    let mut first = Tcp::new(e10, 5001, WEB, 443).translated(PUBLIC, 4001, WEB, 443);
    let mut second = Tcp::new(e11, 5002, WEB, 443);
    s.at(200, first.syn());
    s.at(201, second.syn());
    s.at(202, first.syn_ack());
    s.at(203, first.ack(true));
    // The outside reaches 203.0.113.1:80, DNATed to the web server; before any answer the
    // gateway itself sends from port 80 to the client's port, a tuple whose reply the DNATed
    // connection holds. The client's next segment stays in the DNATed connection.
    let mut hairpin = Tcp::new(outside, 30133, PUBLIC, 80);
    s.at(300, hairpin.syn());
    s.at(301, between(PUBLIC, outside).udp(80, 30133, b"not tcp"));
    s.at(302, Tcp::new(PUBLIC, 80, outside, 30133).syn());
    s.at(303, hairpin.data(true, b"request"));
    s
}

/// Marked traffic: by app and category in mangle, restored onto replies from the connection.
fn mangle_marks() -> Story {
    let mut s = Story::default();
    let (e10, e11) = ("192.168.28.10", "192.168.28.11");
    // .10 (app A): 0x10000, forwarded by the packet mark, the answers by the restored mark.
    let mut web = Tcp::new(e10, 47000, WEB, 443);
    web.exchange(&mut s, 100);
    // .11 (app B, Printer): only 0x20000, not forwarded.
    s.at(200, between(e11, WEB).udp(5000, 631, b"print?"));
    // To the gateway: .10 has the 0x10000 bit, .11 not.
    s.at(400, between(e10, GW).udp(5002, 53, b"q"));
    s.at(401, between(e11, GW).udp(5003, 53, b"q"));
    // The web out of the blue: no connection mark to restore.
    s.at(500, between(WEB, e10).udp(631, 5009, b"hi"));
    // IPv6: 0x40000 saved and restored.
    let mut web6 = Tcp::new("fd00:28::10", 47001, WEB6, 443);
    web6.exchange(&mut s, 600);
    s.at(700, between(WEB6, "fd00:28::10").udp(53, 5010, b"unasked"));
    // @1 Printer joins app A (its connections end): .10's next connection is 0x30000 both
    // ways.
    s.at(1100, between(e10, WEB).udp(5004, 631, b"print!"));
    s.at(1101, between(WEB, e10).udp(631, 5004, b"printed"));
    s
}

/// DNS untracked to, from and through the gateway, the rest tracked and masqueraded.
fn raw_notrack() -> Story {
    let mut s = Story::default();
    let (e10, e11) = ("192.168.28.10", "192.168.28.11");
    // The gateway's resolver: untracked both ways.
    s.at(100, between(e10, GW).udp(5353, 53, b"q"));
    s.at(101, between(GW, e10).udp(53, 5353, b"a"));
    s.at(110, between(e11, GW).udp(5354, 53, b"q"));
    // DNS through the gateway: untracked, so not masqueraded; the answer comes to .10 itself.
    s.at(200, between(e10, WEB).udp(5355, 53, b"q"));
    s.at(201, between(WEB, e10).udp(53, 5355, b"a"));
    // HTTPS: tracked, masqueraded.
    let mut web = Tcp::new(e10, 48000, WEB, 443).translated(PUBLIC, 48000, WEB, 443);
    web.exchange(&mut s, 300);
    // A ping: masqueraded out, but the echo reply is untracked in raw, so it is not de-NATed.
    s.at(400, between(e10, WEB).icmp_echo(true, 9, 1));
    s.at(401, between(WEB, PUBLIC).icmp_echo(false, 9, 1));
    // After @1 (.11 unregistered) its DNS through the gateway is still untracked, forwarded.
    s.at(1100, between(e11, WEB).udp(5356, 53, b"q"));
    // IPv6: untracked DNS to the gateway, a tracked SYN.
    s.at(1200, between("fd00:28::10", GW6).udp(5357, 53, b"q"));
    s.at(1201, Tcp::new("fd00:28::10", 48001, GW6, 22).syn());
    s
}

/// `packets` (one fragment each) from `ms` on, one millisecond apart.
fn sent(s: &mut Story, ms: u64, packets: Vec<Vec<u8>>) {
    for (i, p) in packets.into_iter().enumerate() {
        s.at(ms + i as u64, p);
    }
}

/// `datagram` cut every `size` bytes of its data into fragments of identification `id`, sent
/// in `order` (indices; a missing one is never sent, a repeated one is a duplicate).
fn cut(datagram: &[u8], id: u32, size: usize, unfragmentable: usize, order: &[usize]) -> Vec<Vec<u8>> {
    let head = if datagram[0] >> 4 == 4 { 20 } else { 40 + unfragmentable };
    let cuts: Vec<usize> = (1..).map(|i| i * size).take_while(|c| *c < datagram.len() - head).collect();
    let pieces = seng_sim::gen::fragments(datagram, id, &cuts, unfragmentable);
    order.iter().map(|i| pieces[*i].clone()).collect()
}

fn fragments() -> Story {
    let mut s = Story::default();
    let (e10, e11, e90) = ("192.168.28.10", "192.168.28.11", "192.168.28.90");
    let query = |from: &str, to: &str, sport: u16| between(from, to).udp(sport, 53, &[b'q'; 40]);
    // To the gateway, in order and out of order: counted once each, whole, by the seng rule.
    sent(&mut s, 100, cut(&query(e10, GW, 5000), 1, 16, 0, &[0, 1, 2]));
    sent(&mut s, 200, cut(&query(e10, GW, 5001), 2, 16, 0, &[2, 0, 1]));
    // An unregistered source: counted by the plain UDP rule.
    sent(&mut s, 300, cut(&query(e90, GW, 5002), 3, 24, 0, &[1, 0]));
    // A duplicate before the datagram completes: dropped, the datagram counted once.
    sent(&mut s, 400, cut(&query(e10, GW, 5003), 4, 16, 0, &[0, 2, 0, 1]));
    // Incomplete: its fragments are held, never counted, not even by the -f rule.
    sent(&mut s, 500, cut(&query(e10, GW, 5004), 5, 16, 0, &[0, 2]));
    // Through the gateway: forwarded whole (and sent on as the fragments it came as), answered
    // unfragmented (ESTABLISHED).
    sent(&mut s, 600, cut(&between(e10, WEB).udp(5005, 443, &[b'u'; 60]), 6, 24, 0, &[1, 2, 0]));
    s.at(610, between(WEB, e10).udp(443, 5005, b"answer"));
    let ping = between(e10, WEB).build(seng_sim::gen::Transport::Icmp { kind: 8, code: 0, rest: [0, 7, 0, 1], data: &[b'p'; 40] });
    sent(&mut s, 700, cut(&ping, 7, 24, 0, &[0, 1]));
    s.at(710, between(WEB, e10).icmp_echo(false, 7, 1));
    // Its first fragment before .11's unregistration at @1 (1.1 s here), its last after: the
    // datagram is evaluated when it completes, from an unregistered address.
    s.at(1090, cut(&query(e11, GW, 5006), 8, 24, 0, &[0]).remove(0));
    s.at(1110, cut(&query(e11, GW, 5006), 8, 24, 0, &[1]).remove(0));
    // IPv6: out of order to the gateway, a hop-by-hop header before the fragment header,
    // through the gateway with an answer.
    sent(&mut s, 1200, cut(&query("fd00:28::10", GW6, 5007), 0x10000, 16, 0, &[1, 2, 0]));
    let mut echo = between("fd00:28::10", GW6).build(seng_sim::gen::Transport::Icmp { kind: 128, code: 0, rest: [0, 8, 0, 1], data: &[b'p'; 40] });
    echo.splice(40..40, [58, 0, 1, 4, 0, 0, 0, 0]);
    echo[6] = 0;
    let payload = (echo.len() - 40) as u16;
    echo[4..6].copy_from_slice(&payload.to_be_bytes());
    sent(&mut s, 1300, cut(&echo, 0x10001, 24, 8, &[1, 0]));
    sent(&mut s, 1400, cut(&between("fd00:28::10", WEB6).udp(5008, 443, &[b'u'; 60]), 0x10002, 32, 0, &[0, 2, 1]));
    s.at(1410, between(WEB6, "fd00:28::10").udp(443, 5008, b"answer"));
    // IPv6 incomplete.
    sent(&mut s, 1500, cut(&query("fd00:28::12", GW6, 5009), 0x10003, 16, 0, &[2]));
    // IPv6 through the gateway with a short last fragment: 64 and 49 bytes make a datagram of
    // 57, no longer than its longest fragment, so it leaves whole (random seed 740 on 6.1).
    sent(&mut s, 1600, cut(&between("fd00:28::10", WEB6).udp(5010, 443, &[b'u'; 9]), 0x10004, 16, 0, &[0, 1]));
    s
}

/// UDP from every kind of address in every direction: registered enclaves of three apps, one
/// unregistered address, the gateway and a host beyond eth0, so that each negated option meets
/// registered and unregistered sources and destinations.
fn negated_options() -> Story {
    let mut s = Story::default();
    let enclaves = [
        "192.168.28.10",
        "192.168.28.11",
        "192.168.28.12",
        "192.168.28.99",
    ];
    let mut ms = 0;
    for (i, e) in enclaves.iter().enumerate() {
        let port = 5000 + i as u16;
        s.at(ms, between(e, GW).udp(port, 53, b"to the gateway"));
        s.at(ms + 1, between(GW, e).udp(port, 6000, b"from the gateway"));
        s.at(ms + 2, between(e, WEB).udp(port, 443, b"out"));
        s.at(ms + 3, between(WEB, e).udp(443, port + 100, b"in"));
        let peer = enclaves[(i + 1) % enclaves.len()];
        s.at(
            ms + 4,
            between(e, peer).udp(port, 7000, b"enclave to enclave"),
        );
        let mut t = Tcp::new(e, 40000 + i as u16, GW, 443);
        ms = t.exchange(&mut s, ms + 5) + 10;
    }
    s
}

/// Categories come and go while connections are open: a category change ends the connections of
/// the application's enclaves, so no connection outlives the category that admitted it.
fn categories() -> Story {
    let mut s = Story::default();
    let (e10, e11, e20) = ("192.168.28.10", "192.168.28.11", "192.168.28.20");
    // Before @1: .10 has no category yet, its SYN and the retransmission are dropped.
    let mut early = Tcp::new(e10, 41000, GW, 443);
    let syn = early.syn();
    s.at(100, syn.clone());
    s.at(600, syn);
    // .20 (DNS) asks at 0.2 s: admitted, the answer goes out.
    s.at(200, between(e20, GW).udp(5353, 53, b"query"));
    s.at(201, between(GW, e20).udp(53, 5353, b"answer"));
    // @1 Browser attached to app A: .10 connects and keeps talking past @2.
    let mut kept = Tcp::new(e10, 41001, GW, 443);
    for (ms, p) in [
        (1100, kept.syn()),
        (1101, kept.syn_ack()),
        (1102, kept.ack(true)),
        (1500, kept.data(true, b"before")),
        (1501, kept.ack(false)),
    ] {
        s.at(ms, p);
    }
    // .11 shares app A: forwarded to the web as a Browser, its answer established.
    let mut web = Tcp::new(e11, 41002, WEB, 443);
    for (ms, p) in [
        (1200, web.syn()),
        (1210, web.syn_ack()),
        (1211, web.ack(true)),
    ] {
        s.at(ms, p);
    }
    // The gateway writes to .10 while it is a Browser, and after.
    s.at(1600, between(GW, e10).udp(123, 123, b"time"));
    // @2 Browser detached: the change ends app A's connections, so the open one's next
    // segments are picked up mid-stream as NEW and dropped, as is a new one.
    for (ms, p) in [
        (2100, kept.data(true, b"after")),
        (2101, kept.ack(false)),
        (2150, kept.fin(true)),
        (2151, kept.fin(false)),
        (2152, kept.ack(true)),
    ] {
        s.at(ms, p);
    }
    s.at(2200, Tcp::new(e11, 41003, GW, 443).syn());
    s.at(2210, web.data(true, b"still forwarded"));
    s.at(2211, web.ack(false));
    s.at(2300, between(GW, e10).udp(123, 123, b"time again"));
    // @2.5 .20 re-registered with one more category, Browser: app B's categories changed, so its
    // DNS flow ends and is judged afresh (DNS still admits it); 443 now admits it.
    s.at(2600, between(e20, GW).udp(5353, 53, b"same flow"));
    s.at(2700, Tcp::new(e20, 41004, GW, 443).syn());
    // @3 DNS detached from app B: the old query flow ends with it and is dropped, as is a new one.
    s.at(3100, between(e20, GW).udp(5353, 53, b"old flow"));
    s.at(3101, between(GW, e20).udp(53, 5353, b"old answer"));
    s.at(3200, between(e20, GW).udp(5354, 53, b"new flow"));
    // @3.5 "Web Mail" attached to app A and Blocked to app C: .12 is dropped by name.
    s.at(3600, between("192.168.28.12", GW).udp(1, 9, b"blocked"));
    s.at(3700, Tcp::new(e11, 41005, GW, 443).syn());
    s
}

/// Addresses handed to other applications or hosts mid-connection: ESTABLISHED comes first in
/// the rules, yet after a reassignment the old connection's packets must be judged afresh.
fn reassign() -> Story {
    let mut s = Story::default();
    // .10 (app A) on 8391, cut at @1 when .10 becomes app B: the next segments are picked up
    // mid-stream as NEW and app A's rule no longer admits them.
    let mut a = Tcp::new("192.168.28.10", 42000, GW, 8391);
    for (ms, p) in [
        (100, a.syn()),
        (101, a.syn_ack()),
        (102, a.ack(true)),
        (500, a.data(true, b"as app A")),
        (501, a.ack(false)),
    ] {
        s.at(ms, p);
    }
    for (ms, p) in [
        (1100, a.data(true, b"as app B")),
        (1101, a.ack(false)),
        (1200, a.data(true, b"again")),
    ] {
        s.at(ms, p);
    }
    // .10 as app B may open 4711 now.
    let mut b = Tcp::new("192.168.28.10", 42001, GW, 4711);
    for (ms, p) in [(1300, b.syn()), (1301, b.syn_ack()), (1302, b.ack(true))] {
        s.at(ms, p);
    }
    // .10's forwarded connection, established as app A, is cut too: the web's answer arrives
    // from eth0 as NEW.
    let mut f = Tcp::new("192.168.28.10", 42002, WEB, 443);
    for (ms, p) in [
        (200, f.syn()),
        (210, f.syn_ack()),
        (211, f.ack(true)),
        (1150, f.data(false, b"late answer")),
        (1151, f.ack(true)),
    ] {
        s.at(ms, p);
    }
    // .11 (app A, host 10.0.0.6) sends UDP, admitted by host; @2 moves it to host 10.0.0.99.
    let u = between("192.168.28.11", GW);
    for ms in [300, 1800, 2100, 2200] {
        s.at(ms, u.udp(5000, 514, b"log line"));
        s.at(ms + 1, u.reverse().udp(514, 5000, b"ack"));
    }
    // .12 (app B) on 4711; @2.5 re-registers it unchanged with a category: nothing is cut.
    let mut c = Tcp::new("192.168.28.12", 42003, GW, 4711);
    for (ms, p) in [
        (400, c.syn()),
        (401, c.syn_ack()),
        (402, c.ack(true)),
        (2600, c.data(true, b"still here")),
        (2601, c.ack(false)),
    ] {
        s.at(ms, p);
    }
    // .13 unregistered at @3 and registered again at @3.5: in between its segment is NEW from
    // an unknown address; after, the pickup is admitted again by app A's rule.
    let mut d = Tcp::new("192.168.28.13", 42004, GW, 8391);
    for (ms, p) in [
        (450, d.syn()),
        (451, d.syn_ack()),
        (452, d.ack(true)),
        (3200, d.data(true, b"nobody")),
        (3700, d.data(true, b"back")),
    ] {
        s.at(ms, p);
    }
    s.at(3701, d.ack(false));
    // IPv6: fd00:28::10 moves from app A to app B at @3.2.
    let mut v6 = Tcp::new("fd00:28::10", 42005, GW6, 8391);
    for (ms, p) in [
        (600, v6.syn()),
        (601, v6.syn_ack()),
        (602, v6.ack(true)),
        (3300, v6.data(true, b"v6 after")),
        (3301, v6.ack(false)),
    ] {
        s.at(ms, p);
    }
    s
}

/// Every address of the enclave subnet that is not registered, next to registered ones, before
/// and after a flush.
fn unregistered() -> Story {
    let mut s = Story::default();
    let addresses = [
        "192.168.28.10",
        "192.168.28.11",
        "192.168.28.50",
        "192.168.28.51",
        "192.168.28.200",
        "192.168.28.254",
    ];
    for round in 0..5u64 {
        for (i, a) in addresses.iter().enumerate() {
            let ms = 200 + round * 500 + i as u64 * 10;
            s.at(
                ms,
                between(a, GW).udp(6000 + i as u16, 9000 + round as u16, b"hello"),
            );
            s.at(ms + 1, between(a, GW).tcp(6100 + i as u16, 22, SYN, b""));
            s.at(ms + 2, between(GW, a).udp(123, 123, b"from the gateway"));
            s.at(ms + 3, between(a, WEB).udp(6200 + i as u16, 53, b"out"));
        }
    }
    s
}

/// IPv6 enclaves with IPv6 hosts through ip6tables, next to an IPv4 enclave of the same app.
fn ipv6() -> Story {
    let mut s = Story::default();
    let (e10, e11, e12) = ("fd00:28::10", "fd00:28::11", "fd00:28::12");
    // Pings to the gateway from all three (echo requests are admitted before any seng rule).
    for (i, e) in [e10, e11, e12].iter().enumerate() {
        let b = between(e, GW6);
        s.at(100 + i as u64 * 10, b.icmp_echo(true, 7 + i as u16, 1));
        s.at(
            101 + i as u64 * 10,
            b.reverse().icmp_echo(false, 7 + i as u16, 1),
        );
    }
    // .10 is a Browser: 443 admitted; .11's host is outside 2001:db8:1::/48: dropped.
    let mut t10 = Tcp::new(e10, 43000, GW6, 443);
    t10.exchange(&mut s, 200);
    s.at(300, Tcp::new(e11, 43001, GW6, 443).syn());
    // UDP of app A (.10 and .12) admitted; app B (.11) dropped by host first.
    s.at(400, between(e10, GW6).udp(5000, 53, b"a"));
    s.at(401, between(e12, GW6).udp(5001, 53, b"a"));
    s.at(402, between(e11, GW6).udp(5002, 53, b"b"));
    // Forwarded: app B out to the web, answers established; app A not.
    let mut f = Tcp::new(e11, 43002, WEB6, 443);
    for (ms, p) in [(500, f.syn()), (510, f.syn_ack()), (511, f.ack(true))] {
        s.at(ms, p);
    }
    s.at(520, Tcp::new(e10, 43003, WEB6, 443).syn());
    // From the web to .10's ssh: admitted by destination app and host; to .12 (other host) not.
    s.at(600, Tcp::new(WEB6, 43004, e10, 22).syn());
    s.at(601, Tcp::new(WEB6, 43005, e12, 22).syn());
    // The gateway writes to Browsers (counted in OUTPUT).
    s.at(700, between(GW6, e10).udp(123, 123, b"t"));
    s.at(701, between(GW6, e11).udp(123, 123, b"t"));
    // The IPv4 enclave of app A, through iptables.
    s.at(800, between("192.168.28.10", GW).udp(5003, 53, b"v4"));
    s.at(
        801,
        between(GW, "192.168.28.10").udp(53, 5003, b"v4 answer"),
    );
    // @1 fd00:28::12 unregistered; @2 Browser detached from app A.
    s.at(1100, between(e12, GW6).udp(5004, 53, b"gone"));
    s.at(1200, Tcp::new(e10, 43006, GW6, 443).syn());
    s.at(2100, Tcp::new(e10, 43007, GW6, 443).syn());
    s.at(2200, between(GW6, e10).udp(123, 123, b"t"));
    // An ICMPv6 error from .10 about the gateway's UDP: RELATED.
    let quoted = between(GW6, e10).udp(123, 123, b"t");
    s.at(2201, between(e10, GW6).icmp_error(1, 4, &quoted));
    s
}

/// Traffic that walks jumps, gotos, RETURNs and policies of user chains.
fn user_chains() -> Story {
    let mut s = Story::default();
    let apps = [
        "192.168.28.10",
        "192.168.28.11",
        "192.168.28.12",
        "192.168.28.99",
    ];
    let mut ms = 100;
    for round in 0..3u16 {
        for (i, a) in apps.iter().enumerate() {
            let sport = 44000 + round * 10 + i as u16;
            s.at(ms, Tcp::new(a, sport, GW, 8391).syn());
            s.at(ms + 1, Tcp::new(a, sport + 100, GW, 443).syn());
            s.at(ms + 2, between(a, GW).udp(sport, 123, b"ntp"));
            s.at(ms + 3, between(a, GW).udp(sport, 9999, b"other"));
            s.at(ms + 4, between(a, GW).icmp_echo(true, sport, 1));
            s.at(ms + 5, between(GW, a).udp(53, sport, b"from the gateway"));
            s.at(ms + 6, between(a, WEB).udp(sport, 443, b"forwarded"));
            ms += 10;
        }
        // Events between rounds: @1 .11 becomes app A, @2 flush.
        ms = 1100 * (u64::from(round) + 1);
    }
    s
}

/// Connection states first: handshakes, mid-stream pickups, invalid flag combinations, stray
/// resets, ICMP errors related to flows both ways, and a registration cut in the middle.
fn ctstate() -> Story {
    let mut s = Story::default();
    let e10 = "192.168.28.10";
    // A full connection of app A.
    let mut t = Tcp::new(e10, 45000, GW, 8391);
    for (ms, p) in [
        (100, t.syn()),
        (101, t.syn_ack()),
        (102, t.ack(true)),
        (103, t.data(true, b"hi")),
        (104, t.ack(false)),
    ] {
        s.at(ms, p);
    }
    // Mid-stream ACK of a connection never seen: NEW for conntrack but no SYN.
    s.at(150, Tcp::new(e10, 45001, GW, 8391).ack(true));
    // Invalid flag combinations and a stray reset.
    s.at(160, Tcp::new(e10, 45002, GW, 8391).flags(true, SYN | FIN));
    s.at(161, Tcp::new(e10, 45003, GW, 8391).flags(true, SYN | RST));
    s.at(162, Tcp::new(e10, 45004, GW, 8391).flags(true, FIN));
    s.at(163, Tcp::new(e10, 45005, GW, 8391).rst(true));
    s.at(164, Tcp::new(e10, 45006, GW, 8391).flags(true, 0));
    // DNS from .11 (category DNS) and its answer; a second query to a closed port answered by
    // the gateway's port unreachable (RELATED in OUTPUT).
    let dns = between("192.168.28.11", GW);
    s.at(200, dns.udp(5300, 53, b"q"));
    s.at(201, dns.reverse().udp(53, 5300, b"a"));
    let closed = dns.udp(5301, 54, b"q");
    s.at(210, closed.clone());
    s.at(211, dns.reverse().icmp_error(3, 3, &closed));
    // The gateway asks .12 (app B) over UDP; .12 answers with port unreachable (RELATED in
    // INPUT); the gateway's question to .10 (app A) is dropped in OUTPUT.
    let ask = between(GW, "192.168.28.12");
    let question = ask.udp(5400, 161, b"get");
    s.at(300, question.clone());
    s.at(301, ask.reverse().icmp_error(3, 3, &question));
    s.at(310, between(GW, e10).udp(5401, 161, b"get"));
    // An ICMP error quoting nothing tracked: INVALID.
    s.at(
        320,
        between(e10, GW).icmp_error(3, 1, &between(GW, e10).udp(1, 2, b"never sent")),
    );
    // Pings from hosts inside and outside 10.0.0.0/24.
    s.at(400, between(e10, GW).icmp_echo(true, 1, 1));
    s.at(401, between(GW, e10).icmp_echo(false, 1, 1));
    s.at(410, between("192.168.28.13", GW).icmp_echo(true, 2, 1));
    // @1 .10 unregistered: its connection is cut; the next segment is a NEW pickup without SYN.
    s.at(1100, t.data(true, b"after the cut"));
    s.at(1101, t.ack(false));
    // @1.5 .10 registered again: a fresh SYN is admitted, closes cleanly, then a late ACK.
    let mut u = Tcp::new(e10, 45010, GW, 8391);
    for (ms, p) in [
        (1600, u.syn()),
        (1601, u.syn_ack()),
        (1602, u.ack(true)),
        (1603, u.fin(true)),
        (1604, u.fin(false)),
        (1605, u.ack(true)),
        (1606, u.ack(true)),
    ] {
        s.at(ms, p);
    }
    // A SYN reopening the closed connection.
    let mut again = Tcp::new(e10, 45010, GW, 8391);
    s.at(1700, again.syn());
    s.at(1701, again.syn_ack());
    s.at(1702, again.rst(true));
    s.at(1703, again.ack(true));
    s
}

/// The gateway's own connections to enclaves (OUTPUT) and traffic routed through it (FORWARD):
/// enclave to web, web to enclave, enclave to enclave.
fn output_forward() -> Story {
    let mut s = Story::default();
    // The gateway opens 4711 on .30 (app B, admitted) and on .10 (app A, not).
    let mut g30 = Tcp::new(GW, 50000, "192.168.28.30", 4711);
    g30.exchange(&mut s, 100);
    s.at(200, Tcp::new(GW, 50001, "192.168.28.10", 4711).syn());
    // Enclaves out to the web: app A admitted by source app, .99 (unregistered) not.
    let mut out10 = Tcp::new("192.168.28.10", 46000, WEB, 443);
    out10.exchange(&mut s, 300);
    s.at(400, Tcp::new("192.168.28.99", 46001, WEB, 443).syn());
    // The web to .30's service: admitted by destination category; to .10: not.
    let mut in30 = Tcp::new(WEB, 46002, "192.168.28.30", 8080);
    in30.exchange(&mut s, 500);
    s.at(600, Tcp::new(WEB, 46003, "192.168.28.10", 8080).syn());
    // Enclave to enclave through the gateway (in tunFA, out tunFA).
    let mut e2e = Tcp::new("192.168.28.10", 46004, "192.168.28.30", 9000);
    e2e.exchange(&mut s, 700);
    s.at(
        800,
        between("192.168.28.30", "192.168.28.10").udp(9001, 9001, b"back"),
    );
    // @1 .10 is reassigned to app B; @2 Printer attached to app B.
    let mut g10 = Tcp::new(GW, 50002, "192.168.28.10", 4711);
    g10.exchange(&mut s, 1100);
    s.at(1200, Tcp::new("192.168.28.10", 46005, WEB, 443).syn());
    s.at(2100, Tcp::new(WEB, 46006, "192.168.28.10", 8080).syn());
    s.at(
        2200,
        between(GW, "192.168.28.30").udp(161, 161, b"printer?"),
    );
    s
}

/// Packets at the edges of the model: malformed ones the IP stack drops before netfilter,
/// truncated transport headers (hotdrop), bad transport checksums (INVALID), IP options and
/// IPv6 extension headers, ports and ICMP types of every match, REJECT and LOG.
fn edge_cases() -> Story {
    let mut s = Story::default();
    let b = between("192.168.28.10", GW);
    // Bad IPv4 header checksum; total length beyond the packet: dropped before PREROUTING.
    let mut bad_sum = b.udp(1, 7, b"x");
    bad_sum[10] ^= 0xff;
    s.at(100, bad_sum);
    let mut long = b.udp(1, 7, b"x");
    long[3] = long[3].wrapping_add(8);
    fix_ipv4_checksum(&mut long);
    s.at(101, long);
    // A TCP header cut to 8 bytes by the IP length: hotdropped by a port match.
    let mut short = b.udp(2, 8391, b"");
    short[9] = 6;
    fix_ipv4_checksum(&mut short);
    s.at(110, short);
    // A bad TCP checksum: INVALID for conntrack.
    let mut bad_tcp = Tcp::new("192.168.28.10", 47000, GW, 8391).syn();
    bad_tcp[36] ^= 0x55;
    s.at(120, bad_tcp);
    // UDP without checksum (zero is allowed over IPv4).
    let mut no_sum = b.udp(3, 123, b"zero checksum");
    no_sum[26] = 0;
    no_sum[27] = 0;
    s.at(130, no_sum);
    // IPv4 with a NOP/EOL option word.
    s.at(140, with_ipv4_options(&b.udp(4, 123, b"options")));
    // Ports for multiport and ranges, TCP flags, ICMP types and codes.
    for (i, port) in [21u16, 22, 80, 443, 8080, 8443, 9000, 65535]
        .iter()
        .enumerate()
    {
        s.at(
            200 + i as u64,
            Tcp::new("192.168.28.11", 47100 + i as u16, GW, *port).syn(),
        );
        s.at(
            210 + i as u64,
            between("192.168.28.11", GW).udp(47100 + i as u16, *port, b"u"),
        );
    }
    for (i, (kind, code)) in [
        (8u8, 0u8),
        (13, 0),
        (3, 3),
        (11, 0),
        (5, 1),
        (0, 0),
        (12, 0),
    ]
    .iter()
    .enumerate()
    {
        let quoted = between(GW, "192.168.28.11").udp(1, 2, b"q");
        let p = match kind {
            8 | 0 | 13 => between("192.168.28.11", GW).build(seng_sim::gen::Transport::Icmp {
                kind: *kind,
                code: *code,
                rest: [0, 9, 0, i as u8],
                data: b"ping",
            }),
            _ => between("192.168.28.11", GW).icmp_error(*kind, *code, &quoted),
        };
        s.at(300 + i as u64, p);
    }
    // TCP flags beyond SYN: Christmas tree and null scans, ACK scan.
    let mut scan = Tcp::new("192.168.28.12", 47200, GW, 22);
    s.at(400, scan.flags(true, FIN | 0x08 | 0x20));
    s.at(401, scan.flags(true, 0));
    s.at(402, scan.flags(true, ACK));
    // REJECTed traffic (the kernel's answers are not replayed: they are not in the capture).
    s.at(500, Tcp::new("192.168.28.12", 47300, GW, 25).syn());
    s.at(501, between("192.168.28.12", GW).udp(47301, 69, b"tftp"));
    s.at(502, between("192.168.28.12", GW).icmp_echo(true, 3, 3));
    // IPv6 with hop-by-hop and destination options headers before UDP and TCP.
    let v6 = between("fd00:28::10", GW6);
    s.at(600, with_ipv6_ext(&v6.udp(48000, 53, b"hbh"), 0));
    s.at(
        601,
        with_ipv6_ext(&Tcp::new("fd00:28::10", 48001, GW6, 443).syn(), 60),
    );
    s.at(602, v6.icmp_echo(true, 4, 1));
    // Transport headers cut short, from .13, whose first rules count what each match makes of
    // them: xt_multiport reads 4 bytes, xt_tcp and xt_udp their whole header, and the nft
    // backend's payload expressions only the bytes of the field they test.
    let t13 = between("192.168.28.13", GW);
    for (i, (protocol, l4)) in [(6u8, 3usize), (6, 8), (6, 16), (17, 4), (1, 4)]
        .iter()
        .enumerate()
    {
        s.at(
            700 + i as u64,
            truncated(&t13, *protocol, *l4, 9000 + i as u16),
        );
    }
    // An IPv6 TCP header cut short by the payload length.
    let mut short6 = v6.udp(48002, 443, b"");
    short6[6] = 6;
    s.at(603, short6);
    s
}

/// An IPv4 packet of protocol `protocol` whose transport part is only the first `l4` bytes of
/// a SYN (TCP), datagram (UDP) or echo request (ICMP) with source port 3 and port `dport`.
pub(crate) fn truncated(b: &seng_sim::gen::Builder, protocol: u8, l4: usize, dport: u16) -> Vec<u8> {
    let whole = match protocol {
        6 => b.tcp(3, dport, SYN, b""),
        17 => b.udp(3, dport, b""),
        _ => b.icmp_echo(true, dport, 1),
    };
    let mut p = whole[..20 + l4].to_vec();
    let len = p.len() as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    fix_ipv4_checksum(&mut p);
    p
}

pub(crate) fn fix_ipv4_checksum(p: &mut [u8]) {
    p[10] = 0;
    p[11] = 0;
    let ihl = usize::from(p[0] & 0xf) * 4;
    let sum = !seng_sim::packet::checksum_fold(seng_sim::packet::checksum_add(0, &p[..ihl]));
    p[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// `p` with a 4-byte option word (NOP, NOP, NOP, EOL) after its 20-byte header.
pub(crate) fn with_ipv4_options(p: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.len() + 4);
    out.extend_from_slice(&p[..20]);
    out.extend_from_slice(&[1, 1, 1, 0]);
    out.extend_from_slice(&p[20..]);
    out[0] = 0x46;
    let len = out.len() as u16;
    out[2..4].copy_from_slice(&len.to_be_bytes());
    fix_ipv4_checksum(&mut out);
    out
}

/// `p` with an 8-byte extension header of type `kind` (0 hop-by-hop, 60 destination options,
/// padded with PadN) in front of its transport header. Transport checksums do not cover it.
pub(crate) fn with_ipv6_ext(p: &[u8], kind: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.len() + 8);
    out.extend_from_slice(&p[..40]);
    out.extend_from_slice(&[p[6], 0, 1, 4, 0, 0, 0, 0]);
    out.extend_from_slice(&p[40..]);
    out[6] = kind;
    let payload = (out.len() - 40) as u16;
    out[4..6].copy_from_slice(&payload.to_be_bytes());
    out
}


/// Enclave `i` of the large scenario: 10.28.0.0/16 behind tunFA (routed, see its sim-args),
/// every tenth one IPv6 in fd00:28::/64.
fn large_enclave(i: usize) -> String {
    if i % 10 == 9 {
        format!("fd00:28::{:x}", 0x1000 + i)
    } else {
        format!("10.28.{}.{}", i / 250, 1 + i % 250)
    }
}

/// An untrusted host number `i` for enclave `enclave`, of the enclave's family: inside
/// 10.0.0.0/16 (fd00:9::/32) unless `outside`.
fn large_host(i: usize, enclave: usize, outside: bool) -> String {
    match (enclave % 10 == 9, outside) {
        (false, false) => format!("10.0.{}.{}", i / 250 % 250, i % 250),
        (false, true) => format!("10.99.{}.{}", i / 250 % 250, i % 250),
        (true, false) => format!("fd00:9::{i:x}"),
        (true, true) => format!("fd00:99::{i:x}"),
    }
}

/// The application of enclave `i`: eight applications.
fn large_app(i: usize) -> String {
    format!("{:064x}", 0x5e9_0000 + i % 8)
}

/// The large scenario: `enclaves` enclaves of eight applications (categories on some), and
/// `packets` packets of interleaved connections (TCP with handshakes and teardown, UDP
/// exchanges, pings) to the gateway, to the web and from the gateway, over about eight seconds
/// with a timed event (unregistration, reassignment, category change) every 100 ms.
fn large(packets: usize, enclaves: usize) -> Vec<File> {
    let mut script =
        String::from("# Generated by `seng-e2e gen large` (vmtest/e2e/src/scenarios.rs).\n");
    for i in 0..enclaves {
        let host = large_host(i, i, i % 7 == 0);
        let _ = writeln!(
            script,
            "enclave add {} --app {} --host {host}",
            large_enclave(i),
            large_app(i)
        );
    }
    for app in 0..4 {
        let _ = writeln!(script, "app cat add {} Browser", large_app(app));
    }
    let _ = writeln!(script, "app cat add {} Mail", large_app(5));
    let mut rng = Rng(0x05e9_e2e0_1a46);
    const SPAN_US: u64 = 8_000_000;
    // Connections first: each from a random enclave, starting at a random time, a packet
    // every 0.5 to 2 ms.
    struct Flow {
        enclave: usize,
        times: Vec<u64>,
        packets: Vec<Vec<u8>>,
    }
    let mut flows: Vec<Flow> = Vec::new();
    let mut count = 0;
    let mut port = 0u16;
    while count < packets {
        let i = rng.below(enclaves as u64) as usize;
        let enclave = large_enclave(i);
        let v6 = enclave.contains(':');
        let (gw, web) = if v6 { (GW6, WEB6) } else { (GW, WEB) };
        port = port.wrapping_add(1);
        let sport = 10_000 + port % 50_000;
        let mut f = Vec::new();
        match rng.below(10) {
            0..=4 => {
                let dport = [443, 8391, 25, 80][rng.below(4) as usize];
                let mut t = Tcp::new(&enclave, sport, gw, dport);
                f.extend([t.syn(), t.syn_ack(), t.ack(true)]);
                for k in 0..rng.below(8) {
                    f.push(t.data(k % 2 == 0, b"payload of the large scenario"));
                }
                f.extend([t.fin(true), t.fin(false), t.ack(true)]);
            }
            5 => {
                let mut t = Tcp::new(&enclave, sport, web, 443);
                f.extend([
                    t.syn(),
                    t.syn_ack(),
                    t.ack(true),
                    t.data(true, b"out"),
                    t.data(false, b"in"),
                    t.rst(true),
                ]);
            }
            6 | 7 => {
                let b = between(&enclave, gw);
                for k in 0..4 {
                    f.push(if k % 2 == 0 {
                        b.udp(sport, 53, b"query")
                    } else {
                        b.reverse().udp(53, sport, b"answer")
                    });
                }
            }
            8 => {
                let b = between(&enclave, gw);
                for k in 0..4u16 {
                    f.push(b.icmp_echo(k % 2 == 0, sport, k / 2));
                }
            }
            _ => {
                let mut t = Tcp::new(gw, sport, &enclave, 4711);
                f.extend([
                    t.syn(),
                    t.syn_ack(),
                    t.ack(true),
                    t.fin(false),
                    t.fin(true),
                    t.ack(false),
                ]);
            }
        }
        f.truncate(packets - count);
        count += f.len();
        let mut us = rng.below(SPAN_US - 100_000);
        let times = f
            .iter()
            .map(|_| {
                let t = us;
                us += 500 + rng.below(1500);
                t
            })
            .collect();
        flows.push(Flow {
            enclave: i,
            times,
            packets: f,
        });
    }
    // A timed event every 100 ms, about an enclave with a connection open at that moment
    // (events must apply on both sides, so what they change is tracked).
    let mut registered = vec![true; enclaves];
    let mut browser: Vec<bool> = (0..8).map(|app| app < 4).collect();
    for k in 1..(SPAN_US / 100_000) {
        let t = k * 100_000;
        let open = |f: &Flow| {
            f.times.first().is_some_and(|a| *a < t) && f.times.last().is_some_and(|z| *z > t)
        };
        let from = rng.below(flows.len() as u64) as usize;
        let mut active = flows
            .iter()
            .cycle()
            .skip(from)
            .take(flows.len())
            .filter(|f| open(f));
        let line = match k % 4 {
            0 => {
                let i = active
                    .find(|f| registered[f.enclave])
                    .map_or(0, |f| f.enclave);
                registered[i] = false;
                format!("enclave del {}", large_enclave(i))
            }
            1 => {
                let i = active.next().map_or(0, |f| f.enclave);
                registered[i] = true;
                format!(
                    "enclave add {} --app {} --host {}",
                    large_enclave(i),
                    large_app(i + 1),
                    large_host(i + 1, i, false)
                )
            }
            k => {
                let attach = k == 3;
                let app = active
                    .map(|f| f.enclave % 8)
                    .find(|a| browser[*a] != attach)
                    .unwrap_or_else(|| (0..8).find(|a| browser[*a] != attach).unwrap_or(0));
                browser[app] = attach;
                format!(
                    "app cat {} {} Browser",
                    if attach { "add" } else { "del" },
                    large_app(app)
                )
            }
        };
        let _ = writeln!(script, "@{}.{} {line}", k / 10, k % 10);
    }
    let mut story = Story::default();
    for f in flows {
        for (us, p) in f.times.into_iter().zip(f.packets) {
            story.at_us(us, p);
        }
    }
    vec![
        File {
            name: "capture.pcap",
            data: story.pcap(),
            committed: false,
        },
        File {
            name: "enclaves.txt",
            data: script.into_bytes(),
            committed: false,
        },
    ]
}

#[cfg(test)]
mod test {
    use super::*;
    use seng_sim::capture::Capture;

    #[test]
    fn every_generator_is_deterministic_and_readable() {
        for name in GENERATED {
            let first = generate(name).unwrap();
            let again = generate(name).unwrap();
            for (a, b) in first.iter().zip(&again) {
                assert!(a.data == b.data, "{name}/{} differs between runs", a.name);
            }
            let pcap = first.iter().find(|f| f.name == "capture.pcap").unwrap();
            let capture = Capture::new(pcap.data.clone()).unwrap();
            let frames = capture
                .frames()
                .inspect(|f| assert!(f.is_ok(), "{name}: {f:?}"))
                .count();
            assert!(frames > 10, "{name}: only {frames} packets");
            if *name == "large" {
                assert_eq!(frames, 100_000);
            }
        }
        assert!(generate("nothing").is_none());
    }

    #[test]
    fn large_script_parses_with_timed_events() {
        let files = large(1000, 10_000);
        let text = String::from_utf8(files[1].data.clone()).unwrap();
        let lines = seng_core::script::parse(&text).unwrap();
        assert_eq!(lines.iter().filter(|l| l.at.is_none()).count(), 10_000 + 5);
        assert_eq!(lines.iter().filter(|l| l.at.is_some()).count(), 79);
    }
}
