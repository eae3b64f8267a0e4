// SPDX-License-Identifier: GPL-2.0-only
//! Waits until the kernel can transmit through a tun device just attached.
//!
//! A tun device without an attached queue has its carrier off, and the kernel's link watcher
//! has swapped its qdisc for one that drops everything. Attaching turns the carrier on at
//! once, but the qdisc comes back only when the link watcher runs (a deferred work item), and
//! a packet sent out of the device before then is dropped after netfilter counted it. The
//! watcher announces its work with an RTM_NEWLINK whose operational state is up, sent after it
//! restored the qdisc; the attach itself announces one too, but under the same lock and before,
//! with the state the device had.

use std::io;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::route::open_rtnetlink;

const NLMSG_HDRLEN: usize = 16;
/// struct ifinfomsg: family, pad, type (u16), index (i32), flags, change.
const IFINFOMSG_LEN: usize = 16;
const IFLA_OPERSTATE: u16 = 16;
const IF_OPER_UP: u8 = 6;
const RTMGRP_LINK: u32 = 1;

/// A route netlink socket subscribed to link notifications.
pub struct LinkWatch {
    fd: i32,
}

/// Whether one datagram of link notifications says `ifindex` is operationally up.
fn announces_up(datagram: &[u8], ifindex: u32) -> bool {
    let mut at = 0;
    while at + NLMSG_HDRLEN <= datagram.len() {
        let len = u32::from_ne_bytes(datagram[at..at + 4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes([datagram[at + 4], datagram[at + 5]]);
        if len < NLMSG_HDRLEN || at + len > datagram.len() {
            return false;
        }
        let body = &datagram[at + NLMSG_HDRLEN..at + len];
        if kind == libc::RTM_NEWLINK && body.len() >= IFINFOMSG_LEN {
            let index = u32::from_ne_bytes(body[4..8].try_into().expect("4 bytes"));
            if index == ifindex && operstate(&body[IFINFOMSG_LEN..]) == Some(IF_OPER_UP) {
                return true;
            }
        }
        at += len.next_multiple_of(4);
    }
    false
}

/// The IFLA_OPERSTATE attribute among `attrs`.
fn operstate(attrs: &[u8]) -> Option<u8> {
    let mut at = 0;
    while at + 4 <= attrs.len() {
        let len = usize::from(u16::from_ne_bytes([attrs[at], attrs[at + 1]]));
        let kind = u16::from_ne_bytes([attrs[at + 2], attrs[at + 3]]);
        if len < 4 || at + len > attrs.len() {
            return None;
        }
        if kind == IFLA_OPERSTATE && len == 5 {
            return Some(attrs[at + 4]);
        }
        at += len.next_multiple_of(4);
    }
    None
}

impl LinkWatch {
    /// Subscribes to link notifications; do it before the change to be waited for.
    pub fn subscribe() -> Result<LinkWatch> {
        let fd = open_rtnetlink()?;
        let watch = LinkWatch { fd };
        // SAFETY: an all-zero sockaddr_nl is valid; bind reads exactly its size.
        let rc = unsafe {
            let mut local: libc::sockaddr_nl = std::mem::zeroed();
            local.nl_family = libc::AF_NETLINK as u16;
            local.nl_groups = RTMGRP_LINK;
            libc::bind(
                fd,
                (&local as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error())
                .context("cannot subscribe to link notifications");
        }
        Ok(watch)
    }

    /// Waits until the kernel announces `dev` (index `ifindex`) operationally up, at most
    /// `limit`.
    pub fn wait_up(&self, dev: &str, ifindex: u32, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 16384];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "{dev}: attached, but the kernel did not bring its link up within {} s",
                    limit.as_secs()
                );
            }
            let mut pfd = libc::pollfd {
                fd: self.fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: pfd is one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e).context("poll on the rtnetlink socket failed");
            }
            if rc == 0 {
                continue;
            }
            // SAFETY: buf is writable for its length.
            let n = unsafe { libc::recv(self.fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error())
                    .with_context(|| format!("{dev}: cannot read link notifications"));
            }
            if announces_up(&buf[..n as usize], ifindex) {
                return Ok(());
            }
        }
    }
}

impl Drop for LinkWatch {
    fn drop(&mut self) {
        // SAFETY: fd is owned by this value.
        unsafe { libc::close(self.fd) };
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// An RTM_NEWLINK for `index` with an IFLA_OPERSTATE of `state` after an IFLA_MTU.
    fn newlink(index: u32, state: u8) -> Vec<u8> {
        let mut m = vec![0u8; NLMSG_HDRLEN + IFINFOMSG_LEN];
        m[4..6].copy_from_slice(&libc::RTM_NEWLINK.to_ne_bytes());
        m[NLMSG_HDRLEN + 4..NLMSG_HDRLEN + 8].copy_from_slice(&index.to_ne_bytes());
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&4u16.to_ne_bytes());
        m.extend_from_slice(&1500u32.to_ne_bytes());
        m.extend_from_slice(&5u16.to_ne_bytes());
        m.extend_from_slice(&IFLA_OPERSTATE.to_ne_bytes());
        m.extend_from_slice(&[state, 0, 0, 0]);
        let len = (m.len() - 3) as u32;
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m
    }

    #[test]
    fn only_an_up_state_for_the_device_counts() {
        assert!(announces_up(&newlink(7, IF_OPER_UP), 7));
        assert!(!announces_up(&newlink(7, IF_OPER_UP), 8));
        // IF_OPER_DOWN: the attach's own announcement, before the link watcher ran.
        assert!(!announces_up(&newlink(7, 2), 7));
        let mut two = newlink(3, 2);
        two.extend(newlink(7, IF_OPER_UP));
        assert!(announces_up(&two, 7));
    }

    #[test]
    fn a_truncated_message_is_not_an_announcement() {
        let m = newlink(7, IF_OPER_UP);
        assert!(!announces_up(&m[..m.len() - 4], 7));
    }
}
