// SPDX-License-Identifier: GPL-2.0-only
//! Chain traversal: what a compiled match and rule decide for a packet, and the walk through a
//! compiled table's chains that counts and finds the verdict.

use std::cell::Cell;

use seng_core::table::{EnclaveRef, EnclaveTable, StdPlatform};

use super::compile::{CMatch, CRule, CTarget, Compiled, PortCond, ADDR_OR_IFACE, FRAG, HAS_PROTO, INV_DST, INV_FRAG, INV_PROTO, INV_SRC};
use super::{Hook, Verdict};
use crate::packet::{proto, to_ip, Addr, Packet, L4};
use crate::rules::{ct_state, ConnmarkSpec, NatSpec, Policy, PortDirection};

/// A packet and where it is, as the rules see it; the targets change its marks.
pub(super) struct Ctx<'p, 'a> {
    pub(super) p: &'p Packet<'a>,
    pub(super) in_iface: u8,
    pub(super) out_iface: u8,
    /// The conntrack state bit.
    pub(super) ct: u8,
    /// The connection's SNAT / DNAT status bits, which `--ctstate` also tests.
    pub(super) ct_status: u8,
    /// The packet's mark.
    pub(super) mark: u32,
    /// The connection's mark; `None` without a connection.
    pub(super) ctmark: Option<u32>,
    /// A NOTRACK / CT --notrack target ran.
    pub(super) notrack: bool,
    /// Conntrack has run for the packet already (the loopback's second pass), so NOTRACK does
    /// nothing, as xt_CT leaves a packet with a connection alone.
    pub(super) tracked: bool,
    pub(super) enclaves: &'p EnclaveTable<StdPlatform>,
    /// What the enclave table says of the source, once a seng match asked (`None`: not yet):
    /// a packet meeting several seng rules looks its addresses up once per traversal.
    pub(super) src_enclave: Cell<Option<Option<EnclaveRef<'p>>>>,
    /// The same for the destination.
    pub(super) dst_enclave: Cell<Option<Option<EnclaveRef<'p>>>>,
}

impl<'p> Ctx<'p, '_> {
    /// The enclave at `addr` (the packet's source or destination, `memo` its answer so far).
    fn enclave(&self, memo: &Cell<Option<Option<EnclaveRef<'p>>>>, addr: Addr) -> Option<EnclaveRef<'p>> {
        if let Some(known) = memo.get() {
            return known;
        }
        let found = self.enclaves.lookup(&to_ip(self.p.family, addr));
        memo.set(Some(found));
        found
    }
}

/// Outcome of one match: holds, does not, or the packet must be dropped (`hotdrop`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Hit {
    Yes,
    No,
    Hotdrop,
}

impl CMatch {
    #[inline]
    pub(super) fn check(&self, c: &Ctx<'_, '_>) -> Hit {
        let p = c.p;
        // What of the transport header the match can read. Later fragments have none: the
        // x_tables matches and nftables' transport payloads do not match them, and x_tables'
        // tcp match drops a TCP fragment at offset 8 as an attempt to overwrite flags.
        if p.l4 == L4::Fragment {
            match self {
                CMatch::Ports { .. } if p.frag_offset == 1 && p.proto == proto::TCP => return Hit::Hotdrop,
                CMatch::Ports { .. } | CMatch::Payload { .. } | CMatch::Icmp { .. } | CMatch::Multiport { .. } => return Hit::No,
                CMatch::State { .. } | CMatch::Seng(_) | CMatch::Mark { .. } | CMatch::Connmark { .. } => {}
            }
        }
        let header = p.payload;
        let yes = match self {
            CMatch::Ports { sport, dport, flags } => {
                // xt_tcp / xt_udp read the whole header (20 / 8 bytes) or drop the packet.
                if p.l4 != L4::Complete {
                    return Hit::Hotdrop;
                }
                sport.holds(p.sport)
                    && dport.holds(p.dport)
                    && flags.is_none_or(|(mask, comp, inv)| ((p.tcp_flags & mask) == comp) != inv)
            }
            CMatch::Payload { sport, dport, flags } => {
                // Each payload expression loads its own bytes; a missing byte is no match.
                // A complete header's ports are the packet's (NAT may have rewritten them).
                let field = |at: usize| match p.l4 {
                    L4::Complete => Some(if at == 0 { p.sport } else { p.dport }),
                    _ => header.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]])),
                };
                let port_ok = |cond: &Option<PortCond>, at: usize| cond.as_ref().is_none_or(|c| field(at).is_some_and(|port| c.holds(port)));
                port_ok(sport, 0)
                    && port_ok(dport, 2)
                    && flags.is_none_or(|(mask, comp, inv)| header.get(13).is_some_and(|f| ((f & mask) == comp) != inv))
            }
            CMatch::Icmp { kind, code_min, code_max, inv } => {
                // xt_icmp / xt_icmp6 read the 8-byte ICMP header or drop the packet.
                if p.l4 != L4::Complete {
                    return Hit::Hotdrop;
                }
                let hit = *kind == 0xff || (p.icmp_type == *kind && p.icmp_code >= *code_min && p.icmp_code <= *code_max);
                hit != *inv
            }
            CMatch::Multiport { direction, ports, inv } => {
                // xt_multiport reads only the two ports (4 bytes), for any port protocol. A
                // complete header's ports are the packet's (NAT may have rewritten them).
                let (sport, dport) = match (p.l4, header.get(0..2), header.get(2..4)) {
                    (L4::Complete, _, _) => (p.sport, p.dport),
                    (_, Some(s), Some(d)) => (u16::from_be_bytes([s[0], s[1]]), u16::from_be_bytes([d[0], d[1]])),
                    _ => return Hit::Hotdrop,
                };
                let hit = ports.iter().any(|&(lo, hi)| {
                    let in_range = |port: u16| port >= lo && port <= hi;
                    match direction {
                        PortDirection::Source => in_range(sport),
                        PortDirection::Destination => in_range(dport),
                        PortDirection::Either => in_range(sport) || in_range(dport),
                    }
                });
                hit != *inv
            }
            CMatch::State { mask, inv } => {
                // NOTRACK earlier in the raw chain makes the packet UNTRACKED from then on.
                let ct = if c.notrack { ct_state::UNTRACKED } else { c.ct };
                ((ct | c.ct_status) & mask != 0) != *inv
            }
            CMatch::Mark { value, mask, inv } => (c.mark & mask == *value) != *inv,
            CMatch::Connmark { value, mask, inv } => c.ctmark.is_some_and(|m| (m & mask == *value) != *inv),
            CMatch::Seng(info) => {
                // seng_core::match_packet's decision, on the remembered lookups.
                let src = if info.needs_src() { c.enclave(&c.src_enclave, p.src) } else { None };
                let dst = if info.needs_dst() { c.enclave(&c.dst_enclave, p.dst) } else { None };
                seng_core::decide(info, p.family, src.as_ref(), dst.as_ref())
            }
        };
        if yes {
            Hit::Yes
        } else {
            Hit::No
        }
    }
}

impl CRule {
    /// `ip_packet_match`, then the matches in order.
    #[inline]
    pub(super) fn check(&self, c: &Ctx<'_, '_>) -> Hit {
        let p = c.p;
        // The interface bitmaps first: cheaper than the 128-bit address tests.
        if self.flags & ADDR_OR_IFACE != 0
            && (self.in_ok >> c.in_iface & 1 == 0
                || self.out_ok >> c.out_iface & 1 == 0
                || ((p.src & self.smask) != self.src) != (self.flags & INV_SRC != 0)
                || ((p.dst & self.dmask) != self.dst) != (self.flags & INV_DST != 0))
        {
            return Hit::No;
        }
        if self.flags & HAS_PROTO != 0 && (p.proto == self.proto) == (self.flags & INV_PROTO != 0) {
            return Hit::No;
        }
        if self.flags & FRAG != 0 && (p.frag_offset != 0) == (self.flags & INV_FRAG != 0) {
            return Hit::No;
        }
        for m in self.matches.iter() {
            match m.check(c) {
                Hit::Yes => {}
                other => return other,
            }
        }
        Hit::Yes
    }
}

/// Packet and byte counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counter {
    /// Packets.
    pub packets: u64,
    /// Bytes (IP packet lengths).
    pub bytes: u64,
}

impl Counter {
    #[inline]
    pub(super) fn add(&mut self, len: u32) {
        self.packets += 1;
        self.bytes += u64::from(len);
    }
}

/// Who decided: a rule (chain index, rule index in the chain), a policy, or a match's hotdrop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decider {
    /// A terminating rule.
    Rule(u16, u32),
    /// The policy of a built-in chain.
    Policy(u16),
    /// A match of this rule dropped the packet (truncated header or evil fragment).
    Hotdrop(u16, u32),
}

/// One step of a traced traversal: a rule matched whose target did not decide (jump, goto,
/// LOG, no target).
#[derive(Clone, Copy, Debug)]
pub(super) struct Step {
    pub(super) chain: u16,
    pub(super) rule: u32,
}

impl Compiled {

    /// Counters of every rule, in chain and rule order.
    pub fn counters(&self) -> &[Counter] {
        &self.counters
    }

    /// Policy counters of every chain (zero for user chains).
    pub fn policy_counters(&self) -> &[Counter] {
        &self.policy_counters
    }

    /// The NAT target of the rule that decided, if it was one.
    pub(super) fn nat_of(&self, decider: Decider) -> Option<&NatSpec> {
        let Decider::Rule(chain, rule) = decider else { return None };
        let index = (self.chains.get(usize::from(chain))?.start + rule) as usize;
        match self.rules.get(index)?.target {
            CTarget::Nat(n) => self.nats.get(n as usize),
            _ => None,
        }
    }

    /// The decision of the built-in chain of `hook` if it has no rules: its policy, with no
    /// packet context to build (gateways often leave OUTPUT or FORWARD empty).
    pub(super) fn policy_only(&mut self, hook: Hook) -> Option<(Verdict, Decider)> {
        let chain = self.hook_chain[hook as usize]?;
        if self.chains[usize::from(chain)].len != 0 {
            return None;
        }
        self.steps.clear();
        Some(self.policy(chain))
    }

    /// Runs the packet through the built-in chain of `hook` (which the table must have),
    /// counting; `trace` keeps the steps.
    pub(super) fn run(&mut self, hook: Hook, c: &mut Ctx<'_, '_>, trace: bool) -> (Verdict, Decider) {
        self.stack.clear();
        self.steps.clear();
        let Some(start) = self.hook_chain[hook as usize] else {
            return (Verdict::Accept, Decider::Policy(0));
        };
        let mut chain = start;
        let mut at = 0u32;
        loop {
            let ch = self.chains[usize::from(chain)];
            // The chain's first rule from `at` on that does not pass the packet by: one walk
            // over a slice, not an index (and its bounds checks) per rule.
            let first = (ch.start + at) as usize;
            let rest = self.rules.get(first..(ch.start + ch.len) as usize).unwrap_or_default();
            let found = rest.iter().zip(first..).find_map(|(rule, index)| match rule.check(c) {
                Hit::No => None,
                hit => Some((index, hit)),
            });
            let Some((index, hit)) = found else {
                // Fell off the end: back to the caller, or the built-in chain's policy.
                match self.stack.pop() {
                    Some((caller, next)) => {
                        chain = caller;
                        at = next;
                        continue;
                    }
                    None => return self.policy(start),
                }
            };
            at = index as u32 - ch.start;
            if hit == Hit::Hotdrop {
                return (Verdict::Drop, Decider::Hotdrop(chain, at));
            }
            let rule = &self.rules[index];
            self.counters[index].add(c.p.len);
            let target = rule.target;
            if trace && !matches!(target, CTarget::Accept | CTarget::Drop | CTarget::Reject | CTarget::Nat(_)) {
                self.steps.push(Step { chain, rule: at });
            }
            match target {
                CTarget::Continue | CTarget::Log => at += 1,
                CTarget::Notrack => {
                    c.notrack |= !c.tracked;
                    at += 1;
                }
                CTarget::Mark { value, mask } => {
                    c.mark = (c.mark & !mask) ^ value;
                    at += 1;
                }
                CTarget::Connmark(spec) => {
                    if let Some(ctmark) = c.ctmark.as_mut() {
                        match spec {
                            ConnmarkSpec::Set { value, mask } => *ctmark = (*ctmark & !mask) ^ value,
                            ConnmarkSpec::Save { nfmask, ctmask } => *ctmark = (*ctmark & !ctmask) ^ (c.mark & nfmask),
                            ConnmarkSpec::Restore { nfmask, ctmask } => c.mark = (c.mark & !nfmask) ^ (*ctmark & ctmask),
                        }
                    }
                    at += 1;
                }
                CTarget::Nat(_) => return (Verdict::Accept, Decider::Rule(chain, at)),
                CTarget::Accept => return (Verdict::Accept, Decider::Rule(chain, at)),
                CTarget::Drop => return (Verdict::Drop, Decider::Rule(chain, at)),
                CTarget::Reject => return (Verdict::Reject, Decider::Rule(chain, at)),
                CTarget::Return => match self.stack.pop() {
                    Some((caller, next)) => {
                        chain = caller;
                        at = next;
                    }
                    None => return self.policy(start),
                },
                CTarget::Jump(to) => {
                    self.stack.push((chain, at + 1));
                    chain = to;
                    at = 0;
                }
                CTarget::Goto(to) => {
                    chain = to;
                    at = 0;
                }
            }
        }
    }

    pub(super) fn policy(&mut self, chain: u16) -> (Verdict, Decider) {
        let verdict = match self.chains[usize::from(chain)].policy {
            Some(Policy::Drop) => Verdict::Drop,
            _ => Verdict::Accept,
        };
        (verdict, Decider::Policy(chain))
    }
}
