// SPDX-License-Identifier: GPL-2.0-only
//! The `seng-sim` command line, parsed by clap (xtask renders its man page and completions from
//! these definitions).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "seng-sim", version, about = "Offline simulator of Linux filter rules with the seng per-application match")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Replay a capture through a ruleset and print what the kernel would have counted.
    Replay(Replay),
    /// Regenerate the example capture (examples/trace.pcap) deterministically.
    GenExample {
        /// Where to write it.
        #[arg(default_value = "examples/trace.pcap")]
        out: PathBuf,
    },
}

#[derive(Args)]
pub struct Replay {
    /// The capture: pcap or pcapng (Ethernet, raw IP, Linux SLL/SLL2 or BSD loopback).
    pub capture: PathBuf,
    /// The rules: iptables-save / ip6tables-save output, or iptables / ip6tables commands.
    pub rules: PathBuf,
    /// Enclave registrations and timed events (seng save format; `@SECONDS` lines are timed).
    #[arg(long, value_name = "FILE")]
    pub enclaves: Option<PathBuf>,
    /// Define an interface and its addresses; replaces the default tunFA=192.168.28.1/24,fd00:28::1/64.
    #[arg(long = "iface", value_name = "NAME=ADDR/LEN[,ADDR/LEN...]")]
    pub ifaces: Vec<String>,
    /// An extra local address of the gateway.
    #[arg(long = "local", value_name = "ADDR")]
    pub locals: Vec<String>,
    /// A route: `PREFIX/LEN=IFACE`, or `default=IFACE`.
    #[arg(long = "route", value_name = "PREFIX=IFACE")]
    pub routes: Vec<String>,
    /// The interface of the default route.
    #[arg(long, value_name = "NAME", default_value = "eth0")]
    pub default_iface: String,
    /// Take every packet not sent by the gateway as arriving on this interface, instead of the
    /// interface its source address routes to.
    #[arg(long, value_name = "NAME")]
    pub in_iface: Option<String>,
    /// Print one line per packet: its conntrack state and the rule (or policy) that decided.
    #[arg(long, conflicts_with = "json")]
    pub trace: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Do not verify transport checksums of arriving packets (like nf_conntrack_checksum=0).
    #[arg(long)]
    pub no_checksum: bool,
    /// Most enclaves the table holds.
    #[arg(long, value_name = "N", default_value_t = 1 << 20)]
    pub capacity: usize,
    /// The iptables backend the rules are loaded with: they differ only for transport headers
    /// cut short (legacy drops such a packet at a tcp/udp match, nft just does not match).
    #[arg(long, value_enum, default_value_t = BackendArg::Legacy)]
    pub backend: BackendArg,
}

/// `--backend` values.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum BackendArg {
    /// iptables-legacy (x_tables).
    Legacy,
    /// iptables-nft (nf_tables).
    Nft,
}
