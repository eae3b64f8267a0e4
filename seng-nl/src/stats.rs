// SPDX-License-Identifier: GPL-2.0-only
//! The values the library hands out besides registrations: the table statistics.

/// Counters of a namespace's enclave table (the STATS reply).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Registered enclaves.
    pub enclaves: u64,
    /// Applications with at least one enclave.
    pub apps: u64,
    /// Most enclaves the table accepts (the module's `capacity` parameter).
    pub capacity: u64,
    /// Slots of the enclave index.
    pub slots: u64,
    /// Change counter: it moves on every change of the table.
    pub generation: u64,
}
