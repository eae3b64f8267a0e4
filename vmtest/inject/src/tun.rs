// SPDX-License-Identifier: GPL-2.0-only
//! A tun device attached as a queue without packet information headers: writing a packet makes
//! the kernel receive it on that interface; reading returns what the kernel sent out of it.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use anyhow::{bail, Context, Result};

use crate::link::LinkWatch;

/// The longest wait for the kernel to bring an attached device's link up.
const LINK_UP_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// An attached tun device.
pub struct Tun {
    file: File,
    /// The interface name.
    pub name: String,
    /// Its interface index.
    pub ifindex: u32,
    /// Packets written into it (received by the kernel).
    pub written: u64,
    /// Packets the kernel sent out of it, read back by [`Tun::drain`].
    pub sent_out: u64,
}

impl Tun {
    /// Attaches to (or creates) the tun device `dev`, and returns once the kernel can send out
    /// of it if it is up. With `nonblocking`, [`Tun::drain`] can empty its queue without
    /// waiting.
    pub fn open(dev: &str, nonblocking: bool) -> Result<Tun> {
        let watch = LinkWatch::subscribe()?;
        // Reading the carrier of a missing or down device fails: nothing to wait for then.
        let carrier_was_off = std::fs::read_to_string(format!("/sys/class/net/{dev}/carrier"))
            .is_ok_and(|c| c.trim() == "0");
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if nonblocking {
            options.custom_flags(libc::O_NONBLOCK);
        }
        let file = options
            .open("/dev/net/tun")
            .context("cannot open /dev/net/tun (is the tun module loaded?)")?;
        // SAFETY: ifreq is plain data; all-zero is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        let name = dev.as_bytes();
        if name.is_empty() || name.len() >= ifr.ifr_name.len() {
            bail!("invalid interface name {dev:?}");
        }
        for (slot, &byte) in ifr.ifr_name.iter_mut().zip(name) {
            *slot = byte as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one struct ifreq, which outlives the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("TUNSETIFF {dev} (IFF_TUN | IFF_NO_PI) failed"));
        }
        let c_name = CString::new(dev)?;
        // SAFETY: c_name is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
        if ifindex == 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("no index for {dev}"));
        }
        if carrier_was_off {
            watch.wait_up(dev, ifindex, LINK_UP_LIMIT)?;
        }
        Ok(Tun {
            file,
            name: dev.to_string(),
            ifindex,
            written: 0,
            sent_out: 0,
        })
    }

    /// Hands `packet` to the kernel as received on this interface. The tun driver processes
    /// a single write synchronously (netif_receive_skb in the writer's context), so the packet
    /// has been through the stack when this returns.
    pub fn inject(&mut self, packet: &[u8]) -> Result<()> {
        let written = self.file.write(packet).with_context(|| {
            format!(
                "cannot write a packet of {} bytes to {}",
                packet.len(),
                self.name
            )
        })?;
        if written != packet.len() {
            bail!(
                "short write to {}: {written} of {} bytes",
                self.name,
                packet.len()
            );
        }
        self.written += 1;
        Ok(())
    }

    /// Reads and counts every packet the kernel queued for sending out of this interface (a
    /// non-blocking device returns at once when the queue is empty).
    pub fn drain(&mut self, buf: &mut [u8]) -> Result<()> {
        loop {
            match self.file.read(buf) {
                Ok(0) => return Ok(()),
                Ok(_) => self.sent_out += 1,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).with_context(|| format!("cannot read from {}", self.name)),
            }
        }
    }

    /// The kernel's count of packets received on this interface.
    pub fn rx_packets(&self) -> Result<u64> {
        let path = format!("/sys/class/net/{}/statistics/rx_packets", self.name);
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        text.trim()
            .parse()
            .with_context(|| format!("{path}: {text:?} is not a count"))
    }

    /// Drains `tuns` until none has had anything to read for `quiet`: a transmission the kernel
    /// deferred (to the NET_TX softirq) still arrives and is counted.
    pub fn settle(tuns: &mut [Tun], buf: &mut [u8], quiet: std::time::Duration) -> Result<()> {
        loop {
            for t in tuns.iter_mut() {
                t.drain(buf)?;
            }
            let mut fds: Vec<libc::pollfd> = tuns
                .iter()
                .map(|t| libc::pollfd {
                    fd: t.raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // SAFETY: fds is a valid array of pollfd structs for its length.
            let rc = unsafe {
                libc::poll(
                    fds.as_mut_ptr(),
                    fds.len() as libc::nfds_t,
                    quiet.as_millis() as i32,
                )
            };
            match rc {
                0 => return Ok(()),
                n if n > 0 => continue,
                _ => {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != ErrorKind::Interrupted {
                        return Err(e).context("poll on the tun devices failed");
                    }
                }
            }
        }
    }

    /// Reads one packet the kernel sent out of this interface, waiting for it on a blocking
    /// device.
    pub fn read_packet(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }

    /// Writes a packet read elsewhere, as [`Tun::inject`] but for relaying.
    pub fn write_packet(&mut self, packet: &[u8]) -> std::io::Result<usize> {
        self.file.write(packet)
    }

    /// The file descriptor, for poll.
    pub fn raw_fd(&self) -> i32 {
        self.file.as_raw_fd()
    }
}
