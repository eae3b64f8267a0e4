// SPDX-License-Identifier: GPL-2.0-only
//! The Rust half of `seng.ko`: seng-core's table, match decision and protocol behind the C entry
//! points declared in `seng_rs.h`.
//!
//! Built once for `x86_64-unknown-none` (kernel code model, no SSE, no red zone, retpoline and
//! return thunks) and linked by kbuild into the module of every supported kernel; only the C glue
//! in `seng_main.c` is compiled per kernel. Code here must be panic-free: the build rejects an
//! object that references `core::panicking`.
#![no_std]

mod abi;
mod ffi;
mod net;
mod platform;

use core::arch::asm;
use core::panic::PanicInfo;

extern "C" {
    /// Provided by the C glue: logs and BUG()s.
    fn seng_rust_panic();
}

/// Unreachable once the code is panic-free (the build checks that); `no_std` requires one.
#[panic_handler]
fn panic(_info: &PanicInfo<'_>) -> ! {
    // SAFETY: the hook takes no arguments and never returns. It is declared returning and
    // followed by ud2 so that objtool sees an explicit dead end instead of a fall-through.
    unsafe {
        seng_rust_panic();
        asm!("ud2", options(noreturn));
    }
}
