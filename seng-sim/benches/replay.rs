// SPDX-License-Identifier: GPL-2.0-only
//! Replay throughput (`cargo bench -p seng-sim`): generates a one-million-packet capture (kept in
//! the target directory), the 20-rule benchmark ruleset (plain and seng rules mixed) and ten
//! thousand registered enclaves, replays the capture a few times on one core and prints packets
//! per second. It prints figures; it asserts nothing about speed. `SENG_SIM_BENCH_PACKETS`
//! changes the capture size. Run without `--bench` (as `cargo test --all-targets` does), it is a
//! quick smoke test on 20 000 packets.

use std::path::PathBuf;
use std::time::Instant;

use seng_core::script::ScriptLine;
use seng_core::Family;
use seng_sim::capture::{self, Capture};
use seng_sim::engine::{Hook, Options, Simulator};
use seng_sim::gen;
use seng_sim::net::NetConfig;
use seng_sim::packet;
use seng_sim::rules::{parse_rules, Ruleset};

const ENCLAVES: usize = 10_000;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let default = if full { 1_000_000 } else { 20_000 };
    let packets: usize = std::env::var("SENG_SIM_BENCH_PACKETS").ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("seng-sim-bench-{packets}.pcap"));
    if !path.exists() {
        let started = Instant::now();
        std::fs::write(&path, gen::bench_capture(packets, ENCLAVES)).expect("write the benchmark capture");
        println!("generated {} in {:.1} s", path.display(), started.elapsed().as_secs_f64());
    }
    let bytes = std::fs::read(&path).expect("read the benchmark capture");
    let size = bytes.len();
    let capture = Capture::new(bytes).expect("a valid capture");
    let rules = parse_rules(&gen::bench_rules(), "bench-rules").expect("valid rules");
    let rule_count: usize = rules.filter(Family::Ipv4).chains.iter().map(|c| c.rules.len()).sum();
    let script = seng_core::script::parse(&gen::bench_enclaves(ENCLAVES)).expect("valid script");
    let mut net = NetConfig::default();
    net.set_interface("tunFA=172.16.0.1/16").expect("valid interface");
    let options = Options { net, ..Options::default() };
    println!("capture: {packets} packets, {:.1} MB; ruleset: {rule_count} rules; enclaves: {ENCLAVES}", size as f64 / 1e6);

    // Baseline: reading frames and parsing headers only.
    let started = Instant::now();
    let mut parsed = 0u64;
    for frame in capture.frames() {
        let frame = frame.expect("frame");
        if let Ok(capture::Payload::Ip { data, wire_len, family }) = capture::payload(&frame) {
            parsed += u64::from(packet::parse(data, wire_len, family).is_ok());
        }
    }
    let seconds = started.elapsed().as_secs_f64();

    let parse_rate = parsed as f64 / seconds / 1e6;
    println!("read + parse only:   {parse_rate:>6.2} M packets/s");

    // The model's floor: the same replay through no rules at all, so only conntrack, NAT,
    // confirmation and the hooks' bookkeeping run. What the ruleset adds is the difference.
    let no_rules = parse_rules("", "no-rules").expect("an empty ruleset");
    let floor: Vec<f64> = (0..5).map(|_| timed_replay(&capture, &no_rules, &script, &options).1).collect();
    println!("replay, no rules:    {:>6.2} M packets/s ({:.1}% of parse only)", median(&floor), median(&floor) / parse_rate * 100.0);

    let mut rates = Vec::new();
    for run in 1..=5 {
        let (sim, rate, seconds) = timed_replay(&capture, &rules, &script, &options);
        rates.push(rate);
        if run == 1 {
            let input = sim.stats().hooks[0][Hook::Input as usize];
            let evaluated: u64 = sim.compiled(Family::Ipv4).counters().iter().map(|c| c.packets).sum();
            println!(
                "first run: INPUT accepted {} dropped {} rejected {}; {} rule hits; {} conntrack entries confirmed",
                input.accepted.packets,
                input.dropped.packets,
                input.rejected.packets,
                evaluated,
                sim.conntrack_stats().confirmed
            );
        }
        println!("replay run {run}:        {rate:>6.2} M packets/s ({seconds:.3} s)");
    }
    let replayed = median(&rates);
    println!("replay median:       {replayed:>6.2} M packets/s ({:.1}% of parse only; target: 5 M packets/s on one core)", replayed / parse_rate * 100.0);

    // A long capture: conntrack's garbage collection keeps the table to the live connections.
    let long_path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("seng-sim-bench-long-{packets}.pcap"));
    if !long_path.exists() {
        std::fs::write(&long_path, gen::long_capture(packets)).expect("write the long benchmark capture");
    }
    let long = Capture::new(std::fs::read(&long_path).expect("read the long benchmark capture")).expect("a valid capture");
    let mut long_rates = Vec::new();
    for _ in 0..5 {
        let (sim, rate, _) = timed_replay(&long, &no_rules, &[], &options);
        long_rates.push(rate);
        if long_rates.len() == 1 {
            let ct = sim.conntrack_stats();
            println!("long capture ({packets} one-packet flows over an hour, no rules): {} confirmed, {} collected after timing out, {} held at the end", ct.confirmed, ct.collected, sim.conntrack_len());
        }
    }
    println!("long capture replay: {:>6.2} M packets/s (median of 5)", median(&long_rates));
}

/// One replay of `capture` through `rules` by a fresh simulator: the simulator after it, the
/// rate in millions of packets per second and the seconds it took.
fn timed_replay(capture: &Capture, rules: &Ruleset, script: &[ScriptLine], options: &Options) -> (Simulator, f64, f64) {
    let mut sim = Simulator::new(rules, script, options).expect("simulator");
    let started = Instant::now();
    seng_sim::replay(capture, &mut sim, None, &mut |_| {}).expect("replay");
    let seconds = started.elapsed().as_secs_f64();
    let rate = sim.stats().frames as f64 / seconds / 1e6;
    (sim, rate, seconds)
}

fn median(rates: &[f64]) -> f64 {
    let mut sorted = rates.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}
