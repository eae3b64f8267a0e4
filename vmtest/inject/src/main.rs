// SPDX-License-Identifier: GPL-2.0-only
//! `inject`: puts packets into the test VM's stack through tun devices.
//!
//! - `inject udp --src A [--sources K] --dst B --dport P [--count N] [--len L] [--dev tunFA]` writes N UDP
//!   datagrams into a tun device, so the kernel receives them on that interface.
//! - `inject pcap CAPTURE --dev tunFA --dev eth0 [--events SCRIPT] [--summary FILE]` replays a
//!   capture in order: received packets into the tun device their source routes to, the
//!   gateway's own packets through OUTPUT, timed enclave events over netlink in between (see
//!   [`replay`]).
//! - `inject relay A B` joins two tun devices into a link, and `inject udp-echo` serves and asks
//!   UDP echoes over ordinary sockets: both for capturing real programs' traffic.

mod echo;
mod link;
mod raw;
mod relay;
mod replay;
mod route;
mod tun;
mod udp;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Put packets into the kernel through tun devices")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send UDP datagrams with valid IPv4 and UDP checksums.
    Udp {
        /// The tun device to write into (it must exist, e.g. from `ip tuntap add`).
        #[arg(long, default_value = "tunFA")]
        dev: String,
        #[command(flatten)]
        args: udp::UdpArgs,
    },
    /// Replay a capture through the gateway, with timed enclave events.
    Pcap(replay::PcapArgs),
    /// Join two tun devices into a point-to-point link until killed.
    Relay(relay::RelayArgs),
    /// A UDP echo server (--listen) or client (--to) over ordinary sockets.
    UdpEcho(echo::EchoArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Udp { dev, args } => {
            let mut tun = tun::Tun::open(&dev, false)?;
            let start = std::time::Instant::now();
            for seq in 0..args.count {
                tun.inject(&udp::udp_packet(&args, seq)?)?;
            }
            // A tun write runs the receive path (netfilter included) before returning, so this
            // is the rate at which the kernel classified the packets.
            let secs = start.elapsed().as_secs_f64();
            println!(
                "inject: sent {} UDP packets of {} bytes into {dev} in {secs:.3} s ({:.0} packets/s)",
                args.count,
                args.len,
                args.count as f64 / secs
            );
            Ok(())
        }
        Command::Pcap(args) => replay::run(&args),
        Command::Relay(args) => relay::run(&args),
        Command::UdpEcho(args) => echo::run(&args),
    }
}
