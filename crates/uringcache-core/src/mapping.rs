//! The per-file page index: the counterpart of the kernel's `struct address_space` and its
//! `i_pages` xarray.
//!
//! A [`Mapping`] maps a page index (file offset / page size) to the frame that caches it, and
//! holds the file's logical size (`i_size`) and its dirty set (the dirty tag of the xarray).
//!
//! # Concurrency: a lock-free hit in front of sharded reader-writer locks
//!
//! The index is split into [`SHARDS`] shards, each a small hash map behind its own
//! reader-writer lock; neighbouring pages fall into different shards. Insertion and removal
//! (eviction, truncation, invalidation) take the *write* side of one shard; range walks and
//! the authoritative lookup ([`Mapping::lookup`]) the read side.
//!
//! A hit takes no lock at all. [`Mapping::lookup_speculative`] and [`Mapping::peek`] find the
//! frame through the cache-wide [`Hints`](crate::page::Hints) (one line read, nothing written)
//! and trust only the frame's descriptor: `lookup_speculative` pins with
//! [`try_pin`](PageDesc::try_pin) (the kernel's `folio_try_get` under RCU) and then checks the
//! pinned page's identity ([`is_mapped_at`](PageDesc::is_mapped_at)); `peek` pins nothing and
//! hands back the frame's generation for an optimistic copy, validated after it
//! ([`unchanged_since`](PageDesc::unchanged_since), vmcache's optimistic latch). Either falls
//! back to the locked lookup when the hint is missing or names another page.
//!
//! What makes this safe against removal and reuse:
//!
//! * Eviction and invalidation remove a page only after
//!   [`freeze_if_reclaimable`](PageDesc::freeze_if_reclaimable) took its pin count from 1 (the
//!   mapping's) to 0, under the shard's write lock: a speculative pin either came first (the
//!   freeze fails) or is refused (zero is never pinned). The lookup under the read lock pins
//!   with a plain increment: under the shard lock a page in the map is never frozen.
//! * Every removal ([`Mapping::remove_if`]) sets `ORPHAN` on the page before its entry goes,
//!   under the write lock, and a frame's identity changes only after it was freed, which bumps
//!   its generation first ([`PageDesc::release`]). So a pinned page whose descriptor still names
//!   (this mapping, `index`) and is not orphaned is the page at `index` (or was, when the
//!   caller's lookup began); a later insertion at `index` happens after the old page was
//!   orphaned, and whoever saw the insertion sees the orphan too.
//! * An optimistic copy that overlapped a reuse of the frame sees the generation moved (the
//!   reuse bumps it before anybody writes the frame) and is thrown away.
//!
//! Why this design, measured (BENCHMARKS.md, "Hits without locks"): the read lock cost two
//! atomic read-modify-writes per hit on a line every reader of the shard writes, which kept
//! two tasks below twice one. The alternatives were a lock-free map (epoch reclamation of what
//! it frees, `crossbeam-epoch`: a pin with a full fence per lookup) and the lossy hint table
//! chosen here, which needs no reclamation at all (one allocation of two slots per frame,
//! never resized, every entry validated) and whose hit reads one line of hints and the
//! descriptor. Counted by cachegrind (`benches/hit_counts.rs`): a `read_at` 4 KiB hit went
//! from 892 to 784 instructions with one atomic RMW (the per-thread hit counter) instead of
//! five; the lock-free lookup with pin and unpin takes 178 instructions and 2 RMWs on the
//! page's own line, the locked one 138 and 4, two of them on the shared lock word; the
//! optimistic look and validation 142 and none.
//!
//! # Invariants
//!
//! * An entry `index → frame` exists only while `frame`'s descriptor names this mapping and
//!   `index` (`set_identity` is called under the shard's write lock before the entry is
//!   published) and is not `ORPHAN` (set by [`Mapping::remove_if`] before the entry goes).
//! * A page in the map is never frozen (pin count 0) outside the shard's write lock.
//! * A frame is in at most one mapping at one index.
//! * `size` only changes through [`Mapping::set_size`] / [`Mapping::extend_size`]; pages wholly
//!   past it are removed by the caller (truncation) before a shrink is published.
//! * The dirty tag holds exactly the indices whose page has `DIRTY` set, and the writeback tag
//!   those with `WRITEBACK` set; whoever sets or clears the bit updates the tag (under the tags'
//!   own mutex, never taken on the hit path).
//! * `wb_err` records every writeback error of the file (see `errseq`).

use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use crossbeam_utils::CachePadded;

use crate::errseq::ErrSeq;
use crate::page::{FrameId, PageDesc, PageFlags, PageTable};
use crate::sync::{Mutex, RwLock};

/// Number of shards of a mapping's index (2 under the model checker, to keep it small).
#[cfg(not(loom))]
pub const SHARDS: usize = 32;
/// Number of shards of a mapping's index (2 under the model checker, to keep it small).
#[cfg(loom)]
pub const SHARDS: usize = 2;

/// A multiplicative hasher for page indices (they are already well distributed integers).
#[derive(Default, Clone, Copy)]
pub struct IndexHasher(u64);

impl Hasher for IndexHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Shard = HashMap<u64, FrameId, BuildHasherDefault<IndexHasher>>;

/// What a lock-free lookup ([`Mapping::lookup_speculative`]) found.
#[derive(Debug, PartialEq, Eq)]
pub enum Speculative {
    /// The page, pinned for the caller.
    Pinned(FrameId),
    /// A frame the hint named was pinned but holds another page by now: the caller drops
    /// that pin through the pool's `put` (it may be the frame's last) and looks up under the
    /// lock.
    Stray(FrameId),
    /// No usable hint: look up under the lock.
    Miss,
}

/// An optimistic look at a page ([`Mapping::peek`]): no pin taken.
#[derive(Clone, Copy, Debug)]
pub struct Peek {
    /// The frame that held the page.
    pub frame: FrameId,
    /// Its generation when looked at: [`PageDesc::unchanged_since`] it validates a copy.
    pub generation: u32,
    /// The page's state when looked at.
    pub flags: PageFlags,
}

/// The page index of one file (`struct address_space`).
#[derive(Debug)]
pub struct Mapping {
    id: u32,
    shards: Box<[CachePadded<RwLock<Shard>>]>,
    size: CachePadded<AtomicU64>,
    pages: AtomicUsize,
    tags: Mutex<Tags>,
    wb_err: ErrSeq,
}

/// The xarray's tags: which pages are dirty and which are under writeback.
#[derive(Debug, Default)]
struct Tags {
    dirty: BTreeSet<u64>,
    writeback: BTreeSet<u64>,
}

impl Mapping {
    /// An empty mapping with the cache-wide id `id` and logical size `size`.
    pub fn new(id: u32, size: u64) -> Self {
        Mapping {
            id,
            shards: (0..SHARDS).map(|_| Default::default()).collect(),
            size: CachePadded::new(AtomicU64::new(size)),
            pages: AtomicUsize::new(0),
            tags: Mutex::new(Tags::default()),
            wb_err: ErrSeq::new(),
        }
    }

    /// The id stored in the descriptors of this mapping's pages.
    #[inline]
    pub fn id(&self) -> u32 {
        self.id
    }

    #[inline]
    fn shard(&self, index: u64) -> &RwLock<Shard> {
        // Consecutive indices land in consecutive shards, so a sequential reader and a
        // concurrent random reader rarely meet on one lock.
        &self.shards[(index as usize) % SHARDS]
    }

    /// The file's logical size in bytes (`i_size_read`).
    #[inline]
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Sets the logical size (`i_size_write`).
    pub fn set_size(&self, size: u64) {
        self.size.store(size, Ordering::Release);
    }

    /// Raises the logical size to `size` if it is larger; returns the size before.
    pub fn extend_size(&self, size: u64) -> u64 {
        self.size.fetch_max(size, Ordering::AcqRel)
    }

    /// Bytes of memory the index holds now: its shards' hash tables, at their capacity (an
    /// entry and one control byte per bucket; hashbrown keeps at most 7/8 of them full).
    pub fn index_bytes(&self) -> usize {
        let bucket = std::mem::size_of::<(u64, FrameId)>() + 1;
        self.shards
            .iter()
            .map(|s| s.read().capacity() * 8 / 7 * bucket)
            .sum()
    }

    /// Number of pages in the index.
    pub fn nr_pages(&self) -> usize {
        self.pages.load(Ordering::Relaxed)
    }

    /// Finds the page at `index` and pins it (`find_get_page`), under the shard's read lock:
    /// the authoritative lookup. The caller unpins.
    #[inline]
    pub fn lookup(&self, index: u64, pages: &PageTable) -> Option<FrameId> {
        let shard = self.shard(index).read();
        let frame = *shard.get(&index)?;
        pages.get(frame).pin();
        Some(frame)
    }

    /// [`lookup`](Self::lookup), then publishes the page's hint, so that the next lock-free
    /// lookup finds it: for a reader whose [`lookup_speculative`](Self::lookup_speculative)
    /// missed.
    #[inline]
    pub fn lookup_and_hint(&self, index: u64, pages: &PageTable) -> Option<FrameId> {
        let frame = self.lookup(index, pages)?;
        pages.hints().publish(self.id, index, frame);
        Some(frame)
    }

    /// Finds the page at `index` through the lock-free hints and pins it, taking no lock and
    /// writing no line but the page's pin word (see the module doc). A [`Speculative::Miss`]
    /// says nothing about the index: the caller then uses [`lookup`](Self::lookup).
    #[inline]
    pub fn lookup_speculative(&self, index: u64, pages: &PageTable) -> Speculative {
        let mut out = Speculative::Miss;
        pages.hints().find(self.id, index, |f| {
            let d = pages.get(f);
            // A look before the pin, so that a hint naming another page costs no write.
            if d.owner() != self.id || d.index() != index || !d.try_pin() {
                return false;
            }
            out = if d.is_mapped_at(self.id, index) {
                Speculative::Pinned(f)
            } else {
                Speculative::Stray(f)
            };
            true
        });
        out
    }

    /// Looks at the page at `index` through the lock-free hints without pinning it, for an
    /// optimistic copy: `None` when no hint names a frame holding the page now. The caller
    /// copies only from a page whose [`Peek::flags`] say up to date, and keeps the copy only
    /// if [`PageDesc::unchanged_since`] the [`Peek::generation`] holds afterwards.
    #[inline]
    pub fn peek(&self, index: u64, pages: &PageTable) -> Option<Peek> {
        let mut out = None;
        pages.hints().find(self.id, index, |frame| {
            let Some((generation, flags)) = pages.get(frame).optimistic_at(self.id, index) else {
                return false;
            };
            out = Some(Peek {
                frame,
                generation,
                flags,
            });
            true
        });
        out
    }

    /// Whether a page is cached at `index`, without pinning it.
    pub fn contains(&self, index: u64) -> bool {
        self.shard(index).read().contains_key(&index)
    }

    /// Inserts `frame` at `index` (`add_to_page_cache_locked`). The caller owns `frame`
    /// (allocated, pinned and locked); on success the mapping takes a pin of its own (the page
    /// cache's reference, dropped when the page leaves the mapping). If another page got there
    /// first, that page is pinned for the caller and returned as `Err`, and `frame` is left to
    /// the caller to free.
    pub fn insert(&self, index: u64, frame: FrameId, pages: &PageTable) -> Result<(), FrameId> {
        let mut shard = self.shard(index).write();
        if let Some(&existing) = shard.get(&index) {
            pages.get(existing).pin();
            return Err(existing);
        }
        let desc = pages.get(frame);
        desc.set_identity(self.id, index);
        desc.pin();
        shard.insert(index, frame);
        drop(shard);
        self.pages.fetch_add(1, Ordering::Relaxed);
        pages.hints().publish(self.id, index, frame);
        Ok(())
    }

    /// Removes the page at `index` if it is still `frame` and `may_remove` agrees, judged under
    /// the shard's write lock so that no locked lookup pins it meanwhile
    /// (`__delete_from_page_cache`); the page is marked `ORPHAN` before its entry goes, and its
    /// hint is forgotten. Returns whether it was removed; if so, the mapping's pin now belongs
    /// to the caller, who drops it (and frees the frame when it was the last) — unless
    /// `may_remove` froze the page ([`PageDesc::freeze_if_reclaimable`]), which leaves no pin
    /// to drop: the caller then owns the frame outright. A lock-free lookup may still pin a
    /// page that `may_remove` did not freeze; it finds it orphaned.
    pub fn remove_if(
        &self,
        index: u64,
        frame: FrameId,
        pages: &PageTable,
        may_remove: impl FnOnce(&PageDesc) -> bool,
    ) -> bool {
        let mut shard = self.shard(index).write();
        let desc = pages.get(frame);
        if shard.get(&index) != Some(&frame) || !may_remove(desc) {
            return false;
        }
        desc.mark_orphan();
        shard.remove(&index);
        drop(shard);
        self.pages.fetch_sub(1, Ordering::Relaxed);
        pages.hints().forget(self.id, index, frame);
        true
    }

    /// The cached pages with index in `start..end`, in index order, unpinned (a snapshot for
    /// range walks; each entry must be re-checked before use).
    pub fn range(&self, start: u64, end: u64) -> Vec<(u64, FrameId)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.read();
            if (end - start) < shard.len() as u64 {
                for i in start..end {
                    if let Some(&f) = shard.get(&i) {
                        out.push((i, f));
                    }
                }
            } else {
                out.extend(
                    shard
                        .iter()
                        .filter(|(&i, _)| i >= start && i < end)
                        .map(|(&i, &f)| (i, f)),
                );
            }
        }
        out.sort_unstable_by_key(|&(i, _)| i);
        out
    }

    /// Marks `index` dirty in the dirty set (the xarray's dirty tag). Returns whether it was
    /// clean before.
    pub fn tag_dirty(&self, index: u64) -> bool {
        self.tags.lock().dirty.insert(index)
    }

    /// Removes `index` from the dirty set; returns whether it was there.
    pub fn untag_dirty(&self, index: u64) -> bool {
        self.tags.lock().dirty.remove(&index)
    }

    /// Moves `index` from the dirty set to the writeback set (`clear_page_dirty_for_io` +
    /// `set_page_writeback`); returns whether it was dirty.
    pub fn start_writeback(&self, index: u64) -> bool {
        let mut tags = self.tags.lock();
        tags.writeback.insert(index);
        tags.dirty.remove(&index)
    }

    /// Removes `index` from the writeback set (`end_page_writeback`).
    pub fn end_writeback(&self, index: u64) {
        self.tags.lock().writeback.remove(&index);
    }

    /// The dirty indices in `start..end`, in order (`find_get_pages_range_tag`), at most `max`.
    pub fn dirty_range(&self, start: u64, end: u64, max: usize) -> Vec<u64> {
        if start >= end {
            return Vec::new();
        }
        self.tags
            .lock()
            .dirty
            .range(start..end)
            .take(max)
            .copied()
            .collect()
    }

    /// The indices under writeback in `start..end`, in order.
    pub fn writeback_range(&self, start: u64, end: u64) -> Vec<u64> {
        if start >= end {
            return Vec::new();
        }
        self.tags
            .lock()
            .writeback
            .range(start..end)
            .copied()
            .collect()
    }

    /// Number of dirty pages of this mapping.
    pub fn nr_dirty(&self) -> usize {
        self.tags.lock().dirty.len()
    }

    /// Number of pages of this mapping under writeback.
    pub fn nr_writeback(&self) -> usize {
        self.tags.lock().writeback.len()
    }

    /// The mapping's writeback error sequence (`mapping->wb_err`).
    pub fn wb_err(&self) -> &ErrSeq {
        &self.wb_err
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn lookup_pins_and_insert_keeps_the_first() {
        let pages = PageTable::new(4);
        let m = Mapping::new(7, 0);
        assert_eq!(m.lookup(3, &pages), None);
        assert_eq!(m.insert(3, 1, &pages), Ok(()));
        assert_eq!(pages.get(1).owner(), 7);
        assert_eq!(pages.get(1).index(), 3);
        assert_eq!(pages.get(1).pins(), 1, "the mapping's own pin");
        assert_eq!(m.insert(3, 2, &pages), Err(1));
        assert_eq!(pages.get(1).pins(), 2);
        assert_eq!(pages.get(2).pins(), 0, "the loser is not pinned");
        assert_eq!(m.lookup(3, &pages), Some(1));
        assert_eq!(pages.get(1).pins(), 3);
        assert_eq!(m.nr_pages(), 1);
    }

    #[test]
    fn remove_if_respects_the_predicate_and_identity() {
        let pages = PageTable::new(4);
        let m = Mapping::new(1, 0);
        m.insert(10, 2, &pages).unwrap();
        pages.get(2).pin();
        assert!(!m.remove_if(10, 2, &pages, |d| d.pins() == 1));
        pages.get(2).unpin();
        assert!(!m.remove_if(10, 3, &pages, |_| true), "wrong frame");
        assert!(m.remove_if(10, 2, &pages, |d| d.pins() == 1));
        assert_eq!(pages.get(2).unpin(), 0);
        assert!(!m.contains(10));
        assert_eq!(m.nr_pages(), 0);
    }

    #[test]
    fn range_is_ordered_and_bounded() {
        let pages = PageTable::new(64);
        let m = Mapping::new(1, 0);
        for i in (0..64u64).rev() {
            m.insert(i * 3, i as FrameId, &pages).unwrap();
        }
        let r = m.range(10, 40);
        let idx: Vec<u64> = r.iter().map(|&(i, _)| i).collect();
        assert_eq!(idx, (4..14).map(|i| i * 3).collect::<Vec<_>>());
        assert_eq!(m.range(0, 1000).len(), 64);
    }

    #[test]
    fn size_and_dirty_set() {
        let m = Mapping::new(1, 100);
        assert_eq!(m.extend_size(50), 100);
        assert_eq!(m.size(), 100);
        m.extend_size(4097);
        assert_eq!(m.size(), 4097);
        m.set_size(5);
        assert_eq!(m.size(), 5);
        assert!(m.tag_dirty(4));
        assert!(!m.tag_dirty(4));
        m.tag_dirty(1);
        m.tag_dirty(9);
        assert_eq!(m.dirty_range(0, 9, 10), vec![1, 4]);
        assert_eq!(m.dirty_range(0, 100, 1), vec![1]);
        assert!(m.untag_dirty(4));
        assert_eq!(m.nr_dirty(), 2);
        assert!(m.start_writeback(9));
        assert!(!m.start_writeback(5), "5 was not dirty");
        assert_eq!(m.dirty_range(0, 100, 10), vec![1]);
        assert_eq!(m.writeback_range(0, 100), vec![5, 9]);
        m.end_writeback(9);
        m.end_writeback(5);
        assert_eq!(m.nr_writeback(), 0);
    }

    #[test]
    fn concurrent_lookup_never_pins_a_removed_page() {
        // A remover takes pages out whenever unpinned; lookups that succeed must find the
        // page still owned by the mapping at that index.
        use std::sync::Arc;
        let pages = Arc::new(PageTable::new(16));
        let m = Arc::new(Mapping::new(1, 0));
        for i in 0..16u64 {
            m.insert(i, i as FrameId, &pages).unwrap();
            pages.get(i as FrameId).fill_for_test(false);
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (m, pages, stop) = (m.clone(), pages.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let i = n % 16;
                        if let Some(f) = m.lookup(i, &pages) {
                            assert_eq!(pages.get(f).owner(), 1);
                            assert_eq!(pages.get(f).index(), i);
                            pages.get(f).unpin();
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        for round in 0..20_000u64 {
            let i = round % 16;
            let f = i as FrameId;
            if m.remove_if(i, f, &pages, |d| d.pins() == 1) {
                assert_eq!(pages.get(f).unpin(), 0);
                pages.get(f).release();
                m.insert(i, f, &pages).unwrap();
            }
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
    }
}
