// SPDX-License-Identifier: GPL-2.0-only
//! The `seng-capi-test` target is the C program test/api_test.c: build.rs compiles it and links
//! it against libseng_netfilter.so. `main` is C's, so this file only declares that there is no
//! Rust one; depending on the library target makes cargo build the .so before this link.
#![no_main]
