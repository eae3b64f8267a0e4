// SPDX-License-Identifier: GPL-2.0-only
//! The enclave table: enclave address → (application, untrusted host), application → categories.
//!
//! Applications are shared by their enclaves and counted by them (the original's model): an
//! application appears with its first enclave and disappears, categories and all, with its last.
//! Enclaves live in one map per address family, in nodes of their families' sizes
//! (`enclave.rs`): 16 bytes for an IPv4 enclave on an IPv4 host.
//! Every entry belongs to one [origin](crate::origin): an application is a measurement within
//! one origin's part of the table ([`AppKey`]), so each origin gives its applications their own
//! categories, and an enclave's origin is its application's, which costs the enclave no memory.
//!
//! Readers ([`EnclaveTable::lookup`], iteration) are lock-free and never wait; they may run on
//! any number of CPUs while one writer changes the table. Lookup is an expected constant number
//! of probes whatever the size, never allocates and never panics. The number of enclaves is
//! bounded by the capacity given at creation; beyond it registration fails with
//! [`TableError::Full`].
//!
//! Writers are `unsafe`: the caller serialises them (the kernel holds a mutex) and provides a
//! [`Platform`] whose `retire` waits for readers (RCU). [`LocalTable`] wraps it safely for
//! single-threaded user space.

mod enclave;
mod map;
mod platform;
mod trailing;

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use enclave::{Addr, AnyNode, EnclaveHead};
use map::{alloc_node, release_node, Keyed, Node, RcuMap};
pub use platform::Platform;
#[cfg(feature = "std")]
pub use platform::StdPlatform;
use trailing::Trailing;

use crate::category::CATEGORY_FIELD_LEN;
use crate::decide::EnclaveMeta;
use crate::origin::{OriginId, OriginSet, MAX_GATEWAYS};
use crate::{Category, Measurement};

/// Most categories one application can carry.
pub const MAX_CATEGORIES_PER_APP: usize = 32;

/// Largest capacity a table accepts (keeps slot arithmetic far from overflow).
pub const MAX_CAPACITY: usize = 1 << 26;

/// Origins a table counts enclaves for: the local one and every gateway.
const ORIGINS: usize = MAX_GATEWAYS + 1;

struct App {
    /// Enclaves referring to this application (writer-only bookkeeping).
    enclaves: AtomicUsize,
    /// The current category set, replaced whole on change; null when empty.
    categories: AtomicPtr<SetHeader>,
}

/// An application: a measurement within one origin's part of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AppKey {
    /// The measurement (MRENCLAVE).
    pub measurement: Measurement,
    /// Whose entries the application's enclaves are.
    pub origin: OriginId,
}

type AppNode = Node<AppKey, App>;

struct SetHeader {
    len: usize,
}

type CategorySet = Trailing<SetHeader, Category>;

/// Why a table operation failed. Nothing was changed when an error is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// The table already holds its capacity of enclaves.
    Full {
        /// The capacity.
        capacity: usize,
    },
    /// Memory could not be allocated.
    OutOfMemory,
    /// The address is not a registered enclave.
    NotRegistered,
    /// No enclave of this application is registered.
    UnknownApp,
    /// The application does not have this category.
    CategoryNotAttached,
    /// The application already has [`MAX_CATEGORIES_PER_APP`] categories.
    TooManyCategories,
    /// [`MAX_GATEWAYS`] remote origins have entries already.
    TooManyOrigins,
    /// The requested capacity is zero or above [`MAX_CAPACITY`].
    BadCapacity,
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::Full { capacity } => write!(f, "enclave table full ({capacity} enclaves)"),
            TableError::OutOfMemory => f.write_str("out of memory"),
            TableError::NotRegistered => f.write_str("address is not a registered enclave"),
            TableError::UnknownApp => f.write_str("no enclave of this application is registered"),
            TableError::CategoryNotAttached => f.write_str("application does not have this category"),
            TableError::TooManyCategories => {
                write!(f, "application already has {MAX_CATEGORIES_PER_APP} categories")
            }
            TableError::TooManyOrigins => write!(f, "{MAX_GATEWAYS} gateways have entries already"),
            TableError::BadCapacity => write!(f, "capacity must be between 1 and {MAX_CAPACITY}"),
        }
    }
}

impl core::error::Error for TableError {}

/// What a registration did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registered {
    /// The address was not registered before.
    New,
    /// The address was registered with the same application and host (categories may have been
    /// added).
    Unchanged,
    /// The address was registered with other metadata, now replaced: flows of the address must
    /// not survive the change.
    Replaced {
        /// The previous application.
        app: Measurement,
        /// The previous host.
        host: IpAddr,
        /// The previous origin.
        origin: OriginId,
    },
}

/// An application's category count around a registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CategoryCounts {
    /// Before it; `None` when the registration created the application.
    pub before: Option<usize>,
    /// After it.
    pub after: usize,
}

/// The metadata an unregistered enclave had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unregistered {
    /// Its application.
    pub app: Measurement,
    /// Its host.
    pub host: IpAddr,
    /// Its origin.
    pub origin: OriginId,
}

/// Counts describing a table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Registered enclaves.
    pub enclaves: usize,
    /// Applications with at least one enclave.
    pub apps: usize,
    /// Most enclaves the table accepts.
    pub capacity: usize,
    /// Slots of the enclave indexes, both families (at most half of them hold entries).
    pub enclave_slots: usize,
    /// Increments on every change; a walk that sees it change may have skipped entries.
    pub generation: u64,
}

/// A registered enclave, as a reader sees it.
#[derive(Clone, Copy)]
pub struct EnclaveRef<'a> {
    /// Valid as long as `app` (the node is released before its application).
    node: AnyNode,
    app: &'a AppNode,
}

impl<'a> EnclaveRef<'a> {
    /// # Safety
    /// `node` is a live node of a table, valid for `'a`.
    #[inline]
    unsafe fn new<A: Addr>(node: NonNull<EnclaveHead<A>>) -> Self {
        // SAFETY: an enclave's application outlives the enclave node (released after it, under
        // the same deferral), so it is valid whenever the node is.
        let app = unsafe { enclave::app(node).as_ref() };
        EnclaveRef { node: A::any(node), app }
    }

    /// The enclave's address.
    pub fn addr(&self) -> IpAddr {
        // SAFETY (both): the node is valid while self is.
        match self.node {
            AnyNode::V4(node) => unsafe { enclave::addr(node) },
            AnyNode::V6(node) => unsafe { enclave::addr(node) },
        }
    }

    /// The enclave's application measurement.
    #[inline]
    pub fn app(&self) -> &'a Measurement {
        &self.app.key.measurement
    }

    /// Whose entry the enclave is.
    pub fn origin(&self) -> OriginId {
        self.app.key.origin
    }

    /// The enclave's application: its measurement within its origin's part.
    pub fn app_key(&self) -> &'a AppKey {
        &self.app.key
    }

    /// The untrusted host the enclave runs on.
    #[inline]
    pub fn host(&self) -> IpAddr {
        // SAFETY (both): the node is valid while self is.
        match self.node {
            AnyNode::V4(node) => unsafe { enclave::host(node) },
            AnyNode::V6(node) => unsafe { enclave::host(node) },
        }
    }

    /// The enclave's application's categories, in the order they were attached.
    pub fn categories(&self) -> &'a [Category] {
        categories_of(&self.app.value)
    }
}

fn categories_of(app: &App) -> &[Category] {
    let Some(set) = NonNull::new(app.categories.load(Ordering::Acquire)) else {
        return &[];
    };
    // SAFETY: a published set stays valid while readers may see it; its header says its length.
    unsafe {
        let set = CategorySet::from_ptr(set);
        set.elems(set.header().len)
    }
}

impl EnclaveMeta for EnclaveRef<'_> {
    fn app(&self) -> &Measurement {
        EnclaveRef::app(self)
    }

    fn host(&self) -> IpAddr {
        EnclaveRef::host(self)
    }

    fn has_category_field(&self, field: &[u8; CATEGORY_FIELD_LEN]) -> bool {
        self.categories().iter().any(|c| c.eq_field(field))
    }
}

impl fmt::Debug for EnclaveRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Enclave")
            .field("addr", &self.addr())
            .field("app", &self.app.key.measurement)
            .field("origin", &self.app.key.origin)
            .field("host", &self.host())
            .field("categories", &self.categories())
            .finish()
    }
}

/// An application, as a reader sees it.
#[derive(Clone, Copy)]
pub struct AppRef<'a> {
    node: &'a AppNode,
}

impl<'a> AppRef<'a> {
    /// The measurement.
    pub fn measurement(&self) -> &'a Measurement {
        &self.node.key.measurement
    }

    /// Whose entries its enclaves are.
    pub fn origin(&self) -> OriginId {
        self.node.key.origin
    }

    /// Its categories, in the order they were attached.
    pub fn categories(&self) -> &'a [Category] {
        categories_of(&self.node.value)
    }

    /// How many enclaves of it are registered.
    pub fn enclaves(&self) -> usize {
        self.node.value.enclaves.load(Ordering::Relaxed)
    }
}

/// The enclave table. See the module documentation for the concurrency contract.
pub struct EnclaveTable<P: Platform> {
    enclaves4: RcuMap<EnclaveHead<Ipv4Addr>>,
    enclaves6: RcuMap<EnclaveHead<Ipv6Addr>>,
    apps: RcuMap<AppNode>,
    /// Enclaves per origin, indexed by [`OriginId::index`] (writer-only bookkeeping).
    origin_counts: Trailing<(), AtomicUsize>,
    capacity: usize,
    generation: AtomicU64,
    platform: P,
}

// SAFETY: readers only load atomics and dereference nodes kept alive by the retire contract;
// writers are serialised by the caller of the unsafe writer methods.
unsafe impl<P: Platform + Sync> Sync for EnclaveTable<P> {}
// SAFETY: the table owns its allocations; moving it moves that ownership.
unsafe impl<P: Platform + Send> Send for EnclaveTable<P> {}

impl<P: Platform> EnclaveTable<P> {
    /// An empty table for at most `capacity` enclaves. `seed` keys the hash (use fresh random
    /// bits). Memory grows with the contents, not the capacity.
    pub fn new(platform: P, capacity: usize, seed: u64) -> Result<Self, TableError> {
        if capacity == 0 || capacity > MAX_CAPACITY {
            return Err(TableError::BadCapacity);
        }
        let enclaves4 = RcuMap::new(&platform, seed).ok_or(TableError::OutOfMemory)?;
        let Some(enclaves6) = RcuMap::new(&platform, seed) else {
            // SAFETY: never published.
            unsafe { enclaves4.free_array(&platform) };
            return Err(TableError::OutOfMemory);
        };
        let Some(apps) = RcuMap::new(&platform, seed.rotate_left(17) ^ 0x5eed) else {
            // SAFETY (both): never published.
            unsafe {
                enclaves4.free_array(&platform);
                enclaves6.free_array(&platform);
            }
            return Err(TableError::OutOfMemory);
        };
        let Some(origin_counts) = Trailing::alloc(&platform, (), ORIGINS, |_| AtomicUsize::new(0)) else {
            // SAFETY (all three): never published.
            unsafe {
                enclaves4.free_array(&platform);
                enclaves6.free_array(&platform);
                apps.free_array(&platform);
            }
            return Err(TableError::OutOfMemory);
        };
        Ok(EnclaveTable { enclaves4, enclaves6, apps, origin_counts, capacity, generation: AtomicU64::new(0), platform })
    }

    fn origin_count(&self, origin: OriginId) -> &AtomicUsize {
        // SAFETY: the counts live as long as the table; every index is below ORIGINS.
        unsafe { self.origin_counts.elem(origin.index()) }
    }

    /// Registered enclaves of `origin`.
    pub fn origin_len(&self, origin: OriginId) -> usize {
        self.origin_count(origin).load(Ordering::Relaxed)
    }

    /// Registered enclaves of the origins in `scope`.
    pub fn scope_len(&self, scope: &OriginSet) -> usize {
        scope.iter().map(|o| self.origin_len(o)).sum()
    }

    /// The metadata of `ip`, if it is a registered enclave. Lock-free, allocation-free, O(1)
    /// expected.
    #[inline(always)]
    pub fn lookup(&self, ip: &IpAddr) -> Option<EnclaveRef<'_>> {
        // SAFETY (both): a published node stays valid while the reader's borrow of the table
        // (its read side) lasts.
        match ip {
            IpAddr::V4(a) => self.enclaves4.get(a).map(|node| unsafe { EnclaveRef::new(node) }),
            IpAddr::V6(a) => self.enclaves6.get(a).map(|node| unsafe { EnclaveRef::new(node) }),
        }
    }

    /// The application with `measurement` in the part of `origin`, if any enclave of it is
    /// registered there.
    pub fn app(&self, origin: OriginId, measurement: &Measurement) -> Option<AppRef<'_>> {
        // SAFETY: a published node stays valid while the reader's borrow of the table lasts.
        self.apps.get(&AppKey { measurement: *measurement, origin }).map(|node| AppRef { node: unsafe { node.as_ref() } })
    }

    /// Registered enclaves.
    pub fn len(&self) -> usize {
        self.enclaves4.len() + self.enclaves6.len()
    }

    /// True when no enclave is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts describing the table.
    pub fn stats(&self) -> TableStats {
        TableStats {
            enclaves: self.len(),
            apps: self.apps.len(),
            capacity: self.capacity,
            enclave_slots: self.enclaves4.slots() + self.enclaves6.slots(),
            generation: self.generation.load(Ordering::Relaxed),
        }
    }

    /// Walks the enclaves from `cursor` (0 to start); each item carries the cursor to resume
    /// after it, for dumps split over several messages.
    pub fn enclaves_from(&self, cursor: usize) -> Enclaves<'_> {
        Enclaves { v4: &self.enclaves4, v6: &self.enclaves6, cursor }
    }

    /// Walks the applications.
    pub fn apps(&self) -> Apps<'_> {
        Apps { map: &self.apps, cursor: 0 }
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Registers `ip` as an enclave of `app` on `host` in the part of `origin`, adding
    /// `categories` to the application there. Re-registering an address replaces its metadata
    /// and its origin (which origin may replace which is the engine's business).
    ///
    /// # Safety
    /// Writers are serialised, and the platform's `retire` waits for concurrent readers.
    pub unsafe fn register(&self, ip: IpAddr, origin: OriginId, app: &Measurement, host: IpAddr, categories: &[Category]) -> Result<Registered, TableError> {
        // SAFETY: forwarded.
        unsafe { self.register_traced(ip, origin, app, host, categories, |_| Ok(())) }.map(|(outcome, _)| outcome)
    }

    /// As [`EnclaveTable::register`], also telling what became of the application's categories.
    /// `before_replacing` sees the address's entry before anything changes, when the
    /// registration is to replace it with other metadata; its error refuses the registration.
    /// Undoing a registration needs both, and asking here spares the caller the lookups.
    ///
    /// # Safety
    /// As [`EnclaveTable::register`].
    pub unsafe fn register_traced(
        &self,
        ip: IpAddr,
        origin: OriginId,
        app: &Measurement,
        host: IpAddr,
        categories: &[Category],
        before_replacing: impl FnOnce(EnclaveRef<'_>) -> Result<(), TableError>,
    ) -> Result<(Registered, CategoryCounts), TableError> {
        // SAFETY (both): forwarded.
        match ip {
            IpAddr::V4(a) => unsafe { self.register_at(a, origin, app, host, categories, before_replacing) },
            IpAddr::V6(a) => unsafe { self.register_at(a, origin, app, host, categories, before_replacing) },
        }
    }

    /// [`EnclaveTable::register_traced`] in the map of `addr`'s family.
    ///
    /// # Safety
    /// As [`EnclaveTable::register`].
    unsafe fn register_at<A: Addr>(
        &self,
        addr: A,
        origin: OriginId,
        app: &Measurement,
        host: IpAddr,
        categories: &[Category],
        before_replacing: impl FnOnce(EnclaveRef<'_>) -> Result<(), TableError>,
    ) -> Result<(Registered, CategoryCounts), TableError> {
        let enclaves = A::map(self);
        let app = &AppKey { measurement: *app, origin };
        let existing = enclaves.get(&addr);
        if let Some(node) = existing {
            // SAFETY: the writer owns published nodes.
            let (old_host, old_app) = unsafe { (enclave::host(node), enclave::app(node)) };
            // SAFETY: as above.
            if old_host == host && unsafe { old_app.as_ref().key == *app } {
                // SAFETY: as above.
                let before = categories_of(unsafe { &old_app.as_ref().value }).len();
                // SAFETY: forwarded.
                unsafe { self.add_categories(old_app, categories)? };
                self.changed();
                // SAFETY: as above.
                let after = categories_of(unsafe { &old_app.as_ref().value }).len();
                return Ok((Registered::Unchanged, CategoryCounts { before: Some(before), after }));
            }
            // SAFETY: as above.
            before_replacing(unsafe { EnclaveRef::new(node) })?;
        } else {
            if self.len() >= self.capacity {
                return Err(TableError::Full { capacity: self.capacity });
            }
            // SAFETY: forwarded.
            unsafe { enclaves.reserve(&self.platform) }.ok_or(TableError::OutOfMemory)?;
        }

        // Allocate everything first, so a failure leaves the table as it was.
        let (app_node, app_is_new) = match self.apps.get(app) {
            Some(node) => (node, false),
            None => {
                // SAFETY: forwarded.
                unsafe { self.apps.reserve(&self.platform) }.ok_or(TableError::OutOfMemory)?;
                let value = App { enclaves: AtomicUsize::new(0), categories: AtomicPtr::new(ptr::null_mut()) };
                (alloc_node(&self.platform, *app, value).ok_or(TableError::OutOfMemory)?, true)
            }
        };
        let undo_app = |table: &Self| {
            if app_is_new {
                // SAFETY: never published.
                unsafe { release_node(&table.platform, app_node, false) };
            }
        };
        // SAFETY: app_node is live (published, or ours).
        let before = categories_of(unsafe { &app_node.as_ref().value }).len();
        // SAFETY: as above.
        let new_set = match unsafe { self.merged_categories(app_node.as_ref(), categories) } {
            Ok(set) => set,
            Err(e) => {
                undo_app(self);
                return Err(e);
            }
        };
        let counts = CategoryCounts { before: (!app_is_new).then_some(before), after: new_set.as_ref().map_or(before, |(_, len)| *len) };
        let Some(enclave) = enclave::alloc(&self.platform, addr, app_node, host) else {
            if let Some((set, len)) = new_set {
                // SAFETY: never published.
                unsafe { set.release(&self.platform, len, false) };
            }
            undo_app(self);
            return Err(TableError::OutOfMemory);
        };

        // Commit: nothing below can fail.
        // SAFETY: app_node is live; serialised writer.
        unsafe {
            if app_is_new {
                self.apps.insert_new(app_node);
            }
            if let Some((set, _)) = new_set {
                self.publish_categories(app_node, set);
            }
            app_node.as_ref().value.enclaves.fetch_add(1, Ordering::Relaxed);
        }
        // A replaced enclave leaves its origin's count in `release_enclave`.
        self.origin_count(origin).fetch_add(1, Ordering::Relaxed);
        let outcome = match existing {
            None => {
                // SAFETY: reserved above; the key is absent.
                unsafe { enclaves.insert_new(enclave) };
                Registered::New
            }
            Some(_) => {
                // SAFETY: the key is present.
                let old = unsafe { enclaves.replace(enclave) };
                match old {
                    // SAFETY: unlinked just now.
                    Some(old) => unsafe { self.release_enclave(old) }.into_replaced(),
                    None => Registered::New,
                }
            }
        };
        self.changed();
        Ok((outcome, counts))
    }

    /// Unregisters `ip`; its application goes too if this was its last enclave.
    ///
    /// # Safety
    /// As [`EnclaveTable::register`].
    pub unsafe fn unregister(&self, ip: &IpAddr) -> Result<Unregistered, TableError> {
        // SAFETY (both): forwarded.
        match ip {
            IpAddr::V4(a) => unsafe { self.unregister_at(a) },
            IpAddr::V6(a) => unsafe { self.unregister_at(a) },
        }
    }

    /// [`EnclaveTable::unregister`] in the map of `addr`'s family.
    ///
    /// # Safety
    /// As [`EnclaveTable::register`].
    unsafe fn unregister_at<A: Addr>(&self, addr: &A) -> Result<Unregistered, TableError> {
        // SAFETY: serialised writer.
        let node = unsafe { A::map(self).remove(addr) }.ok_or(TableError::NotRegistered)?;
        self.changed();
        // SAFETY: unlinked just now.
        Ok(unsafe { self.release_enclave(node) })
    }

    /// Attaches `category` to the application `app` of `origin`. Returns false if it was
    /// already attached.
    ///
    /// # Safety
    /// As [`EnclaveTable::register`].
    pub unsafe fn attach_category(&self, origin: OriginId, app: &Measurement, category: &Category) -> Result<bool, TableError> {
        let node = self.apps.get(&AppKey { measurement: *app, origin }).ok_or(TableError::UnknownApp)?;
        // SAFETY: node is published and owned by the writer.
        let before = categories_of(unsafe { &node.as_ref().value }).len();
        // SAFETY: forwarded.
        unsafe { self.add_categories(node, core::slice::from_ref(category))? };
        // SAFETY: as above.
        let added = categories_of(unsafe { &node.as_ref().value }).len() != before;
        if added {
            self.changed();
        }
        Ok(added)
    }

    /// Detaches `category` from the application `app` of `origin`.
    ///
    /// # Safety
    /// As [`EnclaveTable::register`].
    pub unsafe fn detach_category(&self, origin: OriginId, app: &Measurement, category: &Category) -> Result<(), TableError> {
        let node = self.apps.get(&AppKey { measurement: *app, origin }).ok_or(TableError::UnknownApp)?;
        // SAFETY: node is published and owned by the writer.
        let current = categories_of(unsafe { &node.as_ref().value });
        if !current.contains(category) {
            return Err(TableError::CategoryNotAttached);
        }
        let remaining = current.len() - 1;
        let set = if remaining == 0 {
            None
        } else {
            let mut kept = current.iter().filter(|c| *c != category);
            let fill = |_| kept.next().copied().unwrap_or(*category);
            Some(CategorySet::alloc(&self.platform, SetHeader { len: remaining }, remaining, fill).ok_or(TableError::OutOfMemory)?)
        };
        // SAFETY: serialised writer; node live; the set is unpublished.
        unsafe { self.replace_categories(node, set) };
        Ok(())
    }

    /// Makes `categories` (distinct, at most [`MAX_CATEGORIES_PER_APP`]) the whole category set
    /// of the application `app` of `origin`, in one step: on an error nothing changed.
    ///
    /// # Safety
    /// As [`EnclaveTable::register`].
    pub unsafe fn set_categories(&self, origin: OriginId, app: &Measurement, categories: &[Category]) -> Result<(), TableError> {
        let node = self.apps.get(&AppKey { measurement: *app, origin }).ok_or(TableError::UnknownApp)?;
        if categories.len() > MAX_CATEGORIES_PER_APP {
            return Err(TableError::TooManyCategories);
        }
        // SAFETY: node is published and owned by the writer.
        if categories_of(unsafe { &node.as_ref().value }) == categories {
            return Ok(());
        }
        let set = match categories.first() {
            None => None,
            Some(&first) => Some(
                CategorySet::alloc(&self.platform, SetHeader { len: categories.len() }, categories.len(), |i| categories.get(i).copied().unwrap_or(first))
                    .ok_or(TableError::OutOfMemory)?,
            ),
        };
        // SAFETY: serialised writer; node live; the set is unpublished.
        unsafe { self.replace_categories(node, set) };
        Ok(())
    }

    /// Unregisters every enclave (and so every application), whatever its origin. Never fails.
    ///
    /// # Safety
    /// As [`EnclaveTable::register`].
    pub unsafe fn flush(&self) {
        // SAFETY: serialised writer; everything unlinked is retired, the old arrays too.
        unsafe {
            self.unlink_all(true);
            self.enclaves4.shrink_if_empty(&self.platform);
            self.enclaves6.shrink_if_empty(&self.platform);
            self.apps.shrink_if_empty(&self.platform);
        }
        self.changed();
    }

    /// Unregisters every enclave of `origin`, handing each address to `removed`. Never fails;
    /// costs a walk of the whole table unless `origin` holds all of it.
    ///
    /// # Safety
    /// As [`EnclaveTable::register`].
    pub unsafe fn unregister_origin(&self, origin: OriginId, mut removed: impl FnMut(IpAddr)) {
        if self.origin_len(origin) == 0 {
            return;
        }
        if self.origin_len(origin) == self.len() {
            self.enclaves_from(0).for_each(|e| removed(e.addr()));
            // SAFETY: forwarded.
            unsafe { self.flush() };
            return;
        }
        for e in self.enclaves_from(0) {
            if e.origin() == origin {
                let ip = e.addr();
                // Removing leaves a tombstone in the slot the walk just passed: the walk goes on.
                // SAFETY: forwarded.
                let _ = unsafe { self.unregister(&ip) };
                removed(ip);
            }
        }
    }

    /// Moves every entry of `part`, whose origins are all in `scope`, into this table, where it
    /// replaces the part of each origin of `scope`: an address of `part` takes the place of
    /// whatever this table has there, and every other entry of `scope`'s origins goes.
    /// Applications and their categories move whole, so nothing is allocated per entry; `part`
    /// is left empty. Either every entry moves or, refused, nothing changes: [`TableError::Full`]
    /// when the result would exceed the capacity, [`TableError::OutOfMemory`] when the indexes
    /// cannot grow. Packets see each address change at once, one address after another.
    ///
    /// # Safety
    /// As [`EnclaveTable::register`]; `part` is unpublished and was made with a platform that
    /// frees what this table's frees (a clone of it).
    pub unsafe fn adopt(&self, part: &EnclaveTable<P>, scope: &OriginSet) -> Result<(), TableError> {
        // Arriving at addresses this table does not hold, IPv4 and IPv6.
        let (mut arriving4, mut arriving6) = (0, 0);
        for e in part.enclaves_from(0) {
            match e.addr() {
                ip if self.lookup(&ip).is_some() => {}
                IpAddr::V4(_) => arriving4 += 1,
                IpAddr::V6(_) => arriving6 += 1,
            }
        }
        let leaving = self.enclaves_from(0).filter(|e| scope.contains(e.origin()) && part.lookup(&e.addr()).is_none()).count();
        if self.len() + arriving4 + arriving6 - leaving > self.capacity {
            return Err(TableError::Full { capacity: self.capacity });
        }
        // SAFETY (all three): forwarded. Growing an index changes no entry.
        unsafe {
            self.enclaves4.reserve_many(&self.platform, arriving4).ok_or(TableError::OutOfMemory)?;
            self.enclaves6.reserve_many(&self.platform, arriving6).ok_or(TableError::OutOfMemory)?;
            self.apps.reserve_many(&self.platform, part.apps.len()).ok_or(TableError::OutOfMemory)?;
        }
        // Commit: nothing below can fail. The leaving entries go first, while `part` still
        // says which stay.
        for e in self.enclaves_from(0) {
            let ip = e.addr();
            if scope.contains(e.origin()) && part.lookup(&ip).is_none() {
                // SAFETY: forwarded.
                let _ = unsafe { self.unregister(&ip) };
            }
        }
        // SAFETY: serialised writer; `part`'s applications are linked after the applications of
        // the scope's old entries, whose keys they may share, went with their last enclave.
        unsafe {
            self.take_enclaves::<Ipv4Addr>(part);
            self.take_enclaves::<Ipv6Addr>(part);
            part.apps.clear(|node| self.apps.insert_new(node));
        }
        part.reset_origin_counts();
        self.changed();
        Ok(())
    }

    /// Moves the enclaves of `part` in `A`'s family into this table, replacing those of their
    /// addresses; room is reserved.
    ///
    /// # Safety
    /// As in [`EnclaveTable::adopt`], which reserved the room.
    unsafe fn take_enclaves<A: Addr>(&self, part: &EnclaveTable<P>) {
        let enclaves = A::map(self);
        // SAFETY: serialised writer; every node of `part` is unlinked from it and linked here
        // once.
        unsafe {
            A::map(part).clear(|node| {
                let origin = enclave::app(node).as_ref().key.origin;
                self.origin_count(origin).fetch_add(1, Ordering::Relaxed);
                match enclaves.get(node.as_ref().key()) {
                    None => enclaves.insert_new(node),
                    Some(_) => {
                        if let Some(old) = enclaves.replace(node) {
                            self.release_enclave(old);
                        }
                    }
                }
            });
        }
    }

    fn reset_origin_counts(&self) {
        for i in 0..ORIGINS {
            // SAFETY: the counts live as long as the table; i < ORIGINS.
            unsafe { self.origin_counts.elem(i) }.store(0, Ordering::Relaxed);
        }
    }

    /// Unlinks and releases every enclave and application (`deferred`: after readers are done).
    ///
    /// # Safety
    /// Writers are serialised; without `deferred`, no reader can hold the table.
    unsafe fn unlink_all(&self, deferred: bool) {
        let platform = &self.platform;
        // SAFETY: each node is unlinked before it is released; applications after enclaves.
        unsafe {
            self.enclaves4.clear(|node| enclave::release(platform, node, deferred));
            self.enclaves6.clear(|node| enclave::release(platform, node, deferred));
            self.apps.clear(|node| {
                release_categories(platform, node.as_ref().value.categories.load(Ordering::Relaxed), deferred);
                release_node(platform, node, deferred);
            });
        }
        self.reset_origin_counts();
    }

    /// Releases an unlinked enclave node and drops its reference on the application.
    ///
    /// # Safety
    /// Writers are serialised; `node` was unlinked from this table and is released only here.
    unsafe fn release_enclave<A>(&self, node: NonNull<EnclaveHead<A>>) -> Unregistered {
        // SAFETY: the node is unlinked but still ours until retired.
        let (host, app_node) = unsafe { (enclave::host(node), enclave::app(node)) };
        // SAFETY: the application outlives its enclaves.
        let app = unsafe { app_node.as_ref() };
        let key = app.key;
        // SAFETY: unlinked; readers may hold it, so it is retired.
        unsafe { enclave::release(&self.platform, node, true) };
        self.origin_count(key.origin).fetch_sub(1, Ordering::Relaxed);
        if app.value.enclaves.fetch_sub(1, Ordering::Relaxed) == 1 {
            // SAFETY: serialised writer; last reference gone.
            unsafe {
                self.apps.remove(&key);
                release_categories(&self.platform, app.value.categories.load(Ordering::Relaxed), true);
                release_node(&self.platform, app_node, true);
            }
        }
        Unregistered { app: key.measurement, host, origin: key.origin }
    }

    /// The application's categories plus `extra` as a new unpublished set, or `None` when
    /// nothing would change.
    fn merged_categories(&self, app: &AppNode, extra: &[Category]) -> Result<Option<(CategorySet, usize)>, TableError> {
        let current = categories_of(&app.value);
        // The common case (re-stating categories the application has) builds nothing.
        let Some(&first) = extra.iter().find(|c| !current.contains(c)) else {
            return Ok(None);
        };
        let mut merged = [first; MAX_CATEGORIES_PER_APP];
        let mut len = 0;
        for category in current.iter().chain(extra) {
            if merged.get(..len).is_some_and(|seen| seen.contains(category)) {
                continue;
            }
            *merged.get_mut(len).ok_or(TableError::TooManyCategories)? = *category;
            len += 1;
        }
        let set = CategorySet::alloc(&self.platform, SetHeader { len }, len, |i| merged.get(i).copied().unwrap_or(first))
            .ok_or(TableError::OutOfMemory)?;
        Ok(Some((set, len)))
    }

    /// Adds `extra` to the application's categories, publishing a new set if it changes.
    ///
    /// # Safety
    /// Writers are serialised; `app` is a live application node of this table.
    unsafe fn add_categories(&self, app: NonNull<AppNode>, extra: &[Category]) -> Result<(), TableError> {
        // SAFETY: app is live.
        if let Some((set, _)) = self.merged_categories(unsafe { app.as_ref() }, extra)? {
            // SAFETY: serialised writer.
            unsafe { self.publish_categories(app, set) };
        }
        Ok(())
    }

    /// Swaps in `set` as the application's categories and retires the old set.
    ///
    /// # Safety
    /// Writers are serialised; `app` is a live application node of this table; `set` is
    /// unpublished.
    unsafe fn publish_categories(&self, app: NonNull<AppNode>, set: CategorySet) {
        // SAFETY: app is live.
        let old = unsafe { app.as_ref() }.value.categories.swap(set.as_ptr(), Ordering::AcqRel);
        // SAFETY: unlinked just now.
        unsafe { release_categories(&self.platform, old, true) };
    }

    /// Makes `set` (None: no category) the application's category set and records the change.
    ///
    /// # Safety
    /// As [`EnclaveTable::publish_categories`].
    unsafe fn replace_categories(&self, app: NonNull<AppNode>, set: Option<CategorySet>) {
        // SAFETY: as the caller's.
        unsafe {
            match set {
                Some(set) => self.publish_categories(app, set),
                None => self.clear_categories(app),
            }
        }
        self.changed();
    }

    /// Removes the application's last category, retiring the set.
    ///
    /// # Safety
    /// Writers are serialised; `app` is a live application node of this table.
    unsafe fn clear_categories(&self, app: NonNull<AppNode>) {
        // SAFETY: app is live.
        let old = unsafe { app.as_ref() }.value.categories.swap(ptr::null_mut(), Ordering::AcqRel);
        // SAFETY: unlinked just now.
        unsafe { release_categories(&self.platform, old, true) };
    }
}

/// Releases a category set (null: none), after readers are done when `deferred`.
///
/// # Safety
/// `set` is unlinked and was made by `CategorySet::alloc`; without `deferred`, no reader holds it.
unsafe fn release_categories<P: Platform>(platform: &P, set: *mut SetHeader, deferred: bool) {
    if let Some(set) = NonNull::new(set) {
        // SAFETY: a set made by CategorySet::alloc; its header holds the length it was made with.
        unsafe {
            let set = CategorySet::from_ptr(set);
            let len = set.header().len;
            set.release(platform, len, deferred);
        }
    }
}

impl Unregistered {
    fn into_replaced(self) -> Registered {
        Registered::Replaced { app: self.app, host: self.host, origin: self.origin }
    }
}

impl<P: Platform> Drop for EnclaveTable<P> {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no reader holds the table (the kernel glue waits for a grace period
        // before dropping it).
        unsafe {
            self.unlink_all(false);
            self.enclaves4.free_array(&self.platform);
            self.enclaves6.free_array(&self.platform);
            self.apps.free_array(&self.platform);
            self.origin_counts.release(&self.platform, ORIGINS, false);
        }
    }
}

/// Iterator over enclaves, IPv4 then IPv6; see [`EnclaveTable::enclaves_from`].
pub struct Enclaves<'a> {
    v4: &'a RcuMap<EnclaveHead<Ipv4Addr>>,
    v6: &'a RcuMap<EnclaveHead<Ipv6Addr>>,
    /// A slot index, with [`V6_CURSOR`] set once the walk is in the IPv6 map.
    cursor: usize,
}

/// The cursor bit of the IPv6 part of a walk (slot indexes stay far below it).
const V6_CURSOR: usize = 1 << (usize::BITS - 1);

impl<'a> Enclaves<'a> {
    /// Where to resume after the items returned so far.
    pub fn cursor(&self) -> usize {
        self.cursor
    }
}

impl<'a> Iterator for Enclaves<'a> {
    type Item = EnclaveRef<'a>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.cursor & V6_CURSOR == 0 {
            if let Some((node, next)) = self.v4.next_from(self.cursor) {
                self.cursor = next;
                // SAFETY: published nodes stay valid while the walk's borrow lasts.
                return Some(unsafe { EnclaveRef::new(node) });
            }
            self.cursor = V6_CURSOR;
        }
        let (node, next) = self.v6.next_from(self.cursor & !V6_CURSOR)?;
        self.cursor = next | V6_CURSOR;
        // SAFETY: as above.
        Some(unsafe { EnclaveRef::new(node) })
    }
}

/// Iterator over applications; see [`EnclaveTable::apps`].
pub struct Apps<'a> {
    map: &'a RcuMap<AppNode>,
    cursor: usize,
}

impl<'a> Iterator for Apps<'a> {
    type Item = AppRef<'a>;
    fn next(&mut self) -> Option<Self::Item> {
        let (node, next) = self.map.next_from(self.cursor)?;
        self.cursor = next;
        // SAFETY: published nodes stay valid while the walk's borrow lasts.
        Some(AppRef { node: unsafe { node.as_ref() } })
    }
}

/// A table owned by one thread of user space (the simulator, tests): safe writers taking
/// `&mut self`, which rules out concurrent readers.
#[cfg(feature = "std")]
pub struct LocalTable {
    inner: crate::engine::Engine<StdPlatform>,
    ended: std::vec::Vec<IpAddr>,
}

/// The engine's services in a single-threaded user-space table: no readers to wait for, and the
/// addresses whose connections end collected for the caller (seng-sim forgets their flows).
#[cfg(feature = "std")]
struct Collect {
    seed: u64,
    ended: std::vec::Vec<IpAddr>,
}

#[cfg(feature = "std")]
impl crate::engine::Services for Collect {
    fn seed(&mut self) -> u64 {
        self.seed
    }

    fn grace_period(&mut self) {}

    fn end_connections<P: Platform>(&mut self, ending: &crate::engine::Ending<'_, P>) {
        ending.for_each(|ip| self.ended.push(ip));
    }
}

#[cfg(feature = "std")]
impl LocalTable {
    /// An empty table for at most `capacity` enclaves.
    pub fn new(capacity: usize) -> Result<LocalTable, TableError> {
        let seed = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(capacity);
            h.finish()
        };
        Ok(LocalTable { inner: crate::engine::Engine::new(StdPlatform, capacity, seed)?, ended: std::vec::Vec::new() })
    }

    /// The shared view (lookups, iteration, stats).
    pub fn table(&self) -> &EnclaveTable<StdPlatform> {
        self.inner.live()
    }

    /// The origin `id` stands for, by name.
    pub fn origin(&self, id: OriginId) -> crate::origin::Origin {
        self.inner.origins().origin(id)
    }

    /// The id `origin` goes by, if it has one (the local origin always has, a gateway while it
    /// has entries).
    pub fn origin_id(&self, origin: &crate::origin::Origin) -> Option<OriginId> {
        self.inner.origins().find(origin)
    }

    /// Executes a request through the engine, as the kernel module does; [`LocalTable::ended_connections`]
    /// then lists the addresses whose connections it ended.
    pub fn execute(&mut self, request: crate::genl::Scoped<'_>) -> Result<crate::engine::Handled, crate::engine::Refusal> {
        let mut services = Collect { seed: self.inner.generation() ^ 0x5eed_5eed, ended: core::mem::take(&mut self.ended) };
        services.ended.clear();
        // SAFETY: &mut self serialises writers and excludes readers; StdPlatform frees at once,
        // which no reader can observe.
        let result = unsafe { self.inner.execute(&mut services, request, 0, None) };
        self.ended = services.ended;
        result
    }

    /// The addresses whose connections the last [`LocalTable::execute`] ended.
    pub fn ended_connections(&self) -> &[IpAddr] {
        &self.ended
    }

    /// See [`EnclaveTable::register`]; in the local origin's part, as are the other direct
    /// changes below (requests through [`LocalTable::execute`] name any origin).
    pub fn register(&mut self, ip: IpAddr, app: &Measurement, host: IpAddr, categories: &[Category]) -> Result<Registered, TableError> {
        // SAFETY: &mut self serialises writers and excludes readers.
        unsafe { self.inner.live().register(ip, OriginId::LOCAL, app, host, categories) }
    }

    /// See [`EnclaveTable::unregister`].
    pub fn unregister(&mut self, ip: &IpAddr) -> Result<Unregistered, TableError> {
        // SAFETY: as in register.
        unsafe { self.inner.live().unregister(ip) }
    }

    /// See [`EnclaveTable::attach_category`].
    pub fn attach_category(&mut self, app: &Measurement, category: &Category) -> Result<bool, TableError> {
        // SAFETY: as in register.
        unsafe { self.inner.live().attach_category(OriginId::LOCAL, app, category) }
    }

    /// See [`EnclaveTable::detach_category`].
    pub fn detach_category(&mut self, app: &Measurement, category: &Category) -> Result<(), TableError> {
        // SAFETY: as in register.
        unsafe { self.inner.live().detach_category(OriginId::LOCAL, app, category) }
    }

    /// See [`EnclaveTable::flush`].
    pub fn flush(&mut self) {
        // SAFETY: as in register.
        unsafe { self.inner.live().flush() }
    }
}

#[cfg(feature = "std")]
impl core::ops::Deref for LocalTable {
    type Target = EnclaveTable<StdPlatform>;
    fn deref(&self) -> &Self::Target {
        self.inner.live()
    }
}

/// A fixed-size set of addresses: the enclaves whose connections end after a change. Sized
/// when created, so inserting never allocates and never fails, and the set cannot be left
/// incomplete by a late allocation failure.
pub struct AddrSet<P: Platform> {
    slots: Trailing<SetSlotsHeader, Option<IpAddr>>,
    seed: u64,
    platform: P,
}

struct SetSlotsHeader {
    mask: usize,
    len: usize,
}

/// The set already holds the number of addresses it was sized for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetFull;

impl<P: Platform> AddrSet<P> {
    /// An empty set with room for `capacity` addresses.
    pub fn with_capacity(platform: P, capacity: usize, seed: u64) -> Result<Self, TableError> {
        let slots = capacity.checked_mul(2).and_then(usize::checked_next_power_of_two).ok_or(TableError::OutOfMemory)?.max(4);
        let header = SetSlotsHeader { mask: slots - 1, len: 0 };
        let slots = Trailing::alloc(&platform, header, slots, |_| None).ok_or(TableError::OutOfMemory)?;
        Ok(AddrSet { slots, seed, platform })
    }

    fn header(&self) -> &SetSlotsHeader {
        // SAFETY: the allocation lives as long as self.
        unsafe { self.slots.header() }
    }

    fn probe(&self, ip: &IpAddr) -> (usize, bool) {
        let mask = self.header().mask;
        let mut index = crate::hash::TableKey::hash(ip, self.seed) as usize;
        for _ in 0..=mask {
            index &= mask;
            // SAFETY: index <= mask.
            match unsafe { self.slots.elem(index) } {
                None => return (index, false),
                Some(a) if a == ip => return (index, true),
                Some(_) => index = index.wrapping_add(1),
            }
        }
        (index & mask, false)
    }

    /// Adds `ip`.
    pub fn insert(&mut self, ip: IpAddr) -> Result<(), SetFull> {
        let (index, present) = self.probe(&ip);
        if present {
            return Ok(());
        }
        let SetSlotsHeader { mask, len } = *self.header();
        // At most half full keeps probes short and guarantees a free slot.
        if 2 * (len + 1) > mask + 1 {
            return Err(SetFull);
        }
        // SAFETY: `&mut self` owns the allocation; index <= mask; the header is ours too.
        unsafe {
            self.slots.elem_ptr(index).write(Some(ip));
            let header = self.slots.as_ptr();
            (*header).len = len + 1;
        }
        Ok(())
    }

    /// Calls `f` with every address in the set.
    pub fn for_each(&self, mut f: impl FnMut(IpAddr)) {
        for index in 0..=self.header().mask {
            // SAFETY: index <= mask.
            if let Some(ip) = unsafe { self.slots.elem(index) } {
                f(*ip);
            }
        }
    }

    /// Whether `ip` is in the set.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.probe(ip).1
    }

    /// Number of addresses.
    pub fn len(&self) -> usize {
        self.header().len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<P: Platform> Drop for AddrSet<P> {
    fn drop(&mut self) {
        let slots = self.header().mask + 1;
        // SAFETY: never shared with lock-free readers.
        unsafe { self.slots.release(&self.platform, slots, false) };
    }
}

impl<P: Platform> EnclaveTable<P> {
    /// Calls `ending` with every enclave of this table that `replacement` of the parts of
    /// `scope`'s origins drops or gives another application, host, set of categories or origin:
    /// the connections that must not survive putting `replacement` in their place (swapping it
    /// in, or [`EnclaveTable::adopt`]). A first call that counts them sizes the set a second
    /// call fills, so that re-stating a table allocates next to nothing.
    pub fn changed_in<Q: Platform>(&self, replacement: &EnclaveTable<Q>, scope: &OriginSet, mut ending: impl FnMut(IpAddr)) {
        for old in self.enclaves_from(0) {
            let new = replacement.lookup(&old.addr());
            if new.is_none() && !scope.contains(old.origin()) {
                // Outside the replaced parts, and not taken over: kept.
                continue;
            }
            let same = new
                .is_some_and(|new| {
                    let (a, b) = (new.categories(), old.categories());
                    new.app_key() == old.app_key() && new.host() == old.host() && a.len() == b.len() && a.iter().all(|c| b.contains(c))
                });
            if !same {
                ending(old.addr());
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// An origin lives in the application's key, which stays within its kmalloc-64 object; the
    /// enclave nodes have no room for one (their sizes: [`enclave`]'s test).
    #[test]
    fn origins_cost_an_enclave_no_memory() {
        assert!(core::mem::size_of::<AppNode>() <= 64, "{}", core::mem::size_of::<AppNode>());
    }
}
