// SPDX-License-Identifier: GPL-2.0-only
//! The `seng-libnl-client` target is the C program client.c: build.rs compiles it against libnl
//! and links it in. `main` is C's, so this file only declares that there is no Rust one.
#![no_main]
