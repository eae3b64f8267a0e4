// SPDX-License-Identifier: GPL-2.0-only
//! Events: the module echoes every successful change to the `seng_events` multicast group as the
//! request that made it (never to `seng_mcgrp`, the original's group, which stays silent). A [`Subscription`] (blocking iterator) or an [`EventStream`] (tokio)
//! decodes those echoes with the module's own request decoder and yields them as the
//! [`Operation`]s they perform, which `seng monitor` prints as script lines.

use std::collections::VecDeque;
use std::fmt;
use std::os::fd::AsRawFd;

use netlink_sys::Socket;
use seng_core::genl::{Request, Scoped};
use seng_core::operation::{Dialect, Operation};

use crate::client::{no_event_group, open_socket, recv_datagram, resolve, RECV_BUF};
use crate::error::{Error, Result};
use crate::wire::{self, Reply};

/// Receive buffer asked for: a batch echoes up to 32 KiB per message, and a listener that falls
/// behind loses events.
const EVENT_RCVBUF: libc::c_int = 16 << 20;

/// One change of the table, as a subscriber sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A change, as the operation on the live table that made it (a whole batch: its
    /// registrations, addresses or categories, in the request's order).
    Change(Operation),
    /// A replace transaction was committed: the parts of the origins it named were replaced at
    /// once (the event does not say which: a listener that needs to know dumps the table).
    Replaced,
    /// The socket's receive buffer overflowed: events were lost since the previous one.
    Lost,
}

impl fmt::Display for Event {
    /// The script lines of a change; comment lines for the others.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Change(c) => c.fmt(f),
            Event::Replaced => f.write_str("# table replaced"),
            Event::Lost => f.write_str("# events lost (receive buffer overrun)"),
        }
    }
}

/// The event of one echoed request, if it is one.
pub(crate) fn decode(command: u8, attrs: &[u8], out: &mut VecDeque<Event>) -> Result<()> {
    let undecodable = |e: &dyn std::fmt::Display| Error::Protocol(format!("undecodable event (command {command}): {e}"));
    let request = Scoped::parse(command, attrs).map_err(|e| undecodable(&e))?;
    match Operation::from_request(&request).map_err(|e| undecodable(&e))? {
        Some((Dialect::Legacy | Dialect::Live, op)) => out.push_back(Event::Change(op)),
        // The staging table's changes are not echoed, only its commit.
        Some((Dialect::Staged, _)) => {}
        None if matches!(request.request, Request::ReplaceCommit) => out.push_back(Event::Replaced),
        None => {}
    }
    Ok(())
}

/// Decodes every message of a received datagram.
fn decode_datagram(buf: &[u8], out: &mut VecDeque<Event>) -> Result<()> {
    for reply in wire::replies(buf) {
        if let Reply::Genl { cmd, attrs, .. } = reply? {
            decode(cmd, attrs, out)?;
        }
    }
    Ok(())
}

/// Asks for a large receive buffer: SO_RCVBUFFORCE when privileged, else SO_RCVBUF (capped by
/// `net.core.rmem_max`).
fn enlarge_rcvbuf(fd: &impl AsRawFd) {
    let set = |option| {
        // SAFETY: setsockopt reads an int of the given size from a live local.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&EVENT_RCVBUF as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
        }
    };
    if !set(libc::SO_RCVBUFFORCE) {
        set(libc::SO_RCVBUF);
    }
}

/// The event group of the seng family, resolved on a throwaway socket.
fn group_id() -> Result<u32> {
    let socket = open_socket()?;
    let mut recv = Vec::with_capacity(RECV_BUF);
    resolve(&socket, &mut recv)?.1.ok_or_else(no_event_group)
}

/// Events of the caller's network namespace, as a blocking iterator. Only a listener with
/// CAP_NET_ADMIN gets any: where generic netlink can restrict a group (6.1 and later here),
/// joining without it fails with EPERM; on 5.10 the join succeeds and seng.ko skips the
/// listener when it sends.
pub struct Subscription {
    socket: Socket,
    recv: Vec<u8>,
    pending: VecDeque<Event>,
    failed: bool,
}

impl Subscription {
    /// Resolves the family and joins its event group.
    pub fn new() -> Result<Subscription> {
        Subscription::with_group(group_id()?)
    }

    pub(crate) fn with_group(group: u32) -> Result<Subscription> {
        let socket = open_socket()?;
        socket.add_membership(group).map_err(Error::io("cannot join the seng event group"))?;
        enlarge_rcvbuf(&socket);
        Ok(Subscription { socket, recv: Vec::with_capacity(RECV_BUF), pending: VecDeque::new(), failed: false })
    }
}

impl AsRawFd for Subscription {
    /// The netlink socket, to wait on in an event loop: once it is readable, `next` returns
    /// without blocking.
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.socket.as_raw_fd()
    }
}

impl Iterator for Subscription {
    type Item = Result<Event>;

    /// Blocks until the next event. After a socket error the iterator ends.
    fn next(&mut self) -> Option<Result<Event>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.failed {
                return None;
            }
            match recv_datagram(&self.socket, &mut self.recv) {
                Ok(()) => {
                    if let Err(e) = decode_datagram(&self.recv, &mut self.pending) {
                        return Some(Err(e));
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => self.pending.push_back(Event::Lost),
                Err(e) => {
                    self.failed = true;
                    return Some(Err(Error::Io { context: "cannot receive events", source: e }));
                }
            }
        }
    }
}

#[cfg(feature = "tokio")]
pub use stream::EventStream;

#[cfg(feature = "tokio")]
mod stream {
    use std::collections::VecDeque;
    use std::io;
    use std::pin::Pin;
    use std::task::{ready, Context, Poll};

    use netlink_sys::{protocols::NETLINK_GENERIC, AsyncSocket, SocketAddr, TokioSocket};

    use super::{decode_datagram, enlarge_rcvbuf, group_id, Event};
    use crate::client::RECV_BUF;
    use crate::error::{Error, Result};

    /// Events as an asynchronous stream driven by tokio (`futures_core::Stream`); what
    /// [`super::Subscription`] is for blocking code.
    pub struct EventStream {
        socket: TokioSocket,
        recv: Vec<u8>,
        pending: VecDeque<Event>,
        failed: bool,
    }

    impl EventStream {
        /// Resolves the family and joins its event group. Must be called within a tokio
        /// runtime with IO enabled.
        pub fn connect() -> Result<EventStream> {
            let group = group_id()?;
            let mut socket = TokioSocket::new(NETLINK_GENERIC).map_err(Error::io("cannot open a generic netlink socket"))?;
            let raw = socket.socket_mut();
            raw.bind(&SocketAddr::new(0, 0)).map_err(Error::io("cannot bind the netlink socket"))?;
            raw.add_membership(group).map_err(Error::io("cannot join the seng event group"))?;
            enlarge_rcvbuf(raw);
            Ok(EventStream { socket, recv: Vec::with_capacity(RECV_BUF), pending: VecDeque::new(), failed: false })
        }
    }

    impl futures_core::Stream for EventStream {
        type Item = Result<Event>;

        fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Event>>> {
            let this = self.get_mut();
            loop {
                if let Some(event) = this.pending.pop_front() {
                    return Poll::Ready(Some(Ok(event)));
                }
                if this.failed {
                    return Poll::Ready(None);
                }
                this.recv.clear();
                this.recv.reserve(RECV_BUF);
                match ready!(this.socket.poll_recv(cx, &mut this.recv)) {
                    Ok(()) => {
                        if let Err(e) = decode_datagram(&this.recv, &mut this.pending) {
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => this.pending.push_back(Event::Lost),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        this.failed = true;
                        return Poll::Ready(Some(Err(Error::Io { context: "cannot receive events", source: e })));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod test {
    use std::net::IpAddr;

    use seng_core::genl::{attr, cmd, AttrWriter, LegacyOp};
    use seng_core::{Category, Measurement};

    use super::*;

    fn app() -> Measurement {
        Measurement([7; 32])
    }

    fn attrs(build: impl FnOnce(&mut AttrWriter<'_>) -> std::result::Result<(), seng_core::genl::NoRoom>) -> Vec<u8> {
        wire::attrs(build).unwrap()
    }

    #[test]
    fn echoes_become_script_lines() {
        let web = Category::new(b"Web Mail").unwrap();
        let a = app();
        let v4: IpAddr = "192.168.28.10".parse().unwrap();
        let v6: IpAddr = "fd00::10".parse().unwrap();
        let host: IpAddr = "10.0.0.5".parse().unwrap();
        let gw: seng_core::Origin = "gw-b".parse().unwrap();
        let cases: Vec<(u8, Vec<u8>, Vec<String>)> = vec![
            (
                cmd::ENCLAVE_SET,
                attrs(|w| {
                    w.put_enclave(&v4, Some(&a), Some(&host), &[web])?;
                    w.put_enclave(&v6, Some(&a), Some(&v6), &[])
                }),
                vec![format!("enclave add 192.168.28.10 --app {a} --host 10.0.0.5 --cat \"Web Mail\""), format!("enclave add fd00::10 --app {a} --host fd00::10")],
            ),
            (cmd::ENCLAVE_DEL, attrs(|w| w.put_enclave(&v6, None, None, &[])), vec!["enclave del fd00::10".into()]),
            (cmd::FLUSH, vec![], vec!["flush".into()]),
            // A gateway's changes carry its origin.
            (
                cmd::ENCLAVE_SET,
                attrs(|w| {
                    w.put_scope(&gw)?;
                    w.put_enclave(&v4, Some(&a), Some(&host), &[])
                }),
                vec![format!("enclave add 192.168.28.10 --app {a} --host 10.0.0.5 --origin gw-b")],
            ),
            (cmd::ENCLAVE_DEL, attrs(|w| { w.put_scope(&gw)?; w.put_enclave(&v6, None, None, &[]) }), vec!["enclave del fd00::10 --origin gw-b".into()]),
            (cmd::FLUSH, attrs(|w| w.put_scope(&gw)), vec!["flush --origin gw-b".into()]),
            (cmd::CAT_DEL, attrs(|w| { w.put_scope(&gw)?; w.put(attr::APP, &a.0)?; w.put_category(attr::CAT, &web) }), vec![format!("app cat del {a} \"Web Mail\" --origin gw-b")]),
            (
                cmd::CAT_ADD,
                attrs(|w| {
                    w.put(attr::APP, &a.0)?;
                    w.put_category(attr::CAT, &web)?;
                    w.put_category(attr::CAT, &Category::new(b"Browser").unwrap())
                }),
                vec![format!("app cat add {a} \"Web Mail\""), format!("app cat add {a} Browser")],
            ),
            (cmd::CAT_DEL, attrs(|w| { w.put(attr::APP, &a.0)?; w.put_category(attr::CAT, &web) }), vec![format!("app cat del {a} \"Web Mail\"")]),
            (cmd::REPLACE_COMMIT, vec![], vec!["# table replaced".into()]),
            (
                cmd::LEGACY,
                attrs(|w| LegacyOp::Register { addr: [192, 168, 28, 11].into(), app: a, host: [10, 0, 0, 6].into(), category: Some(web) }.emit(w)),
                vec![format!("enclave add 192.168.28.11 --app {a} --host 10.0.0.6 --cat \"Web Mail\"")],
            ),
            (cmd::LEGACY, attrs(|w| LegacyOp::Unregister { addr: [192, 168, 28, 11].into() }.emit(w)), vec!["enclave del 192.168.28.11".into()]),
            (cmd::LEGACY, attrs(|w| LegacyOp::Flush.emit(w)), vec!["flush".into()]),
        ];
        for (command, payload, want) in cases {
            let mut out = VecDeque::new();
            decode(command, &payload, &mut out).unwrap();
            assert_eq!(out.len(), 1, "one event per request");
            let got: Vec<String> = out[0].to_string().lines().map(String::from).collect();
            assert_eq!(got, want, "command {command}");
        }
        let mut out = VecDeque::new();
        assert!(decode(cmd::ENCLAVE_SET, &[], &mut out).is_err(), "an empty ENCLAVE_SET is not an event");
    }

    #[test]
    fn decodes_whole_datagrams() {
        let mut datagram = Vec::new();
        wire::frame(&mut datagram, 0x20, 0, 0, cmd::FLUSH, &[]);
        let del = attrs(|w| w.put_enclave(&"10.1.1.1".parse().unwrap(), None, None, &[]));
        wire::frame(&mut datagram, 0x20, 0, 0, cmd::ENCLAVE_DEL, &del);
        let mut out = VecDeque::new();
        decode_datagram(&datagram, &mut out).unwrap();
        let del = Operation::Unregister { origin: seng_core::Origin::Local, addrs: vec!["10.1.1.1".parse().unwrap()] };
        assert_eq!(out, [Event::Change(Operation::FLUSH), Event::Change(del)]);
    }
}
