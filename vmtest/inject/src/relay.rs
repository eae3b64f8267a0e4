// SPDX-License-Identifier: GPL-2.0-only
//! `inject relay A B`: joins two tun devices into a point-to-point link: whatever the kernel
//! sends out of one is received on the other. With B moved into another network namespace,
//! real programs there reach the gateway over a tun interface, as SENG's enclaves reach tunFA
//! through the SENG server's tunnel, and `tcpdump -i tunFA` records real traffic with complete
//! checksums (tun devices do no checksum offload).

use anyhow::{Context, Result};

use crate::tun::Tun;

/// Which two devices to join.
#[derive(clap::Args)]
pub struct RelayArgs {
    /// One tun device (created if it does not exist).
    pub a: String,
    /// The other tun device.
    pub b: String,
}

/// Relays packets both ways until killed.
pub fn run(args: &RelayArgs) -> Result<()> {
    let mut ends = [Tun::open(&args.a, false)?, Tun::open(&args.b, false)?];
    println!("inject: relaying between {} and {}", args.a, args.b);
    let mut buf = vec![0u8; 65536];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: ends[0].raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: ends[1].raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of two pollfd structs.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("poll failed");
        }
        for (from, fd) in fds.iter().enumerate() {
            if fd.revents & libc::POLLIN == 0 {
                continue;
            }
            let n = ends[from]
                .read_packet(&mut buf)
                .with_context(|| format!("cannot read from {}", ends[from].name))?;
            let to = 1 - from;
            // A packet the peer cannot take (its interface is down, say) is lost, as on a wire.
            let _ = ends[to].write_packet(&buf[..n]);
        }
    }
}
