// SPDX-License-Identifier: GPL-2.0-only
//! The verdict of one scenario run: the kernel's per-rule and policy counters of every table
//! against seng-sim's, after checking that the replay itself was complete (every frame handed to the
//! kernel, the gateway's own packets refused or passed as often as the simulator's OUTPUT
//! verdicts say, every forwarded or sent packet seen leaving, every timed event applied) and
//! that the simulator did not expire a connection (the kernel replays in its own time, so an
//! expiry could not be reproduced).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;

use crate::save::{Count, SavedChain, SavedTable};

/// The guard `e2e.sh` puts into the raw table's OUTPUT chain, which drops what the gateway's
/// stack sends on its own (it is not in the capture); not a rule of the scenario.
pub const GUARD: &str = "-A OUTPUT -m mark ! --mark 0x5e9/0xffff -j DROP";
/// The legacy backend's guard, which also keeps conntrack (and reassembly) running.
pub const GUARD_CT: &str =
    "-A OUTPUT -m mark ! --mark 0x5e9/0xffff -m conntrack --ctstate INVALID,NEW,RELATED,ESTABLISHED,UNTRACKED -j DROP";

/// The parts of `seng-sim replay --json` the comparison reads.
#[derive(Deserialize)]
pub struct SimReport {
    capture: SimCapture,
    tables: Vec<SimTable>,
    verdicts: SimVerdicts,
    hooks: Vec<SimHook>,
    own_packets: SimOwn,
    conntrack: SimConntrack,
    events: Vec<SimEvent>,
}

#[derive(Deserialize)]
struct SimCapture {
    frames: u64,
    ipv4: u64,
    ipv6: u64,
    non_ip: BTreeMap<String, u64>,
    malformed: BTreeMap<String, u64>,
    not_captured: u64,
    #[serde(default)]
    fragments: SimFragments,
}

/// Fragments seng-sim took in without evaluating them as packets of their own.
#[derive(Deserialize, Default)]
struct SimFragments {
    held: u64,
    dropped: BTreeMap<String, u64>,
    refragmented: u64,
    fragments_out: u64,
}

#[derive(Deserialize)]
struct SimTable {
    family: String,
    table: String,
    chains: Vec<SimChain>,
}

#[derive(Deserialize)]
struct SimChain {
    name: String,
    policy: Option<String>,
    policy_packets: Option<u64>,
    policy_bytes: Option<u64>,
    rules: Vec<SimRule>,
}

#[derive(Deserialize)]
struct SimRule {
    rule: String,
    packets: u64,
    bytes: u64,
}

#[derive(Deserialize, Clone, Copy, Default)]
struct SimCount {
    packets: u64,
}

#[derive(Deserialize)]
struct SimVerdicts {
    accept: SimCount,
    drop: SimCount,
    reject: SimCount,
}

#[derive(Deserialize)]
struct SimHook {
    hook: String,
    accepted: SimCount,
}

/// The gateway's own packets by what OUTPUT and POSTROUTING made of them.
#[derive(Deserialize)]
struct SimOwn {
    accepted: SimCount,
    dropped: SimCount,
    rejected: SimCount,
}

#[derive(Deserialize)]
struct SimConntrack {
    expired: u64,
    collected: u64,
}

#[derive(Deserialize)]
struct SimEvent {
    at_s: Option<f64>,
}

/// The injector's `--summary`.
pub use inject::ReplaySummary as InjectSummary;


/// The kernel's tables, per family.
pub struct Kernel {
    /// IPv4 (`iptables-save -c`).
    pub ipv4: Vec<SavedTable>,
    /// IPv6 (`ip6tables-save -c`).
    pub ipv6: Vec<SavedTable>,
}

/// What a comparison found.
pub struct Outcome {
    /// One line per packet count of the replay and verdict total, for the log.
    pub summary: String,
    /// Problems with the replay itself (the comparison is not meaningful while there are any).
    pub replay_problems: Vec<String>,
    /// Disagreements between kernel and simulator.
    pub differences: Vec<String>,
    /// Rules (and policies) compared.
    pub compared: usize,
}

impl Outcome {
    /// Whether kernel and simulator agree on a complete replay.
    pub fn agrees(&self) -> bool {
        self.replay_problems.is_empty() && self.differences.is_empty()
    }
}

fn hook_total(sim: &SimReport, hook: &str, pick: fn(&SimHook) -> SimCount) -> u64 {
    sim.hooks
        .iter()
        .filter(|h| h.hook == hook)
        .map(|h| pick(h).packets)
        .sum()
}

/// Packets the simulator says leave the gateway: forwarded or sent, those to its own addresses
/// (loopback) included; all pass POSTROUTING. A reassembled datagram passes it once and leaves
/// fragmented again.
pub fn expected_out(sim: &SimReport) -> u64 {
    let f = &sim.capture.fragments;
    hook_total(sim, "POSTROUTING", |h| h.accepted) - f.refragmented + f.fragments_out
}

/// Checks the replay against the simulator's view of the same capture.
fn check_replay(sim: &SimReport, inject: &InjectSummary) -> Vec<String> {
    let mut problems = Vec::new();
    let mut expect = |what: &str, kernel: u64, simulated: u64| {
        if kernel != simulated {
            problems.push(format!(
                "{what}: the replay has {kernel}, seng-sim {simulated}"
            ));
        }
    };
    let c = &sim.capture;
    let malformed: u64 = c.malformed.values().sum();
    expect("frames read", inject.frames, c.frames);
    expect(
        "frames that are not IP",
        inject.non_ip,
        c.non_ip.values().sum(),
    );
    // A fragment is evaluated as part of its datagram (with the one completing it), held, or
    // dropped by reassembly.
    let consumed = c.fragments.held + c.fragments.dropped.values().sum::<u64>();
    expect(
        "IP packets given to the kernel",
        inject.ip_packets,
        c.ipv4 + c.ipv6 + malformed + consumed,
    );
    expect(
        "malformed packets (dropped before netfilter)",
        inject.malformed_arriving,
        malformed,
    );
    expect("packets cut by the capture", 0, c.not_captured);
    // A drop at OUTPUT or POSTROUTING fails the injector's send.
    let own = &sim.own_packets;
    expect(
        "gateway packets that OUTPUT or POSTROUTING refused",
        inject.output_refused,
        own.dropped.packets + own.rejected.packets,
    );
    expect(
        "gateway packets that OUTPUT and POSTROUTING passed",
        inject.output_sent,
        own.accepted.packets,
    );
    let left = expected_out(sim) - inject.loopback;
    expect(
        "packets that left the gateway (forwarded or sent)",
        inject.sent_out.values().sum(),
        left,
    );
    let timed = sim.events.iter().filter(|e| e.at_s.is_some()).count() as u64;
    expect(
        "timed enclave events applied",
        inject.events_applied + inject.events_after_capture,
        timed,
    );
    // An entry the garbage collection removed counts too: a later packet of its flow would
    // have found it expired.
    let timed_out = sim.conntrack.expired + sim.conntrack.collected;
    if timed_out > 0 {
        problems.push(format!(
            "seng-sim timed out {timed_out} conntrack entries: the capture idles longer than a conntrack timeout, which a \
             replay (in the kernel's own time) cannot reproduce; shorten the scenario's gaps"
        ));
    }
    problems
}

/// The kernel's chains of a table without the harness's guard.
fn without_guard(table: &SavedTable) -> Vec<SavedChain> {
    let mut chains = table.chains.clone();
    if table.name == "raw" {
        for chain in chains.iter_mut().filter(|c| c.name == "OUTPUT") {
            chain.rules.retain(|r| r.text != GUARD && r.text != GUARD_CT);
        }
    }
    chains
}

/// Compares counters table by table, chain by chain, rule by rule; returns the differences and
/// how many counters were compared.
fn compare_counters(sim: &SimReport, kernel: &Kernel) -> (Vec<String>, usize) {
    let mut diffs = Vec::new();
    let mut compared = 0;
    for (family, kernel_tables) in [("IPv4", &kernel.ipv4), ("IPv6", &kernel.ipv6)] {
        let sim_tables: Vec<&SimTable> = sim.tables.iter().filter(|t| t.family == family).collect();
        for k in kernel_tables {
            let loaded = sim_tables.iter().any(|s| s.table == k.name);
            if !loaded && without_guard(k).iter().any(|c| !c.rules.is_empty()) {
                diffs.push(format!("{family} {}: the kernel has rules, seng-sim does not load this table", k.name));
            }
        }
        for sim_table in sim_tables {
            // The filter table keeps the short label of the filter-only days.
            let label = match sim_table.table.as_str() {
                "filter" => family.to_string(),
                table => format!("{family} {table}"),
            };
            let Some(kernel_table) = kernel_tables.iter().find(|k| k.name == sim_table.table) else {
                if sim_table.chains.iter().any(|c| !c.rules.is_empty()) {
                    diffs.push(format!("{label}: the kernel has no {} table, seng-sim has rules", sim_table.table));
                }
                continue;
            };
            let kernel_chains = without_guard(kernel_table);
            compared += compare_table(&label, &sim_table.chains, &kernel_chains, &mut diffs);
        }
    }
    (diffs, compared)
}

/// Compares one table's chains; returns how many counters were compared.
fn compare_table(label: &str, sim_chains: &[SimChain], kernel_chains: &[SavedChain], diffs: &mut Vec<String>) -> usize {
    let mut compared = 0;
    for k in kernel_chains {
        if !sim_chains.iter().any(|s| s.name == k.name) {
            diffs.push(format!("{label} chain {}: in the kernel, not in seng-sim", k.name));
        }
    }
    for s in sim_chains {
        let Some(k) = kernel_chains.iter().find(|k| k.name == s.name) else {
            diffs.push(format!("{label} chain {}: in seng-sim, not in the kernel", s.name));
            continue;
        };
        match (&s.policy, &k.policy) {
            (Some(sp), Some((kp, kc))) => {
                let sc = Count {
                    packets: s.policy_packets.unwrap_or(0),
                    bytes: s.policy_bytes.unwrap_or(0),
                };
                compared += 1;
                if sp != kp || sc != *kc {
                    diffs.push(format!("{label} {} policy: kernel {kp} {kc}, seng-sim {sp} {sc}", s.name));
                }
            }
            (None, None) => {}
            _ => diffs.push(format!("{label} chain {}: built-in on one side only", s.name)),
        }
        if s.rules.len() != k.rules.len() {
            diffs.push(format!(
                "{label} chain {}: the kernel has {} rules, seng-sim {}",
                s.name,
                k.rules.len(),
                s.rules.len()
            ));
        }
        for (i, (sr, kr)) in s.rules.iter().zip(&k.rules).enumerate() {
            let sc = Count {
                packets: sr.packets,
                bytes: sr.bytes,
            };
            compared += 1;
            if sc != kr.count {
                let mut d = format!(
                    "{label} {} rule {}: kernel {}, seng-sim {sc}\n    kernel:   {}",
                    s.name,
                    i + 1,
                    kr.count,
                    kr.text
                );
                if sr.rule != kr.text {
                    let _ = write!(d, "\n    seng-sim: {}", sr.rule);
                }
                diffs.push(d);
            }
        }
    }
    compared
}

/// Compares one run.
pub fn compare(sim: &SimReport, inject: &InjectSummary, kernel: &Kernel) -> Outcome {
    let replay_problems = check_replay(sim, inject);
    let (differences, compared) = compare_counters(sim, kernel);
    let arrived: Vec<String> = inject
        .arrived
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(d, n)| format!("{n} on {d}"))
        .collect();
    let v = &sim.verdicts;
    let summary = format!(
        "{} packets replayed ({}{}{} through OUTPUT), {} timed events; seng-sim verdicts: {} accepted, {} dropped, {} rejected",
        inject.ip_packets,
        arrived.join(", "),
        if arrived.is_empty() { "" } else { ", " },
        inject.output_sent + inject.output_refused,
        inject.events_applied + inject.events_after_capture,
        v.accept.packets,
        v.drop.packets,
        v.reject.packets,
    );
    Outcome {
        summary,
        replay_problems,
        differences,
        compared,
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::save::parse_tables;

    fn sim_json(input_packets: u64, policy_packets: u64) -> String {
        format!(
            r#"{{"capture": {{"frames": 3, "ipv4": 3, "ipv6": 0, "non_ip": {{}}, "malformed": {{}}, "not_captured": 0}},
            "tables": [{{"family": "IPv4", "table": "filter", "chains": [
              {{"name": "INPUT", "policy": "ACCEPT", "policy_packets": {policy_packets}, "policy_bytes": 0, "rules": [
                {{"rule": "-A INPUT -p udp -j DROP", "packets": {input_packets}, "bytes": 56}}]}},
              {{"name": "FORWARD", "policy": "ACCEPT", "policy_packets": 0, "policy_bytes": 0, "rules": []}},
              {{"name": "OUTPUT", "policy": "ACCEPT", "policy_packets": 1, "policy_bytes": 40, "rules": []}}]}},
              {{"family": "IPv6", "table": "filter", "chains": []}}],
            "verdicts": {{"accept": {{"packets": 1, "bytes": 40}}, "drop": {{"packets": 2, "bytes": 56}}, "reject": {{"packets": 0, "bytes": 0}}}},
            "hooks": [{{"family": "IPv4", "hook": "INPUT", "accepted": {{"packets": 0, "bytes": 0}}, "dropped": {{"packets": 2, "bytes": 56}}, "rejected": {{"packets": 0, "bytes": 0}}}},
                      {{"family": "IPv4", "hook": "OUTPUT", "accepted": {{"packets": 1, "bytes": 40}}, "dropped": {{"packets": 0, "bytes": 0}}, "rejected": {{"packets": 0, "bytes": 0}}}},
                      {{"family": "IPv4", "hook": "POSTROUTING", "accepted": {{"packets": 1, "bytes": 40}}, "dropped": {{"packets": 0, "bytes": 0}}, "rejected": {{"packets": 0, "bytes": 0}}}}],
            "own_packets": {{"accepted": {{"packets": 1, "bytes": 40}}, "dropped": {{"packets": 0, "bytes": 0}}, "rejected": {{"packets": 0, "bytes": 0}}}},
            "conntrack": {{"expired": 0, "collected": 0}},
            "events": [{{"at_s": null}}, {{"at_s": 1.5}}]}}"#
        )
    }

    fn inject(sent_out: u64) -> InjectSummary {
        serde_json::from_str(&format!(
            r#"{{"frames": 3, "ip_packets": 3, "non_ip": 0, "malformed_arriving": 0, "arrived": {{"tunFA": 2, "eth0": 0}},
               "output_sent": 1, "output_refused": 0, "loopback": 0, "events_applied": 1, "events_after_capture": 0,
               "sent_out": {{"tunFA": {sent_out}, "eth0": 0}}}}"#
        ))
        .unwrap()
    }

    const KERNEL: &str = "*raw\n:PREROUTING ACCEPT [3:96]\n:OUTPUT ACCEPT [1:40]\n[7:420] -A OUTPUT -m mark ! --mark 0x5e9/0xffff -j DROP\nCOMMIT\n\
                          *filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [1:40]\n[2:56] -A INPUT -p udp -j DROP\nCOMMIT\n";

    fn kernel() -> Kernel {
        Kernel {
            ipv4: parse_tables(KERNEL).unwrap(),
            ipv6: Vec::new(),
        }
    }

    #[test]
    fn agreement() {
        let sim: SimReport = serde_json::from_str(&sim_json(2, 0)).unwrap();
        let out = compare(&sim, &inject(1), &kernel());
        assert!(
            out.agrees(),
            "{:?} {:?}",
            out.replay_problems,
            out.differences
        );
        assert_eq!(out.compared, 4);
        assert_eq!(out.summary, "3 packets replayed (2 on tunFA, 1 through OUTPUT), 1 timed events; seng-sim verdicts: 1 accepted, 2 dropped, 0 rejected");
    }

    #[test]
    fn differences_name_chain_rule_and_text() {
        let sim: SimReport = serde_json::from_str(&sim_json(1, 1)).unwrap();
        let out = compare(&sim, &inject(1), &kernel());
        assert_eq!(
            out.differences,
            ["IPv4 INPUT policy: kernel ACCEPT 0 packets/0 bytes, seng-sim ACCEPT 1 packets/0 bytes", "IPv4 INPUT rule 1: kernel 2 packets/56 bytes, seng-sim 1 packets/56 bytes\n    kernel:   -A INPUT -p udp -j DROP"]
        );
    }

    #[test]
    fn timed_out_entries_are_reported_met_or_collected() {
        for (expired, collected) in [(1, 0), (0, 3), (2, 3)] {
            let json = sim_json(2, 0).replace(r#""expired": 0, "collected": 0"#, &format!(r#""expired": {expired}, "collected": {collected}"#));
            let sim: SimReport = serde_json::from_str(&json).unwrap();
            let out = compare(&sim, &inject(1), &kernel());
            let want = format!("seng-sim timed out {} conntrack entries", expired + collected);
            assert!(out.replay_problems.iter().any(|p| p.starts_with(&want)), "{:?}", out.replay_problems);
        }
    }

    #[test]
    fn incomplete_replays_are_reported() {
        let sim: SimReport = serde_json::from_str(&sim_json(2, 0)).unwrap();
        let out = compare(&sim, &inject(0), &kernel());
        assert_eq!(
            out.replay_problems,
            ["packets that left the gateway (forwarded or sent): the replay has 0, seng-sim 1"]
        );
        let missing = Kernel {
            ipv4: parse_tables(&KERNEL.replace("[2:56] -A INPUT -p udp -j DROP\n", "")).unwrap(),
            ipv6: Vec::new(),
        };
        let out = compare(&sim, &inject(1), &missing);
        assert_eq!(
            out.differences,
            ["IPv4 chain INPUT: the kernel has 0 rules, seng-sim 1"]
        );
    }

    /// Tables besides filter: the raw guard is left out of the kernel's raw table, a loaded
    /// table is compared in full, a table with rules that seng-sim does not load is a
    /// difference.
    #[test]
    fn every_table_is_compared_but_the_guard() {
        let with_raw = sim_json(2, 0).replace(
            r#""tables": ["#,
            r#""tables": [{"family": "IPv4", "table": "raw", "chains": [
              {"name": "PREROUTING", "policy": "ACCEPT", "policy_packets": 3, "policy_bytes": 96, "rules": []},
              {"name": "OUTPUT", "policy": "ACCEPT", "policy_packets": 1, "policy_bytes": 40, "rules": []}]},"#,
        );
        let sim: SimReport = serde_json::from_str(&with_raw).unwrap();
        let out = compare(&sim, &inject(1), &kernel());
        assert!(out.agrees(), "{:?}", out.differences);
        assert_eq!(out.compared, 6);
        let nat = Kernel {
            ipv4: parse_tables(&format!("{KERNEL}*nat\n:PREROUTING ACCEPT [0:0]\n[1:40] -A PREROUTING -j ACCEPT\nCOMMIT\n")).unwrap(),
            ipv6: Vec::new(),
        };
        let sim: SimReport = serde_json::from_str(&sim_json(2, 0)).unwrap();
        assert_eq!(compare(&sim, &inject(1), &nat).differences, ["IPv4 nat: the kernel has rules, seng-sim does not load this table"]);
        let sim: SimReport = serde_json::from_str(&with_raw.replace(r#""policy_packets": 3"#, r#""policy_packets": 2"#)).unwrap();
        assert_eq!(
            compare(&sim, &inject(1), &kernel()).differences,
            ["IPv4 raw PREROUTING policy: kernel ACCEPT 3 packets/96 bytes, seng-sim ACCEPT 2 packets/96 bytes"]
        );
    }
}
