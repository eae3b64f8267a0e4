// SPDX-License-Identifier: GPL-2.0-only
//! `seng-bench`: load generator and timer for the VM benchmarks and tests of seng-nl.
//!
//! - `gen COUNT`: prints a script of COUNT `enclave add` lines (input for `seng restore`), or
//!   with `--format ipset|nft` the same addresses as input for the peers of the benchmarks:
//!   `ipset restore` (the hash:ip set `S`) and `nft -f` (the set `s` of table `ip bench`);
//! - `register COUNT --single|--batch`: registers COUNT generated enclaves, one acked message per
//!   enclave or batched, and prints the rate;
//! - `churn SECONDS`: registers and unregisters addresses of 10.200.0.0/16 in bursts, to change
//!   the table under a concurrent dump;
//! - `dump`: dumps the table once and prints what a consistency check needs.
//!
//! Generated enclave `i`: IPv4 10.0.0.0 + i + 1 (every `--v6-every`th one IPv6 fd00::i+1), one
//! of 16 applications with the category `cat-N`, one of 64 hosts.

use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use seng_nl::{Category, Client, Measurement, Operation, Origin, Registration};

#[derive(Parser)]
#[command(name = "seng-bench", about = "Load generator and timer for seng-nl")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print a `seng restore` script of COUNT generated enclaves (or their addresses for a peer).
    Gen {
        count: u32,
        /// Make every Nth enclave IPv6 (0: none; the peers' sets take IPv4 only).
        #[arg(long, default_value_t = 10)]
        v6_every: u32,
        /// What reads the output.
        #[arg(long, value_enum, default_value_t = Format::Seng)]
        format: Format,
    },
    /// Register COUNT generated enclaves and print the rate.
    Register {
        count: u32,
        /// One message per enclave, each acknowledged before the next is sent.
        #[arg(long, conflicts_with = "batch", required_unless_present = "batch")]
        single: bool,
        /// Many enclaves per message, many messages per sendmsg.
        #[arg(long)]
        batch: bool,
        /// Make every Nth enclave IPv6 (0: none).
        #[arg(long, default_value_t = 10)]
        v6_every: u32,
    },
    /// Register and unregister addresses of 10.200.0.0/16 for SECONDS (an address already gone
    /// through a concurrent flush or replace is fine); prints the changes made.
    Churn {
        seconds: u64,
        /// Changes per burst.
        #[arg(long, default_value_t = 10)]
        burst: u32,
        /// Pause between bursts.
        #[arg(long, default_value_t = 0)]
        pause_ms: u64,
    },
    /// Dump the table once; print the enclaves outside 10.200.0.0/16, addresses seen twice,
    /// restarts, and the time taken.
    Dump,
}

/// The input formats of `gen`.
#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// `seng restore`: one `enclave add` line per enclave.
    Seng,
    /// `ipset restore`: creates the hash:ip set `S`, sized for COUNT, and adds the addresses.
    Ipset,
    /// `nft -f`: creates table `ip bench` with the ipv4_addr set `s` of size COUNT and adds the
    /// addresses, [`NFT_CHUNK`] per `add element`.
    Nft,
}

/// Addresses per `add element` command of the nft format: one command of a million elements
/// makes nft's parser hold them all as one expression.
const NFT_CHUNK: u32 = 10_000;

/// Writes the `gen` output.
fn generate(out: &mut impl Write, count: u32, v6_every: u32, format: Format) -> Result<(), String> {
    if v6_every != 0 && !matches!(format, Format::Seng) {
        return Err("the ipset and nft formats take IPv4 addresses only: add --v6-every 0".into());
    }
    let io = |e: io::Error| e.to_string();
    match format {
        Format::Seng => {
            for i in 0..count {
                writeln!(out, "{}", Operation::from(enclave(i, v6_every))).map_err(io)?;
            }
        }
        Format::Ipset => {
            // Buckets for every entry, and room for them all: an admin sizes a big set up front.
            let hashsize = count.max(1024).next_power_of_two();
            writeln!(out, "create S hash:ip family inet hashsize {hashsize} maxelem {}", count.max(65536)).map_err(io)?;
            for i in 0..count {
                writeln!(out, "add S {}", enclave(i, 0).addr).map_err(io)?;
            }
        }
        Format::Nft => {
            writeln!(out, "table ip bench {{\n\tset s {{\n\t\ttype ipv4_addr\n\t\tsize {}\n\t}}\n}}", count.max(1)).map_err(io)?;
            for start in (0..count).step_by(NFT_CHUNK as usize) {
                let addrs: Vec<String> = (start..count.min(start + NFT_CHUNK)).map(|i| enclave(i, 0).addr.to_string()).collect();
                writeln!(out, "add element ip bench s {{ {} }}", addrs.join(", ")).map_err(io)?;
            }
        }
    }
    out.flush().map_err(io)
}

fn enclave(i: u32, v6_every: u32) -> Registration {
    let n = i + 1;
    let addr = if v6_every != 0 && i % v6_every == v6_every - 1 {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, (n >> 16) as u16, n as u16))
    } else {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    };
    let app = (i % 16) as u8;
    let category = Category::new(format!("cat-{app}").as_bytes()).unwrap_or_else(|e| unreachable!("{e}"));
    Registration {
        addr,
        app: Measurement([app + 1; 32]),
        host: IpAddr::V4(Ipv4Addr::new(172, 16, (i % 64) as u8, 1)),
        categories: vec![category],
        origin: Origin::Local,
    }
}

fn rate(what: &str, count: u32, took: Duration) {
    let secs = took.as_secs_f64();
    println!("{what}: {count} enclaves in {secs:.3} s = {:.0} enclaves/s", f64::from(count) / secs.max(1e-9));
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Cmd::Gen { count, v6_every, format } => generate(&mut BufWriter::with_capacity(1 << 20, io::stdout().lock()), count, v6_every, format),
        Cmd::Register { count, single, batch: _, v6_every } => {
            let mut client = Client::connect().map_err(|e| e.to_string())?;
            let start = Instant::now();
            if single {
                for i in 0..count {
                    client.register(&enclave(i, v6_every)).map_err(|e| format!("enclave #{i}: {e}"))?;
                }
                rate("register single (one acked message per enclave)", count, start.elapsed());
            } else {
                client.register_batch((0..count).map(|i| enclave(i, v6_every))).map_err(|e| e.to_string())?;
                rate("register batched (packed messages, several per sendmsg)", count, start.elapsed());
            }
            Ok(())
        }
        Cmd::Churn { seconds, burst, pause_ms } => {
            let mut client = Client::connect().map_err(|e| e.to_string())?;
            let end = Instant::now() + Duration::from_secs(seconds);
            let mut changes = 0u64;
            let mut i = 0u32;
            while Instant::now() < end {
                for _ in 0..burst.div_ceil(2) {
                    let e = Registration { addr: IpAddr::V4(Ipv4Addr::from(0x0ac8_0000 + (i % 1000))), ..enclave(i, 0) };
                    client.register(&e).map_err(|err| err.to_string())?;
                    // A concurrent flush or table replace may have removed it already.
                    match client.unregister(e.addr) {
                        Err(err) if !err.is_not_found() => return Err(err.to_string()),
                        _ => changes += 2,
                    }
                    i += 1;
                }
                std::thread::sleep(Duration::from_millis(pause_ms));
            }
            println!("churn: {changes} changes in {seconds} s");
            Ok(())
        }
        Cmd::Dump => {
            let mut client = Client::connect().map_err(|e| e.to_string())?;
            let start = Instant::now();
            let dump = client.dump().map_err(|e| e.to_string())?;
            let took = start.elapsed();
            let mut seen = std::collections::HashSet::new();
            let (mut stable, mut duplicates) = (0u64, 0u64);
            for e in dump.iter() {
                let e = e.map_err(|e| e.to_string())?;
                duplicates += u64::from(!seen.insert(e.addr));
                let churned = matches!(e.addr, IpAddr::V4(a) if a.octets()[..2] == [10, 200]);
                stable += u64::from(!churned);
            }
            println!("stable {stable} duplicates {duplicates} restarts {} took {:.3} s", dump.restarts(), took.as_secs_f64());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seng-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn gen(count: u32, v6_every: u32, format: Format) -> Result<String, String> {
        let mut out = Vec::new();
        generate(&mut out, count, v6_every, format)?;
        Ok(String::from_utf8(out).expect("generated text is UTF-8"))
    }

    #[test]
    fn ipset_input_sizes_the_set_and_adds_every_address() {
        let text = gen(3, 0, Format::Ipset).unwrap();
        assert_eq!(text, "create S hash:ip family inet hashsize 1024 maxelem 65536\nadd S 10.0.0.1\nadd S 10.0.0.2\nadd S 10.0.0.3\n");
        assert!(gen(2_000_000, 0, Format::Ipset).unwrap().starts_with("create S hash:ip family inet hashsize 2097152 maxelem 2000000\n"));
    }

    #[test]
    fn nft_input_adds_the_addresses_in_chunks() {
        let text = gen(NFT_CHUNK + 1, 0, Format::Nft).unwrap();
        let adds: Vec<&str> = text.lines().filter(|l| l.starts_with("add element ip bench s { ")).collect();
        assert_eq!(adds.len(), 2);
        assert_eq!(adds[0].matches(", ").count() as u32, NFT_CHUNK - 1);
        assert_eq!(adds[1], format!("add element ip bench s {{ {} }}", Ipv4Addr::from(0x0a00_0000 + NFT_CHUNK + 1)));
        assert!(text.contains(&format!("size {}", NFT_CHUNK + 1)));
    }

    #[test]
    fn peer_formats_refuse_ipv6() {
        let err = gen(10, 10, Format::Nft).unwrap_err();
        assert!(err.contains("--v6-every 0"), "{err}");
    }

    #[test]
    fn seng_format_is_a_restore_script() {
        let text = gen(2, 2, Format::Seng).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("enclave add 10.0.0.1 "), "{}", lines[0]);
        assert!(lines[1].starts_with("enclave add fd00::2 "), "{}", lines[1]);
    }
}
