// SPDX-License-Identifier: GPL-2.0-only
//! The values the library hands in and out: an enclave registration and the table statistics.

use std::fmt;
use std::net::IpAddr;

use seng_core::script::Command;
use seng_core::{Category, Measurement};

/// One enclave as registered in the module: its address, application, untrusted host, and the
/// categories of its application.
///
/// Addresses are plain [`IpAddr`]s (IPv4 or IPv6); the library puts them on the wire in network
/// byte order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Enclave {
    /// The enclave's address.
    pub addr: IpAddr,
    /// Its application measurement (MRENCLAVE).
    pub app: Measurement,
    /// The untrusted host it runs on.
    pub host: IpAddr,
    /// When registering: categories to attach to the application. When read back: the
    /// application's categories, in the order they were attached.
    pub categories: Vec<Category>,
}

impl Enclave {
    /// The `enclave add` command that registers it (the line `seng save` prints).
    pub fn into_command(self) -> Command {
        Command::EnclaveAdd { ip: self.addr, app: self.app, host: self.host, categories: self.categories }
    }
}

impl fmt::Display for Enclave {
    /// `ADDR app HEX host ADDR [cat NAME]...`, the line `seng list` and `seng get` print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} app {} host {}", self.addr, self.app, self.host)?;
        for c in &self.categories {
            write!(f, " cat {}", c.save_form())?;
        }
        Ok(())
    }
}

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
