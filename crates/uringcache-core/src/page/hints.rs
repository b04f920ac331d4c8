//! [`Hints`]: a lossy, lock-free table (mapping id, page index) → frame, in front of the
//! mappings' sharded indexes, so that a hit finds its frame without taking a lock or writing a
//! shared cache line.
//!
//! # Why a lossy table in front of the index
//!
//! The authoritative index of a file stays `Mapping`'s sharded `RwLock<HashMap>` (insertion's
//! one winner, removal, range walks), and a hit used to take a shard's read lock: an atomic
//! read-modify-write on a line every reader of the shard shares, which is what made two tasks
//! slower than twice one. The kernel reads its xarray under RCU instead; a concurrent map that
//! readers walk without a lock needs safe memory reclamation (epochs) of whatever it frees.
//! This table needs none: it is one allocation sized by the frame count at build time, never
//! resized, and what it stores is only a *hint* — a frame id and a tag of the key. A reader
//! trusts nothing it reads here: it checks the frame's descriptor, which names the page the
//! frame holds (`owner`, `index`, not `ORPHAN`), after pinning it with
//! [`PageDesc::try_pin`](super::PageDesc::try_pin) (a pinned page's identity cannot change), or
//! around an optimistic copy with the frame's generation
//! ([`PageDesc::optimistic_at`](super::PageDesc::optimistic_at)). A hint that is stale,
//! overwritten or lost costs a trip to the locked index, which then publishes the hint again;
//! it never yields another page's bytes.
//!
//! # Layout
//!
//! Sets of [`WAYS`] `AtomicU64` slots (one 64-byte line per set), twice as many slots as
//! frames. A slot holds `tag << 32 | (frame + 1)` (0: empty), the tag being the high half of
//! the key's hash. Each key has two sets (from two parts of its hash): publishing (a miss, or
//! a hit that had to take the lock) reuses the slot of the same key, else an empty slot of the
//! first set, else of the second, else one of the first chosen by the key; a page leaving its
//! mapping clears its slot ([`Hints::forget`]). A lookup reads the first set, and the second
//! only when the first has nothing. With one set per key a full cache lost about 2 % of its
//! hints (sets of 8 holding 4 keys on average overflow that often; `peek` in
//! `benches/hit_counts.rs`); with the second choice a hint is lost only when both are full.
//! A hit writes nothing here.
//!
//! # Invariants
//!
//! * Nothing is derived from a slot without checking the descriptor it names; so any
//!   interleaving of publishes and forgets (plain stores and compare-and-swaps, racing freely)
//!   is harmless: the worst outcome is a lookup that falls back to the locked index.
//! * The table lives as long as the `PageTable`, which every reader borrows: no slot is freed
//!   under a reader.

use crate::sync::atomic::{AtomicU64, Ordering};

use super::FrameId;

/// Slots per set: one cache line of `AtomicU64`s.
pub const WAYS: usize = 8;

/// Lock-free lookup hints: (mapping id, page index) → frame (see the module doc).
#[derive(Debug)]
pub struct Hints {
    slots: Box<[AtomicU64]>,
    set_mask: u64,
}

impl Hints {
    /// A table for `frames` frames: about two slots per frame, in whole sets.
    pub fn new(frames: usize) -> Self {
        let sets = (frames * 2).div_ceil(WAYS).max(1).next_power_of_two();
        Hints {
            slots: (0..sets * WAYS).map(|_| AtomicU64::new(0)).collect(),
            set_mask: sets as u64 - 1,
        }
    }

    /// Bytes of memory the table takes.
    pub fn bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<AtomicU64>()
    }

    #[inline]
    fn hash(owner: u32, index: u64) -> u64 {
        let h = index.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (owner as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        h ^ (h >> 29)
    }

    /// The key's first set (the index of its first slot).
    #[inline]
    fn first(&self, h: u64) -> usize {
        (h & self.set_mask) as usize * WAYS
    }

    /// The key's second set, the one it overflows into: another set, unless the table has
    /// only one (then `None`).
    #[inline]
    fn second(&self, h: u64) -> Option<usize> {
        if self.set_mask == 0 {
            return None;
        }
        let first = h & self.set_mask;
        let mut second = (h >> 16).wrapping_mul(0x9E37_79B9) & self.set_mask;
        if second == first {
            second ^= 1;
        }
        Some(second as usize * WAYS)
    }

    /// The key's sets, first then second.
    #[inline]
    fn sets(&self, h: u64) -> impl Iterator<Item = &[AtomicU64]> {
        std::iter::once(self.first(h))
            .chain(self.second(h))
            .map(|start| &self.slots[start..start + WAYS])
    }

    /// Calls `check` with the frame of each slot of `set` tagged `tag`, until one returns true.
    #[inline(always)]
    fn scan(set: &[AtomicU64], tag: u64, check: &mut impl FnMut(FrameId) -> bool) -> bool {
        for slot in set {
            let e = slot.load(Ordering::Acquire);
            if e >> 32 == tag && e as u32 != 0 && check(e as u32 - 1) {
                return true;
            }
        }
        false
    }

    #[inline]
    fn entry(h: u64, frame: FrameId) -> u64 {
        (h & !(u32::MAX as u64)) | (frame as u64 + 1)
    }

    /// Calls `check` with each frame hinted for page `index` of mapping `owner`, until one call
    /// returns `true`; returns whether one did. Reads the key's first set (one line), and its
    /// second only when the first gave nothing; writes nothing.
    #[inline]
    pub fn find(&self, owner: u32, index: u64, mut check: impl FnMut(FrameId) -> bool) -> bool {
        let h = Self::hash(owner, index);
        let tag = h >> 32;
        let first = self.first(h);
        if Self::scan(&self.slots[first..first + WAYS], tag, &mut check) {
            return true;
        }
        match self.second(h) {
            Some(second) => Self::scan(&self.slots[second..second + WAYS], tag, &mut check),
            None => false,
        }
    }

    /// Records that `frame` holds page `index` of mapping `owner` (called with the page in the
    /// mapping: after its insertion, or by a lookup that found it under the shard lock). The
    /// slot of the same key is reused; else an empty slot of the key's first set, else of its
    /// second (two choices: a key loses its hint only when both sets are full), else a slot of
    /// the first set picked by the key.
    pub fn publish(&self, owner: u32, index: u64, frame: FrameId) {
        let h = Self::hash(owner, index);
        let tag = h >> 32;
        let new = Self::entry(h, frame);
        let mut empty = None;
        let mut first = None;
        for set in self.sets(h) {
            first.get_or_insert(set);
            for slot in set {
                let e = slot.load(Ordering::Relaxed);
                if e == new {
                    return;
                }
                if e >> 32 == tag && e != 0 {
                    // The same key (or a tag collision): the newest frame wins.
                    slot.store(new, Ordering::Release);
                    return;
                }
                if e == 0 && empty.is_none() {
                    empty = Some(slot);
                }
            }
        }
        // Both sets full: push out a slot the key picks (a hint lost is a locked lookup later).
        let Some(first) = first else { return };
        let slot = empty.unwrap_or(&first[((h >> 8) as usize) % WAYS]);
        slot.store(new, Ordering::Release);
    }

    /// Clears the hint that `frame` holds page `index` of mapping `owner`, if it is still
    /// there (called when the page leaves the mapping).
    pub fn forget(&self, owner: u32, index: u64, frame: FrameId) {
        let h = Self::hash(owner, index);
        let entry = Self::entry(h, frame);
        for set in self.sets(h) {
            for slot in set {
                if slot.load(Ordering::Relaxed) == entry {
                    let _ = slot.compare_exchange(entry, 0, Ordering::AcqRel, Ordering::Relaxed);
                }
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn found(h: &Hints, owner: u32, index: u64) -> Vec<FrameId> {
        let mut out = Vec::new();
        h.find(owner, index, |f| {
            out.push(f);
            false
        });
        out
    }

    #[test]
    fn publish_find_forget() {
        let h = Hints::new(16);
        assert_eq!(h.bytes(), 4 * WAYS * 8);
        assert!(found(&h, 1, 7).is_empty());
        h.publish(1, 7, 3);
        assert_eq!(found(&h, 1, 7), vec![3]);
        h.publish(1, 7, 3);
        assert_eq!(found(&h, 1, 7), vec![3], "published once");
        h.publish(1, 7, 5);
        assert_eq!(
            found(&h, 1, 7),
            vec![5],
            "the newest frame replaces the old"
        );
        h.forget(1, 7, 3);
        assert_eq!(
            found(&h, 1, 7),
            vec![5],
            "forgetting another frame changes nothing"
        );
        h.forget(1, 7, 5);
        assert!(found(&h, 1, 7).is_empty());
        assert!(!h.find(1, 7, |_| true));
    }

    #[test]
    fn a_full_set_loses_hints_but_keeps_the_new_one() {
        let h = Hints::new(1); // one set of WAYS slots (both choices land in it)
        for i in 0..(WAYS as u64 * 4) {
            h.publish(2, i, i as FrameId);
            assert_eq!(found(&h, 2, i), vec![i as FrameId]);
        }
        let kept = (0..(WAYS as u64 * 4))
            .filter(|&i| found(&h, 2, i).contains(&(i as FrameId)))
            .count();
        assert!((1..=WAYS).contains(&kept), "{kept}");
    }

    #[test]
    fn most_pages_keep_their_hint_when_every_frame_is_used() {
        let frames = 4096;
        let h = Hints::new(frames);
        for f in 0..frames as u64 {
            h.publish(9, f * 7 + 3, f as FrameId);
        }
        let kept = (0..frames as u64)
            .filter(|&f| found(&h, 9, f * 7 + 3).contains(&(f as FrameId)))
            .count();
        assert!(kept * 1000 >= frames * 999, "{kept} of {frames} hints kept");
    }
}
