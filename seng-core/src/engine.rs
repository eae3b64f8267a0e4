// SPDX-License-Identifier: GPL-2.0-only
//! The request engine: every change a generic netlink request makes to a namespace's enclave
//! table, decided once for both kernel flavours (which only decode, call [`Engine::execute`] and
//! reply) and for user space (seng-sim, `seng restore --test`, host tests).
//!
//! Its rules:
//! - A request applies completely or not at all. Everything that can be refused without changing
//!   the table (malformed nests, room, the 32-category limit, unknown addresses and categories)
//!   is checked before the first change; an allocation that fails half way through a batch
//!   undoes the batch's earlier part before the refusal is returned.
//! - Every applied change steps the generation before the connections are ended, so a dump that
//!   overlaps it can tell, and is announced (the reply's [`Handled::notify`]).
//! - No error is swallowed.
//! - Any change to what a rule can see about an address (its application, its host, its
//!   application's categories) ends that address's connections after a grace period, in the same
//!   request; so does a change of the entry's origin. Re-stating what is already true ends
//!   nothing.
//! - A request acts for one [origin](crate::origin) and changes only that origin's part of the
//!   table, except that a local registration replaces a remote entry of its address; a remote
//!   entry never replaces another origin's (refused with `EEXIST`). A gateway's name is held
//!   while an entry or an open replace transaction needs it, and forgotten after.
//!
//! The environment comes in through the table's [`Platform`] and the [`Services`] trait.

use core::alloc::Layout;
use core::cell::UnsafeCell;
use core::fmt;
use core::net::IpAddr;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use crate::genl::{attr, errno, Additions, AttrWriter, CategoryList, EnclaveSpec, LegacyOp, ProtoError, ReadScope, Request, Scoped};
use crate::origin::{Origin, OriginId, OriginNames, OriginSet};
use crate::table::{AddrSet, AppKey, EnclaveRef, EnclaveTable, Platform, Registered, TableError, MAX_CATEGORIES_PER_APP};
use crate::{Category, Measurement};

/// What the engine needs from its environment besides memory.
pub trait Services {
    /// Fresh random bits, to key a new table's hash.
    fn seed(&mut self) -> u64;
    /// Waits until no reader can still be classifying a packet under metadata the writer just
    /// replaced (an RCU grace period in the kernel).
    fn grace_period(&mut self);
    /// Ends the connections of every address `ending` contains (the kernel deletes their
    /// conntrack entries; seng-sim forgets their flows).
    fn end_connections<P: Platform>(&mut self, ending: &Ending<'_, P>);
}

/// The addresses whose connections a change ends: those named, and every enclave of the
/// applications whose categories changed.
pub struct Ending<'a, P: Platform> {
    addrs: &'a AddrSet<P>,
    apps: &'a [AppKey],
    table: &'a EnclaveTable<P>,
}

impl<P: Platform> Ending<'_, P> {
    /// Whether the connections of `ip` end.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.addrs.contains(ip) || (!self.apps.is_empty() && self.table.lookup(ip).is_some_and(|e| self.apps.contains(e.app_key())))
    }

    /// Calls `f` once with every address whose connections end.
    pub fn for_each(&self, mut f: impl FnMut(IpAddr)) {
        self.addrs.for_each(&mut f);
        if !self.apps.is_empty() {
            for e in self.table.enclaves_from(0) {
                if self.apps.contains(e.app_key()) && !self.addrs.contains(&e.addr()) {
                    f(e.addr());
                }
            }
        }
    }

    /// Whether no address is in it.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty() && self.apps.is_empty()
    }
}

/// A refused request: why, and where in the payload the attribute to blame starts (the glue
/// points the extended ack at it, so a client learns which enclave of a batch was refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub error: ProtoError,
    /// Byte offset in the payload of the attribute to blame, if one is.
    pub at: Option<usize>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl Refusal {
    /// The refusal with its offset counted `by` bytes further (from the start of a payload that
    /// holds the refused attributes after others).
    pub fn shifted(self, by: usize) -> Refusal {
        Refusal { at: self.at.map(|at| at + by), ..self }
    }
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handled {
    /// The change is to be announced on the event group.
    pub notify: bool,
    /// Reply bytes written.
    pub reply_len: usize,
}

/// A replace transaction being built.
struct Staging<P: Platform> {
    /// The netlink port that owns it.
    owner: u32,
    /// The replacement of the parts of `scope`'s origins.
    table: NonNull<EnclaveTable<P>>,
    /// The origins whose parts the commit replaces: those the transaction's requests named.
    scope: OriginSet,
}

impl<P: Platform> Clone for Staging<P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P: Platform> Copy for Staging<P> {}

/// One namespace's tables and the rules for changing them.
pub struct Engine<P: Platform + Clone> {
    live: AtomicPtr<EnclaveTable<P>>,
    /// The names of the gateways the tables' entries (and an open transaction) came from.
    origins: OriginNames<P>,
    /// The replace transaction being built. Written only by the writer.
    staging: UnsafeCell<Option<Staging<P>>>,
    /// The owner's port plus one, 0 when no transaction is open: read without the writer lock.
    staging_owner: AtomicU64,
    /// Twice the generation, plus one while a change is under way (a sequence lock for dumps).
    sequence: AtomicU64,
    /// Counts dump parts stamped during a change.
    interrupted: AtomicU64,
    capacity: usize,
    platform: P,
}

// SAFETY: readers only use the live table (Sync with a Sync platform) and atomics; the staging
// slot is touched only by the serialised writer.
unsafe impl<P: Platform + Clone + Sync> Sync for Engine<P> {}
// SAFETY: the engine owns its tables.
unsafe impl<P: Platform + Clone + Send> Send for Engine<P> {}

fn boxed<P: Platform, T>(platform: &P, value: T) -> Option<NonNull<T>> {
    let ptr = platform.alloc(Layout::new::<T>())?.cast::<T>();
    // SAFETY: fresh allocation sized and aligned for T.
    unsafe { ptr.as_ptr().write(value) };
    Some(ptr)
}

/// # Safety
/// `ptr` came from [`boxed`] with this platform and nothing can reach it any more.
unsafe fn unbox<P: Platform, T>(platform: &P, ptr: NonNull<T>) {
    // SAFETY: by the caller.
    unsafe {
        ptr.as_ptr().drop_in_place();
        platform.free(ptr.cast(), Layout::new::<T>());
    }
}

/// A fixed-capacity list of `Copy` items in memory from the platform, filled as a request goes.
struct Scratch<P: Platform, T: Copy> {
    ptr: NonNull<T>,
    cap: usize,
    len: usize,
    platform: P,
}

impl<P: Platform, T: Copy> Scratch<P, T> {
    fn with_capacity(platform: P, cap: usize) -> Result<Self, TableError> {
        let layout = Layout::array::<T>(cap.max(1)).map_err(|_| TableError::OutOfMemory)?;
        let ptr = platform.alloc(layout).ok_or(TableError::OutOfMemory)?.cast();
        Ok(Scratch { ptr, cap: cap.max(1), len: 0, platform })
    }

    /// Appends `item`; false (and nothing stored) when full.
    fn push(&mut self, item: T) -> bool {
        if self.len == self.cap {
            return false;
        }
        // SAFETY: len < cap, inside the allocation.
        unsafe { self.ptr.as_ptr().add(self.len).write(item) };
        self.len += 1;
        true
    }

    fn as_slice(&self) -> &[T] {
        // SAFETY: the first len items are initialised.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<P: Platform, T: Copy> Drop for Scratch<P, T> {
    fn drop(&mut self) {
        if let Ok(layout) = Layout::array::<T>(self.cap) {
            // SAFETY: allocated with this layout; never shared.
            unsafe { self.platform.free(self.ptr.cast(), layout) };
        }
    }
}

/// A category set held by value, for computing a whole new set before changing anything.
#[derive(Clone, Copy)]
struct Cats {
    items: [Category; MAX_CATEGORIES_PER_APP],
    len: usize,
}

impl Cats {
    fn empty() -> Cats {
        Cats { items: [Category::from_checked(b""); MAX_CATEGORIES_PER_APP], len: 0 }
    }

    fn of(current: &[Category]) -> Cats {
        let mut cats = Cats::empty();
        for c in current {
            // Tables hold at most MAX_CATEGORIES_PER_APP.
            let _ = cats.add(c);
        }
        cats
    }

    fn as_slice(&self) -> &[Category] {
        self.items.get(..self.len).unwrap_or_default()
    }

    /// Adds `c` unless present; fails when the set is full.
    fn add(&mut self, c: &Category) -> Result<(), TableError> {
        if self.as_slice().contains(c) {
            return Ok(());
        }
        *self.items.get_mut(self.len).ok_or(TableError::TooManyCategories)? = *c;
        self.len += 1;
        Ok(())
    }

    fn remove(&mut self, c: &Category) {
        if let Some(i) = self.as_slice().iter().position(|x| x == c) {
            // Keeps the order; a plain loop has no out-of-range panic path for the kernel.
            for j in i + 1..self.len {
                if let (Some(&next), Some(slot)) = (self.items.get(j), j.checked_sub(1)) {
                    if let Some(slot) = self.items.get_mut(slot) {
                        *slot = next;
                    }
                }
            }
            self.len -= 1;
        }
    }
}

/// What an address was before one nest of a batch changed it, to undo the nest.
#[derive(Clone, Copy)]
enum Before {
    Absent,
    Same,
    /// Registered to another application, host or origin. `orphan` indexes the batch's copies
    /// of category sets when the nest took that application's last enclave, so undoing must
    /// recreate it; kept apart so that the common record stays small.
    Other { app: AppKey, host: IpAddr, orphan: Option<usize> },
}

#[derive(Clone, Copy)]
struct Undo {
    ip: IpAddr,
    before: Before,
    /// The application the nest registered the address to.
    app: AppKey,
    /// The application's category count before the nest (register only appends, so the old set
    /// is a prefix of the new); `None` when the nest created the application.
    app_before: Option<usize>,
}

const NO_ROOM: ProtoError = ProtoError { errno: errno::EMSGSIZE, attr: None, msg: c"reply does not fit" };

fn no_transaction() -> ProtoError {
    ProtoError { errno: errno::ENOENT, attr: None, msg: c"no replace transaction is open on this socket" }
}

fn reply_writer<'r>(reply: &'r mut Option<&mut [u8]>) -> Result<AttrWriter<'r>, ProtoError> {
    match reply.as_deref_mut() {
        Some(buf) => Ok(AttrWriter::new(buf)),
        None => Err(ProtoError { errno: errno::EINVAL, attr: None, msg: c"no reply buffer" }),
    }
}

/// The application and host of a nest that registers (parsing checked that both are there).
fn app_host(spec: &EnclaveSpec<'_>) -> Result<(Measurement, IpAddr), ProtoError> {
    match (spec.app, spec.host) {
        (Some(app), Some(host)) => Ok((app, host)),
        _ => Err(ProtoError { errno: errno::EINVAL, attr: Some(attr::ENCLAVE), msg: c"enclave nest needs APP and HOST_ADDR" }),
    }
}

/// Whether an entry of `incoming` may take the place of the entry of `existing` at an address:
/// one of its own origin may, and a local one may take a gateway's; a gateway's entry never
/// replaces another origin's.
fn may_replace(existing: OriginId, incoming: OriginId) -> Result<(), ProtoError> {
    if existing == incoming || incoming.is_local() {
        return Ok(());
    }
    let msg = match existing.is_local() {
        true => c"the address is a local enclave: a gateway's entry never replaces the local SENG server's",
        false => c"the address is another gateway's enclave: a gateway's entry never replaces another origin's",
    };
    Err(ProtoError { errno: errno::EEXIST, attr: Some(attr::ENCLAVE), msg })
}

/// Whether `table` holds `addr` in the part of `origin` (`None`: a gateway without entries).
fn held_by<P: Platform>(table: &EnclaveTable<P>, addr: &IpAddr, origin: Option<OriginId>) -> Result<(), ProtoError> {
    match table.lookup(addr) {
        Some(e) if Some(e.origin()) == origin => Ok(()),
        Some(_) => Err(ProtoError { errno: errno::ENOENT, attr: Some(attr::ENCLAVE), msg: c"the address is another origin's enclave" }),
        None => Err(TableError::NotRegistered.into()),
    }
}

/// Decodes `additions` into `specs` (sized for them) and checks, in that one pass and changing
/// nothing, that registering them in order for `origin` is possible: every nest is well formed
/// and names an application and a host, no gateway's nest takes another origin's address, the
/// table has room for the new addresses, and no application would pass
/// [`MAX_CATEGORIES_PER_APP`] (blaming the first nest that would take one past it).
fn check_batch<'a, P: Platform>(table: &EnclaveTable<P>, origin: OriginId, additions: &Additions<'a>, specs: &mut Scratch<P, (usize, EnclaveSpec<'a>)>) -> Result<(), Refusal> {
    let mut new = 0;
    let mut most_attached = 0;
    // The categories the batch brings that its nest's application does not have yet: at most
    // these can grow any application, so a batch that re-states categories (every registration
    // of an application's further enclaves) needs no per-application accounting.
    let mut fresh = Cats::empty();
    let mut fresh_overflow = false;
    // Only a table that could overflow needs to know which addresses are new.
    let room_is_sure = table.len() + additions.len() <= table.stats().capacity;
    for item in additions.iter_at() {
        let (at, spec) = item.map_err(|(at, error)| Refusal { error, at: Some(at) })?;
        let blame = |error| Refusal { error, at: Some(at) };
        app_host(&spec).map_err(blame)?;
        // Sized for the list.
        specs.push((at, spec));
        // A local nest takes any address: only a gateway's needs to know who holds it.
        if !origin.is_local() {
            if let Some(e) = table.lookup(&spec.addr) {
                may_replace(e.origin(), origin).map_err(blame)?;
            }
        }
        new += usize::from(!room_is_sure && table.lookup(&spec.addr).is_none());
        let attached = spec.app.and_then(|a| table.app(origin, &a)).map_or(&[][..], |a| a.categories());
        most_attached = most_attached.max(attached.len());
        spec.with_categories(|cs| {
            for c in cs.iter().filter(|c| !attached.contains(c)) {
                fresh_overflow |= fresh.add(c).is_err();
            }
        });
    }
    if table.len() + new > table.stats().capacity {
        return Err(ProtoError { errno: errno::ENOSPC, attr: None, msg: c"the enclaves would exceed the table's capacity" }.into());
    }
    if !fresh_overflow && most_attached + fresh.len <= MAX_CATEGORIES_PER_APP {
        return Ok(());
    }
    // Rare: follow each application's set through the batch.
    let specs = specs.as_slice();
    for (i, (at, spec)) in specs.iter().enumerate() {
        let Some(app) = spec.app else { continue };
        let mut cats = Cats::of(table.app(origin, &app).map_or(&[][..], |a| a.categories()));
        let grown = specs.iter().take(i + 1).filter(|(_, s)| s.app == Some(app)).try_for_each(|(_, s)| s.with_categories(|cs| cs.iter().try_for_each(|c| cats.add(c))));
        grown.map_err(|e| Refusal { error: e.into(), at: Some(*at) })?;
    }
    Ok(())
}

/// `categories` merged into (`add`) or taken from the current set of the application `app` of
/// `origin` (`None`: a gateway without entries); taking one it does not have is refused.
fn new_categories<P: Platform>(table: &EnclaveTable<P>, origin: Option<OriginId>, app: &Measurement, categories: &CategoryList<'_>, add: bool) -> Result<(Cats, bool), TableError> {
    let current = origin.and_then(|origin| table.app(origin, app)).ok_or(TableError::UnknownApp)?.categories();
    let mut cats = Cats::of(current);
    for c in categories.iter() {
        if add {
            cats.add(&c)?;
        } else if current.contains(&c) {
            cats.remove(&c);
        } else {
            return Err(TableError::CategoryNotAttached);
        }
    }
    let changed = cats.as_slice() != current;
    Ok((cats, changed))
}

impl<P: Platform> Staging<P> {
    fn table(&self) -> &EnclaveTable<P> {
        // SAFETY: the staging table is owned by the writer and unpublished.
        unsafe { self.table.as_ref() }
    }
}

/// The transaction `portid` owns.
fn owned<P: Platform>(staging: &mut Option<Staging<P>>, portid: u32) -> Result<&mut Staging<P>, ProtoError> {
    staging.as_mut().filter(|s| s.owner == portid).ok_or_else(no_transaction)
}

impl<P: Platform + Clone> Engine<P> {
    /// An engine with an empty table of at most `capacity` enclaves.
    pub fn new(platform: P, capacity: usize, seed: u64) -> Result<Self, TableError> {
        let origins = OriginNames::new(platform.clone()).ok_or(TableError::OutOfMemory)?;
        let table = EnclaveTable::new(platform.clone(), capacity, seed)?;
        let live = boxed(&platform, table).ok_or(TableError::OutOfMemory)?;
        Ok(Engine {
            live: AtomicPtr::new(live.as_ptr()),
            origins,
            staging: UnsafeCell::new(None),
            staging_owner: AtomicU64::new(0),
            sequence: AtomicU64::new(0),
            interrupted: AtomicU64::new(0),
            capacity,
            platform,
        })
    }

    /// The live table. Readers call this inside a read-side section (RCU in the kernel).
    pub fn live(&self) -> &EnclaveTable<P> {
        // SAFETY: never null; a replaced table is freed only after a grace period, and callers are
        // readers inside one or the writer.
        unsafe { &*self.live.load(Ordering::Acquire) }
    }

    /// The names of the gateways the entries came from. Readers may use it inside a read-side
    /// section, as they use [`Engine::live`].
    pub fn origins(&self) -> &OriginNames<P> {
        &self.origins
    }

    /// The change counter: it steps with every applied change, before its connections end.
    pub fn generation(&self) -> u64 {
        self.sequence.load(Ordering::Acquire) / 2
    }

    /// Whether the netlink port `portid` may own a replace transaction; read without the writer
    /// lock, so closing a socket that never opened one takes no lock.
    pub fn may_own_transaction(&self, portid: u32) -> bool {
        self.staging_owner.load(Ordering::Acquire) == u64::from(portid) + 1
    }

    /// Marks a change as under way: the sequence turns odd until [`Engine::changed`].
    fn changing(&self) {
        self.sequence.fetch_add(1, Ordering::AcqRel);
    }

    /// Marks the change under way as complete, stepping the generation.
    fn changed(&self) {
        self.sequence.fetch_add(1, Ordering::AcqRel);
    }

    /// Marks the change under way as not made after all: the generation stays. A dump part
    /// stamped meanwhile is still told apart, which only makes the dump start over.
    fn cancelled(&self) {
        self.sequence.fetch_sub(1, Ordering::AcqRel);
    }

    /// The stamp of one part of a dump (netlink's `cb->seq`): parts and the final message of a
    /// dump that overlaps a change get different stamps, so netlink marks the dump
    /// `NLM_F_DUMP_INTR`. Never 0, which netlink takes for "no stamp yet".
    pub fn dump_stamp(&self) -> u32 {
        let sequence = self.sequence.load(Ordering::Acquire);
        if sequence % 2 == 1 {
            // A change is under way: no two parts may agree.
            return 0x8000_0000 | self.interrupted.fetch_add(1, Ordering::Relaxed) as u32 & 0x7fff_ffff;
        }
        ((sequence / 2) % 0x7fff_ffff) as u32 + 1
    }

    /// Writes into `buf` the ENCLAVE nests of the entries `scope` reads, from `*cursor` on, and
    /// advances the cursor; the nest of a remote entry starts with its ORIGIN. Returns the bytes
    /// written (0: the dump is complete). Call inside a read-side section; a dump that overlaps
    /// a change may miss or repeat entries, which its stamps ([`Engine::dump_stamp`]) reveal.
    pub fn dump(&self, scope: &ReadScope, cursor: &mut usize, buf: &mut [u8]) -> Result<usize, ProtoError> {
        let only = match scope {
            ReadScope::Every => None,
            ReadScope::Origin(origin) => match self.origins.find(origin) {
                Some(id) => Some(id),
                // A gateway without entries.
                None => return Ok(0),
            },
        };
        let mut out = AttrWriter::new(buf);
        let mut enclaves = self.live().enclaves_from(*cursor);
        loop {
            let before = enclaves.cursor();
            let Some(e) = enclaves.next() else { break };
            if only.is_some_and(|id| id != e.origin()) {
                continue;
            }
            let origin = self.origins.name(e.origin());
            // A gateway's entry whose name went meanwhile belongs to a dump that starts over.
            if origin.is_none() && !e.origin().is_local() {
                continue;
            }
            if out.put_entry(origin, &e.addr(), e.app(), &e.host(), e.categories()).is_err() {
                if out.is_empty() {
                    return Err(NO_ROOM);
                }
                *cursor = before;
                return Ok(out.len());
            }
            // Safe as a resume point: the nest just written is complete.
            *cursor = enclaves.cursor();
        }
        Ok(out.len())
    }

    fn set_staging(&self, staging: &mut Option<Staging<P>>, value: Option<Staging<P>>) {
        if let Some(old) = core::mem::replace(staging, value) {
            if value.is_none_or(|new| new.table != old.table) {
                // SAFETY: a staging table is never published.
                unsafe { unbox(&self.platform, old.table) };
            }
        }
        self.staging_owner.store(value.map_or(0, |s| u64::from(s.owner) + 1), Ordering::Release);
    }

    /// An empty table to stage a replacement in.
    fn new_table(&self, services: &mut impl Services) -> Result<NonNull<EnclaveTable<P>>, TableError> {
        let table = EnclaveTable::new(self.platform.clone(), self.capacity, services.seed())?;
        boxed(&self.platform, table).ok_or(TableError::OutOfMemory)
    }

    /// Drops the replace transaction owned by a closing netlink socket.
    ///
    /// # Safety
    /// Writers are serialised.
    pub unsafe fn release(&self, portid: u32) {
        // SAFETY: serialised writer.
        let staging = unsafe { &mut *self.staging.get() };
        if owned(staging, portid).is_ok() {
            self.set_staging(staging, None);
            // SAFETY: serialised writer.
            unsafe { self.forget_unused_origins() };
        }
    }

    /// Forgets the name of every gateway that nothing needs any more: no entry of the live or
    /// the staging table is the gateway's, and no open transaction names it.
    ///
    /// # Safety
    /// Writers are serialised.
    unsafe fn forget_unused_origins(&self) {
        // SAFETY: serialised writer.
        let staging = unsafe { &*self.staging.get() };
        let live = self.live();
        for id in self.origins.ids() {
            let staged = staging.as_ref().is_some_and(|s| s.scope.contains(id) || s.table().origin_len(id) > 0);
            if live.origin_len(id) == 0 && !staged {
                // SAFETY: serialised writer; nothing carries the id.
                unsafe { self.origins.release(id) };
            }
        }
    }

    fn new_ending(&self, capacity: usize, services: &mut impl Services) -> Result<AddrSet<P>, TableError> {
        AddrSet::with_capacity(self.platform.clone(), capacity, services.seed())
    }

    /// Waits out readers of the old metadata, then ends the connections of `addrs` and of the
    /// enclaves of `apps`.
    fn end(&self, services: &mut impl Services, addrs: &AddrSet<P>, apps: &[AppKey]) {
        let ending = Ending { addrs, apps, table: self.live() };
        if !ending.is_empty() {
            services.grace_period();
            services.end_connections(&ending);
        }
    }

    /// Executes one request from the netlink port `portid`, for the origin it names; `reply` is
    /// room for the attributes GET and STATS answer with.
    ///
    /// # Safety
    /// Writers are serialised (the kernel holds the namespace's mutex), and the platform's
    /// `retire` waits for concurrent readers.
    pub unsafe fn execute(&self, services: &mut impl Services, request: Scoped<'_>, portid: u32, reply: Option<&mut [u8]>) -> Result<Handled, Refusal> {
        // SAFETY: by the caller.
        let result = unsafe { self.execute_for(services, &request.origin, request.request, portid, reply) };
        // A refused registration may have named a gateway for nothing, a flush taken its last
        // entry.
        // SAFETY: by the caller.
        unsafe { self.forget_unused_origins() };
        result.map_err(|refusal| refusal.shifted(request.base()))
    }

    /// [`Engine::execute`] of `request` for `origin`, its offsets counted from the request's
    /// own attributes.
    ///
    /// # Safety
    /// As [`Engine::execute`].
    unsafe fn execute_for(&self, services: &mut impl Services, origin: &Origin, request: Request<'_>, portid: u32, mut reply: Option<&mut [u8]>) -> Result<Handled, Refusal> {
        // SAFETY: serialised writer.
        let staging = unsafe { &mut *self.staging.get() };
        let table = self.live();
        let changed = Handled { notify: true, reply_len: 0 };
        let quiet = Handled { notify: false, reply_len: 0 };
        // SAFETY (every table and name writer call below): serialised writer, by the caller.
        match request {
            Request::Legacy(op) => unsafe { self.legacy(services, op) },
            Request::Register(additions) => {
                let id = unsafe { self.origins.intern(origin) }?;
                unsafe { self.register_batch(services, id, &additions) }.map(|()| changed)
            }
            Request::Unregister(list) => {
                let id = self.origins.find(origin);
                if let Some((at, error)) = list.iter_at().find_map(|(at, s)| held_by(table, &s.addr, id).err().map(|e| (at, e))) {
                    return Err(Refusal { error, at: Some(at) });
                }
                let mut ending = self.new_ending(list.len(), services)?;
                self.changing();
                for spec in list.iter() {
                    // A repeated address is already gone; the set is sized for the whole list.
                    if unsafe { table.unregister(&spec.addr) }.is_ok() {
                        let _ = ending.insert(spec.addr);
                    }
                }
                self.changed();
                self.end(services, &ending, &[]);
                Ok(changed)
            }
            Request::Flush => {
                // A gateway without a name has no entries to flush.
                if let Some(id) = self.origins.find(origin) {
                    unsafe { self.flush(services, id) }?;
                }
                Ok(changed)
            }
            Request::Attach { app, categories } | Request::Detach { app, categories } => {
                let add = matches!(request, Request::Attach { .. });
                let id = self.origins.find(origin);
                let (cats, differs) = new_categories(table, id, &app, &categories, add)?;
                if let (true, Some(id)) = (differs, id) {
                    // Allocated first: once the set is changed, nothing may fail.
                    let ending = self.new_ending(0, services)?;
                    self.changing();
                    let set = unsafe { table.set_categories(id, &app, cats.as_slice()) };
                    self.changed();
                    set?;
                    self.end(services, &ending, &[AppKey { measurement: app, origin: id }]);
                }
                Ok(changed)
            }
            Request::Get { addr, scope } => {
                let e = table.lookup(&addr).filter(|e| scope.includes(&self.origins.origin(e.origin())));
                let e = e.ok_or(ProtoError::from(TableError::NotRegistered))?;
                let mut out = reply_writer(&mut reply)?;
                out.put_entry(self.origins.name(e.origin()), &e.addr(), e.app(), &e.host(), e.categories()).map_err(|_| NO_ROOM)?;
                Ok(Handled { notify: false, reply_len: out.len() })
            }
            Request::Stats => {
                let stats = table.stats();
                let mut out = reply_writer(&mut reply)?;
                for (kind, value) in [
                    (attr::STAT_ENCLAVES, stats.enclaves as u64),
                    (attr::STAT_APPS, stats.apps as u64),
                    (attr::STAT_CAPACITY, stats.capacity as u64),
                    (attr::STAT_SLOTS, stats.enclave_slots as u64),
                    (attr::STAT_GENERATION, self.generation()),
                ] {
                    out.put_u64(kind, value).map_err(|_| NO_ROOM)?;
                }
                Ok(Handled { notify: false, reply_len: out.len() })
            }
            Request::ReplaceBegin => {
                if matches!(*staging, Some(s) if s.owner != portid) {
                    return Err(ProtoError { errno: errno::EBUSY, attr: None, msg: c"another socket has a replace transaction open" }.into());
                }
                let id = unsafe { self.origins.intern(origin) }?;
                match *staging {
                    // The owner empties the staging table's part of the origin: the whole table
                    // when that is all it holds.
                    Some(s) if s.table().origin_len(id) < s.table().len() => unsafe { s.table().unregister_origin(id, drop) },
                    Some(s) => {
                        let fresh = self.new_table(services)?;
                        self.set_staging(staging, Some(Staging { table: fresh, ..s }));
                    }
                    None => {
                        let fresh = self.new_table(services)?;
                        self.set_staging(staging, Some(Staging { owner: portid, table: fresh, scope: OriginSet::default() }));
                    }
                }
                owned(staging, portid)?.scope.insert(id);
                Ok(quiet)
            }
            // A partly applied message only affects the unpublished staging table, which the
            // client aborts on any error: no all-or-nothing check up front.
            Request::StagedRegister(additions) => {
                owned(staging, portid)?;
                let id = unsafe { self.origins.intern(origin) }?;
                let s = owned(staging, portid)?;
                s.scope.insert(id);
                let target = s.table();
                for item in additions.iter_at() {
                    let (at, spec) = item.map_err(|(at, error)| Refusal { error, at: Some(at) })?;
                    let blame = |error: ProtoError| Refusal { error, at: Some(at) };
                    let (app, host) = app_host(&spec).map_err(blame)?;
                    if let Some(e) = target.lookup(&spec.addr) {
                        may_replace(e.origin(), id).map_err(blame)?;
                    }
                    spec.with_categories(|cs| unsafe { target.register(spec.addr, id, &app, host, cs) }).map_err(|e| blame(e.into()))?;
                }
                Ok(quiet)
            }
            Request::StagedUnregister(list) => {
                let target = owned(staging, portid)?.table();
                let id = self.origins.find(origin);
                if let Some((at, error)) = list.iter_at().find_map(|(at, s)| held_by(target, &s.addr, id).err().map(|e| (at, e))) {
                    return Err(Refusal { error, at: Some(at) });
                }
                for spec in list.iter() {
                    // A repeated address is already gone.
                    let _ = unsafe { target.unregister(&spec.addr) };
                }
                Ok(quiet)
            }
            Request::StagedAttach { app, categories } | Request::StagedDetach { app, categories } => {
                let target = owned(staging, portid)?.table();
                let id = self.origins.find(origin);
                let (cats, _) = new_categories(target, id, &app, &categories, matches!(request, Request::StagedAttach { .. }))?;
                if let Some(id) = id {
                    unsafe { target.set_categories(id, &app, cats.as_slice()) }?;
                }
                Ok(quiet)
            }
            Request::ReplaceCommit => unsafe { self.commit(services, staging, portid) }.map(|()| changed),
            Request::ReplaceAbort => {
                owned(staging, portid)?;
                self.set_staging(staging, None);
                Ok(quiet)
            }
        }
    }

    /// REPLACE_COMMIT: puts the staging table in the place of the live table's parts of the
    /// transaction's origins. When those parts are the whole live table the staging table is
    /// swapped in; otherwise its entries move into the live table ([`EnclaveTable::adopt`]).
    /// Refused, the transaction stays open.
    ///
    /// # Safety
    /// As [`Engine::execute`].
    unsafe fn commit(&self, services: &mut impl Services, staging: &mut Option<Staging<P>>, portid: u32) -> Result<(), Refusal> {
        let s = *owned(staging, portid)?;
        let (live, replacement) = (self.live(), s.table());
        // The parts of origins outside the transaction stay, and keep their addresses from
        // gateways.
        for e in replacement.enclaves_from(0) {
            if let Some(held) = live.lookup(&e.addr()).filter(|held| !s.scope.contains(held.origin())) {
                may_replace(held.origin(), e.origin())?;
            }
        }
        let mut changing = 0;
        live.changed_in(replacement, &s.scope, |_| changing += 1);
        let mut ending = self.new_ending(changing, services)?;
        // Sized for exactly those.
        live.changed_in(replacement, &s.scope, |ip| {
            let _ = ending.insert(ip);
        });
        if live.scope_len(&s.scope) == live.len() {
            *staging = None;
            self.staging_owner.store(0, Ordering::Release);
            self.changing();
            let old = self.live.swap(s.table.as_ptr(), Ordering::AcqRel);
            self.changed();
            // Readers of the old table must finish before it is freed, connections to end or not.
            services.grace_period();
            if !ending.is_empty() {
                services.end_connections(&Ending { addrs: &ending, apps: &[], table: self.live() });
            }
            if let Some(old) = NonNull::new(old) {
                // SAFETY: unpublished above and a grace period has passed.
                unsafe { unbox(&self.platform, old) };
            }
            return Ok(());
        }
        self.changing();
        // SAFETY: by the caller; the staging table has the live table's platform.
        if let Err(e) = unsafe { live.adopt(replacement, &s.scope) } {
            self.cancelled();
            return Err(e.into());
        }
        self.changed();
        // The staging table is empty now.
        self.set_staging(staging, None);
        self.end(services, &ending, &[]);
        Ok(())
    }

    /// ENCLAVE_SET: registers every nest for `origin` or, refusing, leaves the table as it was.
    ///
    /// # Safety
    /// As [`Engine::execute`].
    unsafe fn register_batch(&self, services: &mut impl Services, origin: OriginId, additions: &Additions<'_>) -> Result<(), Refusal> {
        let table = self.live();
        // The check's decoding of each nest, so that registering does not decode it again.
        let mut specs = Scratch::with_capacity(self.platform.clone(), additions.len())?;
        check_batch(table, origin, additions, &mut specs)?;
        let mut ending = self.new_ending(additions.len(), services)?;
        let mut grown = Scratch::<P, AppKey>::with_capacity(self.platform.clone(), additions.len())?;
        // One nest is one table operation, all or nothing by itself: no undo log needed.
        let mut undo = match additions.len() {
            1 => None,
            n => Some(Scratch::<P, Undo>::with_capacity(self.platform.clone(), n)?),
        };
        let mut orphans: Option<Scratch<P, Cats>> = None;
        self.changing();
        for &(at, spec) in specs.as_slice() {
            let Ok((measurement, host)) = app_host(&spec) else { continue };
            let app = AppKey { measurement, origin };
            let mut orphan = None;
            // Only an undo log needs the categories of an application the nest empties.
            let keep_orphan = |old: EnclaveRef<'_>| {
                let empties = undo.is_some() && *old.app_key() != app && table.app(old.origin(), old.app()).is_some_and(|a| a.enclaves() == 1);
                if !empties {
                    return Ok(());
                }
                // Allocated on first need.
                let kept = match orphans.as_mut() {
                    Some(kept) => kept,
                    None => orphans.insert(Scratch::with_capacity(self.platform.clone(), additions.len())?),
                };
                orphan = Some(kept.as_slice().len());
                kept.push(Cats::of(old.categories()));
                Ok(())
            };
            // SAFETY: by the caller.
            let registered = spec.with_categories(|cs| unsafe { table.register_traced(spec.addr, origin, &measurement, host, cs, keep_orphan) });
            match registered {
                Ok((outcome, counts)) => {
                    let before = match outcome {
                        Registered::New => Before::Absent,
                        Registered::Unchanged => Before::Same,
                        Registered::Replaced { app, host, origin } => {
                            // Sized for the whole list.
                            let _ = ending.insert(spec.addr);
                            Before::Other { app: AppKey { measurement: app, origin }, host, orphan }
                        }
                    };
                    if counts.before.is_some_and(|n| n != counts.after) && !grown.as_slice().contains(&app) {
                        grown.push(app);
                    }
                    if let Some(undo) = undo.as_mut() {
                        undo.push(Undo { ip: spec.addr, before, app, app_before: counts.before });
                    }
                }
                Err(error) => {
                    if let Some(undo) = undo.as_ref() {
                        // SAFETY: by the caller.
                        unsafe { self.undo(undo.as_slice(), orphans.as_ref().map_or(&[][..], |o| o.as_slice()), &mut ending) };
                    }
                    // The undone part was visible for a moment: the generation steps.
                    self.changed();
                    self.end(services, &ending, grown.as_slice());
                    return Err(Refusal { error: error.into(), at: Some(at) });
                }
            }
        }
        self.changed();
        self.end(services, &ending, grown.as_slice());
        Ok(())
    }

    /// Undoes the applied nests of a batch, latest first. Every address touched goes into `ending`:
    /// packets may have been classified under its new metadata for a moment.
    ///
    /// # Safety
    /// As [`Engine::execute`].
    unsafe fn undo(&self, applied: &[Undo], orphans: &[Cats], ending: &mut AddrSet<P>) {
        let table = self.live();
        for u in applied.iter().rev() {
            let _ = ending.insert(u.ip);
            // SAFETY (all three): by the caller. Undoing frees what the nest allocated or
            // allocates what it freed; both succeed unless memory runs out a second time, and
            // then the generation step and the ended connections still cover the change.
            match u.before {
                Before::Absent => {
                    let _ = unsafe { table.unregister(&u.ip) };
                }
                Before::Same => {}
                Before::Other { app, host, orphan } => {
                    // An application that kept other enclaves still has its categories.
                    let cats = orphan.and_then(|i| orphans.get(i)).map_or(&[][..], Cats::as_slice);
                    let _ = unsafe { table.register(u.ip, app.origin, &app.measurement, host, cats) };
                }
            }
            if let (Some(n), Some(a)) = (u.app_before, table.app(u.app.origin, &u.app.measurement)) {
                let prefix = Cats::of(a.categories().get(..n).unwrap_or_default());
                let _ = unsafe { table.set_categories(u.app.origin, &u.app.measurement, prefix.as_slice()) };
            }
        }
    }

    /// Unregisters every enclave of `origin`.
    ///
    /// # Safety
    /// As [`Engine::execute`].
    unsafe fn flush(&self, services: &mut impl Services, origin: OriginId) -> Result<(), TableError> {
        let table = self.live();
        let mut ending = self.new_ending(table.origin_len(origin), services)?;
        self.changing();
        // Sized for every enclave of the origin.
        // SAFETY: by the caller.
        unsafe {
            table.unregister_origin(origin, |ip| {
                let _ = ending.insert(ip);
            })
        };
        self.changed();
        self.end(services, &ending, &[]);
        Ok(())
    }

    /// The original protocol, which knows nothing of origins: it acts for the local origin, as
    /// every request that names none does. Unregistering an address that is no local enclave and
    /// detaching an absent category succeed without effect, as the original did; announces only
    /// what changed.
    ///
    /// # Safety
    /// As [`Engine::execute`].
    unsafe fn legacy(&self, services: &mut impl Services, op: LegacyOp) -> Result<Handled, Refusal> {
        let table = self.live();
        let local = OriginId::LOCAL;
        let mut ending = self.new_ending(1, services)?;
        if let LegacyOp::Flush = op {
            // SAFETY: by the caller.
            unsafe { self.flush(services, local) }?;
            return Ok(Handled { notify: true, reply_len: 0 });
        }
        let mut app_changed = None;
        self.changing();
        // SAFETY (every writer call): by the caller.
        let outcome = match op {
            LegacyOp::Register { addr, app, host, category } => {
                let enclave = IpAddr::V4(addr);
                let before = table.app(local, &app).map(|a| a.categories().len());
                let registered = unsafe { table.register(enclave, local, &app, IpAddr::V4(host), category.as_slice()) };
                if let Ok(Registered::Replaced { .. }) = registered {
                    let _ = ending.insert(enclave);
                }
                if before.is_some_and(|n| Some(n) != table.app(local, &app).map(|a| a.categories().len())) {
                    app_changed = Some(AppKey { measurement: app, origin: local });
                }
                registered.map(|_| true)
            }
            LegacyOp::Unregister { addr } => {
                let enclave = IpAddr::V4(addr);
                match table.lookup(&enclave).map(|e| e.origin()) {
                    Some(origin) if origin.is_local() => match unsafe { table.unregister(&enclave) } {
                        Ok(_) => {
                            let _ = ending.insert(enclave);
                            Ok(true)
                        }
                        Err(e) => Err(e),
                    },
                    _ => Ok(false),
                }
            }
            LegacyOp::Attach { app, category } => {
                let added = unsafe { table.attach_category(local, &app, &category) };
                if added == Ok(true) {
                    app_changed = Some(AppKey { measurement: app, origin: local });
                }
                added
            }
            LegacyOp::Detach { app, category } => match unsafe { table.detach_category(local, &app, &category) } {
                Ok(()) => {
                    app_changed = Some(AppKey { measurement: app, origin: local });
                    Ok(true)
                }
                Err(TableError::CategoryNotAttached | TableError::UnknownApp) => Ok(false),
                Err(e) => Err(e),
            },
            LegacyOp::Flush => Ok(false),
        };
        // Refused, the table is as it was.
        match outcome {
            Ok(_) => self.changed(),
            Err(_) => self.cancelled(),
        }
        let changed = outcome?;
        if changed {
            self.end(services, &ending, app_changed.as_slice());
        }
        Ok(Handled { notify: changed, reply_len: 0 })
    }
}

impl<P: Platform + Clone> Drop for Engine<P> {
    fn drop(&mut self) {
        let staging = self.staging.get_mut();
        if let Some(s) = staging.take() {
            // SAFETY: never published.
            unsafe { unbox(&self.platform, s.table) };
        }
        if let Some(live) = NonNull::new(*self.live.get_mut()) {
            // SAFETY: `&mut self`: no reader holds the engine (the kernel glue waits for a grace
            // period before dropping it).
            unsafe { unbox(&self.platform, live) };
        }
    }
}
