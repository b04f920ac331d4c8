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
//! | `hints` | [`Hints`]: the lossy, lock-free (mapping, index) → frame table a hit looks in first |
//! | this module | [`PageDesc`] (pins and handle pins, identity, generation, errno, access frequency; the speculative pin, the freeze and the optimistic read), [`PageTable`] |
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
//!   [`freeze_if_reclaimable`](PageDesc::freeze_if_reclaimable): only the mapping's pin, not
//!   locked, dirty or under writeback; the count goes to zero, which no lookup pins.
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
//!   it froze the count from the mapping's one pin to zero, under the mapping's shard lock: a
//!   locked lookup pins under the same lock, a lock-free one with [`PageDesc::try_pin`], which
//!   refuses zero (see `mapping`), so a pinned page is never evicted.
//! * A frame's generation moves before anything else of a reused frame changes
//!   ([`PageDesc::release`]), so an optimistic reader that validates it
//!   ([`PageDesc::unchanged_since`]) never keeps bytes of a reused frame.
//! * `owner` and `index` are written only while the frame is being inserted into a mapping
//!   (under the shard's write lock) and are read by the evictor, which re-checks them under the
//!   same lock before acting.
//!
//! Everything here is plain atomics: no locks, no allocation.
//!
//! [`mark_dirty`]: PageDesc::mark_dirty
//! [`end_writeback`]: PageDesc::end_writeback

use crate::sync::atomic::{fence, AtomicI32, AtomicU32, AtomicU64, Ordering};

mod flags;
mod hints;
mod protocol;

pub use hints::Hints;

use flags::bits;
use flags::bits::{FREQ_MASK, FREQ_SHIFT};

pub use flags::PageFlags;

/// Index of a frame in the arena and of its descriptor in the [`PageTable`].
pub type FrameId = u32;

/// No mapping owns the frame (it is free or being allocated).
pub const NO_OWNER: u32 = u32::MAX;

/// One pin in the pin word (its low half).
const PIN: u64 = 1;
/// One page-handle pin in the pin word (its high half; always together with a [`PIN`]).
const USER_PIN: u64 = 1 << 32;
/// The low half of the pin word: every pin, the handles' included.
const PINS_MASK: u64 = u32::MAX as u64;

/// The descriptor of one frame (`struct page`). 40 bytes.
#[derive(Debug)]
pub struct PageDesc {
    /// The state word: the bits of [`PageFlags`] and the access frequency.
    state: AtomicU32,
    owner: AtomicU32,
    /// The pin word: every pin in the low half (`page_count`), the pins held by page handles
    /// in the high half (each also counted in the low half), so that a handle costs one RMW
    /// on its own page's line and no counter shared by the cache.
    pins: AtomicU64,
    index: AtomicU64,
    errno: AtomicI32,
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
            owner: AtomicU32::new(NO_OWNER),
            pins: AtomicU64::new(0),
            index: AtomicU64::new(0),
            errno: AtomicI32::new(0),
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

    /// Current pin count (every pin, the page handles' included).
    #[inline]
    pub fn pins(&self) -> u32 {
        (self.pins.load(Ordering::Acquire) & PINS_MASK) as u32
    }

    /// Pins held by page handles ([`mark_user_pin`](Self::mark_user_pin)).
    #[inline]
    pub fn user_pins(&self) -> u32 {
        (self.pins.load(Ordering::Acquire) >> 32) as u32
    }

    /// Adds a pin (`folio_get`). The caller holds a pin already, or the shard lock of the
    /// mapping the page is in (where the page is never frozen).
    #[inline]
    pub fn pin(&self) {
        let prev = self.pins.fetch_add(PIN, Ordering::AcqRel);
        debug_assert!(prev & PINS_MASK < PINS_MASK / 2, "pin count overflow");
    }

    /// Adds a pin unless the count is zero (`folio_try_get`): a free frame, or a page frozen
    /// for eviction ([`freeze_if_reclaimable`](Self::freeze_if_reclaimable)), is never
    /// pinned. For a lookup that holds no lock: it must then check which page it pinned
    /// ([`is_mapped_at`](Self::is_mapped_at)) and drop the pin if it is not the one it wanted
    /// (that drop may be the frame's last, so it goes through the pool's `put`).
    #[inline]
    pub fn try_pin(&self) -> bool {
        let mut cur = self.pins.load(Ordering::Relaxed);
        loop {
            if cur & PINS_MASK == 0 {
                return false;
            }
            match self.pins.compare_exchange_weak(
                cur,
                cur + PIN,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// Drops a pin (`folio_put`); returns the count left.
    #[inline]
    pub fn unpin(&self) -> u32 {
        let prev = self.pins.fetch_sub(PIN, Ordering::AcqRel);
        debug_assert!(prev & PINS_MASK > 0, "unpin of an unpinned page");
        debug_assert!(
            (prev & PINS_MASK) > (prev >> 32),
            "unpin of a page handle's pin without unpin_user"
        );
        ((prev & PINS_MASK) - 1) as u32
    }

    /// Marks one pin the caller holds as a page handle's (counted in
    /// [`user_pins`](Self::user_pins) until [`unpin_user`](Self::unpin_user) drops it).
    #[inline]
    pub fn mark_user_pin(&self) {
        let prev = self.pins.fetch_add(USER_PIN, Ordering::AcqRel);
        debug_assert!(
            (prev >> 32) < (prev & PINS_MASK),
            "a user pin without a pin"
        );
    }

    /// Drops a page handle's pin (one RMW for both counts); returns the pin count left.
    #[inline]
    pub fn unpin_user(&self) -> u32 {
        let prev = self.pins.fetch_sub(PIN | USER_PIN, Ordering::AcqRel);
        debug_assert!(prev >> 32 > 0, "unpin_user without a user pin");
        ((prev & PINS_MASK) - 1) as u32
    }

    /// Takes the mapping's pin away from a page that may be reclaimed now (the kernel's
    /// `folio_ref_freeze(folio, 1)` in `__remove_mapping`): if the mapping's pin is the only
    /// pin, the count drops to zero, so that no lookup can pin the page any more
    /// ([`try_pin`](Self::try_pin) refuses zero), and then, if the page is locked, dirty or
    /// under writeback after all, the pin is given back. Returns whether the page is frozen:
    /// the caller (holding the mapping's shard write lock) removes it and owns the frame,
    /// with no pin to drop.
    ///
    /// The count is taken before the flags are read: with nobody else pinning the page, only
    /// a read completion (which drops its pin before it unlocks) can still change a busy bit,
    /// and only to clear it.
    #[inline]
    pub fn freeze_if_reclaimable(&self) -> bool {
        if self
            .pins
            .compare_exchange(PIN, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        if self.flags().is_busy() {
            self.pins.fetch_add(PIN, Ordering::AcqRel);
            return false;
        }
        true
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

    /// Records the owner and index of a frame being inserted into a mapping, then moves the
    /// generation again: an optimistic reader that saw the generation of the frame's release
    /// ([`release`](Self::release)) with a stale identity, and then any state of the new page,
    /// finds the generation moved when it validates (see [`unchanged_since`](Self::unchanged_since)).
    pub fn set_identity(&self, owner: u32, index: u64) {
        self.index.store(index, Ordering::Release);
        self.owner.store(owner, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
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

    /// Starts an optimistic read of page `index` of mapping `owner` (vmcache's optimistic
    /// latch): if the frame holds that page now, not orphaned, returns the frame's generation
    /// and the page's state. The caller may then copy the frame's bytes without a pin, and
    /// keeps the copy only if [`unchanged_since`](Self::unchanged_since) that generation says
    /// the frame was not reused meanwhile.
    #[inline]
    pub fn optimistic_at(&self, owner: u32, index: u64) -> Option<(u32, PageFlags)> {
        let generation = self.generation.load(Ordering::Acquire);
        if self.owner.load(Ordering::Acquire) != owner
            || self.index.load(Ordering::Acquire) != index
        {
            return None;
        }
        let flags = self.flags();
        (!flags.is_orphan()).then_some((generation, flags))
    }

    /// Ends an optimistic read begun by [`optimistic_at`](Self::optimistic_at): whether the
    /// frame has not been released (and so not reused) since `generation` was read. Every
    /// reader load of the frame's bytes made before this call is ordered before it (an
    /// acquire fence, as a seqlock's reader), and every reuse bumps the generation before the
    /// frame's new owner writes a byte ([`release`](Self::release)), so `true` means the bytes
    /// copied were this page's.
    ///
    /// A reuse moves the generation twice: when the frame is released and when its next page
    /// takes it ([`set_identity`](Self::set_identity), after the new identity). A reader whose
    /// first look read the release's generation may have seen the old identity with it (the
    /// identity is reset after that bump); but the old page was orphaned or reset before the
    /// release, so the only state it can then accept is the new page's up to date, which it
    /// sees only after the second bump — and the check here finds the generation moved. The
    /// loom model `loom_optimistic_read_never_keeps_a_reused_frame` found the one-bump
    /// version wrong in exactly that interleaving.
    #[inline]
    pub fn unchanged_since(&self, generation: u32) -> bool {
        fence(Ordering::Acquire);
        self.generation.load(Ordering::Relaxed) == generation
    }

    /// Resets the descriptor of a frame going back to the pool and bumps its generation. The
    /// generation moves first, so that an optimistic reader that sees the reset (or any later
    /// write to the frame) also sees the new generation.
    pub fn release(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        // Every later write of this thread (the reset below, the frame's new bytes) is ordered
        // after the new generation: the writer's half of the seqlock (`unchanged_since`).
        fence(Ordering::Release);
        self.owner.store(NO_OWNER, Ordering::Release);
        self.state.store(0, Ordering::Release);
        self.errno.store(0, Ordering::Relaxed);
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

/// The descriptors of every frame, indexed by [`FrameId`] (the kernel's `mem_map`), and the
/// lock-free lookup [`Hints`] in front of the mappings' indexes.
#[derive(Debug)]
pub struct PageTable {
    descs: Box<[PageDesc]>,
    hints: Hints,
}

impl PageTable {
    /// Descriptors for `frames` frames, all free.
    pub fn new(frames: usize) -> Self {
        PageTable {
            descs: (0..frames).map(|_| PageDesc::default()).collect(),
            hints: Hints::new(frames),
        }
    }

    /// The lookup hints: (mapping, index) → frame, lossy and lock-free (see [`Hints`]).
    #[inline]
    pub fn hints(&self) -> &Hints {
        &self.hints
    }

    /// Every descriptor, in frame order.
    pub fn iter(&self) -> impl Iterator<Item = &PageDesc> {
        self.descs.iter()
    }

    /// Whether every frame is pinned by a page handle (so that no allocation can succeed until
    /// the program drops one). Stops at the first frame without a handle: one load in the
    /// common case, a walk of the table only when the budget really is held by handles.
    pub fn all_user_pinned(&self) -> bool {
        self.descs.iter().all(|d| d.user_pins() > 0)
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
