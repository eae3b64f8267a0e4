// SPDX-License-Identifier: GPL-2.0-only
//! Rule compilation: each parsed rule becomes a `CRule` (address masks, interface bitmaps, flag
//! bits, matches with their options resolved) and each table a [`Compiled`] with its counters,
//! once before the replay.

use seng_core::SengMtInfo;

use super::traverse::{Counter, Step};
use super::Backend;
use crate::net::Router;
use crate::packet::{self, Addr};
use crate::rules::{ConnmarkSpec, Hook, MatchSpec, NatSpec, Neg, Policy, PortDirection, PortRange, RuleSpec, Table, TableKind, Target};


#[derive(Clone, Copy, Debug, Default)]
pub(super) struct PortCond {
    pub(super) min: u16,
    pub(super) max: u16,
    pub(super) inv: bool,
}

impl PortCond {
    pub(super) fn any() -> PortCond {
        PortCond { min: 0, max: 0xffff, inv: false }
    }

    pub(super) fn of(p: &Option<Neg<PortRange>>) -> PortCond {
        match p {
            Some(n) => PortCond { min: n.value.min, max: n.value.max, inv: n.negated },
            None => PortCond::any(),
        }
    }

    #[inline]
    pub(super) fn holds(&self, port: u16) -> bool {
        (port >= self.min && port <= self.max) != self.inv
    }
}

/// A compiled match.
#[derive(Debug)]
pub(super) enum CMatch {
    /// `-m tcp` / `-m udp` as x_tables runs it: ports, and TCP flags (mask, comp, inverted).
    Ports { sport: PortCond, dport: PortCond, flags: Option<(u8, u8, bool)> },
    /// `-m tcp` / `-m udp` as iptables-nft translates it: one payload test per option given.
    Payload { sport: Option<PortCond>, dport: Option<PortCond>, flags: Option<(u8, u8, bool)> },
    Icmp { kind: u8, code_min: u8, code_max: u8, inv: bool },
    Multiport { direction: PortDirection, ports: Box<[(u16, u16)]>, inv: bool },
    State { mask: u8, inv: bool },
    Seng(Box<SengMtInfo>),
    /// `-m mark`: (mark & mask) == value, inverted.
    Mark { value: u32, mask: u32, inv: bool },
    /// `-m connmark`: the same on the connection's mark; never with no connection.
    Connmark { value: u32, mask: u32, inv: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CTarget {
    Continue,
    Log,
    Accept,
    Drop,
    Reject,
    Return,
    Jump(u16),
    Goto(u16),
    /// A NAT target (terminating: ACCEPT once the binding is made), by index into
    /// [`Compiled`]'s NAT specs.
    Nat(u32),
    Notrack,
    Mark { value: u32, mask: u32 },
    Connmark(ConnmarkSpec),
}

pub(super) const INV_SRC: u8 = 1;
pub(super) const INV_DST: u8 = 2;
pub(super) const HAS_PROTO: u8 = 4;
pub(super) const INV_PROTO: u8 = 8;
pub(super) const FRAG: u8 = 16;
pub(super) const INV_FRAG: u8 = 32;
/// The rule tests addresses or interfaces (most rules test neither, and skip those tests).
pub(super) const ADDR_OR_IFACE: u8 = 64;

#[derive(Debug)]
pub(super) struct CRule {
    pub(super) src: Addr,
    pub(super) smask: Addr,
    pub(super) dst: Addr,
    pub(super) dmask: Addr,
    /// Bit i set: the rule's `-i` admits interface id i.
    pub(super) in_ok: u64,
    pub(super) out_ok: u64,
    pub(super) proto: u8,
    pub(super) flags: u8,
    pub(super) matches: Box<[CMatch]>,
    pub(super) target: CTarget,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct CChain {
    pub(super) start: u32,
    pub(super) len: u32,
    pub(super) policy: Option<Policy>,
}



/// A table compiled for replay, with its counters.
pub struct Compiled {
    /// Which table.
    pub(super) kind: TableKind,
    /// The chain of each hook (by [`Hook`] number), if the table has one there.
    pub(super) hook_chain: [Option<u16>; 5],
    /// The options of the NAT targets.
    pub(super) nats: Vec<NatSpec>,
    pub(super) chains: Vec<CChain>,
    pub(super) names: Vec<String>,
    pub(super) rules: Vec<CRule>,
    /// Each rule's `iptables-save` text, for traces.
    pub(super) texts: Vec<String>,
    /// Per rule.
    pub(super) counters: Vec<Counter>,
    /// Per chain (used for built-in chains' policies).
    pub(super) policy_counters: Vec<Counter>,
    pub(super) stack: Vec<(u16, u32)>,
    pub(super) steps: Vec<Step>,
}

pub(super) fn mask_bits(h: &seng_core::HostMask) -> (Addr, Addr) {
    let mask = packet::from_ip(h.mask());
    (packet::from_ip(h.addr()) & mask, mask)
}

pub(super) fn iface_bits(router: &Router, iface: &Option<Neg<String>>) -> u64 {
    let Some(i) = iface else { return u64::MAX };
    let mut bits = 0u64;
    for id in 0..router.names().len() {
        if router.iface_matches(&i.value, id as u8) != i.negated {
            bits |= 1 << id;
        }
    }
    // Interfaces beyond the known ones never occur in packets.
    bits
}

impl Compiled {
    /// Which table this is.
    pub fn kind(&self) -> TableKind {
        self.kind
    }

    /// Whether the table has a built-in chain at `hook`.
    #[inline]
    pub fn has_hook(&self, hook: Hook) -> bool {
        self.hook_chain[hook as usize].is_some()
    }

    /// Compiles `table` as `backend` loads it; interface names are resolved against `router`.
    pub fn new(table: &Table, router: &Router, backend: Backend) -> Compiled {
        let chain_index = |name: &str| table.chains.iter().position(|c| c.name == name).unwrap_or_default() as u16;
        let mut hook_chain = [None; 5];
        for (i, hook) in table.kind.hooks().iter().enumerate() {
            hook_chain[*hook as usize] = Some(i as u16);
        }
        let mut c = Compiled {
            kind: table.kind,
            hook_chain,
            nats: Vec::new(),
            chains: Vec::new(),
            names: table.chains.iter().map(|c| c.name.clone()).collect(),
            rules: Vec::new(),
            texts: Vec::new(),
            counters: Vec::new(),
            policy_counters: vec![Counter::default(); table.chains.len()],
            stack: Vec::with_capacity(table.chains.len() + 1),
            steps: Vec::new(),
        };
        for chain in &table.chains {
            c.chains.push(CChain { start: c.rules.len() as u32, len: chain.rules.len() as u32, policy: chain.policy });
            for rule in &chain.rules {
                let mut compiled = compile_rule(rule, router, &chain_index, backend);
                if let Target::Nat(spec) = &rule.target {
                    compiled.target = CTarget::Nat(c.nats.len() as u32);
                    c.nats.push(spec.clone());
                }
                c.rules.push(compiled);
                c.texts.push(rule.save(&chain.name));
            }
        }
        c.counters = vec![Counter::default(); c.rules.len()];
        c
    }
}

/// The `tcp` / `udp` match as `backend` runs it. iptables-nft translates ports and flags into
/// payload tests, but keeps a match without options as the x_tables match (through
/// nft_compat), which drops a packet whose header is cut short (seen in e2e-random seed 49).
pub(super) fn ports(backend: Backend, sport: &Option<Neg<PortRange>>, dport: &Option<Neg<PortRange>>, flags: Option<(u8, u8, bool)>) -> CMatch {
    let translated = sport.is_some() || dport.is_some() || flags.is_some();
    match backend {
        Backend::Nft if translated => {
            CMatch::Payload { sport: sport.as_ref().map(|_| PortCond::of(sport)), dport: dport.as_ref().map(|_| PortCond::of(dport)), flags }
        }
        Backend::Legacy | Backend::Nft => CMatch::Ports { sport: PortCond::of(sport), dport: PortCond::of(dport), flags },
    }
}

pub(super) fn compile_rule(rule: &RuleSpec, router: &Router, chain_index: &dyn Fn(&str) -> u16, backend: Backend) -> CRule {
    let mut flags = 0;
    let (src, smask) = match &rule.src {
        Some(a) => {
            if a.negated {
                flags |= INV_SRC;
            }
            mask_bits(&a.value)
        }
        None => (0, 0),
    };
    let (dst, dmask) = match &rule.dst {
        Some(a) => {
            if a.negated {
                flags |= INV_DST;
            }
            mask_bits(&a.value)
        }
        None => (0, 0),
    };
    let mut proto = 0;
    if let Some(p) = &rule.proto {
        flags |= HAS_PROTO;
        if p.negated {
            flags |= INV_PROTO;
        }
        proto = p.value;
    }
    if let Some(negated) = rule.fragment {
        flags |= FRAG;
        if negated {
            flags |= INV_FRAG;
        }
    }
    let matches = rule
        .matches
        .iter()
        .filter_map(|m| match m {
            MatchSpec::Tcp(t) => Some(ports(backend, &t.sport, &t.dport, t.flags.as_ref().map(|f| (f.value.0, f.value.1, f.negated)))),
            MatchSpec::Udp(u) => Some(ports(backend, &u.sport, &u.dport, None)),
            MatchSpec::Icmp(Some(t)) | MatchSpec::Icmp6(Some(t)) => {
                Some(CMatch::Icmp { kind: t.value.kind, code_min: t.value.code_min, code_max: t.value.code_max, inv: t.negated })
            }
            MatchSpec::Multiport(Some(m)) => Some(CMatch::Multiport {
                direction: m.direction,
                ports: m.ports.iter().map(|p| (p.min, p.max)).collect(),
                inv: m.negated,
            }),
            MatchSpec::Conntrack(Some(s)) | MatchSpec::State(Some(s)) => Some(CMatch::State { mask: s.value, inv: s.negated }),
            MatchSpec::Seng(r) => Some(CMatch::Seng(Box::new(SengMtInfo::from(r)))),
            MatchSpec::Mark(Some(m)) => Some(CMatch::Mark { value: m.value.0, mask: m.value.1, inv: m.negated }),
            MatchSpec::Connmark(Some(m)) => Some(CMatch::Connmark { value: m.value.0, mask: m.value.1, inv: m.negated }),
            // Comments do not match anything; empty matches were rejected by the parser.
            MatchSpec::Comment(_)
            | MatchSpec::Icmp(None)
            | MatchSpec::Icmp6(None)
            | MatchSpec::Multiport(None)
            | MatchSpec::Conntrack(None)
            | MatchSpec::State(None)
            | MatchSpec::Mark(None)
            | MatchSpec::Connmark(None) => None,
        })
        .collect();
    let target = match &rule.target {
        Target::None => CTarget::Continue,
        Target::Log(_) => CTarget::Log,
        Target::Accept => CTarget::Accept,
        Target::Drop => CTarget::Drop,
        Target::Reject(_) => CTarget::Reject,
        Target::Return => CTarget::Return,
        Target::Jump(to) => CTarget::Jump(chain_index(to)),
        Target::Goto(to) => CTarget::Goto(chain_index(to)),
        // The index is filled in by the table's compilation.
        Target::Nat(_) => CTarget::Nat(0),
        Target::Notrack { .. } => CTarget::Notrack,
        Target::Mark { value, mask } => CTarget::Mark { value: *value, mask: *mask },
        Target::Connmark(c) => CTarget::Connmark(*c),
    };
    let (in_ok, out_ok) = (iface_bits(router, &rule.in_iface), iface_bits(router, &rule.out_iface));
    if smask != 0 || dmask != 0 || flags & (INV_SRC | INV_DST) != 0 || in_ok != u64::MAX || out_ok != u64::MAX {
        flags |= ADDR_OR_IFACE;
    }
    CRule {
        src,
        smask,
        dst,
        dmask,
        in_ok,
        out_ok,
        proto,
        flags,
        matches,
        target,
    }
}
