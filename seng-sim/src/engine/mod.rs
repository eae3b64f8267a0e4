// SPDX-License-Identifier: GPL-2.0-only
//! The replay engine, by phase: [`compile`] turns parsed rules into a compact form once,
//! [`traverse`] runs a packet through the chains of a compiled table (jumps, gotos, RETURN,
//! policies, non-terminating LOG, MARK, CONNMARK and NOTRACK, `hotdrop` on truncated headers,
//! counters), [`walk`] takes a packet through the hooks and their tables in the kernel's order
//! with conntrack and NAT, [`sim`] holds the [`Simulator`] that drives a capture through it with
//! timed enclave events, and [`trace`] words what happened to a packet.
//!
//! This file owns the options and the vocabulary the phases share (hooks, verdicts, errors).
//!
//! The `-m seng` match is decided by [`seng_core::decide()`] (what [`seng_core::match_packet`]
//! runs in the kernel module) on a [`seng_core::SengMtInfo`] built once per rule from its
//! [`seng_core::Rule`], with the simulator's enclave table's answers for the packet's addresses:
//! the kernel module's decision, not a copy of it. Each address is looked up once per table
//! traversal, however many seng rules the packet meets.

use std::io;

use crate::capture;
use crate::net::{NetConfig, NetError};
pub use crate::rules::{Hook, TableKind};

/// How to replay.
#[derive(Clone, Debug)]
pub struct Options {
    /// Interfaces and routes.
    pub net: NetConfig,
    /// Verify transport checksums of arriving packets (`nf_conntrack_checksum`).
    pub checksum: bool,
    /// Most enclaves the table holds.
    pub capacity: usize,
    /// The iptables backend whose translation of the rules is modelled.
    pub backend: Backend,
}

impl Default for Options {
    fn default() -> Self {
        Options { net: NetConfig::default(), checksum: true, capacity: 1 << 20, backend: Backend::Legacy }
    }
}

/// The iptables backend the rules were loaded with. The two give the same verdicts but for
/// packets whose transport header is cut short: `iptables-legacy` runs the x_tables `tcp` and
/// `udp` matches, which read the whole header and drop the packet (`hotdrop`) when it is not
/// there; `iptables-nft` translates their ports and flags into nftables payload expressions,
/// which read only the bytes of the field they test and just do not match when those are
/// missing. Every other modelled match is the same x_tables code under both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// `iptables-legacy` (x_tables).
    #[default]
    Legacy,
    /// `iptables-nft` (nf_tables, with x_tables matches through nft_compat where it has no
    /// native translation).
    Nft,
}

/// What the tables decided for a packet at one hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted.
    Accept,
    /// Dropped (DROP, a DROP policy, or a match's `hotdrop`).
    Drop,
    /// Rejected (REJECT; the packet is dropped and an error sent).
    Reject,
}

impl Verdict {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Accept => "ACCEPT",
            Verdict::Drop => "DROP",
            Verdict::Reject => "REJECT",
        }
    }
}

/// Something wrong while replaying.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The capture is damaged.
    #[error(transparent)]
    Capture(#[from] capture::CaptureError),
    /// An enclave event could not be applied (a line of the enclave script).
    #[error("{line}: {message}")]
    Event {
        /// The script line.
        line: usize,
        /// What went wrong.
        message: String,
    },
    /// Bad network options.
    #[error(transparent)]
    Net(#[from] NetError),
    /// Writing the trace failed.
    #[error("writing the trace")]
    Io(#[from] io::Error),
}

pub mod compile;
pub mod sim;
pub mod trace;
pub mod traverse;
pub mod walk;

pub use compile::Compiled;
pub use sim::{CtTally, EventRecord, HookTally, Simulator, Stats};
pub use trace::{ct_name, Describe};
pub use traverse::{Counter, Decider};
