// SPDX-License-Identifier: GPL-2.0-only
//! The unsafe boundary of the Rust-for-Linux `seng.ko`: every use of the kernel's C networking API
//! (xtables, generic netlink, network namespaces, the netlink notifier, conntrack), of module
//! parameters and of RCU-deferred freeing is in this file, behind [`Registrations`] and
//! [`capacity`]. It is the Rust counterpart of the distro flavour's C glue
//! (`seng-kmod/seng_main.c`) and behaves the same way: callbacks only translate between kernel
//! objects and the shared [`NetState`] of `net`, which it calls directly (the distro flavour
//! reaches the same code through the C ABI of `seng-kmod/rust/src/ffi.rs`).
//!
//! The 6.12 `kernel` crate wraps none of these APIs; their bindings come from the headers and
//! helpers that `kernel/rust-netfilter-genetlink.patch` adds to the kernel's `rust/` tree.

use core::alloc::Layout;
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::marker::PhantomPinned;
use core::mem::{offset_of, size_of, MaybeUninit};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use kernel::alloc::allocator::KVmalloc;
use kernel::alloc::{flags, Allocator};
use kernel::bindings;
use kernel::error::to_result;
use kernel::ffi::{c_char, c_int, c_ulong};
use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::Mutex;
use kernel::types::Opaque;

use seng_core::genl::{attr, cmd, EVENTS_MCGRP_NAME, FAMILY_NAME, FAMILY_VERSION, MCGRP_NAME};
use seng_core::matchinfo::MATCHINFO_XT_SIZE;
use seng_core::SengMtInfo;

use crate::net::{self, NetState};

/// A C object shared with the kernel through a static.
#[repr(transparent)]
struct Shared<T>(T);

// SAFETY: the kernel only reads the objects in `Shared` statics (policies, operations, the
// parameter descriptor); values it writes are in `KernelCell`s, written before any reader runs.
unsafe impl<T> Sync for Shared<T> {}

/// A value the kernel writes through a pointer we hand it.
#[repr(transparent)]
struct KernelCell<T>(UnsafeCell<T>);

// SAFETY: the kernel writes the parameter while loading the module, before anything reads it,
// and never again (the parameter is read-only in sysfs).
unsafe impl<T> Sync for KernelCell<T> {}

// Module parameter `capacity`, as `module_param(capacity, uint, 0444)` lays it out.

/// The default capacity, as the distro flavour's.
const DEFAULT_CAPACITY: u32 = 1 << 20;

static CAPACITY: KernelCell<u32> = KernelCell(UnsafeCell::new(DEFAULT_CAPACITY));

// Declared as `module!` does; `struct module` holds a zero-sized lock type that the lint flags,
// but only the symbol's address is used.
#[allow(improper_ctypes)]
extern "C" {
    static __this_module: Opaque<bindings::module>;
}

#[link_section = "__param"]
#[used(compiler)]
static CAPACITY_PARAM: Shared<bindings::kernel_param> = Shared(bindings::kernel_param {
    name: c"capacity".as_ptr().cast(),
    // SAFETY: the module loader provides `__this_module`; only its address is taken.
    mod_: unsafe { __this_module.get() },
    ops: &raw const bindings::param_ops_uint,
    perm: 0o444,
    level: -1,
    flags: 0,
    __bindgen_anon_1: bindings::kernel_param__bindgen_ty_1 {
        arg: CAPACITY.0.get().cast(),
    },
});

/// A `.modinfo` string of a loadable module.
macro_rules! modinfo {
    ($name:ident, $text:literal) => {
        #[link_section = ".modinfo"]
        #[used(compiler)]
        static $name: [u8; $text.len()] = *$text;
    };
}
modinfo!(CAPACITY_PARMTYPE, b"parmtype=capacity:uint\0");
modinfo!(
    CAPACITY_PARM,
    b"parm=capacity:Most enclaves per network namespace (default 1048576)\0"
);

/// The `capacity` module parameter.
pub(crate) fn capacity() -> u32 {
    // SAFETY: written only while the module loads, before any of its code runs.
    unsafe { *CAPACITY.0.get() }
}

// Memory for seng-core (through the shared `platform` module): `kvmalloc`, and for retired
// memory the headless `kvfree_rcu`, which batches pointers and needs no RCU head in the object
// (a 16-byte IPv4 enclave node stays in kmalloc-16).

/// `seng_glue_alloc` of seng_rs.h: at least `size` bytes aligned to 8, or null.
#[no_mangle]
extern "C" fn seng_glue_alloc(size: usize) -> *mut u8 {
    let Ok(layout) = Layout::from_size_align(size, 8) else {
        return ptr::null_mut();
    };
    match KVmalloc::alloc(layout, flags::GFP_KERNEL | flags::__GFP_NOWARN) {
        Ok(mem) => mem.cast::<u8>().as_ptr(),
        Err(_) => ptr::null_mut(),
    }
}

/// `seng_glue_free`: frees at once.
///
/// # Safety
/// `ptr` came from [`seng_glue_alloc`] and nothing can reach it any more.
#[no_mangle]
unsafe extern "C" fn seng_glue_free(ptr: *mut u8) {
    // SAFETY: by the caller.
    unsafe { bindings::kvfree(ptr.cast()) }
}

/// `seng_glue_retire`: frees after the current RCU grace period (`kvfree_rcu_mightsleep`).
///
/// # Safety
/// `ptr` came from [`seng_glue_alloc`] and is no longer reachable by new readers; the caller is
/// a writer in process context (the call may sleep).
#[no_mangle]
unsafe extern "C" fn seng_glue_retire(ptr: *mut u8) {
    // SAFETY: by the caller; a null head asks for the headless form, which takes any kvmalloc
    // pointer.
    unsafe { bindings::kvfree_call_rcu(ptr::null_mut(), ptr.cast()) }
}

/// `seng_glue_random_u64`: the table's hash seed.
#[no_mangle]
extern "C" fn seng_glue_random_u64() -> u64 {
    // SAFETY: plain call.
    unsafe { bindings::get_random_u64() }
}

/// `seng_glue_grace_period`: an expedited grace period, as the distro flavour's glue waits
/// (why: `seng_main.c`).
#[no_mangle]
extern "C" fn seng_glue_grace_period() {
    // SAFETY: the shared code calls it from process context (netlink requests) only.
    unsafe { bindings::synchronize_rcu_expedited() }
}

/// The `nf_ct_iterate_cleanup_net` callback of [`seng_glue_end_connections`]: whether to delete
/// `ct`.
///
/// # Safety
/// `ct` is a live conntrack entry; `set` is the `Ending` handed to `seng_glue_end_connections`.
unsafe extern "C" fn end_connections_iter(ct: *mut bindings::nf_conn, set: *mut c_void) -> c_int {
    // SAFETY: conntrack hands a live entry.
    let tuples = unsafe { &(*ct).tuplehash };
    // `nf_ct_l3num()`: the family of the original tuple.
    let family = tuples[0].tuple.src.l3num as u8;
    let ends = |addr: &bindings::nf_inet_addr| {
        // SAFETY: `set` is the `Ending` handed to `seng_glue_end_connections`; the union is 16 bytes.
        unsafe { net::ending_contains(set, family, &*ptr::from_ref(addr).cast::<[u8; 16]>()) }
    };
    tuples
        .iter()
        .any(|h| ends(&h.tuple.src.u3) || ends(&h.tuple.dst.u3))
        .into()
}

/// `seng_glue_end_connections`: deletes the conntrack entries of `net` with an address of `set`
/// in either tuple.
///
/// # Safety
/// `net` is a live `struct net`; `set` is an `Ending` of the shared `net` module.
#[no_mangle]
unsafe extern "C" fn seng_glue_end_connections(net: *mut c_void, set: *const c_void) {
    let iter = bindings::nf_ct_iter_data {
        net: net.cast(),
        data: set.cast_mut(),
        portid: 0,
        report: 0,
    };
    // SAFETY: by the caller; process context.
    unsafe { bindings::nf_ct_iterate_cleanup_net(Some(end_connections_iter), &iter) }
}

// Per network namespace: the shared state and the lock serialising its writers.

/// The `net_generic` slot id, written by `register_pernet_subsys` before any callback runs.
static NET_ID: AtomicU32 = AtomicU32::new(0);

#[pin_data]
struct PerNet {
    #[pin]
    writer: Mutex<()>,
    /// Null before the namespace's init and after its exit. Nothing here needs dropping: the
    /// kernel frees the slot with the namespace.
    state: AtomicPtr<NetState>,
}

impl PerNet {
    /// The seng slot of `net`.
    ///
    /// # Safety
    /// `net` is live and the pernet operations are registered.
    unsafe fn of<'a>(net: *const bindings::net) -> &'a PerNet {
        // SAFETY: by the caller; the slot was initialised by `net_init` (zeroed memory before,
        // whose null `state` every user checks first).
        unsafe { &*bindings::net_generic(net, NET_ID.load(Ordering::Relaxed)).cast::<PerNet>() }
    }

    fn state(&self) -> *const NetState {
        self.state.load(Ordering::Relaxed)
    }
}

/// `pernet_operations.init`: a new namespace's state.
///
/// # Safety
/// `net` is a namespace being set up; the operations are registered.
unsafe extern "C" fn net_init(net: *mut bindings::net) -> c_int {
    let Some(state) = NetState::new(capacity()) else {
        return ENOMEM.to_errno();
    };
    let init = pin_init!(PerNet { writer <- new_mutex!(()), state: AtomicPtr::new(state.as_ptr()) });
    // SAFETY: the slot is ours, sized for `PerNet` and not yet in use.
    let Ok(()) = unsafe {
        init.__pinned_init(bindings::net_generic(net, NET_ID.load(Ordering::Relaxed)).cast())
    };
    0
}

/// `pernet_operations.exit_batch`: frees the state of dying namespaces.
///
/// # Safety
/// `nets` lists dying namespaces through `exit_list`, each set up by [`net_init`].
unsafe extern "C" fn net_exit_batch(nets: *mut bindings::list_head) {
    // No rule of these namespaces can run any more once readers drain.
    // SAFETY: process context.
    unsafe { bindings::synchronize_rcu() };
    // SAFETY: `nets` is the list of dying namespaces, linked through `exit_list`.
    let mut node = unsafe { (*nets).next };
    while node != nets {
        // SAFETY: `node` is the `exit_list` member of a live `struct net`.
        let net =
            unsafe { node.byte_sub(offset_of!(bindings::net, exit_list)) }.cast::<bindings::net>();
        // SAFETY: registered, and the slot was initialised by `net_init`.
        let pernet = unsafe { PerNet::of(net) };
        if let Some(state) = NonNull::new(pernet.state.swap(ptr::null_mut(), Ordering::Relaxed)) {
            // SAFETY: no reader or writer can reach the state any more.
            unsafe { NetState::free(state) };
        }
        // SAFETY: still on the list.
        node = unsafe { (*node).next };
    }
}

/// The netlink notifier: a replace transaction dies with the socket that opened it.
///
/// # Safety
/// `ptr` is the `struct netlink_notify` of a netlink notifier event.
unsafe extern "C" fn netlink_event(
    _nb: *mut bindings::notifier_block,
    event: c_ulong,
    ptr: *mut c_void,
) -> c_int {
    const DONE: c_int = bindings::NOTIFY_DONE as c_int;
    // SAFETY: netlink notifiers receive a `struct netlink_notify`.
    let n = unsafe { &*ptr.cast::<bindings::netlink_notify>() };
    if event != bindings::NETLINK_URELEASE as c_ulong
        || n.protocol != bindings::NETLINK_GENERIC as c_int
    {
        return DONE;
    }
    // SAFETY: the socket's namespace is live.
    let pernet = unsafe { PerNet::of(n.net) };
    let state = pernet.state();
    // Every generic netlink socket of the namespace passes here: only one that may own a
    // replace transaction waits for the writer lock.
    // SAFETY: a non-null state is live.
    if state.is_null() || !unsafe { (*state).may_own_transaction(n.portid) } {
        return DONE;
    }
    let _writer = pernet.writer.lock();
    // SAFETY: live state, writer lock held.
    unsafe { (*state).release(n.portid) };
    DONE
}

// xtables match

/// `xt_match.match` of the IPv4 match: the per-packet decision. One callback per family, as
/// the distro flavour's: xtables calls a match of one family only for its packets.
///
/// # Safety
/// Called by xtables with an IPv4 packet and the parameters of a rule accepted by [`xt_check`].
unsafe extern "C" fn xt_match_ipv4(
    skb: *const bindings::sk_buff,
    par: *mut bindings::xt_action_param,
) -> bool {
    // SAFETY: by the caller; ip_tables keeps the fixed header in the linear area.
    unsafe {
        let (state, info, header) = xt_match_args(skb, par);
        (*state).matches_ipv4(info, header)
    }
}

/// `xt_match.match` of the IPv6 match.
///
/// # Safety
/// Called by xtables with an IPv6 packet and the parameters of a rule accepted by [`xt_check`].
unsafe extern "C" fn xt_match_ipv6(
    skb: *const bindings::sk_buff,
    par: *mut bindings::xt_action_param,
) -> bool {
    // SAFETY: by the caller; ip6_tables keeps the fixed header in the linear area.
    unsafe {
        let (state, info, header) = xt_match_args(skb, par);
        (*state).matches_ipv6(info, header)
    }
}

/// The namespace's state, the rule's match data and the packet's network header.
///
/// # Safety
/// As the `xt_match.match` callbacks'.
#[inline(always)]
unsafe fn xt_match_args<'a>(
    skb: *const bindings::sk_buff,
    par: *mut bindings::xt_action_param,
) -> (*const NetState, &'a SengMtInfo, *const u8) {
    // SAFETY: xtables hands the hook's state and the rule's match data, validated by
    // `xt_check`; packet path (RCU read side), live namespace.
    unsafe {
        let (hook, info) = (&*(*par).state, (*par).__bindgen_anon_2.matchinfo);
        let header = bindings::skb_network_header(skb);
        (PerNet::of(hook.net).state(), &*info.cast::<SengMtInfo>(), header)
    }
}

/// `xt_match.checkentry`: validates a new rule's match data.
///
/// # Safety
/// Called by xtables with the parameters of a new rule.
unsafe extern "C" fn xt_check(par: *const bindings::xt_mtchk_param) -> c_int {
    // SAFETY: xtables hands the new rule's match data, `matchsize` bytes.
    let (info, family) = unsafe { (&*(*par).matchinfo.cast::<SengMtInfo>(), (*par).family) };
    let Err(msg) = NetState::check(info, family) else {
        return 0;
    };
    // The printk ratelimit, as pr_info_ratelimited (shared with other users of the global state).
    // SAFETY: plain call with a NUL-terminated name.
    if unsafe { bindings::__printk_ratelimit(c"seng_mt_check".as_ptr().cast()) } != 0 {
        // SAFETY: the message is a static NUL-terminated string.
        let msg = unsafe { CStr::from_char_ptr(msg.as_ptr().cast()) };
        pr_info!("rule rejected: {}\n", msg);
    }
    EINVAL.to_errno()
}

/// One `struct xt_match` per family, revision 0.
fn xt_match_reg(family: u32, module: &'static ThisModule) -> bindings::xt_match {
    // SAFETY: all-zero is a valid `struct xt_match` (null pointers, no callbacks).
    let mut reg: bindings::xt_match = unsafe { MaybeUninit::zeroed().assume_init() };
    copy_name(&mut reg.name, "seng");
    reg.revision = 0;
    reg.family = family as u16;
    reg.match_ = Some(if family == bindings::NFPROTO_IPV4 { xt_match_ipv4 } else { xt_match_ipv6 });
    reg.checkentry = Some(xt_check);
    reg.matchsize = MATCHINFO_XT_SIZE as u32;
    reg.me = module.as_ptr();
    reg
}

// Generic netlink family

/// Echoes a successful change to the event group as the request that made it.
///
/// # Safety
/// Called from the family's doit with its `info`.
unsafe fn notify(info: &bindings::genl_info) {
    // SAFETY: a doit's info has a validated genl header and the family; process context.
    unsafe {
        // `genl_has_listeners` for the event group: a batch is up to 32 KiB, copy it only for
        // someone.
        let net = bindings::genl_info_net(info);
        let group = (*info.family).mcgrp_offset + EVENTS_GROUP;
        if bindings::netlink_has_listeners((*net).genl_sock, group) == 0 {
            return;
        }
        let len = bindings::genlmsg_len(info.genlhdr);
        let msg = bindings::genlmsg_new(len as usize, bindings::GFP_KERNEL);
        if msg.is_null() {
            return;
        }
        let hdr = bindings::genlmsg_put(msg, 0, 0, info.family, 0, (*info.genlhdr).cmd);
        if hdr.is_null() {
            bindings::nlmsg_free(msg);
            return;
        }
        bindings::skb_put_data(msg, bindings::genlmsg_data(info.genlhdr), len as u32);
        bindings::genlmsg_end(msg, hdr);
        bindings::genlmsg_multicast_netns(
            info.family,
            bindings::genl_info_net(info),
            msg,
            0,
            EVENTS_GROUP,
            bindings::GFP_KERNEL,
        );
    }
}

/// `genl_ops.doit` of every command.
///
/// # Safety
/// Called by genetlink with a validated request of the family, in process context.
unsafe extern "C" fn genl_doit(
    _skb: *mut bindings::sk_buff,
    info: *mut bindings::genl_info,
) -> c_int {
    // SAFETY: genetlink hands a validated request of the registered family, in process context.
    let info = unsafe { &mut *info };
    // SAFETY: as above.
    let (net, genlhdr) = unsafe { (bindings::genl_info_net(info), &*info.genlhdr) };
    // SAFETY: the request's namespace is live.
    let pernet = unsafe { PerNet::of(net) };
    let mut reply = None;
    if crate::replies(genlhdr.cmd) {
        // SAFETY: process context.
        let Some(msg) = NonNull::new(unsafe {
            bindings::genlmsg_new(bindings::NLMSG_GOODSIZE, bindings::GFP_KERNEL)
        }) else {
            return ENOMEM.to_errno();
        };
        // SAFETY: a fresh message with room for the header.
        let hdr =
            unsafe { bindings::genlmsg_put_reply(msg.as_ptr(), info, info.family, 0, genlhdr.cmd) };
        if hdr.is_null() {
            // SAFETY: not handed on.
            unsafe { bindings::nlmsg_free(msg.as_ptr()) };
            return -(bindings::EMSGSIZE as c_int);
        }
        reply = Some((msg, hdr));
    }
    // SAFETY: the validated payload follows the genl header.
    let payload = unsafe {
        core::slice::from_raw_parts(
            bindings::genlmsg_data(genlhdr).cast::<u8>(),
            bindings::genlmsg_len(genlhdr) as usize,
        )
    };
    let request = net::Request {
        net: net.cast(),
        cmd: genlhdr.cmd,
        payload,
        portid: info.snd_portid,
        // SAFETY: the attributes go after the header, into the reply's tail room.
        reply: reply.map(|(msg, _)| unsafe {
            core::slice::from_raw_parts_mut(
                bindings::skb_tail_pointer(msg.as_ptr()),
                bindings::skb_tailroom(msg.as_ptr()) as usize,
            )
        }),
    };

    let result = {
        let _writer = pernet.writer.lock();
        // SAFETY: live state, writer lock held.
        unsafe { (*pernet.state()).handle(request) }
    };

    let done = match result {
        Ok(done) => done,
        Err(refusal) => {
            if !info.extack.is_null() {
                // SAFETY: the message is static; the extended ack is the request's; the blamed
                // attribute lies inside the payload, which the request's skb holds.
                unsafe {
                    (*info.extack)._msg = refusal.error.msg.as_ptr().cast();
                    if let Some(attr) = refusal.at.and_then(|at| payload.get(at..at + size_of::<bindings::nlattr>())) {
                        (*info.extack).bad_attr = attr.as_ptr().cast();
                    }
                }
            }
            if let Some((msg, _)) = reply {
                // SAFETY: not handed on.
                unsafe { bindings::nlmsg_free(msg.as_ptr()) };
            }
            return -refusal.error.errno;
        }
    };
    if let Some((msg, hdr)) = reply {
        // SAFETY: `reply_len` bytes of attributes were written into the tail room.
        unsafe {
            bindings::skb_put(msg.as_ptr(), done.reply_len as u32);
            bindings::genlmsg_end(msg.as_ptr(), hdr);
            return bindings::genlmsg_reply(msg.as_ptr(), info);
        }
    }
    if done.notify {
        // SAFETY: from the doit, with its info.
        unsafe { notify(info) };
    }
    0
}

/// `genl_ops.dumpit` of GET: the enclaves, as many as fit, from the cursor on.
///
/// # Safety
/// Called by genetlink with the dump's message and callback state.
unsafe extern "C" fn genl_dumpit(
    skb: *mut bindings::sk_buff,
    cb: *mut bindings::netlink_callback,
) -> c_int {
    // SAFETY: genetlink hands the dump's message (with its socket) and callback state, and the
    // family and request in the dump info it keeps in `cb->data`; the request's attributes (whose
    // entries it reads) follow its genl header.
    let (cb, pernet, family, request) = unsafe {
        let cb = &mut *cb;
        let info = &(*cb.data.cast::<bindings::genl_dumpit_info>()).info;
        let request = core::slice::from_raw_parts(
            bindings::genlmsg_data(info.genlhdr).cast::<u8>(),
            bindings::genlmsg_len(info.genlhdr).max(0) as usize,
        );
        (cb, PerNet::of(bindings::sock_net((*skb).sk)), info.family, request)
    };
    // SAFETY: `args` is the long[6] view of the callback's scratch space.
    let mut cursor = unsafe { cb.__bindgen_anon_1.args[0] } as u64;
    // SAFETY: the dump request's skb and header are live; `skb` has room for the header or not.
    let hdr = unsafe {
        bindings::genlmsg_put(
            skb,
            (*bindings::NETLINK_CB(cb.skb)).portid,
            (*cb.nlh).nlmsg_seq,
            family,
            bindings::NLM_F_MULTI as c_int,
            cmd::GET,
        )
    };
    if hdr.is_null() {
        return -(bindings::EMSGSIZE as c_int);
    }
    // SAFETY: readers of the table run inside an RCU read-side section; the buffer is the tail
    // room of `skb`.
    let written = unsafe {
        bindings::rcu_read_lock();
        let state = &*pernet.state();
        cb.seq = state.dump_stamp();
        let room = core::slice::from_raw_parts_mut(
            bindings::skb_tail_pointer(skb),
            bindings::skb_tailroom(skb) as usize,
        );
        let written = state.dump(request, &mut cursor, room);
        bindings::rcu_read_unlock();
        written
    };
    let len = match written {
        Ok(len) => len as c_int,
        Err(errno) => -errno,
    };
    // SAFETY: `hdr` was put into `skb` above; `len` bytes of attributes follow it.
    unsafe {
        if len <= 0 {
            bindings::genlmsg_cancel(skb, hdr);
            return len;
        }
        bindings::genl_dump_check_consistent(cb, hdr);
        bindings::skb_put(skb, len as u32);
        bindings::genlmsg_end(skb, hdr);
        cb.__bindgen_anon_1.args[0] = cursor as _;
        (*skb).len as c_int
    }
}

/// One attribute's policy; the table below is the distro flavour's, entry for entry.
const fn policy(kind: u32, len: u16) -> bindings::nla_policy {
    // SAFETY: all-zero is a valid `struct nla_policy` (NLA_UNSPEC, no validation).
    let mut p: bindings::nla_policy = unsafe { MaybeUninit::zeroed().assume_init() };
    p.type_ = kind as u8;
    p.len = len;
    p
}

/// `NLA_POLICY_EXACT_LEN(len)`.
const fn exact_len(len: i16) -> bindings::nla_policy {
    let mut p = policy(bindings::NLA_BINARY, 0);
    p.validation_type = bindings::nla_policy_validation_NLA_VALIDATE_RANGE as u8;
    p.__bindgen_anon_1.__bindgen_anon_1 =
        bindings::nla_policy__bindgen_ty_1__bindgen_ty_1 { min: len, max: len };
    p
}

const POLICY_LEN: usize = attr::MAX as usize + 1;

/// At the top level of a request (HOST_ADDR is only valid in a nest).
static POLICY: Shared<[bindings::nla_policy; POLICY_LEN]> = Shared({
    let mut p = [const { policy(0, 0) }; POLICY_LEN];
    p[attr::APP as usize] = exact_len(32);
    p[attr::CAT as usize] = policy(bindings::NLA_NUL_STRING, 20);
    p[attr::HOST as usize] = policy(bindings::NLA_U32, 0);
    p[attr::ENC as usize] = policy(bindings::NLA_U32, 0);
    p[attr::ADD as usize] = policy(bindings::NLA_FLAG, 0);
    p[attr::RMV as usize] = policy(bindings::NLA_FLAG, 0);
    p[attr::FLUSH as usize] = policy(bindings::NLA_FLAG, 0);
    // No nested policy: seng-core's decoder checks every attribute of a nest as it reads it,
    // and a nested policy would walk every nest of a batch once more.
    p[attr::ENCLAVE as usize] = policy(bindings::NLA_NESTED, 0);
    p[attr::ADDR as usize] = policy(bindings::NLA_BINARY, 16);
    p[attr::ORIGIN as usize] = policy(bindings::NLA_NUL_STRING, 32);
    p[attr::ALL_ORIGINS as usize] = policy(bindings::NLA_FLAG, 0);
    p
});

/// Every command is for admins; GET also dumps.
const fn op(command: u8) -> bindings::genl_ops {
    bindings::genl_ops {
        doit: Some(genl_doit),
        start: None,
        dumpit: if command == cmd::GET {
            Some(genl_dumpit)
        } else {
            None
        },
        done: None,
        policy: ptr::null(),
        maxattr: 0,
        cmd: command,
        internal_flags: 0,
        flags: bindings::GENL_ADMIN_PERM as u8,
        validate: 0,
    }
}

static OPS: Shared<[bindings::genl_ops; cmd::MAX as usize]> = Shared({
    let mut ops = [const { op(cmd::LEGACY) }; cmd::MAX as usize];
    let mut i = 0;
    while i < ops.len() {
        ops[i] = op(i as u8 + cmd::LEGACY);
        i += 1;
    }
    ops
});

/// The index of the event group in [`MCGRPS`].
const EVENTS_GROUP: u32 = 1;

/// Group 0 is the original's `seng_mcgrp`: the original library joins it and fails on anything
/// but its acks, so nothing is ever sent there. Events go to group [`EVENTS_GROUP`]; they reveal
/// which application runs where: only admins may listen.
static MCGRPS: Shared<[bindings::genl_multicast_group; 2]> = Shared([
    bindings::genl_multicast_group {
        name: name_bytes(MCGRP_NAME),
        flags: 0,
    },
    bindings::genl_multicast_group {
        name: name_bytes(EVENTS_MCGRP_NAME),
        flags: bindings::GENL_MCAST_CAP_NET_ADMIN,
    },
]);

const fn name_bytes<const N: usize>(name: &str) -> [c_char; N] {
    let mut out = [0; N];
    let bytes = name.as_bytes();
    let mut i = 0;
    // The last byte stays NUL.
    while i < bytes.len() && i + 1 < N {
        out[i] = bytes[i] as c_char;
        i += 1;
    }
    out
}

fn copy_name<const N: usize>(dst: &mut [c_char; N], name: &str) {
    *dst = name_bytes(name);
}

fn family(module: &'static ThisModule) -> bindings::genl_family {
    // SAFETY: all-zero is a valid `struct genl_family` (null pointers, no callbacks).
    let mut f: bindings::genl_family = unsafe { MaybeUninit::zeroed().assume_init() };
    copy_name(&mut f.name, FAMILY_NAME);
    f.version = FAMILY_VERSION.into();
    f.maxattr = attr::MAX.into();
    f.policy = POLICY.0.as_ptr();
    f.set_netnsok(1);
    f.set_parallel_ops(1);
    f.module = module.as_ptr();
    f.ops = OPS.0.as_ptr();
    f.n_ops = cmd::MAX;
    f.mcgrps = MCGRPS.0.as_ptr();
    f.n_mcgrps = MCGRPS.0.len() as u8;
    f
}

/// How far [`Registrations::new`] got; teardown undoes exactly that.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    None,
    Pernet,
    Notifier,
    Family,
    Matches,
}

/// Everything the module registers with the kernel, in one pinned allocation: the kernel links
/// these objects into its lists, so they must not move until unregistered. Dropping it is the
/// module's whole teardown.
pub(crate) struct Registrations {
    pernet: bindings::pernet_operations,
    notifier: bindings::notifier_block,
    family: bindings::genl_family,
    matches: [bindings::xt_match; 2],
    stage: Stage,
    _pin: PhantomPinned,
}

// SAFETY: the registered objects belong to the kernel; Rust touches them only to register and
// unregister them, from module init and exit, which the module loader serialises.
unsafe impl Send for Registrations {}
// SAFETY: as above; `&Registrations` gives access to nothing.
unsafe impl Sync for Registrations {}

impl Registrations {
    /// Registers the per-namespace state, the socket-release notifier, the genl family and the
    /// xtables matches, in that order (each may be used once the next exists). On failure what was
    /// registered is unregistered again when the returned box drops.
    pub(crate) fn new(module: &'static ThisModule) -> Result<Pin<KBox<Self>>> {
        // SAFETY: all-zero is a valid `struct pernet_operations` and `struct notifier_block`.
        let (mut pernet, mut notifier): (bindings::pernet_operations, bindings::notifier_block) = unsafe {
            (
                MaybeUninit::zeroed().assume_init(),
                MaybeUninit::zeroed().assume_init(),
            )
        };
        pernet.init = Some(net_init);
        pernet.exit_batch = Some(net_exit_batch);
        pernet.id = NET_ID.as_ptr();
        pernet.size = size_of::<PerNet>();
        notifier.notifier_call = Some(netlink_event);
        let regs = Registrations {
            pernet,
            notifier,
            family: family(module),
            matches: [
                xt_match_reg(bindings::NFPROTO_IPV4, module),
                xt_match_reg(bindings::NFPROTO_IPV6, module),
            ],
            stage: Stage::None,
            _pin: PhantomPinned,
        };
        let mut regs = KBox::pin(regs, GFP_KERNEL)?;
        // SAFETY: nothing is moved out; the kernel keeps pointers into the pinned allocation.
        let r = unsafe { regs.as_mut().get_unchecked_mut() };
        // SAFETY: each object is complete and stays in place until `drop` unregisters it.
        unsafe {
            to_result(bindings::register_pernet_subsys(&mut r.pernet))?;
            r.stage = Stage::Pernet;
            to_result(bindings::netlink_register_notifier(&mut r.notifier))?;
            r.stage = Stage::Notifier;
            to_result(bindings::genl_register_family(&mut r.family))?;
            r.stage = Stage::Family;
            to_result(bindings::xt_register_matches(
                r.matches.as_mut_ptr(),
                r.matches.len() as u32,
            ))?;
            r.stage = Stage::Matches;
        }
        Ok(regs)
    }
}

impl Drop for Registrations {
    fn drop(&mut self) {
        let r = self;
        // SAFETY: each object was registered (its stage reached) and is unregistered once, in
        // reverse order.
        unsafe {
            if r.stage >= Stage::Matches {
                bindings::xt_unregister_matches(r.matches.as_mut_ptr(), r.matches.len() as u32);
            }
            if r.stage >= Stage::Family {
                bindings::genl_unregister_family(&r.family);
            }
            if r.stage >= Stage::Notifier {
                bindings::netlink_unregister_notifier(&mut r.notifier);
            }
            if r.stage >= Stage::Pernet {
                bindings::unregister_pernet_subsys(&mut r.pernet);
            }
        }
    }
}
