// SPDX-License-Identifier: GPL-2.0-only
//! An open-addressing hash map whose readers never wait: one writer at a time, any number of
//! lock-free readers.
//!
//! A slot is one word: a pointer to an immutable node, whose alignment leaves its low three bits
//! free for a tag, three bits of the hash of the node's key. Writers publish a node by storing
//! its tagged pointer, with release ordering, into a free slot; remove one by storing a
//! tombstone; and replace the whole slot array (to grow or to purge tombstones) by publishing a
//! new array. Everything unlinked is handed to [`Platform::retire`], so a reader that saw it
//! keeps a valid view until it finishes. Linear probing at a load factor of at most one half
//! (tombstones included) keeps expected probes constant however large the map grows, and the tag
//! lets a probe skip seven of eight other keys without touching their nodes: a lookup of an
//! absent key (any packet from a non-enclave) reads the slot array and, one time in eight per
//! occupied slot it passes, a node. Eight bytes a slot at a load of one quarter to one half is
//! 16 to 32 bytes per key.

use core::alloc::Layout;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use super::trailing::Trailing;
use super::Platform;
use crate::hash::TableKey;

/// What the map holds: immutable nodes that carry their key, aligned to at least 8 bytes (the
/// tag's room; checked at compile time).
pub(crate) trait Keyed {
    /// The key type.
    type Key: TableKey;
    /// The node's key.
    fn key(&self) -> &Self::Key;
}

/// An immutable key and its value (which may hold atomics of its own).
pub(crate) struct Node<K, V> {
    pub(crate) key: K,
    pub(crate) value: V,
}

impl<K: TableKey, V> Keyed for Node<K, V> {
    type Key = K;
    #[inline(always)]
    fn key(&self) -> &K {
        &self.key
    }
}

struct ArrayHeader {
    mask: usize,
}

/// One slot: null (free), a tombstone, or a node's pointer with its key's tag in the low bits.
type Slot<N> = AtomicPtr<N>;

type SlotArray<N> = Trailing<ArrayHeader, Slot<N>>;

/// The low pointer bits a tag takes: nodes are aligned to 8.
const TAG_BITS: usize = 0b111;

/// The tag of a key with this hash: its top bits (the index takes the low ones).
#[inline(always)]
fn tag_of(hash: u64) -> usize {
    (hash >> 61) as usize
}

/// `node` with the tag of `hash`.
fn tagged<N>(node: NonNull<N>, hash: u64) -> *mut N {
    node.as_ptr().map_addr(|a| a | tag_of(hash))
}

/// The node a slot's word points to; `None` for a free slot or a tombstone.
#[inline(always)]
fn untagged<N>(word: *mut N) -> Option<NonNull<N>> {
    NonNull::new(word.map_addr(|a| a & !TAG_BITS))
}

/// Marks a slot whose node was removed: probes continue past it, inserts may reuse it. It has no
/// pointer bits, so it never passes for a node whatever tag it seems to carry.
fn tombstone<N>() -> *mut N {
    ptr::without_provenance_mut(1)
}

const MIN_SLOTS: usize = 16;

pub(crate) struct RcuMap<N> {
    array: AtomicPtr<ArrayHeader>,
    live: AtomicUsize,
    tombstones: AtomicUsize,
    seed: u64,
    _nodes: core::marker::PhantomData<*const N>,
}

impl<N: Keyed> RcuMap<N> {
    const TAG_FITS: () = assert!(core::mem::align_of::<N>() > TAG_BITS, "nodes must leave room for the tag");

    pub(crate) fn new<P: Platform>(platform: &P, seed: u64) -> Option<Self> {
        let () = Self::TAG_FITS;
        let array = new_array::<N, P>(platform, MIN_SLOTS)?;
        Some(RcuMap {
            array: AtomicPtr::new(array.as_ptr()),
            live: AtomicUsize::new(0),
            tombstones: AtomicUsize::new(0),
            seed,
            _nodes: core::marker::PhantomData,
        })
    }

    #[inline(always)]
    fn current(&self) -> (SlotArray<N>, usize) {
        // SAFETY: `array` is never null and points to a live array for as long as the reader
        // runs (arrays are retired, never freed, while readers may exist).
        unsafe {
            let array = SlotArray::<N>::from_ptr(NonNull::new_unchecked(self.array.load(Ordering::Acquire)));
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

    /// Looks up `key`. Lock-free; the node stays valid while the caller's read side lasts. The
    /// pointer has the provenance of the node's whole allocation.
    #[inline(always)]
    pub(crate) fn get(&self, key: &N::Key) -> Option<NonNull<N>> {
        let (array, mask) = self.current();
        let hash = key.hash(self.seed);
        let tag = tag_of(hash);
        // Bounded to one pass over the array, so that even a corrupted array cannot make a
        // reader spin. The probe count also makes the index: one register less on the packet path.
        let mut probe = 0;
        loop {
            // SAFETY: the index is masked: below the length of the array.
            let word = unsafe { array.elem((hash as usize).wrapping_add(probe) & mask) }.load(Ordering::Acquire);
            if word.is_null() {
                return None;
            }
            if word.addr() & TAG_BITS == tag {
                if let Some(node) = untagged(word) {
                    // SAFETY: published nodes stay valid while readers may see them.
                    if unsafe { node.as_ref() }.key() == key {
                        return Some(node);
                    }
                }
            }
            if probe == mask {
                return None;
            }
            probe += 1;
        }
    }

    /// The slot index holding `key` of hash `hash`, for a writer.
    fn position(&self, key: &N::Key, hash: u64) -> Option<usize> {
        let (array, mask) = self.current();
        let mut index = hash as usize;
        for _ in 0..=mask {
            index &= mask;
            // SAFETY: index <= mask.
            let word = unsafe { array.elem(index) }.load(Ordering::Relaxed);
            if word.is_null() {
                return None;
            }
            // SAFETY: the writer owns all published nodes.
            if untagged(word).is_some_and(|node| unsafe { node.as_ref() }.key() == key) {
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

    /// Gives an empty map back its smallest array, when that can be allocated (a flushed table
    /// keeps no slots for entries it no longer has).
    ///
    /// # Safety
    /// Writers are serialised.
    pub(crate) unsafe fn shrink_if_empty<P: Platform>(&self, platform: &P) {
        if self.len() == 0 && self.slots() > MIN_SLOTS {
            // SAFETY: forwarded. Failing, the map keeps its array, which is as good.
            let _ = unsafe { self.rehash(platform, MIN_SLOTS) };
        }
    }

    /// Moves every node into a fresh array of `len` slots and publishes it.
    ///
    /// # Safety
    /// Writers are serialised.
    unsafe fn rehash<P: Platform>(&self, platform: &P, len: usize) -> Option<()> {
        let fresh = new_array::<N, P>(platform, len)?;
        let (old, old_mask) = self.current();
        let mask = len - 1;
        for i in 0..=old_mask {
            // SAFETY: i <= old_mask.
            let word = unsafe { old.elem(i) }.load(Ordering::Relaxed);
            let Some(node) = untagged(word) else { continue };
            // The slot keeps only the tag: the index comes from the key again.
            // SAFETY: the writer owns all published nodes.
            let mut index = unsafe { node.as_ref() }.key().hash(self.seed) as usize;
            // Keys are unique and the new array has free slots, so a null slot is found.
            for _ in 0..=mask {
                index &= mask;
                // SAFETY: index <= mask; `fresh` is not yet visible to readers.
                let slot = unsafe { fresh.elem(index) };
                if slot.load(Ordering::Relaxed).is_null() {
                    slot.store(word, Ordering::Relaxed);
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
    pub(crate) unsafe fn insert_new(&self, node: NonNull<N>) {
        let (array, mask) = self.current();
        // SAFETY: the node is ours until published.
        let hash = unsafe { node.as_ref() }.key().hash(self.seed);
        let mut index = hash as usize;
        for _ in 0..=mask {
            index &= mask;
            // SAFETY: index <= mask.
            let slot = unsafe { array.elem(index) };
            let current = slot.load(Ordering::Relaxed);
            if current.is_null() || current == tombstone() {
                if current == tombstone() {
                    self.tombstones.fetch_sub(1, Ordering::Relaxed);
                }
                slot.store(tagged(node, hash), Ordering::Release);
                self.live.fetch_add(1, Ordering::Relaxed);
                return;
            }
            index = index.wrapping_add(1);
        }
    }

    /// Swaps the node holding `node`'s key for `node`, returning the old one to be retired.
    ///
    /// # Safety
    /// Writers are serialised; the key is present.
    pub(crate) unsafe fn replace(&self, node: NonNull<N>) -> Option<NonNull<N>> {
        // SAFETY: the node is ours until published.
        let key = unsafe { node.as_ref() }.key();
        let hash = key.hash(self.seed);
        let index = self.position(key, hash)?;
        let (array, _) = self.current();
        // SAFETY: index came from position() on the current array.
        let old = unsafe { array.elem(index) }.swap(tagged(node, hash), Ordering::AcqRel);
        untagged(old)
    }

    /// Unlinks `key`, returning its node to be retired.
    ///
    /// # Safety
    /// Writers are serialised.
    pub(crate) unsafe fn remove(&self, key: &N::Key) -> Option<NonNull<N>> {
        let index = self.position(key, key.hash(self.seed))?;
        let (array, _) = self.current();
        // SAFETY: index came from position() on the current array.
        let old = unsafe { array.elem(index) }.swap(tombstone(), Ordering::AcqRel);
        self.live.fetch_sub(1, Ordering::Relaxed);
        self.tombstones.fetch_add(1, Ordering::Relaxed);
        untagged(old)
    }

    /// Unlinks every node, handing each to `unlinked`. The array keeps its size.
    ///
    /// # Safety
    /// Writers are serialised.
    pub(crate) unsafe fn clear(&self, mut unlinked: impl FnMut(NonNull<N>)) {
        let (array, mask) = self.current();
        for i in 0..=mask {
            // SAFETY: i <= mask.
            let old = unsafe { array.elem(i) }.swap(ptr::null_mut(), Ordering::AcqRel);
            if let Some(node) = untagged(old) {
                unlinked(node);
            }
        }
        self.live.store(0, Ordering::Relaxed);
        self.tombstones.store(0, Ordering::Relaxed);
    }

    /// The node in the first occupied slot at or after `cursor`, with the cursor to continue from.
    /// Reader-safe; a concurrent resize may make a walk skip or repeat keys.
    pub(crate) fn next_from(&self, cursor: usize) -> Option<(NonNull<N>, usize)> {
        let (array, mask) = self.current();
        let mut index = cursor;
        while index <= mask {
            // SAFETY: index <= mask.
            let word = unsafe { array.elem(index) }.load(Ordering::Acquire);
            index += 1;
            if let Some(node) = untagged(word) {
                return Some((node, index));
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

fn new_array<N, P: Platform>(platform: &P, len: usize) -> Option<SlotArray<N>> {
    if !len.is_power_of_two() {
        return None;
    }
    SlotArray::<N>::alloc(platform, ArrayHeader { mask: len - 1 }, len, |_| AtomicPtr::new(ptr::null_mut()))
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
