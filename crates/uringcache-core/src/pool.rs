//! Frame allocation: the free list first, then eviction (`add_to_page_cache_lru`, reclaim).
//!
//! [`FramePool`] owns the page descriptors, the free list and the eviction policy ([`S3Fifo`]). A frame
//! is in exactly one of three places: the free list; a mapping (queued in the policy, pinned
//! at least by the mapping); or orphaned (out of its mapping, still pinned by users, freed at the
//! last [`FramePool::put`]).
//!
//! # Invariants
//!
//! * The free list's mutex protects only the list; the policy has its own mutex. Neither is
//!   taken on the hit path.
//! * One eviction pass at a time: the reclaim mutex is held across a pass ([`S3Fifo::evict`]),
//!   including the caller's `try_evict` on each candidate, so that a pass that comes back
//!   empty-handed has seen every queued page (another pass's candidates would be invisible to
//!   it). It guards no data; the policy's own mutex is taken only inside the policy, briefly,
//!   so queueing a new page (`lru_add`) never waits for a pass.
//! * A frame handed out by [`FramePool::alloc`] has a fresh descriptor (new generation, no
//!   owner), one pin (the caller's) and `LOCKED` set: nobody else can see it until the caller
//!   publishes it in a mapping.
//! * [`FramePool::put`] frees the frame when the pin it drops is the last one; this is the only
//!   way a mapped frame returns to the free list, besides eviction handing it straight to a new
//!   owner.

use crate::sync::atomic::{AtomicUsize, Ordering};

use crate::sync::Mutex;

use crate::evict::{EvictScan, Ghost, S3Fifo, S3FifoConfig, Verdict};
use crate::page::{FrameId, PageTable};

/// The frames of a cache: descriptors, free list, eviction policy.
#[derive(Debug)]
pub struct FramePool {
    pages: PageTable,
    free: Mutex<Vec<FrameId>>,
    nr_free: AtomicUsize,
    policy: S3Fifo,
    /// Held across an eviction pass: one at a time (see the module doc).
    reclaim: Mutex<()>,
}

impl FramePool {
    /// A pool of `frames` free frames, with the default eviction policy.
    pub fn new(frames: usize) -> Self {
        Self::with_policy(frames, S3FifoConfig::default())
    }

    /// A pool of `frames` free frames, evicting with an [`S3Fifo`] made with `config`.
    ///
    /// # Panics
    ///
    /// As [`S3Fifo::with_config`].
    pub fn with_policy(frames: usize, config: S3FifoConfig) -> Self {
        FramePool {
            pages: PageTable::new(frames),
            // Popped from the end: hand out low frame ids first, so that early allocations are
            // contiguous and fixed-buffer I/O can cover runs of them.
            free: Mutex::new((0..frames as FrameId).rev().collect()),
            nr_free: AtomicUsize::new(frames),
            policy: S3Fifo::with_config(frames, config),
            reclaim: Mutex::new(()),
        }
    }

    /// The page descriptors.
    #[inline]
    pub fn pages(&self) -> &PageTable {
        &self.pages
    }

    /// Number of frames.
    pub fn frames(&self) -> usize {
        self.pages.len()
    }

    /// Frames on the free list.
    pub fn nr_free(&self) -> usize {
        self.nr_free.load(Ordering::Relaxed)
    }

    /// Takes a frame: from the free list, else by evicting through `try_evict` (see
    /// [`S3Fifo::evict`]; on `Evicted` the callback has removed the page from its mapping and
    /// holds no pin on it). `try_evict` runs under the pool's reclaim mutex (one pass at a
    /// time) but under no lock of the policy. Returns the frame pinned once and `LOCKED`, or the
    /// scan's findings when nothing could be evicted (every candidate pinned, locked or dirty).
    pub fn alloc(&self, try_evict: impl FnMut(FrameId) -> Verdict) -> Result<FrameId, EvictScan> {
        let frame = match self.pop_free() {
            Some(f) => f,
            None => {
                let scan = {
                    let _one_pass_at_a_time = self.reclaim.lock();
                    self.policy.evict(&self.pages, try_evict)
                };
                match scan.frame {
                    Some(f) => f,
                    None => return Err(scan),
                }
            }
        };
        let desc = self.pages.get(frame);
        desc.release();
        desc.pin();
        desc.init_locked();
        Ok(frame)
    }

    fn pop_free(&self) -> Option<FrameId> {
        let f = self.free.lock().pop()?;
        self.nr_free.fetch_sub(1, Ordering::Relaxed);
        Some(f)
    }

    /// Queues a frame that was just published in mapping `owner` at `index` with the eviction
    /// policy (`lru_cache_add`). Returns whether it refaulted from the ghost set.
    pub fn lru_add(&self, frame: FrameId, owner: u32, index: u64) -> bool {
        self.policy
            .insert(frame, Ghost::key(owner, index), &self.pages)
    }

    /// Drops one pin (`put_page`); frees the frame when it was the last. Returns whether the
    /// frame was freed. (The `uringcache` crate's own `put` also wakes waiting allocations;
    /// this one serves tests and benchmarks of the pool alone.)
    pub fn put(&self, frame: FrameId) -> bool {
        if self.pages.get(frame).unpin() == 0 {
            self.free_frame(frame);
            true
        } else {
            false
        }
    }

    /// Returns an unpinned frame that is in no mapping to the free list.
    pub fn free_frame(&self, frame: FrameId) {
        let desc = self.pages.get(frame);
        debug_assert_eq!(desc.pins(), 0, "freeing a pinned frame");
        desc.release();
        self.free.lock().push(frame);
        self.nr_free.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes of per-frame metadata the pool holds: descriptors, lookup hints, the policy's
    /// queues and ghost set, the free list (the mappings' indexes are counted by
    /// `Mapping::index_bytes`).
    pub fn metadata_bytes(&self) -> usize {
        self.pages.len() * std::mem::size_of::<crate::page::PageDesc>()
            + self.pages.hints().bytes()
            + self.policy.bytes()
            + self.free.lock().capacity() * std::mem::size_of::<FrameId>()
    }

    /// Lengths of the policy's small and main queues.
    pub fn policy_lens(&self) -> (usize, usize) {
        self.policy.lens()
    }

    /// The eviction policy.
    pub fn policy(&self) -> &S3Fifo {
        &self.policy
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::mapping::Mapping;

    /// An eviction callback over one mapping, judging with the cache's predicate
    /// ([`PageDesc::freeze_if_reclaimable`](crate::page::PageDesc::freeze_if_reclaimable)).
    fn evictor<'a>(m: &'a Mapping, pool: &'a FramePool) -> impl FnMut(FrameId) -> Verdict + 'a {
        move |f| {
            let d = pool.pages().get(f);
            if d.owner() != m.id() {
                return Verdict::Gone;
            }
            if m.remove_if(d.index(), f, pool.pages(), |d| d.freeze_if_reclaimable()) {
                Verdict::Evicted
            } else if d.flags().is_dirty() {
                Verdict::Dirty
            } else {
                Verdict::Busy
            }
        }
    }

    fn cache_page(pool: &FramePool, m: &Mapping, index: u64) -> Result<FrameId, EvictScan> {
        let f = pool.alloc(evictor(m, pool))?;
        m.insert(index, f, pool.pages()).unwrap();
        pool.lru_add(f, m.id(), index);
        assert!(!pool.pages().get(f).finish_read(Ok(())));
        pool.put(f);
        Ok(f)
    }

    /// The metadata a cached page costs (descriptor, hints, policy, free list, index entry),
    /// measured on a full pool that has evicted a pool's worth of pages (so that the ghost set
    /// is full). Printed for BENCHMARKS.md; the bound asserted is the one measured, so that a
    /// regression shows.
    #[test]
    fn metadata_per_page() {
        let frames = 4096;
        let pool = FramePool::new(frames);
        let m = Mapping::new(1, 0);
        for i in 0..(2 * frames as u64) {
            cache_page(&pool, &m, i).unwrap();
        }
        let pool_bytes = pool.metadata_bytes();
        let index_bytes = m.index_bytes();
        let per_page = |b: usize| b as f64 / frames as f64;
        println!(
            "per page: descriptor {} B, hints {:.1} B, policy {:.1} B, free list {:.1} B, index {:.1} B; total {:.1} B",
            std::mem::size_of::<crate::page::PageDesc>(),
            per_page(pool.pages().hints().bytes()),
            per_page(pool.policy().bytes()),
            per_page(pool.free.lock().capacity() * 4),
            per_page(index_bytes),
            per_page(pool_bytes + index_bytes),
        );
        assert_eq!(std::mem::size_of::<crate::page::PageDesc>(), 40);
        assert!(per_page(pool_bytes + index_bytes) <= 140.0);
    }

    #[test]
    fn allocates_free_frames_then_evicts() {
        let pool = FramePool::new(4);
        let m = Mapping::new(1, 0);
        let mut frames: Vec<_> = (0..4).map(|i| cache_page(&pool, &m, i).unwrap()).collect();
        frames.sort();
        assert_eq!(frames, vec![0, 1, 2, 3]);
        assert_eq!(pool.nr_free(), 0);
        // A fifth page evicts the oldest.
        cache_page(&pool, &m, 4).unwrap();
        assert!(!m.contains(0));
        assert_eq!(m.nr_pages(), 4);
    }

    #[test]
    fn all_pinned_is_an_error_not_a_hang() {
        let pool = FramePool::new(2);
        let m = Mapping::new(1, 0);
        for i in 0..2 {
            cache_page(&pool, &m, i).unwrap();
        }
        let a = m.lookup(0, pool.pages()).unwrap();
        let b = m.lookup(1, pool.pages()).unwrap();
        let err = cache_page(&pool, &m, 2).unwrap_err();
        assert!(err.busy >= 2 && err.dirty == 0);
        pool.put(a);
        pool.put(b);
        cache_page(&pool, &m, 2).unwrap();
    }

    #[test]
    fn last_put_frees_an_orphan() {
        let pool = FramePool::new(2);
        let m = Mapping::new(1, 0);
        let f = cache_page(&pool, &m, 0).unwrap();
        let pinned = m.lookup(0, pool.pages()).unwrap();
        // Truncation: out of the mapping while a user still pins it.
        assert!(m.remove_if(0, f, pool.pages(), |_| true));
        pool.pages().get(f).mark_orphan();
        assert!(!pool.put(f), "the mapping's pin goes, the user's stays");
        assert_eq!(pool.nr_free(), 1);
        assert!(pool.put(pinned), "the last pin frees the frame");
        assert_eq!(pool.nr_free(), 2);
    }

    #[test]
    fn concurrent_allocations_lose_no_frame() {
        // Four threads caching pages through 16 frames: at most one frame per thread is
        // locked or not yet queued, so every allocation finds a victim, and at the end every
        // frame holds a page, queued exactly once.
        let frames = 16;
        let pool = FramePool::new(frames);
        let m = Mapping::new(1, 0);
        let rounds = 2000u64;
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (pool, m) = (&pool, &m);
                s.spawn(move || {
                    for i in 0..rounds {
                        cache_page(pool, m, t << 32 | i).expect("a victim");
                    }
                });
            }
        });
        assert_eq!((m.nr_pages(), pool.nr_free()), (frames, 0));
        assert_eq!(pool.policy().isolated(), 0);
        let (small, main) = pool.policy_lens();
        assert_eq!(
            small + main,
            frames,
            "each page queued once, no stale entry"
        );
    }
}
