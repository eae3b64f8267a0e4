// SPDX-License-Identifier: GPL-2.0-only
//! Raw sockets that send complete IP packets (IPPROTO_RAW implies IP_HDRINCL / IPV6_HDRINCL):
//! the gateway's own packets of a capture leave through `ip_local_out`, so they traverse
//! OUTPUT (and conntrack's LOCAL_OUT) like packets a local program sent.

use std::io;
use std::net::IpAddr;

use anyhow::{bail, Context, Result};

/// One raw socket per family, with a firewall mark on everything sent.
pub struct RawSender {
    v4: i32,
    v6: i32,
    /// Packets sent and passed on by the stack.
    pub sent: u64,
    /// Packets sent that netfilter dropped (the send fails with EPERM).
    pub refused: u64,
}

fn open(family: i32, mark: u32) -> Result<i32> {
    // SAFETY: plain socket(2) call.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error())
            .context("cannot open a raw socket (needs CAP_NET_RAW)");
    }
    // SAFETY: the option value is a u32 that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            4,
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        // SAFETY: fd was opened above.
        unsafe { libc::close(fd) };
        return Err(e).context("cannot set SO_MARK on the raw socket (needs CAP_NET_ADMIN)");
    }
    Ok(fd)
}

impl RawSender {
    /// Opens both sockets; `mark` lets policy routing tell replayed packets from the stack's
    /// own answers.
    pub fn new(mark: u32) -> Result<RawSender> {
        let v4 = open(libc::AF_INET, mark)?;
        let v6 = open(libc::AF_INET6, mark).inspect_err(|_| {
            // SAFETY: v4 was opened above.
            unsafe { libc::close(v4) };
        })?;
        Ok(RawSender {
            v4,
            v6,
            sent: 0,
            refused: 0,
        })
    }

    /// Sends `packet` (a whole IP packet) to its destination `dst`. For IPv4 the kernel
    /// rewrites the total length and header checksum (and picks an ID if it is 0), which the
    /// caller has checked to be right already. A packet that netfilter drops (OUTPUT DROP or
    /// REJECT) makes the send fail with EPERM: that is a delivered packet, counted in
    /// [`RawSender::refused`].
    pub fn send(&mut self, packet: &[u8], dst: IpAddr) -> Result<()> {
        // SAFETY: the sockaddr structs are plain data, fully initialised before the call, and
        // packet is readable for its length.
        let n = unsafe {
            match dst {
                IpAddr::V4(a) => {
                    let mut sa: libc::sockaddr_in = std::mem::zeroed();
                    sa.sin_family = libc::AF_INET as u16;
                    sa.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
                    libc::sendto(
                        self.v4,
                        packet.as_ptr().cast(),
                        packet.len(),
                        0,
                        (&sa as *const libc::sockaddr_in).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as u32,
                    )
                }
                IpAddr::V6(a) => {
                    let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
                    sa.sin6_family = libc::AF_INET6 as u16;
                    sa.sin6_addr.s6_addr = a.octets();
                    libc::sendto(
                        self.v6,
                        packet.as_ptr().cast(),
                        packet.len(),
                        0,
                        (&sa as *const libc::sockaddr_in6).cast(),
                        std::mem::size_of::<libc::sockaddr_in6>() as u32,
                    )
                }
            }
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EPERM) {
                self.refused += 1;
                return Ok(());
            }
            return Err(e).with_context(|| {
                format!(
                    "cannot send a packet of {} bytes to {dst} through OUTPUT",
                    packet.len()
                )
            });
        }
        if n as usize != packet.len() {
            bail!("short send to {dst}: {n} of {} bytes", packet.len());
        }
        self.sent += 1;
        Ok(())
    }
}

impl Drop for RawSender {
    fn drop(&mut self) {
        // SAFETY: both descriptors are owned by this value.
        unsafe {
            libc::close(self.v4);
            libc::close(self.v6);
        }
    }
}
