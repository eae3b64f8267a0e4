// SPDX-License-Identifier: GPL-2.0-only
//! What a replay prints: the counters in the layout of `iptables -L -v -n -x` (and
//! `ip6tables`), the enclave events, verdict totals per hook and the conntrack summary; or all
//! of it as JSON.

use std::fmt::Write as _;

use seng_core::Family;
use serde::Serialize;

use crate::conntrack::ConntrackStats;
use crate::defrag::DefragStats;
use crate::engine::{Counter, CtTally, EventRecord, Hook, HookTally, Simulator, Stats};
use crate::rules::{Ruleset, Table, TableKind, LIST_HEADER};

/// Names of the inputs, for the headline.
#[derive(Clone, Debug, Serialize)]
pub struct Inputs {
    /// The capture file.
    pub capture: String,
    /// The rules file.
    pub rules: String,
    /// The enclave script, if any.
    pub enclaves: Option<String>,
}

/// `iptables -L -v -n -x` of one table with the replay's counters.
pub fn list_table(table: &Table, counters: &[Counter], policy_counters: &[Counter]) -> String {
    let mut out = String::new();
    let mut rules = counters.iter();
    for (i, chain) in table.chains.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match chain.policy {
            Some(policy) => {
                let c = policy_counters.get(i).copied().unwrap_or_default();
                let _ = writeln!(out, "Chain {} (policy {} {} packets, {} bytes)", chain.name, policy.name(), c.packets, c.bytes);
            }
            None => {
                let _ = writeln!(out, "Chain {} ({} references)", chain.name, table.references(&chain.name));
            }
        }
        let _ = writeln!(out, "{LIST_HEADER}");
        for rule in &chain.rules {
            let c = rules.next().copied().unwrap_or_default();
            let _ = writeln!(out, "{}", rule.list_row(table.family, c.packets, c.bytes));
        }
    }
    out
}

fn shown(table: &Table, stats: &Stats) -> bool {
    let packets = match table.family {
        Family::Ipv4 => stats.ipv4,
        Family::Ipv6 => stats.ipv6,
    };
    match table.kind {
        TableKind::Filter => !table.is_empty() || packets > 0,
        _ => table.declared,
    }
}

/// The command that lists `table`: `iptables -t nat -L -v -n -x` (no `-t` for filter).
fn list_command(table: &Table) -> String {
    match table.kind {
        TableKind::Filter => format!("{} -L -v -n -x", table.command()),
        kind => format!("{} -t {} -L -v -n -x", table.command(), kind.name()),
    }
}

/// The part of the packets line about fragments: what reassembly held, completed and dropped.
fn fragments(f: &DefragStats) -> String {
    if f.consumed() + f.reassembled + f.passed_on.values().sum::<u64>() == 0 {
        return String::new();
    }
    let mut parts = vec![format!("{} datagrams reassembled from fragments (each evaluated once, whole)", f.reassembled)];
    if f.held > 0 {
        parts.push(format!("{} fragments held for reassembly", f.held));
    }
    for (why, n) in &f.dropped {
        parts.push(format!("{n} fragments dropped ({why})"));
    }
    for (why, n) in &f.discarded {
        parts.push(format!("{n} datagrams discarded with their fragments ({why})"));
    }
    for (why, n) in &f.passed_on {
        parts.push(format!("{n} fragments passed on unreassembled and evaluated ({why})"));
    }
    if f.refragmented > 0 {
        parts.push(format!("{} forwarded datagrams fragmented again into {} packets after POSTROUTING", f.refragmented, f.fragments_out));
    }
    if f.expired > 0 {
        parts.push(format!("{} datagrams timed out", f.expired));
    }
    if f.incomplete > 0 {
        parts.push(format!("{} datagrams incomplete at the end", f.incomplete));
    }
    format!("; {}", parts.join(", "))
}

fn family_name(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "IPv4",
        Family::Ipv6 => "IPv6",
    }
}

/// The human-readable report.
pub fn text(inputs: &Inputs, rules: &Ruleset, sim: &Simulator) -> String {
    let stats = sim.stats();
    let mut out = String::new();
    let duration = match (stats.first_ts_ns, stats.last_ts_ns) {
        (Some(a), Some(b)) => (b.saturating_sub(a)) as f64 / 1e9,
        _ => 0.0,
    };
    let _ = writeln!(
        out,
        "seng-sim replay of {} ({} frames over {duration:.3} s) through {}{}",
        inputs.capture,
        stats.frames,
        inputs.rules,
        inputs.enclaves.as_ref().map_or(String::new(), |e| format!(", enclaves from {e}")),
    );
    if !stats.events.is_empty() {
        let _ = writeln!(out, "\nEnclave events ({} enclaves registered at the end):", sim.enclaves().len());
        for e in &stats.events {
            let when = match (e.at_s, e.after_capture) {
                (_, true) => "after the last packet".to_string(),
                (Some(t), false) => format!("@{t:.3} s"),
                (None, false) => "at the start".to_string(),
            };
            let flows = if e.flows_deleted > 0 { format!(", {} conntrack entries deleted", e.flows_deleted) } else { String::new() };
            let _ = writeln!(out, "  {when:<22} line {:<4} {}: {}{flows}", e.line, e.command, e.effect);
        }
    }
    for table in rules.tables() {
        let Some(compiled) = sim.table(table.family, table.kind).filter(|_| shown(table, stats)) else {
            continue;
        };
        let _ = writeln!(out, "\n# {}", list_command(table));
        out.push_str(&list_table(table, compiled.counters(), compiled.policy_counters()));
    }
    let _ = writeln!(out, "\nVerdicts per hook, all tables there (packets/bytes; a packet to the gateway's own address passes OUTPUT and INPUT):");
    let _ = writeln!(out, "  {:<13} {:>20} {:>20} {:>20}", "", "accepted", "dropped", "rejected");
    for (fi, family) in [Family::Ipv4, Family::Ipv6].into_iter().enumerate() {
        for hook in Hook::ALL {
            let t = stats.hooks[fi][hook as usize];
            if t.accepted.packets + t.dropped.packets + t.rejected.packets == 0 {
                continue;
            }
            let cell = |c: Counter| format!("{}/{}", c.packets, c.bytes);
            let _ = writeln!(
                out,
                "  {:<13} {:>20} {:>20} {:>20}",
                format!("{} {}", family_name(family), hook.name()),
                cell(t.accepted),
                cell(t.dropped),
                cell(t.rejected)
            );
        }
    }
    let mut skipped = Vec::new();
    for (kind, n) in &stats.non_ip {
        skipped.push(format!("{n} not IP ({kind})"));
    }
    for (why, n) in &stats.malformed {
        skipped.push(format!("{n} malformed, dropped by the IP stack before netfilter ({why})"));
    }
    if stats.not_captured > 0 {
        skipped.push(format!("{} cut by the snap length before their transport header", stats.not_captured));
    }

    let _ = writeln!(
        out,
        "\nPackets: {} IPv4 and {} IPv6 evaluated{}{}{}",
        stats.ipv4,
        stats.ipv6,
        if skipped.is_empty() { String::new() } else { format!("; not evaluated: {}", skipped.join(", ")) },
        fragments(&stats.fragments),
        if stats.ttl_expired > 0 {
            format!("; {} of them to forward with their TTL run out, dropped by the IP stack before FORWARD", stats.ttl_expired)
        } else {
            String::new()
        },
    );
    let ct = stats.ct;
    let cs = sim.conntrack_stats();
    let _ = writeln!(
        out,
        "Conntrack: packets NEW {}, ESTABLISHED {}, RELATED {}, INVALID {}, UNTRACKED {}; {} connections confirmed, {} deleted by enclave events, {} found expired by a packet, {} collected after timing out, {} reopened, {} dropped by tuple clashes",
        ct.new, ct.established, ct.related, ct.invalid, ct.untracked, cs.confirmed, cs.deleted_by_events, cs.expired, cs.collected, cs.reopened, cs.clashes
    );
    if cs.bad_checksums > 0 {
        let _ = writeln!(
            out,
            "Warning: {} arriving packets had bad transport checksums and were INVALID (captured before checksum offload filled them in? try --no-checksum)",
            cs.bad_checksums
        );
    }
    out
}

#[derive(Serialize)]
struct JsonRule {
    index: usize,
    line: usize,
    rule: String,
    packets: u64,
    bytes: u64,
}

#[derive(Serialize)]
struct JsonChain {
    name: String,
    policy: Option<&'static str>,
    policy_packets: Option<u64>,
    policy_bytes: Option<u64>,
    references: Option<usize>,
    rules: Vec<JsonRule>,
}

#[derive(Serialize)]
struct JsonTable {
    family: &'static str,
    table: &'static str,
    chains: Vec<JsonChain>,
}

#[derive(Serialize)]
struct JsonHook {
    family: &'static str,
    hook: &'static str,
    #[serde(flatten)]
    tally: HookTally,
}

#[derive(Serialize)]
struct JsonVerdicts {
    accept: Counter,
    drop: Counter,
    reject: Counter,
}

#[derive(Serialize)]
struct JsonCapture<'a> {
    frames: u64,
    ipv4: u64,
    ipv6: u64,
    non_ip: &'a std::collections::BTreeMap<String, u64>,
    malformed: &'a std::collections::BTreeMap<String, u64>,
    not_captured: u64,
    ttl_expired: u64,
    fragments: &'a DefragStats,
    duration_s: f64,
}

#[derive(Serialize)]
struct JsonConntrack {
    packets: CtTally,
    #[serde(flatten)]
    stats: ConntrackStats,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    inputs: &'a Inputs,
    capture: JsonCapture<'a>,
    tables: Vec<JsonTable>,
    verdicts: JsonVerdicts,
    hooks: Vec<JsonHook>,
    /// The gateway's own packets, sent (accepted) or refused at OUTPUT or POSTROUTING.
    own_packets: HookTally,
    conntrack: JsonConntrack,
    events: &'a [EventRecord],
    enclaves_at_end: usize,
}

/// The machine-readable report.
pub fn json(inputs: &Inputs, rules: &Ruleset, sim: &Simulator) -> String {
    let stats = sim.stats();
    let mut tables = Vec::new();
    for table in rules.tables() {
        let Some(compiled) = sim.table(table.family, table.kind) else {
            continue;
        };
        let mut counters = compiled.counters().iter();
        let chains = table
            .chains
            .iter()
            .enumerate()
            .map(|(i, chain)| {
                let policy = compiled.policy_counters().get(i).copied().unwrap_or_default();
                JsonChain {
                    name: chain.name.clone(),
                    policy: chain.policy.map(|p| p.name()),
                    policy_packets: chain.policy.map(|_| policy.packets),
                    policy_bytes: chain.policy.map(|_| policy.bytes),
                    references: chain.policy.is_none().then(|| table.references(&chain.name)),
                    rules: chain
                        .rules
                        .iter()
                        .enumerate()
                        .map(|(k, rule)| {
                            let c = counters.next().copied().unwrap_or_default();
                            JsonRule { index: k + 1, line: rule.line, rule: rule.save(&chain.name), packets: c.packets, bytes: c.bytes }
                        })
                        .collect(),
                }
            })
            .collect();
        tables.push(JsonTable { family: family_name(table.family), table: table.kind.name(), chains });
    }
    let mut hooks = Vec::new();
    let mut verdicts = JsonVerdicts { accept: Counter::default(), drop: Counter::default(), reject: Counter::default() };
    for (fi, family) in [Family::Ipv4, Family::Ipv6].into_iter().enumerate() {
        for hook in Hook::ALL {
            let tally = stats.hooks[fi][hook as usize];
            // Accepted: as the filter hooks passed them (a forwarded packet passes three hooks);
            // dropped and rejected: wherever that happened.
            let filter_hook = matches!(hook, Hook::Input | Hook::Forward | Hook::Output);
            let accepted = if filter_hook { tally.accepted } else { Counter::default() };
            for (total, part) in [(&mut verdicts.accept, accepted), (&mut verdicts.drop, tally.dropped), (&mut verdicts.reject, tally.rejected)] {
                total.packets += part.packets;
                total.bytes += part.bytes;
            }
            hooks.push(JsonHook { family: family_name(family), hook: hook.name(), tally });
        }
    }
    let duration_s = match (stats.first_ts_ns, stats.last_ts_ns) {
        (Some(a), Some(b)) => (b.saturating_sub(a)) as f64 / 1e9,
        _ => 0.0,
    };
    let report = JsonReport {
        inputs,
        capture: JsonCapture {
            frames: stats.frames,
            ipv4: stats.ipv4,
            ipv6: stats.ipv6,
            non_ip: &stats.non_ip,
            malformed: &stats.malformed,
            not_captured: stats.not_captured,
            ttl_expired: stats.ttl_expired,
            fragments: &stats.fragments,
            duration_s,
        },
        tables,
        verdicts,
        hooks,
        own_packets: stats.own,
        conntrack: JsonConntrack { packets: stats.ct, stats: sim.conntrack_stats() },
        events: &stats.events,
        enclaves_at_end: sim.enclaves().len(),
    };
    serde_json::to_string_pretty(&report).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::rules::parse_rules;

    #[test]
    fn lists_like_iptables() {
        let rules = parse_rules(
            "iptables -N web\niptables -A INPUT -i tunFA -s 192.168.28.0/24 -p tcp --dport 8391 -j ACCEPT\n\
             iptables -A INPUT ! -s 10.0.0.1 -d 10.0.0.2 -i eth0 -j web\niptables -A web -p udp -m multiport ! --dports 1:2,5 -j REJECT\n\
             iptables -A web -m conntrack ! --ctstate NEW -j LOG --log-prefix \"x: \"\niptables -A web -p icmp --icmp-type 3/3 -f -g web2\niptables -N web2\n\
             iptables -A web2 -m comment --comment hi\niptables -P INPUT DROP\n",
            "t",
        )
        .unwrap();
        let counters = [Counter { packets: 12, bytes: 3456 }, Counter { packets: 1234567, bytes: 987654321 }, Counter::default(), Counter::default(), Counter::default(), Counter::default()];
        let policies = [Counter { packets: 3, bytes: 180 }, Counter::default(), Counter::default(), Counter::default(), Counter::default()];
        let got = list_table(rules.filter(Family::Ipv4), &counters, &policies);
        let want = "\
Chain INPUT (policy DROP 3 packets, 180 bytes)
    pkts      bytes target     prot opt in     out     source               destination         
      12     3456 ACCEPT     tcp  --  tunFA  *       192.168.28.0/24      0.0.0.0/0            tcp dpt:8391
 1234567 987654321 web        all  --  eth0   *      !10.0.0.1             10.0.0.2            

Chain FORWARD (policy ACCEPT 0 packets, 0 bytes)
    pkts      bytes target     prot opt in     out     source               destination         

Chain OUTPUT (policy ACCEPT 0 packets, 0 bytes)
    pkts      bytes target     prot opt in     out     source               destination         

Chain web (1 references)
    pkts      bytes target     prot opt in     out     source               destination         
       0        0 REJECT     udp  --  *      *       0.0.0.0/0            0.0.0.0/0            multiport dports  !1:2,5 reject-with icmp-port-unreachable
       0        0 LOG        all  --  *      *       0.0.0.0/0            0.0.0.0/0            ! ctstate NEW LOG flags 0 level 4 prefix \"x: \"
       0        0 web2       icmp -f  *      *       0.0.0.0/0            0.0.0.0/0           [goto]  icmptype 3 code 3

Chain web2 (1 references)
    pkts      bytes target     prot opt in     out     source               destination         
       0        0            all  --  *      *       0.0.0.0/0            0.0.0.0/0            /* hi */
";
        assert_eq!(got, want);
    }
}
