// SPDX-License-Identifier: GPL-2.0-only
//! The seng match engine, shared verbatim by the kernel module and the simulator.
//!
//! seng decides per packet from *which attested application* an address belongs to. This crate
//! owns everything that decision depends on, so the kernel and the offline simulator cannot
//! disagree:
//!
//! - [`rule`]: the six `-m seng` options, parsed from iptables option text and printed back in the
//!   canonical form `iptables-save` emits;
//! - [`matchinfo`]: the revision-0 kernel/user ABI struct, byte-identical to the original, with
//!   validation;
//! - [`table`]: the enclave table (enclave IP → app, host; app → categories), lock-free for
//!   readers, bounded, with flat lookup cost;
//! - [`mod@decide`]: the match decision as one pure function;
//! - [`genl`]: the generic netlink protocol numbers;
//! - [`engine`]: every request's effect on the table, for both kernel flavours and user space;
//! - [`origin`]: whose entry an enclave is (the local SENG server's or a remote gateway's), and
//!   the rules between origins;
//! - `operation` (with `std`): the five operations and the registration, one vocabulary from
//!   script text to netlink request to client library;
//! - `script` (with `std`): the text format of enclave registrations and timed events.
//!
//! The crate is `no_std` and never allocates or panics on the packet path; the `std` feature adds
//! user-space conveniences only.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(missing_docs)]
// The kernel object must have no panic path: forbid the usual sources outside tests.
#![cfg_attr(not(test), warn(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod category;
pub mod decide;
pub mod engine;
pub mod family;
pub mod genl;
mod hash;
pub mod host;
pub mod matchinfo;
pub mod measurement;
#[cfg(feature = "std")]
pub mod operation;
pub mod origin;
pub mod rule;
#[cfg(feature = "std")]
pub mod script;
pub mod table;

pub use category::Category;
pub use decide::{decide, match_packet, EnclaveMeta};
pub use family::Family;
pub use host::HostMask;
pub use matchinfo::SengMtInfo;
pub use measurement::Measurement;
pub use origin::{GatewayName, Origin};
pub use rule::Rule;
