// SPDX-License-Identifier: GPL-2.0-only
//! Match cost against table size: prints ns per decision with 10, 10k and 1M registered enclaves
//! and the ratio to the 10-enclave figure. Figures, not assertions: run with
//! `cargo bench -p seng-core --bench lookup`.
//!
//! "hot" mirrors the kernel benchmark (one registered and one unregistered source, the packet
//! stream a gateway sees from a few busy flows); "spread" looks up a different random enclave
//! every time, so at 1M it mostly measures cache misses, not the algorithm.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use seng_core::table::LocalTable;
use seng_core::{match_packet, Family, Measurement, Rule, SengMtInfo};

fn enclave_ip(i: u32) -> IpAddr {
    // All in 10/8: every enclave in one bucket of the original's hash.
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i))
}

fn app(i: u32) -> Measurement {
    let mut m = [0u8; 32];
    m[..4].copy_from_slice(&i.to_le_bytes());
    Measurement(m)
}

/// ns per packet through ten `--src-app <no match>` rules, for sources cycling through `sources`.
fn ns_per_packet(table: &LocalTable, rules: &[SengMtInfo], sources: &[IpAddr], packets: usize) -> f64 {
    let dst = IpAddr::V4(Ipv4Addr::new(192, 168, 28, 1));
    let start = Instant::now();
    let mut matched = 0usize;
    for p in 0..packets {
        let src = sources[p % sources.len()];
        for rule in rules {
            matched += usize::from(match_packet(black_box(rule), Family::Ipv4, table, &src, &dst));
        }
    }
    black_box(matched);
    start.elapsed().as_nanos() as f64 / packets as f64
}

fn main() {
    let rules: Vec<SengMtInfo> = (0..10)
        .map(|i| {
            let text = format!("--src-app {}", app(0xffff_0000 + i));
            SengMtInfo::from(&Rule::parse(&text, Family::Ipv4).unwrap())
        })
        .collect();
    let sizes = [10u32, 10_000, 1_000_000];
    let mut hot = Vec::new();
    println!("ten `--src-app <no match>` rules per packet, so one packet is ten lookups and decisions");
    println!("{:>10} {:>16} {:>16} {:>16} {:>12}", "enclaves", "hot ns/packet", "hot ns/lookup", "spread ns/packet", "register s");
    for &size in &sizes {
        let mut table = LocalTable::new(size as usize).unwrap();
        let start = Instant::now();
        for i in 0..size {
            table.register(enclave_ip(i), &app(i % 1000), IpAddr::V4(Ipv4Addr::from(i)), &[]).unwrap();
        }
        let register = start.elapsed().as_secs_f64();
        let hot_sources = [enclave_ip(size / 2), IpAddr::V4(Ipv4Addr::new(10, 255, 255, 254))];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let spread: Vec<IpAddr> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                enclave_ip((state % u64::from(size)) as u32)
            })
            .collect();
        let packets = 2_000_000;
        ns_per_packet(&table, &rules, &hot_sources, packets / 10);
        let h = ns_per_packet(&table, &rules, &hot_sources, packets);
        let s = ns_per_packet(&table, &rules, &spread, packets);
        hot.push(h);
        println!("{size:>10} {h:>16.1} {:>16.2} {s:>16.1} {register:>12.3}", h / rules.len() as f64);
    }
    let base = hot[0];
    for (size, h) in sizes.iter().zip(&hot) {
        println!("ratio hot {size}/10: {:.3}", h / base);
    }
}
