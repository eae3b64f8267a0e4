// SPDX-License-Identifier: GPL-2.0-only
//! seng-nl: the user-space client of seng.ko's generic netlink family `seng_family`.
//!
//! ```no_run
//! use seng_nl::{Client, Origin, Registration};
//!
//! let mut seng = Client::connect()?;
//! seng.register(&Registration {
//!     addr: "192.168.28.10".parse().unwrap(),
//!     app: "d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0".parse().unwrap(),
//!     host: "10.0.0.5".parse().unwrap(),
//!     categories: vec!["Browser".parse().unwrap()],
//!     origin: Origin::Local,
//! })?;
//! for enclave in seng.list()? {
//!     println!("{enclave}");
//! }
//! # Ok::<(), seng_nl::Error>(())
//! ```
//!
//! - [`Operation`] and [`Registration`] (from [`seng_core::operation`]): the five operations
//!   (register, unregister, attach and detach categories, flush), each for one [`Origin`] (the
//!   local SENG server's entries, or a gateway's), the same vocabulary as the script text of
//!   `seng save` and the netlink requests;
//! - [`Client`]: [`Client::apply`] performs any operation, with a method per operation beside
//!   it, batches, get, dumps, statistics, atomic replacement, and the original protocol's
//!   operations;
//! - [`Replace`]: a whole-table replacement built operation by operation, swapped in
//!   atomically;
//! - [`Subscription`] / [`EventStream`]: the module's change events;
//! - [`Error`]: failures, with the module's extended-ack message and what to do about them.
//!
//! The protocol's numbers, the encoding of every request and the decoding of every reply come
//! from [`seng_core::genl`] and [`seng_core::operation`], beside the decoders the module itself
//! runs; this crate adds the netlink framing (through the rust-netlink
//! crates `netlink-sys`, `netlink-packet-core` and `netlink-packet-generic`), batching, acks and
//! error mapping.
#![deny(missing_docs)]

mod client;
mod error;
mod event;
mod stats;
mod wire;

pub use client::{Client, Dump, Replace};
pub use error::{BatchError, BatchFailure, Error, KernelError, ReplaceError, Result};
#[cfg(feature = "tokio")]
pub use event::EventStream;
pub use event::{Event, Subscription};
pub use seng_core::genl::{LegacyOp, ReadScope};
pub use seng_core::operation::{Operation, Registration};
pub use seng_core::origin::GatewayNameError;
pub use stats::Stats;
pub use seng_core::{Category, GatewayName, Measurement, Origin};
