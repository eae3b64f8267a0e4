// SPDX-License-Identifier: GPL-2.0-only
//! A header followed by a run of elements in one allocation (slot arrays, category sets).
//! Elements are reached through the allocation's own pointer, never through a reference to the
//! header, so their provenance is the whole allocation.

use core::alloc::Layout;
use core::marker::PhantomData;
use core::ptr::NonNull;

use super::Platform;

/// Pointer to a `H` header followed by `len` elements of `T`.
pub(crate) struct Trailing<H, T> {
    base: NonNull<u8>,
    _types: PhantomData<(*const H, *const T)>,
}

impl<H, T> Clone for Trailing<H, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<H, T> Copy for Trailing<H, T> {}

impl<H, T> Trailing<H, T> {
    fn layout(len: usize) -> Option<(Layout, usize)> {
        let (layout, offset) = Layout::new::<H>().extend(Layout::array::<T>(len).ok()?).ok()?;
        Some((layout.pad_to_align(), offset))
    }

    /// Allocates room for the header and `len` elements, writes the header and initialises every
    /// element with `init(index)`.
    pub(crate) fn alloc<P: Platform>(platform: &P, header: H, len: usize, mut init: impl FnMut(usize) -> T) -> Option<Self> {
        let (layout, offset) = Self::layout(len)?;
        let base = platform.alloc(layout)?;
        // SAFETY: the allocation fits the header at 0 and `len` elements at `offset`, aligned by
        // the layout computation.
        unsafe {
            base.cast::<H>().as_ptr().write(header);
            let elems = base.as_ptr().add(offset).cast::<T>();
            for i in 0..len {
                elems.add(i).write(init(i));
            }
        }
        Some(Trailing { base, _types: PhantomData })
    }

    /// Rebuilds the handle from a pointer made by [`Trailing::as_ptr`].
    ///
    /// # Safety
    /// `ptr` came from `as_ptr` of a live allocation.
    #[inline(always)]
    pub(crate) unsafe fn from_ptr(ptr: NonNull<H>) -> Self {
        Trailing { base: ptr.cast(), _types: PhantomData }
    }

    /// The header pointer, for storing in an atomic.
    pub(crate) fn as_ptr(self) -> *mut H {
        self.base.cast::<H>().as_ptr()
    }

    /// The header.
    ///
    /// # Safety
    /// The allocation is live for `'a`.
    #[inline(always)]
    pub(crate) unsafe fn header<'a>(self) -> &'a H {
        // SAFETY: by the caller; the header was written by alloc.
        unsafe { self.base.cast::<H>().as_ref() }
    }

    /// Pointer to element `index`, derived from the allocation itself (so writes through it are
    /// fine for the owner).
    #[inline(always)]
    pub(crate) fn elem_ptr(self, index: usize) -> *mut T {
        let offset = match Self::layout(0) {
            Some((_, offset)) => offset,
            None => 0,
        };
        // Elements start at `offset` whatever the length; wrapping arithmetic keeps this safe to
        // compute, dereferencing is the caller's business.
        self.base.as_ptr().wrapping_add(offset).cast::<T>().wrapping_add(index)
    }

    /// Element `index`.
    ///
    /// # Safety
    /// The allocation is live for `'a` and `index` is below its length.
    #[inline(always)]
    pub(crate) unsafe fn elem<'a>(self, index: usize) -> &'a T {
        // SAFETY: by the caller.
        unsafe { &*self.elem_ptr(index) }
    }

    /// The elements `0..len` as a slice.
    ///
    /// # Safety
    /// The allocation is live for `'a` and holds `len` elements.
    pub(crate) unsafe fn elems<'a>(self, len: usize) -> &'a [T] {
        if len == 0 {
            return &[];
        }
        // SAFETY: by the caller.
        unsafe { core::slice::from_raw_parts(self.elem(0) as *const T, len) }
    }

    /// Releases the allocation after readers are done (`retire`) or at once (`free`).
    ///
    /// # Safety
    /// As [`Platform::retire`] / [`Platform::free`]; `len` is the allocation's length.
    pub(crate) unsafe fn release<P: Platform>(self, platform: &P, len: usize, deferred: bool) {
        if let Some((layout, _)) = Self::layout(len) {
            // SAFETY: forwarded; `layout` is the one `alloc` used for this length.
            unsafe {
                if deferred {
                    platform.retire(self.base, layout)
                } else {
                    platform.free(self.base, layout)
                }
            }
        }
    }
}
