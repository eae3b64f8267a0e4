// SPDX-License-Identifier: GPL-2.0-only
//! The C ABI of the distro flavour: the `seng_rs_*` entry points `seng_main.c` calls (declared in
//! `seng_rs.h`), each a thin translation to [`NetState`].

use core::ffi::{c_char, c_int, c_void};
use core::ptr::{self, NonNull};

use seng_core::SengMtInfo;

use crate::abi::SengRequest;
use crate::net::{ending_contains, NetState, Request};

/// Creates a namespace's state with an empty table; null when memory is short.
#[no_mangle]
pub extern "C" fn seng_rs_net_new(capacity: u32) -> *mut NetState {
    NetState::new(capacity).map_or(ptr::null_mut(), NonNull::as_ptr)
}

/// Frees a namespace's state and tables.
///
/// # Safety
/// As [`NetState::free`]; null is ignored.
#[no_mangle]
pub unsafe extern "C" fn seng_rs_net_free(state: *mut NetState) {
    if let Some(state) = NonNull::new(state) {
        // SAFETY: by the caller.
        unsafe { NetState::free(state) }
    }
}

/// The packet-path decision for one rule.
///
/// # Safety
/// Called inside an RCU read-side section with a live `state`, a validated match blob, and the
/// packet's network header of family `nfproto` (see [`NetState::matches`]).
#[no_mangle]
pub unsafe extern "C" fn seng_rs_match(state: *const NetState, info: *const SengMtInfo, nfproto: u8, header: *const u8) -> bool {
    // SAFETY: by the caller.
    unsafe { (*state).matches(&*info, nfproto, header) }
}

/// `checkentry`: 0 if the match blob is valid for `nfproto`, else -EINVAL with a message.
///
/// # Safety
/// `info` points to the 184-byte match blob; `msg` is writable.
#[no_mangle]
pub unsafe extern "C" fn seng_rs_check(info: *const SengMtInfo, nfproto: u8, msg: *mut *const c_char) -> c_int {
    // SAFETY: by the caller.
    match NetState::check(unsafe { &*info }, nfproto) {
        Ok(()) => 0,
        Err(text) => {
            // SAFETY: by the caller.
            unsafe { *msg = text.as_ptr() };
            -seng_core::genl::errno::EINVAL
        }
    }
}

/// Whether a conntrack address is one whose connections end (in the `Ending` handed to
/// `seng_glue_end_connections`).
///
/// # Safety
/// `set` is the pointer handed to `seng_glue_end_connections`; `addr` points to 16 bytes.
#[no_mangle]
pub unsafe extern "C" fn seng_rs_ending_contains(set: *const c_void, nfproto: u8, addr: *const [u8; 16]) -> bool {
    // SAFETY: by the caller.
    unsafe { ending_contains(set, nfproto, &*addr) }
}

/// The stamp of one dump part (`cb->seq`); see [`NetState::dump_stamp`].
///
/// # Safety
/// `state` is live.
#[no_mangle]
pub unsafe extern "C" fn seng_rs_dump_stamp(state: *const NetState) -> u32 {
    // SAFETY: by the caller.
    unsafe { &*state }.dump_stamp()
}

/// Fills `buf` with the ENCLAVE nests of the dump whose request attributes are the `request_len`
/// bytes at `request`, from `*cursor` on. Returns the bytes written (0: the dump is complete) or
/// a negative errno.
///
/// # Safety
/// Inside an RCU read-side section; `state` is live; `request` has `request_len` readable bytes
/// (or is null with 0); `buf` has `cap` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn seng_rs_dump(state: *const NetState, request: *const u8, request_len: u32, cursor: *mut u64, buf: *mut u8, cap: u32) -> c_int {
    let request: &[u8] = match request.is_null() {
        true => &[],
        // SAFETY: by the caller.
        false => unsafe { core::slice::from_raw_parts(request, request_len as usize) },
    };
    // SAFETY: by the caller.
    let (state, cursor, buf) = unsafe { (&*state, &mut *cursor, core::slice::from_raw_parts_mut(buf, cap as usize)) };
    match state.dump(request, cursor, buf) {
        Ok(len) => len as c_int,
        Err(errno) => -errno,
    }
}

/// Whether the closing netlink socket of port `portid` may own a replace transaction; needs no
/// lock, so the glue takes the writer mutex only for a socket that may.
///
/// # Safety
/// `state` is live.
#[no_mangle]
pub unsafe extern "C" fn seng_rs_may_own_transaction(state: *const NetState, portid: u32) -> bool {
    // SAFETY: by the caller.
    unsafe { (*state).may_own_transaction(portid) }
}

/// Drops the replace transaction owned by a closing netlink socket.
///
/// # Safety
/// `state` is live; the namespace's writer mutex is held.
#[no_mangle]
pub unsafe extern "C" fn seng_rs_release(state: *const NetState, portid: u32) {
    // SAFETY: by the caller.
    unsafe { (*state).release(portid) }
}

/// Handles one generic netlink request. Returns 0 or a negative errno; on error `errmsg` says why.
///
/// # Safety
/// `state` is live; the namespace's writer mutex is held; `req` is valid, its payload readable and
/// its reply buffer (if any) writable.
#[no_mangle]
pub unsafe extern "C" fn seng_rs_doit(state: *const NetState, req: *mut SengRequest) -> c_int {
    // SAFETY: by the caller.
    let (state, c) = unsafe { (&*state, &mut *req) };
    let payload: &[u8] = match c.payload.is_null() {
        true => &[],
        // SAFETY: by the caller.
        false => unsafe { core::slice::from_raw_parts(c.payload, c.payload_len as usize) },
    };
    let reply = match c.reply.is_null() {
        true => None,
        // SAFETY: by the caller.
        false => Some(unsafe { core::slice::from_raw_parts_mut(c.reply, c.reply_cap as usize) }),
    };
    let request = Request { net: c.net, cmd: c.cmd, payload, portid: c.portid, reply };
    // SAFETY: writer mutex held by the caller.
    match unsafe { state.handle(request) } {
        Ok(done) => {
            c.notify = u8::from(done.notify);
            c.reply_len = done.reply_len as u32;
            0
        }
        Err(refusal) => {
            c.errmsg = refusal.error.msg.as_ptr();
            c.bad_attr_offset = refusal.at.and_then(|at| u32::try_from(at).ok()).unwrap_or(u32::MAX);
            -refusal.error.errno
        }
    }
}
