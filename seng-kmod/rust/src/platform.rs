// SPDX-License-Identifier: GPL-2.0-only
//! seng-core's memory services on kernel primitives: `kvmalloc`, `kvfree`, and freeing after an
//! RCU grace period (`kvfree_rcu`), all provided by the C glue.

use core::alloc::Layout;
use core::ptr::NonNull;

use seng_core::table::Platform;

extern "C" {
    /// `kvmalloc(GFP_KERNEL)`; NULL on failure. Returned memory is 8-byte aligned.
    fn seng_glue_alloc(size: usize) -> *mut u8;
    /// `kvfree` at once.
    fn seng_glue_free(ptr: *mut u8);
    /// `kvfree` after the current RCU grace period (headless `kvfree_rcu`; may sleep).
    fn seng_glue_retire(ptr: *mut u8);
}

/// Largest alignment the glue's allocations guarantee.
const GLUE_ALIGN: usize = 8;

/// The kernel's allocator and RCU.
#[derive(Clone, Copy, Default)]
pub struct KernelPlatform;

// SAFETY: the glue returns kvmalloc memory of at least `size` bytes aligned to 8 (larger
// alignments are refused); `retire` frees only after an RCU grace period, and every reader of the
// table runs inside an RCU read-side section (softirq or rcu_read_lock).
unsafe impl Platform for KernelPlatform {
    fn alloc(&self, layout: Layout) -> Option<NonNull<u8>> {
        if layout.align() > GLUE_ALIGN {
            return None;
        }
        // SAFETY: plain allocation call; process context (writers hold a mutex).
        NonNull::new(unsafe { seng_glue_alloc(layout.size().max(1)) })
    }

    unsafe fn retire(&self, ptr: NonNull<u8>, _layout: Layout) {
        // SAFETY: ptr came from seng_glue_alloc.
        unsafe { seng_glue_retire(ptr.as_ptr()) }
    }

    unsafe fn free(&self, ptr: NonNull<u8>, _layout: Layout) {
        // SAFETY: ptr came from seng_glue_alloc and no reader can hold it.
        unsafe { seng_glue_free(ptr.as_ptr()) }
    }
}

/// Allocates and initialises one `T` with the kernel allocator.
pub fn boxed<T>(value: T) -> Option<NonNull<T>> {
    let ptr = KernelPlatform.alloc(Layout::new::<T>())?.cast::<T>();
    // SAFETY: fresh allocation sized and aligned for T.
    unsafe { ptr.as_ptr().write(value) };
    Some(ptr)
}

/// Drops and frees a `T` made by [`boxed`].
///
/// # Safety
/// `ptr` came from `boxed` and nothing can reach it any more.
pub unsafe fn unbox<T>(ptr: NonNull<T>) {
    // SAFETY: by the caller.
    unsafe {
        ptr.as_ptr().drop_in_place();
        KernelPlatform.free(ptr.cast(), Layout::new::<T>());
    }
}
