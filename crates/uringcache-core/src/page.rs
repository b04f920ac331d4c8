//! Page descriptors: one [`PageDesc`] per frame, the counterpart of the kernel's `struct page`.
//!
//! A descriptor carries the page's state bits ([`PageState`]), its pin count (the kernel's
//! `page_count`: one reference held by the mapping while the page is in it, plus one per user
//! and per I/O in flight), the identity of the page that occupies
//! the frame (mapping id and page index), the last I/O error, and the time it was first dirtied.
//!
//! # Invariants
//!
//! * `LOCKED` is held by exactly one party at a time: the read that fills the page, or a writer
//!   changing its bytes. While a page is locked and not `UPTODATE`, nobody but the lock holder
//!   touches the frame's bytes.
//! * `UPTODATE` is set only by the lock holder after the frame holds the page's bytes, and is
//!   never cleared while the page sits in a mapping (truncation removes the page first).
//! * A frame is reused only when its page has left its mapping *and* its pin count is zero:
//!   whoever drops the last pin frees the frame (`put_page`). Eviction removes a page only when
//!   the mapping's own pin is the only one, judged under the mapping's shard lock, which orders
//!   it against "pin under lookup" (see `mapping`), so a pinned page is never evicted.
//! * `owner` and `index` are written only while the frame is being inserted into a mapping
//!   (under the shard's write lock) and are read by the evictor, which re-checks them under the
//!   same lock before acting.
//!
//! Everything here is plain atomics: no locks, no allocation.

use crate::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

/// Index of a frame in the arena and of its descriptor in the [`PageTable`].
pub type FrameId = u32;

/// The state bits of a page (`PG_*` in the kernel), packed in one `AtomicU32`.
///
/// Bits 0..=15 are flags; bits 16..=17 hold the access frequency used by the eviction policy
/// (a saturating 2-bit counter, S3-FIFO's `freq`).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct PageState(pub u32);

impl PageState {
    /// The frame holds the page's current bytes (`PG_uptodate`).
    pub const UPTODATE: u32 = 1 << 0;
    /// Somebody owns the page exclusively: a read filling it, or a writer (`PG_locked`).
    pub const LOCKED: u32 = 1 << 1;
    /// The bytes differ from the device (`PG_dirty`).
    pub const DIRTY: u32 = 1 << 2;
    /// A write of this page to the device is in flight (`PG_writeback`).
    pub const WRITEBACK: u32 = 1 << 3;
    /// The last I/O on this page failed (`PG_error`); the errno is in the descriptor.
    pub const ERROR: u32 = 1 << 4;
    /// Reaching this page starts the next readahead window asynchronously (`PG_readahead`).
    pub const READAHEAD: u32 = 1 << 5;
    /// Some task may be waiting on this page in the wait table (`PG_waiters`): whoever clears
    /// `LOCKED` or `WRITEBACK` must wake the table's bucket.
    pub const WAITERS: u32 = 1 << 6;
    /// The page has left its mapping (truncated or invalidated while pinned); its frame goes
    /// back to the pool at the last unpin.
    pub const ORPHAN: u32 = 1 << 9;
    /// The page was brought in by readahead and has not been read yet (for the readahead hit
    /// statistics; cleared by the first reader).
    pub const PREFETCHED: u32 = 1 << 10;

    /// Shift of the 2-bit access frequency.
    pub const FREQ_SHIFT: u32 = 16;
    /// Mask of the 2-bit access frequency.
    pub const FREQ_MASK: u32 = 0b11 << Self::FREQ_SHIFT;
    /// The largest access frequency.
    pub const FREQ_MAX: u32 = 3;

    /// Whether every bit of `bits` is set.
    #[inline]
    pub fn has(self, bits: u32) -> bool {
        self.0 & bits == bits
    }

    /// Whether any bit of `bits` is set.
    #[inline]
    pub fn any(self, bits: u32) -> bool {
        self.0 & bits != 0
    }

    /// The access frequency, 0..=3.
    #[inline]
    pub fn freq(self) -> u32 {
        (self.0 & Self::FREQ_MASK) >> Self::FREQ_SHIFT
    }
}

impl std::fmt::Debug for PageState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const NAMES: [(u32, &str); 9] = [
            (PageState::UPTODATE, "Uptodate"),
            (PageState::LOCKED, "Locked"),
            (PageState::DIRTY, "Dirty"),
            (PageState::WRITEBACK, "Writeback"),
            (PageState::ERROR, "Error"),
            (PageState::READAHEAD, "Readahead"),
            (PageState::WAITERS, "Waiters"),
            (PageState::ORPHAN, "Orphan"),
            (PageState::PREFETCHED, "Prefetched"),
        ];
        let mut list = f.debug_list();
        for (bit, name) in NAMES {
            if self.0 & bit != 0 {
                list.entry(&format_args!("{name}"));
            }
        }
        list.entry(&format_args!("freq={}", self.freq()));
        list.finish()
    }
}

/// No mapping owns the frame (it is free or being allocated).
pub const NO_OWNER: u32 = u32::MAX;

/// The descriptor of one frame (`struct page`). 40 bytes.
#[derive(Debug)]
pub struct PageDesc {
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
    /// The current state bits.
    #[inline]
    pub fn state(&self) -> PageState {
        PageState(self.state.load(Ordering::Acquire))
    }

    /// Sets `bits`, returning the previous state.
    #[inline]
    pub fn set(&self, bits: u32) -> PageState {
        PageState(self.state.fetch_or(bits, Ordering::AcqRel))
    }

    /// Clears `bits`, returning the previous state.
    #[inline]
    pub fn clear(&self, bits: u32) -> PageState {
        PageState(self.state.fetch_and(!bits, Ordering::AcqRel))
    }

    /// Replaces the whole state word (used only on a frame nobody else can see).
    #[inline]
    pub fn reset_state(&self, bits: u32) {
        self.state.store(bits, Ordering::Release);
    }

    /// Tries to take `LOCKED` (`trylock_page`). Returns whether this call took it.
    #[inline]
    pub fn try_lock(&self) -> bool {
        self.state.fetch_or(PageState::LOCKED, Ordering::Acquire) & PageState::LOCKED == 0
    }

    /// Clears `bit` (normally `LOCKED` or `WRITEBACK`) and reports whether waiters must be
    /// woken (the `WAITERS` bit was set). The caller then calls the wait table's wake.
    #[inline]
    pub fn clear_and_test_waiters(&self, bit: u32) -> bool {
        self.state.fetch_and(!bit, Ordering::AcqRel) & PageState::WAITERS != 0
    }

    /// Atomically checks that none of `forbidden` is set and sets `bits`. Returns the state
    /// seen: `Ok(prev)` when the bits were set, `Err(prev)` when a forbidden bit was present.
    pub fn set_unless(&self, bits: u32, forbidden: u32) -> Result<PageState, PageState> {
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            if cur & forbidden != 0 {
                return Err(PageState(cur));
            }
            match self.state.compare_exchange_weak(
                cur,
                cur | bits,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(prev) => return Ok(PageState(prev)),
                Err(now) => cur = now,
            }
        }
    }

    /// Records an access (`mark_page_accessed`): bumps the 2-bit frequency unless it is
    /// already at its maximum, so a hot page costs one load and no store.
    #[inline]
    pub fn mark_accessed(&self) {
        let cur = self.state.load(Ordering::Relaxed);
        let freq = (cur & PageState::FREQ_MASK) >> PageState::FREQ_SHIFT;
        if freq < PageState::FREQ_MAX {
            // A lost race only loses one increment: the count is a hint.
            let _ = self.state.compare_exchange(
                cur,
                cur + (1 << PageState::FREQ_SHIFT),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Decrements the access frequency by one if above zero; returns the frequency before.
    pub fn age(&self) -> u32 {
        let mut cur = self.state.load(Ordering::Relaxed);
        loop {
            let freq = (cur & PageState::FREQ_MASK) >> PageState::FREQ_SHIFT;
            if freq == 0 {
                return 0;
            }
            match self.state.compare_exchange_weak(
                cur,
                cur - (1 << PageState::FREQ_SHIFT),
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
        self.state
            .fetch_and(!PageState::FREQ_MASK, Ordering::Relaxed);
    }

    /// Current pin count.
    #[inline]
    pub fn pins(&self) -> u32 {
        self.pins.load(Ordering::Acquire)
    }

    /// Adds a pin (`get_page`).
    #[inline]
    pub fn pin(&self) {
        let prev = self.pins.fetch_add(1, Ordering::AcqRel);
        debug_assert!(prev < u32::MAX / 2, "pin count overflow");
    }

    /// Drops a pin (`put_page`); returns the count left.
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

    /// The errno of the last failed I/O on the page (0 if none).
    pub fn errno(&self) -> i32 {
        self.errno.load(Ordering::Acquire)
    }

    /// Records the errno of a failed I/O.
    pub fn set_errno(&self, errno: i32) {
        self.errno.store(errno, Ordering::Release);
    }

    /// When the page was dirtied (cache clock, ms).
    pub fn dirtied_at(&self) -> u64 {
        self.dirtied_at.load(Ordering::Relaxed)
    }

    /// Records when the page was dirtied.
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
    fn lock_is_exclusive() {
        let d = PageDesc::default();
        assert!(d.try_lock());
        assert!(!d.try_lock());
        assert!(!d.clear_and_test_waiters(PageState::LOCKED));
        assert!(d.try_lock());
        d.set(PageState::WAITERS);
        assert!(d.clear_and_test_waiters(PageState::LOCKED));
    }

    #[test]
    fn frequency_saturates_and_ages() {
        let d = PageDesc::default();
        for _ in 0..10 {
            d.mark_accessed();
        }
        assert_eq!(d.state().freq(), 3);
        assert_eq!(d.age(), 3);
        assert_eq!(d.state().freq(), 2);
        d.clear_freq();
        assert_eq!(d.age(), 0);
        d.set(PageState::UPTODATE);
        d.mark_accessed();
        assert!(d.state().has(PageState::UPTODATE));
        assert_eq!(d.state().freq(), 1);
    }

    #[test]
    fn set_unless_refuses_forbidden_bits() {
        let d = PageDesc::default();
        d.set(PageState::DIRTY);
        assert!(d.set_unless(PageState::LOCKED, PageState::DIRTY).is_err());
        d.clear(PageState::DIRTY);
        assert!(d.set_unless(PageState::LOCKED, PageState::DIRTY).is_ok());
        assert!(d.state().has(PageState::LOCKED));
    }

    #[test]
    fn release_bumps_generation() {
        let d = PageDesc::default();
        d.set_identity(3, 9);
        d.set(PageState::UPTODATE);
        let g = d.generation();
        d.release();
        assert_eq!(d.owner(), NO_OWNER);
        assert_eq!(d.state(), PageState(0));
        assert_eq!(d.generation(), g + 1);
    }
}
