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
//!   request; re-stating what is already true ends nothing.
//!
//! The environment comes in through the table's [`Platform`] and the [`Services`] trait.

use core::alloc::Layout;
use core::cell::UnsafeCell;
use core::fmt;
use core::net::IpAddr;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use crate::genl::{attr, errno, Additions, AttrWriter, CategoryList, EnclaveSpec, LegacyOp, ProtoError, Request};
use crate::table::{AddrSet, EnclaveRef, EnclaveTable, Platform, Registered, TableError, MAX_CATEGORIES_PER_APP};
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
    apps: &'a [Measurement],
    table: &'a EnclaveTable<P>,
}

impl<P: Platform> Ending<'_, P> {
    /// Whether the connections of `ip` end.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.addrs.contains(ip) || (!self.apps.is_empty() && self.table.lookup(ip).is_some_and(|e| self.apps.contains(e.app())))
    }

    /// Calls `f` once with every address whose connections end.
    pub fn for_each(&self, mut f: impl FnMut(IpAddr)) {
        self.addrs.for_each(&mut f);
        if !self.apps.is_empty() {
            for e in self.table.enclaves_from(0) {
                if self.apps.contains(e.app()) && !self.addrs.contains(&e.addr()) {
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

/// One namespace's tables and the rules for changing them.
pub struct Engine<P: Platform + Clone> {
    live: AtomicPtr<EnclaveTable<P>>,
    /// The replace transaction being built, with the netlink port that owns it. Written only by
    /// the writer.
    staging: UnsafeCell<Option<(u32, NonNull<EnclaveTable<P>>)>>,
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
    /// Registered to another application or host. `orphan` indexes the batch's copies of
    /// category sets when the nest took that application's last enclave, so undoing must
    /// recreate it; kept apart so that the common record stays small.
    Other { app: Measurement, host: IpAddr, orphan: Option<usize> },
}

#[derive(Clone, Copy)]
struct Undo {
    ip: IpAddr,
    before: Before,
    app: Measurement,
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

/// Decodes `additions` into `specs` (sized for them) and checks, in that one pass and changing
/// nothing, that registering them in order is possible: every nest is well formed and names an
/// application and a host, the table has room for the new addresses, and no application would
/// pass [`MAX_CATEGORIES_PER_APP`] (blaming the first nest that would take one past it).
fn check_batch<'a, P: Platform>(table: &EnclaveTable<P>, additions: &Additions<'a>, specs: &mut Scratch<P, (usize, EnclaveSpec<'a>)>) -> Result<(), Refusal> {
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
        app_host(&spec).map_err(|error| Refusal { error, at: Some(at) })?;
        // Sized for the list.
        specs.push((at, spec));
        new += usize::from(!room_is_sure && table.lookup(&spec.addr).is_none());
        let attached = spec.app.and_then(|a| table.app(&a)).map_or(&[][..], |a| a.categories());
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
        let mut cats = Cats::of(table.app(&app).map_or(&[][..], |a| a.categories()));
        let grown = specs.iter().take(i + 1).filter(|(_, s)| s.app == Some(app)).try_for_each(|(_, s)| s.with_categories(|cs| cs.iter().try_for_each(|c| cats.add(c))));
        grown.map_err(|e| Refusal { error: e.into(), at: Some(*at) })?;
    }
    Ok(())
}

/// `categories` merged into (`add`) or taken from the application's current set; taking one it
/// does not have is refused.
fn new_categories<P: Platform>(table: &EnclaveTable<P>, app: &Measurement, categories: &CategoryList<'_>, add: bool) -> Result<(Cats, bool), TableError> {
    let current = table.app(app).ok_or(TableError::UnknownApp)?.categories();
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

impl<P: Platform + Clone> Engine<P> {
    /// An engine with an empty table of at most `capacity` enclaves.
    pub fn new(platform: P, capacity: usize, seed: u64) -> Result<Self, TableError> {
        let table = EnclaveTable::new(platform.clone(), capacity, seed)?;
        let live = boxed(&platform, table).ok_or(TableError::OutOfMemory)?;
        Ok(Engine {
            live: AtomicPtr::new(live.as_ptr()),
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

    fn set_staging(&self, staging: &mut Option<(u32, NonNull<EnclaveTable<P>>)>, value: Option<(u32, NonNull<EnclaveTable<P>>)>) {
        if let Some((_, old)) = core::mem::replace(staging, value) {
            // SAFETY: a staging table is never published.
            unsafe { unbox(&self.platform, old) };
        }
        self.staging_owner.store(value.map_or(0, |(owner, _)| u64::from(owner) + 1), Ordering::Release);
    }

    /// Drops the replace transaction owned by a closing netlink socket.
    ///
    /// # Safety
    /// Writers are serialised.
    pub unsafe fn release(&self, portid: u32) {
        // SAFETY: serialised writer.
        let staging = unsafe { &mut *self.staging.get() };
        if matches!(*staging, Some((owner, _)) if owner == portid) {
            self.set_staging(staging, None);
        }
    }

    fn new_ending(&self, capacity: usize, services: &mut impl Services) -> Result<AddrSet<P>, TableError> {
        AddrSet::with_capacity(self.platform.clone(), capacity, services.seed())
    }

    /// Waits out readers of the old metadata, then ends the connections of `addrs` and of the
    /// enclaves of `apps`.
    fn end(&self, services: &mut impl Services, addrs: &AddrSet<P>, apps: &[Measurement]) {
        let ending = Ending { addrs, apps, table: self.live() };
        if !ending.is_empty() {
            services.grace_period();
            services.end_connections(&ending);
        }
    }

    /// Executes one request from the netlink port `portid`; `reply` is room for the attributes
    /// GET and STATS answer with.
    ///
    /// # Safety
    /// Writers are serialised (the kernel holds the namespace's mutex), and the platform's
    /// `retire` waits for concurrent readers.
    pub unsafe fn execute(&self, services: &mut impl Services, request: Request<'_>, portid: u32, mut reply: Option<&mut [u8]>) -> Result<Handled, Refusal> {
        // SAFETY: serialised writer.
        let staging = unsafe { &mut *self.staging.get() };
        let table = self.live();
        let staged = |staging: &Option<(u32, NonNull<EnclaveTable<P>>)>| match *staging {
            // SAFETY: the staging table is owned by this writer and unpublished.
            Some((owner, t)) if owner == portid => Ok(unsafe { &*t.as_ptr() }),
            _ => Err(no_transaction()),
        };
        let changed = Handled { notify: true, reply_len: 0 };
        let quiet = Handled { notify: false, reply_len: 0 };
        // SAFETY (every table writer call below): serialised writer, by the caller.
        match request {
            Request::Legacy(op) => unsafe { self.legacy(services, op) },
            Request::Register(list) => unsafe { self.register_batch(services, &list) }.map(|()| changed),
            Request::Unregister(list) => {
                if let Some((at, _)) = list.iter_at().find(|(_, s)| table.lookup(&s.addr).is_none()) {
                    return Err(Refusal { error: TableError::NotRegistered.into(), at: Some(at) });
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
                unsafe { self.flush(services) }?;
                Ok(changed)
            }
            Request::Attach { app, categories } | Request::Detach { app, categories } => {
                let add = matches!(request, Request::Attach { .. });
                let (cats, differs) = new_categories(table, &app, &categories, add)?;
                if differs {
                    // Allocated first: once the set is changed, nothing may fail.
                    let ending = self.new_ending(0, services)?;
                    self.changing();
                    let set = unsafe { table.set_categories(&app, cats.as_slice()) };
                    self.changed();
                    set?;
                    self.end(services, &ending, core::slice::from_ref(&app));
                }
                Ok(changed)
            }
            Request::Get { addr } => {
                let e = table.lookup(&addr).ok_or(ProtoError::from(TableError::NotRegistered))?;
                let mut out = reply_writer(&mut reply)?;
                out.put_enclave(&e.addr(), Some(e.app()), Some(&e.host()), e.categories()).map_err(|_| NO_ROOM)?;
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
                if matches!(*staging, Some((owner, _)) if owner != portid) {
                    return Err(ProtoError { errno: errno::EBUSY, attr: None, msg: c"another socket has a replace transaction open" }.into());
                }
                let fresh = EnclaveTable::new(self.platform.clone(), self.capacity, services.seed())?;
                let fresh = boxed(&self.platform, fresh).ok_or(TableError::OutOfMemory)?;
                self.set_staging(staging, Some((portid, fresh)));
                Ok(quiet)
            }
            // A partly applied message only affects the unpublished staging table, which the
            // client aborts on any error: no all-or-nothing check up front.
            Request::StagedRegister(additions) => {
                let target = staged(staging)?;
                for item in additions.iter_at() {
                    let (at, spec) = item.map_err(|(at, error)| Refusal { error, at: Some(at) })?;
                    let blame = |error: ProtoError| Refusal { error, at: Some(at) };
                    let (app, host) = app_host(&spec).map_err(blame)?;
                    spec.with_categories(|cs| unsafe { target.register(spec.addr, &app, host, cs) }).map_err(|e| blame(e.into()))?;
                }
                Ok(quiet)
            }
            Request::StagedUnregister(list) => {
                let target = staged(staging)?;
                if let Some((at, _)) = list.iter_at().find(|(_, s)| target.lookup(&s.addr).is_none()) {
                    return Err(Refusal { error: TableError::NotRegistered.into(), at: Some(at) });
                }
                for spec in list.iter() {
                    // A repeated address is already gone.
                    let _ = unsafe { target.unregister(&spec.addr) };
                }
                Ok(quiet)
            }
            Request::StagedAttach { app, categories } | Request::StagedDetach { app, categories } => {
                let target = staged(staging)?;
                let (cats, _) = new_categories(target, &app, &categories, matches!(request, Request::StagedAttach { .. }))?;
                unsafe { target.set_categories(&app, cats.as_slice()) }?;
                Ok(quiet)
            }
            Request::ReplaceCommit => {
                let replacement = staged(staging)?;
                let mut ending = self.new_ending(table.len(), services)?;
                // Sized for every enclave of the old table.
                let _ = table.changed_in(replacement, &mut ending);
                let new = NonNull::from(replacement);
                *staging = None;
                self.staging_owner.store(0, Ordering::Release);
                self.changing();
                let old = self.live.swap(new.as_ptr(), Ordering::AcqRel);
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
                Ok(changed)
            }
            Request::ReplaceAbort => {
                staged(staging)?;
                self.set_staging(staging, None);
                Ok(quiet)
            }
        }
    }

    /// ENCLAVE_SET: registers every nest or, refusing, leaves the table as it was.
    ///
    /// # Safety
    /// As [`Engine::execute`].
    unsafe fn register_batch(&self, services: &mut impl Services, additions: &Additions<'_>) -> Result<(), Refusal> {
        let table = self.live();
        // The check's decoding of each nest, so that registering does not decode it again.
        let mut specs = Scratch::with_capacity(self.platform.clone(), additions.len())?;
        check_batch(table, additions, &mut specs)?;
        let mut ending = self.new_ending(additions.len(), services)?;
        let mut grown = Scratch::<P, Measurement>::with_capacity(self.platform.clone(), additions.len())?;
        // One nest is one table operation, all or nothing by itself: no undo log needed.
        let mut undo = match additions.len() {
            1 => None,
            n => Some(Scratch::<P, Undo>::with_capacity(self.platform.clone(), n)?),
        };
        let mut orphans: Option<Scratch<P, Cats>> = None;
        self.changing();
        for &(at, spec) in specs.as_slice() {
            let Ok((app, host)) = app_host(&spec) else { continue };
            let mut orphan = None;
            // Only an undo log needs the categories of an application the nest empties.
            let keep_orphan = |old: EnclaveRef<'_>| {
                let empties = undo.is_some() && *old.app() != app && table.app(old.app()).is_some_and(|a| a.enclaves() == 1);
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
            let registered = spec.with_categories(|cs| unsafe { table.register_traced(spec.addr, &app, host, cs, keep_orphan) });
            match registered {
                Ok((outcome, counts)) => {
                    let before = match outcome {
                        Registered::New => Before::Absent,
                        Registered::Unchanged => Before::Same,
                        Registered::Replaced { app, host } => {
                            // Sized for the whole list.
                            let _ = ending.insert(spec.addr);
                            Before::Other { app, host, orphan }
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
                    let _ = unsafe { table.register(u.ip, &app, host, cats) };
                }
            }
            if let (Some(n), Some(a)) = (u.app_before, table.app(&u.app)) {
                let prefix = Cats::of(a.categories().get(..n).unwrap_or_default());
                let _ = unsafe { table.set_categories(&u.app, prefix.as_slice()) };
            }
        }
    }

    /// Unregisters everything.
    ///
    /// # Safety
    /// As [`Engine::execute`].
    unsafe fn flush(&self, services: &mut impl Services) -> Result<(), TableError> {
        let table = self.live();
        let mut ending = self.new_ending(table.len(), services)?;
        for e in table.enclaves_from(0) {
            // Sized for every enclave.
            let _ = ending.insert(e.addr());
        }
        self.changing();
        // SAFETY: by the caller.
        unsafe { table.flush() };
        self.changed();
        self.end(services, &ending, &[]);
        Ok(())
    }

    /// The original protocol. Unregistering an unknown address and detaching an absent category
    /// succeed without effect, as the original did; announces only what changed.
    ///
    /// # Safety
    /// As [`Engine::execute`].
    unsafe fn legacy(&self, services: &mut impl Services, op: LegacyOp) -> Result<Handled, Refusal> {
        let table = self.live();
        let mut ending = self.new_ending(1, services)?;
        if let LegacyOp::Flush = op {
            // SAFETY: by the caller.
            unsafe { self.flush(services) }?;
            return Ok(Handled { notify: true, reply_len: 0 });
        }
        let mut app_changed = None;
        self.changing();
        // SAFETY (every writer call): by the caller.
        let outcome = match op {
            LegacyOp::Register { addr, app, host, category } => {
                let enclave = IpAddr::V4(addr);
                let before = table.app(&app).map(|a| a.categories().len());
                let registered = unsafe { table.register(enclave, &app, IpAddr::V4(host), category.as_slice()) };
                if let Ok(Registered::Replaced { .. }) = registered {
                    let _ = ending.insert(enclave);
                }
                if before.is_some_and(|n| Some(n) != table.app(&app).map(|a| a.categories().len())) {
                    app_changed = Some(app);
                }
                registered.map(|_| true)
            }
            LegacyOp::Unregister { addr } => {
                let enclave = IpAddr::V4(addr);
                match unsafe { table.unregister(&enclave) } {
                    Ok(_) => {
                        let _ = ending.insert(enclave);
                        Ok(true)
                    }
                    Err(TableError::NotRegistered) => Ok(false),
                    Err(e) => Err(e),
                }
            }
            LegacyOp::Attach { app, category } => {
                let added = unsafe { table.attach_category(&app, &category) };
                if added == Ok(true) {
                    app_changed = Some(app);
                }
                added
            }
            LegacyOp::Detach { app, category } => match unsafe { table.detach_category(&app, &category) } {
                Ok(()) => {
                    app_changed = Some(app);
                    Ok(true)
                }
                Err(TableError::CategoryNotAttached | TableError::UnknownApp) => Ok(false),
                Err(e) => Err(e),
            },
            LegacyOp::Flush => Ok(false),
        };
        self.changed();
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
        if let Some((_, t)) = staging.take() {
            // SAFETY: never published.
            unsafe { unbox(&self.platform, t) };
        }
        if let Some(live) = NonNull::new(*self.live.get_mut()) {
            // SAFETY: `&mut self`: no reader holds the engine (the kernel glue waits for a grace
            // period before dropping it).
            unsafe { unbox(&self.platform, live) };
        }
    }
}
