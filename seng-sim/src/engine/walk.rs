// SPDX-License-Identifier: GPL-2.0-only
//! One packet's way through the hooks, in the kernel's order of hooks and priorities:
//!
//! - arriving: PREROUTING (raw, conntrack, mangle, nat), the routing decision on the
//!   destination as nat left it, then INPUT (mangle, filter, nat, confirm) or FORWARD (mangle,
//!   filter) and POSTROUTING (mangle, nat, confirm);
//! - sent by the gateway: OUTPUT (raw, conntrack, mangle, nat, a new route if nat changed the
//!   destination, filter) and POSTROUTING; to its own address, then PREROUTING and INPUT again
//!   on `lo` with the same connection.
//!
//! The nat table is run only for a connection's first packet and each of its manips (DNAT at
//! PREROUTING and OUTPUT, SNAT at INPUT and POSTROUTING); every packet of a connection with a
//! binding is rewritten at those hooks from its conntrack entry, so later hooks and the seng
//! lookup see the translated addresses.

use std::cell::Cell;
use std::fmt::Write as _;
use std::net::IpAddr;

use seng_core::table::{EnclaveTable, StdPlatform};
use seng_core::Family;

use super::compile::Compiled;
use super::sim::Stats;
use super::trace::{describe_decision, iface_name, Describe};
use super::traverse::{Ctx, Decider};
use super::{Hook, TableKind, Verdict};
use crate::conntrack::{Conntrack, Manip};
use crate::net::{Router, LO};
use crate::packet::{from_ip, Addr, Packet};
use crate::rules::{ct_state, NatKind, NatSpec};

/// What happens at a hook, in order.
#[derive(Clone, Copy)]
enum Step {
    /// A table's chain of the hook.
    Table(TableKind),
    /// Connection tracking (after raw).
    Track,
    /// NAT: the nat table for a first packet, then the rewrite.
    Nat,
    /// At the end of OUTPUT: a new route if nat changed the destination. Every table at
    /// OUTPUT sees the first route's device (`__ip_local_out` sets the hook's `out` once, and
    /// `ip_route_me_harder` after nat changes only the route); POSTROUTING sees the new one.
    Reroute,
    /// The connection is confirmed (the hooks' last priority).
    Confirm,
}

use Step::{Confirm, Nat, Reroute, Table, Track};

const PREROUTING: &[Step] = &[Table(TableKind::Raw), Track, Table(TableKind::Mangle), Nat];
const INPUT: &[Step] = &[Table(TableKind::Mangle), Table(TableKind::Filter), Nat, Confirm];
const FORWARD: &[Step] = &[Table(TableKind::Mangle), Table(TableKind::Filter)];
const OUTPUT: &[Step] = &[Table(TableKind::Raw), Track, Table(TableKind::Mangle), Nat, Table(TableKind::Filter), Reroute];
const POSTROUTING: &[Step] = &[Table(TableKind::Mangle), Nat, Confirm];
/// PREROUTING for the gateway's packet to itself coming back in through lo with its
/// connection: conntrack does not run again.
const LOOPBACK_PREROUTING: &[Step] = &[Table(TableKind::Raw), Table(TableKind::Mangle), Nat];

/// The steps of every hook for one family's loaded tables. A table the rules never load, or
/// one without a chain at the hook, has no step: most rulesets load one or two of the four
/// tables, and every packet would test the others at every hook.
pub(super) struct Plan {
    prerouting: Box<[Step]>,
    input: Box<[Step]>,
    forward: Box<[Step]>,
    output: Box<[Step]>,
    postrouting: Box<[Step]>,
    loopback_prerouting: Box<[Step]>,
}

impl Plan {
    /// The plan for `tables` (one family's, `None` where not loaded).
    pub(super) fn new(tables: &[Option<Compiled>; 4]) -> Plan {
        let keep = |hook: Hook, steps: &[Step]| -> Box<[Step]> {
            steps
                .iter()
                .copied()
                .filter(|step| match step {
                    Table(kind) => tables[*kind as usize].as_ref().is_some_and(|t| t.has_hook(hook)),
                    Track | Nat | Reroute | Confirm => true,
                })
                .collect()
        };
        Plan {
            prerouting: keep(Hook::Prerouting, PREROUTING),
            input: keep(Hook::Input, INPUT),
            forward: keep(Hook::Forward, FORWARD),
            output: keep(Hook::Output, OUTPUT),
            postrouting: keep(Hook::Postrouting, POSTROUTING),
            loopback_prerouting: keep(Hook::Prerouting, LOOPBACK_PREROUTING),
        }
    }
}

/// A packet walking the hooks, with what it needs of the simulator.
pub(super) struct Walk<'s, 'a> {
    /// The family's tables, `None` where not loaded.
    pub(super) tables: &'s mut [Option<Compiled>; 4],
    /// The steps of each hook for those tables.
    plan: &'s Plan,
    pub(super) router: &'s Router,
    pub(super) conntrack: &'s mut Conntrack,
    pub(super) enclaves: &'s EnclaveTable<StdPlatform>,
    pub(super) stats: &'s mut Stats,
    /// Verify transport checksums at conntrack (arriving packets only).
    pub(super) checksum: bool,
    pub(super) now_ns: u64,
    /// The packet as it is now: NAT rewrites it.
    pub(super) p: Packet<'a>,
    /// The trace line being written, if tracing.
    pub(super) trace: Option<&'s mut String>,
    in_iface: u8,
    out_iface: u8,
    /// The conntrack state (INVALID before conntrack ran).
    pub(super) ct: u8,
    mark: u32,
    notrack: bool,
    /// Conntrack has run (or NOTRACK exempted the packet).
    tracked: bool,
    /// Conntrack gave the packet a connection.
    has_conn: bool,
    pub(super) loopback: bool,
}

fn family_index(family: Family) -> usize {
    match family {
        Family::Ipv4 => 0,
        Family::Ipv6 => 1,
    }
}

impl<'s, 'a> Walk<'s, 'a> {
    /// A walk of `p`; `trace` gets the steps.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        tables: &'s mut [Option<Compiled>; 4],
        plan: &'s Plan,
        router: &'s Router,
        conntrack: &'s mut Conntrack,
        enclaves: &'s EnclaveTable<StdPlatform>,
        stats: &'s mut Stats,
        checksum: bool,
        now_ns: u64,
        p: Packet<'a>,
        trace: Option<&'s mut String>,
    ) -> Walk<'s, 'a> {
        Walk {
            tables,
            plan,
            router,
            conntrack,
            enclaves,
            stats,
            checksum,
            now_ns,
            p,
            trace,
            in_iface: 0,
            out_iface: 0,
            ct: ct_state::INVALID,
            mark: 0,
            notrack: false,
            tracked: false,
            has_conn: false,
            loopback: false,
        }
    }

    /// Takes the packet through every hook it passes.
    pub(super) fn run(&mut self) {
        let family = self.p.family;
        let plan = self.plan;
        match self.router.arrival(family, self.p.src) {
            Some(in_iface) => {
                self.in_iface = in_iface;
                if !self.hook(Hook::Prerouting, &plan.prerouting) {
                    return;
                }
                if self.router.delivered(family, self.p.dst) {
                    self.hook(Hook::Input, &plan.input);
                    return;
                }
                self.out_iface = self.router.route(family, self.p.dst);
                if self.p.ttl <= 1 {
                    // ip_forward / ip6_forward: conntrack has seen the packet, the filter never
                    // does, and its new connection is never confirmed.
                    self.conntrack.discard();
                    self.stats.ttl_expired += 1;
                    self.note(format_args!(" | TTL expired: dropped by the IP stack before FORWARD"));
                    return;
                }
                if self.hook(Hook::Forward, &plan.forward) {
                    self.hook(Hook::Postrouting, &plan.postrouting);
                }
            }
            None => {
                self.loopback = self.router.is_local(family, self.p.dst);
                self.out_iface = if self.loopback { LO } else { self.router.route(family, self.p.dst) };
                let mut verdict = self.hook_verdict(Hook::Output, &plan.output);
                if verdict == Verdict::Accept {
                    verdict = self.hook_verdict(Hook::Postrouting, &plan.postrouting);
                }
                // What the sender learns: a drop at either hook fails its send (EPERM).
                let own = &mut self.stats.own;
                match verdict {
                    Verdict::Accept => own.accepted.add(self.p.len),
                    Verdict::Drop => own.dropped.add(self.p.len),
                    Verdict::Reject => own.rejected.add(self.p.len),
                }
                if verdict != Verdict::Accept || !self.loopback {
                    return;
                }
                (self.in_iface, self.out_iface) = (LO, 0);
                if self.hook(Hook::Prerouting, &plan.loopback_prerouting) {
                    self.hook(Hook::Input, &plan.input);
                }
            }
        }
    }

    fn note(&mut self, text: std::fmt::Arguments<'_>) {
        if let Some(line) = self.trace.as_deref_mut() {
            let _ = line.write_fmt(text);
        }
    }

    /// Runs the steps of `hook`; false if the packet was dropped or rejected there.
    fn hook(&mut self, hook: Hook, steps: &[Step]) -> bool {
        self.hook_verdict(hook, steps) == Verdict::Accept
    }

    /// Runs the steps of `hook`; what they decided.
    fn hook_verdict(&mut self, hook: Hook, steps: &[Step]) -> Verdict {
        let mut verdict = Verdict::Accept;
        for step in steps {
            verdict = match *step {
                Table(kind) => self.table(kind, hook),
                Track => {
                    self.track();
                    Verdict::Accept
                }
                Nat => self.nat(hook),
                Reroute => {
                    self.out_iface = if self.router.is_local(self.p.family, self.p.dst) {
                        self.loopback = true;
                        LO
                    } else {
                        self.loopback = false;
                        self.router.route(self.p.family, self.p.dst)
                    };
                    Verdict::Accept
                }
                Confirm if self.conntrack.confirm() => Verdict::Accept,
                Confirm => {
                    self.note(format_args!(" | conntrack: another connection holds the reply tuple: dropped at confirmation"));
                    Verdict::Drop
                }
            };
            if verdict != Verdict::Accept {
                break;
            }
        }
        let tally = &mut self.stats.hooks[family_index(self.p.family)][hook as usize];
        match verdict {
            Verdict::Accept => tally.accepted.add(self.p.len),
            Verdict::Drop => tally.dropped.add(self.p.len),
            Verdict::Reject => tally.rejected.add(self.p.len),
        }
        if verdict != Verdict::Accept {
            self.conntrack.discard();
        }
        verdict
    }

    fn track(&mut self) {
        self.tracked = true;
        let ct = &mut self.stats.ct;
        if self.notrack {
            self.ct = ct_state::UNTRACKED;
            ct.untracked += 1;
            return;
        }
        self.ct = self.conntrack.track(&self.p, self.now_ns, self.checksum && self.in_iface != 0);
        self.has_conn = self.conntrack.mark().is_some();
        match self.ct {
            ct_state::NEW => ct.new += 1,
            ct_state::ESTABLISHED => ct.established += 1,
            ct_state::RELATED => ct.related += 1,
            _ => ct.invalid += 1,
        }
    }

    /// Runs the table `kind`'s chain of `hook`, if the table is loaded and has one.
    fn table(&mut self, kind: TableKind, hook: Hook) -> Verdict {
        self.traverse(kind, hook).map_or(Verdict::Accept, |(verdict, _)| verdict)
    }

    fn traverse(&mut self, kind: TableKind, hook: Hook) -> Option<(Verdict, Decider)> {
        let table = self.tables[kind as usize].as_mut().filter(|t| t.has_hook(hook))?;
        let tracing = self.trace.is_some();
        let (verdict, decider) = match table.policy_only(hook) {
            Some(decided) => decided,
            None => {
                let ctmark = if self.has_conn { self.conntrack.mark() } else { None };
                let mut ctx = Ctx {
                    p: &self.p,
                    in_iface: self.in_iface,
                    out_iface: self.out_iface,
                    ct: self.ct,
                    ct_status: if self.has_conn { self.conntrack.nat_status() } else { 0 },
                    mark: self.mark,
                    ctmark,
                    notrack: self.notrack,
                    tracked: self.tracked,
                    enclaves: self.enclaves,
                    src_enclave: Cell::new(None),
                    dst_enclave: Cell::new(None),
                };
                let decided = table.run(hook, &mut ctx, tracing);
                self.mark = ctx.mark;
                self.notrack = ctx.notrack;
                if let Some(mark) = ctx.ctmark.filter(|m| Some(*m) != ctmark) {
                    self.conntrack.set_mark(mark);
                }
                decided
            }
        };
        if let Decider::Policy(chain) = decider {
            table.policy_counters[usize::from(chain)].add(self.p.len);
        }
        if let Some(line) = self.trace.as_deref_mut() {
            let _ = write!(
                line,
                " | {} {} in {} out {}: ",
                kind.name(),
                hook.name(),
                iface_name(self.router, self.in_iface),
                iface_name(self.router, self.out_iface)
            );
            describe_decision(line, table, verdict, decider);
        }
        Some((verdict, decider))
    }

    /// nf_nat at `hook`: the nat table makes the binding of a first packet, then the packet is
    /// rewritten from its connection.
    fn nat(&mut self, hook: Hook) -> Verdict {
        if !self.has_conn {
            // No connection: nf_nat leaves the packet alone.
            return Verdict::Accept;
        }
        let manip = match hook {
            Hook::Prerouting | Hook::Output => Manip::Dst,
            _ => Manip::Src,
        };
        if self.conntrack.needs_binding(manip) {
            match self.traverse(TableKind::Nat, hook) {
                Some((Verdict::Accept, decider)) => {
                    let spec = self.tables[TableKind::Nat as usize].as_ref().and_then(|t| t.nat_of(decider)).cloned();
                    match spec {
                        Some(spec) => {
                            if let Err(why) = self.bind(&spec, hook, manip) {
                                self.note(format_args!("; {why}: dropped"));
                                return Verdict::Drop;
                            }
                        }
                        None => self.conntrack.null_binding(manip),
                    }
                }
                Some((verdict, _)) => return verdict,
                None => self.conntrack.null_binding(manip),
            }
        }
        if self.conntrack.translate(&mut self.p, manip) {
            let p = self.p;
            self.note(format_args!(" | nat {}: now {}", hook.name(), Describe(&p)));
        }
        Verdict::Accept
    }

    /// Makes the binding `spec` asks for.
    fn bind(&mut self, spec: &NatSpec, hook: Hook, manip: Manip) -> Result<(), String> {
        let family = self.p.family;
        let addr = match spec.kind {
            NatKind::Snat | NatKind::Dnat => match spec.addrs {
                // nf_nat hashes the connection into an address range; the replay takes the first.
                Some((first, _)) => from_ip(first),
                None if manip == Manip::Src => self.p.src,
                None => self.p.dst,
            },
            NatKind::Masquerade => self
                .router
                .masquerade_addr(self.out_iface, family, self.p.dst)
                .ok_or_else(|| format!("MASQUERADE: {} has no {} address", iface_name(self.router, self.out_iface), family_word(family)))?,
            NatKind::Redirect if hook == Hook::Output => loopback(family),
            NatKind::Redirect => self
                .router
                .first_addr(self.in_iface, family)
                .ok_or_else(|| format!("REDIRECT: {} has no {} address", iface_name(self.router, self.in_iface), family_word(family)))?,
        };
        self.conntrack.bind(manip, addr, spec.ports.map(|r| (r.min, r.max)));
        Ok(())
    }
}

fn family_word(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "IPv4",
        Family::Ipv6 => "IPv6",
    }
}

/// The loopback address REDIRECT in OUTPUT sends to.
fn loopback(family: Family) -> Addr {
    match family {
        Family::Ipv4 => from_ip(IpAddr::from([127, 0, 0, 1])),
        Family::Ipv6 => 1,
    }
}

#[cfg(test)]
mod test {
    use crate::capture::{linktype, Frame};
    use crate::engine::{Options, Simulator, TableKind};
    use crate::gen::Builder;
    use crate::net::NetConfig;
    use crate::packet::tcp_flag::{ACK, SYN};
    use crate::rules::parse_rules;
    use seng_core::Family;

    const APP: &str = "d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0";

    /// The default gateway (tunFA 192.168.28.1/24, fd00:28::1/64) with an uplink eth0 holding
    /// 203.0.113.1/24 and 2001:db8::1/64.
    fn gateway() -> Options {
        let mut net = NetConfig::default();
        net.set_interface("eth0=203.0.113.1/24,2001:db8::1/64").unwrap();
        Options { net, ..Options::default() }
    }

    /// Replays raw IP packets one millisecond apart; the trace line of each.
    fn replay(options: &Options, rules: &str, script: &str, packets: &[Vec<u8>]) -> (Simulator, Vec<String>) {
        let rules = parse_rules(rules, "rules").unwrap_or_else(|e| panic!("{e}"));
        let script = seng_core::script::parse(script).unwrap();
        let mut sim = Simulator::new(&rules, &script, options).unwrap();
        let lines = packets
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                let frame = Frame { number: i as u64 + 1, ts_ns: i as u64 * 1_000_000, link: linktype::RAW, data: bytes, orig_len: bytes.len() };
                let mut out = Vec::new();
                sim.process(&frame, Some(&mut out)).unwrap();
                String::from_utf8(out).unwrap()
            })
            .collect();
        (sim, lines)
    }

    /// Packets per rule of table `kind`, in chain and rule order.
    fn counts(sim: &Simulator, family: Family, kind: TableKind) -> Vec<u64> {
        sim.table(family, kind).map(|t| t.counters().iter().map(|c| c.packets).collect()).unwrap_or_default()
    }

    /// Policy packets of the built-in chains of table `kind`.
    fn policies(sim: &Simulator, family: Family, kind: TableKind) -> Vec<u64> {
        let t = sim.table(family, kind).expect("table loaded");
        t.policy_counters().iter().take(kind.hooks().len()).map(|c| c.packets).collect()
    }

    /// Enclaves masqueraded out of eth0: the nat table sees the first packet only, the replies
    /// to the gateway's public address are de-NATed before routing, so they are forwarded to
    /// the enclave (not delivered), and the filter sees the enclave's address; a second
    /// enclave using the same source port gets another port, and its replies reach it.
    #[test]
    fn masquerade_egress_and_replies() {
        let rules = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
                     -A POSTROUTING -s 192.168.28.0/24 -o eth0 -j MASQUERADE\nCOMMIT\n\
                     *filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                     -A FORWARD -i tunFA -o eth0 -j ACCEPT\n-A FORWARD -d 192.168.28.10/32 -i eth0 -o tunFA -m conntrack --ctstate ESTABLISHED,SNAT -j ACCEPT\n\
                     -A FORWARD -d 192.168.28.11/32 -i eth0 -o tunFA -j ACCEPT\nCOMMIT\n";
        let a = Builder::v4("192.168.28.10", "198.51.100.7");
        let b = Builder::v4("192.168.28.11", "198.51.100.7");
        let to_a = Builder::v4("198.51.100.7", "203.0.113.1");
        let packets = [
            a.tcp(40000, 443, SYN, b""),
            to_a.tcp(443, 40000, SYN | ACK, b""),
            a.tcp(40000, 443, ACK, b""),
            b.tcp(40000, 443, SYN, b""),
            to_a.tcp(443, 1024, SYN | ACK, b""),
            Builder::v4("198.51.100.7", "203.0.113.1").icmp_error(3, 3, &Builder::v4("203.0.113.1", "198.51.100.7").tcp(40000, 443, ACK, b"")),
            Builder::v4("198.51.100.1", "203.0.113.1").icmp_error(11, 0, &Builder::v4("203.0.113.1", "198.51.100.7").tcp(40000, 443, ACK, b"")),
        ];
        let (sim, lines) = replay(&gateway(), rules, "", &packets);
        assert!(lines[0].contains("nat POSTROUTING in tunFA out eth0: MASQUERADE by POSTROUTING rule 1") && lines[0].contains("nat POSTROUTING: now 203.0.113.1:40000 > 198.51.100.7:443"), "{}", lines[0]);
        assert!(lines[1].contains("nat PREROUTING: now 198.51.100.7:443 > 192.168.28.10:40000 TCP [S.] | filter FORWARD in eth0 out tunFA: ACCEPT by FORWARD rule 2"), "{}", lines[1]);
        assert!(lines[2].contains("nat POSTROUTING: now 203.0.113.1:40000 > 198.51.100.7:443"), "{}", lines[2]);
        assert!(lines[3].contains("now 203.0.113.1:1024 > 198.51.100.7:443"), "the clash moves the port: {}", lines[3]);
        assert!(lines[4].contains("now 198.51.100.7:443 > 192.168.28.11:40000") && lines[4].contains("ACCEPT by FORWARD rule 3"), "{}", lines[4]);
        assert!(lines[5].contains("ct RELATED") && lines[5].contains("now 198.51.100.7 > 192.168.28.10 ICMP type 3 code 3"), "an error about the flow reaches the enclave: {}", lines[5]);
        // A router's error: POSTROUTING keeps its source, as nf_nat_icmp_reply_translation
        // rewrites a reply only where the connection's destination was NATed.
        assert!(lines[6].contains("now 198.51.100.1 > 192.168.28.10 ICMP type 11 code 0") && !lines[6].contains("nat POSTROUTING: now"), "{}", lines[6]);
        assert_eq!(counts(&sim, Family::Ipv4, TableKind::Nat), [2]);
        assert_eq!(policies(&sim, Family::Ipv4, TableKind::Nat), [2, 0, 0, 0], "PREROUTING of the two first packets; POSTROUTING decided by the rule");
        assert_eq!(counts(&sim, Family::Ipv4, TableKind::Filter), [3, 3, 1], "the RELATED errors have the connection's SNAT state");
        assert_eq!(policies(&sim, Family::Ipv4, TableKind::Filter), [0, 0, 0]);
    }

    /// A public port forwarded to an enclave server: FORWARD sees the enclave's address, so a
    /// `--dst-app` rule matches it; the server's replies leave with the public address.
    #[test]
    fn dnat_to_an_enclave_server() {
        let rules = format!(
            "iptables -t nat -A PREROUTING -i eth0 -p tcp --dport 8080 -j DNAT --to-destination 192.168.28.20:80\n\
             iptables -P FORWARD DROP\niptables -A FORWARD -m conntrack --ctstate ESTABLISHED -j ACCEPT\n\
             iptables -A FORWARD -i eth0 -p tcp --dport 80 -m conntrack --ctstate DNAT -m seng --dst-app {APP} -j ACCEPT\n\
             iptables -A FORWARD -d 203.0.113.1 -j LOG\n"
        );
        let script = format!("enclave add 192.168.28.20 --app {APP} --host 10.0.0.5\n");
        let client = Builder::v4("198.51.100.7", "203.0.113.1");
        let server = Builder::v4("192.168.28.20", "198.51.100.7");
        let packets = [
            client.tcp(5000, 8080, SYN, b""),
            server.tcp(80, 5000, SYN | ACK, b""),
            client.tcp(5000, 8080, ACK, b""),
            client.tcp(5001, 8081, SYN, b""),
        ];
        let (sim, lines) = replay(&gateway(), &rules, &script, &packets);
        assert!(lines[0].contains("DNAT by PREROUTING rule 1") && lines[0].contains("now 198.51.100.7:5000 > 192.168.28.20:80"), "{}", lines[0]);
        assert!(lines[0].contains("filter FORWARD in eth0 out tunFA: ACCEPT by FORWARD rule 2"), "{}", lines[0]);
        assert!(lines[1].contains("nat POSTROUTING: now 203.0.113.1:8080 > 198.51.100.7:5000"), "{}", lines[1]);
        assert!(lines[2].contains("ACCEPT by FORWARD rule 1"), "{}", lines[2]);
        assert!(lines[3].contains("filter INPUT in eth0"), "no binding: delivered to the gateway: {}", lines[3]);
        assert_eq!(counts(&sim, Family::Ipv4, TableKind::Nat), [1]);
        assert_eq!(counts(&sim, Family::Ipv4, TableKind::Filter), [2, 1, 0]);
        assert_eq!(sim.stats().hooks[0][crate::rules::Hook::Forward as usize].accepted.packets, 3);
    }

    /// Marks set in mangle are seen by the filter; a connection mark saved from the first
    /// packet is restored onto the replies; REDIRECT sends a forwarded port to the gateway.
    #[test]
    fn marks_connmarks_and_redirect() {
        let rules = "*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
                     -A PREROUTING -i tunFA -s 192.168.28.10 -j MARK --set-mark 0x10\n-A PREROUTING -m mark --mark 0x10 -j CONNMARK --save-mark\n\
                     -A PREROUTING -i eth0 -j CONNMARK --restore-mark\nCOMMIT\n\
                     *nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
                     -A PREROUTING -i tunFA -p tcp --dport 80 -j REDIRECT --to-ports 3128\nCOMMIT\n\
                     *filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                     -A INPUT -p tcp --dport 3128 -m mark --mark 0x10 -j ACCEPT\n-A FORWARD -m mark --mark 0x10 -j ACCEPT\n\
                     -A FORWARD -m connmark --mark 0x10 -j ACCEPT\n-A FORWARD -m mark ! --mark 0x10/0xf0\nCOMMIT\n";
        let a = Builder::v4("192.168.28.10", "198.51.100.7");
        let packets = [
            a.udp(4000, 53, b"q"),
            Builder::v4("198.51.100.7", "192.168.28.10").udp(53, 4000, b"a"),
            Builder::v4("192.168.28.11", "198.51.100.7").udp(4000, 53, b"q"),
            a.tcp(40000, 80, SYN, b""),
        ];
        let (sim, lines) = replay(&gateway(), rules, "", &packets);
        assert!(lines[1].contains("ACCEPT by FORWARD rule 1"), "the restored mark: {}", lines[1]);
        assert!(lines[2].contains("DROP by FORWARD policy"), "{}", lines[2]);
        assert!(lines[3].contains("REDIRECT by PREROUTING rule 1") && lines[3].contains("now 192.168.28.10:40000 > 192.168.28.1:3128"), "{}", lines[3]);
        assert!(lines[3].contains("filter INPUT in tunFA out *: ACCEPT by INPUT rule 1"), "{}", lines[3]);
        assert_eq!(counts(&sim, Family::Ipv4, TableKind::Mangle), [2, 2, 1]);
        assert_eq!(counts(&sim, Family::Ipv4, TableKind::Filter), [1, 2, 0, 1]);
    }

    /// NOTRACK in raw: the packets are UNTRACKED, never NATed nor confirmed, and the nat
    /// table never sees them.
    #[test]
    fn notrack_skips_conntrack_and_nat() {
        let rules = "iptables -t raw -A PREROUTING -p udp --dport 53 -j CT --notrack\niptables -t raw -A PREROUTING -m conntrack --ctstate UNTRACKED\n\
                     iptables -t raw -A OUTPUT -p udp --sport 53 -j NOTRACK\n\
                     iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE\niptables -A INPUT -m conntrack --ctstate UNTRACKED -j ACCEPT\n\
                     iptables -A INPUT -m state --state NEW\niptables -A OUTPUT -m connmark --mark 0/0\n";
        let q = Builder::v4("192.168.28.10", "192.168.28.1");
        let packets = [q.udp(4000, 53, b"q"), q.reverse().udp(53, 4000, b"a"), q.udp(4000, 53, b"q"), q.udp(4000, 54, b"q")];
        let (sim, lines) = replay(&gateway(), rules, "", &packets);
        assert!(lines[0].contains("ct UNTRACKED") && lines[2].contains("ct UNTRACKED"), "{lines:?}");
        assert!(lines[3].contains("ct NEW"), "{}", lines[3]);
        assert_eq!(counts(&sim, Family::Ipv4, TableKind::Raw), [2, 2, 1], "UNTRACKED right after the NOTRACK rule");
        assert_eq!(counts(&sim, Family::Ipv4, TableKind::Filter), [2, 1, 0]);
        assert_eq!(policies(&sim, Family::Ipv4, TableKind::Nat), [1, 1, 0, 0], "only the tracked packet passes nat");
        assert_eq!(sim.stats().ct.untracked, 3);
        assert_eq!(sim.conntrack_stats().confirmed, 1);
    }

    /// The gateway to itself: the second pass (PREROUTING and INPUT on lo) keeps the
    /// connection, so NOTRACK there does nothing and nat is not run again; DNAT in OUTPUT to a
    /// local address turns a packet to the outside into one through lo, while filter OUTPUT
    /// still sees the first route's device.
    #[test]
    fn loopback_keeps_its_connection_and_dnat_reroutes() {
        let rules = "iptables -t raw -A PREROUTING -i lo -j CT --notrack\niptables -t raw -A PREROUTING -i lo -m conntrack --ctstate NEW\n\
                     iptables -t nat -A OUTPUT -d 198.51.100.7 -p udp -j DNAT --to-destination 127.0.0.1:9\n\
                     iptables -A INPUT -i lo -m conntrack --ctstate NEW,DNAT\niptables -A OUTPUT -o lo\n";
        let packets = [Builder::v4("127.0.0.1", "127.0.0.1").udp(1, 2, b""), Builder::v4("192.168.28.1", "198.51.100.7").udp(3, 4, b"")];
        let (sim, lines) = replay(&gateway(), rules, "", &packets);
        assert!(lines[0].contains("ct NEW"), "{}", lines[0]);
        assert!(lines[1].contains("now 192.168.28.1:3 > 127.0.0.1:9") && lines[1].contains("filter OUTPUT in * out eth0"), "{}", lines[1]);
        assert!(lines[1].contains("filter INPUT in lo out *"), "{}", lines[1]);
        assert_eq!(counts(&sim, Family::Ipv4, TableKind::Raw), [2, 2]);
        assert_eq!(counts(&sim, Family::Ipv4, TableKind::Filter), [2, 1]);
        assert_eq!(policies(&sim, Family::Ipv4, TableKind::Nat), [0, 0, 1, 2], "nat runs once per manip: OUTPUT and POSTROUTING, never PREROUTING or INPUT on lo");
        assert_eq!(sim.stats().own.accepted.packets, 2);
        // A drop in mangle POSTROUTING refuses the gateway's own packet, as one in OUTPUT does.
        let (sim, _) = replay(&gateway(), "iptables -t mangle -P POSTROUTING DROP\n", "", &packets);
        assert_eq!((sim.stats().own.dropped.packets, sim.stats().own.accepted.packets), (2, 0));
    }

    /// Random seed 103 on 6.1: the gateway's packet to an enclave, DNATed in OUTPUT to an
    /// address behind eth0, is still going out of tunFA for filter OUTPUT, and out of eth0 from
    /// POSTROUTING on.
    #[test]
    fn output_tables_see_the_route_before_dnat() {
        let rules = "iptables -t nat -A OUTPUT -j DNAT --to-destination 198.51.100.8\niptables -A OUTPUT ! -o eth0\n\
                     iptables -t mangle -A POSTROUTING -o eth0\n";
        let packets = [Builder::v4("192.168.28.1", "192.168.28.10").udp(30119, 8391, b"datagram")];
        let (sim, lines) = replay(&gateway(), rules, "", &packets);
        assert!(lines[0].contains("filter OUTPUT in * out tunFA") && lines[0].contains("mangle POSTROUTING in * out eth0"), "{}", lines[0]);
        assert_eq!(counts(&sim, Family::Ipv4, TableKind::Filter), [1]);
        assert_eq!(counts(&sim, Family::Ipv4, TableKind::Mangle), [1]);
    }

    /// Random seed 219 on 6.1: the gateway's own packet whose reply tuple is a DNATed
    /// connection's original gets a new source port from its null binding, so the next packet
    /// of the DNATed connection stays in it (an ACK before any answer: INVALID), not taken for
    /// a reply to the gateway's packet (ESTABLISHED).
    #[test]
    fn a_null_binding_moves_a_clashing_source_port() {
        let rules = "iptables -t nat -A PREROUTING -j DNAT --to-destination 198.51.100.7\niptables -A INPUT -m conntrack --ctstate ESTABLISHED\n";
        let outside = Builder::v4("198.51.100.8", "192.168.28.1");
        let packets = [
            outside.tcp(30133, 80, SYN, b""),
            Builder::v4("192.168.28.1", "198.51.100.8").tcp(80, 30133, ACK, b"answer"),
            outside.tcp(30133, 80, ACK, b"request"),
        ];
        let (sim, lines) = replay(&gateway(), rules, "", &packets);
        assert!(lines[1].contains("nat POSTROUTING: now 192.168.28.1:1 > 198.51.100.8:30133"), "{}", lines[1]);
        assert!(lines[2].contains("ct INVALID"), "{}", lines[2]);
        assert_eq!(counts(&sim, Family::Ipv4, TableKind::Filter), [0]);
    }

    /// multiport reads the ports a DNAT made, as every port match does (random seed 272 on
    /// 6.1: a POSTROUTING `--dports` matched the gateway's packet by the port it had before
    /// nat OUTPUT's DNAT).
    #[test]
    fn multiport_sees_the_translated_ports() {
        let rules = "iptables -t nat -A OUTPUT -p udp -j DNAT --to-destination 192.168.28.11:80\n\
                     iptables -t nat -A POSTROUTING -p udp -m multiport --dports 5304:65535\n\
                     iptables -t nat -A POSTROUTING -p udp -m multiport --dports 80\n";
        let packets = [Builder::v4("192.168.28.1", "198.51.100.8").udp(443, 30098, b"answer")];
        let (sim, lines) = replay(&gateway(), rules, "", &packets);
        assert!(lines[0].contains("nat OUTPUT: now 192.168.28.1:443 > 192.168.28.11:80"), "{}", lines[0]);
        assert_eq!(counts(&sim, Family::Ipv4, TableKind::Nat), [1, 0, 1]);
    }

    /// A binding that finds no free tuple keeps a taken one, and __nf_conntrack_confirm drops
    /// the packet after every table counted it (the kernel's clash; UDP's clash resolution
    /// cannot merge two connections NAT set up differently).
    #[test]
    fn a_taken_tuple_is_dropped_at_confirmation() {
        let rules = "iptables -t nat -A POSTROUTING -p udp -j SNAT --to-source 198.51.100.1:4000\niptables -A FORWARD -p udp\n";
        let packets = [
            Builder::v4("192.168.28.10", "198.51.100.7").udp(5000, 53, b"first"),
            Builder::v4("192.168.28.11", "198.51.100.7").udp(5000, 53, b"second"),
        ];
        let (sim, lines) = replay(&gateway(), rules, "", &packets);
        assert!(lines[0].contains("nat POSTROUTING: now 198.51.100.1:4000 > 198.51.100.7:53"), "{}", lines[0]);
        assert!(lines[1].contains("now 198.51.100.1:4000 > 198.51.100.7:53") && lines[1].contains("dropped at confirmation"), "{}", lines[1]);
        assert_eq!(counts(&sim, Family::Ipv4, TableKind::Filter), [2]);
        assert_eq!(sim.conntrack_stats().clashes, 1);
        assert_eq!(sim.conntrack_stats().confirmed, 1);
        assert_eq!(sim.stats().hooks[0][crate::rules::Hook::Postrouting as usize].dropped.packets, 1);
    }

    /// nf_nat keeps a free source port when no range was given, whatever its class: the class
    /// only says where a clashing port moves (the gateway's syslog answers from port 514 in the
    /// corpus scenario `reassign`, where the null binding moved them to 600).
    #[test]
    fn a_free_source_port_stays_without_a_range() {
        let rules = "iptables -t nat -A POSTROUTING -p udp -j SNAT --to-source 198.51.100.1\n";
        let packets = [Builder::v4("192.168.28.1", "198.51.100.8").udp(514, 53, b"query")];
        let (_, lines) = replay(&gateway(), rules, "", &packets);
        assert!(lines[0].contains("nat POSTROUTING: now 198.51.100.1:514 > 198.51.100.8:53"), "{}", lines[0]);
    }

    /// `-m udp` without options stays the x_tables match under iptables-nft too, so a UDP
    /// header cut short is dropped by it in any table; with a port it is a payload test.
    #[test]
    fn bare_udp_match_drops_a_cut_header_on_both_backends() {
        let rules = "iptables -t mangle -A PREROUTING -p udp -m udp --dport 9\niptables -t mangle -A PREROUTING -p udp -m udp\n";
        let mut cut = Builder::v4("198.51.100.7", "192.168.28.1").udp(1, 2, b"");
        cut.truncate(23);
        cut[2..4].copy_from_slice(&23u16.to_be_bytes());
        cut[10..12].copy_from_slice(&[0, 0]);
        let sum = !crate::packet::checksum_fold(crate::packet::checksum_add(0, &cut[..20]));
        cut[10..12].copy_from_slice(&sum.to_be_bytes());
        for (backend, want) in [(crate::engine::Backend::Legacy, "DROP by a match of PREROUTING rule 1"), (crate::engine::Backend::Nft, "DROP by a match of PREROUTING rule 2")] {
            let options = Options { backend, ..gateway() };
            let (_, lines) = replay(&options, rules, "", std::slice::from_ref(&cut));
            assert!(lines[0].contains(want), "{backend:?}: {}", lines[0]);
        }
    }

    /// IPv6 DNAT, and MASQUERADE when no interface has an address of the family: the kernel
    /// drops.
    #[test]
    fn ipv6_dnat_and_masquerade_without_address() {
        let rules = "ip6tables -t nat -A PREROUTING -i eth0 -p udp --dport 5353 -j DNAT --to-destination [fd00:28::20]:53\n\
                     iptables -t nat -A POSTROUTING -o wan -j MASQUERADE\niptables -A FORWARD -j ACCEPT\n";
        let mut options = gateway();
        options.net.add_route("198.18.0.0/15=wan").unwrap();
        options.net.set_interface("tunFA=fd00:28::1/64").unwrap();
        options.net.set_interface("eth0=2001:db8::1/64").unwrap();
        let packets = [
            Builder::v6("2001:db8::7", "2001:db8::1").udp(4000, 5353, b"q"),
            Builder::v6("fd00:28::20", "2001:db8::7").udp(53, 4000, b"a"),
            Builder::v4("192.168.28.10", "198.18.0.1").udp(4000, 53, b"q"),
        ];
        let (sim, lines) = replay(&options, rules, "", &packets);
        assert!(lines[0].contains("now [2001:db8::7]:4000 > [fd00:28::20]:53"), "{}", lines[0]);
        assert!(lines[1].contains("now [2001:db8::1]:5353 > [2001:db8::7]:4000"), "{}", lines[1]);
        assert!(lines[2].contains("MASQUERADE: wan has no IPv4 address: dropped"), "{}", lines[2]);
        assert_eq!(sim.stats().hooks[0][crate::rules::Hook::Postrouting as usize].dropped.packets, 1);
        assert_eq!(counts(&sim, Family::Ipv4, TableKind::Filter), [1]);
    }
}
