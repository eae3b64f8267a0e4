// SPDX-License-Identifier: GPL-2.0-only
//! Per-network-namespace state and the entry points the C glue calls: the packet-path match,
//! `checkentry`, and every generic netlink request.
//!
//! Readers (the match, dumps) load the live table with acquire ordering inside an RCU read-side
//! section. Writers run with the namespace's mutex held by the glue. A replaced table or node is
//! freed only after a grace period. After a change that moves an address to another application
//! or host, or removes it, the writer waits for a grace period (so no packet still being
//! classified under the old metadata can create a connection afterwards) and then deletes every
//! conntrack entry involving the address, before acknowledging the request.

use core::cell::UnsafeCell;
use core::ffi::{c_char, c_int, c_void, CStr};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use seng_core::genl::{attr, errno, AttrWriter, EnclaveList, EnclaveSpec, LegacyOp, ProtoError, Request};
use seng_core::matchinfo::MatchInfoError;
use seng_core::table::{AddrSet, EnclaveTable, Registered, TableError};
use seng_core::{match_packet, Family, SengMtInfo};

use crate::platform::{boxed, unbox, KernelPlatform};

type Table = EnclaveTable<KernelPlatform>;
type CutSet = AddrSet<KernelPlatform>;

extern "C" {
    /// `get_random_u64()`.
    fn seng_glue_random_u64() -> u64;
    /// `synchronize_rcu()`.
    fn seng_glue_synchronize_rcu();
    /// Deletes the conntrack entries of namespace `net` whose original or reply tuple has an
    /// address in `set` (tested with [`seng_rs_cut_contains`]).
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

/// A netlink request as the glue hands it over. Must match `struct seng_request` in seng_rs.h.
#[repr(C)]
pub struct SengRequest {
    /// `struct net *`, handed back to the conntrack glue.
    net: *mut c_void,
    /// Attributes after the genl header.
    payload: *const u8,
    payload_len: u32,
    /// Sender's netlink port (owner of a replace transaction).
    portid: u32,
    /// genl command.
    cmd: u8,
    /// Out: 1 when the change is to be echoed to the multicast group.
    notify: u8,
    /// Out: type of the attribute to blame, 0 for none.
    bad_attr: u16,
    /// Room for reply attributes (GET, STATS), or null.
    reply: *mut u8,
    reply_cap: u32,
    /// Out: reply bytes written.
    reply_len: u32,
    /// Out: static NUL-terminated message for the extended ack.
    errmsg: *const c_char,
}

const _: () = assert!(core::mem::size_of::<SengRequest>() == 56);

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

/// Creates a namespace's state with an empty table; null when memory is short.
#[no_mangle]
pub extern "C" fn seng_rs_net_new(capacity: u32) -> *mut NetState {
    let Ok(table) = new_table(capacity as usize) else {
        return ptr::null_mut();
    };
    let state = NetState {
        live: AtomicPtr::new(table.as_ptr()),
        writer: UnsafeCell::new(Writer { staging: None }),
        generation: AtomicU64::new(0),
        capacity: capacity as usize,
    };
    match boxed(state) {
        Some(state) => state.as_ptr(),
        None => {
            // SAFETY: never published.
            unsafe { unbox(table) };
            ptr::null_mut()
        }
    }
}

/// Frees a namespace's state and tables.
///
/// # Safety
/// `state` came from [`seng_rs_net_new`]; no reader or writer can reach it any more (the glue
/// has unregistered everything and waited for a grace period).
#[no_mangle]
pub unsafe extern "C" fn seng_rs_net_free(state: *mut NetState) {
    let Some(state) = NonNull::new(state) else { return };
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

/// The packet-path decision for one rule.
///
/// # Safety
/// Called inside an RCU read-side section with a live `state`, a validated match blob, and
/// 16-byte addresses (IPv4 in the first four bytes).
#[no_mangle]
pub unsafe extern "C" fn seng_rs_match(state: *const NetState, info: *const SengMtInfo, nfproto: u8, src: *const [u8; 16], dst: *const [u8; 16]) -> bool {
    let Some(family) = Family::from_nfproto(nfproto) else { return false };
    // SAFETY: by the caller.
    let (state, info, src, dst) = unsafe { (&*state, &*info, &*src, &*dst) };
    match_packet(info, family, state.live(), &inet_addr(family, src), &inet_addr(family, dst))
}

/// `checkentry`: 0 if the match blob is valid for `nfproto`, else -EINVAL with a message.
///
/// # Safety
/// `info` points to the 184-byte match blob; `msg` is writable.
#[no_mangle]
pub unsafe extern "C" fn seng_rs_check(info: *const SengMtInfo, nfproto: u8, msg: *mut *const c_char) -> c_int {
    let problem: Option<&'static CStr> = if Family::from_nfproto(nfproto).is_none() {
        Some(c"only IPv4 and IPv6 rules are supported")
    } else {
        // SAFETY: by the caller.
        match unsafe { &*info }.validate() {
            Ok(()) => None,
            Err(MatchInfoError::UnknownFlags(_)) => Some(c"unknown flag bits set (userspace newer than the module?)"),
            Err(MatchInfoError::NegationWithoutOption(_)) => Some(c"a negation flag is set without its option"),
            Err(MatchInfoError::NoOption) => Some(c"no option set: give at least one of --src-app, --src-cat, --src-host, --dst-app, --dst-cat, --dst-host"),
            Err(MatchInfoError::Category { dst: false, .. }) => Some(c"--src-cat is not a NUL-terminated name of 1-20 bytes"),
            Err(MatchInfoError::Category { dst: true, .. }) => Some(c"--dst-cat is not a NUL-terminated name of 1-20 bytes"),
            Err(MatchInfoError::Size(_)) => Some(c"match data has the wrong size"),
        }
    };
    match problem {
        None => 0,
        Some(text) => {
            // SAFETY: by the caller.
            unsafe { *msg = text.as_ptr() };
            -errno::EINVAL
        }
    }
}

/// Whether a conntrack address is in a cut set.
///
/// # Safety
/// `set` is the pointer handed to `seng_glue_ct_cut`; `addr` points to 16 bytes.
#[no_mangle]
pub unsafe extern "C" fn seng_rs_cut_contains(set: *const c_void, nfproto: u8, addr: *const [u8; 16]) -> bool {
    let Some(family) = Family::from_nfproto(nfproto) else { return false };
    // SAFETY: by the caller.
    let (set, addr) = unsafe { (&*(set as *const CutSet), &*addr) };
    set.contains(&inet_addr(family, addr))
}

/// The change counter, for dump consistency checks.
///
/// # Safety
/// `state` is live.
#[no_mangle]
pub unsafe extern "C" fn seng_rs_generation(state: *const NetState) -> u64 {
    // SAFETY: by the caller.
    unsafe { &*state }.generation.load(Ordering::Relaxed)
}

/// Fills `buf` with ENCLAVE nests from `*cursor` on. Returns the bytes written (0: the dump is
/// complete) or a negative errno.
///
/// # Safety
/// Inside an RCU read-side section; `state` is live; `buf` has `cap` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn seng_rs_dump(state: *const NetState, cursor: *mut u64, buf: *mut u8, cap: u32) -> c_int {
    // SAFETY: by the caller.
    let (state, cursor, buf) = unsafe { (&*state, &mut *cursor, core::slice::from_raw_parts_mut(buf, cap as usize)) };
    let mut out = AttrWriter::new(buf);
    let mut enclaves = state.live().enclaves_from(*cursor as usize);
    loop {
        let before = enclaves.cursor();
        let Some(e) = enclaves.next() else { break };
        if out.put_enclave(&e.ip(), Some(e.app()), Some(&e.host()), e.categories()).is_err() {
            if out.is_empty() {
                return -errno::EMSGSIZE;
            }
            *cursor = before as u64;
            return out.len() as c_int;
        }
        // Safe as a resume point: the nest just written is complete.
        *cursor = enclaves.cursor() as u64;
    }
    out.len() as c_int
}

/// Drops the replace transaction owned by a closing netlink socket.
///
/// # Safety
/// `state` is live; the namespace's writer mutex is held.
#[no_mangle]
pub unsafe extern "C" fn seng_rs_release(state: *const NetState, portid: u32) {
    // SAFETY: by the caller (writer mutex held).
    let writer = unsafe { &mut *(*state).writer.get() };
    if let Some((owner, staging)) = writer.staging {
        if owner == portid {
            writer.staging = None;
            // SAFETY: a staging table is never published.
            unsafe { unbox(staging) };
        }
    }
}

/// Handles one generic netlink request. Returns 0 or a negative errno; on error `errmsg` says why.
///
/// # Safety
/// `state` is live; the namespace's writer mutex is held; `req` is valid, its payload readable and
/// its reply buffer (if any) writable.
#[no_mangle]
pub unsafe extern "C" fn seng_rs_doit(state: *const NetState, req: *mut SengRequest) -> c_int {
    // SAFETY: by the caller.
    let (state, req) = unsafe { (&*state, &mut *req) };
    let payload: &[u8] = if req.payload.is_null() {
        &[]
    } else {
        // SAFETY: by the caller.
        unsafe { core::slice::from_raw_parts(req.payload, req.payload_len as usize) }
    };
    // SAFETY: writer mutex held by the caller.
    let writer = unsafe { &mut *state.writer.get() };
    match Request::parse(req.cmd, payload).and_then(|request| execute(state, writer, req, request)) {
        Ok(()) => 0,
        Err(e) => {
            req.errmsg = e.msg.as_ptr();
            req.bad_attr = e.attr.unwrap_or(0);
            -e.errno
        }
    }
}

/// Waits out readers of the old metadata, then deletes the flows of every address in `cut`.
fn cut_flows(req: &SengRequest, cut: &CutSet) {
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

fn reply_writer(req: &mut SengRequest) -> Result<AttrWriter<'_>, ProtoError> {
    if req.reply.is_null() {
        return Err(ProtoError { errno: errno::EINVAL, attr: None, msg: c"no reply buffer" });
    }
    // SAFETY: the glue provides `reply_cap` writable bytes.
    Ok(AttrWriter::new(unsafe { core::slice::from_raw_parts_mut(req.reply, req.reply_cap as usize) }))
}

const NO_ROOM: ProtoError = ProtoError { errno: errno::EMSGSIZE, attr: None, msg: c"reply does not fit" };

fn execute(state: &NetState, writer: &mut Writer, req: &mut SengRequest, request: Request<'_>) -> Result<(), ProtoError> {
    let table = state.live();
    let mut notify = true;
    match request {
        Request::Legacy(op) => notify = legacy(table, req, op)?,
        Request::EnclaveSet(list) => {
            check_room(table, &list)?;
            let mut cut = new_cut_set(list.len())?;
            let result = list.iter().try_for_each(|spec| register_spec(table, &spec, Some(&mut cut)));
            cut_flows(req, &cut);
            result?;
        }
        Request::EnclaveDel(list) => {
            if list.iter().any(|s| table.lookup(&s.addr).is_none()) {
                return Err(TableError::NotRegistered.into());
            }
            let mut cut = new_cut_set(list.len())?;
            for spec in list.iter() {
                // SAFETY: writer mutex held. A repeated address is already gone: skip it.
                if unsafe { table.unregister(&spec.addr) }.is_ok() {
                    let _ = cut.insert(spec.addr);
                }
            }
            cut_flows(req, &cut);
        }
        Request::Flush => flush(table, req)?,
        Request::CatAdd { app, categories } => {
            for c in categories.iter() {
                // SAFETY: writer mutex held.
                unsafe { table.attach_category(&app, &c) }?;
            }
        }
        Request::CatDel { app, categories } => {
            let current = table.app(&app).ok_or(ProtoError::from(TableError::UnknownApp))?.categories();
            if categories.iter().any(|c| !current.contains(&c)) {
                return Err(TableError::CategoryNotAttached.into());
            }
            for c in categories.iter() {
                // SAFETY: writer mutex held. A repeated category is already gone: skip it.
                let _ = unsafe { table.detach_category(&app, &c) };
            }
        }
        Request::Get { addr } => {
            let e = table.lookup(&addr).ok_or(ProtoError::from(TableError::NotRegistered))?;
            let mut out = reply_writer(req)?;
            out.put_enclave(&e.ip(), Some(e.app()), Some(&e.host()), e.categories()).map_err(|_| NO_ROOM)?;
            req.reply_len = out.len() as u32;
            notify = false;
        }
        Request::Stats => {
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
            req.reply_len = out.len() as u32;
            notify = false;
        }
        Request::ReplaceBegin => {
            if let Some((owner, staging)) = writer.staging {
                if owner != req.portid {
                    return Err(ProtoError { errno: errno::EBUSY, attr: None, msg: c"another socket has a replace transaction open" });
                }
                writer.staging = None;
                // SAFETY: a staging table is never published.
                unsafe { unbox(staging) };
            }
            writer.staging = Some((req.portid, new_table(state.capacity)?));
            notify = false;
        }
        Request::ReplaceAdd(list) => {
            let staging = match writer.staging {
                Some((owner, staging)) if owner == req.portid => staging,
                _ => return Err(no_transaction()),
            };
            // SAFETY: the staging table is owned by this writer and unpublished.
            let staging = unsafe { staging.as_ref() };
            // A partly applied message only affects the unpublished staging table, and the
            // client aborts the transaction on any error: no room check needed up front.
            list.iter().try_for_each(|spec| register_spec(staging, &spec, None))?;
            notify = false;
        }
        Request::ReplaceCommit => {
            let staging = match writer.staging {
                Some((owner, staging)) if owner == req.portid => staging,
                _ => return Err(no_transaction()),
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
        Request::ReplaceAbort => {
            match writer.staging {
                Some((owner, staging)) if owner == req.portid => {
                    writer.staging = None;
                    // SAFETY: a staging table is never published.
                    unsafe { unbox(staging) };
                }
                _ => return Err(no_transaction()),
            }
            notify = false;
        }
    }
    if notify {
        state.changed();
        req.notify = 1;
    }
    Ok(())
}

/// The original protocol. Unregistering an unknown address and detaching an absent category
/// succeed without effect, as the original did; returns whether anything changed.
fn legacy(table: &Table, req: &mut SengRequest, op: LegacyOp) -> Result<bool, ProtoError> {
    let mut cut = new_cut_set(1)?;
    let changed = match op {
        LegacyOp::Register { enclave, app, host, category } => {
            let categories = category.as_ref().map(core::slice::from_ref).unwrap_or_default();
            let enclave = IpAddr::V4(enclave);
            if table.lookup(&enclave).is_none() && table.len() >= table.stats().capacity {
                return Err(TableError::Full { capacity: table.stats().capacity }.into());
            }
            // SAFETY: writer mutex held.
            if let Registered::Replaced { .. } = unsafe { table.register(enclave, &app, IpAddr::V4(host), categories) }? {
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
        // SAFETY (both arms): writer mutex held.
        LegacyOp::Attach { app, category } => unsafe { table.attach_category(&app, &category) }?,
        LegacyOp::Detach { app, category } => unsafe { table.detach_category(&app, &category) }.is_ok(),
        LegacyOp::Flush => {
            flush(table, req)?;
            true
        }
    };
    cut_flows(req, &cut);
    Ok(changed)
}

fn flush(table: &Table, req: &SengRequest) -> Result<(), ProtoError> {
    let mut cut = new_cut_set(table.len())?;
    for e in table.enclaves_from(0) {
        let _ = cut.insert(e.ip());
    }
    // SAFETY: writer mutex held.
    unsafe { table.flush() };
    cut_flows(req, &cut);
    Ok(())
}
