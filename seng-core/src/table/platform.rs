// SPDX-License-Identifier: GPL-2.0-only
//! Memory services the environment lends the table: the kernel glue maps them to `kvmalloc` and
//! RCU-deferred freeing, user space to the system allocator.

use core::alloc::Layout;
use core::ptr::NonNull;

/// Allocation and (deferred) freeing for the table.
///
/// # Safety
/// Implementations must return memory valid for `layout` from `alloc`, and must not make memory
/// passed to `retire` reusable while any reader that could have reached it before the call is
/// still running (an RCU grace period in the kernel). `free` may release at once.
pub unsafe trait Platform {
    /// Allocates memory for `layout` in writer context; `None` when memory is short.
    fn alloc(&self, layout: Layout) -> Option<NonNull<u8>>;

    /// Frees memory that lock-free readers may still be looking at, once they are done.
    ///
    /// # Safety
    /// `ptr` came from `alloc` with the same `layout` and is not used by the writer afterwards.
    unsafe fn retire(&self, ptr: NonNull<u8>, layout: Layout);

    /// Frees memory no reader can reach.
    ///
    /// # Safety
    /// `ptr` came from `alloc` with the same `layout`, and no reader can hold it.
    unsafe fn free(&self, ptr: NonNull<u8>, layout: Layout);
}

/// The system allocator, freeing at once. Sound for [`super::LocalTable`], whose `&mut` writers
/// exclude readers; a concurrent user of [`super::EnclaveTable`] needs a deferring platform.
#[cfg(feature = "std")]
#[derive(Clone, Copy, Debug, Default)]
pub struct StdPlatform;

#[cfg(feature = "std")]
// SAFETY: std's allocator returns memory valid for the layout; `retire` frees at once, which the
// users documented above accept.
unsafe impl Platform for StdPlatform {
    fn alloc(&self, layout: Layout) -> Option<NonNull<u8>> {
        if layout.size() == 0 {
            return Some(NonNull::<u8>::dangling());
        }
        // SAFETY: the size is non-zero.
        NonNull::new(unsafe { std::alloc::alloc(layout) })
    }

    unsafe fn retire(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { self.free(ptr, layout) }
    }

    unsafe fn free(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            // SAFETY: ptr came from alloc with this layout.
            unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) }
        }
    }
}
