// SPDX-License-Identifier: GPL-2.0-only
//! Asks the kernel's routing (RTM_GETROUTE over rtnetlink) where an address routes to: whether
//! it is one of the gateway's own addresses, and otherwise through which interface. The replay
//! uses it to decide how a captured packet enters the stack, so the decision is the kernel's
//! own and matches the simulator's "arrives on the interface its source routes to".

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;

use anyhow::{bail, Context, Result};

/// Where an address routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// It is an address of this host (RTN_LOCAL).
    Local,
    /// Out of the interface with this index.
    Via(u32),
}

/// An rtnetlink socket with a cache of answers.
pub struct Router {
    fd: i32,
    seq: u32,
    mark: u32,
    cache: HashMap<IpAddr, Route>,
}

const NLMSG_HDRLEN: usize = 16;
const RTMSG_LEN: usize = 12;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_MARK: u16 = 16;

fn push_attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// The RTM_GETROUTE request for `addr`, as looked up with firewall mark `mark`.
fn request(addr: IpAddr, mark: u32, seq: u32) -> Vec<u8> {
    let (family, bytes, bits): (u8, Vec<u8>, u8) = match addr {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec(), 32),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec(), 128),
    };
    let mut buf = vec![0u8; NLMSG_HDRLEN];
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32).
    buf.extend_from_slice(&[family, bits, 0, 0, 0, 0, 0, 0]);
    buf.extend_from_slice(&0u32.to_ne_bytes());
    push_attr(&mut buf, RTA_DST, &bytes);
    push_attr(&mut buf, RTA_MARK, &mark.to_ne_bytes());
    let len = buf.len() as u32;
    buf[0..4].copy_from_slice(&len.to_ne_bytes());
    buf[4..6].copy_from_slice(&libc::RTM_GETROUTE.to_ne_bytes());
    buf[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    buf[8..12].copy_from_slice(&seq.to_ne_bytes());
    buf
}

/// Reads the answer to request `seq` out of one datagram; `None` if it holds none.
fn parse_reply(reply: &[u8], seq: u32, addr: IpAddr) -> Result<Option<Route>> {
    let mut at = 0;
    while at + NLMSG_HDRLEN <= reply.len() {
        let word =
            |o: usize| u32::from_ne_bytes([reply[o], reply[o + 1], reply[o + 2], reply[o + 3]]);
        let len = word(at) as usize;
        let kind = u16::from_ne_bytes([reply[at + 4], reply[at + 5]]);
        if len < NLMSG_HDRLEN || at + len > reply.len() {
            bail!("truncated rtnetlink reply");
        }
        let body = &reply[at + NLMSG_HDRLEN..at + len];
        if word(at + 8) == seq {
            if kind == libc::NLMSG_ERROR as u16 {
                let errno = body
                    .get(..4)
                    .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                return Err(io::Error::from_raw_os_error(-errno))
                    .with_context(|| format!("no route to {addr}"));
            }
            if kind == libc::RTM_NEWROUTE && body.len() >= RTMSG_LEN {
                if body[7] == libc::RTN_LOCAL {
                    return Ok(Some(Route::Local));
                }
                let mut a = RTMSG_LEN;
                while a + 4 <= body.len() {
                    let alen = usize::from(u16::from_ne_bytes([body[a], body[a + 1]]));
                    let akind = u16::from_ne_bytes([body[a + 2], body[a + 3]]);
                    if alen < 4 || a + alen > body.len() {
                        break;
                    }
                    if akind == RTA_OIF && alen == 8 {
                        return Ok(Some(Route::Via(u32::from_ne_bytes([
                            body[a + 4],
                            body[a + 5],
                            body[a + 6],
                            body[a + 7],
                        ]))));
                    }
                    a += alen.next_multiple_of(4);
                }
                bail!(
                    "the route to {addr} (type {}) names no output interface",
                    body[7]
                );
            }
        }
        at += len.next_multiple_of(4);
    }
    Ok(None)
}

/// A new route netlink socket (close-on-exec).
pub fn open_rtnetlink() -> Result<i32> {
    // SAFETY: plain socket(2) call.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("cannot open an rtnetlink socket");
    }
    Ok(fd)
}

impl Router {
    /// Opens the socket; lookups are made as for packets carrying firewall mark `mark`.
    pub fn new(mark: u32) -> Result<Router> {
        Ok(Router {
            fd: open_rtnetlink()?,
            seq: 0,
            mark,
            cache: HashMap::new(),
        })
    }

    /// Where `addr` routes (cached: routes do not change during a replay).
    pub fn route(&mut self, addr: IpAddr) -> Result<Route> {
        if let Some(route) = self.cache.get(&addr) {
            return Ok(*route);
        }
        self.seq += 1;
        let req = request(addr, self.mark, self.seq);
        // SAFETY: req is a valid buffer; a zeroed sockaddr_nl addresses the kernel.
        let sent = unsafe {
            let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
            kernel.nl_family = libc::AF_NETLINK as u16;
            libc::sendto(
                self.fd,
                req.as_ptr().cast(),
                req.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error()).context("cannot send RTM_GETROUTE");
        }
        let mut buf = vec![0u8; 8192];
        loop {
            // SAFETY: buf is writable for its length.
            let n = unsafe { libc::recv(self.fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error())
                    .context("cannot receive the RTM_GETROUTE answer");
            }
            if let Some(route) = parse_reply(&buf[..n as usize], self.seq, addr)? {
                self.cache.insert(addr, route);
                return Ok(route);
            }
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        // SAFETY: fd is owned by this value.
        unsafe { libc::close(self.fd) };
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn request_layout() {
        let r = request("192.168.28.7".parse().unwrap(), 0x5e9, 9);
        assert_eq!(r.len(), 16 + 12 + 8 + 8);
        assert_eq!(
            u32::from_ne_bytes(r[0..4].try_into().unwrap()) as usize,
            r.len()
        );
        assert_eq!(r[16], libc::AF_INET as u8);
        assert_eq!(r[17], 32);
        assert_eq!(&r[32..36], &[192, 168, 28, 7]);
        assert_eq!(u32::from_ne_bytes(r[40..44].try_into().unwrap()), 0x5e9);
        let r6 = request("fd00:28::1".parse().unwrap(), 0, 1);
        assert_eq!(r6.len(), 16 + 12 + 20 + 8);
    }

    fn reply(seq: u32, kind: u16, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn parses_local_via_and_errors() {
        let addr: IpAddr = "10.0.0.1".parse().unwrap();
        let mut body = vec![2, 32, 0, 0, 254, 0, 0, libc::RTN_UNICAST, 0, 0, 0, 0];
        push_attr(&mut body, RTA_OIF, &7u32.to_ne_bytes());
        assert_eq!(
            parse_reply(&reply(3, libc::RTM_NEWROUTE, &body), 3, addr).unwrap(),
            Some(Route::Via(7))
        );
        let local = [2, 32, 0, 0, 255, 0, 0, libc::RTN_LOCAL, 0, 0, 0, 0];
        assert_eq!(
            parse_reply(&reply(4, libc::RTM_NEWROUTE, &local), 4, addr).unwrap(),
            Some(Route::Local)
        );
        let err = parse_reply(
            &reply(
                5,
                libc::NLMSG_ERROR as u16,
                &(-libc::ENETUNREACH).to_ne_bytes(),
            ),
            5,
            addr,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("unreachable"), "{err:#}");
        assert_eq!(
            parse_reply(&reply(6, libc::RTM_NEWROUTE, &body), 5, addr).unwrap(),
            None,
            "another request's answer"
        );
    }
}
