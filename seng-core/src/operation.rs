// SPDX-License-Identifier: GPL-2.0-only
//! The five operations on an enclave table, in one vocabulary from the script text to the
//! netlink request to the client library: [`Operation`] (register, unregister, attach, detach,
//! flush) over [`Registration`]s.
//!
//! Every operation acts for one [origin](crate::origin): the origin of its registrations, or the
//! one it names (`--origin` in a script, [`attr::ORIGIN`] in a request).
//!
//! An operation travels in one of three [`Dialect`]s: the original command 1 (one IPv4 enclave
//! or one category at a time, always for the local origin), the explicit commands on the live
//! table, or the same commands on the staging table of a replace transaction.
//! [`Operation::emit`] writes the request with the encoders of [`crate::genl`], beside their
//! decoders; [`Operation::parse`] reads it back with [`Scoped::parse`], the decoder the kernel
//! module runs, so the two cannot drift apart.

use std::vec::Vec;

use core::fmt;
use core::net::IpAddr;

use crate::genl::{attr, cmd, errno, Additions, AttrWriter, EnclaveSpec, LegacyOp, NoRoom, ProtoError, Request, Scoped};
use crate::{Category, Measurement, Origin};

/// One enclave registration: its address, application, untrusted host, the categories of its
/// application, and whose entry it is. What `enclave add` says, what an ENCLAVE nest carries
/// (with the request's origin), and what a dump of the table reads back (then with the
/// application's categories, in the order attached).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Registration {
    /// The enclave's address.
    pub addr: IpAddr,
    /// Its application measurement (MRENCLAVE).
    pub app: Measurement,
    /// The untrusted host it runs on.
    pub host: IpAddr,
    /// When registering: categories to attach to the application. When read back: the
    /// application's categories.
    pub categories: Vec<Category>,
    /// Whose entry it is.
    pub origin: Origin,
}

impl Registration {
    /// Writes its ENCLAVE nest, each category once (the kernel counts a nest's categories
    /// against the per-application limit as written). The origin is not in the nest: a request
    /// names it once, for all its nests ([`Operation::emit`]).
    pub fn emit(&self, w: &mut AttrWriter<'_>) -> Result<(), NoRoom> {
        let cats = &self.categories;
        let repeats = cats.iter().enumerate().any(|(i, c)| cats.get(..i).is_some_and(|before| before.contains(c)));
        if !repeats {
            // The common case, and the hot path of batches and restores: no copy.
            return w.put_enclave(&self.addr, Some(&self.app), Some(&self.host), cats);
        }
        let mut distinct: Vec<Category> = Vec::with_capacity(cats.len());
        for c in cats {
            if !distinct.contains(c) {
                distinct.push(*c);
            }
        }
        w.put_enclave(&self.addr, Some(&self.app), Some(&self.host), &distinct)
    }

    /// The registration of `origin` an ENCLAVE nest describes; `None` for a nest without APP or
    /// HOST_ADDR (a deletion's).
    pub fn from_spec(spec: &EnclaveSpec<'_>, origin: Origin) -> Option<Registration> {
        Some(Registration { addr: spec.addr, app: spec.app?, host: spec.host?, categories: spec.with_categories(|c| c.to_vec()), origin })
    }
}

impl fmt::Display for Registration {
    /// `ADDR app HEX host ADDR [cat NAME]... [origin NAME]`, the line `seng list` and `seng get`
    /// print (a local entry names no origin).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} app {} host {}", self.addr, self.app, self.host)?;
        for c in &self.categories {
            write!(f, " cat {}", c.save_form())?;
        }
        if let Origin::Gateway(name) = &self.origin {
            write!(f, " origin {name}")?;
        }
        Ok(())
    }
}

/// A change of an enclave table, for one origin. Lists hold at least one item: the protocol has
/// no empty requests, and [`Operation::emit`] refuses them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Register (or re-register) enclaves, attaching each one's categories to its application;
    /// one request carries the registrations of one origin.
    Register(Vec<Registration>),
    /// Unregister the enclaves of `origin` at these addresses.
    Unregister {
        /// Whose enclaves they are.
        origin: Origin,
        /// The addresses.
        addrs: Vec<IpAddr>,
    },
    /// Attach categories to an application that has a registered enclave of `origin`.
    Attach {
        /// Whose application it is.
        origin: Origin,
        /// The application.
        app: Measurement,
        /// The categories, in order.
        categories: Vec<Category>,
    },
    /// Detach categories from an application of `origin`.
    Detach {
        /// Whose application it is.
        origin: Origin,
        /// The application.
        app: Measurement,
        /// The categories, in order.
        categories: Vec<Category>,
    },
    /// Unregister every enclave of `origin`.
    Flush {
        /// Whose enclaves go.
        origin: Origin,
    },
}

/// Which commands carry an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// The original protocol's command 1: one IPv4 enclave with at most one category, one IPv4
    /// address, or one category at a time. Unregistering an unknown address and detaching an
    /// absent category succeed there, as in the original module.
    Legacy,
    /// ENCLAVE_SET, ENCLAVE_DEL, CAT_ADD, CAT_DEL and FLUSH, on the live table.
    Live,
    /// REPLACE_ADD, REPLACE_DEL, REPLACE_CAT_ADD and REPLACE_CAT_DEL on the staging table of a
    /// replace transaction; a flush there is the owner's REPLACE_BEGIN, which empties the
    /// staging table's part of the origin.
    Staged,
}

/// Why an operation cannot be written as a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmitError {
    /// The buffer has no room left.
    NoRoom,
    /// A list without items: no request says "nothing".
    Empty,
    /// Command 1 cannot say it (IPv6, several items, more than one category, or a gateway's
    /// origin).
    NotLegacy,
    /// Registrations of several origins: a request acts for one.
    MixedOrigins,
}

impl From<NoRoom> for EmitError {
    fn from(NoRoom: NoRoom) -> EmitError {
        EmitError::NoRoom
    }
}

impl fmt::Display for EmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EmitError::NoRoom => "the request does not fit its buffer",
            EmitError::Empty => "an operation needs at least one enclave, address or category",
            EmitError::NotLegacy => "the original protocol (command 1) carries one IPv4 enclave with at most one category, or one category, per request, for the local origin",
            EmitError::MixedOrigins => "one request registers the enclaves of one origin",
        })
    }
}

impl std::error::Error for EmitError {}

impl From<LegacyOp> for Operation {
    fn from(op: LegacyOp) -> Operation {
        match op {
            LegacyOp::Register { addr, app, host, category } => Operation::Register(vec![Registration {
                addr: addr.into(),
                app,
                host: host.into(),
                categories: category.into_iter().collect(),
                origin: Origin::Local,
            }]),
            LegacyOp::Unregister { addr } => Operation::Unregister { origin: Origin::Local, addrs: vec![addr.into()] },
            LegacyOp::Attach { app, category } => Operation::Attach { origin: Origin::Local, app, categories: vec![category] },
            LegacyOp::Detach { app, category } => Operation::Detach { origin: Origin::Local, app, categories: vec![category] },
            LegacyOp::Flush => Operation::Flush { origin: Origin::Local },
        }
    }
}

impl TryFrom<&Operation> for LegacyOp {
    type Error = EmitError;

    fn try_from(op: &Operation) -> Result<LegacyOp, EmitError> {
        let v4 = |addr: &IpAddr| match addr {
            IpAddr::V4(a) => Ok(*a),
            IpAddr::V6(_) => Err(EmitError::NotLegacy),
        };
        if !op.origin()?.is_local() {
            return Err(EmitError::NotLegacy);
        }
        Ok(match op {
            Operation::Register(list) => {
                let r = single(list)?;
                let category = match r.categories.as_slice() {
                    [] => None,
                    [c] => Some(*c),
                    _ => return Err(EmitError::NotLegacy),
                };
                LegacyOp::Register { addr: v4(&r.addr)?, app: r.app, host: v4(&r.host)?, category }
            }
            Operation::Unregister { addrs, .. } => LegacyOp::Unregister { addr: v4(single(addrs)?)? },
            Operation::Attach { app, categories, .. } => LegacyOp::Attach { app: *app, category: *single(categories)? },
            Operation::Detach { app, categories, .. } => LegacyOp::Detach { app: *app, category: *single(categories)? },
            Operation::Flush { .. } => LegacyOp::Flush,
        })
    }
}

/// The one item of a list command 1 carries.
fn single<T>(items: &[T]) -> Result<&T, EmitError> {
    match items {
        [] => Err(EmitError::Empty),
        [item] => Ok(item),
        _ => Err(EmitError::NotLegacy),
    }
}

impl Operation {
    /// Flushes the local origin's part: what `flush` and the original's `flush_module` do.
    pub const FLUSH: Operation = Operation::Flush { origin: Origin::Local };

    /// The origin the operation acts for: [`EmitError::MixedOrigins`] for registrations of
    /// several, [`EmitError::Empty`] for none.
    pub fn origin(&self) -> Result<Origin, EmitError> {
        match self {
            Operation::Register(list) => {
                let first = list.first().ok_or(EmitError::Empty)?.origin;
                match list.iter().all(|r| r.origin == first) {
                    true => Ok(first),
                    false => Err(EmitError::MixedOrigins),
                }
            }
            Operation::Unregister { origin, .. } | Operation::Attach { origin, .. } | Operation::Detach { origin, .. } | Operation::Flush { origin } => Ok(*origin),
        }
    }

    /// The command that carries the operation in `dialect`.
    pub fn command(&self, dialect: Dialect) -> u8 {
        match (dialect, self) {
            (Dialect::Legacy, _) => cmd::LEGACY,
            (Dialect::Live, Operation::Register(_)) => cmd::ENCLAVE_SET,
            (Dialect::Live, Operation::Unregister { .. }) => cmd::ENCLAVE_DEL,
            (Dialect::Live, Operation::Attach { .. }) => cmd::CAT_ADD,
            (Dialect::Live, Operation::Detach { .. }) => cmd::CAT_DEL,
            (Dialect::Live, Operation::Flush { .. }) => cmd::FLUSH,
            (Dialect::Staged, Operation::Register(_)) => cmd::REPLACE_ADD,
            (Dialect::Staged, Operation::Unregister { .. }) => cmd::REPLACE_DEL,
            (Dialect::Staged, Operation::Attach { .. }) => cmd::REPLACE_CAT_ADD,
            (Dialect::Staged, Operation::Detach { .. }) => cmd::REPLACE_CAT_DEL,
            (Dialect::Staged, Operation::Flush { .. }) => cmd::REPLACE_BEGIN,
        }
    }

    /// Writes the request's attributes into `w` and returns its command: what
    /// [`Operation::parse`] (and the kernel's [`Scoped::parse`]) reads back. A gateway's
    /// operation starts with its ORIGIN.
    pub fn emit(&self, dialect: Dialect, w: &mut AttrWriter<'_>) -> Result<u8, EmitError> {
        if dialect == Dialect::Legacy {
            LegacyOp::try_from(self)?.emit(w)?;
            return Ok(cmd::LEGACY);
        }
        let nonempty = |n: usize| if n == 0 { Err(EmitError::Empty) } else { Ok(()) };
        match self {
            Operation::Register(list) => nonempty(list.len())?,
            Operation::Unregister { addrs, .. } => nonempty(addrs.len())?,
            Operation::Attach { categories, .. } | Operation::Detach { categories, .. } => nonempty(categories.len())?,
            Operation::Flush { .. } => {}
        }
        w.put_scope(&self.origin()?)?;
        match self {
            Operation::Register(list) => list.iter().try_for_each(|r| r.emit(w))?,
            Operation::Unregister { addrs, .. } => addrs.iter().try_for_each(|addr| w.put_enclave(addr, None, None, &[]))?,
            Operation::Attach { app, categories, .. } | Operation::Detach { app, categories, .. } => w.put_app_categories(app, categories)?,
            Operation::Flush { .. } => {}
        }
        Ok(self.command(dialect))
    }

    /// The request as its command and attribute bytes, in a buffer of its own.
    pub fn to_request(&self, dialect: Dialect) -> Result<(u8, Vec<u8>), EmitError> {
        let mut buf = Vec::new();
        self.emit_into(dialect, &mut buf).map(|command| (command, buf))
    }

    /// As [`Operation::to_request`], writing the attribute bytes over `buf`'s contents: one
    /// buffer serves a stream of requests without an allocation each.
    pub fn emit_into(&self, dialect: Dialect, buf: &mut Vec<u8>) -> Result<u8, EmitError> {
        buf.clear();
        buf.resize(self.emitted_len_bound(), 0);
        let mut w = AttrWriter::new(buf);
        let command = self.emit(dialect, &mut w);
        let len = w.len();
        buf.truncate(len);
        command
    }

    /// At least the attribute bytes [`Operation::emit`] writes in any dialect.
    fn emitted_len_bound(&self) -> usize {
        // Each attribute has a 4-byte header and pads to 4 bytes: an address of at most 16
        // bytes, a measurement of 32, a category of at most 21, a gateway's name of at most 33;
        // command 1 adds a flag.
        const CAT: usize = 4 + 24;
        const ADDR: usize = 4 + 16;
        const APP: usize = 4 + 32;
        const FLAG: usize = 4;
        const ORIGIN: usize = 4 + 36;
        FLAG + ORIGIN
            + match self {
                Operation::Register(list) => list.iter().map(|r| 4 + 2 * ADDR + APP + CAT * r.categories.len()).sum(),
                Operation::Unregister { addrs, .. } => addrs.len() * (4 + ADDR),
                Operation::Attach { categories, .. } | Operation::Detach { categories, .. } => APP + CAT * categories.len(),
                Operation::Flush { .. } => 0,
            }
    }

    /// Reads back the operation request `command` carries and the dialect it is in; a command
    /// that is no operation (GET, STATS, REPLACE_COMMIT, ...) is refused.
    pub fn parse(command: u8, payload: &[u8]) -> Result<(Dialect, Operation), ProtoError> {
        let not_an_operation = ProtoError { errno: errno::EINVAL, attr: None, msg: c"the command is not an operation on the table" };
        Operation::from_request(&Scoped::parse(command, payload).map_err(|refusal| refusal.error)?)?.ok_or(not_an_operation)
    }

    /// The operation a decoded request performs, if it is one, and its dialect. Fails only on a
    /// malformed nest of an ENCLAVE_SET or a REPLACE_ADD, which the decoder leaves to be found
    /// when the nests are read.
    pub fn from_request(request: &Scoped<'_>) -> Result<Option<(Dialect, Operation)>, ProtoError> {
        let origin = request.origin;
        Ok(Some(match request.request {
            Request::Legacy(op) => (Dialect::Legacy, Operation::from(op)),
            Request::Register(additions) => (Dialect::Live, Operation::Register(registrations(&additions, origin)?)),
            Request::Unregister(list) => (Dialect::Live, Operation::Unregister { origin, addrs: list.iter().map(|s| s.addr).collect() }),
            Request::Flush => (Dialect::Live, Operation::Flush { origin }),
            Request::Attach { app, categories } => (Dialect::Live, Operation::Attach { origin, app, categories: categories.iter().collect() }),
            Request::Detach { app, categories } => (Dialect::Live, Operation::Detach { origin, app, categories: categories.iter().collect() }),
            Request::StagedRegister(additions) => (Dialect::Staged, Operation::Register(registrations(&additions, origin)?)),
            Request::StagedUnregister(list) => (Dialect::Staged, Operation::Unregister { origin, addrs: list.iter().map(|s| s.addr).collect() }),
            Request::StagedAttach { app, categories } => (Dialect::Staged, Operation::Attach { origin, app, categories: categories.iter().collect() }),
            Request::StagedDetach { app, categories } => (Dialect::Staged, Operation::Detach { origin, app, categories: categories.iter().collect() }),
            Request::ReplaceBegin => (Dialect::Staged, Operation::Flush { origin }),
            Request::Get { .. } | Request::Stats | Request::ReplaceCommit | Request::ReplaceAbort => return Ok(None),
        }))
    }
}

/// The registrations of `origin` in `additions`, or the first malformed nest's error.
fn registrations(additions: &Additions<'_>, origin: Origin) -> Result<Vec<Registration>, ProtoError> {
    let incomplete = ProtoError { errno: errno::EINVAL, attr: Some(attr::ENCLAVE), msg: c"enclave nest needs ADDR, APP and HOST_ADDR" };
    additions.iter_at().map(|item| item.map_err(|(_, e)| e).and_then(|(_, spec)| Registration::from_spec(&spec, origin).ok_or(incomplete))).collect()
}

impl From<Registration> for Operation {
    fn from(r: Registration) -> Operation {
        Operation::Register(vec![r])
    }
}
