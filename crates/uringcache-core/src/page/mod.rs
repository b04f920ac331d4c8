//! Page descriptors: one [`PageDesc`] per frame, the counterpart of the kernel's `struct page`
//! (`struct folio`), and the page protocol: the named transitions of its state.
//!
//! A descriptor carries the page's state ([`PageFlags`]), its pin count (the kernel's
//! `page_count`: one reference held by the mapping while the page is in it, plus one per user
//! and per I/O in flight), the identity of the page that occupies the frame (mapping id and
//! page index), the last I/O error, and the time it was first dirtied.
//!
//! | submodule | holds |
//! | --- | --- |
//! | `flags` | [`PageFlags`], the state snapshot and its named queries; the bits, private here |
//! | `protocol` | the transitions on [`PageDesc`], each citing the kernel function it mirrors |
//! | this module | [`PageDesc`] (pins, identity, errno, access frequency), [`PageTable`] |
//!
//! # The page protocol
//!
//! Outside this module a page's bits change only through the transitions (see `protocol` for
//! who may call each and the kernel function it mirrors):
//!
//! * **read** — a fresh frame comes `LOCKED` from the pool; the read that fills it ends with
//!   [`PageDesc::finish_read`] (up to date, or `ERROR` with the errno), which also unlocks; a
//!   failed page is retried by whoever [`try_lock`](PageDesc::try_lock)s it next.
//! * **write** — the writer locks the page ([`try_lock`](PageDesc::try_lock), waiting in the
//!   wait table), re-checks [`is_mapped_at`](PageDesc::is_mapped_at), waits out writeback,
//!   copies, [`mark_uptodate`](PageDesc::mark_uptodate) (a fresh page) and
//!   [`mark_dirty`](PageDesc::mark_dirty) (counting the page when it went clean → dirty),
//!   [`unlock`](PageDesc::unlock)s.
//! * **writeback** — under the lock, [`start_writeback`](PageDesc::start_writeback) turns
//!   `DIRTY` into `WRITEBACK`; the page is unlocked while the device writes; the completion
//!   calls [`end_writeback`](PageDesc::end_writeback), which on failure re-dirties the page
//!   (counted once) before `WRITEBACK` clears.
//! * **truncation** — lock, wait out writeback, remove from the mapping,
//!   [`clear_dirty_for_io`](PageDesc::clear_dirty_for_io) (uncounting), then
//!   [`mark_orphan`](PageDesc::mark_orphan).
//! * **reclaim** — under the mapping's shard write lock,
//!   [`is_reclaimable`](PageDesc::is_reclaimable): only the mapping's pin, not locked, dirty or
//!   under writeback.
//!
//! Transitions that clear `LOCKED` or `WRITEBACK` say whether the page has waiters; the
//! [`WaitTable`](crate::wait::WaitTable)'s `unlock`, `end_read` and `end_writeback` make the
//! transition and the wake-up together.
//!
//! # Invariants
//!
//! * `LOCKED` is held by exactly one party at a time: the read that fills the page, or a writer
//!   changing its bytes. While a page is locked and not up to date, nobody but the lock holder
//!   touches the frame's bytes.
//! * Up to date is set only by the lock holder after the frame holds the page's bytes, and is
//!   never cleared while the page sits in a mapping (truncation removes the page first).
//! * `WRITEBACK` is set only under `LOCKED`, so a lock holder that has waited it out knows it
//!   stays clear (stable pages).
//! * A page's clean → dirty transition is reported exactly once (by [`mark_dirty`] or by the
//!   failure of [`end_writeback`]), so a caller that counts each report keeps an exact count.
//! * A frame is reused only when its page has left its mapping *and* its pin count is zero:
//!   whoever drops the last pin frees the frame (`put_page`). Eviction removes a page only when
//!   the mapping's own pin is the only one, judged under the mapping's shard lock, which orders
//!   it against "pin under lookup" (see `mapping`), so a pinned page is never evicted.
//! * `owner` and `index` are written only while the frame is being inserted into a mapping
//!   (under the shard's write lock) and are read by the evictor, which re-checks them under the
//!   same lock before acting.
//!
//! Everything here is plain atomics: no locks, no allocation.
//!
//! [`mark_dirty`]: PageDesc::mark_dirty
//! [`end_writeback`]: PageDesc::end_writeback

use crate::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

mod flags;
mod protocol;

use flags::bits;
use flags::bits::{FREQ_MASK, FREQ_SHIFT};

pub use flags::PageFlags;

/// Index of a frame in the arena and of its descriptor in the [`PageTable`].
pub type FrameId = u32;

/// No mapping owns the frame (it is free or being allocated).
pub const NO_OWNER: u32 = u32::MAX;

/// The descriptor of one frame (`struct page`). 40 bytes.
#[derive(Debug)]
pub struct PageDesc {
    /// The state word: the bits of [`PageFlags`] and the access frequency.
    state: AtomicU32,
    pins: AtomicU32,
    owner: AtomicU32,
    errno: AtomicI32,
    index: AtomicU64,
    /// Milliseconds (of the cache's clock) at which the page went from clean to dirty.
    dirtied_at: AtomicU64,
    /// Bumped every time the frame is freed, so that stale references (eviction queue entries)
    /// can tell the frame was reused.
    generation: AtomicU32,
}

impl Default for PageDesc {
    fn default() -> Self {
        PageDesc {
            state: AtomicU32::new(0),
            pins: AtomicU32::new(0),
            owner: AtomicU32::new(NO_OWNER),
            errno: AtomicI32::new(0),
            index: AtomicU64::new(0),
            dirtied_at: AtomicU64::new(0),
            generation: AtomicU32::new(0),
        }
    }
}

impl PageDesc {
    /// Records an access (`folio_mark_accessed`): bumps the 2-bit frequency unless it is
    /// already at its maximum, so a hot page costs one load and no store.
    #[inline]
    pub fn mark_accessed(&self) {
        let cur = self.state.load(Ordering::Relaxed);
        let freq = (cur & FREQ_MASK) >> FREQ_SHIFT;
        if freq < PageFlags::FREQ_MAX {
            // A lost race only loses one increment: the count is a hint.
            let _ = self.state.compare_exchange(
                cur,
                cur + (1 << FREQ_SHIFT),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Decrements the access frequency by one if above zero; returns the frequency before.
    pub fn age(&self) -> u32 {
        let mut cur = self.state.load(Ordering::Relaxed);
        loop {
            let freq = (cur & FREQ_MASK) >> FREQ_SHIFT;
            if freq == 0 {
                return 0;
            }
            match self.state.compare_exchange_weak(
                cur,
                cur - (1 << FREQ_SHIFT),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return freq,
                Err(now) => cur = now,
            }
        }
    }

    /// Sets the access frequency to zero.
    pub fn clear_freq(&self) {
        self.state.fetch_and(!FREQ_MASK, Ordering::Relaxed);
    }

    /// Current pin count.
    #[inline]
    pub fn pins(&self) -> u32 {
        self.pins.load(Ordering::Acquire)
    }

    /// Adds a pin (`folio_get`).
    #[inline]
    pub fn pin(&self) {
        let prev = self.pins.fetch_add(1, Ordering::AcqRel);
        debug_assert!(prev < u32::MAX / 2, "pin count overflow");
    }

    /// Drops a pin (`folio_put`); returns the count left.
    #[inline]
    pub fn unpin(&self) -> u32 {
        let prev = self.pins.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(prev > 0, "unpin of an unpinned page");
        prev - 1
    }

    /// The mapping that owns the frame, or [`NO_OWNER`].
    #[inline]
    pub fn owner(&self) -> u32 {
        self.owner.load(Ordering::Acquire)
    }

    /// The page index within its mapping (meaningful only while owned).
    #[inline]
    pub fn index(&self) -> u64 {
        self.index.load(Ordering::Acquire)
    }

    /// Records the owner and index of a frame being inserted into a mapping.
    pub fn set_identity(&self, owner: u32, index: u64) {
        self.index.store(index, Ordering::Release);
        self.owner.store(owner, Ordering::Release);
    }

    /// The errno of the last failed I/O on the page (0 if none failed since the frame was
    /// taken). Meaningful while [`PageFlags::is_error`] is set; never 0 then.
    pub fn errno(&self) -> i32 {
        self.errno.load(Ordering::Acquire)
    }

    /// When the page was dirtied (cache clock, ms).
    pub fn dirtied_at(&self) -> u64 {
        self.dirtied_at.load(Ordering::Relaxed)
    }

    /// Records when the page was dirtied: by whoever was told the page went clean → dirty
    /// ([`mark_dirty`](Self::mark_dirty), the failure of
    /// [`end_writeback`](Self::end_writeback)), under `LOCKED` or `WRITEBACK`.
    pub fn set_dirtied_at(&self, ms: u64) {
        self.dirtied_at.store(ms, Ordering::Relaxed);
    }

    /// The frame's reuse generation.
    #[inline]
    pub fn generation(&self) -> u32 {
        self.generation.load(Ordering::Acquire)
    }

    /// Resets the descriptor of a frame going back to the pool and bumps its generation.
    pub fn release(&self) {
        self.owner.store(NO_OWNER, Ordering::Release);
        self.state.store(0, Ordering::Release);
        self.errno.store(0, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
impl PageDesc {
    /// For the core's tests and loom models: the page as a completed read leaves it (up to
    /// date, unlocked), then dirtied by a writer if `dirty`, through the transitions.
    pub(crate) fn fill_for_test(&self, dirty: bool) {
        self.init_locked();
        assert!(!self.finish_read(Ok(())));
        if dirty {
            assert!(self.try_lock());
            assert!(self.mark_dirty());
            assert!(!self.unlock());
        }
    }
}

#[cfg(all(test, not(loom)))]
impl PageDesc {
    /// For the core's models of the eviction policy: sets or clears `DIRTY` alone, on a page
    /// that is not otherwise in the protocol (no lock, not up to date).
    pub(crate) fn set_dirty_for_test(&self, dirty: bool) {
        if dirty {
            self.state.fetch_or(bits::DIRTY, Ordering::AcqRel);
        } else {
            self.state.fetch_and(!bits::DIRTY, Ordering::AcqRel);
        }
    }
}

/// The descriptors of every frame, indexed by [`FrameId`] (the kernel's `mem_map`).
#[derive(Debug)]
pub struct PageTable {
    descs: Box<[PageDesc]>,
}

impl PageTable {
    /// Descriptors for `frames` frames, all free.
    pub fn new(frames: usize) -> Self {
        PageTable {
            descs: (0..frames).map(|_| PageDesc::default()).collect(),
        }
    }

    /// The descriptor of `frame`.
    #[inline]
    pub fn get(&self, frame: FrameId) -> &PageDesc {
        &self.descs[frame as usize]
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.descs.len()
    }

    /// Whether the table has no frames.
    pub fn is_empty(&self) -> bool {
        self.descs.is_empty()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn descriptor_is_small() {
        assert!(std::mem::size_of::<PageDesc>() <= 64);
    }

    #[test]
    fn frequency_saturates_and_ages() {
        let d = PageDesc::default();
        for _ in 0..10 {
            d.mark_accessed();
        }
        assert_eq!(d.flags().freq(), 3);
        assert_eq!(d.age(), 3);
        assert_eq!(d.flags().freq(), 2);
        d.clear_freq();
        assert_eq!(d.age(), 0);
        d.init_locked();
        assert!(!d.finish_read(Ok(())));
        d.mark_accessed();
        assert!(d.flags().is_uptodate());
        assert_eq!(d.flags().freq(), 1);
    }

    #[test]
    fn release_bumps_generation() {
        let d = PageDesc::default();
        d.set_identity(3, 9);
        d.init_locked();
        assert!(!d.finish_read(Err(libc::EIO)));
        let g = d.generation();
        d.release();
        assert_eq!(d.owner(), NO_OWNER);
        assert!(d.flags().is_empty());
        assert_eq!(d.errno(), 0);
        assert_eq!(d.generation(), g + 1);
    }
}
