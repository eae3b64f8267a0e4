// SPDX-License-Identifier: GPL-2.0-only
//! Origins: whose entry an enclave is. Several gateways share one view of their enclaves (issue
//! 16): each publishes the enclaves its own SENG server registered, and applies the others'
//! entries to its table. So every entry has one origin:
//!
//! - the *local* origin: what the local SENG server registered, and whatever a request that
//!   names no origin does (the original protocol, and every client older than origins);
//! - a *remote* origin: another gateway, named by its [`GatewayName`].
//!
//! The rules, kept by the request engine:
//!
//! - A request changes one origin's part of the table: unregistering, flushing, attaching and
//!   detaching categories never touch another origin's entries, so the local SENG server's
//!   `flush_module` leaves remote entries alone, and flushing a gateway's part leaves the local
//!   ones.
//! - An application's categories are those its own origin gives it: two origins registering
//!   the same measurement have two applications, each with its own categories.
//! - A remote entry never replaces an entry of another origin: the registration is refused. A
//!   local registration replaces a remote entry of the same address (the local SENG server
//!   knows best where its own enclaves are) and, as any replacement does, ends its
//!   connections.
//!
//! The table does not keep a name per entry: the engine interns each gateway's name once in
//! [`OriginNames`] and entries carry its small [`OriginId`] in their application's key, so an
//! enclave costs no more memory than before origins existed, and the packet path never looks at
//! it.

use core::alloc::Layout;
use core::fmt;
use core::ptr::NonNull;
use core::str::FromStr;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::table::{Platform, TableError};

/// Longest gateway name, in bytes.
pub const GATEWAY_NAME_MAX_LEN: usize = 32;

/// Most remote origins one table holds at a time (an [`OriginId`] is a byte, 0 is local).
pub const MAX_GATEWAYS: usize = 255;

/// The name the local origin goes by in scripts and on the command line; no gateway may take it.
pub const LOCAL_NAME: &str = "local";

/// A remote gateway's name: 1 to 32 bytes of ASCII letters, digits, `.`, `-` and `_`, starting
/// with a letter or a digit, and not `local`. Such a name is one word in a script and on a
/// command line, never looks like an option, and is a valid etcd key segment.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GatewayName {
    /// Zero-padded, so equality and order are those of the names.
    bytes: [u8; GATEWAY_NAME_MAX_LEN],
}

/// Why bytes are not a gateway name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatewayNameError {
    /// The name is empty.
    Empty,
    /// Longer than [`GATEWAY_NAME_MAX_LEN`]; holds the length found.
    TooLong(usize),
    /// A byte other than a letter, digit, `.`, `-` or `_` (or a first byte that is not a letter
    /// or digit), at this 0-based position.
    BadByte(usize),
    /// `local`, the local origin's name.
    Reserved,
}

impl fmt::Display for GatewayNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayNameError::Empty => f.write_str("gateway name is empty"),
            GatewayNameError::TooLong(n) => write!(f, "gateway name is {n} bytes, at most {GATEWAY_NAME_MAX_LEN} are allowed"),
            GatewayNameError::BadByte(0) => f.write_str("gateway name must start with an ASCII letter or digit"),
            GatewayNameError::BadByte(at) => {
                write!(f, "gateway name has a byte other than an ASCII letter, digit, '.', '-' or '_' at byte {}", at + 1)
            }
            GatewayNameError::Reserved => write!(f, "\"{LOCAL_NAME}\" names the local origin, not a gateway"),
        }
    }
}

impl core::error::Error for GatewayNameError {}

impl GatewayName {
    /// A gateway name from its bytes.
    pub fn new(name: &[u8]) -> Result<GatewayName, GatewayNameError> {
        if name.is_empty() {
            return Err(GatewayNameError::Empty);
        }
        if name.len() > GATEWAY_NAME_MAX_LEN {
            return Err(GatewayNameError::TooLong(name.len()));
        }
        let allowed = |(at, b): (usize, &u8)| b.is_ascii_alphanumeric() || (at > 0 && matches!(b, b'.' | b'-' | b'_'));
        if let Some(at) = name.iter().enumerate().position(|byte| !allowed(byte)) {
            return Err(GatewayNameError::BadByte(at));
        }
        if name == LOCAL_NAME.as_bytes() {
            return Err(GatewayNameError::Reserved);
        }
        let mut bytes = [0u8; GATEWAY_NAME_MAX_LEN];
        for (dst, src) in bytes.iter_mut().zip(name) {
            *dst = *src;
        }
        Ok(GatewayName { bytes })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.iter().position(|&b| b == 0).unwrap_or(GATEWAY_NAME_MAX_LEN)
    }

    /// Always false: a name has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len()).unwrap_or_default()
    }

    /// The name (ASCII, so always valid UTF-8).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl fmt::Display for GatewayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for GatewayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl FromStr for GatewayName {
    type Err = GatewayNameError;

    fn from_str(s: &str) -> Result<GatewayName, GatewayNameError> {
        GatewayName::new(s.as_bytes())
    }
}

/// Whose entry an enclave is: the local SENG server's, or a remote gateway's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    /// The local SENG server (and every request that names no origin).
    #[default]
    Local,
    /// The gateway of this name.
    Gateway(GatewayName),
}

impl Origin {
    /// The gateway's name; `None` for the local origin.
    pub fn gateway(&self) -> Option<&GatewayName> {
        match self {
            Origin::Local => None,
            Origin::Gateway(name) => Some(name),
        }
    }

    /// True for the local origin.
    pub fn is_local(&self) -> bool {
        *self == Origin::Local
    }
}

impl From<GatewayName> for Origin {
    fn from(name: GatewayName) -> Origin {
        Origin::Gateway(name)
    }
}

impl From<Option<GatewayName>> for Origin {
    fn from(name: Option<GatewayName>) -> Origin {
        name.map_or(Origin::Local, Origin::Gateway)
    }
}

impl fmt::Display for Origin {
    /// `local`, or the gateway's name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Local => f.write_str(LOCAL_NAME),
            Origin::Gateway(name) => name.fmt(f),
        }
    }
}

impl FromStr for Origin {
    type Err = GatewayNameError;

    /// `local`, or a gateway's name.
    fn from_str(s: &str) -> Result<Origin, GatewayNameError> {
        match s {
            LOCAL_NAME => Ok(Origin::Local),
            name => name.parse().map(Origin::Gateway),
        }
    }
}

/// The small number an origin goes by inside one table's engine: 0 is the local origin, 1 to
/// [`MAX_GATEWAYS`] the gateways [`OriginNames`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OriginId(u8);

impl OriginId {
    /// The local origin.
    pub const LOCAL: OriginId = OriginId(0);

    /// True for the local origin.
    pub fn is_local(self) -> bool {
        self == OriginId::LOCAL
    }

    /// The number, 0 to [`MAX_GATEWAYS`].
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// The id of gateway slot `slot` (0-based).
    fn of_slot(slot: usize) -> Option<OriginId> {
        u8::try_from(slot + 1).ok().map(OriginId)
    }
}

/// A set of origins (the parts a replace transaction replaces).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OriginSet {
    bits: [u64; 4],
}

impl OriginSet {
    /// The set holding only `id`.
    pub fn of(id: OriginId) -> OriginSet {
        let mut set = OriginSet::default();
        set.insert(id);
        set
    }

    /// Adds `id`.
    pub fn insert(&mut self, id: OriginId) {
        if let Some(word) = self.bits.get_mut(id.index() / 64) {
            *word |= 1 << (id.index() % 64);
        }
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: OriginId) -> bool {
        self.bits.get(id.index() / 64).is_some_and(|word| word & 1 << (id.index() % 64) != 0)
    }

    /// The origins in the set, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = OriginId> + '_ {
        (0..=MAX_GATEWAYS).filter_map(|i| u8::try_from(i).ok().map(OriginId)).filter(|id| self.contains(*id))
    }
}

/// Gateway slots, one pointer each: null when free.
type Slots = [AtomicPtr<GatewayName>; MAX_GATEWAYS];

/// The names of one engine's remote origins, each interned once: entries carry the
/// [`OriginId`], dumps turn it back into the name. Readers ([`OriginNames::name`]) are lock-free
/// and see a name for as long as their read-side section lasts (names are retired through the
/// platform); writers are serialised by the caller, as the table's are.
pub struct OriginNames<P: Platform> {
    slots: NonNull<Slots>,
    platform: P,
}

// SAFETY: readers only load the slots' atomics and read names kept alive by the retire contract;
// writers are serialised by the caller of the unsafe writer methods.
unsafe impl<P: Platform + Sync> Sync for OriginNames<P> {}
// SAFETY: the names are owned by the table of names.
unsafe impl<P: Platform + Send> Send for OriginNames<P> {}

impl<P: Platform> OriginNames<P> {
    /// An empty set of names; `None` when memory is short.
    pub fn new(platform: P) -> Option<OriginNames<P>> {
        let slots = platform.alloc(Layout::new::<Slots>())?.cast::<Slots>();
        // SAFETY: fresh allocation for `Slots`; each slot is written before use.
        unsafe {
            let first = slots.as_ptr().cast::<AtomicPtr<GatewayName>>();
            for i in 0..MAX_GATEWAYS {
                first.add(i).write(AtomicPtr::new(core::ptr::null_mut()));
            }
        }
        Some(OriginNames { slots, platform })
    }

    fn slots(&self) -> &Slots {
        // SAFETY: allocated and initialised in `new`, freed only in `drop`.
        unsafe { self.slots.as_ref() }
    }

    fn slot(&self, id: OriginId) -> Option<&AtomicPtr<GatewayName>> {
        id.index().checked_sub(1).and_then(|slot| self.slots().get(slot))
    }

    /// The gateway `id` stands for; `None` for the local origin and for a free id. Lock-free: the
    /// name stays valid while the caller's read-side section lasts.
    pub fn name(&self, id: OriginId) -> Option<&GatewayName> {
        let name = self.slot(id)?.load(Ordering::Acquire);
        // SAFETY: a published name stays valid while readers may see it.
        NonNull::new(name).map(|name| unsafe { &*name.as_ptr() })
    }

    /// The origin as a reader names it: [`Origin::Local`] for a free id too.
    pub fn origin(&self, id: OriginId) -> Origin {
        self.name(id).copied().map_or(Origin::Local, Origin::Gateway)
    }

    /// The id of `origin`, if it has one (the local origin always has).
    pub fn find(&self, origin: &Origin) -> Option<OriginId> {
        let Origin::Gateway(name) = origin else { return Some(OriginId::LOCAL) };
        let at = self.slots().iter().position(|slot| {
            // SAFETY: a published name stays valid while it is published.
            NonNull::new(slot.load(Ordering::Acquire)).is_some_and(|n| unsafe { n.as_ref() } == name)
        })?;
        OriginId::of_slot(at)
    }

    /// The id of `origin`, interning its name when it has none yet: fails when
    /// [`MAX_GATEWAYS`] other gateways hold every id, or memory is short.
    ///
    /// # Safety
    /// Writers are serialised.
    pub unsafe fn intern(&self, origin: &Origin) -> Result<OriginId, TableError> {
        if let Some(id) = self.find(origin) {
            return Ok(id);
        }
        let Origin::Gateway(name) = origin else { return Ok(OriginId::LOCAL) };
        let (at, slot) = self.slots().iter().enumerate().find(|(_, s)| s.load(Ordering::Relaxed).is_null()).ok_or(TableError::TooManyOrigins)?;
        let node = self.platform.alloc(Layout::new::<GatewayName>()).ok_or(TableError::OutOfMemory)?.cast::<GatewayName>();
        // SAFETY: fresh allocation for a name.
        unsafe { node.as_ptr().write(*name) };
        slot.store(node.as_ptr(), Ordering::Release);
        OriginId::of_slot(at).ok_or(TableError::TooManyOrigins)
    }

    /// Forgets the name of `id` (nothing may carry the id any more); readers that still see it
    /// keep it until their read-side section ends.
    ///
    /// # Safety
    /// Writers are serialised.
    pub unsafe fn release(&self, id: OriginId) {
        let Some(slot) = self.slot(id) else { return };
        if let Some(name) = NonNull::new(slot.swap(core::ptr::null_mut(), Ordering::AcqRel)) {
            // SAFETY: unpublished just now; readers may still hold it, so it is retired.
            unsafe { self.platform.retire(name.cast(), Layout::new::<GatewayName>()) };
        }
    }

    /// The ids that have a name, in increasing order.
    pub fn ids(&self) -> impl Iterator<Item = OriginId> + '_ {
        let named = |(at, slot): (usize, &AtomicPtr<GatewayName>)| (!slot.load(Ordering::Relaxed).is_null()).then(|| OriginId::of_slot(at)).flatten();
        self.slots().iter().enumerate().filter_map(named)
    }
}

impl<P: Platform> Drop for OriginNames<P> {
    fn drop(&mut self) {
        for slot in self.slots() {
            if let Some(name) = NonNull::new(slot.load(Ordering::Relaxed)) {
                // SAFETY: `&mut self`: no reader holds the names (the engine is dropped after a
                // grace period).
                unsafe { self.platform.free(name.cast(), Layout::new::<GatewayName>()) };
            }
        }
        // SAFETY: allocated in `new` with this layout; nothing refers to it any more.
        unsafe { self.platform.free(self.slots.cast(), Layout::new::<Slots>()) };
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::table::StdPlatform;

    #[test]
    fn gateway_names_are_checked() {
        let cases: &[(&[u8], Result<&str, GatewayNameError>)] = &[
            (b"gw-b", Ok("gw-b")),
            (b"gw_2.dc1-example", Ok("gw_2.dc1-example")),
            (b"0", Ok("0")),
            (b"Local", Ok("Local")),
            (&[b'a'; 32], Ok("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")),
            (b"", Err(GatewayNameError::Empty)),
            (&[b'a'; 33], Err(GatewayNameError::TooLong(33))),
            (b"-gw", Err(GatewayNameError::BadByte(0))),
            (b".gw", Err(GatewayNameError::BadByte(0))),
            (b"gw b", Err(GatewayNameError::BadByte(2))),
            (b"gw/b", Err(GatewayNameError::BadByte(2))),
            (b"gw\0", Err(GatewayNameError::BadByte(2))),
            ("gwé".as_bytes(), Err(GatewayNameError::BadByte(2))),
            (b"local", Err(GatewayNameError::Reserved)),
        ];
        for (bytes, want) in cases {
            let got = GatewayName::new(bytes);
            assert_eq!(got.as_ref().map(GatewayName::as_str).map_err(|e| *e), *want, "{bytes:?}");
            if let Ok(name) = got {
                assert_eq!(name.len(), bytes.len());
                assert_eq!(name.to_string().parse::<GatewayName>(), Ok(name));
            }
        }
        assert_eq!(GatewayNameError::BadByte(2).to_string(), "gateway name has a byte other than an ASCII letter, digit, '.', '-' or '_' at byte 3");
    }

    #[test]
    fn origins_read_as_they_print() {
        assert_eq!("local".parse::<Origin>(), Ok(Origin::Local));
        assert_eq!(Origin::Local.to_string(), "local");
        let b: Origin = "gw-b".parse().unwrap();
        assert_eq!(b, Origin::Gateway(GatewayName::new(b"gw-b").unwrap()));
        assert_eq!(b.to_string(), "gw-b");
        assert!("-x".parse::<Origin>().is_err());
        assert!(Origin::Local < b, "local entries sort first");
    }

    #[test]
    fn names_are_interned_once_and_their_ids_reused() {
        let names = OriginNames::new(StdPlatform).unwrap();
        let gw = |i: usize| Origin::Gateway(GatewayName::new(format!("gw{i}").as_bytes()).unwrap());
        // SAFETY (all writer calls): single-threaded.
        assert_eq!(unsafe { names.intern(&Origin::Local) }, Ok(OriginId::LOCAL));
        let b = unsafe { names.intern(&gw(0)) }.unwrap();
        assert_eq!(unsafe { names.intern(&gw(0)) }, Ok(b));
        assert_eq!(names.find(&gw(0)), Some(b));
        assert_eq!(names.origin(b), gw(0));
        assert_eq!(names.origin(OriginId::LOCAL), Origin::Local);
        assert_eq!(names.find(&gw(1)), None);
        for i in 1..MAX_GATEWAYS {
            unsafe { names.intern(&gw(i)) }.unwrap();
        }
        assert_eq!(unsafe { names.intern(&gw(MAX_GATEWAYS)) }, Err(TableError::TooManyOrigins));
        assert_eq!(names.ids().count(), MAX_GATEWAYS);
        unsafe { names.release(b) };
        assert_eq!(names.name(b), None);
        assert_eq!(unsafe { names.intern(&gw(MAX_GATEWAYS)) }, Ok(b), "a released id is taken again");
    }

    #[test]
    fn origin_sets() {
        let mut set = OriginSet::of(OriginId::LOCAL);
        set.insert(OriginId(200));
        set.insert(OriginId(64));
        assert!(set.contains(OriginId(64)) && !set.contains(OriginId(63)));
        assert_eq!(set.iter().collect::<Vec<_>>(), [OriginId(0), OriginId(64), OriginId(200)]);
    }
}
