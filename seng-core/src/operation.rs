// SPDX-License-Identifier: GPL-2.0-only
//! The five operations on an enclave table, in one vocabulary from the script text to the
//! netlink request to the client library: [`Operation`] (register, unregister, attach, detach,
//! flush) over [`Registration`]s.
//!
//! An operation travels in one of three [`Dialect`]s: the original command 1 (one IPv4 enclave
//! or one category at a time), the explicit commands on the live table, or the same commands on
//! the staging table of a replace transaction. [`Operation::emit`] writes the request with the
//! encoders of [`crate::genl`], beside their decoders; [`Operation::parse`] reads it back with
//! [`Request::parse`], the decoder the kernel module runs, so the two cannot drift apart.

use std::vec::Vec;

use core::fmt;
use core::net::IpAddr;

use crate::genl::{attr, cmd, errno, Additions, AttrWriter, EnclaveSpec, LegacyOp, NoRoom, ProtoError, Request};
use crate::{Category, Measurement};

/// One enclave registration: its address, application, untrusted host, and the categories of
/// its application. What `enclave add` says, what an ENCLAVE nest carries, and what a dump of
/// the table reads back (then with the application's categories, in the order attached).
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
}

impl Registration {
    /// Writes its ENCLAVE nest, each category once (the kernel counts a nest's categories
    /// against the per-application limit as written).
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

    /// The registration an ENCLAVE nest describes; `None` for a nest without APP or HOST_ADDR
    /// (a deletion's).
    pub fn from_spec(spec: &EnclaveSpec<'_>) -> Option<Registration> {
        Some(Registration { addr: spec.addr, app: spec.app?, host: spec.host?, categories: spec.with_categories(|c| c.to_vec()) })
    }
}

impl fmt::Display for Registration {
    /// `ADDR app HEX host ADDR [cat NAME]...`, the line `seng list` and `seng get` print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} app {} host {}", self.addr, self.app, self.host)?;
        for c in &self.categories {
            write!(f, " cat {}", c.save_form())?;
        }
        Ok(())
    }
}

/// A change of an enclave table. Lists hold at least one item: the protocol has no empty
/// requests, and [`Operation::emit`] refuses them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Register (or re-register) enclaves, attaching each one's categories to its application.
    Register(Vec<Registration>),
    /// Unregister the enclaves at these addresses.
    Unregister(Vec<IpAddr>),
    /// Attach categories to an application that has a registered enclave.
    Attach {
        /// The application.
        app: Measurement,
        /// The categories, in order.
        categories: Vec<Category>,
    },
    /// Detach categories from an application.
    Detach {
        /// The application.
        app: Measurement,
        /// The categories, in order.
        categories: Vec<Category>,
    },
    /// Unregister every enclave.
    Flush,
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
    /// replace transaction; a flush there is the owner's REPLACE_BEGIN, which starts over with
    /// an empty staging table.
    Staged,
}

/// Why an operation cannot be written as a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmitError {
    /// The buffer has no room left.
    NoRoom,
    /// A list without items: no request says "nothing".
    Empty,
    /// Command 1 cannot say it (IPv6, several items, or more than one category).
    NotLegacy,
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
            EmitError::NotLegacy => "the original protocol (command 1) carries one IPv4 enclave with at most one category, or one category, per request",
        })
    }
}

impl std::error::Error for EmitError {}

impl From<LegacyOp> for Operation {
    fn from(op: LegacyOp) -> Operation {
        match op {
            LegacyOp::Register { addr, app, host, category } => {
                Operation::Register(vec![Registration { addr: addr.into(), app, host: host.into(), categories: category.into_iter().collect() }])
            }
            LegacyOp::Unregister { addr } => Operation::Unregister(vec![addr.into()]),
            LegacyOp::Attach { app, category } => Operation::Attach { app, categories: vec![category] },
            LegacyOp::Detach { app, category } => Operation::Detach { app, categories: vec![category] },
            LegacyOp::Flush => Operation::Flush,
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
            Operation::Unregister(addrs) => LegacyOp::Unregister { addr: v4(single(addrs)?)? },
            Operation::Attach { app, categories } => LegacyOp::Attach { app: *app, category: *single(categories)? },
            Operation::Detach { app, categories } => LegacyOp::Detach { app: *app, category: *single(categories)? },
            Operation::Flush => LegacyOp::Flush,
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
    /// The command that carries the operation in `dialect`.
    pub fn command(&self, dialect: Dialect) -> u8 {
        match (dialect, self) {
            (Dialect::Legacy, _) => cmd::LEGACY,
            (Dialect::Live, Operation::Register(_)) => cmd::ENCLAVE_SET,
            (Dialect::Live, Operation::Unregister(_)) => cmd::ENCLAVE_DEL,
            (Dialect::Live, Operation::Attach { .. }) => cmd::CAT_ADD,
            (Dialect::Live, Operation::Detach { .. }) => cmd::CAT_DEL,
            (Dialect::Live, Operation::Flush) => cmd::FLUSH,
            (Dialect::Staged, Operation::Register(_)) => cmd::REPLACE_ADD,
            (Dialect::Staged, Operation::Unregister(_)) => cmd::REPLACE_DEL,
            (Dialect::Staged, Operation::Attach { .. }) => cmd::REPLACE_CAT_ADD,
            (Dialect::Staged, Operation::Detach { .. }) => cmd::REPLACE_CAT_DEL,
            (Dialect::Staged, Operation::Flush) => cmd::REPLACE_BEGIN,
        }
    }

    /// Writes the request's attributes into `w` and returns its command: what
    /// [`Operation::parse`] (and the kernel's [`Request::parse`]) reads back.
    pub fn emit(&self, dialect: Dialect, w: &mut AttrWriter<'_>) -> Result<u8, EmitError> {
        if dialect == Dialect::Legacy {
            LegacyOp::try_from(self)?.emit(w)?;
            return Ok(cmd::LEGACY);
        }
        let nonempty = |n: usize| if n == 0 { Err(EmitError::Empty) } else { Ok(()) };
        match self {
            Operation::Register(list) => {
                nonempty(list.len())?;
                list.iter().try_for_each(|r| r.emit(w))?;
            }
            Operation::Unregister(addrs) => {
                nonempty(addrs.len())?;
                addrs.iter().try_for_each(|addr| w.put_enclave(addr, None, None, &[]))?;
            }
            Operation::Attach { app, categories } | Operation::Detach { app, categories } => {
                nonempty(categories.len())?;
                w.put_app_categories(app, categories)?;
            }
            Operation::Flush => {}
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
        // bytes, a measurement of 32, a category of at most 21; command 1 adds a flag.
        const CAT: usize = 4 + 24;
        const ADDR: usize = 4 + 16;
        const APP: usize = 4 + 32;
        const FLAG: usize = 4;
        FLAG + match self {
            Operation::Register(list) => list.iter().map(|r| 4 + 2 * ADDR + APP + CAT * r.categories.len()).sum(),
            Operation::Unregister(addrs) => addrs.len() * (4 + ADDR),
            Operation::Attach { categories, .. } | Operation::Detach { categories, .. } => APP + CAT * categories.len(),
            Operation::Flush => 0,
        }
    }

    /// Reads back the operation request `command` carries and the dialect it is in; a command
    /// that is no operation (GET, STATS, REPLACE_COMMIT, ...) is refused.
    pub fn parse(command: u8, payload: &[u8]) -> Result<(Dialect, Operation), ProtoError> {
        let not_an_operation = ProtoError { errno: errno::EINVAL, attr: None, msg: c"the command is not an operation on the table" };
        Operation::from_request(&Request::parse(command, payload).map_err(|refusal| refusal.error)?)?.ok_or(not_an_operation)
    }

    /// The operation a decoded request performs, if it is one, and its dialect. Fails only on a
    /// malformed nest of an ENCLAVE_SET or a REPLACE_ADD, which the decoder leaves to be found
    /// when the nests are read.
    pub fn from_request(request: &Request<'_>) -> Result<Option<(Dialect, Operation)>, ProtoError> {
        Ok(Some(match request {
            Request::Legacy(op) => (Dialect::Legacy, Operation::from(*op)),
            Request::Register(additions) => (Dialect::Live, Operation::Register(registrations(additions)?)),
            Request::Unregister(list) => (Dialect::Live, Operation::Unregister(list.iter().map(|s| s.addr).collect())),
            Request::Flush => (Dialect::Live, Operation::Flush),
            Request::Attach { app, categories } => (Dialect::Live, Operation::Attach { app: *app, categories: categories.iter().collect() }),
            Request::Detach { app, categories } => (Dialect::Live, Operation::Detach { app: *app, categories: categories.iter().collect() }),
            Request::StagedRegister(additions) => (Dialect::Staged, Operation::Register(registrations(additions)?)),
            Request::StagedUnregister(list) => (Dialect::Staged, Operation::Unregister(list.iter().map(|s| s.addr).collect())),
            Request::StagedAttach { app, categories } => (Dialect::Staged, Operation::Attach { app: *app, categories: categories.iter().collect() }),
            Request::StagedDetach { app, categories } => (Dialect::Staged, Operation::Detach { app: *app, categories: categories.iter().collect() }),
            Request::ReplaceBegin => (Dialect::Staged, Operation::Flush),
            Request::Get { .. } | Request::Stats | Request::ReplaceCommit | Request::ReplaceAbort => return Ok(None),
        }))
    }
}

/// The registrations of `additions`, or the first malformed nest's error.
fn registrations(additions: &Additions<'_>) -> Result<Vec<Registration>, ProtoError> {
    let incomplete = ProtoError { errno: errno::EINVAL, attr: Some(attr::ENCLAVE), msg: c"enclave nest needs ADDR, APP and HOST_ADDR" };
    additions.iter_at().map(|item| item.map_err(|(_, e)| e).and_then(|(_, spec)| Registration::from_spec(&spec).ok_or(incomplete))).collect()
}

impl From<Registration> for Operation {
    fn from(r: Registration) -> Operation {
        Operation::Register(vec![r])
    }
}
