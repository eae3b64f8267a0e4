// SPDX-License-Identifier: GPL-2.0-only
//! Per-network-namespace state and the module's part of every request: the packet-path match,
//! `checkentry`, dumps, and handing each generic netlink request to seng-core's
//! [`Engine`], which decides everything a request changes. Shared verbatim by both flavours of
//! the module: the distro one reaches it through the C ABI of `ffi.rs`, the Rust-for-Linux one
//! calls it directly.
//!
//! Readers (the match, dumps) load the live table with acquire ordering inside an RCU read-side
//! section. Writers run with the namespace's mutex held by the glue. The engine's services here
//! are the kernel's: an expedited RCU grace period and a conntrack walk to end the
//! connections of the addresses a change concerns.

use core::ffi::{c_void, CStr};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::ptr::NonNull;

use seng_core::engine::{Ending, Engine, Services};
use seng_core::genl::{ReadScope, Scoped};
use seng_core::matchinfo::MatchInfoError;
use seng_core::table::{EnclaveTable, Platform};
use seng_core::{match_addresses, Family, SengMtInfo};

pub use seng_core::engine::{Handled, Refusal};

use crate::platform::{boxed, unbox, KernelPlatform};

extern "C" {
    /// `get_random_u64()`.
    fn seng_glue_random_u64() -> u64;
    /// `synchronize_rcu_expedited()`.
    fn seng_glue_grace_period();
    /// Deletes the conntrack entries of namespace `net` whose original or reply tuple has an
    /// address in `set` (tested with [`ending_contains`]).
    fn seng_glue_end_connections(net: *mut c_void, set: *const c_void);
}

/// One network namespace's seng state.
pub struct NetState {
    engine: Engine<KernelPlatform>,
}

/// A generic netlink request, as the kernel glue hands it over.
pub struct Request<'a> {
    /// `struct net *` of the request, handed back to the conntrack glue.
    pub net: *mut c_void,
    /// genl command.
    pub cmd: u8,
    /// Attributes after the genl header.
    pub payload: &'a [u8],
    /// Sender's netlink port (owner of a replace transaction).
    pub portid: u32,
    /// Room for reply attributes (GET and STATS answer with some).
    pub reply: Option<&'a mut [u8]>,
}

/// The kernel's services for the engine, for a request in namespace `net`.
struct Kernel {
    net: *mut c_void,
}

impl Services for Kernel {
    fn seed(&mut self) -> u64 {
        // SAFETY: plain call.
        unsafe { seng_glue_random_u64() }
    }

    fn grace_period(&mut self) {
        // SAFETY: process context (writers hold a mutex).
        unsafe { seng_glue_grace_period() }
    }

    fn end_connections<P: Platform>(&mut self, ending: &Ending<'_, P>) {
        // The glue hands the pointer back to `ending_contains`, which reads it as this type.
        let ending = ending as *const Ending<'_, P> as *const c_void;
        // SAFETY: process context; `ending` outlives the call and is an `Ending` of the kernel
        // platform (the only one the engine here is built with).
        unsafe { seng_glue_end_connections(self.net, ending) }
    }
}

/// Reads an address of `family` from a 16-byte `union nf_inet_addr`.
fn inet_addr(family: Family, bytes: &[u8; 16]) -> IpAddr {
    match family {
        Family::Ipv4 => {
            let [a, b, c, d, ..] = *bytes;
            IpAddr::V4(Ipv4Addr::new(a, b, c, d))
        }
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(*bytes)),
    }
}

impl NetState {
    /// A namespace's state with an empty table; `None` when memory is short.
    pub fn new(capacity: u32) -> Option<NonNull<NetState>> {
        let mut kernel = Kernel { net: core::ptr::null_mut() };
        let engine = Engine::new(KernelPlatform, capacity as usize, kernel.seed()).ok()?;
        boxed(NetState { engine })
    }

    /// Frees a namespace's state and tables.
    ///
    /// # Safety
    /// `state` came from [`NetState::new`]; no reader or writer can reach it any more (the glue
    /// has unregistered everything and waited for a grace period).
    pub unsafe fn free(state: NonNull<NetState>) {
        // SAFETY: by the caller.
        unsafe { unbox(state) }
    }

    fn live(&self) -> &EnclaveTable<KernelPlatform> {
        self.engine.live()
    }

    // The packet-path decision of one rule, one function per family: each xt_match the module
    // registers is of one family, and xtables calls it only for packets of that family (ip_tables,
    // ip6_tables, and nft_compat in ip and ip6 tables; other nft families find no seng match).
    // So no per-packet dispatch, and each reads and compares only its own width.

    /// The packet-path decision of one IPv4 rule for the packet whose IPv4 header is at
    /// `header`. Call inside an RCU read-side section.
    ///
    /// # Safety
    /// `header` points to the packet's IPv4 header, readable for its fixed part (ip_tables
    /// keeps it in the linear area).
    #[inline(always)]
    pub unsafe fn matches_ipv4(&self, info: &SengMtInfo, header: *const u8) -> bool {
        // SAFETY: saddr and daddr lie within the fixed header, by the caller.
        let read = move |at: usize| IpAddr::V4(Ipv4Addr::from(unsafe { header.add(at).cast::<[u8; 4]>().read_unaligned() }));
        match_addresses(info, Family::Ipv4, self.live(), move || read(12), move || read(16))
    }

    /// [`NetState::matches_ipv4`] for an IPv6 rule and header.
    ///
    /// # Safety
    /// As [`NetState::matches_ipv4`], of IPv6 (ip6_tables keeps the fixed header linear too).
    #[inline(always)]
    pub unsafe fn matches_ipv6(&self, info: &SengMtInfo, header: *const u8) -> bool {
        // SAFETY: saddr and daddr lie within the fixed header, by the caller.
        let read = move |at: usize| IpAddr::V6(Ipv6Addr::from(unsafe { header.add(at).cast::<[u8; 16]>().read_unaligned() }));
        match_addresses(info, Family::Ipv6, self.live(), move || read(8), move || read(24))
    }

    /// `checkentry`: whether a rule's match data is valid for `nfproto`, else why not.
    pub fn check(info: &SengMtInfo, nfproto: u8) -> Result<(), &'static CStr> {
        if Family::from_nfproto(nfproto).is_none() {
            return Err(c"only IPv4 and IPv6 rules are supported");
        }
        info.validate().map_err(|e| match e {
            MatchInfoError::UnknownFlags(_) => c"unknown flag bits set (userspace newer than the module?)",
            MatchInfoError::NegationWithoutOption(_) => c"a negation flag is set without its option",
            MatchInfoError::NoOption => c"no option set: give at least one of --src-app, --src-cat, --src-host, --dst-app, --dst-cat, --dst-host",
            MatchInfoError::Category { dst: false, .. } => c"--src-cat is not a NUL-terminated name of 1-20 bytes",
            MatchInfoError::Category { dst: true, .. } => c"--dst-cat is not a NUL-terminated name of 1-20 bytes",
            MatchInfoError::Size(_) => c"match data has the wrong size",
        })
    }

    /// The stamp of one dump part (netlink's `cb->seq`): a dump overlapping any change gets
    /// parts with different stamps and is marked `NLM_F_DUMP_INTR`.
    pub fn dump_stamp(&self) -> u32 {
        self.engine.dump_stamp()
    }

    /// Fills `buf` with the ENCLAVE nests of the dump whose request attributes are `request`
    /// (the origins it reads), from `*cursor` on, and advances the cursor. Returns the bytes
    /// written (0: the dump is complete) or a positive errno. Call inside an RCU read-side
    /// section.
    pub fn dump(&self, request: &[u8], cursor: &mut u64, buf: &mut [u8]) -> Result<usize, i32> {
        let scope = ReadScope::parse(request).map_err(|e| e.errno)?;
        let mut at = *cursor as usize;
        let written = self.engine.dump(&scope, &mut at, buf).map_err(|e| e.errno)?;
        *cursor = at as u64;
        Ok(written)
    }

    /// Whether a closing socket of port `portid` may own a replace transaction; read without
    /// the writer lock, so sockets that never opened one (every other genetlink user) close
    /// without taking it.
    pub fn may_own_transaction(&self, portid: u32) -> bool {
        self.engine.may_own_transaction(portid)
    }

    /// Drops the replace transaction owned by a closing netlink socket.
    ///
    /// # Safety
    /// The namespace's writer lock is held.
    pub unsafe fn release(&self, portid: u32) {
        // SAFETY: by the caller (writer lock held).
        unsafe { self.engine.release(portid) }
    }

    /// Handles one generic netlink request.
    ///
    /// # Safety
    /// The namespace's writer lock is held.
    pub unsafe fn handle(&self, req: Request<'_>) -> Result<Handled, Refusal> {
        let request = Scoped::parse(req.cmd, req.payload)?;
        let mut kernel = Kernel { net: req.net };
        // SAFETY: writer lock held by the caller; KernelPlatform retires after a grace period.
        unsafe { self.engine.execute(&mut kernel, request, req.portid, req.reply) }
    }
}

/// Whether a conntrack address of protocol family `nfproto` is one whose connections end.
///
/// # Safety
/// `set` is the pointer handed to `seng_glue_end_connections`.
pub unsafe fn ending_contains(set: *const c_void, nfproto: u8, addr: &[u8; 16]) -> bool {
    let Some(family) = Family::from_nfproto(nfproto) else { return false };
    // SAFETY: by the caller: an `Ending` of the kernel platform, alive during the walk.
    unsafe { &*(set as *const Ending<'_, KernelPlatform>) }.contains(&inet_addr(family, addr))
}
