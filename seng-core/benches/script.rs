// SPDX-License-Identifier: GPL-2.0-only
//! Script parsing cost per line: prints ns per line and lines per second for a million `enclave
//! add` lines shaped like `seng-bench gen` output (what `seng restore` reads), once through
//! `parse_line`'s fast path and once through its general path. Figures, not assertions: run with
//! `cargo bench -p seng-core --bench script`.
//!
//! The general path is private; the second run reaches it by writing two spaces after `enclave`,
//! which the fast path does not take and the general path reads as the same words.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use seng_core::operation::{Operation, Registration};
use seng_core::script::parse_line;
use seng_core::{Category, Measurement, Origin};

const LINES: u32 = 1_000_000;

/// Line `i` of `seng-bench gen` with its default `--v6-every 10`.
fn line(i: u32) -> String {
    let n = i + 1;
    let addr = if i % 10 == 9 {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, (n >> 16) as u16, n as u16))
    } else {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    };
    let app = (i % 16) as u8;
    let category = Category::new(format!("cat-{app}").as_bytes()).unwrap();
    let host = IpAddr::V4(Ipv4Addr::new(172, 16, (i % 64) as u8, 1));
    Operation::from(Registration { addr, app: Measurement([app + 1; 32]), host, categories: vec![category], origin: Origin::Local }).to_string()
}

/// Parses every line of `script` and returns ns per line.
fn ns_per_line(script: &str) -> f64 {
    let start = Instant::now();
    let mut commands = 0usize;
    for (index, line) in script.lines().enumerate() {
        let parsed = parse_line(black_box(line), index + 1).unwrap();
        commands += usize::from(black_box(parsed).is_some());
    }
    let elapsed = start.elapsed().as_nanos() as f64;
    assert_eq!(commands, LINES as usize);
    elapsed / f64::from(LINES)
}

fn main() {
    let mut fast = String::new();
    for i in 0..LINES {
        fast.push_str(&line(i));
        fast.push('\n');
    }
    let general = fast.replace("enclave add", "enclave  add");
    println!("{LINES} `enclave add` lines, {} MB, every tenth enclave IPv6", fast.len() >> 20);
    println!("{:>8} {:>10} {:>14}", "path", "ns/line", "lines/s");
    let mut figures = Vec::new();
    for (name, script) in [("fast", &fast), ("general", &general)] {
        // A first pass to settle the caches and the allocator.
        ns_per_line(script);
        let ns = ns_per_line(script);
        figures.push(ns);
        println!("{name:>8} {ns:>10.1} {:>14.0}", 1e9 / ns);
    }
    println!("ratio general/fast: {:.1}", figures[1] / figures[0]);
    let start = Instant::now();
    let bytes: usize = fast.lines().map(|line| black_box(line).len()).sum();
    black_box(bytes);
    println!("of which splitting the text into lines: {:.1} ns/line", start.elapsed().as_nanos() as f64 / f64::from(LINES));
}
