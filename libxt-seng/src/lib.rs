// SPDX-License-Identifier: GPL-2.0-only
//! `libxt_seng.so`: the iptables and ip6tables extension for the `seng` match, revision 0.
//!
//! ```text
//! iptables -A INPUT -i tunFA -p tcp --dport 8391 -m seng --src-app d923…c3b0 -j ACCEPT
//! ip6tables -A FORWARD -m seng ! --src-host 2001:db8::/64 --dst-cat Browser -j DROP
//! ```
//!
//! iptables dlopens the library from its xtables directory; a load-time constructor registers
//! one record per family with libxtables (the `_init` of C extensions). Each record uses the
//! option API of libxtables (`x6_options`, `x6_parse`, `x6_fcheck`) and prints with `print` and
//! `save`. The extension only translates: rule options, the revision-0 match data, the saved and
//! listed forms and every error message come from seng-core.
//!
//! - [`xtables`]: the mirror of `<xtables.h>`, checked against the header at build time;
//! - `ext`: the translation itself, safe code over bytes;
//! - `ffi`: the records, callbacks and constructor.
#![deny(missing_docs)]

mod ext;
mod ffi;
pub mod xtables;
