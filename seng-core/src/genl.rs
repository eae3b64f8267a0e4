// SPDX-License-Identifier: GPL-2.0-only
//! The `seng_family` generic netlink protocol (version 1): numbers, zero-copy attribute parsing
//! into typed requests, and attribute emission. The kernel module decodes with it and the
//! user-space library encodes with it, so both sides share one description of the wire format.
//!
//! Command 1 is the original protocol, unchanged, so the SENG server keeps working: the operation
//! is chosen by the ADD/RMV/FLUSH flag attributes, addresses are IPv4 `u32`s in network byte
//! order. Commands 2 and up are explicit and address-family neutral: addresses are 4 or 16 bytes,
//! enclaves travel as [`attr::ENCLAVE`] nests, many per message.
//!
//! Every entry has an [origin](crate::origin). A request acts for one origin: a change names the
//! gateway it acts for in an [`attr::ORIGIN`] attribute that comes first in its payload
//! ([`Scoped`]), a GET names the gateway whose entries it reads in ORIGIN or asks for every
//! origin's with [`attr::ALL_ORIGINS`] ([`ReadScope`]), and a request without either acts for
//! the local origin, so command 1 and every client older than origins keep their meaning. In a
//! reply, the nest of a remote entry starts with its ORIGIN ([`parse_entry`]).

use core::ffi::CStr;
use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::engine::Refusal;
use crate::origin::{GatewayName, Origin, GATEWAY_NAME_MAX_LEN};
use crate::table::MAX_CATEGORIES_PER_APP;
use crate::{Category, Measurement};

/// Family name.
pub const FAMILY_NAME: &str = "seng_family";
/// Family version.
pub const FAMILY_VERSION: u8 = 1;
/// The original's multicast group (group 0 of the family). It stays silent, as in the original:
/// the original library joins it and takes any message on its socket that is not the ack of its
/// request for an error.
pub const MCGRP_NAME: &str = "seng_mcgrp";
/// The event group (group 1): every successful change is echoed there as the request that made
/// it. Only listeners with CAP_NET_ADMIN receive anything.
pub const EVENTS_MCGRP_NAME: &str = "seng_events";

/// Commands (`genlmsghdr.cmd`).
pub mod cmd {
    /// The original protocol (`GENL_XT_SENG_MSG`): operation chosen by flag attributes.
    pub const LEGACY: u8 = 1;
    /// Add or replace enclaves: one or more [`super::attr::ENCLAVE`] nests with ADDR, APP,
    /// HOST_ADDR and any number of CAT (categories are added to the application).
    pub const ENCLAVE_SET: u8 = 2;
    /// Remove enclaves: one or more ENCLAVE nests with ADDR.
    pub const ENCLAVE_DEL: u8 = 3;
    /// Remove everything.
    pub const FLUSH: u8 = 4;
    /// Attach categories to an application: APP and one or more CAT.
    pub const CAT_ADD: u8 = 5;
    /// Detach categories from an application: APP and one or more CAT.
    pub const CAT_DEL: u8 = 6;
    /// With NLM_F_DUMP: every enclave, as ENCLAVE nests packed into multipart replies. Without:
    /// the enclave at ADDR.
    pub const GET: u8 = 7;
    /// Table statistics: replies with the STAT_* attributes.
    pub const STATS: u8 = 8;
    /// Start replacing the part of the table of the request's origin: an empty staging table,
    /// owned by the sending socket. Sent again by the owner, it empties the staging table's part
    /// of the request's origin (for a transaction of one origin: starts over). The commit
    /// replaces the part of every origin the transaction's requests named, and only those.
    pub const REPLACE_BEGIN: u8 = 9;
    /// Add ENCLAVE nests to the staging table (as [`ENCLAVE_SET`] does to the live one).
    pub const REPLACE_ADD: u8 = 10;
    /// Swap the staging table in atomically.
    pub const REPLACE_COMMIT: u8 = 11;
    /// Drop the staging table (also done when its socket closes).
    pub const REPLACE_ABORT: u8 = 12;
    /// Remove ENCLAVE nests from the staging table (as [`ENCLAVE_DEL`] does from the live one).
    pub const REPLACE_DEL: u8 = 13;
    /// Attach categories in the staging table (as [`CAT_ADD`] does in the live one).
    pub const REPLACE_CAT_ADD: u8 = 14;
    /// Detach categories in the staging table (as [`CAT_DEL`] does in the live one).
    pub const REPLACE_CAT_DEL: u8 = 15;
    /// Highest command number.
    pub const MAX: u8 = 15;
}

/// Attribute types. 1–7 are the original protocol's; the rest are new.
pub mod attr {
    /// Application measurement, 32 bytes.
    pub const APP: u16 = 1;
    /// Category, NUL-terminated, 2–21 bytes with the NUL.
    pub const CAT: u16 = 2;
    /// Legacy: untrusted host IPv4, u32 in network byte order.
    pub const HOST: u16 = 3;
    /// Legacy: enclave IPv4, u32 in network byte order.
    pub const ENC: u16 = 4;
    /// Legacy flag: add.
    pub const ADD: u16 = 5;
    /// Legacy flag: remove.
    pub const RMV: u16 = 6;
    /// Legacy flag: flush.
    pub const FLUSH: u16 = 7;
    /// Nest describing one enclave.
    pub const ENCLAVE: u16 = 8;
    /// Enclave address, 4 or 16 bytes, network order.
    pub const ADDR: u16 = 9;
    /// Untrusted host address, 4 or 16 bytes, network order.
    pub const HOST_ADDR: u16 = 10;
    /// Reply: registered enclaves, u64.
    pub const STAT_ENCLAVES: u16 = 11;
    /// Reply: applications, u64.
    pub const STAT_APPS: u16 = 12;
    /// Reply: capacity, u64.
    pub const STAT_CAPACITY: u16 = 13;
    /// Reply: slots of the enclave index, u64.
    pub const STAT_SLOTS: u16 = 14;
    /// Reply: change counter, u64.
    pub const STAT_GENERATION: u16 = 15;
    /// The gateway a request acts for, or that a reply's entry came from: its name,
    /// NUL-terminated (2–33 bytes with the NUL). The first attribute of a request, or of an
    /// ENCLAVE nest of a reply; absent, the origin is the local one.
    pub const ORIGIN: u16 = 16;
    /// Flag of GET (and its dump): every origin's entries, not only the local origin's.
    pub const ALL_ORIGINS: u16 = 17;
    /// Highest attribute number.
    pub const MAX: u16 = 17;
}

const NLA_HDRLEN: usize = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLA_F_NESTED: u16 = 0x8000;

const fn nla_align(len: usize) -> usize {
    (len + 3) & !3
}

/// Why a request is refused: an errno for the netlink ack, the attribute concerned, and a message
/// for the extended ack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtoError {
    /// Positive errno.
    pub errno: i32,
    /// The offending attribute type, if one is to blame.
    pub attr: Option<u16>,
    /// What is wrong, for the extended ack (NUL-terminated, so the kernel can hand it on as is).
    pub msg: &'static CStr,
}

/// errno values used in replies (Linux numbers).
pub mod errno {
    /// No such entry.
    pub const ENOENT: i32 = 2;
    /// Out of memory.
    pub const ENOMEM: i32 = 12;
    /// Busy: another transaction is open.
    pub const EBUSY: i32 = 16;
    /// The address is another origin's enclave, which the request's origin may not replace.
    pub const EEXIST: i32 = 17;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// Table full.
    pub const ENOSPC: i32 = 28;
    /// Message too large for the reply buffer.
    pub const EMSGSIZE: i32 = 90;
    /// Unknown command.
    pub const EOPNOTSUPP: i32 = 95;
}

impl ProtoError {
    const fn invalid(attr: u16, msg: &'static CStr) -> ProtoError {
        ProtoError { errno: errno::EINVAL, attr: Some(attr), msg }
    }

    const fn missing(msg: &'static CStr) -> ProtoError {
        ProtoError { errno: errno::EINVAL, attr: None, msg }
    }
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.msg.to_str().unwrap_or("invalid request"))?;
        if let Some(attr) = self.attr {
            write!(f, " (attribute {attr})")?;
        }
        Ok(())
    }
}

impl core::error::Error for ProtoError {}

impl From<crate::table::TableError> for ProtoError {
    fn from(e: crate::table::TableError) -> ProtoError {
        use crate::table::TableError as T;
        let (errno, msg) = match e {
            T::Full { .. } => (errno::ENOSPC, c"the enclave table is full (its size is the capacity module parameter)"),
            T::OutOfMemory => (errno::ENOMEM, c"out of memory"),
            T::NotRegistered => (errno::ENOENT, c"address is not a registered enclave"),
            T::UnknownApp => (errno::ENOENT, c"no enclave of this application is registered"),
            T::CategoryNotAttached => (errno::ENOENT, c"application does not have this category"),
            T::TooManyCategories => (errno::ENOSPC, c"application has too many categories"),
            T::TooManyOrigins => (errno::ENOSPC, c"as many gateways as the table can name have entries already (255)"),
            T::BadCapacity => (errno::EINVAL, c"bad table capacity"),
        };
        ProtoError { errno, attr: None, msg }
    }
}

/// One attribute: its type (flags stripped) and payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr<'a> {
    /// Type without NLA_F_NESTED / NLA_F_NET_BYTEORDER.
    pub kind: u16,
    /// The payload, without header or padding.
    pub payload: &'a [u8],
}

/// Iterator over a run of attributes; yields an error (then stops) on a malformed header.
#[derive(Clone, Debug)]
pub struct Attrs<'a> {
    rest: &'a [u8],
    len: usize,
}

impl<'a> Attrs<'a> {
    /// Attributes packed in `buf` (a genl message payload or a nest's payload).
    pub fn new(buf: &'a [u8]) -> Attrs<'a> {
        Attrs { rest: buf, len: buf.len() }
    }

    /// Where the next attribute starts, in bytes from the start of the buffer.
    pub fn offset(&self) -> usize {
        self.len - self.rest.len()
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<Attr<'a>, ProtoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let header = match self.rest.get(..NLA_HDRLEN) {
            Some(&[l0, l1, t0, t1]) => (u16::from_ne_bytes([l0, l1]) as usize, u16::from_ne_bytes([t0, t1])),
            _ => {
                self.rest = &[];
                return Some(Err(ProtoError::missing(c"truncated attribute header")));
            }
        };
        let (len, kind) = header;
        let Some(payload) = self.rest.get(NLA_HDRLEN..len).filter(|_| len >= NLA_HDRLEN) else {
            self.rest = &[];
            return Some(Err(ProtoError::invalid(kind & NLA_TYPE_MASK, c"attribute length exceeds the message")));
        };
        self.rest = self.rest.get(nla_align(len)..).unwrap_or_default();
        Some(Ok(Attr { kind: kind & NLA_TYPE_MASK, payload }))
    }
}

fn measurement(a: &Attr<'_>) -> Result<Measurement, ProtoError> {
    <[u8; 32]>::try_from(a.payload)
        .map(Measurement)
        .map_err(|_| ProtoError::invalid(a.kind, c"application measurement must be 32 bytes"))
}

fn category(a: &Attr<'_>) -> Result<Category, ProtoError> {
    let bad = || ProtoError::invalid(a.kind, c"category must be 1-20 bytes of printable UTF-8, NUL-terminated");
    let Some((&0, name)) = a.payload.split_last() else {
        return Err(bad());
    };
    Category::new(name).map_err(|_| bad())
}

fn gateway(a: &Attr<'_>) -> Result<GatewayName, ProtoError> {
    let bad = || ProtoError::invalid(a.kind, c"ORIGIN must name a gateway: 1-32 ASCII letters, digits, '.', '-' or '_', starting with a letter or digit, NUL-terminated (leave it out for the local origin)");
    let Some((&0, name)) = a.payload.split_last() else {
        return Err(bad());
    };
    GatewayName::new(name).map_err(|_| bad())
}

/// The origin a run of attributes starts with, and how many bytes its ORIGIN takes (0 without
/// one).
fn leading_origin(payload: &[u8]) -> Result<(Origin, usize), ProtoError> {
    match Attrs::new(payload).next() {
        Some(Ok(a)) if a.kind == attr::ORIGIN => Ok((Origin::Gateway(gateway(&a)?), nla_align(NLA_HDRLEN + a.payload.len()))),
        _ => Ok((Origin::Local, 0)),
    }
}

fn legacy_ipv4(a: &Attr<'_>) -> Result<Ipv4Addr, ProtoError> {
    <[u8; 4]>::try_from(a.payload)
        .map(Ipv4Addr::from)
        .map_err(|_| ProtoError::invalid(a.kind, c"IPv4 address must be a 4-byte u32"))
}

fn address(a: &Attr<'_>) -> Result<IpAddr, ProtoError> {
    if let Ok(v4) = <[u8; 4]>::try_from(a.payload) {
        return Ok(IpAddr::V4(Ipv4Addr::from(v4)));
    }
    <[u8; 16]>::try_from(a.payload)
        .map(|v6| IpAddr::V6(Ipv6Addr::from(v6)))
        .map_err(|_| ProtoError::invalid(a.kind, c"address must be 4 (IPv4) or 16 (IPv6) bytes"))
}

fn flag(a: &Attr<'_>) -> Result<(), ProtoError> {
    if a.payload.is_empty() {
        Ok(())
    } else {
        Err(ProtoError::invalid(a.kind, c"flag attribute must be empty"))
    }
}

fn set_once<T>(slot: &mut Option<T>, a: &Attr<'_>, value: T) -> Result<(), ProtoError> {
    if slot.is_some() {
        return Err(ProtoError::invalid(a.kind, c"attribute given twice"));
    }
    *slot = Some(value);
    Ok(())
}

/// An operation of the original protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegacyOp {
    /// ENC + APP + HOST + ADD, optional CAT.
    Register {
        /// Enclave address.
        addr: Ipv4Addr,
        /// Application.
        app: Measurement,
        /// Untrusted host.
        host: Ipv4Addr,
        /// Category to attach to the application.
        category: Option<Category>,
    },
    /// ENC + RMV.
    Unregister {
        /// Enclave address.
        addr: Ipv4Addr,
    },
    /// APP + CAT + ADD.
    Attach {
        /// Application.
        app: Measurement,
        /// Category.
        category: Category,
    },
    /// APP + CAT + RMV.
    Detach {
        /// Application.
        app: Measurement,
        /// Category.
        category: Category,
    },
    /// FLUSH.
    Flush,
}

impl LegacyOp {
    /// Decodes a command-1 payload.
    pub fn parse(payload: &[u8]) -> Result<LegacyOp, ProtoError> {
        let (mut app, mut cat, mut host, mut enc) = (None, None, None, None);
        let (mut add, mut rmv, mut flush) = (None, None, None);
        for a in Attrs::new(payload) {
            let a = a?;
            match a.kind {
                attr::APP => set_once(&mut app, &a, measurement(&a)?)?,
                attr::CAT => set_once(&mut cat, &a, category(&a)?)?,
                attr::HOST => set_once(&mut host, &a, legacy_ipv4(&a)?)?,
                attr::ENC => set_once(&mut enc, &a, legacy_ipv4(&a)?)?,
                attr::ADD => set_once(&mut add, &a, flag(&a)?)?,
                attr::RMV => set_once(&mut rmv, &a, flag(&a)?)?,
                attr::FLUSH => set_once(&mut flush, &a, flag(&a)?)?,
                other => return Err(ProtoError::invalid(other, c"attribute not valid for this command")),
            }
        }
        match (flush.is_some(), add.is_some(), rmv.is_some()) {
            (true, false, false) => Ok(LegacyOp::Flush),
            (false, true, false) => match (enc, app, host, cat) {
                (Some(addr), Some(app), Some(host), category) => Ok(LegacyOp::Register { addr, app, host, category }),
                (Some(_), _, _, _) => Err(ProtoError::missing(c"registering an enclave needs APP and HOST")),
                (None, Some(app), None, Some(category)) => Ok(LegacyOp::Attach { app, category }),
                _ => Err(ProtoError::missing(c"ADD needs ENC+APP+HOST or APP+CAT")),
            },
            (false, false, true) => match (enc, app, cat) {
                (Some(addr), None, None) => Ok(LegacyOp::Unregister { addr }),
                (None, Some(app), Some(category)) => Ok(LegacyOp::Detach { app, category }),
                _ => Err(ProtoError::missing(c"RMV needs ENC, or APP+CAT")),
            },
            _ => Err(ProtoError::missing(c"exactly one of the ADD, RMV and FLUSH flags is needed")),
        }
    }

    /// Writes the command-1 payload [`LegacyOp::parse`] reads back, attributes in the order the
    /// original library sent them.
    pub fn emit(&self, w: &mut AttrWriter<'_>) -> Result<(), NoRoom> {
        match self {
            LegacyOp::Register { addr, app, host, category } => {
                w.put(attr::ENC, &addr.octets())?;
                w.put(attr::APP, &app.0)?;
                w.put(attr::HOST, &host.octets())?;
                if let Some(c) = category {
                    w.put_category(attr::CAT, c)?;
                }
                w.put(attr::ADD, &[])
            }
            LegacyOp::Unregister { addr } => {
                w.put(attr::ENC, &addr.octets())?;
                w.put(attr::RMV, &[])
            }
            LegacyOp::Attach { app, category } | LegacyOp::Detach { app, category } => {
                w.put(attr::APP, &app.0)?;
                w.put_category(attr::CAT, category)?;
                w.put(if matches!(self, LegacyOp::Attach { .. }) { attr::ADD } else { attr::RMV }, &[])
            }
            LegacyOp::Flush => w.put(attr::FLUSH, &[]),
        }
    }
}

/// One enclave of an ENCLAVE nest.
#[derive(Clone, Copy, Debug)]
pub struct EnclaveSpec<'a> {
    /// The enclave's address.
    pub addr: IpAddr,
    /// Its application (absent in deletions).
    pub app: Option<Measurement>,
    /// Its untrusted host (absent in deletions).
    pub host: Option<IpAddr>,
    /// The nest from its first CAT attribute on (empty without one).
    cats: &'a [u8],
    cat_count: usize,
}

impl<'a> EnclaveSpec<'a> {
    /// Decodes a nest's payload.
    pub fn parse(nest: &'a [u8]) -> Result<EnclaveSpec<'a>, ProtoError> {
        EnclaveSpec::decode(nest, true)
    }

    /// Decodes a nest; `check_categories` false skips re-checking category names of a nest that
    /// was decoded before (they are the costliest part of a registration's decoding).
    fn decode(nest: &'a [u8], check_categories: bool) -> Result<EnclaveSpec<'a>, ProtoError> {
        let (mut addr, mut app, mut host) = (None, None, None);
        let mut cat_count = 0usize;
        let mut cats: &[u8] = &[];
        let mut attrs = Attrs::new(nest);
        loop {
            let rest = attrs.rest;
            let Some(a) = attrs.next() else { break };
            let a = a?;
            match a.kind {
                attr::ADDR => set_once(&mut addr, &a, address(&a)?)?,
                attr::APP => set_once(&mut app, &a, measurement(&a)?)?,
                attr::HOST_ADDR => set_once(&mut host, &a, address(&a)?)?,
                attr::CAT => {
                    if check_categories {
                        category(&a)?;
                    }
                    if cat_count == 0 {
                        cats = rest;
                    }
                    cat_count += 1;
                    if cat_count > MAX_CATEGORIES_PER_APP {
                        return Err(ProtoError::invalid(a.kind, c"too many categories in one enclave"));
                    }
                }
                other => return Err(ProtoError::invalid(other, c"attribute not valid inside an enclave nest")),
            }
        }
        let addr = addr.ok_or(ProtoError::missing(c"enclave nest without ADDR"))?;
        Ok(EnclaveSpec { addr, app, host, cats, cat_count })
    }

    /// Calls `f` with the nest's categories as a slice (copied to the stack; no allocation).
    pub fn with_categories<R>(&self, f: impl FnOnce(&[Category]) -> R) -> R {
        // Every spec comes from a decode that checked its category names.
        let mut cats = Attrs::new(self.cats)
            .filter_map(Result::ok)
            .filter(|a| a.kind == attr::CAT)
            .map(|a| Category::from_checked(a.payload.split_last().map_or(&[][..], |(_, name)| name)));
        let Some(first) = cats.next() else {
            return f(&[]);
        };
        // One category is the common case: no 32-entry array to fill.
        if self.cat_count == 1 {
            return f(core::slice::from_ref(&first));
        }
        let mut buf = [first; MAX_CATEGORIES_PER_APP];
        let mut n = 1;
        for (slot, c) in buf.iter_mut().skip(1).zip(cats) {
            *slot = c;
            n += 1;
        }
        f(buf.get(..n).unwrap_or_default())
    }

    /// Number of categories in the nest.
    pub fn category_count(&self) -> usize {
        self.cat_count
    }
}

/// The ENCLAVE nests of a deletion ([`cmd::ENCLAVE_DEL`], [`cmd::REPLACE_DEL`]), validated;
/// iterate to get each.
#[derive(Clone, Copy, Debug)]
pub struct EnclaveList<'a> {
    payload: &'a [u8],
    count: usize,
}

/// Decodes one attribute of an enclave list; `full` requires APP and HOST_ADDR (additions),
/// otherwise only ADDR is allowed (deletions).
fn list_item(a: Result<Attr<'_>, ProtoError>, full: bool) -> Result<EnclaveSpec<'_>, ProtoError> {
    let a = a?;
    if a.kind != attr::ENCLAVE {
        return Err(ProtoError::invalid(a.kind, c"only ENCLAVE nests are valid for this command"));
    }
    let spec = EnclaveSpec::parse(a.payload)?;
    if full && (spec.app.is_none() || spec.host.is_none()) {
        return Err(ProtoError::invalid(attr::ENCLAVE, c"enclave nest needs ADDR, APP and HOST_ADDR"));
    }
    if !full && (spec.app.is_some() || spec.host.is_some() || spec.cat_count > 0) {
        return Err(ProtoError::invalid(attr::ENCLAVE, c"deletion nest takes only ADDR"));
    }
    Ok(spec)
}

/// Counts the attributes of a list payload, each passing `check`; a refusal blames the
/// attribute at fault by its offset, so a client learns which enclave of a batch it was.
fn count_nests<'a>(payload: &'a [u8], mut check: impl FnMut(Result<Attr<'a>, ProtoError>) -> Result<(), ProtoError>) -> Result<usize, Refusal> {
    let mut attrs = Attrs::new(payload);
    let mut count = 0;
    loop {
        let at = attrs.offset();
        let Some(a) = attrs.next() else { return Ok(count) };
        check(a).map_err(|error| Refusal { error, at: Some(at) })?;
        count += 1;
    }
}

impl<'a> EnclaveList<'a> {
    /// Validates every nest.
    fn parse(payload: &'a [u8]) -> Result<EnclaveList<'a>, Refusal> {
        let count = count_nests(payload, |a| list_item(a, false).map(drop))?;
        if count == 0 {
            return Err(ProtoError::missing(c"no ENCLAVE nest given").into());
        }
        Ok(EnclaveList { payload, count })
    }

    /// Number of enclaves.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Always false: a list holds at least one enclave.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The enclaves, in message order.
    pub fn iter(&self) -> impl Iterator<Item = EnclaveSpec<'a>> + 'a {
        self.iter_at().map(|(_, spec)| spec)
    }

    /// The enclaves, in message order, each with the offset of its ENCLAVE nest in the payload
    /// (what an error about that enclave points at).
    pub fn iter_at(&self) -> impl Iterator<Item = (usize, EnclaveSpec<'a>)> + 'a {
        let mut attrs = Attrs::new(self.payload);
        // Parsing validated every nest: nothing below can fail.
        core::iter::from_fn(move || {
            let at = attrs.offset();
            let nest = attrs.next()?.ok()?;
            Some((at, EnclaveSpec::decode(nest.payload, false).ok()?))
        })
    }
}

/// The ENCLAVE nests of a registration ([`cmd::ENCLAVE_SET`] or [`cmd::REPLACE_ADD`]), counted
/// but each decoded and checked only when iteration reaches it: the engine's one pass over a
/// batch decodes, checks and keeps each nest, so nothing decodes a nest twice.
#[derive(Clone, Copy, Debug)]
pub struct Additions<'a> {
    payload: &'a [u8],
    count: usize,
}

impl<'a> Additions<'a> {
    /// Walks the payload's attribute headers (not their contents): every one must be a whole
    /// ENCLAVE nest.
    fn parse(payload: &'a [u8]) -> Result<Additions<'a>, Refusal> {
        let count = count_nests(payload, |a| match a?.kind {
            attr::ENCLAVE => Ok(()),
            other => Err(ProtoError::invalid(other, c"only ENCLAVE nests are valid for this command")),
        })?;
        Ok(Additions { payload, count })
    }

    /// Number of ENCLAVE nests.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True for a payload without nests.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The enclaves in message order, each with the offset of its ENCLAVE nest in the payload;
    /// a malformed nest is an error at its offset, and ends the iteration.
    pub fn iter_at(&self) -> impl Iterator<Item = Result<(usize, EnclaveSpec<'a>), (usize, ProtoError)>> + 'a {
        let mut attrs = Attrs::new(self.payload);
        let mut failed = false;
        core::iter::from_fn(move || {
            if failed {
                return None;
            }
            let at = attrs.offset();
            let item = list_item(attrs.next()?, true).map(|spec| (at, spec)).map_err(|e| (at, e));
            failed = item.is_err();
            Some(item)
        })
    }
}

/// The CAT attributes of a request, validated.
#[derive(Clone, Copy, Debug)]
pub struct CategoryList<'a> {
    payload: &'a [u8],
}

impl<'a> CategoryList<'a> {
    /// The categories, in message order.
    pub fn iter(&self) -> impl Iterator<Item = Category> + 'a {
        Attrs::new(self.payload).filter_map(Result::ok).filter(|a| a.kind == attr::CAT).filter_map(|a| category(&a).ok())
    }
}

/// A decoded request. Its variants are named for the operation they perform, as
/// [`crate::operation::Operation`]'s are; the `Staged` ones perform it on the staging table of a
/// replace transaction.
#[derive(Clone, Copy, Debug)]
pub enum Request<'a> {
    /// Command 1.
    Legacy(LegacyOp),
    /// [`cmd::ENCLAVE_SET`].
    Register(Additions<'a>),
    /// [`cmd::ENCLAVE_DEL`].
    Unregister(EnclaveList<'a>),
    /// [`cmd::FLUSH`].
    Flush,
    /// [`cmd::CAT_ADD`].
    Attach {
        /// The application.
        app: Measurement,
        /// Categories to attach.
        categories: CategoryList<'a>,
    },
    /// [`cmd::CAT_DEL`].
    Detach {
        /// The application.
        app: Measurement,
        /// Categories to detach.
        categories: CategoryList<'a>,
    },
    /// [`cmd::GET`] without NLM_F_DUMP.
    Get {
        /// The enclave asked for.
        addr: IpAddr,
        /// The origins whose entry it may be.
        scope: ReadScope,
    },
    /// [`cmd::STATS`].
    Stats,
    /// [`cmd::REPLACE_BEGIN`].
    ReplaceBegin,
    /// [`cmd::REPLACE_ADD`].
    StagedRegister(Additions<'a>),
    /// [`cmd::REPLACE_COMMIT`].
    ReplaceCommit,
    /// [`cmd::REPLACE_ABORT`].
    ReplaceAbort,
    /// [`cmd::REPLACE_DEL`].
    StagedUnregister(EnclaveList<'a>),
    /// [`cmd::REPLACE_CAT_ADD`].
    StagedAttach {
        /// The application.
        app: Measurement,
        /// Categories to attach.
        categories: CategoryList<'a>,
    },
    /// [`cmd::REPLACE_CAT_DEL`].
    StagedDetach {
        /// The application.
        app: Measurement,
        /// Categories to detach.
        categories: CategoryList<'a>,
    },
}

fn no_attributes(payload: &[u8]) -> Result<(), ProtoError> {
    match Attrs::new(payload).next() {
        None => Ok(()),
        Some(Ok(a)) => Err(ProtoError::invalid(a.kind, c"this command takes no attributes")),
        Some(Err(e)) => Err(e),
    }
}

/// Decodes the payload of CAT_ADD, CAT_DEL and their REPLACE_ forms, which
/// [`AttrWriter::put_app_categories`] writes.
fn app_and_categories(payload: &[u8]) -> Result<(Measurement, CategoryList<'_>), ProtoError> {
    let mut app = None;
    let mut count = 0;
    for a in Attrs::new(payload) {
        let a = a?;
        match a.kind {
            attr::APP => set_once(&mut app, &a, measurement(&a)?)?,
            attr::CAT => {
                category(&a)?;
                count += 1;
            }
            other => return Err(ProtoError::invalid(other, c"attribute not valid for this command")),
        }
    }
    let app = app.ok_or(ProtoError::missing(c"APP is required"))?;
    if count == 0 {
        return Err(ProtoError::missing(c"at least one CAT is required"));
    }
    Ok((app, CategoryList { payload }))
}

impl<'a> Request<'a> {
    /// Decodes the payload (attributes after the genl header) of command `command`. Dumps are
    /// not requests: the caller handles `GET` with NLM_F_DUMP itself. A refused list of nests
    /// blames the nest at fault.
    pub fn parse(command: u8, payload: &'a [u8]) -> Result<Request<'a>, Refusal> {
        Ok(match command {
            cmd::LEGACY => Request::Legacy(LegacyOp::parse(payload)?),
            cmd::ENCLAVE_SET => {
                let additions = Additions::parse(payload)?;
                if additions.is_empty() {
                    return Err(ProtoError::missing(c"no ENCLAVE nest given").into());
                }
                Request::Register(additions)
            }
            cmd::ENCLAVE_DEL => Request::Unregister(EnclaveList::parse(payload)?),
            cmd::FLUSH => {
                no_attributes(payload)?;
                Request::Flush
            }
            cmd::CAT_ADD | cmd::CAT_DEL | cmd::REPLACE_CAT_ADD | cmd::REPLACE_CAT_DEL => {
                let (app, categories) = app_and_categories(payload)?;
                match command {
                    cmd::CAT_ADD => Request::Attach { app, categories },
                    cmd::CAT_DEL => Request::Detach { app, categories },
                    cmd::REPLACE_CAT_ADD => Request::StagedAttach { app, categories },
                    _ => Request::StagedDetach { app, categories },
                }
            }
            cmd::GET => {
                let mut addr = None;
                let mut scope = None;
                for a in Attrs::new(payload) {
                    let a = a?;
                    match a.kind {
                        attr::ADDR => set_once(&mut addr, &a, address(&a)?)?,
                        attr::ORIGIN | attr::ALL_ORIGINS => set_once(&mut scope, &a, ReadScope::of(&a)?).map_err(|_| ReadScope::twice(&a))?,
                        other => return Err(ProtoError::invalid(other, c"attribute not valid for this command").into()),
                    }
                }
                let addr = addr.ok_or(ProtoError::missing(c"GET needs ADDR (or NLM_F_DUMP)"))?;
                Request::Get { addr, scope: scope.unwrap_or_default() }
            }
            cmd::STATS => {
                no_attributes(payload)?;
                Request::Stats
            }
            cmd::REPLACE_BEGIN | cmd::REPLACE_COMMIT | cmd::REPLACE_ABORT => {
                no_attributes(payload)?;
                match command {
                    cmd::REPLACE_BEGIN => Request::ReplaceBegin,
                    cmd::REPLACE_COMMIT => Request::ReplaceCommit,
                    _ => Request::ReplaceAbort,
                }
            }
            cmd::REPLACE_ADD => Request::StagedRegister(Additions::parse(payload)?),
            cmd::REPLACE_DEL => Request::StagedUnregister(EnclaveList::parse(payload)?),
            _ => return Err(ProtoError { errno: errno::EOPNOTSUPP, attr: None, msg: c"unknown command" }.into()),
        })
    }
}

/// A request with the origin it acts for: what the engine executes. The origin is the
/// [`attr::ORIGIN`] that starts the payload of a change (of the live or the staging table), or
/// the local origin without one; the other commands take none.
#[derive(Clone, Copy, Debug)]
pub struct Scoped<'a> {
    /// The origin the request acts for.
    pub origin: Origin,
    /// The request, decoded from the attributes after the ORIGIN.
    pub request: Request<'a>,
    /// Where the request's attributes start in the payload (the ORIGIN's length).
    base: usize,
}

impl<'a> Scoped<'a> {
    /// Decodes the payload (attributes after the genl header) of command `command`, as
    /// [`Request::parse`] does after the ORIGIN. Offsets in refusals count from the payload's
    /// start.
    pub fn parse(command: u8, payload: &'a [u8]) -> Result<Scoped<'a>, Refusal> {
        let takes_origin = matches!(
            command,
            cmd::ENCLAVE_SET
                | cmd::ENCLAVE_DEL
                | cmd::FLUSH
                | cmd::CAT_ADD
                | cmd::CAT_DEL
                | cmd::REPLACE_BEGIN
                | cmd::REPLACE_ADD
                | cmd::REPLACE_DEL
                | cmd::REPLACE_CAT_ADD
                | cmd::REPLACE_CAT_DEL
        );
        let (origin, base) = if takes_origin { leading_origin(payload)? } else { (Origin::Local, 0) };
        let request = Request::parse(command, payload.get(base..).unwrap_or_default()).map_err(|refusal| refusal.shifted(base))?;
        Ok(Scoped { origin, request, base })
    }

    /// A request of the local origin (what a payload without ORIGIN decodes to).
    pub fn local(request: Request<'a>) -> Scoped<'a> {
        Scoped { origin: Origin::Local, request, base: 0 }
    }

    /// Where the request's own attributes start in the payload: offsets the engine reports
    /// about the request count from there.
    pub fn base(&self) -> usize {
        self.base
    }
}

/// Whose entries a GET (or its dump) reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadScope {
    /// One origin's (without [`attr::ORIGIN`] and [`attr::ALL_ORIGINS`]: the local origin's,
    /// all a client older than origins knows how to read).
    Origin(Origin),
    /// Every origin's ([`attr::ALL_ORIGINS`]).
    Every,
}

impl Default for ReadScope {
    /// The local origin's entries.
    fn default() -> ReadScope {
        ReadScope::Origin(Origin::Local)
    }
}

impl ReadScope {
    /// The scope of a dump request: its payload holds at most an ORIGIN or the ALL_ORIGINS flag.
    pub fn parse(payload: &[u8]) -> Result<ReadScope, ProtoError> {
        let mut scope = None;
        for a in Attrs::new(payload) {
            let a = a?;
            match a.kind {
                attr::ORIGIN | attr::ALL_ORIGINS => set_once(&mut scope, &a, ReadScope::of(&a)?).map_err(|_| ReadScope::twice(&a))?,
                other => return Err(ProtoError::invalid(other, c"a dump takes only ORIGIN or ALL_ORIGINS")),
            }
        }
        Ok(scope.unwrap_or_default())
    }

    fn of(a: &Attr<'_>) -> Result<ReadScope, ProtoError> {
        match a.kind {
            attr::ALL_ORIGINS => flag(a).map(|()| ReadScope::Every),
            _ => gateway(a).map(|name| ReadScope::Origin(Origin::Gateway(name))),
        }
    }

    fn twice(a: &Attr<'_>) -> ProtoError {
        ProtoError::invalid(a.kind, c"give ORIGIN or ALL_ORIGINS once, not both")
    }

    /// Whether an entry of `origin` is in the scope.
    pub fn includes(&self, origin: &Origin) -> bool {
        match self {
            ReadScope::Origin(o) => o == origin,
            ReadScope::Every => true,
        }
    }

    /// Writes the attribute that asks for this scope (nothing for the local origin's).
    pub fn emit(&self, w: &mut AttrWriter<'_>) -> Result<(), NoRoom> {
        match self {
            ReadScope::Origin(Origin::Local) => Ok(()),
            ReadScope::Origin(Origin::Gateway(name)) => w.put_origin(name),
            ReadScope::Every => w.put(attr::ALL_ORIGINS, &[]),
        }
    }
}

/// Decodes an ENCLAVE nest of a reply (GET or dump): the entry's origin, from the ORIGIN that
/// starts the nest of a remote entry, and the rest of the nest.
pub fn parse_entry(nest: &[u8]) -> Result<(Origin, EnclaveSpec<'_>), ProtoError> {
    let (origin, base) = leading_origin(nest)?;
    Ok((origin, EnclaveSpec::parse(nest.get(base..).unwrap_or_default())?))
}

/// The reply buffer has no room left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoRoom;

/// Writes attributes into a byte buffer (a reply skb's tailroom, or a user-space message).
pub struct AttrWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

/// A nest opened by [`AttrWriter::begin_nest`].
#[must_use]
pub struct Nest {
    start: usize,
}

impl<'a> AttrWriter<'a> {
    /// A writer appending to `buf` from its start.
    pub fn new(buf: &'a mut [u8]) -> AttrWriter<'a> {
        AttrWriter { buf, len: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets everything after `len` (to undo a partly written nest).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    fn header(&mut self, at: usize, len: usize, kind: u16) -> Result<(), NoRoom> {
        let len = u16::try_from(len).map_err(|_| NoRoom)?;
        let [l0, l1] = len.to_ne_bytes();
        let [t0, t1] = kind.to_ne_bytes();
        let dst = self.buf.get_mut(at..at + NLA_HDRLEN).ok_or(NoRoom)?;
        for (d, s) in dst.iter_mut().zip([l0, l1, t0, t1]) {
            *d = s;
        }
        Ok(())
    }

    /// Appends an attribute with `payload`, padded to 4 bytes.
    pub fn put(&mut self, kind: u16, payload: &[u8]) -> Result<(), NoRoom> {
        let total = NLA_HDRLEN + payload.len();
        let end = self.len + nla_align(total);
        if end > self.buf.len() {
            return Err(NoRoom);
        }
        self.header(self.len, total, kind)?;
        let body = self.buf.get_mut(self.len + NLA_HDRLEN..end).ok_or(NoRoom)?;
        let (data, padding) = body.split_at_mut_checked(payload.len()).ok_or(NoRoom)?;
        data.copy_from_slice(payload);
        padding.fill(0);
        self.len = end;
        Ok(())
    }

    /// Appends a u64 attribute.
    pub fn put_u64(&mut self, kind: u16, value: u64) -> Result<(), NoRoom> {
        self.put(kind, &value.to_ne_bytes())
    }

    /// Appends a category as a NUL-terminated string.
    pub fn put_category(&mut self, kind: u16, category: &Category) -> Result<(), NoRoom> {
        let field = category.to_field();
        self.put(kind, field.get(..category.len() + 1).unwrap_or_default())
    }

    /// Appends an [`attr::ORIGIN`] naming `gateway`.
    pub fn put_origin(&mut self, gateway: &GatewayName) -> Result<(), NoRoom> {
        let mut field = [0u8; GATEWAY_NAME_MAX_LEN + 1];
        for (dst, src) in field.iter_mut().zip(gateway.as_bytes()) {
            *dst = *src;
        }
        self.put(attr::ORIGIN, field.get(..gateway.len() + 1).unwrap_or_default())
    }

    /// Appends an [`attr::ORIGIN`] for `origin`, if it is remote: what starts the payload of a
    /// request acting for it.
    pub fn put_scope(&mut self, origin: &Origin) -> Result<(), NoRoom> {
        match origin {
            Origin::Local => Ok(()),
            Origin::Gateway(name) => self.put_origin(name),
        }
    }

    /// Appends an address as 4 or 16 bytes.
    pub fn put_addr(&mut self, kind: u16, addr: &IpAddr) -> Result<(), NoRoom> {
        match addr {
            IpAddr::V4(a) => self.put(kind, &a.octets()),
            IpAddr::V6(a) => self.put(kind, &a.octets()),
        }
    }

    /// Opens a nest of type `kind`; close it with [`AttrWriter::end_nest`].
    pub fn begin_nest(&mut self, kind: u16) -> Result<Nest, NoRoom> {
        let start = self.len;
        self.put(kind | NLA_F_NESTED, &[])?;
        Ok(Nest { start })
    }

    /// Closes a nest, fixing up its length.
    pub fn end_nest(&mut self, nest: Nest) -> Result<(), NoRoom> {
        let len = self.len - nest.start;
        let kind = match self.buf.get(nest.start + 2..nest.start + 4) {
            Some(&[t0, t1]) => u16::from_ne_bytes([t0, t1]),
            _ => return Err(NoRoom),
        };
        self.header(nest.start, len, kind)
    }

    /// Writes the payload of CAT_ADD, CAT_DEL and their REPLACE_ forms: APP, then a CAT for
    /// each category, in order (what [`Request::parse`] reads back).
    pub fn put_app_categories(&mut self, app: &Measurement, categories: &[Category]) -> Result<(), NoRoom> {
        self.put(attr::APP, &app.0)?;
        categories.iter().try_for_each(|c| self.put_category(attr::CAT, c))
    }

    /// Appends one ENCLAVE nest (what [`EnclaveSpec::parse`] reads back); on [`NoRoom`] nothing of it remains.
    pub fn put_enclave(&mut self, addr: &IpAddr, app: Option<&Measurement>, host: Option<&IpAddr>, categories: &[Category]) -> Result<(), NoRoom> {
        self.put_nest(None, addr, app, host, categories)
    }

    /// Appends the ENCLAVE nest of a reply's entry, started by the ORIGIN of a remote one (what
    /// [`parse_entry`] reads back); on [`NoRoom`] nothing of it remains.
    pub fn put_entry(&mut self, origin: Option<&GatewayName>, addr: &IpAddr, app: &Measurement, host: &IpAddr, categories: &[Category]) -> Result<(), NoRoom> {
        self.put_nest(origin, addr, Some(app), Some(host), categories)
    }

    fn put_nest(&mut self, origin: Option<&GatewayName>, addr: &IpAddr, app: Option<&Measurement>, host: Option<&IpAddr>, categories: &[Category]) -> Result<(), NoRoom> {
        let start = self.len;
        let result = (|| {
            let nest = self.begin_nest(attr::ENCLAVE)?;
            if let Some(origin) = origin {
                self.put_origin(origin)?;
            }
            self.put_addr(attr::ADDR, addr)?;
            if let Some(app) = app {
                self.put(attr::APP, &app.0)?;
            }
            if let Some(host) = host {
                self.put_addr(attr::HOST_ADDR, host)?;
            }
            for c in categories {
                self.put_category(attr::CAT, c)?;
            }
            self.end_nest(nest)
        })();
        if result.is_err() {
            self.truncate(start);
        }
        result
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn msg(build: impl FnOnce(&mut AttrWriter<'_>) -> Result<(), NoRoom>) -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        let mut w = AttrWriter::new(&mut buf);
        build(&mut w).unwrap();
        let len = w.len();
        buf.truncate(len);
        buf
    }

    fn app() -> Measurement {
        Measurement([0xab; 32])
    }

    #[test]
    fn legacy_operations_decode() {
        let cat = Category::new(b"Browser").unwrap();
        let register = msg(|w| {
            w.put(attr::ENC, &[192, 168, 28, 10])?;
            w.put(attr::APP, &app().0)?;
            w.put(attr::HOST, &[10, 0, 0, 5])?;
            w.put(attr::ADD, &[])?;
            w.put_category(attr::CAT, &cat)
        });
        assert_eq!(
            LegacyOp::parse(&register),
            Ok(LegacyOp::Register {
                addr: Ipv4Addr::new(192, 168, 28, 10),
                app: app(),
                host: Ipv4Addr::new(10, 0, 0, 5),
                category: Some(cat)
            })
        );
        let cases: Vec<(Vec<u8>, Result<LegacyOp, &str>)> = vec![
            (msg(|w| w.put(attr::FLUSH, &[])), Ok(LegacyOp::Flush)),
            (msg(|w| { w.put(attr::ENC, &[1, 2, 3, 4])?; w.put(attr::RMV, &[]) }), Ok(LegacyOp::Unregister { addr: Ipv4Addr::new(1, 2, 3, 4) })),
            (msg(|w| { w.put(attr::APP, &app().0)?; w.put_category(attr::CAT, &cat)?; w.put(attr::ADD, &[]) }), Ok(LegacyOp::Attach { app: app(), category: cat })),
            (msg(|w| { w.put(attr::APP, &app().0)?; w.put_category(attr::CAT, &cat)?; w.put(attr::RMV, &[]) }), Ok(LegacyOp::Detach { app: app(), category: cat })),
            (msg(|w| { w.put(attr::APP, &[1; 31])?; w.put(attr::ADD, &[]) }), Err("application measurement must be 32 bytes")),
            (msg(|w| { w.put(attr::ENC, &[1, 2, 3])?; w.put(attr::RMV, &[]) }), Err("IPv4 address must be a 4-byte u32")),
            (msg(|w| { w.put(attr::APP, &app().0)?; w.put(attr::CAT, b"Browser")?; w.put(attr::ADD, &[]) }), Err("category must be 1-20 bytes")),
            (msg(|w| { w.put(attr::APP, &app().0)?; w.put(attr::CAT, b"123456789012345678901\0")?; w.put(attr::ADD, &[]) }), Err("category must be 1-20 bytes")),
            (msg(|w| { w.put(attr::ENC, &[1, 2, 3, 4])?; w.put(attr::ADD, &[]) }), Err("registering an enclave needs APP and HOST")),
            (msg(|w| { w.put(attr::ADD, &[])?; w.put(attr::RMV, &[]) }), Err("exactly one of the ADD, RMV and FLUSH flags")),
            (msg(|w| w.put(attr::ENCLAVE, &[])), Err("attribute not valid for this command")),
            (msg(|w| { w.put(attr::FLUSH, &[])?; w.put(attr::FLUSH, &[]) }), Err("attribute given twice")),
            (vec![8, 0, 4, 0, 1, 2], Err("attribute length exceeds the message")),
            (vec![8, 0], Err("truncated attribute header")),
            (vec![2, 0, 4, 0], Err("attribute length exceeds the message")),
        ];
        for (bytes, want) in cases {
            match (LegacyOp::parse(&bytes), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want),
                (Err(got), Err(want)) => assert!(got.msg.to_str().unwrap().starts_with(want), "{got:?} vs {want}"),
                (got, want) => panic!("{bytes:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn enclave_nests_round_trip() {
        let cats = [Category::new(b"Browser").unwrap(), Category::new(b"Mail").unwrap()];
        let v6: IpAddr = "fd00:28::10".parse().unwrap();
        let v4: IpAddr = "192.168.28.10".parse().unwrap();
        let host: IpAddr = "10.0.0.5".parse().unwrap();
        let payload = msg(|w| {
            w.put_enclave(&v4, Some(&app()), Some(&host), &cats)?;
            w.put_enclave(&v6, Some(&app()), Some(&v6), &[])
        });
        let Ok(Request::Register(additions)) = Request::parse(cmd::ENCLAVE_SET, &payload) else { panic!() };
        let specs: Vec<_> = additions.iter_at().map(|item| item.unwrap().1).collect();
        assert_eq!(specs.len(), 2);
        assert_eq!((specs[0].addr, specs[0].app, specs[0].host), (v4, Some(app()), Some(host)));
        specs[0].with_categories(|got| assert_eq!(got, &cats));
        specs[1].with_categories(|got| assert!(got.is_empty()));
        assert_eq!(specs[1].addr, v6);
        assert!(Request::parse(cmd::ENCLAVE_DEL, &payload).is_err(), "deletion takes ADDR only");
        let del = msg(|w| w.put_enclave(&v6, None, None, &[]));
        assert!(matches!(Request::parse(cmd::ENCLAVE_DEL, &del), Ok(Request::Unregister(l)) if l.len() == 1));
        let Ok(Request::Register(additions)) = Request::parse(cmd::ENCLAVE_SET, &del) else { panic!("nests are read when reached") };
        assert!(additions.iter_at().next().unwrap().is_err(), "addition needs APP and HOST");
        assert_eq!(Request::parse(cmd::ENCLAVE_SET, &[]).unwrap_err().error.msg, c"no ENCLAVE nest given");
        assert_eq!(Request::parse(99, &[]).unwrap_err().error.errno, errno::EOPNOTSUPP);
    }

    #[test]
    fn a_refused_nest_is_blamed_by_its_offset() {
        let v4: IpAddr = "192.168.28.10".parse().unwrap();
        let good = msg(|w| w.put_enclave(&v4, Some(&app()), Some(&v4), &[]));
        let incomplete = msg(|w| w.put_enclave(&v4, Some(&app()), None, &[]));
        let mut bad_addr = msg(|w| w.put_enclave(&v4, Some(&app()), Some(&v4), &[]));
        // The ADDR attribute, first in the nest, claims 5 bytes instead of 4.
        bad_addr[4] = 9;
        for (command, third, want) in [
            (cmd::ENCLAVE_SET, &incomplete, c"enclave nest needs ADDR, APP and HOST_ADDR"),
            (cmd::ENCLAVE_SET, &bad_addr, c"address must be 4 (IPv4) or 16 (IPv6) bytes"),
            (cmd::ENCLAVE_DEL, &good, c"deletion nest takes only ADDR"),
        ] {
            let del = msg(|w| w.put_enclave(&v4, None, None, &[]));
            let first = if command == cmd::ENCLAVE_DEL { &del } else { &good };
            let payload = [first.as_slice(), first, third].concat();
            // A registration's nests are checked as they are read, the others' by the decoder.
            let refusal = match Request::parse(command, &payload) {
                Ok(Request::Register(additions)) => additions.iter_at().find_map(Result::err).map(|(at, error)| Refusal { error, at: Some(at) }),
                parsed => parsed.err(),
            };
            let refusal = refusal.expect("refused");
            assert_eq!((refusal.error.msg, refusal.at), (want, Some(2 * first.len())), "command {command}");
        }
    }

    #[test]
    fn writer_never_overflows() {
        let mut small = [0u8; 40];
        let mut w = AttrWriter::new(&mut small);
        let v4: IpAddr = "192.168.28.10".parse().unwrap();
        assert_eq!(w.put_enclave(&v4, Some(&app()), None, &[]), Err(NoRoom));
        assert_eq!(w.len(), 0, "a failed nest leaves nothing behind");
        w.put_enclave(&v4, None, None, &[]).unwrap();
        assert_eq!(w.len(), 12);
    }
}
