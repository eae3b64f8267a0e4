// SPDX-License-Identifier: GPL-2.0-only
//! The structs the C glue and the Rust object share, as `seng_rs.h` declares them. The build
//! script (`build.rs`) reads this file too and fails the build if the header's layout differs.

use core::ffi::{c_char, c_void};

/// A netlink request as the glue hands it over: `struct seng_request`.
#[repr(C)]
pub struct SengRequest {
    /// `struct net *`, handed back to the conntrack glue.
    pub net: *mut c_void,
    /// Attributes after the genl header.
    pub payload: *const u8,
    pub payload_len: u32,
    /// Sender's netlink port.
    pub portid: u32,
    /// genl command.
    pub cmd: u8,
    /// Out: 1 when the change is to be echoed to the multicast group.
    pub notify: u8,
    /// Out: byte offset in the payload of the attribute to blame; `u32::MAX` for none.
    pub bad_attr_offset: u32,
    /// Room for reply attributes (GET, STATS), or null.
    pub reply: *mut u8,
    pub reply_cap: u32,
    /// Out: reply bytes written.
    pub reply_len: u32,
    /// Out: static NUL-terminated message for the extended ack.
    pub errmsg: *const c_char,
}
