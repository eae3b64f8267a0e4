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
    /// After nat in OUTPUT: a new route if the destination changed.
    Reroute,
    /// The connection is confirmed (the hooks' last priority).
    Confirm,
}

use Step::{Confirm, Nat, Reroute, Table, Track};

const PREROUTING: &[Step] = &[Table(TableKind::Raw), Track, Table(TableKind::Mangle), Nat];
const INPUT: &[Step] = &[Table(TableKind::Mangle), Table(TableKind::Filter), Nat, Confirm];
const FORWARD: &[Step] = &[Table(TableKind::Mangle), Table(TableKind::Filter)];
const OUTPUT: &[Step] = &[Table(TableKind::Raw), Track, Table(TableKind::Mangle), Nat, Reroute, Table(TableKind::Filter)];
const POSTROUTING: &[Step] = &[Table(TableKind::Mangle), Nat, Confirm];

/// A packet walking the hooks, with what it needs of the simulator.
pub(super) struct Walk<'s, 'a> {
    /// The family's tables, `None` where not loaded.
    pub(super) tables: &'s mut [Option<Compiled>; 4],
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
    /// Conntrack gave the packet a connection.
    has_conn: bool,
    loopback: bool,
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
            has_conn: false,
            loopback: false,
        }
    }

    /// Takes the packet through every hook it passes.
    pub(super) fn run(&mut self) {
        let family = self.p.family;
        match self.router.arrival(family, self.p.src) {
            Some(in_iface) => {
                self.in_iface = in_iface;
                if !self.hook(Hook::Prerouting, PREROUTING) {
                    return;
                }
                if self.router.delivered(family, self.p.dst) {
                    self.hook(Hook::Input, INPUT);
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
                if self.hook(Hook::Forward, FORWARD) {
                    self.hook(Hook::Postrouting, POSTROUTING);
                }
            }
            None => {
                self.loopback = self.router.is_local(family, self.p.dst);
                self.out_iface = if self.loopback { LO } else { self.router.route(family, self.p.dst) };
                if !self.hook(Hook::Output, OUTPUT) || !self.hook(Hook::Postrouting, POSTROUTING) || !self.loopback {
                    return;
                }
                // Back in through lo with its connection: conntrack does not run again.
                (self.in_iface, self.out_iface) = (LO, 0);
                let again: &[Step] = &[Table(TableKind::Raw), Table(TableKind::Mangle), Nat];
                if self.hook(Hook::Prerouting, again) {
                    self.hook(Hook::Input, INPUT);
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
                Confirm => {
                    self.conntrack.confirm();
                    Verdict::Accept
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
        verdict == Verdict::Accept
    }

    fn track(&mut self) {
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
            enclaves: self.enclaves,
        };
        let tracing = self.trace.is_some();
        let (verdict, decider) = table.run(hook, &mut ctx, tracing);
        if let Decider::Policy(chain) = decider {
            table.policy_counters[usize::from(chain)].add(self.p.len);
        }
        self.mark = ctx.mark;
        self.notrack = ctx.notrack;
        if let Some(mark) = ctx.ctmark.filter(|m| Some(*m) != ctmark) {
            self.conntrack.set_mark(mark);
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
                .iface_addr(self.out_iface, family, self.p.dst)
                .ok_or_else(|| format!("MASQUERADE: {} has no {} address", iface_name(self.router, self.out_iface), family_word(family)))?,
            NatKind::Redirect if hook == Hook::Output => loopback(family),
            NatKind::Redirect => self
                .router
                .first_addr(self.in_iface, family)
                .ok_or_else(|| format!("REDIRECT: {} has no {} address", iface_name(self.router, self.in_iface), family_word(family)))?,
        };
        if self.conntrack.bind(manip, addr, spec.ports.map(|r| (r.min, r.max))) {
            Ok(())
        } else {
            Err(format!("{}: no free address and port left for the connection", spec.kind.name()))
        }
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
