// SPDX-License-Identifier: GPL-2.0-only
//! [`Client`]: a generic netlink socket talking to seng.ko, with one method per operation.
//!
//! Every request carries NLM_F_ACK and is answered before the method returns, so success means
//! the kernel applied the change. Batches pack hundreds of ENCLAVE nests per message and several
//! messages per `sendmsg`, then collect one ack per message. The socket asks for extended acks
//! (NETLINK_EXT_ACK) so refusals carry the module's own message, and for capped acks
//! (NETLINK_CAP_ACK) so a refused 32 KiB message is not echoed back whole.

use std::borrow::Borrow;
use std::io;
use std::net::IpAddr;
use std::ops::Range;

use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST};
use netlink_sys::{protocols::NETLINK_GENERIC, Socket};
use seng_core::genl::{attr, cmd, errno, AttrWriter, LegacyOp, NoRoom, ReadScope, EVENTS_MCGRP_NAME, FAMILY_NAME};
use seng_core::operation::{Dialect, EmitError, Operation, Registration};
use seng_core::{Category, Measurement, Origin};

use crate::error::{BatchError, BatchFailure, Error, KernelError, ReplaceError, Result};
use crate::event::Subscription;
use crate::stats::Stats;
use crate::wire::{self, NestPacker, Reply, HEADERS_LEN, MAX_PAYLOAD};

/// Receive buffer: dump parts are at most 32 KiB, acks are small.
pub(crate) const RECV_BUF: usize = 128 * 1024;

/// Bytes of requests per `sendmsg`. The kernel refuses a datagram larger than the socket's send
/// buffer (212992 bytes by default), so four full messages go at a time.
const SEND_LIMIT: usize = 4 * (MAX_PAYLOAD + HEADERS_LEN);

/// A dump interrupted by concurrent changes (NLM_F_DUMP_INTR) is restarted this often.
const DUMP_ATTEMPTS: usize = 8;

/// A connection to the seng module of the caller's network namespace.
///
/// Every operation but [`Client::subscribe`] needs CAP_NET_ADMIN (the module's commands are
/// GENL_ADMIN_PERM); without it they fail with [`Error::PermissionDenied`].
pub struct Client {
    socket: Socket,
    family: u16,
    group: Option<u32>,
    seq: u32,
    recv: Vec<u8>,
}

/// Opens a generic netlink socket bound to a kernel-assigned port.
pub(crate) fn open_socket() -> Result<Socket> {
    let mut socket = Socket::new(NETLINK_GENERIC).map_err(Error::io("cannot open a generic netlink socket"))?;
    socket.bind_auto().map_err(Error::io("cannot bind the netlink socket"))?;
    Ok(socket)
}

/// Resolves the seng family id and its event group through nlctrl.
pub(crate) fn resolve(socket: &Socket, recv: &mut Vec<u8>) -> Result<(u16, Option<u32>)> {
    const SEQ: u32 = 1;
    let mut out = Vec::new();
    wire::frame_get_family(&mut out, NLM_F_REQUEST | NLM_F_ACK, SEQ, FAMILY_NAME);
    let mut found = None;
    let acks = exchange(socket, recv, &out, SEQ, 1, |_, cmd_attrs| {
        found = Some(wire::parse_family(cmd_attrs, EVENTS_MCGRP_NAME));
        Ok(())
    })?;
    match acks.into_iter().next() {
        Some(Err(e)) if e.errno == errno::ENOENT => Err(Error::ModuleNotLoaded),
        Some(Err(e)) => Err(e.into()),
        _ => found.ok_or_else(|| Error::Protocol("nlctrl acknowledged GETFAMILY without a reply".into()))?,
    }
}

/// The error for a family without the event group: a seng.ko from before the group existed.
pub(crate) fn no_event_group() -> Error {
    Error::Protocol("the seng family has no `seng_events` group (is the loaded seng.ko older than this seng?)".into())
}

/// Receives one datagram into `buf`, retrying on EINTR.
pub(crate) fn recv_datagram(socket: &Socket, buf: &mut Vec<u8>) -> io::Result<()> {
    loop {
        buf.clear();
        buf.reserve(RECV_BUF);
        match socket.recv(buf, 0) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other.map(drop),
        }
    }
}

/// The acks of `count` requests numbered `first..first + count`, filled in from received
/// datagrams.
struct Acks {
    first: u32,
    acks: Vec<Option<Result<(), KernelError>>>,
    pending: usize,
}

impl Acks {
    fn new(first: u32, count: usize) -> Acks {
        Acks { first, acks: vec![None; count], pending: count }
    }

    fn index(&self, seq: u32) -> Option<usize> {
        Some(seq.wrapping_sub(self.first) as usize).filter(|&i| i < self.acks.len())
    }

    /// Takes in one datagram; `on_reply(i, attrs)` sees each reply message to request `i`.
    /// Messages of other requests (late answers to an earlier exchange) are ignored.
    fn feed(&mut self, datagram: &[u8], on_reply: &mut impl FnMut(usize, &[u8]) -> Result<()>) -> Result<()> {
        for reply in wire::replies(datagram) {
            match reply? {
                Reply::Genl { seq, attrs, .. } => {
                    if let Some(i) = self.index(seq) {
                        on_reply(i, attrs)?;
                    }
                }
                Reply::Ack { seq, result } => {
                    if let Some(slot @ None) = self.index(seq).and_then(|i| self.acks.get_mut(i)) {
                        *slot = Some(result);
                        self.pending -= 1;
                    }
                }
                Reply::Done { .. } | Reply::Other => {}
            }
        }
        Ok(())
    }

    fn complete(&self) -> bool {
        self.pending == 0
    }

    fn into_results(self) -> Vec<Result<(), KernelError>> {
        self.acks.into_iter().map(|a| a.unwrap_or(Ok(()))).collect()
    }
}

/// Sends `out`, holding `count` framed requests numbered `first..first + count`, in one
/// `sendmsg` and waits for the ack of each. `on_reply(i, attrs)` sees the generic netlink reply
/// messages to request `i`. Returns each request's ack.
fn exchange(
    socket: &Socket,
    recv: &mut Vec<u8>,
    out: &[u8],
    first: u32,
    count: usize,
    mut on_reply: impl FnMut(usize, &[u8]) -> Result<()>,
) -> Result<Vec<Result<(), KernelError>>> {
    send(socket, out)?;
    let mut acks = Acks::new(first, count);
    while !acks.complete() {
        recv_datagram(socket, recv).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOBUFS) => Error::Protocol("replies were lost (socket receive buffer overrun)".into()),
            _ => Error::Io { context: "cannot receive from the seng module", source: e },
        })?;
        acks.feed(recv, &mut on_reply)?;
    }
    Ok(acks.into_results())
}

fn send(socket: &Socket, out: &[u8]) -> Result<()> {
    loop {
        match socket.send(out, 0) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::Io { context: "cannot send to the seng module", source: e }),
            Ok(_) => return Ok(()),
        }
    }
}

/// The parts of dump `seq` received so far.
struct DumpParts {
    seq: u32,
    nests: Vec<u8>,
    interrupted: bool,
}

impl DumpParts {
    /// Takes in one datagram; true once the dump is complete.
    fn feed(&mut self, datagram: &[u8]) -> Result<bool> {
        for reply in wire::replies(datagram) {
            match reply? {
                Reply::Genl { seq, flags, attrs, .. } if seq == self.seq => {
                    self.interrupted |= flags & NLM_F_DUMP_INTR != 0;
                    self.nests.extend_from_slice(attrs);
                }
                Reply::Done { seq, flags, result } if seq == self.seq => {
                    result?;
                    self.interrupted |= flags & NLM_F_DUMP_INTR != 0;
                    return Ok(true);
                }
                Reply::Ack { seq, result: Err(e) } if seq == self.seq => return Err(e.into()),
                _ => {}
            }
        }
        Ok(false)
    }
}

/// A snapshot of the table from one consistent dump.
#[derive(Clone, Debug, Default)]
pub struct Dump {
    /// The ENCLAVE nests of every dump part, concatenated (each is a valid attribute run).
    nests: Vec<u8>,
    /// Dumps thrown away because a concurrent change interrupted them.
    restarts: usize,
}

impl Dump {
    /// How often the dump was restarted because the table changed while it ran.
    pub fn restarts(&self) -> usize {
        self.restarts
    }

    /// The enclaves, in the module's order. Items are errors only if the module sent a nest this
    /// library cannot decode.
    pub fn iter(&self) -> impl Iterator<Item = Result<Registration>> + '_ {
        wire::decode_enclaves(&self.nests)
    }
}

/// A stream of requests sent many per `sendmsg` and acknowledged together: runs of ENCLAVE nests
/// for one command and origin are packed into messages, other requests are framed as they come. Each item
/// pushed has a position (0, 1, ...), and every refusal names the positions of its message.
struct Batch {
    packer: NestPacker,
    /// Command of the nests in the packer.
    packing: u8,
    /// Position of the first nest in the packer.
    packed_from: usize,
    /// Position of the next item.
    pushed: usize,
    outbox: Outbox,
    /// Refused messages, in order.
    failures: Vec<BatchFailure>,
}

/// Framed messages waiting to be sent in one `sendmsg`.
struct Outbox {
    out: Vec<u8>,
    /// Sequence number of the first message.
    first_seq: u32,
    /// For each message: the positions it carries and where it starts in `out`.
    framed: Vec<(Range<usize>, usize)>,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            packer: NestPacker::new(),
            packing: 0,
            packed_from: 0,
            pushed: 0,
            outbox: Outbox { out: Vec::with_capacity(SEND_LIMIT + MAX_PAYLOAD + HEADERS_LEN), first_seq: 0, framed: Vec::new() },
            failures: Vec::new(),
        }
    }
}

impl Outbox {
    /// Appends request `seq` carrying the items at `positions`.
    fn frame(&mut self, family: u16, seq: u32, cmd: u8, positions: Range<usize>, attrs: &[u8]) {
        if self.framed.is_empty() {
            self.first_seq = seq;
        }
        self.framed.push((positions, self.out.len()));
        wire::frame(&mut self.out, family, NLM_F_REQUEST | NLM_F_ACK, seq, cmd, attrs);
    }
}

impl Client {
    /// Opens a socket and resolves the `seng_family` generic netlink family.
    ///
    /// Fails with [`Error::ModuleNotLoaded`] when seng.ko is not loaded (the kernel tries to load
    /// it on the lookup, so this means it is not installed either, or module loading failed).
    pub fn connect() -> Result<Client> {
        let socket = open_socket()?;
        // Both are best effort: without them errors lose their message, nothing else.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        let mut recv = Vec::with_capacity(RECV_BUF);
        let (family, group) = resolve(&socket, &mut recv)?;
        Ok(Client { socket, family, group, seq: 1, recv })
    }

    /// The family id the kernel assigned to `seng_family`.
    pub fn family_id(&self) -> u16 {
        self.family
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends one request and waits for its ack; `on_reply` sees the attributes of its replies.
    fn request(&mut self, cmd: u8, attrs: &[u8], on_reply: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.request_flags(cmd, NLM_F_REQUEST | NLM_F_ACK, attrs, on_reply)
    }

    fn request_flags(&mut self, cmd: u8, flags: u16, attrs: &[u8], mut on_reply: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let seq = self.next_seq();
        let mut out = Vec::with_capacity(HEADERS_LEN + attrs.len());
        wire::frame(&mut out, self.family, flags, seq, cmd, attrs);
        let acks = exchange(&self.socket, &mut self.recv, &out, seq, 1, |_, a| on_reply(a))?;
        match acks.into_iter().next() {
            Some(Err(e)) => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Performs `op` on the live table, for the origin it names (its registrations'). An
    /// operation that fits one message (32 KiB of attributes: hundreds of enclaves) is one
    /// request, applied whole or refused whole with [`Error::Kernel`]. A larger registration or
    /// unregistration goes as a batch of messages, each applied whole or refused, as
    /// [`Client::register_batch`] sends them; a refusal is then [`Error::Batch`], naming the
    /// positions of the refused enclaves.
    pub fn apply(&mut self, op: &Operation) -> Result<()> {
        op.origin().map_err(emit_error)?;
        match op.to_request(Dialect::Live) {
            Ok((command, attrs)) if attrs.len() <= MAX_PAYLOAD => self.request(command, &attrs, |_| Ok(())),
            Ok(_) => {
                let mut batch = Batch::new();
                self.batch_operation(&mut batch, op, Dialect::Live)?;
                self.batch_finish(&mut batch)?;
                batch_result(batch.pushed, batch.failures).map(drop)
            }
            Err(e) => Err(emit_error(e)),
        }
    }

    /// Registers one enclave for its origin (or changes its metadata), attaching its categories
    /// to its application. Changing an enclave's application, host or origin ends its
    /// connections: the module deletes their conntrack entries.
    pub fn register(&mut self, registration: &Registration) -> Result<()> {
        self.apply(&Operation::from(registration.clone()))
    }

    /// Registers many enclaves, each for its origin: hundreds per message, several messages per
    /// `sendmsg`, every message acknowledged. Returns how many enclaves were sent. If the kernel
    /// refuses some messages the others still apply, and the error is [`Error::Batch`] naming
    /// the input positions of the refused ones.
    pub fn register_batch<I>(&mut self, registrations: I) -> Result<usize>
    where
        I: IntoIterator,
        I::Item: Borrow<Registration>,
    {
        let mut batch = Batch::new();
        for r in registrations {
            let r = r.borrow();
            self.batch_nest(&mut batch, cmd::ENCLAVE_SET, &r.origin, &r.addr, |w| r.emit(w))?;
        }
        self.batch_finish(&mut batch)?;
        batch_result(batch.pushed, batch.failures)
    }

    /// Adds `op` to the batch in `dialect`: a registration or unregistration as one nest per
    /// enclave, packed with its neighbours; anything else as a request of its own.
    fn batch_operation(&mut self, b: &mut Batch, op: &Operation, dialect: Dialect) -> Result<()> {
        let command = op.command(dialect);
        match op {
            Operation::Register(list) => list.iter().try_for_each(|r| self.batch_nest(b, command, &r.origin, &r.addr, |w| r.emit(w))),
            Operation::Unregister { origin, addrs } => addrs.iter().try_for_each(|addr| self.batch_nest(b, command, origin, addr, |w| w.put_enclave(addr, None, None, &[]))),
            Operation::Attach { .. } | Operation::Detach { .. } | Operation::Flush { .. } => {
                let (command, attrs) = op.to_request(dialect).map_err(emit_error)?;
                self.batch_request(b, command, &attrs)
            }
        }
    }

    /// Adds a nest for `cmd` of `origin` (written by `put`) to the batch.
    fn batch_nest(&mut self, b: &mut Batch, cmd: u8, origin: &Origin, addr: &IpAddr, put: impl Fn(&mut AttrWriter<'_>) -> Result<(), NoRoom>) -> Result<()> {
        if b.packing != cmd || b.packer.origin() != origin {
            self.batch_seal(b)?;
            b.packing = cmd;
            b.packer.set_origin(*origin);
        }
        if !b.packer.push(addr, &put)? {
            self.batch_seal(b)?;
            // An empty packer takes any nest that fits a message at all, or errs.
            b.packer.push(addr, &put)?;
        }
        b.pushed += 1;
        Ok(())
    }

    /// Adds a request of its own (not packed with others) to the batch.
    fn batch_request(&mut self, b: &mut Batch, cmd: u8, attrs: &[u8]) -> Result<()> {
        self.batch_seal(b)?;
        let seq = self.next_seq();
        b.outbox.frame(self.family, seq, cmd, b.pushed..b.pushed + 1, attrs);
        b.pushed += 1;
        b.packed_from = b.pushed;
        self.batch_send_if_full(b)
    }

    /// Frames the packed nests as one message.
    fn batch_seal(&mut self, b: &mut Batch) -> Result<()> {
        if b.packer.count() == 0 {
            return Ok(());
        }
        let seq = self.next_seq();
        let (payload, count) = b.packer.take();
        b.outbox.frame(self.family, seq, b.packing, b.packed_from..b.packed_from + count, payload);
        b.packed_from = b.pushed;
        self.batch_send_if_full(b)
    }

    /// Sends when another full message might not fit in one `sendmsg`.
    fn batch_send_if_full(&mut self, b: &mut Batch) -> Result<()> {
        if b.outbox.out.len() + MAX_PAYLOAD + HEADERS_LEN > SEND_LIMIT {
            self.batch_send(b)?;
        }
        Ok(())
    }

    fn batch_send(&mut self, b: &mut Batch) -> Result<()> {
        let Outbox { out, first_seq, framed } = &mut b.outbox;
        if framed.is_empty() {
            return Ok(());
        }
        let acks = exchange(&self.socket, &mut self.recv, out, *first_seq, framed.len(), |_, _| Ok(()))?;
        for ((positions, at), ack) in framed.drain(..).zip(acks) {
            if let Err(error) = ack {
                let message = out.get(at..).unwrap_or_default();
                let refused = error.offset.and_then(|o| wire::blamed_nest(message, o)).map(|i| positions.start + i).filter(|p| positions.contains(p));
                b.failures.push(BatchFailure { enclaves: positions, refused, error });
            }
        }
        out.clear();
        Ok(())
    }

    fn batch_finish(&mut self, b: &mut Batch) -> Result<()> {
        self.batch_seal(b)?;
        self.batch_send(b)
    }

    /// Unregisters a local enclave; the module deletes its conntrack entries. Fails with a
    /// "not found" [`Error::Kernel`] if it is not registered. ([`Client::apply`] unregisters
    /// any origin's.)
    pub fn unregister(&mut self, addr: IpAddr) -> Result<()> {
        self.apply(&Operation::Unregister { origin: Origin::Local, addrs: vec![addr] })
    }

    /// Attaches categories (at least one) to a local application that has a registered enclave.
    pub fn attach_categories(&mut self, app: &Measurement, categories: &[Category]) -> Result<()> {
        self.apply(&Operation::Attach { origin: Origin::Local, app: *app, categories: categories.to_vec() })
    }

    /// Detaches categories (at least one) from a local application; all must be attached.
    pub fn detach_categories(&mut self, app: &Measurement, categories: &[Category]) -> Result<()> {
        self.apply(&Operation::Detach { origin: Origin::Local, app: *app, categories: categories.to_vec() })
    }

    /// Unregisters every local enclave of the namespace (their connections end); the entries of
    /// other origins stay, as with the original's `flush_module`.
    pub fn flush(&mut self) -> Result<()> {
        self.apply(&Operation::FLUSH)
    }

    /// Performs an operation of the original protocol (command 1), as the original C library
    /// sent it. Unregistering an unknown address and detaching an absent category succeed, as
    /// they did in the original module.
    pub fn legacy(&mut self, op: &LegacyOp) -> Result<()> {
        let attrs = wire::attrs(|w| op.emit(w))?;
        self.request(cmd::LEGACY, &attrs, |_| Ok(()))
    }

    /// The enclave registered at `addr`, whatever its origin, if any.
    pub fn get(&mut self, addr: IpAddr) -> Result<Option<Registration>> {
        let attrs = wire::attrs(|w| {
            ReadScope::Every.emit(w)?;
            w.put_addr(attr::ADDR, &addr)
        })?;
        let mut found = None;
        let result = self.request(cmd::GET, &attrs, |reply| {
            found = wire::decode_enclaves(reply).next().transpose()?;
            Ok(())
        });
        match result {
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
            Ok(()) => found.map(Some).ok_or_else(|| Error::Protocol(format!("GET {addr} acknowledged without a reply"))),
        }
    }

    /// Every registered enclave of every origin, from one consistent dump.
    pub fn list(&mut self) -> Result<Vec<Registration>> {
        self.dump()?.iter().collect()
    }

    /// Dumps the table, every origin's entries. A dump the kernel flags as interrupted by a
    /// concurrent change (NLM_F_DUMP_INTR) is restarted, so the snapshot is consistent.
    pub fn dump(&mut self) -> Result<Dump> {
        self.dump_scope(&ReadScope::Every)
    }

    /// Dumps the entries `scope` reads (one origin's, or every origin's), as [`Client::dump`].
    pub fn dump_scope(&mut self, scope: &ReadScope) -> Result<Dump> {
        let request = wire::attrs(|w| scope.emit(w))?;
        for restarts in 0..DUMP_ATTEMPTS {
            let seq = self.next_seq();
            let mut out = Vec::new();
            wire::frame(&mut out, self.family, NLM_F_REQUEST | NLM_F_DUMP, seq, cmd::GET, &request);
            send(&self.socket, &out)?;
            let mut parts = DumpParts { seq, nests: Vec::new(), interrupted: false };
            loop {
                recv_datagram(&self.socket, &mut self.recv).map_err(Error::io("cannot receive the dump"))?;
                if parts.feed(&self.recv)? {
                    break;
                }
            }
            if !parts.interrupted {
                return Ok(Dump { nests: parts.nests, restarts });
            }
        }
        Err(Error::DumpInterrupted { attempts: DUMP_ATTEMPTS })
    }

    /// The table's counters.
    pub fn stats(&mut self) -> Result<Stats> {
        let mut stats = None;
        self.request(cmd::STATS, &[], |reply| {
            stats = Some(wire::decode_stats(reply)?);
            Ok(())
        })?;
        stats.ok_or_else(|| Error::Protocol("STATS acknowledged without a reply".into()))
    }

    /// Replaces the local part of the table, and the part of every other origin of
    /// `registrations`, with `registrations`: see [`Client::begin_replace`]. Returns how many
    /// enclaves were sent.
    pub fn replace<I>(&mut self, registrations: I) -> Result<usize>
    where
        I: IntoIterator,
        I::Item: Borrow<Registration>,
    {
        let mut replace = self.begin_replace()?;
        for r in registrations {
            replace.register(r.borrow())?;
        }
        let sent = replace.ops();
        replace.commit()?;
        Ok(sent)
    }

    /// Opens a replace transaction of the local part of the table: see
    /// [`Client::begin_replace_of`].
    pub fn begin_replace(&mut self) -> Result<Replace<'_>> {
        self.begin_replace_of(&Origin::Local)
    }

    /// Opens a replace transaction: the module starts an empty staging table that only this
    /// socket can fill, and packets keep seeing the live table until [`Replace::commit`] puts
    /// the staging table in the place of the parts of `origin` and of every origin the
    /// transaction's operations name; the other origins' entries stay. Connections of enclaves
    /// that the replacement drops or moves to another application, host or origin end at the
    /// commit.
    ///
    /// Fails with "busy" if another socket has a transaction open.
    pub fn begin_replace_of(&mut self, origin: &Origin) -> Result<Replace<'_>> {
        let attrs = wire::attrs(|w| w.put_scope(origin))?;
        self.request(cmd::REPLACE_BEGIN, &attrs, |_| Ok(()))?;
        Ok(Replace { client: self, batch: Batch::new(), open: true })
    }

    /// Sends `cmd` with attribute bytes made by the caller and waits for the ack. For checking
    /// the module's validation with messages the typed calls never produce.
    pub fn request_raw(&mut self, cmd: u8, attrs: &[u8]) -> Result<()> {
        self.request(cmd, attrs, |_| Ok(()))
    }

    /// Subscribes to the module's events on a socket of its own (CAP_NET_ADMIN on kernels whose
    /// generic netlink can require it for a group, 6.1 and later here).
    pub fn subscribe(&self) -> Result<Subscription> {
        let group = self.group.ok_or_else(no_event_group)?;
        Subscription::with_group(group)
    }
}

/// `Ok(total)` when nothing was refused; EPERM anywhere means the caller lacks the capability.
fn batch_result(total: usize, failures: Vec<BatchFailure>) -> Result<usize> {
    if failures.is_empty() {
        return Ok(total);
    }
    if failures.iter().any(|f| f.error.errno == libc::EPERM) {
        return Err(Error::PermissionDenied);
    }
    Err(Error::Batch(BatchError { total, failures }))
}

/// A whole-table replacement being built (from [`Client::begin_replace`]).
///
/// Operations apply in order to the staging table, with the meaning they have on the live table
/// ([`Client::apply`]). They are numbered from 0 in the order given (an operation on several
/// enclaves takes a number for each) and sent in batches, so a refusal may surface a few
/// operations later; it is reported as an [`Error::Replace`] naming the refused operation, after
/// the transaction has been aborted.
/// Dropping a `Replace` without committing aborts it, leaving the live table untouched.
pub struct Replace<'c> {
    client: &'c mut Client,
    batch: Batch,
    /// False once committed, aborted or refused.
    open: bool,
}

impl Replace<'_> {
    /// Operations given so far.
    pub fn ops(&self) -> usize {
        self.batch.pushed
    }

    /// Performs `op` on the staging table, with the meaning it has on the live table; the
    /// commit replaces the part of its origin too. Each enclave it registers or unregisters
    /// takes a number of its own in the numbering of [`Error::Replace`]; an operation on
    /// categories, or a flush, takes one.
    pub fn apply(&mut self, op: &Operation) -> Result<()> {
        self.step(|c, b| c.batch_operation(b, op, Dialect::Staged))
    }

    /// Registers an enclave of its origin in the staging table (attaching its categories to its
    /// application).
    pub fn register(&mut self, r: &Registration) -> Result<()> {
        self.step(|c, b| c.batch_nest(b, cmd::REPLACE_ADD, &r.origin, &r.addr, |w| r.emit(w)))
    }

    /// Unregisters a local enclave the staging table holds.
    pub fn unregister(&mut self, addr: IpAddr) -> Result<()> {
        self.apply(&Operation::Unregister { origin: Origin::Local, addrs: vec![addr] })
    }

    /// Attaches categories (at least one) to a local application of the staging table.
    pub fn attach_categories(&mut self, app: &Measurement, categories: &[Category]) -> Result<()> {
        self.apply(&Operation::Attach { origin: Origin::Local, app: *app, categories: categories.to_vec() })
    }

    /// Detaches categories (at least one, all attached) from a local application of the
    /// staging table.
    pub fn detach_categories(&mut self, app: &Measurement, categories: &[Category]) -> Result<()> {
        self.apply(&Operation::Detach { origin: Origin::Local, app: *app, categories: categories.to_vec() })
    }

    /// Empties the staging table's local part.
    pub fn flush(&mut self) -> Result<()> {
        self.apply(&Operation::FLUSH)
    }

    /// Sends what is pending and swaps the staging table in.
    pub fn commit(mut self) -> Result<()> {
        self.step(|c, b| c.batch_finish(b))?;
        let committed = self.client.request(cmd::REPLACE_COMMIT, &[], |_| Ok(()));
        // A refused commit leaves the transaction open: Drop aborts it.
        self.open = committed.is_err();
        committed
    }

    /// Drops the staging table; the live table stays as it was.
    pub fn abort(mut self) -> Result<()> {
        self.close()
    }

    /// Aborts the transaction in the module and marks it closed.
    fn close(&mut self) -> Result<()> {
        self.open = false;
        self.client.request(cmd::REPLACE_ABORT, &[], |_| Ok(()))
    }

    /// Runs one step of the transaction; on a refusal (or any failure) aborts it and reports.
    fn step(&mut self, f: impl FnOnce(&mut Client, &mut Batch) -> Result<()>) -> Result<()> {
        if !self.open {
            return Err(Error::Request("the replace transaction is already closed".into()));
        }
        let result = f(self.client, &mut self.batch);
        let refused = self.batch.failures.drain(..).next();
        if result.is_ok() && refused.is_none() {
            return Ok(());
        }
        // The first error is the one to report; closing the socket would abort too.
        let _ = self.close();
        result?;
        let Some(BatchFailure { enclaves, refused, error }) = refused else { return Ok(()) };
        if error.errno == libc::EPERM {
            return Err(Error::PermissionDenied);
        }
        let ops = refused.map_or(enclaves, |at| at..at + 1);
        Err(Error::Replace(ReplaceError { ops, error }))
    }
}

impl Drop for Replace<'_> {
    fn drop(&mut self) {
        if self.open {
            // Best effort: closing the socket aborts the transaction too.
            let _ = self.close();
        }
    }
}

/// An operation the library cannot put into a request: the caller's mistake.
fn emit_error(e: EmitError) -> Error {
    Error::Request(e.to_string())
}

#[cfg(test)]
mod test {
    use super::*;

    /// A datagram of netlink messages (type, flags, seq, payload) as the kernel sends them.
    fn datagram(messages: &[(u16, u16, u32, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (kind, flags, seq, payload) in messages {
            let len = 16 + payload.len() as u32;
            out.extend_from_slice(&len.to_ne_bytes());
            out.extend_from_slice(&kind.to_ne_bytes());
            out.extend_from_slice(&flags.to_ne_bytes());
            out.extend_from_slice(&seq.to_ne_bytes());
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(payload);
            out.resize((out.len() + 3) & !3, 0);
        }
        out
    }

    fn ack(code: i32) -> Vec<u8> {
        [&code.to_ne_bytes()[..], &[16, 0, 0, 0, 0x20, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0]].concat()
    }

    fn genl(cmd: u8, attrs: &[u8]) -> Vec<u8> {
        [&[cmd, 1, 0, 0][..], attrs].concat()
    }

    fn nest(ip: &str) -> Vec<u8> {
        let r = Registration { addr: ip.parse().unwrap(), app: Measurement([1; 32]), host: "10.0.0.5".parse().unwrap(), categories: vec![], origin: Origin::Local };
        wire::attrs(|w| r.emit(w)).unwrap()
    }

    #[test]
    fn acks_are_matched_to_requests_by_sequence_number() {
        let mut replies = Vec::new();
        let mut on_reply = |i: usize, attrs: &[u8]| {
            replies.push((i, attrs.to_vec()));
            Ok(())
        };
        let mut acks = Acks::new(u32::MAX, 3);
        // Out of order, with a stale ack of an earlier exchange, a stale reply, and a second ack
        // for a request that already has one.
        let first = datagram(&[(2, 0x100, 1, ack(0)), (0x20, 0, 7, genl(cmd::STATS, &[4, 0, 11, 0])), (2, 0x100, 1, ack(-28)), (2, 0x100, 77, ack(0))]);
        acks.feed(&first, &mut on_reply).unwrap();
        assert!(!acks.complete());
        acks.feed(&datagram(&[(2, 0x100, u32::MAX, ack(-22)), (2, 0x100, 0, ack(0))]), &mut on_reply).unwrap();
        assert!(acks.complete());
        let results = acks.into_results();
        assert_eq!(results[0], Err(KernelError { errno: 22, message: None, offset: None }));
        assert_eq!(results[1], Ok(()));
        assert_eq!(results[2], Ok(()), "the first ack of a request counts");

        let mut acks = Acks::new(7, 1);
        acks.feed(&datagram(&[(0x20, 0, 7, genl(cmd::STATS, &[4, 0, 11, 0])), (2, 0x100, 7, ack(0))]), &mut on_reply).unwrap();
        assert!(acks.complete());
        assert_eq!(replies, [(0, vec![4, 0, 11, 0])], "only the reply to this exchange's request is seen");
    }

    #[test]
    fn dumps_collect_parts_and_notice_interruptions() {
        let done = 0i32.to_ne_bytes().to_vec();
        let mut parts = DumpParts { seq: 9, nests: Vec::new(), interrupted: false };
        assert!(!parts.feed(&datagram(&[(0x20, 2, 9, genl(cmd::GET, &nest("10.0.0.1"))), (0x20, 2, 8, genl(cmd::GET, &nest("10.9.9.9")))])).unwrap());
        assert!(parts.feed(&datagram(&[(0x20, 2, 9, genl(cmd::GET, &nest("fd00::2"))), (3, 2, 9, done.clone())])).unwrap());
        assert!(!parts.interrupted);
        let got: Vec<String> = Dump { nests: parts.nests, restarts: 0 }.iter().map(|e| e.unwrap().addr.to_string()).collect();
        assert_eq!(got, ["10.0.0.1", "fd00::2"]);

        let mut parts = DumpParts { seq: 9, nests: Vec::new(), interrupted: false };
        assert!(parts.feed(&datagram(&[(0x20, 2 | NLM_F_DUMP_INTR, 9, genl(cmd::GET, &nest("10.0.0.1"))), (3, 2, 9, done)])).unwrap());
        assert!(parts.interrupted, "a part flagged NLM_F_DUMP_INTR makes the dump restart");

        let mut parts = DumpParts { seq: 9, nests: Vec::new(), interrupted: false };
        assert!(matches!(parts.feed(&datagram(&[(2, 0x100, 9, ack(-1))])), Err(Error::PermissionDenied)));
        let mut parts = DumpParts { seq: 9, nests: Vec::new(), interrupted: false };
        assert!(matches!(parts.feed(&datagram(&[(3, 2, 9, (-12i32).to_ne_bytes().to_vec())])), Err(Error::Kernel(KernelError { errno: 12, .. }))));
    }
}
