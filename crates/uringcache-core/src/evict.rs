//! The eviction policy: S3-FIFO over frames, the cache's answer to the kernel's active and
//! inactive lists.
//!
//! # Why S3-FIFO
//!
//! A page cache sees scans: a backup, a compaction or an analytic query reads a file once from
//! end to end. LRU (and SIEVE, which has no probationary queue) lets such a scan flush the hot
//! set. The kernel defends with two lists: a page enters the inactive list and is promoted to the
//! active list only on a second access (`mark_page_accessed`), and workingset shadow entries
//! promote a page that is refaulted soon after eviction. S3-FIFO (Yang et al., SOSP'23) has the
//! same shape in FIFO form:
//!
//! * a **small** queue (10 % of the frames) where every new page starts — the inactive list;
//! * a **main** queue for pages used again while in the small queue — the active list;
//! * a **ghost** set of recently evicted pages (identity only, no frame) — the shadow entries:
//!   a page that misses while its ghost is remembered goes straight to the main queue.
//!
//! A hit only bumps a 2-bit frequency in the page's state word ([`PageDesc::mark_accessed`](crate::page::PageDesc::mark_accessed)):
//! no list move and no lock, so hits scale with cores. Queues are touched only when a frame is
//! allocated or evicted, under the policy's one mutex — the miss path, which already costs a
//! device I/O.
//!
//! Eviction from the small queue promotes a page whose frequency reached 2 (used at least twice:
//! once when it was read in, once more since) and evicts the others into the ghost set. Eviction
//! from the main queue gives each page one more lap per remaining unit of frequency (CLOCK-like)
//! and evicts at zero. A scan's pages are touched once, so they leave through the small queue and
//! never displace the main queue.
//!
//! # Invariants
//!
//! * Entries carry the frame's generation at insertion; an entry whose frame has been freed and
//!   reused since (generation changed) is stale and silently dropped, so removal outside
//!   eviction (truncation, invalidation) needs no queue surgery.
//! * The policy never decides alone whether a page may go: the caller's `try_evict` checks pins
//!   and state bits under the mapping's shard lock and removes the page. A page that cannot go
//!   (pinned, locked, dirty, under writeback) is put back at the tail of its queue.
//! * One call examines a bounded number of entries, so an allocation with every frame pinned
//!   returns `None` instead of spinning.

use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasherDefault;

use crate::sync::Mutex;

use crate::mapping::IndexHasher;
use crate::page::{FrameId, PageState, PageTable};

/// Verdict of the caller's attempt to evict one candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The page left its mapping; the frame is the caller's to reuse.
    Evicted,
    /// The page cannot go now (pinned, locked, under writeback): keep it queued.
    Busy,
    /// The page is dirty: keep it queued; the caller should have it written back.
    Dirty,
    /// The frame no longer holds a cached page (already freed): drop the entry.
    Gone,
}

/// What one eviction pass found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvictScan {
    /// The frame freed, if any.
    pub frame: Option<FrameId>,
    /// Candidates that were dirty (writeback would free them).
    pub dirty: usize,
    /// Candidates that were pinned or locked.
    pub busy: usize,
    /// Laps granted to main-queue pages for their remaining frequency. A pass that found no
    /// victim but aged pages has made progress: hits racing with it re-raised frequencies
    /// faster than it lowered them, and a new pass should be made at once rather than
    /// waiting for a frame to be released (nothing may ever release one).
    pub aged: usize,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    frame: FrameId,
    generation: u32,
}

/// Tunables of [`S3Fifo`]. `Default` is what the cache uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct S3FifoConfig {
    /// Share of the frames the small (probationary) queue is kept to: above it, eviction takes
    /// from the small queue first. Default 0.1; in `(0, 1]`.
    pub small_ratio: f64,
    /// Pages the ghost set remembers, as a share of the frames. Default 1.0; 0 disables it.
    pub ghost_ratio: f64,
    /// Access frequency at which a page leaving the small queue is promoted to the main queue
    /// instead of evicted. Default 2 (read in, and used once more); in
    /// `1..=`[`PageState::FREQ_MAX`].
    pub promote_freq: u32,
    /// Eviction attempts one pass may make, as a multiple of the entries queued when it starts
    /// (plus two): the bound that makes a pass over pinned pages return. Default 2; at least 1.
    pub scan_laps: usize,
}

impl Default for S3FifoConfig {
    fn default() -> Self {
        S3FifoConfig {
            small_ratio: 0.1,
            ghost_ratio: 1.0,
            promote_freq: 2,
            scan_laps: 2,
        }
    }
}

/// The ghost set: keys of pages recently evicted from the small queue, without their frames
/// (the kernel's workingset shadow entries). A bounded FIFO: recording a key beyond the
/// capacity forgets the oldest one.
#[derive(Debug)]
pub struct Ghost {
    keys: HashSet<u64, BuildHasherDefault<IndexHasher>>,
    fifo: VecDeque<u64>,
    capacity: usize,
}

impl Ghost {
    /// An empty ghost set remembering up to `capacity` keys (0: it remembers nothing).
    pub fn new(capacity: usize) -> Self {
        Ghost {
            keys: HashSet::default(),
            fifo: VecDeque::new(),
            capacity,
        }
    }

    /// The key under which page `index` of mapping `owner` is remembered.
    #[inline]
    pub fn key(owner: u32, index: u64) -> u64 {
        (index.wrapping_mul(0x9E37_79B9_7F4A_7C15)) ^ ((owner as u64) << 40 | owner as u64)
    }

    /// Remembers an evicted page, forgetting the oldest keys beyond the capacity.
    pub fn record(&mut self, key: u64) {
        if self.capacity == 0 {
            return;
        }
        self.keys.insert(key);
        self.fifo.push_back(key);
        while self.fifo.len() > self.capacity {
            if let Some(old) = self.fifo.pop_front() {
                self.keys.remove(&old);
            }
        }
    }

    /// Forgets `key`; returns whether it was remembered (a refault).
    pub fn take(&mut self, key: u64) -> bool {
        self.keys.remove(&key)
    }

    /// Whether `key` is remembered.
    pub fn contains(&self, key: u64) -> bool {
        self.keys.contains(&key)
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The most keys remembered at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[derive(Debug)]
struct Queues {
    small: VecDeque<Entry>,
    main: VecDeque<Entry>,
    ghost: Ghost,
}

/// The S3-FIFO policy over a fixed set of frames.
#[derive(Debug)]
pub struct S3Fifo {
    queues: Mutex<Queues>,
    config: S3FifoConfig,
    small_target: usize,
}

impl S3Fifo {
    /// A policy for `frames` frames with the default [`S3FifoConfig`].
    pub fn new(frames: usize) -> Self {
        Self::with_config(frames, S3FifoConfig::default())
    }

    /// A policy for `frames` frames.
    ///
    /// # Panics
    ///
    /// If a field of `config` is outside the range its documentation gives.
    pub fn with_config(frames: usize, config: S3FifoConfig) -> Self {
        assert!(
            config.small_ratio > 0.0 && config.small_ratio <= 1.0,
            "S3FifoConfig::small_ratio {} is not in (0, 1]",
            config.small_ratio
        );
        assert!(
            config.ghost_ratio >= 0.0 && config.ghost_ratio.is_finite(),
            "S3FifoConfig::ghost_ratio {} is not a finite share >= 0",
            config.ghost_ratio
        );
        assert!(
            (1..=PageState::FREQ_MAX).contains(&config.promote_freq),
            "S3FifoConfig::promote_freq {} is not in 1..={}",
            config.promote_freq,
            PageState::FREQ_MAX
        );
        assert!(config.scan_laps >= 1, "S3FifoConfig::scan_laps is 0");
        let ghost_capacity = if config.ghost_ratio > 0.0 {
            ((frames as f64 * config.ghost_ratio) as usize).max(1)
        } else {
            0
        };
        S3Fifo {
            queues: Mutex::new(Queues {
                small: VecDeque::with_capacity(frames),
                main: VecDeque::with_capacity(frames),
                ghost: Ghost::new(ghost_capacity),
            }),
            small_target: ((frames as f64 * config.small_ratio) as usize).max(1),
            config,
        }
    }

    /// The configuration the policy was made with.
    pub fn config(&self) -> &S3FifoConfig {
        &self.config
    }

    /// The small queue's target length, in entries.
    pub fn small_target(&self) -> usize {
        self.small_target
    }

    /// Keys in the ghost set.
    pub fn ghost_len(&self) -> usize {
        self.queues.lock().ghost.len()
    }

    /// Queues a frame that just received a page (`lru_cache_add`). `key` is the page's
    /// [`Ghost::key`]: a remembered ghost sends it straight to the main queue (a refault).
    /// Returns whether it was a ghost hit.
    pub fn insert(&self, frame: FrameId, key: u64, pages: &PageTable) -> bool {
        let entry = Entry {
            frame,
            generation: pages.get(frame).generation(),
        };
        let mut q = self.queues.lock();
        if q.ghost.take(key) {
            q.main.push_back(entry);
            true
        } else {
            q.small.push_back(entry);
            false
        }
    }

    /// Lengths of the small and main queues (stale entries included).
    pub fn lens(&self) -> (usize, usize) {
        let q = self.queues.lock();
        (q.small.len(), q.main.len())
    }

    /// Finds a victim and evicts it through `try_evict`. `try_evict(frame)` must check the page
    /// under its mapping's lock, remove it when it may go, and say what it did.
    ///
    /// One pass makes at most twice as many eviction attempts and promotions as there are
    /// queued entries, plus up to three aging laps per entry (the most a 2-bit frequency can
    /// need): without racing hits, a pass over pages that are merely hot always ends in a
    /// victim, and only pinned, locked or dirty pages make it come back empty-handed.
    pub fn evict(
        &self,
        pages: &PageTable,
        mut try_evict: impl FnMut(FrameId) -> Verdict,
    ) -> EvictScan {
        let mut scan = EvictScan::default();
        let mut q = self.queues.lock();
        let queued = q.small.len() + q.main.len();
        let mut budget = self.config.scan_laps * queued + 2;
        // Each aging step removes one unit of a page's frequency, so aging cannot go on
        // forever unless hits race with the pass; it has a budget of its own, refunding the
        // attempt budget, so that hot pages are aged down to eviction instead of exhausting
        // the attempts and making the caller wait for a release that may never come.
        let mut aging = PageState::FREQ_MAX as usize * queued + 2;
        // Candidates of each queue found busy (pinned, locked, dirty) in this pass: a queue
        // whose every entry is busy cannot give a victim now, so the other one is searched
        // (long-lived pins must not hide the evictable pages of the other queue).
        let (mut small_busy, mut main_busy) = (0usize, 0usize);
        while budget > 0 {
            budget -= 1;
            let prefer_small = q.small.len() > self.small_target || q.main.is_empty();
            let from_small = if prefer_small {
                small_busy < q.small.len() || q.main.is_empty()
            } else {
                main_busy >= q.main.len() && !q.small.is_empty()
            };
            let entry = if from_small {
                q.small.pop_front()
            } else {
                q.main.pop_front()
            };
            let Some(entry) = entry else { break };
            let desc = pages.get(entry.frame);
            if desc.generation() != entry.generation {
                continue; // stale: the frame was freed (and maybe reused) since
            }
            if from_small {
                if desc.state().freq() >= self.config.promote_freq {
                    desc.clear_freq();
                    q.main.push_back(entry);
                    continue;
                }
            } else if desc.age() > 0 {
                scan.aged += 1;
                if aging > 0 {
                    aging -= 1;
                    budget += 1;
                }
                q.main.push_back(entry);
                continue;
            }
            let key = Ghost::key(desc.owner(), desc.index());
            match try_evict(entry.frame) {
                Verdict::Evicted => {
                    if from_small {
                        q.ghost.record(key);
                    }
                    scan.frame = Some(entry.frame);
                    return scan;
                }
                Verdict::Busy => {
                    scan.busy += 1;
                    small_busy += from_small as usize;
                    main_busy += !from_small as usize;
                    requeue(&mut q, entry, from_small);
                }
                Verdict::Dirty => {
                    scan.dirty += 1;
                    small_busy += from_small as usize;
                    main_busy += !from_small as usize;
                    requeue(&mut q, entry, from_small);
                }
                Verdict::Gone => {}
            }
        }
        scan
    }
}

fn requeue(q: &mut Queues, entry: Entry, from_small: bool) {
    if from_small {
        q.small.push_back(entry);
    } else {
        q.main.push_back(entry);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A tiny model: frames hold (owner 1, index) pages; eviction succeeds unless pinned/dirty.
    fn evict_one(policy: &S3Fifo, pages: &PageTable) -> Option<FrameId> {
        policy
            .evict(pages, |f| {
                let d = pages.get(f);
                if d.pins() > 0 {
                    Verdict::Busy
                } else if d.state().has(PageState::DIRTY) {
                    Verdict::Dirty
                } else {
                    Verdict::Evicted
                }
            })
            .frame
    }

    fn fill(policy: &S3Fifo, pages: &PageTable, frame: FrameId, index: u64) -> bool {
        pages.get(frame).release();
        pages.get(frame).set_identity(1, index);
        policy.insert(frame, Ghost::key(1, index), pages)
    }

    #[test]
    fn default_config_keeps_the_former_constants() {
        let c = S3FifoConfig::default();
        assert_eq!((c.promote_freq, c.scan_laps), (2, 2));
        for frames in (0..5000).chain([1 << 16, 1 << 20, (1 << 20) + 9, 10_000_007]) {
            let p = S3Fifo::new(frames);
            assert_eq!(p.small_target(), (frames / 10).max(1), "{frames} frames");
            assert_eq!(p.queues.lock().ghost.capacity(), frames.max(1), "{frames} frames");
        }
        let off = S3Fifo::with_config(
            10,
            S3FifoConfig {
                ghost_ratio: 0.0,
                ..S3FifoConfig::default()
            },
        );
        assert_eq!(off.queues.lock().ghost.capacity(), 0);
    }

    #[test]
    fn the_ghost_is_a_bounded_fifo() {
        let mut g = Ghost::new(3);
        for k in 0..5 {
            g.record(k);
        }
        assert_eq!(g.len(), 3);
        assert!(!g.contains(0) && !g.contains(1), "the oldest keys are forgotten");
        assert!(g.take(3));
        assert!(!g.take(3), "a refault forgets the key");
        assert!(g.contains(2) && g.contains(4));
        let mut none = Ghost::new(0);
        none.record(7);
        assert!(none.is_empty());
    }

    #[test]
    fn fifo_order_without_hits() {
        let pages = PageTable::new(10);
        let p = S3Fifo::new(10);
        for f in 0..10 {
            fill(&p, &pages, f, f as u64);
        }
        for f in 0..10 {
            assert_eq!(evict_one(&p, &pages), Some(f));
        }
        assert_eq!(evict_one(&p, &pages), None);
    }

    #[test]
    fn pages_used_twice_survive_a_scan() {
        // 20 frames: a hot set of 5 pages used repeatedly, then a scan of 200 pages.
        let n = 20;
        let pages = PageTable::new(n);
        let p = S3Fifo::new(n);
        let mut frame_of = std::collections::HashMap::new();
        let mut next_free: Vec<FrameId> = (0..n as FrameId).rev().collect();
        let access = |index: u64,
                      frame_of: &mut std::collections::HashMap<u64, FrameId>,
                      next_free: &mut Vec<FrameId>| {
            if let Some(&f) = frame_of.get(&index) {
                if pages.get(f).owner() == 1 && pages.get(f).index() == index {
                    pages.get(f).mark_accessed();
                    return true;
                }
            }
            let f = next_free.pop().unwrap_or_else(|| {
                let f = evict_one(&p, &pages).expect("a victim");
                frame_of.retain(|_, v| *v != f);
                f
            });
            fill(&p, &pages, f, index);
            pages.get(f).mark_accessed(); // the read that faulted it in
            frame_of.insert(index, f);
            false
        };
        for _ in 0..4 {
            for hot in 0..5 {
                access(hot, &mut frame_of, &mut next_free);
            }
        }
        for cold in 1000..1200 {
            access(cold, &mut frame_of, &mut next_free);
        }
        let hits = (0..5)
            .filter(|&hot| access(hot, &mut frame_of, &mut next_free))
            .count();
        assert_eq!(hits, 5, "the hot set must survive the scan");
    }

    #[test]
    fn pinned_and_dirty_pages_are_skipped_and_counted() {
        let pages = PageTable::new(3);
        let p = S3Fifo::new(3);
        for f in 0..3 {
            fill(&p, &pages, f, f as u64);
        }
        pages.get(0).pin();
        pages.get(1).set(PageState::DIRTY);
        let scan = p.evict(&pages, |f| {
            let d = pages.get(f);
            if d.pins() > 0 {
                Verdict::Busy
            } else if d.state().has(PageState::DIRTY) {
                Verdict::Dirty
            } else {
                Verdict::Evicted
            }
        });
        assert_eq!(scan.frame, Some(2));
        assert_eq!(scan.busy, 1);
        assert_eq!(scan.dirty, 1);
        // Everything left is pinned or dirty: the scan ends, no victim, no spin.
        let scan = p.evict(&pages, |f| {
            if pages.get(f).pins() > 0 {
                Verdict::Busy
            } else {
                Verdict::Dirty
            }
        });
        assert_eq!(scan.frame, None);
        assert!(scan.busy >= 1 && scan.dirty >= 1);
    }

    #[test]
    fn stale_entries_are_dropped() {
        let pages = PageTable::new(2);
        let p = S3Fifo::new(2);
        fill(&p, &pages, 0, 0);
        fill(&p, &pages, 1, 1);
        pages.get(0).release(); // truncated: frame freed outside eviction
        assert_eq!(evict_one(&p, &pages), Some(1));
        assert_eq!(evict_one(&p, &pages), None);
    }

    #[test]
    fn refault_of_a_ghost_goes_to_main() {
        let pages = PageTable::new(10);
        let p = S3Fifo::new(10);
        for f in 0..10 {
            fill(&p, &pages, f, f as u64);
        }
        let victim = evict_one(&p, &pages).unwrap();
        assert_eq!(victim, 0);
        assert!(
            fill(&p, &pages, victim, 0),
            "page 0 refaults as a ghost hit"
        );
        assert!(!fill(&p, &pages, 1, 500), "a new page is not");
    }

    #[test]
    fn pinned_pages_of_one_queue_do_not_hide_victims_in_the_other() {
        // Small queue over its target and all pinned; the evictable pages are in main.
        let pages = PageTable::new(10);
        let p = S3Fifo::new(10);
        for f in 0..2 {
            fill(&p, &pages, f, f as u64);
            pages.get(f).mark_accessed();
            pages.get(f).mark_accessed(); // promoted to main on the next scan
        }
        for f in 2..6 {
            fill(&p, &pages, f, f as u64);
            pages.get(f).pin();
        }
        let victim = evict_one(&p, &pages);
        assert!(matches!(victim, Some(0 | 1)), "{victim:?}");
        // Main over everything and all pinned; the evictable page is in a small queue at
        // its target.
        let pages = PageTable::new(20);
        let p = S3Fifo::new(20);
        for f in 0..6 {
            fill(&p, &pages, f, f as u64);
            pages.get(f).mark_accessed();
            pages.get(f).mark_accessed();
        }
        for f in 6..8 {
            fill(&p, &pages, f, f as u64);
        }
        // One scan promotes 0..6 to main; pin them, then only 6 and 7 are evictable.
        for f in 0..6 {
            pages.get(f).pin();
        }
        assert!(matches!(evict_one(&p, &pages), Some(6 | 7)));
        assert!(matches!(evict_one(&p, &pages), Some(6 | 7)));
        assert_eq!(evict_one(&p, &pages), None);
    }

    #[test]
    fn hot_pages_alone_always_yield_a_victim() {
        // Every page in the main queue at the highest frequency: the pass must age them
        // down and evict one, not give up (the caller would wait for a release that no one
        // is going to make).
        let n = 10;
        let pages = PageTable::new(n);
        let p = S3Fifo::new(n);
        for f in 0..n as FrameId {
            fill(&p, &pages, f, f as u64);
            pages.get(f).mark_accessed();
            pages.get(f).mark_accessed();
        }
        // Promotes all ten to main and evicts the first.
        assert_eq!(evict_one(&p, &pages), Some(0));
        for _ in 0..3 {
            for f in 1..n as FrameId {
                pages.get(f).mark_accessed();
            }
        }
        assert_eq!(pages.get(1).state().freq(), PageState::FREQ_MAX);
        let scan = p.evict(&pages, |_| Verdict::Evicted);
        assert_eq!(scan.frame, Some(1), "{scan:?}");
        assert!(scan.aged > 0);
        // The same with a pinned page among them.
        pages.get(2).pin();
        for f in 3..n as FrameId {
            for _ in 0..3 {
                pages.get(f).mark_accessed();
            }
        }
        assert_eq!(evict_one(&p, &pages), Some(3));
    }
}
