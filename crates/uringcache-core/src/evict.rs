//! The eviction policy: [`S3Fifo`] over frames, the cache's answer to the kernel's active and
//! inactive lists, with a [`Ghost`] set for its shadow entries.
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
//! * a **small** queue (10 % of the frames, [`S3FifoConfig::small_ratio`]) where every new page
//!   starts — the inactive list;
//! * a **main** queue for pages used again while in the small queue — the active list;
//! * a **ghost** set of recently evicted pages (identity only, no frame) — the shadow entries:
//!   a page that misses while its ghost is remembered goes straight to the main queue.
//!
//! A hit only bumps a 2-bit frequency in the page's state word ([`PageDesc::mark_accessed`](crate::page::PageDesc::mark_accessed)):
//! no list move and no lock, so hits scale with cores. Queues are touched only when a frame is
//! allocated or evicted, under the policy's mutex — the miss path, which already costs a
//! device I/O.
//!
//! Eviction from the small queue promotes a page whose frequency reached 2 (used at least twice:
//! once when it was read in, once more since; [`S3FifoConfig::promote_freq`]) and evicts the
//! others into the ghost set. Eviction from the main queue gives each page one more lap per
//! remaining unit of frequency (CLOCK-like) and evicts at zero. A scan's pages are touched once,
//! so they leave through the small queue and never displace the main queue.
//!
//! # What it owns, and its lock
//!
//! [`S3Fifo`] owns the small and main queues (entries: a frame and the generation it had when
//! queued), the [`Ghost`] set and the count of isolated candidates, all under one mutex. It owns
//! nothing of the pages: pins, state bits and mappings are the cache's; the policy reads a
//! descriptor's generation, frequency and identity and lowers its frequency. The mutex is a leaf:
//! it is held only inside the policy's own methods, which never call out, so no other lock is
//! taken under it and the policy never calls back into the cache.
//!
//! # Reclaim in three steps
//!
//! Eviction is the kernel's `isolate_lru_pages`, `shrink_page_list` and `putback_lru_page`:
//!
//! 1. [`S3Fifo::isolate`], under the mutex, works at the queues' heads: drops stale entries,
//!    promotes small-queue pages used often enough, gives main-queue pages their laps, and takes
//!    the candidates it meets off their queues into an [`Isolated`] batch: one at the start of a
//!    pass (the oldest page can usually go), up to [`S3FifoConfig::batch`] once that failed. A
//!    batch extends only over consecutive candidates (no promotion or lap is granted past a
//!    candidate not yet tried), so trying them in order makes the same decisions, in the same
//!    order, as one pass under the lock would.
//! 2. The caller tries each candidate ([`Isolated::next_candidate`]) with no policy lock held: it
//!    checks pins and bits under the mapping's lock and removes the page if it may go.
//! 3. [`Isolated::putback`] records each [`Verdict`]; dropping the batch applies them under the
//!    mutex, once per batch: `Evicted` → the ghost remembers the page (if it left the small
//!    queue); `Busy` → the tail of its queue; `Dirty` → the tail, counted in [`EvictScan::dirty`]
//!    so that the caller starts writeback; `Gone` → dropped; not tried → back at the head of its
//!    queue, in order.
//!
//! [`S3Fifo::evict`] runs a whole [`Pass`] of these steps for one victim.
//!
//! # Invariants
//!
//! * Entries carry the frame's generation at insertion; an entry whose frame has been freed and
//!   reused since (generation changed) is stale and silently dropped, so removal outside
//!   eviction (truncation, invalidation) needs no queue surgery.
//! * The policy never decides alone whether a page may go: the caller checks pins and state bits
//!   under the mapping's shard lock and removes the page. A page that cannot go (pinned, locked,
//!   dirty, under writeback) is put back at the tail of its queue.
//! * No entry is lost: an isolated candidate is in no queue and in exactly one batch, and the
//!   batch is a drop guard. However the caller leaves it (done, early return, panic), every
//!   candidate goes back to its queue unless its verdict was `Evicted` or `Gone`. A
//!   [`Candidate`] cannot be copied, so its verdict is given once; one never given back counts
//!   as not tried.
//! * One pass examines a bounded number of entries ([`S3FifoConfig::scan_laps`]), so an
//!   allocation with every frame pinned returns `None` instead of spinning.
//! * Passes are meant to run one at a time ([`FramePool`](crate::pool::FramePool) serializes
//!   them). Overlapping passes lose nothing, but the candidates of one are invisible to the
//!   other, which may come back empty-handed while the first puts an evictable page back untried.

use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasherDefault;

use crate::sync::Mutex;

use crate::mapping::IndexHasher;
use crate::page::{FrameId, PageFlags, PageTable};

/// The most candidates one [`Isolated`] batch holds (the kernel's `SWAP_CLUSTER_MAX`).
pub const MAX_BATCH: usize = 32;

/// Verdict of the caller's attempt to evict one candidate, given with [`Isolated::putback`].
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

/// The queue an entry is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queue {
    /// The probationary queue every new page starts on.
    Small,
    /// The queue of pages used again while on the small one, or refaulted from the ghost.
    Main,
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
    /// `1..=`[`PageFlags::FREQ_MAX`].
    pub promote_freq: u32,
    /// Eviction attempts one pass may make, as a multiple of the entries queued when it starts
    /// (plus two): the bound that makes a pass over pinned pages return. Default 2; at least 1.
    pub scan_laps: usize,
    /// Candidates one [`S3Fifo::isolate`] takes at most, after the first of a pass (which takes
    /// one). Default 16; in `1..=`[`MAX_BATCH`].
    pub batch: usize,
}

impl Default for S3FifoConfig {
    fn default() -> Self {
        S3FifoConfig {
            small_ratio: 0.1,
            ghost_ratio: 1.0,
            promote_freq: 2,
            scan_laps: 2,
            batch: 16,
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
    /// Entries taken off the queues into batches not yet dropped.
    isolated: usize,
}

impl Queues {
    fn queue(&mut self, queue: Queue) -> &mut VecDeque<Entry> {
        match queue {
            Queue::Small => &mut self.small,
            Queue::Main => &mut self.main,
        }
    }
}

/// The S3-FIFO policy over a fixed set of frames: the small and main queues and the ghost set,
/// under one leaf mutex. It hands out eviction candidates ([`isolate`](S3Fifo::isolate)) and
/// takes them back; it never calls into the cache.
#[derive(Debug)]
pub struct S3Fifo {
    queues: Mutex<Queues>,
    config: S3FifoConfig,
    small_target: usize,
}

/// One eviction pass, across the batches [`S3Fifo::isolate`] hands out for it: its budget, the
/// candidates of each queue found busy so far, and what it found ([`Pass::scan`]).
#[derive(Debug, Default)]
pub struct Pass {
    scan: EvictScan,
    budget: Option<Budget>,
    /// Candidates of each queue found busy (pinned, locked, dirty) in this pass: a queue whose
    /// every entry is busy cannot give a victim now, so the other one is searched (long-lived
    /// pins must not hide the evictable pages of the other queue).
    small_busy: usize,
    main_busy: usize,
    batches: usize,
    over: bool,
}

#[derive(Debug)]
struct Budget {
    /// Entries the pass may still take off the queues.
    attempts: usize,
    /// Each lap removes one unit of a page's frequency, so laps cannot go on forever unless
    /// hits race with the pass; they have a budget of their own, refunding `attempts`, so that
    /// hot pages are aged down to eviction instead of exhausting the attempts and making the
    /// caller wait for a release that may never come.
    laps: usize,
}

impl Pass {
    /// A pass that has not started: its budget is set by its first [`S3Fifo::isolate`].
    pub fn new() -> Self {
        Self::default()
    }

    /// What the pass found so far: busy and dirty candidates, laps granted (`frame` is `None`:
    /// the victim is the caller's to report).
    pub fn scan(&self) -> EvictScan {
        self.scan
    }

    /// Whether the pass has nothing more to give: its budget is spent or both queues are empty.
    pub fn is_over(&self) -> bool {
        self.over
    }
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    entry: Entry,
    queue: Queue,
    /// The page's ghost key, read when it was isolated (its identity is gone once evicted).
    key: u64,
    verdict: Option<Verdict>,
}

impl Slot {
    const EMPTY: Slot = Slot {
        entry: Entry {
            frame: 0,
            generation: 0,
        },
        queue: Queue::Small,
        key: 0,
        verdict: None,
    };
}

/// Candidates taken off their queues by [`S3Fifo::isolate`], in queue order, held in a fixed
/// array (no allocation). A drop guard: dropping it gives every candidate back to the policy
/// with the verdict recorded by [`putback`](Isolated::putback) (those without one go back to
/// the head of their queue, as if never taken).
#[must_use = "dropping the batch at once puts every candidate back untried"]
#[derive(Debug)]
pub struct Isolated<'a> {
    policy: &'a S3Fifo,
    pass: &'a mut Pass,
    slots: [Slot; MAX_BATCH],
    len: usize,
    handed: usize,
}

/// One candidate of an [`Isolated`] batch: try to evict its [`frame`](Candidate::frame), then
/// give it back with [`Isolated::putback`] and the verdict.
#[must_use = "give the candidate back with Isolated::putback"]
#[derive(Debug)]
pub struct Candidate {
    slot: usize,
    frame: FrameId,
    queue: Queue,
}

impl Candidate {
    /// The frame whose page is the candidate.
    pub fn frame(&self) -> FrameId {
        self.frame
    }

    /// The queue it was taken from.
    pub fn queue(&self) -> Queue {
        self.queue
    }
}

impl Isolated<'_> {
    /// Candidates in the batch.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch is empty: the pass is over ([`Pass::is_over`]).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The next candidate to try, in queue order.
    pub fn next_candidate(&mut self) -> Option<Candidate> {
        if self.handed == self.len {
            return None;
        }
        let slot = self.handed;
        self.handed += 1;
        let s = &self.slots[slot];
        Some(Candidate {
            slot,
            frame: s.entry.frame,
            queue: s.queue,
        })
    }

    /// Records what became of `candidate`; applied when the batch is dropped.
    ///
    /// # Panics
    ///
    /// If `candidate` comes from another batch.
    pub fn putback(&mut self, candidate: Candidate, verdict: Verdict) {
        let slot = &mut self.slots[..self.len][candidate.slot];
        assert_eq!(
            slot.entry.frame, candidate.frame,
            "a candidate of another batch"
        );
        slot.verdict = Some(verdict);
    }
}

impl Drop for Isolated<'_> {
    fn drop(&mut self) {
        self.policy.put_back(&self.slots[..self.len], self.pass);
    }
}

/// What `isolate` does with the entry at the head of a queue.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Stale: drop it.
    Drop,
    /// Small queue, used often enough: to the main queue.
    Promote,
    /// Main queue, frequency left: one more lap.
    Lap,
    /// A candidate.
    Take,
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
            (1..=PageFlags::FREQ_MAX).contains(&config.promote_freq),
            "S3FifoConfig::promote_freq {} is not in 1..={}",
            config.promote_freq,
            PageFlags::FREQ_MAX
        );
        assert!(config.scan_laps >= 1, "S3FifoConfig::scan_laps is 0");
        assert!(
            (1..=MAX_BATCH).contains(&config.batch),
            "S3FifoConfig::batch {} is not in 1..={MAX_BATCH}",
            config.batch
        );
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
                isolated: 0,
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

    /// Lengths of the small and main queues (stale entries included, isolated ones not).
    pub fn lens(&self) -> (usize, usize) {
        let q = self.queues.lock();
        (q.small.len(), q.main.len())
    }

    /// Bytes of memory the policy holds now: its queues' and the ghost set's allocations (a
    /// hash set counted at one control byte per bucket besides its key).
    pub fn bytes(&self) -> usize {
        let q = self.queues.lock();
        let entry = std::mem::size_of::<Entry>();
        (q.small.capacity() + q.main.capacity()) * entry
            + q.ghost.keys.capacity() * (std::mem::size_of::<u64>() + 1)
            + q.ghost.fifo.capacity() * std::mem::size_of::<u64>()
    }

    /// Entries isolated in batches not yet dropped.
    pub fn isolated(&self) -> usize {
        self.queues.lock().isolated
    }

    /// Finds a victim: runs one [`Pass`] of [`isolate`](S3Fifo::isolate), `try_evict` on each
    /// candidate in turn with no policy lock held, and putback, until a candidate is evicted or
    /// the pass is over. `try_evict(frame)` must check the page under its mapping's lock,
    /// remove it when it may go, and say what it did. The candidates after the victim go back
    /// untried.
    ///
    /// One pass makes at most [`scan_laps`](S3FifoConfig::scan_laps) times as many eviction
    /// attempts and promotions as there are queued entries (plus two), plus up to three aging
    /// laps per entry (the most a 2-bit frequency can need): without racing hits, a pass over
    /// pages that are merely hot always ends in a victim, and only pinned, locked or dirty
    /// pages make it come back empty-handed.
    pub fn evict(
        &self,
        pages: &PageTable,
        mut try_evict: impl FnMut(FrameId) -> Verdict,
    ) -> EvictScan {
        let mut pass = Pass::new();
        let mut victim = None;
        while victim.is_none() {
            let mut batch = self.isolate(pages, &mut pass);
            if batch.is_empty() {
                break;
            }
            while let Some(candidate) = batch.next_candidate() {
                let frame = candidate.frame();
                let verdict = try_evict(frame);
                batch.putback(candidate, verdict);
                if verdict == Verdict::Evicted {
                    victim = Some(frame);
                    break;
                }
            }
        }
        EvictScan {
            frame: victim,
            ..pass.scan()
        }
    }

    /// Takes the next candidates of `pass` off their queues (`isolate_lru_pages`): one if the
    /// pass is new, else up to [`S3FifoConfig::batch`], consecutive in the order a pass visits
    /// them. Stale entries met on the way are dropped, small-queue pages used often enough
    /// promoted, main-queue pages with frequency left given a lap. An empty batch means the
    /// pass is over. Try the candidates in order and give each back with
    /// [`Isolated::putback`]; the batch returns them all when dropped.
    pub fn isolate<'a>(&'a self, pages: &PageTable, pass: &'a mut Pass) -> Isolated<'a> {
        let mut slots = [Slot::EMPTY; MAX_BATCH];
        let len = if pass.over {
            0
        } else {
            self.isolate_into(pages, pass, &mut slots)
        };
        Isolated {
            policy: self,
            pass,
            slots,
            len,
            handed: 0,
        }
    }

    fn isolate_into(&self, pages: &PageTable, pass: &mut Pass, slots: &mut [Slot]) -> usize {
        let limit = if pass.batches == 0 {
            1
        } else {
            self.config.batch
        };
        pass.batches += 1;
        let mut guard = self.queues.lock();
        let q = &mut *guard;
        let queued = q.small.len() + q.main.len();
        let budget = pass.budget.get_or_insert_with(|| Budget {
            attempts: self.config.scan_laps * queued + 2,
            laps: PageFlags::FREQ_MAX as usize * queued + 2,
        });
        // The candidates of this batch count as still queued (at the tail) and busy, as they
        // would be if each had been tried and put back before the next was taken: the choice
        // of queue is then the one a pass trying them one by one would make.
        let (mut out_small, mut out_main, mut n) = (0, 0, 0);
        while n < limit {
            if budget.attempts == 0 {
                pass.over = true;
                break;
            }
            let small_len = q.small.len() + out_small;
            let main_len = q.main.len() + out_main;
            let prefer_small = small_len > self.small_target || main_len == 0;
            let from_small = if prefer_small {
                pass.small_busy + out_small < small_len || main_len == 0
            } else {
                pass.main_busy + out_main >= main_len && small_len > 0
            };
            let queue = if from_small {
                &mut q.small
            } else {
                &mut q.main
            };
            let Some(&entry) = queue.front() else {
                // With no candidate taken both queues are empty; otherwise the rest of this
                // queue is in the batch, to be tried (and requeued) before it comes round again.
                pass.over |= n == 0;
                break;
            };
            let desc = pages.get(entry.frame);
            let step = if desc.generation() != entry.generation {
                Step::Drop // the frame was freed (and maybe reused) since
            } else if from_small {
                if desc.flags().freq() >= self.config.promote_freq {
                    Step::Promote
                } else {
                    Step::Take
                }
            } else if n > 0 {
                // Only a look: a lap is granted once the candidates before it are known to stay.
                if desc.flags().freq() > 0 {
                    Step::Lap
                } else {
                    Step::Take
                }
            } else if desc.age() > 0 {
                Step::Lap
            } else {
                Step::Take
            };
            if n > 0 && step != Step::Take {
                break;
            }
            queue.pop_front();
            budget.attempts -= 1;
            match step {
                Step::Drop => {}
                Step::Promote => {
                    desc.clear_freq();
                    q.main.push_back(entry);
                }
                Step::Lap => {
                    pass.scan.aged += 1;
                    if budget.laps > 0 {
                        budget.laps -= 1;
                        budget.attempts += 1;
                    }
                    q.main.push_back(entry);
                }
                Step::Take => {
                    slots[n] = Slot {
                        entry,
                        queue: if from_small {
                            Queue::Small
                        } else {
                            Queue::Main
                        },
                        key: Ghost::key(desc.owner(), desc.index()),
                        verdict: None,
                    };
                    n += 1;
                    if from_small {
                        out_small += 1;
                    } else {
                        out_main += 1;
                    }
                }
            }
        }
        q.isolated += n;
        n
    }

    /// Gives a dropped batch's candidates back (`putback_lru_page`), in one lock.
    fn put_back(&self, slots: &[Slot], pass: &mut Pass) {
        if slots.is_empty() {
            return;
        }
        let mut q = self.queues.lock();
        q.isolated -= slots.len();
        // Not tried: back at the head, in their order.
        for s in slots.iter().rev().filter(|s| s.verdict.is_none()) {
            q.queue(s.queue).push_front(s.entry);
        }
        for s in slots {
            match s.verdict {
                None | Some(Verdict::Gone) => {}
                Some(Verdict::Evicted) => {
                    if s.queue == Queue::Small {
                        q.ghost.record(s.key);
                    }
                }
                Some(verdict @ (Verdict::Busy | Verdict::Dirty)) => {
                    if verdict == Verdict::Dirty {
                        pass.scan.dirty += 1;
                    } else {
                        pass.scan.busy += 1;
                    }
                    match s.queue {
                        Queue::Small => pass.small_busy += 1,
                        Queue::Main => pass.main_busy += 1,
                    }
                    q.queue(s.queue).push_back(s.entry);
                }
            }
        }
    }

    /// The queues' entries whose generation is current, as (frame, queue), head first.
    #[cfg(all(test, not(loom)))]
    fn live_entries(&self, pages: &PageTable) -> Vec<(FrameId, Queue)> {
        let q = self.queues.lock();
        let live = |e: &&Entry| pages.get(e.frame).generation() == e.generation;
        let small = q.small.iter().filter(live).map(|e| (e.frame, Queue::Small));
        let main = q.main.iter().filter(live).map(|e| (e.frame, Queue::Main));
        small.chain(main).collect()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// A tiny model: frames hold (owner 1, index) pages; eviction succeeds unless pinned/dirty.
    fn try_evict(pages: &PageTable, f: FrameId) -> Verdict {
        let d = pages.get(f);
        if d.pins() > 0 {
            Verdict::Busy
        } else if d.flags().is_dirty() {
            Verdict::Dirty
        } else {
            Verdict::Evicted
        }
    }

    /// One pass of the model ([`try_evict`]): the frame freed, if any.
    fn evict_one(policy: &S3Fifo, pages: &PageTable) -> Option<FrameId> {
        policy.evict(pages, |f| try_evict(pages, f)).frame
    }

    fn fill(policy: &S3Fifo, pages: &PageTable, frame: FrameId, index: u64) -> bool {
        pages.get(frame).release();
        pages.get(frame).set_identity(1, index);
        policy.insert(frame, Ghost::key(1, index), pages)
    }

    /// Fills each of `frames`, in order, with the page of the same index.
    fn fill_frames(policy: &S3Fifo, pages: &PageTable, frames: impl IntoIterator<Item = FrameId>) {
        for f in frames {
            fill(policy, pages, f, f as u64);
        }
    }

    /// `frames` frames, frame `f` holding page `f`, queued in frame order on a policy made for
    /// `policy_frames` frames.
    fn filled_for(frames: usize, policy_frames: usize) -> (PageTable, S3Fifo) {
        let pages = PageTable::new(frames);
        let p = S3Fifo::new(policy_frames);
        fill_frames(&p, &pages, 0..frames as FrameId);
        (pages, p)
    }

    /// `n` frames, frame `f` holding page `f`, queued in frame order on a policy for `n` frames.
    fn filled(n: usize) -> (PageTable, S3Fifo) {
        filled_for(n, n)
    }

    /// Uses the page in each of `frames` `times` times.
    fn use_pages(pages: &PageTable, frames: impl IntoIterator<Item = FrameId>, times: usize) {
        for f in frames {
            for _ in 0..times {
                pages.get(f).mark_accessed();
            }
        }
    }

    #[test]
    fn default_config_keeps_the_former_constants() {
        let c = S3FifoConfig::default();
        assert_eq!((c.promote_freq, c.scan_laps), (2, 2));
        for frames in (0..5000).chain([1 << 16, 1 << 20, (1 << 20) + 9, 10_000_007]) {
            let p = S3Fifo::new(frames);
            assert_eq!(p.small_target(), (frames / 10).max(1), "{frames} frames");
            assert_eq!(
                p.queues.lock().ghost.capacity(),
                frames.max(1),
                "{frames} frames"
            );
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
        assert!(
            !g.contains(0) && !g.contains(1),
            "the oldest keys are forgotten"
        );
        assert!(g.take(3));
        assert!(!g.take(3), "a refault forgets the key");
        assert!(g.contains(2) && g.contains(4));
        let mut none = Ghost::new(0);
        none.record(7);
        assert!(none.is_empty());
    }

    #[test]
    fn fifo_order_without_hits() {
        let (pages, p) = filled(10);
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
        let (pages, p) = filled(3);
        pages.get(0).pin();
        pages.get(1).set_dirty_for_test(true);
        let scan = p.evict(&pages, |f| try_evict(&pages, f));
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
        let (pages, p) = filled(10);
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
        fill_frames(&p, &pages, 0..6);
        use_pages(&pages, 0..2, 2); // promoted to main on the next scan
        for f in 2..6 {
            pages.get(f).pin();
        }
        let victim = evict_one(&p, &pages);
        assert!(matches!(victim, Some(0 | 1)), "{victim:?}");
        // Main over everything and all pinned; the evictable page is in a small queue at
        // its target.
        let pages = PageTable::new(20);
        let p = S3Fifo::new(20);
        fill_frames(&p, &pages, 0..8);
        use_pages(&pages, 0..6, 2);
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
        let (pages, p) = filled(n);
        use_pages(&pages, 0..n as FrameId, 2);
        // Promotes all ten to main and evicts the first.
        assert_eq!(evict_one(&p, &pages), Some(0));
        use_pages(&pages, 1..n as FrameId, 3);
        assert_eq!(pages.get(1).flags().freq(), PageFlags::FREQ_MAX);
        let scan = p.evict(&pages, |_| Verdict::Evicted);
        assert_eq!(scan.frame, Some(1), "{scan:?}");
        assert!(scan.aged > 0);
        // The same with a pinned page among them.
        pages.get(2).pin();
        use_pages(&pages, 3..n as FrameId, 3);
        assert_eq!(evict_one(&p, &pages), Some(3));
    }

    /// The frames of the queues' live entries, head first (small queue, then main).
    fn order(p: &S3Fifo, pages: &PageTable) -> Vec<FrameId> {
        p.live_entries(pages).into_iter().map(|(f, _)| f).collect()
    }

    /// Takes the next batch of `pass` and gives its first candidate back with `verdict` (any
    /// others go back untried); returns where that candidate came from, (frame, queue).
    fn refuse_first(
        p: &S3Fifo,
        pages: &PageTable,
        pass: &mut Pass,
        verdict: Verdict,
    ) -> (FrameId, Queue) {
        let mut batch = p.isolate(pages, pass);
        let c = batch.next_candidate().expect("a candidate");
        let taken = (c.frame(), c.queue());
        batch.putback(c, verdict);
        taken
    }

    /// The frames of the queues' live entries, sorted: which frames are queued, each as often
    /// as it is.
    fn queued_frames(p: &S3Fifo, pages: &PageTable) -> Vec<FrameId> {
        let mut frames = order(p, pages);
        frames.sort_unstable();
        frames
    }

    #[test]
    fn a_one_pass_scan_does_not_displace_the_main_queue() {
        // 20 frames; pages 0..5 used twice while in the small queue, then a scan of 200 pages
        // each read once.
        let n = 20;
        let (pages, p) = filled(n);
        use_pages(&pages, 0..n as FrameId, 1); // the read
        use_pages(&pages, 0..5, 1); // and one more use
        let hot: Vec<(FrameId, u32)> = (0..5).map(|f| (f, pages.get(f).generation())).collect();
        let mut victims = Vec::new();
        for index in 1000..1200 {
            let f = evict_one(&p, &pages).expect("a victim");
            victims.push(f);
            fill(&p, &pages, f, index);
            pages.get(f).mark_accessed();
        }
        assert!(victims.iter().all(|f| *f >= 5), "{victims:?}");
        for (f, generation) in hot {
            let d = pages.get(f);
            assert_eq!((d.index(), d.generation()), (f as u64, generation));
        }
        let main: Vec<FrameId> = p
            .live_entries(&pages)
            .into_iter()
            .filter(|(_, q)| *q == Queue::Main)
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            main,
            vec![0, 1, 2, 3, 4],
            "the main queue is the hot set, untouched"
        );
    }

    #[test]
    fn a_refaulted_ghost_goes_to_main_and_outlives_new_pages() {
        let n = 10;
        let (pages, p) = filled(n);
        assert_eq!(evict_one(&p, &pages), Some(0));
        assert_eq!(p.ghost_len(), 1, "page 0 is remembered");
        assert!(fill(&p, &pages, 0, 0), "its refault is a ghost hit");
        assert_eq!((p.ghost_len(), p.lens()), (0, (9, 1)));
        // New pages come and go through the small queue; page 0 stays.
        for index in 100..150 {
            let f = evict_one(&p, &pages).expect("a victim");
            assert_ne!(f, 0, "the refaulted page outlives the new ones");
            assert!(!fill(&p, &pages, f, index), "a new page is no ghost hit");
        }
        assert!(p.ghost_len() <= n, "the ghost stays bounded");
    }

    #[test]
    fn busy_and_dirty_candidates_go_to_the_tail_of_their_queue() {
        // A small target of 4: everything is taken from the small queue.
        let (pages, p) = filled_for(4, 40);
        let mut pass = Pass::new();
        {
            let mut batch = p.isolate(&pages, &mut pass);
            assert_eq!(batch.len(), 1, "a pass starts with one candidate");
            let c = batch.next_candidate().unwrap();
            assert_eq!((c.frame(), c.queue()), (0, Queue::Small));
            assert!(batch.next_candidate().is_none());
            assert_eq!((p.isolated(), order(&p, &pages)), (1, vec![1, 2, 3]));
            batch.putback(c, Verdict::Busy);
        }
        assert_eq!((p.isolated(), order(&p, &pages)), (0, vec![1, 2, 3, 0]));
        {
            // The rest of the pass goes by batches: 1, 2, 3, then 0 once more (a pass may
            // try a page twice, as it did when it requeued each one at once).
            let mut batch = p.isolate(&pages, &mut pass);
            let frames: Vec<_> = std::iter::from_fn(|| batch.next_candidate()).collect();
            assert_eq!(
                frames.iter().map(|c| c.frame()).collect::<Vec<_>>(),
                [1, 2, 3, 0]
            );
            let mut frames = frames.into_iter();
            batch.putback(frames.next().unwrap(), Verdict::Dirty);
            batch.putback(frames.next().unwrap(), Verdict::Busy);
            // 3 and 0 are not tried.
        }
        assert_eq!(
            order(&p, &pages),
            vec![3, 0, 1, 2],
            "untried at the head, refused at the tail"
        );
        let scan = pass.scan();
        assert_eq!((scan.busy, scan.dirty, scan.frame), (2, 1, None));
        // A main-queue candidate goes back to the tail of the main queue.
        let p = S3Fifo::new(40);
        p.queues.lock().ghost.record(Ghost::key(1, 7));
        assert!(fill(&p, &pages, 0, 7), "a refault: to the main queue");
        fill(&p, &pages, 1, 8);
        let mut pass = Pass::new();
        assert_eq!(
            refuse_first(&p, &pages, &mut pass, Verdict::Busy),
            (0, Queue::Main),
            "the small queue is short"
        );
        assert_eq!(
            refuse_first(&p, &pages, &mut pass, Verdict::Dirty),
            (1, Queue::Small),
            "the main queue is all busy"
        );
        let entries = p.live_entries(&pages);
        assert_eq!(entries, vec![(1, Queue::Small), (0, Queue::Main)]);
    }

    #[test]
    fn untried_and_forgotten_candidates_go_back_to_the_head_in_order() {
        let (pages, p) = filled_for(6, 60);
        let mut pass = Pass::new();
        let c = {
            let mut batch = p.isolate(&pages, &mut pass);
            let c = batch.next_candidate().unwrap();
            batch.putback(c, Verdict::Busy);
            batch.len()
        };
        assert_eq!(c, 1);
        {
            let mut batch = p.isolate(&pages, &mut pass);
            assert_eq!(batch.len(), 6);
            // Handed out and dropped without a verdict: counts as not tried.
            let _ = batch.next_candidate();
            let second = batch.next_candidate().unwrap();
            assert_eq!(second.frame(), 2);
            assert_eq!(p.isolated(), 6);
        }
        assert_eq!(p.isolated(), 0);
        assert_eq!(order(&p, &pages), vec![1, 2, 3, 4, 5, 0]);
        assert_eq!(pass.scan().busy, 1, "untried candidates are not counted");
    }

    #[test]
    fn stale_entries_are_never_candidates() {
        let (pages, p) = filled(6);
        pages.get(1).release(); // truncated: freed outside eviction
        pages.get(4).release();
        let mut tried = Vec::new();
        let scan = p.evict(&pages, |f| {
            tried.push(f);
            Verdict::Busy
        });
        assert_eq!(scan.frame, None);
        assert!(
            !tried.is_empty() && tried.iter().all(|f| ![1, 4].contains(f)),
            "{tried:?}"
        );
        assert_eq!(p.lens(), (4, 0), "the stale entries are gone");
        assert_eq!(order(&p, &pages), vec![0, 2, 3, 5]);
    }

    #[test]
    fn a_pass_over_busy_frames_is_bounded() {
        let n = 50;
        let (pages, p) = filled(n);
        // Half of them hot, so the pass grants laps too.
        use_pages(&pages, (0..n as FrameId).step_by(2), 3);
        // Promote the hot half to the main queue.
        let _ = p.evict(&pages, |_| Verdict::Busy);
        let before = queued_frames(&p, &pages);
        assert_eq!(before.len(), n);
        for (busy, refusal) in [(Verdict::Busy, "pinned"), (Verdict::Dirty, "dirty")] {
            let mut calls = 0;
            let scan = p.evict(&pages, |_| {
                calls += 1;
                busy
            });
            assert_eq!(scan.frame, None, "every frame {refusal}");
            assert!(
                calls <= 2 * n + 2,
                "{calls} attempts over {n} {refusal} frames"
            );
            assert!(calls >= n, "every frame was tried: {calls}");
            assert_eq!(scan.busy + scan.dirty, calls);
            assert_eq!(p.isolated(), 0);
            assert_eq!(
                queued_frames(&p, &pages),
                before,
                "no frame lost, none doubled"
            );
        }
    }

    #[test]
    fn a_panicking_evictor_loses_no_frame() {
        let (pages, p) = filled(8);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.evict(&pages, |f| {
                if f == 3 {
                    panic!("deliberate panic in try_evict");
                }
                Verdict::Busy
            })
        }));
        assert!(result.is_err());
        assert_eq!(p.isolated(), 0);
        assert_eq!(queued_frames(&p, &pages), (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn random_rounds_lose_no_frame() {
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            let n = rng.gen_range(2..40);
            let config = S3FifoConfig {
                small_ratio: rng.gen_range(0.05..0.5),
                promote_freq: rng.gen_range(1..=PageFlags::FREQ_MAX),
                batch: rng.gen_range(1..=MAX_BATCH),
                ..S3FifoConfig::default()
            };
            let pages = PageTable::new(n);
            let p = S3Fifo::with_config(n, config);
            let mut free: Vec<FrameId> = (0..n as FrameId).collect();
            let mut live: Vec<FrameId> = Vec::new();
            let fill_one = |free: &mut Vec<FrameId>, live: &mut Vec<FrameId>, rng: &mut StdRng| {
                if free.is_empty() {
                    return;
                }
                let f = free.swap_remove(rng.gen_range(0..free.len()));
                let index = rng.gen_range(0..3 * n as u64);
                let d = pages.get(f);
                d.release();
                d.set_identity(1, index);
                for _ in 0..rng.gen_range(0..3) {
                    d.mark_accessed();
                }
                p.insert(f, Ghost::key(1, index), &pages);
                live.push(f);
            };
            let drop_page = |f: FrameId, free: &mut Vec<FrameId>, live: &mut Vec<FrameId>| {
                live.retain(|&g| g != f);
                pages.get(f).release();
                free.push(f);
            };
            for step in 0..3000 {
                match rng.gen_range(0..10) {
                    0..=2 => fill_one(&mut free, &mut live, &mut rng),
                    3 if !live.is_empty() => {
                        pages
                            .get(live[rng.gen_range(0..live.len())])
                            .mark_accessed();
                    }
                    4 if !live.is_empty() => {
                        let f = live[rng.gen_range(0..live.len())];
                        drop_page(f, &mut free, &mut live); // truncated
                    }
                    _ => {
                        // A pass, by hand: random verdicts, early ends, forgotten candidates,
                        // and pages queued or truncated while candidates are out.
                        let mut pass = Pass::new();
                        for _ in 0..rng.gen_range(1..6) {
                            let mut batch = p.isolate(&pages, &mut pass);
                            if batch.is_empty() {
                                break;
                            }
                            while let Some(c) = batch.next_candidate() {
                                let f = c.frame();
                                assert!(live.contains(&f), "seed {seed} step {step}: {f} is live");
                                assert!(
                                    !order(&p, &pages).contains(&f),
                                    "seed {seed} step {step}: a candidate is in no queue"
                                );
                                match rng.gen_range(0..12) {
                                    0..=2 => {
                                        drop_page(f, &mut free, &mut live);
                                        batch.putback(c, Verdict::Evicted);
                                    }
                                    3..=5 => batch.putback(c, Verdict::Busy),
                                    6..=7 => batch.putback(c, Verdict::Dirty),
                                    8 => {
                                        drop_page(f, &mut free, &mut live); // raced a truncation
                                        batch.putback(c, Verdict::Gone);
                                    }
                                    9 => {} // forgotten: never given back
                                    10 => {
                                        fill_one(&mut free, &mut live, &mut rng);
                                        batch.putback(c, Verdict::Busy);
                                    }
                                    _ => break,
                                }
                            }
                        }
                    }
                }
                assert_eq!(p.isolated(), 0);
                let mut expected = live.clone();
                expected.sort_unstable();
                assert_eq!(
                    queued_frames(&p, &pages),
                    expected,
                    "seed {seed} step {step}: each live frame once"
                );
            }
        }
    }
}
