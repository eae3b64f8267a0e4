// SPDX-License-Identifier: GPL-2.0-only
//! `inject udp-echo`: a UDP echo server and client over ordinary kernel sockets, for capturing
//! real UDP traffic (Debian's busybox has neither a UDP mode in `nc` nor a UDP server). Every
//! packet is made by the kernel's UDP stack; nothing is synthesized.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Serve or ask.
#[derive(clap::Args)]
pub struct EchoArgs {
    /// Serve: echo every datagram back to its sender, forever.
    #[arg(long, value_name = "ADDR:PORT", conflicts_with = "to")]
    pub listen: Option<SocketAddr>,
    /// Ask: send datagrams to this server and wait for each echo.
    #[arg(long, value_name = "ADDR:PORT")]
    pub to: Option<SocketAddr>,
    /// Datagrams to send.
    #[arg(long, default_value_t = 3)]
    pub count: u32,
    /// Pause between datagrams, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub interval_ms: u64,
}

/// Runs the server or the client.
pub fn run(args: &EchoArgs) -> Result<()> {
    if let Some(addr) = args.listen {
        let socket = UdpSocket::bind(addr).with_context(|| format!("cannot bind {addr}"))?;
        let mut buf = [0u8; 2048];
        loop {
            let (n, peer) = socket.recv_from(&mut buf).context("recv_from failed")?;
            socket
                .send_to(&buf[..n], peer)
                .with_context(|| format!("cannot echo to {peer}"))?;
        }
    }
    let Some(server) = args.to else {
        bail!("give --listen ADDR:PORT or --to ADDR:PORT")
    };
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = UdpSocket::bind(local).context("cannot bind a client socket")?;
    socket
        .connect(server)
        .with_context(|| format!("cannot connect to {server}"))?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut echoed = 0;
    let mut buf = [0u8; 2048];
    for seq in 0..args.count {
        let message = format!("seng e2e datagram {seq}");
        socket
            .send(message.as_bytes())
            .with_context(|| format!("cannot send to {server}"))?;
        if matches!(socket.recv(&mut buf), Ok(n) if buf[..n] == *message.as_bytes()) {
            echoed += 1;
        }
        std::thread::sleep(Duration::from_millis(args.interval_ms));
    }
    println!(
        "inject: {echoed} of {} datagrams to {server} echoed",
        args.count
    );
    Ok(())
}
