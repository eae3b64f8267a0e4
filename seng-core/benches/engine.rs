// SPDX-License-Identifier: GPL-2.0-only
//! The request engine's cost per enclave: registers a million generated enclaves through
//! [`Engine::execute`] in ENCLAVE_SET messages of one nest and of a full 32 KiB message (what
//! `seng-bench register --single|--batch` and `seng restore` send), and, beside them, through
//! the table directly, and prints ns per enclave and the ratios. Figures, not assertions: run
//! with `cargo bench -p seng-core --bench engine`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use seng_core::engine::{Ending, Engine, Services};
use seng_core::genl::{cmd, AttrWriter, Scoped};
use seng_core::origin::OriginId;
use seng_core::table::{EnclaveTable, Platform, StdPlatform};
use seng_core::{Category, Measurement};

const ENCLAVES: u32 = 1_000_000;
/// seng-nl's message size for batches.
const MESSAGE: usize = 32 * 1024;

/// No connections to end; a grace period is free on the host.
struct Quiet;

impl Services for Quiet {
    fn seed(&mut self) -> u64 {
        7
    }
    fn grace_period(&mut self) {}
    fn end_connections<P: Platform>(&mut self, _: &Ending<'_, P>) {}
}

/// Enclave `i` as `seng-bench gen` makes it: every tenth IPv6, 16 apps, one category each.
fn enclave(i: u32) -> (IpAddr, Measurement, IpAddr, Category) {
    let n = i + 1;
    let ip = if i % 10 == 9 {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, (n >> 16) as u16, n as u16))
    } else {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    };
    let app = (i % 16) as u8;
    let category = Category::new(format!("cat-{app}").as_bytes()).unwrap();
    (ip, Measurement([app + 1; 32]), IpAddr::V4(Ipv4Addr::new(172, 16, (i % 64) as u8, 1)), category)
}

/// ENCLAVE_SET payloads holding every enclave, at most `per_message` nests and 32 KiB each.
fn messages(per_message: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; MESSAGE];
    let mut i = 0;
    while i < ENCLAVES {
        let mut w = AttrWriter::new(&mut buf);
        let mut nests = 0;
        while i < ENCLAVES && nests < per_message {
            let (ip, app, host, category) = enclave(i);
            if w.put_enclave(&ip, Some(&app), Some(&host), &[category]).is_err() {
                break;
            }
            i += 1;
            nests += 1;
        }
        let len = w.len();
        out.push(buf[..len].to_vec());
    }
    out
}

/// ns per enclave registering every message through a fresh engine.
fn through_engine(messages: &[Vec<u8>]) -> f64 {
    let engine = Engine::new(StdPlatform, ENCLAVES as usize, 7).unwrap();
    let start = Instant::now();
    for payload in messages {
        let request = Scoped::parse(cmd::ENCLAVE_SET, payload).unwrap();
        // SAFETY: one thread, no readers.
        unsafe { engine.execute(&mut Quiet, black_box(request), 1, None) }.unwrap();
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(ENCLAVES);
    assert_eq!(engine.live().len(), ENCLAVES as usize);
    ns
}

/// ns per enclave registering straight into a table, the floor the engine adds to.
fn through_table() -> f64 {
    let table = EnclaveTable::new(StdPlatform, ENCLAVES as usize, 7).unwrap();
    let enclaves: Vec<_> = (0..ENCLAVES).map(enclave).collect();
    let start = Instant::now();
    for (ip, app, host, category) in &enclaves {
        // SAFETY: one thread, no readers.
        unsafe { table.register(*ip, OriginId::LOCAL, app, *host, core::slice::from_ref(category)) }.unwrap();
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(ENCLAVES);
    assert_eq!(table.len(), ENCLAVES as usize);
    ns
}

fn median(mut runs: Vec<f64>) -> (f64, f64, f64) {
    runs.sort_by(f64::total_cmp);
    (runs[runs.len() / 2], runs[0], runs[runs.len() - 1])
}

fn main() {
    let single = messages(1);
    let batched = messages(usize::MAX);
    // One path once, for counting its instructions (`perf stat -e instructions:u`).
    match std::env::args().nth(1).as_deref() {
        Some("table") => return println!("{:.1}", through_table()),
        Some("single") => return println!("{:.1}", through_engine(&single)),
        Some("batched") => return println!("{:.1}", through_engine(&batched)),
        _ => {}
    }
    println!("{ENCLAVES} enclaves; batched: {} messages of up to {MESSAGE} B ({} nests each)", batched.len(), ENCLAVES as usize / batched.len());
    println!("{:>24} {:>10} {:>16}", "path", "ns/enclave", "(min-max of 5)");
    let table = median((0..5).map(|_| through_table()).collect());
    let mut rows = vec![("table.register", table)];
    rows.push(("engine, 1 nest/message", median((0..5).map(|_| through_engine(&single)).collect())));
    rows.push(("engine, batched", median((0..5).map(|_| through_engine(&batched)).collect())));
    for (name, (m, lo, hi)) in &rows {
        println!("{name:>24} {m:>10.1} {:>16}", format!("({lo:.1}-{hi:.1})"));
    }
    for (name, (m, _, _)) in &rows[1..] {
        println!("ratio {name} / table.register: {:.2}", m / table.0);
    }
}
