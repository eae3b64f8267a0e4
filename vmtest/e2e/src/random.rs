// SPDX-License-Identifier: GPL-2.0-only
//! Random scenarios for the differential test, and their shrinking.
//!
//! A seed gives a whole scenario: rules in both families over everything seng-sim models, an
//! enclave script with registrations and timed changes, and traffic made of flows. The scenario
//! is kept as parts (rules made of option groups, script lines, flows made of packets) so that
//! a difference between the kernel and seng-sim can be cut down by dropping parts while an
//! oracle says the difference persists. Either form is written out in the corpus format
//! (`rules.txt`, `enclaves.txt`, `capture.pcap`).
//!
//! What the generator leaves out, because the kernel and the model cannot agree on it by
//! design, is listed in `vmtest/e2e/README.md` ("Random scenarios").

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use seng_sim::gen::{fragments, Builder, Rng, Transport};
use seng_sim::packet::tcp_flag::{ACK, FIN, RST, SYN};

use crate::scenarios::{fix_ipv4_checksum, truncated, with_ipv4_options, with_ipv6_ext};
use crate::story::{ip, Story, Tcp};

const APPS: [&str; 4] = [
    "d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0",
    "d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792",
    "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00",
    // Never registered: rules may name an app no enclave runs.
    "5e95e95e95e95e95e95e95e95e95e95e95e95e95e95e95e95e95e95e95e95e9a",
];
const CATEGORIES: [&str; 4] = ["Browser", "DNS", "Mail", "\"Web Mail\""];
const SERVER_PORTS: [u16; 7] = [22, 53, 80, 443, 4711, 8080, 8391];
const BUILTIN_CHAINS: [&str; 3] = ["INPUT", "FORWARD", "OUTPUT"];

/// The two address families, with the addresses the generator uses in each.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    V4,
    V6,
}

impl Family {
    /// The gateway's address on tunFA.
    fn gateway(self) -> &'static str {
        match self {
            Family::V4 => "192.168.28.1",
            Family::V6 => "fd00:28::1",
        }
    }

    /// Enclave-subnet addresses: the first ones may be registered, the last two never are.
    fn enclaves(self) -> &'static [&'static str] {
        match self {
            Family::V4 => &[
                "192.168.28.10",
                "192.168.28.11",
                "192.168.28.12",
                "192.168.28.13",
                "192.168.28.14",
                "192.168.28.15",
                "192.168.28.90",
                "192.168.28.91",
            ],
            Family::V6 => &[
                "fd00:28::10",
                "fd00:28::11",
                "fd00:28::12",
                "fd00:28::90",
            ],
        }
    }

    /// How many of [`Family::enclaves`] the script may register.
    fn registrable(self) -> usize {
        self.enclaves().len() - 2
    }

    /// Hosts beyond eth0.
    fn outside(self) -> &'static [&'static str] {
        match self {
            Family::V4 => &["198.51.100.7", "198.51.100.8"],
            Family::V6 => &["2001:db8:100::7", "2001:db8:100::8"],
        }
    }

    /// Untrusted hosts enclaves run on.
    fn hosts(self) -> &'static [&'static str] {
        match self {
            Family::V4 => &["10.0.0.5", "10.0.0.6", "10.0.0.70", "10.1.0.9"],
            Family::V6 => &["2001:db8:1::5", "2001:db8:1::6", "2001:db8:2::9"],
        }
    }

    /// Prefixes for `-s`/`-d` and for `--src-host`/`--dst-host`.
    fn prefixes(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Family::V4 => (
                &[
                    "192.168.28.0/24",
                    "192.168.28.8/29",
                    "192.168.28.10/32",
                    "192.168.28.1/32",
                    "198.51.100.0/24",
                    "192.168.28.90/31",
                ],
                &["10.0.0.0/26", "10.0.0.0/8", "10.0.0.5", "10.1.0.0/16", "10.0.0.64/255.255.255.192"],
            ),
            Family::V6 => (
                &["fd00:28::/64", "fd00:28::10/127", "fd00:28::1/128", "2001:db8:100::/64"],
                &["2001:db8:1::/48", "2001:db8:1::5", "2001:db8::/32"],
            ),
        }
    }
}

/// One rule: option groups (each droppable on its own, but for the first `pinned` ones, which
/// its target needs) and a target (empty: a counting rule).
#[derive(Clone, Debug)]
pub struct Rule {
    chain: String,
    groups: Vec<String>,
    pinned: usize,
    target: String,
}

/// A table of one family.
#[derive(Clone, Debug)]
pub struct Table {
    family: Family,
    /// `filter`, `raw`, `mangle` or `nat`.
    name: &'static str,
    /// The built-in chains with their policies.
    policies: Vec<(&'static str, &'static str)>,
    user_chains: Vec<String>,
    rules: Vec<Rule>,
}

/// One line of the enclave script: untimed (`at_ms` None) or timed.
#[derive(Clone, Debug)]
pub struct Event {
    at_ms: Option<u64>,
    text: String,
}

/// Packets that belong together (a connection, an exchange, or one malformed packet), with
/// their times in microseconds after the start.
#[derive(Clone, Debug)]
pub struct Flow {
    what: String,
    packets: Vec<(u64, Vec<u8>)>,
}

/// A whole scenario, as droppable parts.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The filter tables of IPv4 and IPv6, then the other tables drawn.
    tables: Vec<Table>,
    events: Vec<Event>,
    flows: Vec<Flow>,
}

/// A scenario written out in the corpus format.
pub struct Files {
    /// `rules.txt`: both families, IPv6 after `# Generated by ip6tables-save`.
    pub rules: String,
    /// `enclaves.txt`.
    pub enclaves: String,
    /// `capture.pcap`.
    pub capture: Vec<u8>,
}

impl Scenario {
    /// The scenario of `seed`.
    pub fn generate(seed: u64) -> Scenario {
        // xorshift must not start at zero; spread small seeds over the whole state.
        let mut rng = Rng(seed.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut tables = vec![table(&mut rng, Family::V4), table(&mut rng, Family::V6)];
        let events = script(&mut rng);
        let mut flows: Vec<Flow> = (0..12 + rng.below(24))
            .map(|i| flow(&mut rng, i as u16))
            .collect();
        // Drawn last, so that a seed keeps the filter rules, script and flows it had before
        // the other tables were generated.
        for family in [Family::V4, Family::V6] {
            for name in ["raw", "mangle", "nat"] {
                if chance(&mut rng, 35) {
                    tables.push(other_table(&mut rng, family, name));
                }
            }
        }
        // Fragmented flows, drawn after the tables for the same reason.
        for _ in 0..rng.below(4) {
            let n = flows.len() as u16;
            flows.push(fragmented(&mut rng, n));
        }
        Scenario {
            tables,
            events,
            flows,
        }
    }

    /// How many rules, script lines, flows and packets it has.
    pub fn size(&self) -> (usize, usize, usize, usize) {
        (
            self.tables.iter().map(|t| t.rules.len()).sum(),
            self.events.len(),
            self.flows.len(),
            self.flows.iter().map(|f| f.packets.len()).sum(),
        )
    }

    /// The scenario in the corpus format; `header` goes at the top of `rules.txt`.
    pub fn files(&self, header: &str) -> Files {
        let mut rules = String::from("# SPDX-License-Identifier: GPL-2.0-only\n");
        for line in header.lines() {
            let _ = writeln!(rules, "# {line}");
        }
        for t in &self.tables {
            rules.push_str(match t.family {
                Family::V4 => "# Generated by iptables-save\n",
                Family::V6 => "# Generated by ip6tables-save\n",
            });
            let _ = writeln!(rules, "*{}", t.name);
            for (chain, policy) in &t.policies {
                let _ = writeln!(rules, ":{chain} {policy} [0:0]");
            }
            for chain in &t.user_chains {
                let _ = writeln!(rules, ":{chain} - [0:0]");
            }
            for r in &t.rules {
                let _ = write!(rules, "-A {}", r.chain);
                for g in &r.groups {
                    let _ = write!(rules, " {g}");
                }
                if !r.target.is_empty() {
                    let _ = write!(rules, " {}", r.target);
                }
                rules.push('\n');
            }
            rules.push_str("COMMIT\n");
        }
        let mut enclaves = String::from("# SPDX-License-Identifier: GPL-2.0-only\n");
        for e in &self.events {
            match e.at_ms {
                Some(ms) => {
                    let _ = writeln!(enclaves, "@{}.{:03} {}", ms / 1000, ms % 1000, e.text);
                }
                None => {
                    let _ = writeln!(enclaves, "{}", e.text);
                }
            }
        }
        let mut story = Story::default();
        for f in &self.flows {
            for (us, p) in &f.packets {
                story.at_us(*us, p.clone());
            }
        }
        Files {
            rules,
            enclaves,
            capture: story.pcap(),
        }
    }

    /// What the flows are, one line each (for the shrunk scenario's README).
    pub fn flow_summary(&self) -> String {
        self.flows
            .iter()
            .map(|f| format!("{} ({} packets)\n", f.what, f.packets.len()))
            .collect()
    }

    /// Cuts the scenario down while `still_differs` holds for it, dropping flows, script lines,
    /// rules, option groups and packets, until no single part can go. `still_differs` must hold
    /// for the scenario as given. Returns how many candidates were tried.
    pub fn shrink(&mut self, still_differs: &mut dyn FnMut(&Scenario) -> bool) -> usize {
        let mut tries = 0;
        loop {
            let before = self.size();
            let groups_before: usize = self.option_groups();
            tries += drop_parts(self, still_differs, 0, |s| &mut s.flows);
            tries += drop_parts(self, still_differs, 0, |s| &mut s.events);
            tries += drop_parts(self, still_differs, 2, |s| &mut s.tables);
            for t in 0..self.tables.len() {
                tries += drop_parts(self, still_differs, 0, move |s| &mut s.tables[t].rules);
            }
            for t in 0..self.tables.len() {
                for r in 0..self.tables[t].rules.len() {
                    let pinned = self.tables[t].rules[r].pinned;
                    tries += drop_parts(self, still_differs, pinned, move |s| &mut s.tables[t].rules[r].groups);
                }
            }
            for f in 0..self.flows.len() {
                tries += drop_parts(self, still_differs, 0, move |s| &mut s.flows[f].packets);
            }
            if self.size() == before && self.option_groups() == groups_before {
                return tries;
            }
        }
    }

    fn option_groups(&self) -> usize {
        self.tables
            .iter()
            .flat_map(|t| &t.rules)
            .map(|r| r.groups.len())
            .sum()
    }
}

/// Drops runs of elements of the list `list` selects, but for its first `keep`, halving the
/// run length down to one (delta debugging's complement step), keeping each drop after which
/// `still_differs` holds.
fn drop_parts<T: Clone>(
    s: &mut Scenario,
    still_differs: &mut dyn FnMut(&Scenario) -> bool,
    keep: usize,
    list: impl Fn(&mut Scenario) -> &mut Vec<T>,
) -> usize {
    let mut tries = 0;
    let first = keep.min(list(s).len());
    let mut run = (list(s).len() - first).div_ceil(2).max(1);
    loop {
        let mut start = first;
        while start < list(s).len() {
            let mut candidate = s.clone();
            let items = list(&mut candidate);
            let end = (start + run).min(items.len());
            items.drain(start..end);
            tries += 1;
            if still_differs(&candidate) {
                *s = candidate;
            } else {
                start = end;
            }
        }
        if run == 1 {
            return tries;
        }
        run = run.div_ceil(2);
    }
}

fn pick<'a, T: ?Sized>(rng: &mut Rng, items: &'a [&'a T]) -> &'a T {
    items[rng.below(items.len() as u64) as usize]
}

fn chance(rng: &mut Rng, percent: u64) -> bool {
    rng.below(100) < percent
}

fn not(rng: &mut Rng, percent: u64) -> &'static str {
    if chance(rng, percent) {
        "! "
    } else {
        ""
    }
}

/// A filter table: policies, up to three user chains (a chain jumps only to later ones, so
/// there are no loops), rules in every chain.
fn table(rng: &mut Rng, family: Family) -> Table {
    let mut policies: Vec<(&str, &str)> = BUILTIN_CHAINS.iter().map(|c| (*c, "ACCEPT")).collect();
    for (_, p) in &mut policies {
        if chance(rng, 35) {
            *p = "DROP";
        }
    }
    let user_chains: Vec<String> = (0..rng.below(4)).map(|i| format!("u{i}")).collect();
    let mut rules = Vec::new();
    let chains: Vec<String> = BUILTIN_CHAINS
        .iter()
        .map(|c| c.to_string())
        .chain(user_chains.iter().cloned())
        .collect();
    for (index, chain) in chains.iter().enumerate() {
        let count = if index < 3 {
            2 + rng.below(7)
        } else {
            1 + rng.below(4)
        };
        for _ in 0..count {
            let later = &chains[(index + 1).max(3)..];
            rules.push(rule(rng, family, chain, later));
        }
    }
    Table {
        family,
        name: "filter",
        policies,
        user_chains,
        rules,
    }
}

/// A raw, mangle or nat table: its built-in chains (policies ACCEPT, now and then DROP in raw
/// and mangle; iptables allows no DROP in nat), rules with the table's own targets.
fn other_table(rng: &mut Rng, family: Family, name: &'static str) -> Table {
    let chains: &[&'static str] = match name {
        "raw" => &["PREROUTING", "OUTPUT"],
        "mangle" => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        _ => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
    };
    let policies = chains
        .iter()
        .map(|c| (*c, if name != "nat" && chance(rng, 5) { "DROP" } else { "ACCEPT" }))
        .collect();
    let mut rules = Vec::new();
    for chain in chains {
        for _ in 0..1 + rng.below(4) {
            rules.push(other_rule(rng, family, name, chain));
        }
    }
    Table {
        family,
        name,
        policies,
        user_chains: Vec::new(),
        rules,
    }
}

/// A mark in the upper 16 bits, where the injector's mark 0x5e9 of the gateway's own packets
/// is not: `VALUE/MASK`.
fn upper_mark(rng: &mut Rng) -> String {
    let value = (1 + rng.below(3)) << 16;
    let mask = if chance(rng, 50) { 0xffff_0000 } else { value };
    format!("{value:#x}/{mask:#x}")
}

/// One rule of table `name`'s built-in chain `chain`.
fn other_rule(rng: &mut Rng, family: Family, name: &str, chain: &str) -> Rule {
    let mut groups = Vec::new();
    let mut pinned = 0;
    let port_protocol = |rng: &mut Rng, groups: &mut Vec<String>, pinned: &mut usize| {
        let proto = if chance(rng, 50) { "tcp" } else { "udp" };
        groups.push(format!("-p {proto}"));
        *pinned = 1;
    };
    // DNAT goes to enclaves, the outside or (in PREROUTING) the gateway; never to the gateway
    // from OUTPUT, whose loopback the injector could not see leave.
    let dnat_to = |rng: &mut Rng| -> &'static str {
        match rng.below(if chain == "PREROUTING" { 3 } else { 2 }) {
            0 => pick(rng, &family.enclaves()[..2]),
            1 => pick(rng, family.outside()),
            _ => family.gateway(),
        }
    };
    let with_port = |addr: &str, port: u16| match family {
        Family::V4 => format!("{addr}:{port}"),
        Family::V6 => format!("[{addr}]:{port}"),
    };
    let target = match (name, chain, rng.below(10)) {
        ("raw", _, 0..=2) => "-j CT --notrack".to_string(),
        ("raw", _, 3) => "-j NOTRACK".to_string(),
        ("raw" | "mangle", _, 4) => "-j ACCEPT".to_string(),
        ("raw" | "mangle", _, 5) if chance(rng, 30) => "-j DROP".to_string(),
        ("raw" | "mangle", _, 6 | 7) => format!("-j MARK --set-xmark {}", upper_mark(rng)),
        ("mangle", _, 8) => "-j CONNMARK --save-mark --mask 0xffff0000".to_string(),
        ("mangle", _, 9) => "-j CONNMARK --restore-mark --mask 0xffff0000".to_string(),
        ("nat", "PREROUTING" | "OUTPUT", 0..=2) => {
            let to = dnat_to(rng);
            if chance(rng, 50) {
                port_protocol(rng, &mut groups, &mut pinned);
                let port = SERVER_PORTS[rng.below(SERVER_PORTS.len() as u64) as usize];
                format!("-j DNAT --to-destination {}", with_port(to, port))
            } else {
                format!("-j DNAT --to-destination {to}")
            }
        }
        ("nat", "PREROUTING", 3) => {
            port_protocol(rng, &mut groups, &mut pinned);
            format!("-j REDIRECT --to-ports {}", SERVER_PORTS[rng.below(SERVER_PORTS.len() as u64) as usize])
        }
        ("nat", "POSTROUTING", 0..=2) => "-j MASQUERADE".to_string(),
        ("nat", "POSTROUTING" | "INPUT", 3 | 4) => {
            let to = if chance(rng, 50) { family.gateway() } else { pick(rng, family.outside()) };
            format!("-j SNAT --to-source {to}")
        }
        ("nat", _, 5) => "-j ACCEPT".to_string(),
        _ => String::new(),
    };
    let (addresses, hosts) = family.prefixes();
    if chance(rng, 25) {
        groups.push(format!("{}-s {}", not(rng, 25), pick(rng, addresses)));
    }
    if chance(rng, 20) {
        groups.push(format!("{}-d {}", not(rng, 25), pick(rng, addresses)));
    }
    let ifaces: &[&str] = &["tunFA", "eth0", "tun+", "eth+"];
    let (in_ok, out_ok) = match chain {
        "PREROUTING" | "INPUT" => (true, false),
        "FORWARD" => (true, true),
        _ => (false, true),
    };
    if in_ok && chance(rng, 30) {
        groups.push(format!("{}-i {}", not(rng, 20), pick(rng, ifaces)));
    }
    if out_ok && chance(rng, 30) {
        groups.push(format!("{}-o {}", not(rng, 20), pick(rng, ifaces)));
    }
    if pinned == 0 && chance(rng, 35) {
        groups.push(protocol(rng, family));
    }
    if chance(rng, 20) {
        let state = pick(rng, &["NEW", "ESTABLISHED", "RELATED", "INVALID", "UNTRACKED", "SNAT", "DNAT"]);
        groups.push(format!("-m conntrack {}--ctstate {state}", not(rng, 20)));
    }
    if chance(rng, 25) {
        groups.push(format!("-m mark {}--mark {}", not(rng, 20), upper_mark(rng)));
    }
    if chance(rng, 15) {
        groups.push(format!("-m connmark {}--mark {}", not(rng, 20), upper_mark(rng)));
    }
    if chance(rng, 50) {
        groups.push(seng_match(rng, hosts));
    }
    Rule {
        chain: chain.to_string(),
        groups,
        pinned,
        target,
    }
}

/// One rule in `chain`, which may jump to the user chains `later`.
fn rule(rng: &mut Rng, family: Family, chain: &str, later: &[String]) -> Rule {
    let mut groups = Vec::new();
    let mut target = String::new();
    let mut pinned = 0;
    let builtin = BUILTIN_CHAINS.contains(&chain);
    match rng.below(12) {
        0..=2 => target = "-j ACCEPT".into(),
        3..=4 => target = "-j DROP".into(),
        5 => {
            let with = match (family, rng.below(4)) {
                (_, 0) => {
                    groups.push("-p tcp".to_string());
                    pinned = 1;
                    "tcp-reset"
                }
                (Family::V4, 1) => "icmp-port-unreachable",
                (Family::V4, 2) => "icmp-host-prohibited",
                (Family::V4, _) => "icmp-admin-prohibited",
                (Family::V6, 1) => "icmp6-port-unreachable",
                (Family::V6, 2) => "icmp6-adm-prohibited",
                (Family::V6, _) => "icmp6-no-route",
            };
            target = format!("-j REJECT --reject-with {with}");
        }
        6 => target = "-j LOG --log-prefix \"seng-e2e random: \" --log-level 6".into(),
        7 if !builtin => target = "-j RETURN".into(),
        7 | 8 if !later.is_empty() => {
            let to = &later[rng.below(later.len() as u64) as usize];
            let jump = if chance(rng, 30) { "-g" } else { "-j" };
            target = format!("{jump} {to}");
        }
        _ => {}
    }
    let (addresses, hosts) = family.prefixes();
    if chance(rng, 25) {
        groups.push(format!("{}-s {}", not(rng, 25), pick(rng, addresses)));
    }
    if chance(rng, 20) {
        groups.push(format!("{}-d {}", not(rng, 25), pick(rng, addresses)));
    }
    // Interfaces only where the hook has them, and not in user chains, which any hook reaches.
    let (in_ok, out_ok) = match chain {
        "INPUT" => (true, false),
        "FORWARD" => (true, true),
        "OUTPUT" => (false, true),
        _ => (false, false),
    };
    let ifaces: &[&str] = &["tunFA", "eth0", "tun+", "eth+"];
    if in_ok && chance(rng, 30) {
        groups.push(format!("{}-i {}", not(rng, 20), pick(rng, ifaces)));
    }
    if out_ok && chance(rng, 30) {
        groups.push(format!("{}-o {}", not(rng, 20), pick(rng, ifaces)));
    }
    if pinned == 0 && chance(rng, 45) {
        groups.push(protocol(rng, family));
    }
    if chance(rng, 30) {
        let states = ["NEW", "ESTABLISHED", "RELATED", "INVALID", "UNTRACKED"];
        let mut chosen: Vec<&str> = states.iter().copied().filter(|_| chance(rng, 35)).collect();
        if chosen.is_empty() {
            chosen.push(states[rng.below(3) as usize]);
        }
        let list = chosen.join(",");
        groups.push(if chance(rng, 25) {
            format!("-m state {}--state {list}", not(rng, 20))
        } else {
            format!("-m conntrack {}--ctstate {list}", not(rng, 20))
        });
    }
    if chance(rng, 70) {
        groups.push(seng_match(rng, hosts));
    }
    if chance(rng, 10) {
        groups.push(format!("-m comment --comment \"random {}\"", rng.below(1000)));
    }
    Rule {
        chain: chain.to_string(),
        groups,
        pinned,
        target,
    }
}

/// `-p` with an optional match of that protocol: ports and ranges, TCP flags, multiport, ICMP
/// types.
fn protocol(rng: &mut Rng, family: Family) -> String {
    let port = |rng: &mut Rng| SERVER_PORTS[rng.below(SERVER_PORTS.len() as u64) as usize];
    let ports = |rng: &mut Rng| match rng.below(3) {
        0 => port(rng).to_string(),
        1 => format!("{}:{}", port(rng).min(1024), 30000 + rng.below(4) * 10_000),
        _ => format!("{}:{}", 1024 + rng.below(30_000), 65535),
    };
    match rng.below(8) {
        0 | 1 => {
            let mut g = port_match(rng, "tcp", 60, &ports);
            match rng.below(5) {
                0 => g.push_str(" --syn"),
                1 => g.push_str(" ! --syn"),
                2 => g.push_str(" --tcp-flags SYN,ACK,FIN,RST ACK"),
                3 => g.push_str(" --tcp-flags RST RST"),
                _ => {}
            }
            g
        }
        2 | 3 => {
            port_match(rng, "udp", 70, &ports)
        }
        4 => {
            let proto = if chance(rng, 50) { "tcp" } else { "udp" };
            let list: Vec<String> = (0..1 + rng.below(3)).map(|_| ports(rng)).collect();
            let which = ["--dports", "--sports", "--ports"][rng.below(3) as usize];
            format!("-p {proto} -m multiport {}{which} {}", not(rng, 15), list.join(","))
        }
        5 => {
            let (p, m, opt, types): (&str, &str, &str, &[&str]) = match family {
                Family::V4 => ("icmp", "icmp", "--icmp-type", &["8", "0", "echo-request", "3", "3/3", "11"]),
                Family::V6 => ("ipv6-icmp", "icmp6", "--icmpv6-type", &["128", "129", "echo-request", "1", "1/4"]),
            };
            format!("-p {p} -m {m} {}{opt} {}", not(rng, 20), pick(rng, types))
        }
        6 => {
            let icmp = match family {
                Family::V4 => "icmp",
                Family::V6 => "ipv6-icmp",
            };
            format!("! -p {}", pick(rng, &["tcp", "udp", icmp]))
        }
        _ => {
            let p = match family {
                Family::V4 => "icmp",
                Family::V6 => "ipv6-icmp",
            };
            format!("-p {p}")
        }
    }
}

/// `-p PROTO -m PROTO` with a destination port (in `dport_percent` of the rules) and a source
/// port (in a quarter), each optionally negated.
fn port_match(rng: &mut Rng, proto: &str, dport_percent: u64, ports: &dyn Fn(&mut Rng) -> String) -> String {
    let mut g = format!("-p {proto} -m {proto}");
    for (option, percent) in [("--dport", dport_percent), ("--sport", 25)] {
        if chance(rng, percent) {
            let _ = write!(g, " {}{option} {}", not(rng, 20), ports(rng));
        }
    }
    g
}

/// `-m seng` with one to three options, each plain or negated.
fn seng_match(rng: &mut Rng, hosts: &[&str]) -> String {
    let mut g = String::from("-m seng");
    let mut used = BTreeSet::new();
    for _ in 0..1 + rng.below(3) {
        let side = if chance(rng, 55) { "src" } else { "dst" };
        let kind = rng.below(3);
        if !used.insert((side, kind)) {
            continue;
        }
        let neg = not(rng, 35);
        let _ = match kind {
            0 => write!(g, " {neg}--{side}-app {}", pick(rng, &APPS)),
            1 => write!(g, " {neg}--{side}-cat {}", pick(rng, &CATEGORIES)),
            _ => write!(g, " {neg}--{side}-host {}", pick(rng, hosts)),
        };
    }
    g
}

/// The enclave script: registrations before the first packet, then timed changes that keep to
/// what is valid at that moment (a removal names a registered address, a category removal an
/// attached category), as a real SENG server's would.
fn script(rng: &mut Rng) -> Vec<Event> {
    // Address -> app, and app -> its categories (None once a flush made them unknown).
    let mut registered: BTreeMap<&str, &str> = BTreeMap::new();
    let mut categories: BTreeMap<&str, Option<BTreeSet<&str>>> = BTreeMap::new();
    let mut events = Vec::new();
    let addresses: Vec<(&str, Family)> = [Family::V4, Family::V6]
        .into_iter()
        .flat_map(|f| f.enclaves()[..f.registrable()].iter().map(move |a| (*a, f)))
        .collect();
    let register = |rng: &mut Rng,
                        registered: &mut BTreeMap<&'static str, &'static str>,
                        categories: &mut BTreeMap<&'static str, Option<BTreeSet<&'static str>>>,
                        addr: &'static str,
                        family: Family| {
        let app = APPS[rng.below(3) as usize];
        let host = pick(rng, family.hosts());
        let mut text = format!("enclave add {addr} --app {app} --host {host}");
        // A new app starts with no categories.
        if !registered.values().any(|a| *a == app) && !categories.contains_key(app) {
            categories.insert(app, Some(BTreeSet::new()));
        }
        let attached = categories.entry(app).or_insert(None);
        for _ in 0..rng.below(3) {
            let c = pick(rng, &CATEGORIES);
            let _ = write!(text, " --cat {c}");
            if let Some(set) = attached {
                set.insert(c);
            }
        }
        if let Some(previous) = registered.insert(addr, app) {
            forget_if_gone(registered, categories, previous);
        }
        text
    };
    for &(addr, family) in &addresses {
        if chance(rng, 75) {
            let text = register(rng, &mut registered, &mut categories, addr, family);
            events.push(Event { at_ms: None, text });
        }
    }
    let mut at = 0;
    for _ in 0..rng.below(10) {
        at += 50 + rng.below(400);
        let apps_in_use: Vec<&str> = registered.values().copied().collect::<BTreeSet<_>>().into_iter().collect();
        let text = match rng.below(20) {
            0..=5 => {
                // A new registration, a re-registration (same or changed) or a reassignment.
                let (addr, family) = addresses[rng.below(addresses.len() as u64) as usize];
                register(rng, &mut registered, &mut categories, addr, family)
            }
            6..=9 if !registered.is_empty() => {
                let addr = *registered.keys().nth(rng.below(registered.len() as u64) as usize).unwrap_or(&"");
                if let Some(app) = registered.remove(addr) {
                    forget_if_gone(&registered, &mut categories, app);
                }
                format!("enclave del {addr}")
            }
            10..=13 if !apps_in_use.is_empty() => {
                let app = pick(rng, &apps_in_use);
                let c = pick(rng, &CATEGORIES);
                match categories.get_mut(app) {
                    Some(Some(set)) if !set.contains(c) => {
                        set.insert(c);
                        format!("app cat add {app} {c}")
                    }
                    _ => continue,
                }
            }
            14..=17 if !apps_in_use.is_empty() => {
                let app = pick(rng, &apps_in_use);
                match categories.get_mut(app) {
                    Some(Some(set)) if !set.is_empty() => {
                        let c = *set.iter().nth(rng.below(set.len() as u64) as usize).unwrap_or(&"");
                        set.remove(c);
                        format!("app cat del {app} {c}")
                    }
                    _ => continue,
                }
            }
            18 => {
                registered.clear();
                for set in categories.values_mut() {
                    *set = None;
                }
                "flush".to_string()
            }
            _ => continue,
        };
        events.push(Event { at_ms: Some(at), text });
    }
    events
}

/// An app whose last enclave left: the script no longer relies on what it knew of the app's
/// categories.
fn forget_if_gone(
    registered: &BTreeMap<&'static str, &'static str>,
    categories: &mut BTreeMap<&'static str, Option<BTreeSet<&'static str>>>,
    app: &'static str,
) {
    if !registered.values().any(|a| *a == app) {
        categories.insert(app, None);
    }
}

/// Where a flow goes: client and server.
fn endpoints(rng: &mut Rng, family: Family) -> (&'static str, &'static str, &'static str) {
    let enclave = pick(rng, family.enclaves());
    let other = pick(rng, family.enclaves());
    let outside = pick(rng, family.outside());
    let gw = family.gateway();
    match rng.below(9) {
        0 | 1 => (enclave, gw, "enclave to the gateway"),
        2 => (gw, enclave, "the gateway to an enclave"),
        3 | 4 => (enclave, outside, "enclave out"),
        5 => (outside, enclave, "in to an enclave"),
        6 if other != enclave => (enclave, other, "enclave to enclave"),
        7 => (outside, gw, "outside to the gateway"),
        _ => (gw, outside, "the gateway out"),
    }
}

/// Flow number `n`: a TCP connection, a UDP exchange, an ICMP echo, an ICMP error about a flow
/// of its own, or one malformed packet.
fn flow(rng: &mut Rng, n: u16) -> Flow {
    let family = if chance(rng, 70) { Family::V4 } else { Family::V6 };
    let (client, server, direction) = endpoints(rng, family);
    let sport = 30000 + n * 7;
    let dport = SERVER_PORTS[rng.below(SERVER_PORTS.len() as u64) as usize];
    let start_us = rng.below(3_000) * 1000 + u64::from(n);
    let mut us = start_us;
    let mut packets = Vec::new();
    let mut step = |rng: &mut Rng, p: Vec<u8>| {
        packets.push((us, p));
        us += 1000 + rng.below(40) * 1000;
    };
    let b = Builder::new(ip(client), ip(server));
    let what = match rng.below(10) {
        0..=2 => {
            let mut t = Tcp::new(client, sport, server, dport);
            step(rng, t.syn());
            step(rng, t.syn_ack());
            step(rng, t.ack(true));
            for _ in 0..rng.below(3) {
                step(rng, t.data(true, b"request"));
                step(rng, t.data(false, b"answer"));
            }
            if chance(rng, 30) {
                let from_client = chance(rng, 50);
                step(rng, t.rst(from_client));
            } else if chance(rng, 80) {
                step(rng, t.fin(true));
                step(rng, t.fin(false));
                step(rng, t.ack(true));
            }
            "TCP connection"
        }
        3 => {
            let mut t = Tcp::new(client, sport, server, dport);
            let syn = t.syn();
            step(rng, syn.clone());
            if chance(rng, 50) {
                step(rng, syn);
            } else {
                step(rng, t.flags(false, RST | ACK));
            }
            "TCP SYN, retransmitted or refused"
        }
        4 | 5 => {
            for _ in 0..1 + rng.below(3) {
                step(rng, b.udp(sport, dport, b"datagram"));
                if chance(rng, 70) {
                    step(rng, b.reverse().udp(dport, sport, b"reply"));
                }
            }
            "UDP exchange"
        }
        6 => {
            for seq in 0..1 + rng.below(3) as u16 {
                step(rng, b.icmp_echo(true, sport, seq));
                if chance(rng, 70) {
                    step(rng, b.reverse().icmp_echo(false, sport, seq));
                }
            }
            "ICMP echo"
        }
        7 => {
            let question = b.udp(sport, dport, b"to a closed port");
            step(rng, question.clone());
            let (kind, code) = match family {
                Family::V4 => (3, 3),
                Family::V6 => (1, 4),
            };
            step(rng, b.reverse().icmp_error(kind, code, &question));
            "UDP answered by an ICMP error"
        }
        8 => {
            let mut t = Tcp::new(client, sport, server, dport);
            let syn = t.syn();
            step(rng, syn.clone());
            let (kind, code) = match family {
                Family::V4 => (3, 1),
                Family::V6 => (1, 3),
            };
            step(rng, b.reverse().icmp_error(kind, code, &syn));
            "TCP SYN answered by an ICMP error"
        }
        _ => {
            // The gateway's own stack cannot send a malformed packet through OUTPUT: it comes
            // from the other end.
            let from = if client == family.gateway() { b.reverse() } else { b };
            let packet = malformed(rng, &from, family, sport, dport);
            step(rng, packet);
            "a malformed packet"
        }
    };
    Flow {
        what: format!("{what}, {direction}: {client} -> {server}"),
        packets,
    }
}

/// Flow number `n`: a UDP datagram or an ICMP echo request in 2 to 4 fragments, to or through
/// the gateway, now and then out of order, with a duplicate, or with one fragment missing (held
/// by both, evaluated by neither), and perhaps an unfragmented answer.
///
/// What both must agree on shapes it: the fragments are equal in size but for a shorter last
/// one, so a forwarded datagram leaves as the fragments it came as whichever way Linux
/// refragments it; a duplicate goes before the datagram completes (after it, it would start a
/// datagram that outlives the run and could swallow a fragment of the next); the gateway sends
/// no fragments (the injector's raw socket would count a fragment held at OUTPUT as sent);
/// and no fragments overlap or disagree on the datagram's end (Linux discards such a datagram
/// but keeps taking fragments of it in under a new one, whose fate depends on what is still
/// held from the other backend's run of the same scenario).
fn fragmented(rng: &mut Rng, n: u16) -> Flow {
    let family = if chance(rng, 70) { Family::V4 } else { Family::V6 };
    let enclave = pick(rng, family.enclaves());
    let outside = pick(rng, family.outside());
    let gw = family.gateway();
    let (client, server, direction) = match rng.below(4) {
        0 => (enclave, gw, "enclave to the gateway"),
        1 => (enclave, outside, "enclave out"),
        2 => (outside, enclave, "in to an enclave"),
        _ => (outside, gw, "outside to the gateway"),
    };
    let sport = 30000 + n * 7;
    let count = 2 + rng.below(3) as usize;
    let size = 16 + 8 * rng.below(8) as usize;
    // The transport length: `count` fragments of `size`, the last one shorter or as long.
    let l4 = (count - 1) * size + 1 + rng.below(size as u64) as usize;
    let b = Builder::new(ip(client), ip(server));
    let payload = vec![b'f'; l4 - 8];
    let udp = chance(rng, 50);
    let dport = SERVER_PORTS[rng.below(SERVER_PORTS.len() as u64) as usize];
    let datagram = if udp {
        b.udp(sport, dport, &payload)
    } else {
        let kind = if family == Family::V4 { 8 } else { 128 };
        let [i0, i1] = sport.to_be_bytes();
        b.build(Transport::Icmp { kind, code: 0, rest: [i0, i1, 0, 1], data: &payload })
    };
    let id = match family {
        Family::V4 => rng.below(0x1_0000) as u32,
        Family::V6 => rng.next_u64() as u32,
    };
    let cuts: Vec<usize> = (1..count).map(|i| i * size).collect();
    let mut pieces = fragments(&datagram, id, &cuts, 0);
    let mut how = Vec::new();
    if chance(rng, 40) {
        // A random order other than the given one.
        for i in (1..pieces.len()).rev() {
            pieces.swap(i, rng.below(i as u64 + 1) as usize);
        }
        how.push("out of order");
    }
    let complete = !chance(rng, 15);
    if !complete {
        pieces.remove(rng.below(pieces.len() as u64) as usize);
        how.push("one missing");
    } else if chance(rng, 15) {
        let copy = pieces[rng.below(pieces.len() as u64 - 1) as usize].clone();
        let at = pieces.len() - 1;
        pieces.insert(at, copy);
        how.push("a duplicate");
    }
    let start_us = rng.below(3_000) * 1000 + u64::from(n);
    let mut us = start_us;
    let mut packets = Vec::new();
    for piece in pieces {
        packets.push((us, piece));
        us += 1000 + rng.below(20) * 1000;
    }
    if chance(rng, 50) {
        let answer = if udp { b.reverse().udp(dport, sport, b"reply") } else { b.reverse().icmp_echo(false, sport, 1) };
        packets.push((us, answer));
    }
    let what = if udp { "UDP datagram" } else { "ICMP echo request" };
    let how = if how.is_empty() { String::new() } else { format!(", {}", how.join(", ")) };
    Flow {
        what: format!("fragmented {what} ({count} fragments{how}), {direction}: {client} -> {server}"),
        packets,
    }
}

/// One packet that is wrong in a way both the kernel and seng-sim model: bad checksums, a
/// length beyond the packet, a transport header cut short, options and extension headers, odd
/// TCP flags.
fn malformed(rng: &mut Rng, b: &Builder, family: Family, sport: u16, dport: u16) -> Vec<u8> {
    if family == Family::V6 {
        return match rng.below(2) {
            0 => with_ipv6_ext(&b.udp(sport, dport, b"hbh"), 0),
            _ => with_ipv6_ext(&b.tcp(sport, dport, SYN, b""), 60),
        };
    }
    match rng.below(7) {
        0 => {
            let mut p = b.udp(sport, dport, b"x");
            p[10] ^= 0xff;
            p
        }
        1 => {
            let mut p = b.udp(sport, dport, b"x");
            p[3] = p[3].wrapping_add(8);
            fix_ipv4_checksum(&mut p);
            p
        }
        2 => {
            let mut p = b.tcp(sport, dport, SYN, b"");
            p[36] ^= 0x55;
            p
        }
        3 => truncated(b, [6, 17, 1][rng.below(3) as usize], [3, 4, 8][rng.below(3) as usize], dport),
        4 => with_ipv4_options(&b.udp(sport, dport, b"options")),
        5 => b.tcp(sport, dport, FIN | 0x08 | 0x20, b""),
        _ => b.tcp(sport, dport, ACK, b""),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_scenario_every_time() {
        for seed in [0, 1, 77, u64::MAX] {
            let (a, b) = (Scenario::generate(seed).files(""), Scenario::generate(seed).files(""));
            assert_eq!(a.rules, b.rules);
            assert_eq!(a.enclaves, b.enclaves);
            assert_eq!(a.capture, b.capture);
        }
        assert_ne!(Scenario::generate(1).files("").rules, Scenario::generate(2).files("").rules);
    }

    /// Every generated scenario is accepted by seng-sim as it is, on both backends.
    #[test]
    fn seng_sim_replays_every_generated_scenario() {
        use seng_sim::engine::{Backend, Options, Simulator};
        for seed in 0..40 {
            let files = Scenario::generate(seed).files("test");
            let context = format!("seed {seed}:\n{}\n{}", files.rules, files.enclaves);
            let rules = seng_sim::rules::parse_rules(&files.rules, "rules.txt").unwrap_or_else(|e| panic!("{e}\n{context}"));
            let script = seng_core::script::parse(&files.enclaves).unwrap_or_else(|e| panic!("{e}\n{context}"));
            let capture = seng_sim::capture::Capture::new(files.capture.clone()).unwrap();
            for backend in [Backend::Legacy, Backend::Nft] {
                let options = Options { backend, ..Options::default() };
                let mut sim = Simulator::new(&rules, &script, &options).unwrap_or_else(|e| panic!("{e}\n{context}"));
                seng_sim::replay(&capture, &mut sim, None, &mut |_| {}).unwrap_or_else(|e| panic!("{e}\n{context}"));
                assert_eq!(sim.stats().frames as usize, Scenario::generate(seed).size().3);
            }
        }
    }

    #[test]
    fn scenarios_cover_what_the_issue_lists() {
        let mut all = String::new();
        let mut flows = String::new();
        for seed in 0..60 {
            let s = Scenario::generate(seed);
            let f = s.files("");
            all.push_str(&f.rules);
            all.push_str(&f.enclaves);
            flows.push_str(&s.flow_summary());
        }
        for needle in [
            "--src-app", "! --src-app", "--dst-cat", "! --dst-host", "--src-host", "-s ", "! -d ", "-i tun+",
            "-o eth0", "--dport", "--sport", "-m multiport", "--ctstate", "-m state", "-m comment", "-j u0",
            "-g u", "RETURN", "-j ACCEPT", "-j DROP", "--reject-with tcp-reset", "icmp6-adm-prohibited",
            "-j LOG", ":INPUT DROP", ":OUTPUT DROP", ":FORWARD DROP", "--icmpv6-type", "--icmp-type",
            "enclave add fd00:28::", "enclave del", "app cat add", "app cat del", "flush", "@",
        ] {
            assert!(all.contains(needle), "no generated scenario has {needle:?}");
        }
        for needle in [
            "TCP connection", "UDP exchange", "ICMP echo", "ICMP error", "malformed", "enclave to the gateway",
            "fragmented UDP datagram", "fragmented ICMP echo request", "out of order", "one missing", "a duplicate",
            "the gateway to an enclave", "enclave out", "in to an enclave", "enclave to enclave", "2001:db8:100::",
            "192.168.28.90",
        ] {
            assert!(flows.contains(needle), "no generated flow has {needle:?}");
        }
    }

    #[test]
    fn shrinking_keeps_exactly_what_the_difference_needs() {
        let mut s = Scenario::generate(5);
        // A fake difference: it needs a rule with a seng source option and the first flow.
        let needed_flow = s.flows[0].what.clone();
        let differs = |c: &Scenario| {
            c.tables.iter().flat_map(|t| &t.rules).any(|r| r.groups.iter().any(|g| g.contains("--src-")))
                && c.flows.iter().any(|f| f.what == needed_flow && !f.packets.is_empty())
        };
        assert!(differs(&s), "seed 5 must have what the fake difference needs");
        let tries = s.shrink(&mut |c| differs(c));
        assert!(differs(&s));
        let (rules, events, flows, packets) = s.size();
        assert_eq!((rules, events, flows, packets), (1, 0, 1, 1), "{s:#?}");
        let rule = &s.tables.iter().flat_map(|t| &t.rules).next().unwrap();
        assert_eq!(rule.groups.len(), 1, "{rule:?}");
        assert!(tries > 10);
    }

    #[test]
    fn shrinking_never_drops_what_a_target_needs() {
        let seed = (0..200)
            .find(|&seed| {
                Scenario::generate(seed).tables.iter().flat_map(|t| &t.rules).any(|r| r.target.contains("tcp-reset"))
            })
            .unwrap();
        let mut s = Scenario::generate(seed);
        let differs = |c: &Scenario| c.tables.iter().flat_map(|t| &t.rules).any(|r| r.target.contains("tcp-reset"));
        s.shrink(&mut |c| differs(c));
        let rule = s.tables.iter().flat_map(|t| &t.rules).next().unwrap();
        assert_eq!(rule.groups, ["-p tcp"]);
    }
}
