// SPDX-License-Identifier: GPL-2.0-only
//! An open-addressing hash map whose readers never wait: one writer at a time, any number of
//! lock-free readers.
//!
//! Slots hold pointers to immutable nodes, next to the full hash of the node's key. Writers
//! publish a node by storing its hash and then, with release ordering, its pointer into a free
//! slot; remove one by storing a tombstone; and replace the whole slot array (to grow or to purge
//! tombstones) by publishing a new array. Everything unlinked is handed to [`Platform::retire`],
//! so a reader that saw it keeps a valid view until it finishes. Linear probing at a load factor
//! of at most one half (tombstones included) keeps expected probes constant however large the map
//! grows, and the stored hash lets a probe skip other keys without touching their nodes: a lookup
//! of an absent key (any packet from a non-enclave) reads only the slot array.

use core::alloc::Layout;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use super::trailing::Trailing;
use super::Platform;
use crate::hash::TableKey;

/// An immutable key and its value (which may hold atomics of its own).
pub(crate) struct Node<K, V> {
    pub(crate) key: K,
    pub(crate) value: V,
}

struct ArrayHeader {
    mask: usize,
}

/// One slot: the node and its key's hash. A reader that loads the pointer with acquire ordering
/// also sees the hash stored before it; a hash from a later reuse of the slot only makes the
/// reader skip a node that was already unlinked.
struct Slot<K, V> {
    hash: AtomicU64,
    node: AtomicPtr<Node<K, V>>,
}

type SlotArray<K, V> = Trailing<ArrayHeader, Slot<K, V>>;

/// Marks a slot whose node was removed: probes continue past it, inserts may reuse it.
fn tombstone<K, V>() -> *mut Node<K, V> {
    ptr::without_provenance_mut(1)
}

const MIN_SLOTS: usize = 16;

pub(crate) struct RcuMap<K, V> {
    array: AtomicPtr<ArrayHeader>,
    live: AtomicUsize,
    tombstones: AtomicUsize,
    seed: u64,
    _nodes: core::marker::PhantomData<*const Node<K, V>>,
}

impl<K: TableKey, V> RcuMap<K, V> {
    pub(crate) fn new<P: Platform>(platform: &P, seed: u64) -> Option<Self> {
        let array = new_array::<K, V, P>(platform, MIN_SLOTS)?;
        Some(RcuMap {
            array: AtomicPtr::new(array.as_ptr()),
            live: AtomicUsize::new(0),
            tombstones: AtomicUsize::new(0),
            seed,
            _nodes: core::marker::PhantomData,
        })
    }

    #[inline(always)]
    fn current(&self) -> (SlotArray<K, V>, usize) {
        // SAFETY: `array` is never null and points to a live array for as long as the reader
        // runs (arrays are retired, never freed, while readers may exist).
        unsafe {
            let array = SlotArray::<K, V>::from_ptr(NonNull::new_unchecked(self.array.load(Ordering::Acquire)));
            (array, array.header().mask)
        }
    }

    /// Number of keys present.
    pub(crate) fn len(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Number of slots of the current array.
    pub(crate) fn slots(&self) -> usize {
        self.current().1 + 1
    }

    /// Looks up `key`. Lock-free; the node stays valid while the caller's read side lasts.
    #[inline(always)]
    pub(crate) fn get(&self, key: &K) -> Option<&Node<K, V>> {
        let (array, mask) = self.current();
        let hash = key.hash(self.seed);
        let mut index = hash as usize;
        // Bounded so that even a corrupted array cannot make a reader spin.
        for _ in 0..=mask {
            index &= mask;
            // SAFETY: index <= mask < length of the array.
            let slot = unsafe { array.elem(index) };
            let node = slot.node.load(Ordering::Acquire);
            if node.is_null() {
                return None;
            }
            if node != tombstone() && slot.hash.load(Ordering::Relaxed) == hash {
                // SAFETY: published nodes stay valid while readers may see them.
                let node = unsafe { &*node };
                if node.key == *key {
                    return Some(node);
                }
            }
            index = index.wrapping_add(1);
        }
        None
    }

    /// The slot index holding `key`, for a writer.
    fn position(&self, key: &K) -> Option<usize> {
        let (array, mask) = self.current();
        let mut index = key.hash(self.seed) as usize;
        for _ in 0..=mask {
            index &= mask;
            // SAFETY: index <= mask.
            let node = unsafe { array.elem(index) }.node.load(Ordering::Relaxed);
            if node.is_null() {
                return None;
            }
            // SAFETY: the writer owns all published nodes.
            if node != tombstone() && unsafe { (*node).key == *key } {
                return Some(index);
            }
            index = index.wrapping_add(1);
        }
        None
    }

    /// Makes room for one more key, growing or purging tombstones as needed, so that the next
    /// [`RcuMap::insert_new`] cannot fail.
    ///
    /// # Safety
    /// Writers are serialised.
    pub(crate) unsafe fn reserve<P: Platform>(&self, platform: &P) -> Option<()> {
        let slots = self.slots();
        let live = self.len();
        let used = live + self.tombstones.load(Ordering::Relaxed);
        if (used + 1) * 2 <= slots {
            return Some(());
        }
        let target = if (live + 1) * 4 <= slots { slots } else { slots.checked_mul(2)? };
        // SAFETY: forwarded.
        unsafe { self.rehash(platform, target) }
    }

    /// Makes room for `n` more keys at once, so that `n` calls of [`RcuMap::insert_new`] cannot
    /// fail, whatever removals come between them.
    ///
    /// # Safety
    /// Writers are serialised.
    pub(crate) unsafe fn reserve_many<P: Platform>(&self, platform: &P, n: usize) -> Option<()> {
        let slots = self.slots();
        let live = self.len();
        let used = live + self.tombstones.load(Ordering::Relaxed);
        if used.checked_add(n)?.checked_mul(2)? <= slots {
            return Some(());
        }
        // Rehashing drops the tombstones: only live keys count towards the new size.
        let target = live.checked_add(n)?.checked_mul(2)?.checked_next_power_of_two()?.max(slots);
        // SAFETY: forwarded.
        unsafe { self.rehash(platform, target) }
    }

    /// Moves every node into a fresh array of `len` slots and publishes it.
    ///
    /// # Safety
    /// Writers are serialised.
    unsafe fn rehash<P: Platform>(&self, platform: &P, len: usize) -> Option<()> {
        let fresh = new_array::<K, V, P>(platform, len)?;
        let (old, old_mask) = self.current();
        let mask = len - 1;
        for i in 0..=old_mask {
            // SAFETY: i <= old_mask.
            let old_slot = unsafe { old.elem(i) };
            let node = old_slot.node.load(Ordering::Relaxed);
            if node.is_null() || node == tombstone() {
                continue;
            }
            let hash = old_slot.hash.load(Ordering::Relaxed);
            let mut index = hash as usize;
            // Keys are unique and the new array has free slots, so a null slot is found.
            for _ in 0..=mask {
                index &= mask;
                // SAFETY: index <= mask; `fresh` is not yet visible to readers.
                let slot = unsafe { fresh.elem(index) };
                if slot.node.load(Ordering::Relaxed).is_null() {
                    slot.hash.store(hash, Ordering::Relaxed);
                    slot.node.store(node, Ordering::Relaxed);
                    break;
                }
                index = index.wrapping_add(1);
            }
        }
        self.array.store(fresh.as_ptr(), Ordering::Release);
        self.tombstones.store(0, Ordering::Relaxed);
        // SAFETY: readers may still walk the old array; it is retired, not freed.
        unsafe { old.release(platform, old_mask + 1, true) };
        Some(())
    }

    /// Publishes a node for a key that is not present. Call [`RcuMap::reserve`] first.
    ///
    /// # Safety
    /// Writers are serialised; the key is absent; `reserve` succeeded since the last insert.
    pub(crate) unsafe fn insert_new(&self, node: NonNull<Node<K, V>>) {
        let (array, mask) = self.current();
        // SAFETY: the node is ours until published.
        let hash = unsafe { node.as_ref().key.hash(self.seed) };
        let mut index = hash as usize;
        for _ in 0..=mask {
            index &= mask;
            // SAFETY: index <= mask.
            let slot = unsafe { array.elem(index) };
            let current = slot.node.load(Ordering::Relaxed);
            if current.is_null() || current == tombstone() {
                if current == tombstone() {
                    self.tombstones.fetch_sub(1, Ordering::Relaxed);
                }
                slot.hash.store(hash, Ordering::Relaxed);
                slot.node.store(node.as_ptr(), Ordering::Release);
                self.live.fetch_add(1, Ordering::Relaxed);
                return;
            }
            index = index.wrapping_add(1);
        }
    }

    /// The node for `key`, for a writer.
    pub(crate) fn find(&self, key: &K) -> Option<NonNull<Node<K, V>>> {
        self.get(key).map(NonNull::from)
    }

    /// Swaps the node holding `node.key` for `node`, returning the old one to be retired.
    ///
    /// # Safety
    /// Writers are serialised; the key is present.
    pub(crate) unsafe fn replace(&self, node: NonNull<Node<K, V>>) -> Option<NonNull<Node<K, V>>> {
        // SAFETY: the node is ours until published.
        let index = self.position(unsafe { &node.as_ref().key })?;
        let (array, _) = self.current();
        // SAFETY: index came from position() on the current array.
        let old = unsafe { array.elem(index) }.node.swap(node.as_ptr(), Ordering::AcqRel);
        NonNull::new(old)
    }

    /// Unlinks `key`, returning its node to be retired.
    ///
    /// # Safety
    /// Writers are serialised.
    pub(crate) unsafe fn remove(&self, key: &K) -> Option<NonNull<Node<K, V>>> {
        let index = self.position(key)?;
        let (array, _) = self.current();
        // SAFETY: index came from position() on the current array.
        let old = unsafe { array.elem(index) }.node.swap(tombstone(), Ordering::AcqRel);
        self.live.fetch_sub(1, Ordering::Relaxed);
        self.tombstones.fetch_add(1, Ordering::Relaxed);
        NonNull::new(old)
    }

    /// Unlinks every node, handing each to `unlinked`. The array keeps its size.
    ///
    /// # Safety
    /// Writers are serialised.
    pub(crate) unsafe fn clear(&self, mut unlinked: impl FnMut(NonNull<Node<K, V>>)) {
        let (array, mask) = self.current();
        for i in 0..=mask {
            // SAFETY: i <= mask.
            let old = unsafe { array.elem(i) }.node.swap(ptr::null_mut(), Ordering::AcqRel);
            if old != tombstone() {
                if let Some(node) = NonNull::new(old) {
                    unlinked(node);
                }
            }
        }
        self.live.store(0, Ordering::Relaxed);
        self.tombstones.store(0, Ordering::Relaxed);
    }

    /// The node in the first occupied slot at or after `cursor`, with the cursor to continue from.
    /// Reader-safe; a concurrent resize may make a walk skip or repeat keys.
    pub(crate) fn next_from(&self, cursor: usize) -> Option<(&Node<K, V>, usize)> {
        let (array, mask) = self.current();
        let mut index = cursor;
        while index <= mask {
            // SAFETY: index <= mask.
            let node = unsafe { array.elem(index) }.node.load(Ordering::Acquire);
            index += 1;
            if !node.is_null() && node != tombstone() {
                // SAFETY: published nodes stay valid while readers may see them.
                return Some((unsafe { &*node }, index));
            }
        }
        None
    }

    /// Frees the slot array at once (nodes must have been cleared first).
    ///
    /// # Safety
    /// No reader can reach the map any more; the map is not used afterwards.
    pub(crate) unsafe fn free_array<P: Platform>(&self, platform: &P) {
        let (array, mask) = self.current();
        // SAFETY: by the caller.
        unsafe { array.release(platform, mask + 1, false) };
    }
}

fn new_array<K, V, P: Platform>(platform: &P, len: usize) -> Option<SlotArray<K, V>> {
    if !len.is_power_of_two() {
        return None;
    }
    SlotArray::<K, V>::alloc(platform, ArrayHeader { mask: len - 1 }, len, |_| Slot {
        hash: AtomicU64::new(0),
        node: AtomicPtr::new(ptr::null_mut()),
    })
}

/// Allocates and initialises a node, unpublished.
pub(crate) fn alloc_node<K, V, P: Platform>(platform: &P, key: K, value: V) -> Option<NonNull<Node<K, V>>> {
    let node = platform.alloc(Layout::new::<Node<K, V>>())?.cast::<Node<K, V>>();
    // SAFETY: freshly allocated for this layout.
    unsafe { node.as_ptr().write(Node { key, value }) };
    Some(node)
}

/// Releases a node (its value must need no drop): deferred if it was ever published.
///
/// # Safety
/// As [`Platform::retire`] / [`Platform::free`].
pub(crate) unsafe fn release_node<K, V, P: Platform>(platform: &P, node: NonNull<Node<K, V>>, deferred: bool) {
    let layout = Layout::new::<Node<K, V>>();
    // SAFETY: forwarded.
    unsafe {
        if deferred {
            platform.retire(node.cast(), layout)
        } else {
            platform.free(node.cast(), layout)
        }
    }
}
