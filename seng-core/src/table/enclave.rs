// SPDX-License-Identifier: GPL-2.0-only
//! Enclave nodes: an address, its untrusted host and its application, in the fewest bytes the
//! two families allow. The table keeps one map per address family, so a node holds its address
//! in its own family's width; the host is inline in its own family's width too, which the low bit
//! of the application pointer tells. An IPv4 enclave on an IPv4 host is 16 bytes (kmalloc-16);
//! an IPv4 enclave on an IPv6 host or the other way round 32 (28 used); an IPv6 enclave on an
//! IPv6 host 40. A packet still meets one pointer to follow: node, then application.

use core::alloc::Layout;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::ptr::NonNull;

use super::map::{Keyed, RcuMap};
use super::{AppNode, EnclaveTable, Platform};
use crate::hash::TableKey;

/// The low bit of [`EnclaveHead::app`]: the host that follows the head is IPv6.
const V6_HOST: usize = 1;

/// The part of every enclave node the map reads (its key) and the application; the host follows.
#[repr(C)]
pub(crate) struct EnclaveHead<A> {
    /// The application, with [`V6_HOST`] set when the host is IPv6.
    app: *const AppNode,
    addr: A,
}

/// A whole node: the head's fields, then the host (flat, so that an IPv4 host fills the padding
/// the head alone would end with; the head's fields are at the same offsets under `repr(C)`).
#[repr(C)]
pub(crate) struct EnclaveNode<A, H> {
    app: *const AppNode,
    addr: A,
    host: H,
}

impl<A: Addr> Keyed for EnclaveHead<A> {
    type Key = A;
    #[inline(always)]
    fn key(&self) -> &A {
        &self.addr
    }
}

/// A node of either family, as an [`super::EnclaveRef`] keeps it: a raw pointer, with the
/// provenance of the whole node (host included).
#[derive(Clone, Copy)]
pub(crate) enum AnyNode {
    V4(NonNull<EnclaveHead<Ipv4Addr>>),
    V6(NonNull<EnclaveHead<Ipv6Addr>>),
}

/// An address family's address as an enclave key, with the table's map of that family.
pub(crate) trait Addr: TableKey + Sized {
    /// The address as an [`IpAddr`].
    fn ip(self) -> IpAddr;
    /// The node, typed by family.
    fn any(node: NonNull<EnclaveHead<Self>>) -> AnyNode;
    /// The table's map of this family.
    fn map<P: Platform>(table: &EnclaveTable<P>) -> &RcuMap<EnclaveHead<Self>>;
}

impl Addr for Ipv4Addr {
    #[inline(always)]
    fn ip(self) -> IpAddr {
        IpAddr::V4(self)
    }
    #[inline(always)]
    fn any(node: NonNull<EnclaveHead<Self>>) -> AnyNode {
        AnyNode::V4(node)
    }
    #[inline(always)]
    fn map<P: Platform>(table: &EnclaveTable<P>) -> &RcuMap<EnclaveHead<Self>> {
        &table.enclaves4
    }
}

impl Addr for Ipv6Addr {
    #[inline(always)]
    fn ip(self) -> IpAddr {
        IpAddr::V6(self)
    }
    #[inline(always)]
    fn any(node: NonNull<EnclaveHead<Self>>) -> AnyNode {
        AnyNode::V6(node)
    }
    #[inline(always)]
    fn map<P: Platform>(table: &EnclaveTable<P>) -> &RcuMap<EnclaveHead<Self>> {
        &table.enclaves6
    }
}

/// Allocates an unpublished node of `addr` on `host` for the application `app`.
pub(crate) fn alloc<A: Addr, P: Platform>(platform: &P, addr: A, app: NonNull<AppNode>, host: IpAddr) -> Option<NonNull<EnclaveHead<A>>> {
    let app = app.as_ptr().cast_const();
    match host {
        IpAddr::V4(host) => write(platform, EnclaveNode { app, addr, host }),
        IpAddr::V6(host) => write(platform, EnclaveNode { app: app.map_addr(|a| a | V6_HOST), addr, host }),
    }
}

fn write<A, H, P: Platform>(platform: &P, node: EnclaveNode<A, H>) -> Option<NonNull<EnclaveHead<A>>> {
    let ptr = platform.alloc(Layout::new::<EnclaveNode<A, H>>())?.cast::<EnclaveNode<A, H>>();
    // SAFETY: freshly allocated for this layout.
    unsafe { ptr.as_ptr().write(node) };
    // The head's fields begin the node (repr(C) both).
    Some(ptr.cast())
}

/// Whether the node's host is IPv6.
///
/// # Safety
/// `node` came from [`alloc`] and is live.
#[inline(always)]
unsafe fn v6_host<A>(node: NonNull<EnclaveHead<A>>) -> bool {
    // SAFETY: by the caller.
    unsafe { node.as_ref() }.app.addr() & V6_HOST != 0
}

/// The node's application.
///
/// # Safety
/// `node` came from [`alloc`] and is live.
#[inline(always)]
pub(crate) unsafe fn app<A>(node: NonNull<EnclaveHead<A>>) -> NonNull<AppNode> {
    // SAFETY: by the caller; the pointer without its flag is the application [`alloc`] got.
    unsafe { NonNull::new_unchecked(node.as_ref().app.map_addr(|a| a & !V6_HOST).cast_mut()) }
}

/// The node's address.
///
/// # Safety
/// `node` came from [`alloc`] and is live.
#[inline(always)]
pub(crate) unsafe fn addr<A: Addr>(node: NonNull<EnclaveHead<A>>) -> IpAddr {
    // SAFETY: by the caller.
    unsafe { node.as_ref() }.addr.ip()
}

/// The node's host.
///
/// # Safety
/// `node` came from [`alloc`] and is live; its provenance is the whole node's.
#[inline(always)]
pub(crate) unsafe fn host<A>(node: NonNull<EnclaveHead<A>>) -> IpAddr {
    // SAFETY: by the caller; the flag says which node type [`alloc`] made.
    unsafe {
        if v6_host(node) {
            IpAddr::V6(node.cast::<EnclaveNode<A, Ipv6Addr>>().as_ref().host)
        } else {
            IpAddr::V4(node.cast::<EnclaveNode<A, Ipv4Addr>>().as_ref().host)
        }
    }
}

/// Releases a node: deferred if it was ever published.
///
/// # Safety
/// `node` came from [`alloc`] with this platform and is unlinked; as [`Platform::retire`] /
/// [`Platform::free`].
pub(crate) unsafe fn release<A, P: Platform>(platform: &P, node: NonNull<EnclaveHead<A>>, deferred: bool) {
    // SAFETY: by the caller.
    let layout = if unsafe { v6_host(node) } { Layout::new::<EnclaveNode<A, Ipv6Addr>>() } else { Layout::new::<EnclaveNode<A, Ipv4Addr>>() };
    // SAFETY: forwarded.
    unsafe {
        if deferred {
            platform.retire(node.cast(), layout)
        } else {
            platform.free(node.cast(), layout)
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use core::mem::size_of;

    /// The kernel's memory per enclave is its node's kmalloc size class plus its share of the
    /// map's slots (8 bytes each, one half to one quarter full: 16 to 32 bytes).
    #[test]
    fn node_sizes() {
        assert_eq!(size_of::<EnclaveNode<Ipv4Addr, Ipv4Addr>>(), 16);
        assert_eq!(size_of::<EnclaveNode<Ipv4Addr, Ipv6Addr>>(), 32);
        assert_eq!(size_of::<EnclaveNode<Ipv6Addr, Ipv4Addr>>(), 32);
        assert_eq!(size_of::<EnclaveNode<Ipv6Addr, Ipv6Addr>>(), 40);
    }
}
