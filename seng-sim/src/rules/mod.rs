// SPDX-License-Identifier: GPL-2.0-only
//! The tables as an admin wrote them (raw, mangle, nat and filter): chains, policies and rules
//! with their matches and targets, for IPv4 (`iptables`) and IPv6 (`ip6tables`), printed back
//! the way `iptables-save` and `iptables -L -v -n -x` print them.
//!
//! [`mod@file`] reads rule files into a [`Ruleset`] (a command's words are read in `command`,
//! applied in `apply`, a rule's options read in `rule`); [`crate::engine`] compiles it for replay.
//! This file owns the model and its `iptables-save` / `iptables -L` spelling.

mod apply;
mod command;
pub mod file;
pub mod names;
mod rule;

use std::fmt::Write as _;

use seng_core::{Family, HostMask};

pub use names::{IcmpType, RejectWith};
pub use file::{parse_rules, RulesError};

/// The names of built-in chains in any table (the netfilter hooks).
pub const BUILTIN_CHAINS: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// A netfilter hook, numbered as the kernel's `NF_INET_*` (which is also the order iptables
/// lists a table's built-in chains in).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hook {
    /// PREROUTING: every arriving packet, before the routing decision.
    Prerouting = 0,
    /// INPUT: delivered to the gateway.
    Input = 1,
    /// FORWARD: routed through.
    Forward = 2,
    /// OUTPUT: sent by the gateway.
    Output = 3,
    /// POSTROUTING: every departing packet.
    Postrouting = 4,
}

impl Hook {
    /// All hooks in the kernel's order.
    pub const ALL: [Hook; 5] = [Hook::Prerouting, Hook::Input, Hook::Forward, Hook::Output, Hook::Postrouting];

    /// The built-in chain's name.
    pub fn name(self) -> &'static str {
        BUILTIN_CHAINS[self as usize]
    }

    /// The hook of a built-in chain's name.
    pub fn of_name(name: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|h| h.name() == name)
    }

    /// As a bit of a hook mask.
    pub fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// An iptables table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TableKind {
    /// `raw`: before conntrack (priority -300), for NOTRACK.
    Raw = 0,
    /// `mangle`: marks (priority -150).
    Mangle = 1,
    /// `nat`: address translation, seen by a connection's first packet only (DNAT at -100,
    /// SNAT at 100).
    Nat = 2,
    /// `filter`: the verdicts (priority 0).
    Filter = 3,
}

impl TableKind {
    /// All tables, in the order a report lists them.
    pub const ALL: [TableKind; 4] = [TableKind::Raw, TableKind::Mangle, TableKind::Nat, TableKind::Filter];

    /// Its name after `-t` and `*`.
    pub fn name(self) -> &'static str {
        match self {
            TableKind::Raw => "raw",
            TableKind::Mangle => "mangle",
            TableKind::Nat => "nat",
            TableKind::Filter => "filter",
        }
    }

    /// The table named `name`.
    pub fn of_name(name: &str) -> Option<TableKind> {
        TableKind::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Its built-in chains (hooks), in listing order.
    pub fn hooks(self) -> &'static [Hook] {
        match self {
            TableKind::Raw => &[Hook::Prerouting, Hook::Output],
            TableKind::Mangle => &Hook::ALL,
            TableKind::Nat => &[Hook::Prerouting, Hook::Input, Hook::Output, Hook::Postrouting],
            TableKind::Filter => &[Hook::Input, Hook::Forward, Hook::Output],
        }
    }

    /// Whether `name` is one of its built-in chains.
    pub fn has_builtin(self, name: &str) -> bool {
        self.hooks().iter().any(|h| h.name() == name)
    }

    /// Its built-in chain names, for messages: `PREROUTING, OUTPUT`.
    pub fn builtin_list(self) -> String {
        self.hooks().iter().map(|h| h.name()).collect::<Vec<_>>().join(", ")
    }
}

/// A built-in chain's policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// `ACCEPT`.
    Accept,
    /// `DROP`.
    Drop,
}

impl Policy {
    /// The policy's name.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Accept => "ACCEPT",
            Policy::Drop => "DROP",
        }
    }
}

/// A value with an optional `!` before its option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neg<T> {
    /// The value.
    pub value: T,
    /// `!` given.
    pub negated: bool,
}

/// An inclusive port range (`a:b`; a single port has `min == max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub min: u16,
    /// Last port.
    pub max: u16,
}

impl PortRange {
    fn save(&self) -> String {
        if self.min == self.max {
            self.min.to_string()
        } else {
            format!("{}:{}", self.min, self.max)
        }
    }
}

/// Connection tracking states, as bits of a mask.
pub mod ct_state {
    /// No conntrack entry (malformed, or a packet that cannot start one).
    pub const INVALID: u8 = 1 << 0;
    /// First packets of a connection, before a reply was seen.
    pub const NEW: u8 = 1 << 1;
    /// The connection has seen packets both ways, or this is a reply.
    pub const ESTABLISHED: u8 = 1 << 2;
    /// Related to a tracked connection (an ICMP error quoting it).
    pub const RELATED: u8 = 1 << 3;
    /// Exempted from tracking (raw table NOTRACK; never produced by the model).
    pub const UNTRACKED: u8 = 1 << 4;
    /// Source-NATed (never produced: NAT is not modelled).
    pub const SNAT: u8 = 1 << 5;
    /// Destination-NATed (never produced).
    pub const DNAT: u8 = 1 << 6;
    /// Names in the order iptables prints them.
    pub const NAMES: [(&str, u8); 7] = [
        ("INVALID", INVALID),
        ("NEW", NEW),
        ("RELATED", RELATED),
        ("ESTABLISHED", ESTABLISHED),
        ("UNTRACKED", UNTRACKED),
        ("SNAT", SNAT),
        ("DNAT", DNAT),
    ];

    /// A mask as iptables prints it, e.g. `RELATED,ESTABLISHED`.
    pub fn names(mask: u8) -> String {
        NAMES.iter().filter(|(_, bit)| mask & bit != 0).map(|(n, _)| *n).collect::<Vec<_>>().join(",")
    }
}

/// Which ports `-m multiport` compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortDirection {
    /// `--sports`.
    Source,
    /// `--dports`.
    Destination,
    /// `--ports`: either.
    Either,
}

impl PortDirection {
    /// The option's name without dashes, as save and list print it.
    fn name(self) -> &'static str {
        match self {
            PortDirection::Source => "sports",
            PortDirection::Destination => "dports",
            PortDirection::Either => "ports",
        }
    }
}

/// `-m tcp` options (also the implicit match of `-p tcp --dport …`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpSpec {
    /// `--sport`.
    pub sport: Option<Neg<PortRange>>,
    /// `--dport`.
    pub dport: Option<Neg<PortRange>>,
    /// `--tcp-flags MASK COMP` or `--syn`: (mask, comp).
    pub flags: Option<Neg<(u8, u8)>>,
}

/// `-m udp` options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdpSpec {
    /// `--sport`.
    pub sport: Option<Neg<PortRange>>,
    /// `--dport`.
    pub dport: Option<Neg<PortRange>>,
}

/// `-m multiport` options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultiportSpec {
    /// Which ports.
    pub direction: PortDirection,
    /// Up to 15 ports, a range counting two.
    pub ports: Vec<PortRange>,
    /// `!` given.
    pub negated: bool,
}

/// One `-m` match of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatchSpec {
    /// `-m tcp`.
    Tcp(TcpSpec),
    /// `-m udp`.
    Udp(UdpSpec),
    /// `-m icmp --icmp-type` (IPv4).
    Icmp(Option<Neg<IcmpType>>),
    /// `-m icmp6 --icmpv6-type` (IPv6).
    Icmp6(Option<Neg<IcmpType>>),
    /// `-m multiport`.
    Multiport(Option<MultiportSpec>),
    /// `-m conntrack --ctstate`: mask of [`ct_state`] bits.
    Conntrack(Option<Neg<u8>>),
    /// `-m state --state`.
    State(Option<Neg<u8>>),
    /// `-m comment --comment`.
    Comment(Option<String>),
    /// `-m seng`.
    Seng(seng_core::Rule),
    /// `-m mark --mark VALUE[/MASK]`: (value, mask).
    Mark(Option<Neg<(u32, u32)>>),
    /// `-m connmark --mark VALUE[/MASK]`: the connection's mark.
    Connmark(Option<Neg<(u32, u32)>>),
}

/// ` 0x1` or ` 0x1/0xff`, as libxt_mark prints a mark.
fn mark_text(value: u32, mask: u32) -> String {
    if mask == u32::MAX {
        format!(" {value:#x}")
    } else {
        format!(" {value:#x}/{mask:#x}")
    }
}

/// `-j LOG` options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSpec {
    /// `--log-prefix`.
    pub prefix: String,
    /// `--log-level` (syslog level, default 4 = warning).
    pub level: u8,
    /// `--log-tcp-sequence` etc. as the kernel's flag bits.
    pub flags: u8,
}

/// LOG flag bits and their options, in save order.
pub const LOG_FLAGS: [(&str, u8); 5] = [
    ("--log-tcp-sequence", 0x01),
    ("--log-tcp-options", 0x02),
    ("--log-ip-options", 0x04),
    ("--log-uid", 0x08),
    ("--log-macdecode", 0x20),
];

/// What a rule does when it matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// No `-j`: the rule only counts.
    None,
    /// `-j ACCEPT`.
    Accept,
    /// `-j DROP`.
    Drop,
    /// `-j RETURN`.
    Return,
    /// `-j REJECT`.
    Reject(RejectWith),
    /// `-j LOG` (non-terminating).
    Log(LogSpec),
    /// `-j CHAIN`.
    Jump(String),
    /// `-g CHAIN`.
    Goto(String),
    /// `-j DNAT`, `-j SNAT`, `-j MASQUERADE`, `-j REDIRECT` (nat table).
    Nat(NatSpec),
    /// `-j CT --notrack` or `-j NOTRACK` (raw table): the packet is not tracked.
    Notrack {
        /// Written as `NOTRACK` (iptables keeps the alias's name).
        alias: bool,
    },
    /// `-j MARK`: the packet's mark becomes `(mark & !mask) ^ value`.
    Mark {
        /// Bits set (xored in after masking).
        value: u32,
        /// Bits cleared first.
        mask: u32,
    },
    /// `-j CONNMARK`.
    Connmark(ConnmarkSpec),
}

/// Which address a NAT target rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatKind {
    /// `SNAT --to-source`.
    Snat,
    /// `DNAT --to-destination`.
    Dnat,
    /// `MASQUERADE`: SNAT to the outgoing interface's address.
    Masquerade,
    /// `REDIRECT`: DNAT to the gateway itself (the arrival interface's address, or loopback).
    Redirect,
}

impl NatKind {
    /// The target's name.
    pub fn name(self) -> &'static str {
        match self {
            NatKind::Snat => "SNAT",
            NatKind::Dnat => "DNAT",
            NatKind::Masquerade => "MASQUERADE",
            NatKind::Redirect => "REDIRECT",
        }
    }

    /// Whether it rewrites the source (else the destination).
    pub fn is_source(self) -> bool {
        matches!(self, NatKind::Snat | NatKind::Masquerade)
    }

    /// The hooks the kernel allows it in.
    pub fn hooks(self) -> u8 {
        match self {
            NatKind::Snat => Hook::Postrouting.bit() | Hook::Input.bit(),
            NatKind::Masquerade => Hook::Postrouting.bit(),
            NatKind::Dnat | NatKind::Redirect => Hook::Prerouting.bit() | Hook::Output.bit(),
        }
    }
}

/// A NAT target's options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatSpec {
    /// Which target.
    pub kind: NatKind,
    /// `--to-source` / `--to-destination` addresses: first and last of the range.
    pub addrs: Option<(std::net::IpAddr, std::net::IpAddr)>,
    /// The port range (`:PORT[-PORT]`, or `--to-ports`).
    pub ports: Option<PortRange>,
    /// `--random`.
    pub random: bool,
    /// `--random-fully`.
    pub random_fully: bool,
    /// `--persistent`.
    pub persistent: bool,
}

impl NatSpec {
    /// The range as iptables prints it: `10.0.0.1-10.0.0.3:80-81`, `[fd00::1]:80`.
    fn range(&self) -> String {
        let mut out = String::new();
        let bracket = self.ports.is_some() && self.addrs.is_some_and(|(a, _)| a.is_ipv6());
        if let Some((min, max)) = self.addrs {
            let one = |a: std::net::IpAddr| if bracket { format!("[{a}]") } else { a.to_string() };
            out.push_str(&one(min));
            if max != min {
                let _ = write!(out, "-{}", one(max));
            }
        }
        if let Some(p) = self.ports {
            let _ = write!(out, ":{}", p.min);
            if p.max != p.min {
                let _ = write!(out, "-{}", p.max);
            }
        }
        out
    }

    fn ports_text(&self) -> Option<String> {
        self.ports.map(|p| if p.min == p.max { p.min.to_string() } else { format!("{}-{}", p.min, p.max) })
    }
}

/// What `-j CONNMARK` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnmarkSpec {
    /// `--set-xmark VALUE/MASK`: ctmark = (ctmark & !mask) ^ value.
    Set {
        /// Bits xored in.
        value: u32,
        /// Bits cleared first.
        mask: u32,
    },
    /// `--save-mark`: ctmark = (ctmark & !ctmask) ^ (mark & nfmask).
    Save {
        /// `--nfmask`.
        nfmask: u32,
        /// `--ctmask`.
        ctmask: u32,
    },
    /// `--restore-mark`: mark = (mark & !nfmask) ^ (ctmark & ctmask).
    Restore {
        /// `--nfmask`.
        nfmask: u32,
        /// `--ctmask`.
        ctmask: u32,
    },
}

impl Target {
    /// The name in the `target` column of `iptables -L`.
    pub fn list_name(&self) -> &str {
        match self {
            Target::None => "",
            Target::Accept => "ACCEPT",
            Target::Drop => "DROP",
            Target::Return => "RETURN",
            Target::Reject(_) => "REJECT",
            Target::Log(_) => "LOG",
            Target::Jump(chain) | Target::Goto(chain) => chain,
            Target::Nat(n) => n.kind.name(),
            Target::Notrack { alias: true } => "NOTRACK",
            Target::Notrack { alias: false } => "CT",
            Target::Mark { .. } => "MARK",
            Target::Connmark(_) => "CONNMARK",
        }
    }

    /// The hooks the kernel allows the target in (a bit per [`Hook`]), and the table it
    /// must be in, if it is restricted.
    pub fn allowed(&self) -> (u8, Option<TableKind>) {
        const ALL: u8 = 0x1f;
        match self {
            Target::Reject(_) => (Hook::Input.bit() | Hook::Forward.bit() | Hook::Output.bit(), Some(TableKind::Filter)),
            Target::Nat(n) => (n.kind.hooks(), Some(TableKind::Nat)),
            Target::Notrack { .. } => (ALL, Some(TableKind::Raw)),
            _ => (ALL, None),
        }
    }

    /// The chain jumped or gone to, if any.
    pub fn chain(&self) -> Option<&str> {
        match self {
            Target::Jump(chain) | Target::Goto(chain) => Some(chain),
            _ => None,
        }
    }
}

/// One rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSpec {
    /// The line of the rules file it came from.
    pub line: usize,
    /// `-s`.
    pub src: Option<Neg<HostMask>>,
    /// `-d`.
    pub dst: Option<Neg<HostMask>>,
    /// `-i`, possibly ending in the `+` wildcard.
    pub in_iface: Option<Neg<String>>,
    /// `-o`.
    pub out_iface: Option<Neg<String>>,
    /// `-p`; `None` is `all`.
    pub proto: Option<Neg<u8>>,
    /// `-f` (IPv4): `Some(negated)`.
    pub fragment: Option<bool>,
    /// The `-m` matches in the order they were loaded.
    pub matches: Vec<MatchSpec>,
    /// `-j` / `-g`.
    pub target: Target,
}

/// A chain: built-in with a policy, or user-defined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// The name.
    pub name: String,
    /// The policy of a built-in chain; `None` for a user chain.
    pub policy: Option<Policy>,
    /// The rules, in order.
    pub rules: Vec<RuleSpec>,
}

/// One table of one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// IPv4 or IPv6.
    pub family: Family,
    /// Which table.
    pub kind: TableKind,
    /// Named in the rules file (a `*nat` block, a `-t nat` command): the kernel has it loaded
    /// and packets pass it. The filter table is always there.
    pub declared: bool,
    /// The built-in chains in listing order, then user chains sorted by name (as libiptc
    /// keeps them).
    pub chains: Vec<Chain>,
}

impl Table {
    /// An empty table with ACCEPT policies.
    pub fn new(family: Family, kind: TableKind) -> Table {
        let chains = kind
            .hooks()
            .iter()
            .map(|h| Chain { name: h.name().into(), policy: Some(Policy::Accept), rules: Vec::new() })
            .collect();
        Table { family, kind, declared: kind == TableKind::Filter, chains }
    }

    /// The chain named `name`.
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    /// The chain named `name`, mutably.
    pub fn chain_mut(&mut self, name: &str) -> Option<&mut Chain> {
        self.chains.iter_mut().find(|c| c.name == name)
    }

    /// True when no chain has a rule and every policy is ACCEPT.
    pub fn is_empty(&self) -> bool {
        self.chains.iter().all(|c| c.rules.is_empty() && c.policy != Some(Policy::Drop)) && self.chains.len() == self.kind.hooks().len()
    }

    /// How many rules jump or go to `chain` (the `references` of `iptables -L`).
    pub fn references(&self, chain: &str) -> usize {
        self.chains.iter().flat_map(|c| &c.rules).filter(|r| r.target.chain() == Some(chain)).count()
    }

    /// The command name of this family.
    pub fn command(&self) -> &'static str {
        match self.family {
            Family::Ipv4 => "iptables",
            Family::Ipv6 => "ip6tables",
        }
    }
}

/// Every table of both families.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ruleset {
    /// Per family (IPv4, IPv6), per [`TableKind`].
    tables: [[Table; 4]; 2],
}

impl Default for Ruleset {
    fn default() -> Self {
        let family = |f| TableKind::ALL.map(|k| Table::new(f, k));
        Ruleset { tables: [family(Family::Ipv4), family(Family::Ipv6)] }
    }
}

fn family_index(family: Family) -> usize {
    match family {
        Family::Ipv4 => 0,
        Family::Ipv6 => 1,
    }
}

impl Ruleset {
    /// The table `kind` of `family`.
    pub fn table(&self, family: Family, kind: TableKind) -> &Table {
        &self.tables[family_index(family)][kind as usize]
    }

    /// The table `kind` of `family`, mutably.
    pub fn table_mut(&mut self, family: Family, kind: TableKind) -> &mut Table {
        &mut self.tables[family_index(family)][kind as usize]
    }

    /// The filter table of `family`.
    pub fn filter(&self, family: Family) -> &Table {
        self.table(family, TableKind::Filter)
    }

    /// Every table, IPv4 first, each family's in [`TableKind::ALL`] order.
    pub fn tables(&self) -> impl Iterator<Item = &Table> {
        self.tables.iter().flatten()
    }
}

/// `xtables_save_string`'s spelling: bare when only `_-0-9a-zA-Z`, else double-quoted with `"`,
/// `\` and `'` escaped.
pub fn save_string(text: &str) -> String {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return text.into();
    }
    let mut out = String::from("\"");
    for c in text.chars() {
        if matches!(c, '"' | '\\' | '\'') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn neg(negated: bool) -> &'static str {
    if negated {
        "! "
    } else {
        ""
    }
}

impl MatchSpec {
    /// The match's name after `-m`.
    pub fn name(&self) -> &'static str {
        match self {
            MatchSpec::Tcp(_) => "tcp",
            MatchSpec::Udp(_) => "udp",
            MatchSpec::Icmp(_) => "icmp",
            MatchSpec::Icmp6(_) => "icmp6",
            MatchSpec::Multiport(_) => "multiport",
            MatchSpec::Conntrack(_) => "conntrack",
            MatchSpec::State(_) => "state",
            MatchSpec::Comment(_) => "comment",
            MatchSpec::Seng(_) => "seng",
            MatchSpec::Mark(_) => "mark",
            MatchSpec::Connmark(_) => "connmark",
        }
    }

    /// `-m NAME OPTIONS` as `iptables-save` prints it.
    fn save(&self, out: &mut String) {
        let _ = write!(out, " -m {}", self.name());
        let ports = |out: &mut String, name: &str, p: &Option<Neg<PortRange>>| {
            if let Some(p) = p {
                let _ = write!(out, " {}--{name} {}", neg(p.negated), p.value.save());
            }
        };
        match self {
            MatchSpec::Tcp(t) => {
                ports(out, "sport", &t.sport);
                ports(out, "dport", &t.dport);
                if let Some(f) = &t.flags {
                    let (mask, comp) = f.value;
                    let _ = write!(out, " {}--tcp-flags {} {}", neg(f.negated), names::tcp_flags_name(mask), names::tcp_flags_name(comp));
                }
            }
            MatchSpec::Udp(u) => {
                ports(out, "sport", &u.sport);
                ports(out, "dport", &u.dport);
            }
            MatchSpec::Icmp(t) | MatchSpec::Icmp6(t) => {
                if let Some(t) = t {
                    let option = if matches!(self, MatchSpec::Icmp(_)) { "icmp-type" } else { "icmpv6-type" };
                    let _ = write!(out, " {}--{option} ", neg(t.negated));
                    if t.value == IcmpType::ANY && matches!(self, MatchSpec::Icmp(_)) {
                        out.push_str("any");
                    } else {
                        let _ = write!(out, "{}", t.value.kind);
                        if t.value.code_min != 0 || t.value.code_max != 0xff {
                            let _ = write!(out, "/{}", t.value.code_min);
                        }
                    }
                }
            }
            MatchSpec::Multiport(Some(m)) => {
                let option = m.direction.name();
                let list: Vec<String> = m.ports.iter().map(PortRange::save).collect();
                let _ = write!(out, " {}--{option} {}", neg(m.negated), list.join(","));
            }
            MatchSpec::Conntrack(Some(s)) => {
                let _ = write!(out, " {}--ctstate {}", neg(s.negated), ct_state::names(s.value));
            }
            MatchSpec::State(Some(s)) => {
                let _ = write!(out, " {}--state {}", neg(s.negated), ct_state::names(s.value));
            }
            MatchSpec::Comment(Some(c)) => {
                let _ = write!(out, " --comment {}", save_string(c));
            }
            MatchSpec::Seng(rule) => {
                let _ = write!(out, " {}", rule.save_form());
            }
            MatchSpec::Mark(Some(m)) | MatchSpec::Connmark(Some(m)) => {
                let _ = write!(out, " {}--mark{}", neg(m.negated), mark_text(m.value.0, m.value.1));
            }
            MatchSpec::Multiport(None)
            | MatchSpec::Conntrack(None)
            | MatchSpec::State(None)
            | MatchSpec::Comment(None)
            | MatchSpec::Mark(None)
            | MatchSpec::Connmark(None) => {}
        }
    }

    /// The match as the last column of `iptables -L -n` shows it (with a leading space).
    fn list(&self, out: &mut String) {
        let ports = |out: &mut String, name: &str, p: &Option<Neg<PortRange>>| {
            if let Some(p) = p {
                let inv = if p.negated { "!" } else { "" };
                if p.value.min == p.value.max {
                    let _ = write!(out, " {name}:{inv}{}", p.value.min);
                } else {
                    let _ = write!(out, " {name}s:{inv}{}:{}", p.value.min, p.value.max);
                }
            }
        };
        match self {
            MatchSpec::Tcp(t) => {
                out.push_str(" tcp");
                ports(out, "spt", &t.sport);
                ports(out, "dpt", &t.dport);
                if let Some(f) = &t.flags {
                    let _ = write!(out, " flags:{}0x{:02X}/0x{:02X}", if f.negated { "!" } else { "" }, f.value.0, f.value.1);
                }
            }
            MatchSpec::Udp(u) => {
                out.push_str(" udp");
                ports(out, "spt", &u.sport);
                ports(out, "dpt", &u.dport);
            }
            MatchSpec::Icmp(t) | MatchSpec::Icmp6(t) => {
                out.push_str(if matches!(self, MatchSpec::Icmp(_)) { " icmp" } else { " ipv6-icmp" });
                if let Some(t) = t {
                    if t.negated {
                        out.push_str(" !");
                    }
                    let _ = write!(out, "type {}", t.value.kind);
                    if t.value.code_min == t.value.code_max {
                        let _ = write!(out, " code {}", t.value.code_min);
                    } else if t.value.code_min != 0 || t.value.code_max != 0xff {
                        let _ = write!(out, " codes {}-{}", t.value.code_min, t.value.code_max);
                    }
                }
            }
            MatchSpec::Multiport(Some(m)) => {
                let option = m.direction.name();
                let list: Vec<String> = m.ports.iter().map(PortRange::save).collect();
                let _ = write!(out, " multiport {option} {}{}", if m.negated { " !" } else { "" }, list.join(","));
            }
            MatchSpec::Conntrack(Some(s)) => {
                let _ = write!(out, "{} ctstate {}", if s.negated { " !" } else { "" }, ct_state::names(s.value));
            }
            MatchSpec::State(Some(s)) => {
                let _ = write!(out, "{} state {}", if s.negated { " !" } else { "" }, ct_state::names(s.value));
            }
            MatchSpec::Comment(Some(c)) => {
                let _ = write!(out, " /* {c} */");
            }
            MatchSpec::Seng(rule) => {
                let _ = write!(out, " {}", rule.list_form());
            }
            MatchSpec::Mark(Some(m)) => {
                let _ = write!(out, " mark match{}{}", if m.negated { " !" } else { "" }, mark_text(m.value.0, m.value.1));
            }
            MatchSpec::Connmark(Some(m)) => {
                let _ = write!(out, " connmark match {}{}", if m.negated { "!" } else { "" }, mark_text(m.value.0, m.value.1));
            }
            MatchSpec::Multiport(None)
            | MatchSpec::Conntrack(None)
            | MatchSpec::State(None)
            | MatchSpec::Comment(None)
            | MatchSpec::Mark(None)
            | MatchSpec::Connmark(None) => {}
        }
    }
}

impl RuleSpec {
    /// A rule matching everything, with no target.
    pub fn new(line: usize) -> RuleSpec {
        RuleSpec {
            line,
            src: None,
            dst: None,
            in_iface: None,
            out_iface: None,
            proto: None,
            fragment: None,
            matches: Vec::new(),
            target: Target::None,
        }
    }

    /// The rule as `iptables-save` prints it: `-A CHAIN …`.
    pub fn save(&self, chain: &str) -> String {
        let mut out = format!("-A {chain}");
        for (flag, addr) in [("-s", &self.src), ("-d", &self.dst)] {
            if let Some(a) = addr {
                let _ = write!(out, " {}{flag} {}", neg(a.negated), a.value);
            }
        }
        for (flag, iface) in [("-i", &self.in_iface), ("-o", &self.out_iface)] {
            if let Some(i) = iface {
                let _ = write!(out, " {}{flag} {}", neg(i.negated), i.value);
            }
        }
        if let Some(p) = &self.proto {
            let _ = write!(out, " {}-p {}", neg(p.negated), names::protocol_save_name(p.value));
        }
        if let Some(negated) = self.fragment {
            let _ = write!(out, " {}-f", neg(negated));
        }
        for m in &self.matches {
            m.save(&mut out);
        }
        match &self.target {
            Target::None => {}
            Target::Goto(chain) => {
                let _ = write!(out, " -g {chain}");
            }
            Target::Reject(r) => {
                let _ = write!(out, " -j REJECT --reject-with {}", r.name);
            }
            Target::Log(log) => {
                out.push_str(" -j LOG");
                if !log.prefix.is_empty() {
                    let _ = write!(out, " --log-prefix {}", save_string(&log.prefix));
                }
                if log.level != 4 {
                    let _ = write!(out, " --log-level {}", log.level);
                }
                for (option, bit) in LOG_FLAGS {
                    if log.flags & bit != 0 {
                        let _ = write!(out, " {option}");
                    }
                }
            }
            Target::Nat(n) => {
                let _ = write!(out, " -j {}", n.kind.name());
                match n.kind {
                    NatKind::Snat => {
                        let _ = write!(out, " --to-source {}", n.range());
                    }
                    NatKind::Dnat => {
                        let _ = write!(out, " --to-destination {}", n.range());
                    }
                    NatKind::Masquerade | NatKind::Redirect => {
                        if let Some(ports) = n.ports_text() {
                            let _ = write!(out, " --to-ports {ports}");
                        }
                    }
                }
                for (set, flag) in [(n.random, " --random"), (n.random_fully, " --random-fully"), (n.persistent, " --persistent")] {
                    if set {
                        out.push_str(flag);
                    }
                }
            }
            Target::Notrack { alias: false } => out.push_str(" -j CT --notrack"),
            Target::Mark { value, mask } => {
                let _ = write!(out, " -j MARK --set-xmark {value:#x}/{mask:#x}");
            }
            Target::Connmark(c) => {
                out.push_str(" -j CONNMARK");
                match c {
                    ConnmarkSpec::Set { value, mask } => {
                        let _ = write!(out, " --set-xmark {value:#x}/{mask:#x}");
                    }
                    ConnmarkSpec::Save { nfmask, ctmask } => {
                        let _ = write!(out, " --save-mark --nfmask {nfmask:#x} --ctmask {ctmask:#x}");
                    }
                    ConnmarkSpec::Restore { nfmask, ctmask } => {
                        let _ = write!(out, " --restore-mark --nfmask {nfmask:#x} --ctmask {ctmask:#x}");
                    }
                }
            }
            target => {
                let _ = write!(out, " -j {}", target.list_name());
            }
        }
        out
    }

    /// One row of `iptables -L -v -n -x` (without a newline), with the given counters.
    pub fn list_row(&self, family: Family, packets: u64, bytes: u64) -> String {
        let mut out = format!("{packets:>8} {bytes:>8} {:<9} ", self.target.list_name());
        let proto = self.proto.as_ref();
        out.push(if proto.is_some_and(|p| p.negated) { '!' } else { ' ' });
        let _ = write!(out, "{:<5}", names::protocol_list_name(proto.map_or(0, |p| p.value)));
        match family {
            Family::Ipv4 => {
                out.push(if self.fragment == Some(true) { '!' } else { '-' });
                out.push(if self.fragment.is_some() { 'f' } else { '-' });
                out.push(' ');
            }
            Family::Ipv6 => out.push_str("   "),
        }
        let iface = |i: &Option<Neg<String>>| match i {
            Some(i) => format!("{}{}", if i.negated { "!" } else { "" }, i.value),
            None => "*".into(),
        };
        let _ = write!(out, " {:<6} {:<6} ", iface(&self.in_iface), iface(&self.out_iface));
        let any = match family {
            Family::Ipv4 => "0.0.0.0/0",
            Family::Ipv6 => "::/0",
        };
        for addr in [&self.src, &self.dst] {
            let (inv, text) = match addr {
                Some(a) => (a.negated, a.value.human().to_string()),
                None => (false, any.to_string()),
            };
            out.push(if inv { '!' } else { ' ' });
            let _ = write!(out, "{text:<19} ");
        }
        if let Target::Goto(_) = self.target {
            out.push_str("[goto] ");
        }
        for m in &self.matches {
            m.list(&mut out);
        }
        match &self.target {
            Target::Reject(r) => {
                let _ = write!(out, " reject-with {}", r.name);
            }
            Target::Log(log) => {
                let _ = write!(out, " LOG flags {} level {}", log.flags, log.level);
                if !log.prefix.is_empty() {
                    let _ = write!(out, " prefix \"{}\"", log.prefix);
                }
            }
            Target::Nat(n) => match n.kind {
                NatKind::Snat | NatKind::Dnat => {
                    let _ = write!(out, " to:{}", n.range());
                }
                NatKind::Masquerade => {
                    if let Some(ports) = n.ports_text() {
                        let _ = write!(out, " masq ports: {ports}");
                    }
                }
                NatKind::Redirect => {
                    if let Some(ports) = n.ports_text() {
                        let _ = write!(out, " redir ports {ports}");
                    }
                }
            },
            Target::Notrack { alias: false } => out.push_str(" notrack"),
            Target::Mark { value, mask } => {
                let _ = match (*value, *mask) {
                    (v, u32::MAX) => write!(out, " MARK set {v:#x}"),
                    (0, m) => write!(out, " MARK and {:#x}", !m),
                    (v, m) if v == m => write!(out, " MARK or {v:#x}"),
                    (v, 0) => write!(out, " MARK xor {v:#x}"),
                    (v, m) => write!(out, " MARK xset {v:#x}/{m:#x}"),
                };
            }
            Target::Connmark(c) => {
                let _ = match c {
                    ConnmarkSpec::Set { value, mask } => write!(out, " CONNMARK xset {value:#x}/{mask:#x}"),
                    ConnmarkSpec::Save { nfmask, ctmask } => write!(out, " CONNMARK save nfmask {nfmask:#x} ctmask ~{ctmask:#x}"),
                    ConnmarkSpec::Restore { nfmask, ctmask } => write!(out, " CONNMARK restore ctmask {ctmask:#x} nfmask ~{nfmask:#x}"),
                };
            }
            _ => {}
        }
        out
    }
}

/// The header row of `iptables -L -v -n -x`.
pub const LIST_HEADER: &str =
    "    pkts      bytes target     prot opt in     out     source               destination         ";

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn save_string_quotes_like_xtables() {
        let cases = [("web", "web"), ("two words", "\"two words\""), ("it's \"x\"", "\"it\\'s \\\"x\\\"\""), ("", "\"\"")];
        for (text, want) in cases {
            assert_eq!(save_string(text), want);
        }
    }

    #[test]
    fn ct_state_names_in_iptables_order() {
        assert_eq!(ct_state::names(ct_state::ESTABLISHED | ct_state::RELATED), "RELATED,ESTABLISHED");
        assert_eq!(ct_state::names(ct_state::NEW | ct_state::INVALID), "INVALID,NEW");
    }
}
