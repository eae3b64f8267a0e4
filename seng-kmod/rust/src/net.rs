// SPDX-License-Identifier: GPL-2.0-only
//! Per-network-namespace state and everything the module does with it: the packet-path match,
//! `checkentry`, every generic netlink request, dumps. Shared verbatim by both flavours of the
//! module: the distro one reaches it through the C ABI of `ffi.rs`, the Rust-for-Linux one
//! calls it directly.
//!
//! Readers (the match, dumps) load the live table with acquire ordering inside an RCU read-side
//! section. Writers run with the namespace's mutex held by the glue. A replaced table or node is
//! freed only after a grace period. After a change that moves an address to another application
//! or host, or removes it, the writer waits for a grace period (so no packet still being
//! classified under the old metadata can create a connection afterwards) and then deletes every
//! conntrack entry involving the address, before acknowledging the request.

use core::cell::UnsafeCell;
use core::ffi::{c_void, CStr};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use seng_core::genl::{attr, errno, AttrWriter, CategoryList, EnclaveList, EnclaveSpec, LegacyOp, ProtoError};
use seng_core::matchinfo::MatchInfoError;
use seng_core::table::{AddrSet, EnclaveTable, Registered, TableError};
use seng_core::{match_packet, Family, Measurement, SengMtInfo};

use crate::platform::{boxed, unbox, KernelPlatform};

type Table = EnclaveTable<KernelPlatform>;
type CutSet = AddrSet<KernelPlatform>;

extern "C" {
    /// `get_random_u64()`.
    fn seng_glue_random_u64() -> u64;
    /// `synchronize_rcu()`.
    fn seng_glue_synchronize_rcu();
    /// Deletes the conntrack entries of namespace `net` whose original or reply tuple has an
    /// address in `set` (tested with [`cut_contains`]).
    fn seng_glue_ct_cut(net: *mut c_void, set: *const c_void);
}

/// What a writer owns besides the live table.
struct Writer {
    /// A whole-table replacement being built, with the netlink port that owns it.
    staging: Option<(u32, NonNull<Table>)>,
}

/// One network namespace's seng state.
pub struct NetState {
    live: AtomicPtr<Table>,
    writer: UnsafeCell<Writer>,
    generation: AtomicU64,
    capacity: usize,
}

/// A generic netlink request, as the kernel glue hands it over.
pub struct Request<'a> {
    /// `struct net *` of the request, handed back to the conntrack glue.
    pub net: *mut c_void,
    /// genl command.
    pub cmd: u8,
    /// Attributes after the genl header.
    pub payload: &'a [u8],
    /// Sender's netlink port (owner of a replace transaction).
    pub portid: u32,
    /// Room for reply attributes (GET and STATS answer with some).
    pub reply: Option<&'a mut [u8]>,
}

/// A refused request: why, and where in the payload the attribute to blame starts (the glue
/// points the extended ack at it, so a client learns which enclave of a batch was refused).
pub struct Refusal {
    /// Why.
    pub error: ProtoError,
    /// Byte offset in the payload of the attribute to blame, if one is.
    pub at: Option<usize>,
}

impl From<ProtoError> for Refusal {
    fn from(error: ProtoError) -> Refusal {
        Refusal { error, at: None }
    }
}

impl From<TableError> for Refusal {
    fn from(e: TableError) -> Refusal {
        ProtoError::from(e).into()
    }
}

/// What a request that succeeded produced.
#[derive(Default)]
pub struct Handled {
    /// The change is to be echoed to the multicast group.
    pub notify: bool,
    /// Reply bytes written.
    pub reply_len: usize,
}

impl NetState {
    fn live(&self) -> &Table {
        // SAFETY: never null after creation; a replaced table is freed only after a grace
        // period, and callers are readers inside one or the writer.
        unsafe { &*self.live.load(Ordering::Acquire) }
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }
}

fn new_table(capacity: usize) -> Result<NonNull<Table>, ProtoError> {
    // SAFETY: plain call.
    let seed = unsafe { seng_glue_random_u64() };
    let table = Table::new(KernelPlatform, capacity, seed).map_err(ProtoError::from)?;
    boxed(table).ok_or(ProtoError::from(TableError::OutOfMemory))
}

fn new_cut_set(capacity: usize) -> Result<CutSet, ProtoError> {
    // SAFETY: plain call.
    let seed = unsafe { seng_glue_random_u64() };
    CutSet::with_capacity(KernelPlatform, capacity, seed).map_err(ProtoError::from)
}

/// Reads an address of `family` from a 16-byte `union nf_inet_addr`.
fn inet_addr(family: Family, bytes: &[u8; 16]) -> IpAddr {
    match family {
        Family::Ipv4 => {
            let [a, b, c, d, ..] = *bytes;
            IpAddr::V4(Ipv4Addr::new(a, b, c, d))
        }
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(*bytes)),
    }
}

impl NetState {
    /// A namespace's state with an empty table; `None` when memory is short.
    pub fn new(capacity: u32) -> Option<NonNull<NetState>> {
        let table = new_table(capacity as usize).ok()?;
        let state = NetState {
            live: AtomicPtr::new(table.as_ptr()),
            writer: UnsafeCell::new(Writer { staging: None }),
            generation: AtomicU64::new(0),
            capacity: capacity as usize,
        };
        let state = boxed(state);
        if state.is_none() {
            // SAFETY: never published.
            unsafe { unbox(table) };
        }
        state
    }

    /// Frees a namespace's state and tables.
    ///
    /// # Safety
    /// `state` came from [`NetState::new`]; no reader or writer can reach it any more (the glue
    /// has unregistered everything and waited for a grace period).
    pub unsafe fn free(state: NonNull<NetState>) {
        // SAFETY: by the caller.
        unsafe {
            let s = state.as_ref();
            if let Some((_, staging)) = (*s.writer.get()).staging.take() {
                unbox(staging);
            }
            if let Some(live) = NonNull::new(s.live.load(Ordering::Relaxed)) {
                unbox(live);
            }
            unbox(state);
        }
    }

    /// The packet-path decision of one rule of protocol family `nfproto` for the packet whose
    /// IPv4 or IPv6 header is at `header`. Call inside an RCU read-side section.
    ///
    /// # Safety
    /// `header` points to the packet's network header of that family, readable for its fixed
    /// part (ip_tables and ip6_tables keep it in the linear area).
    #[inline]
    pub unsafe fn matches(&self, info: &SengMtInfo, nfproto: u8, header: *const u8) -> bool {
        // SAFETY (both arms): the addresses lie within the fixed header, by the caller.
        let (family, src, dst) = match Family::from_nfproto(nfproto) {
            Some(Family::Ipv4) => unsafe {
                let read = |at: usize| IpAddr::V4(Ipv4Addr::from(header.add(at).cast::<[u8; 4]>().read_unaligned()));
                (Family::Ipv4, read(12), read(16))
            },
            Some(Family::Ipv6) => unsafe {
                let read = |at: usize| IpAddr::V6(Ipv6Addr::from(header.add(at).cast::<[u8; 16]>().read_unaligned()));
                (Family::Ipv6, read(8), read(24))
            },
            None => return false,
        };
        match_packet(info, family, self.live(), &src, &dst)
    }

    /// `checkentry`: whether a rule's match data is valid for `nfproto`, else why not.
    pub fn check(info: &SengMtInfo, nfproto: u8) -> Result<(), &'static CStr> {
        if Family::from_nfproto(nfproto).is_none() {
            return Err(c"only IPv4 and IPv6 rules are supported");
        }
        info.validate().map_err(|e| match e {
            MatchInfoError::UnknownFlags(_) => c"unknown flag bits set (userspace newer than the module?)",
            MatchInfoError::NegationWithoutOption(_) => c"a negation flag is set without its option",
            MatchInfoError::NoOption => c"no option set: give at least one of --src-app, --src-cat, --src-host, --dst-app, --dst-cat, --dst-host",
            MatchInfoError::Category { dst: false, .. } => c"--src-cat is not a NUL-terminated name of 1-20 bytes",
            MatchInfoError::Category { dst: true, .. } => c"--dst-cat is not a NUL-terminated name of 1-20 bytes",
            MatchInfoError::Size(_) => c"match data has the wrong size",
        })
    }

    /// The change counter, for dump consistency checks.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Fills `buf` with ENCLAVE nests from `*cursor` on and advances the cursor. Returns the
    /// bytes written (0: the dump is complete) or a positive errno. Call inside an RCU read-side
    /// section.
    pub fn dump(&self, cursor: &mut u64, buf: &mut [u8]) -> Result<usize, i32> {
        let mut out = AttrWriter::new(buf);
        let mut enclaves = self.live().enclaves_from(*cursor as usize);
        loop {
            let before = enclaves.cursor();
            let Some(e) = enclaves.next() else { break };
            if out.put_enclave(&e.ip(), Some(e.app()), Some(&e.host()), e.categories()).is_err() {
                if out.is_empty() {
                    return Err(errno::EMSGSIZE);
                }
                *cursor = before as u64;
                return Ok(out.len());
            }
            // Safe as a resume point: the nest just written is complete.
            *cursor = enclaves.cursor() as u64;
        }
        Ok(out.len())
    }

    /// Drops the replace transaction owned by a closing netlink socket.
    ///
    /// # Safety
    /// The namespace's writer lock is held.
    pub unsafe fn release(&self, portid: u32) {
        // SAFETY: by the caller (writer lock held).
        let writer = unsafe { &mut *self.writer.get() };
        if let Some((owner, staging)) = writer.staging {
            if owner == portid {
                writer.staging = None;
                // SAFETY: a staging table is never published.
                unsafe { unbox(staging) };
            }
        }
    }

    /// Handles one generic netlink request.
    ///
    /// # Safety
    /// The namespace's writer lock is held.
    pub unsafe fn handle(&self, mut req: Request<'_>) -> Result<Handled, Refusal> {
        // SAFETY: writer lock held by the caller.
        let writer = unsafe { &mut *self.writer.get() };
        let request = seng_core::genl::Request::parse(req.cmd, req.payload)?;
        execute(self, writer, &mut req, request)
    }
}

/// Whether a conntrack address of protocol family `nfproto` is in a cut set.
///
/// # Safety
/// `set` is the pointer handed to `seng_glue_ct_cut`.
pub unsafe fn cut_contains(set: *const c_void, nfproto: u8, addr: &[u8; 16]) -> bool {
    let Some(family) = Family::from_nfproto(nfproto) else { return false };
    // SAFETY: by the caller.
    unsafe { &*(set as *const CutSet) }.contains(&inet_addr(family, addr))
}

/// Waits out readers of the old metadata, then deletes the flows of every address in `cut`.
fn cut_flows(req: &Request<'_>, cut: &CutSet) {
    if !cut.is_empty() {
        // SAFETY: process context; the set outlives the call.
        unsafe {
            seng_glue_synchronize_rcu();
            seng_glue_ct_cut(req.net, cut as *const CutSet as *const c_void);
        }
    }
}

/// Registers one enclave of a request; when it takes an address from other metadata, the address
/// goes into `cut` (none for a staging table, which no packet sees).
fn register_spec(table: &Table, spec: &EnclaveSpec<'_>, cut: Option<&mut CutSet>) -> Result<(), ProtoError> {
    let (Some(app), Some(host)) = (spec.app, spec.host) else {
        return Err(ProtoError { errno: errno::EINVAL, attr: Some(attr::ENCLAVE), msg: c"enclave nest needs APP and HOST_ADDR" });
    };
    // SAFETY: writer mutex held; KernelPlatform retires after a grace period.
    let outcome = spec.with_categories(|categories| unsafe { table.register(spec.addr, &app, host, categories) })?;
    if let (Registered::Replaced { .. }, Some(cut)) = (outcome, cut) {
        // Sized for every enclave of the request, so this cannot fail.
        let _ = cut.insert(spec.addr);
    }
    Ok(())
}

/// Registers `enclaves` (each with the offset of its nest) in order, up to the first that is
/// malformed or cannot be registered, which is blamed by its nest.
fn register_list<'a>(
    table: &Table,
    enclaves: impl Iterator<Item = Result<(usize, EnclaveSpec<'a>), (usize, ProtoError)>>,
    mut cut: Option<&mut CutSet>,
) -> Result<(), Refusal> {
    for item in enclaves {
        let (at, spec) = item.map_err(|(at, error)| Refusal { error, at: Some(at) })?;
        register_spec(table, &spec, cut.as_deref_mut()).map_err(|error| Refusal { error, at: Some(at) })?;
    }
    Ok(())
}

/// Unregisters the enclaves of `list`, all or none: an address that is not registered is blamed
/// by its nest and nothing changes. Removed addresses go into `cut`, if given.
fn unregister_list(table: &Table, list: &EnclaveList<'_>, mut cut: Option<&mut CutSet>) -> Result<(), Refusal> {
    if let Some((at, _)) = list.iter_at().find(|(_, s)| table.lookup(&s.addr).is_none()) {
        return Err(Refusal { error: TableError::NotRegistered.into(), at: Some(at) });
    }
    for spec in list.iter() {
        // SAFETY: writer mutex held. A repeated address is already gone: skip it.
        if unsafe { table.unregister(&spec.addr) }.is_ok() {
            if let Some(cut) = cut.as_deref_mut() {
                // Sized for every enclave of the request, so this cannot fail.
                let _ = cut.insert(spec.addr);
            }
        }
    }
    Ok(())
}

fn attach(table: &Table, app: &Measurement, categories: &CategoryList<'_>) -> Result<(), Refusal> {
    for c in categories.iter() {
        // SAFETY: writer mutex held.
        unsafe { table.attach_category(app, &c) }?;
    }
    Ok(())
}

/// Detaches all of `categories` or, if one is not attached, none.
fn detach(table: &Table, app: &Measurement, categories: &CategoryList<'_>) -> Result<(), Refusal> {
    let current = table.app(app).ok_or(TableError::UnknownApp)?.categories();
    if categories.iter().any(|c| !current.contains(&c)) {
        return Err(TableError::CategoryNotAttached.into());
    }
    for c in categories.iter() {
        // SAFETY: writer mutex held. A repeated category is already gone: skip it.
        let _ = unsafe { table.detach_category(app, &c) };
    }
    Ok(())
}

/// The staging table of the transaction `req`'s socket has open.
fn staging<'w>(writer: &'w Writer, req: &Request<'_>) -> Result<&'w Table, ProtoError> {
    match writer.staging {
        // SAFETY: the staging table is owned by this writer and unpublished; it lives until
        // the writer drops it, which needs `&mut Writer`.
        Some((owner, staging)) if owner == req.portid => Ok(unsafe { staging.as_ref() }),
        _ => Err(no_transaction()),
    }
}

/// Fails with ENOSPC, changing nothing, if adding `list` could overflow the table.
fn check_room(table: &Table, list: &EnclaveList<'_>) -> Result<(), ProtoError> {
    let new = list.iter().filter(|s| table.lookup(&s.addr).is_none()).count();
    if table.len() + new > table.stats().capacity {
        return Err(ProtoError { errno: errno::ENOSPC, attr: None, msg: c"the enclaves would exceed the table's capacity" });
    }
    Ok(())
}

fn no_transaction() -> ProtoError {
    ProtoError { errno: errno::ENOENT, attr: None, msg: c"no replace transaction is open on this socket" }
}

fn reply_writer<'r>(req: &'r mut Request<'_>) -> Result<AttrWriter<'r>, ProtoError> {
    match req.reply.as_deref_mut() {
        Some(buf) => Ok(AttrWriter::new(buf)),
        None => Err(ProtoError { errno: errno::EINVAL, attr: None, msg: c"no reply buffer" }),
    }
}

const NO_ROOM: ProtoError = ProtoError { errno: errno::EMSGSIZE, attr: None, msg: c"reply does not fit" };

fn execute(state: &NetState, writer: &mut Writer, req: &mut Request<'_>, request: seng_core::genl::Request<'_>) -> Result<Handled, Refusal> {
    use seng_core::genl::Request as R;
    let table = state.live();
    let mut notify = true;
    let mut reply_len = 0;
    match request {
        R::Legacy(op) => notify = legacy(table, req, op)?,
        R::EnclaveSet(list) => {
            check_room(table, &list)?;
            let mut cut = new_cut_set(list.len())?;
            let result = register_list(table, list.iter_at().map(Ok), Some(&mut cut));
            cut_flows(req, &cut);
            result?;
        }
        R::EnclaveDel(list) => {
            let mut cut = new_cut_set(list.len())?;
            unregister_list(table, &list, Some(&mut cut))?;
            cut_flows(req, &cut);
        }
        R::Flush => flush(table, req)?,
        R::CatAdd { app, categories } => attach(table, &app, &categories)?,
        R::CatDel { app, categories } => detach(table, &app, &categories)?,
        R::Get { addr } => {
            let e = table.lookup(&addr).ok_or(ProtoError::from(TableError::NotRegistered))?;
            let mut out = reply_writer(req)?;
            out.put_enclave(&e.ip(), Some(e.app()), Some(&e.host()), e.categories()).map_err(|_| NO_ROOM)?;
            reply_len = out.len();
            notify = false;
        }
        R::Stats => {
            let stats = table.stats();
            let mut out = reply_writer(req)?;
            for (kind, value) in [
                (attr::STAT_ENCLAVES, stats.enclaves as u64),
                (attr::STAT_APPS, stats.apps as u64),
                (attr::STAT_CAPACITY, stats.capacity as u64),
                (attr::STAT_SLOTS, stats.enclave_slots as u64),
                (attr::STAT_GENERATION, state.generation.load(Ordering::Relaxed)),
            ] {
                out.put_u64(kind, value).map_err(|_| NO_ROOM)?;
            }
            reply_len = out.len();
            notify = false;
        }
        R::ReplaceBegin => {
            if let Some((owner, staging)) = writer.staging {
                if owner != req.portid {
                    return Err(ProtoError { errno: errno::EBUSY, attr: None, msg: c"another socket has a replace transaction open" }.into());
                }
                writer.staging = None;
                // SAFETY: a staging table is never published.
                unsafe { unbox(staging) };
            }
            writer.staging = Some((req.portid, new_table(state.capacity)?));
            notify = false;
        }
        // A partly applied message only affects the unpublished staging table, which the client
        // aborts on any error: no room check up front.
        R::ReplaceAdd(additions) => {
            register_list(staging(writer, req)?, additions.iter_at(), None)?;
            notify = false;
        }
        R::ReplaceDel(list) => {
            unregister_list(staging(writer, req)?, &list, None)?;
            notify = false;
        }
        R::ReplaceCatAdd { app, categories } => {
            attach(staging(writer, req)?, &app, &categories)?;
            notify = false;
        }
        R::ReplaceCatDel { app, categories } => {
            detach(staging(writer, req)?, &app, &categories)?;
            notify = false;
        }
        R::ReplaceCommit => {
            let staging = match writer.staging {
                Some((owner, staging)) if owner == req.portid => staging,
                _ => return Err(no_transaction().into()),
            };
            let mut cut = new_cut_set(table.len())?;
            // SAFETY: the staging table is owned by this writer.
            let _ = table.changed_in(unsafe { staging.as_ref() }, &mut cut);
            writer.staging = None;
            let old = state.live.swap(staging.as_ptr(), Ordering::AcqRel);
            state.changed();
            cut_flows(req, &cut);
            if cut.is_empty() {
                // SAFETY: plain call; readers of the old table must finish before it is freed.
                unsafe { seng_glue_synchronize_rcu() };
            }
            if let Some(old) = NonNull::new(old) {
                // SAFETY: unpublished above and a grace period has passed.
                unsafe { unbox(old) };
            }
        }
        R::ReplaceAbort => {
            match writer.staging {
                Some((owner, staging)) if owner == req.portid => {
                    writer.staging = None;
                    // SAFETY: a staging table is never published.
                    unsafe { unbox(staging) };
                }
                _ => return Err(no_transaction().into()),
            }
            notify = false;
        }
    }
    if notify {
        state.changed();
    }
    Ok(Handled { notify, reply_len })
}

/// The original protocol. Unregistering an unknown address and detaching an absent category
/// succeed without effect, as the original did; returns whether anything changed.
fn legacy(table: &Table, req: &Request<'_>, op: LegacyOp) -> Result<bool, ProtoError> {
    let mut cut = new_cut_set(1)?;
    let changed = match op {
        LegacyOp::Register { enclave, app, host, category } => {
            let enclave = IpAddr::V4(enclave);
            // SAFETY: writer mutex held.
            if let Registered::Replaced { .. } = unsafe { table.register(enclave, &app, IpAddr::V4(host), category.as_slice()) }? {
                let _ = cut.insert(enclave);
            }
            true
        }
        LegacyOp::Unregister { enclave } => {
            let enclave = IpAddr::V4(enclave);
            // SAFETY: writer mutex held.
            let removed = unsafe { table.unregister(&enclave) }.is_ok();
            if removed {
                let _ = cut.insert(enclave);
            }
            removed
        }
        LegacyOp::Attach { app, category } => {
            // SAFETY: writer mutex held.
            unsafe { table.attach_category(&app, &category) }?
        }
        LegacyOp::Detach { app, category } => {
            // SAFETY: writer mutex held.
            unsafe { table.detach_category(&app, &category) }.is_ok()
        }
        LegacyOp::Flush => {
            flush(table, req)?;
            true
        }
    };
    cut_flows(req, &cut);
    Ok(changed)
}

fn flush(table: &Table, req: &Request<'_>) -> Result<(), ProtoError> {
    let mut cut = new_cut_set(table.len())?;
    for e in table.enclaves_from(0) {
        let _ = cut.insert(e.ip());
    }
    // SAFETY: writer mutex held.
    unsafe { table.flush() };
    cut_flows(req, &cut);
    Ok(())
}
