//! The cache (the kernel's `super_block` with its `backing_dev_info`): the shared state every
//! file handle points to, and the glue between frame allocation and eviction.
//!
//! [`CacheInner`] owns the frame arena, the frame pool (descriptors, free list, policy), the
//! page wait table, the backend, the table of inodes (`inode_table`), the cache-wide writeback state (`writeback`: dirty and writeback
//! counts, thresholds, the dirty-inode list, the thread of `writeback_thread`), the writeback
//! passes (`writeback_pass`) and the stuck-wait reports (`stuck`). It is shared by every [`Cache`] clone
//! and every [`File`](crate::File); each inode holds it too (the one back-pointer of the
//! module graph). Every field is private; each piece is reached through its owner's methods
//! (`pool()`, `waits()`, `writeback()`, `inodes()`, …). Page handles' pins are counted in the
//! page descriptors themselves (`PageDesc::mark_user_pin`), not here: a handle writes no line
//! of the cache's.
//!
//! | module | owns |
//! | --- | --- |
//! | `inode_table` | mapping id → inode, (dev, ino) → inode, the idle list of closed files |
//! | `writeback` | `WritebackState`: the counts, limits and throttling, `b_dirty`, the writeback thread, pass bookkeeping |
//! | `writeback_pass` | one pass of the writeback thread (`wb_writeback`), pruning clean inodes, giving up on lost pages |
//! | `writeback_thread` | the writeback thread (the kernel's flusher, `wb_workfn`) and its command word |
//! | `stuck` | waits stuck behind a held `PageMut`, reported by the writeback thread |
//!
//! # Locks
//!
//! The inode table's locks and their order are in `inode_table`; the dirty-inode list (in
//! `writeback`) and the writeback thread's command mutex are leaves. The hit path takes none of them: a `File` holds
//! its inode directly, and a hit is a lock-free lookup in the mapping (core `mapping`: hints,
//! then a pin or an optimistic copy validated by the frame's generation) plus page-state loads.
//! Eviction (`try_evict`) runs under the pool's reclaim mutex (core `pool`; not the policy's
//! own lock, which is taken only to isolate and put back candidates) and takes the inode
//! table's `inodes` read lock, then the mapping shard's write lock, where it freezes the page
//! with `PageDesc::freeze_if_reclaimable` (its pin count from the mapping's one to zero).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uringcache_core::backend::Backend as IoBackend;
use uringcache_core::evict::Verdict;
use uringcache_core::frames::FrameArena;
use uringcache_core::page::{FrameId, NO_OWNER};
use uringcache_core::pool::FramePool;
use uringcache_core::wait::{Event, WaitTable};
use uringcache_core::writeback::DirtyLimits;

mod inode_table;
mod stuck;
mod writeback;
mod writeback_pass;
mod writeback_thread;

pub(crate) use crate::backend::BackendInfo;
use crate::inode::Inode;
use crate::latency::Timed;
use crate::stats::{Counter, Counters, Stats};
use crate::util::block_on;
use inode_table::InodeTable;
use stuck::StuckWaits;
pub(crate) use writeback::WritebackState;

/// What [`CacheBuilder::build`] hands over once every setting is checked and the arena and
/// backend are up.
pub(crate) struct CacheParts {
    pub(crate) arena: Arc<FrameArena>,
    pub(crate) backend: Arc<dyn IoBackend>,
    pub(crate) timed: Arc<Timed>,
    pub(crate) backend_info: BackendInfo,
    pub(crate) frames: usize,
    pub(crate) page_size: usize,
    pub(crate) ra_max_pages: u64,
    pub(crate) max_request_pages: usize,
    pub(crate) limits: DirtyLimits,
    pub(crate) writeback_interval: Duration,
    pub(crate) dirty_expire: Duration,
}

impl Cache {
    /// Puts the cache together from its checked parts and starts its writeback thread.
    pub(crate) fn start(parts: CacheParts) -> io::Result<Cache> {
        let ps = parts.page_size;
        let frames = parts.frames;
        let inner = Arc::new(CacheInner {
            arena: parts.arena,
            pool: FramePool::new(frames),
            waits: WaitTable::new(),
            backend: parts.backend,
            timed: parts.timed,
            backend_info: parts.backend_info,
            inodes: InodeTable::default(),
            page_size: ps,
            page_shift: ps.trailing_zeros(),
            ra_max_pages: parts.ra_max_pages,
            max_request_pages: parts.max_request_pages,
            counters: Counters::default(),
            frame_event: Event::new(),
            alloc_waiters: AtomicUsize::new(0),
            user_handles: AtomicUsize::new(0),
            stuck: StuckWaits::default(),
            shut_down: AtomicBool::new(false),
            shutdown_started: AtomicBool::new(false),
            shutdown_done: Event::new(),
            writeback: WritebackState::new(
                parts.limits,
                parts.writeback_interval,
                parts.dirty_expire,
            ),
            clock: Instant::now(),
        });
        let weak = Arc::downgrade(&inner);
        inner
            .writeback
            .spawn_thread(move |all| match weak.upgrade() {
                Some(cache) => {
                    cache.writeback_pass(all);
                    true
                }
                None => false,
            })?;
        inner.user_handle_added();
        Ok(Cache { inner })
    }
}

/// A user-space page cache: a budget of page frames shared by every file opened through it.
///
/// Cheap to clone (`Arc` inside), `Send + Sync`. See the crate docs for the model.
pub struct Cache {
    inner: Arc<CacheInner>,
}

impl Clone for Cache {
    fn clone(&self) -> Self {
        self.inner.user_handle_added();
        Cache {
            inner: self.inner.clone(),
        }
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.inner.user_handle_dropped();
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("backend", &self.inner.backend.name())
            .field("page_size", &self.inner.page_size)
            .field("frames", &self.inner.pool.frames())
            .finish()
    }
}

impl Cache {
    /// The state shared with the cache's files.
    pub(crate) fn inner(&self) -> &Arc<CacheInner> {
        &self.inner
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// The page size in bytes.
    pub fn page_size(&self) -> usize {
        self.inner.page_size
    }

    /// Writes back every dirty page of every open file (and of every closed file the cache
    /// still holds), waits for it, truncates each file on disk to its length and flushes it
    /// (`sync_all`), then stops the cache: further operations
    /// fail, and the backend stops once every submitted I/O has completed. Returns the first
    /// error met; pages that failed stay dirty and the error names the file.
    pub async fn shutdown(&self) -> io::Result<()> {
        let inner = &self.inner;
        if inner.shutdown_started.swap(true, Ordering::AcqRel) {
            // Another call did (or is doing) the work: nothing is left to do but wait for it.
            loop {
                let ticket = inner.shutdown_done.listen();
                if inner.shut_down.load(Ordering::Acquire) {
                    return Ok(());
                }
                ticket.await;
            }
        }
        let mut first_err = None;
        for inode in inner.open_inodes() {
            // Errors from now on: a writeback error recorded earlier left its pages dirty, so
            // this sync writes them again and reports a failure only if that fails too. An
            // error some handle was told of, and whose pages were written since, is not
            // reported again as if the shutdown had failed.
            let cursor = inode.mapping().wb_err().sample();
            if let Err(e) = inode.sync(crate::inode::SyncKind::All, &cursor).await {
                tracing::error!(path = %inode.path().display(), error = %e, "shutdown: sync failed");
                first_err.get_or_insert(e);
            }
        }
        inner.shut_down.store(true, Ordering::Release);
        inner.shutdown_done.notify_all();
        // Allocations and throttled writers waiting for writeback see the shutdown and stop
        // waiting (the flusher is stopped next).
        inner.frame_event.notify_all();
        inner.writeback.stop_thread();
        inner.backend.shutdown();
        // Nothing will be written any more: the references to files held for writeback or
        // kept closed (each holding the cache) go, so that the cache is freed with its last
        // handle.
        let held = inner.writeback.take_dirty_inodes();
        drop(held);
        inner.inodes.clear_idle();
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for CacheInner {
    fn drop(&mut self) {
        self.writeback.stop_thread();
    }
}

/// Decrements a waiter count when the waiting future completes or is dropped.
struct WaiterGuard<'a>(&'a AtomicUsize);

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The state shared by a cache and its files.
pub(crate) struct CacheInner {
    arena: Arc<FrameArena>,
    pool: FramePool,
    waits: WaitTable,
    backend: Arc<dyn IoBackend>,
    /// What was learnt while starting the backend (fixed buffers, a fallback's reason).
    backend_info: BackendInfo,
    /// The timing layer around `backend` (the same object), for latency statistics.
    timed: Arc<Timed>,
    /// Open, written-back and closed files (see [`InodeTable`]).
    inodes: InodeTable,
    page_size: usize,
    page_shift: u32,
    ra_max_pages: u64,
    /// The most pages one device request carries (`CacheBuilder::max_request_size`).
    max_request_pages: usize,
    counters: Counters,
    /// Notified when a frame may have become free or evictable (an unpin, an I/O completion)
    /// while an allocation waits for one.
    frame_event: Event,
    /// Allocations waiting on `frame_event`.
    alloc_waiters: AtomicUsize,
    /// `Cache` and `File` handles alive. When the last goes, the flusher writes everything
    /// back and lets go of the files it holds for writeback, which is what keeps the cache
    /// alive (an inode holds its cache), so that the cache is freed.
    user_handles: AtomicUsize,
    /// Waits on pages locked by page handles, reported by the flusher if they last.
    stuck: StuckWaits,
    shut_down: AtomicBool,
    /// `shutdown` was called (a second call waits for the first, then returns `Ok`).
    shutdown_started: AtomicBool,
    /// Notified when `shut_down` is set.
    shutdown_done: Event,
    /// Dirty and writeback counts, thresholds, the dirty-inode list and the flusher (see
    /// [`WritebackState`]).
    writeback: WritebackState,
    /// The clock of `dirtied_at` and of the idle list.
    clock: Instant,
}

impl CacheInner {
    /// The frames' memory.
    #[inline]
    pub(crate) fn arena(&self) -> &FrameArena {
        &self.arena
    }

    /// The frame pool: descriptors, free list and eviction policy.
    #[inline]
    pub(crate) fn pool(&self) -> &FramePool {
        &self.pool
    }

    /// The page wait table (`folio_wait_table`).
    #[inline]
    pub(crate) fn waits(&self) -> &WaitTable {
        &self.waits
    }

    /// The I/O backend (the timing layer over the one started).
    #[inline]
    pub(crate) fn backend(&self) -> &Arc<dyn IoBackend> {
        &self.backend
    }

    /// Bytes per page.
    #[inline]
    pub(crate) fn page_size(&self) -> usize {
        self.page_size
    }

    /// log2 of the page size.
    #[inline]
    pub(crate) fn page_shift(&self) -> u32 {
        self.page_shift
    }

    /// The largest readahead window, in pages.
    #[inline]
    pub(crate) fn ra_max_pages(&self) -> u64 {
        self.ra_max_pages
    }

    /// The most pages one device request carries: reads, writeback runs, direct-I/O chunks.
    #[inline]
    pub(crate) fn max_request_pages(&self) -> usize {
        self.max_request_pages
    }

    /// The cache-wide writeback state: dirty and writeback counts, throttling, the list of
    /// inodes with work for the flusher, the flusher itself.
    #[inline]
    pub(crate) fn writeback(&self) -> &WritebackState {
        &self.writeback
    }

    /// Milliseconds since the cache was built (the clock of `dirtied_at`).
    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    pub(crate) fn user_handle_added(&self) {
        self.user_handles.fetch_add(1, Ordering::AcqRel);
    }

    /// The last user handle gone: nothing will sync any more, so write everything back now
    /// rather than when it expires, and free the cache once that is done.
    pub(crate) fn user_handle_dropped(&self) {
        if self.user_handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.writeback.kick(true);
        }
    }

    /// Every inode alive: open, held for writeback, or kept closed.
    pub(crate) fn open_inodes(&self) -> Vec<Arc<Inode>> {
        self.inodes.all()
    }

    pub(crate) fn check_open(&self) -> io::Result<()> {
        if self.shut_down.load(Ordering::Acquire) {
            Err(io::Error::other("the cache has been shut down"))
        } else {
            Ok(())
        }
    }

    /// The table of inodes: open, held for writeback, kept closed.
    pub(crate) fn inodes(&self) -> &InodeTable {
        &self.inodes
    }

    /// Waits on pages locked by page handles (see [`crate::stuck`]).
    pub(crate) fn stuck(&self) -> &StuckWaits {
        &self.stuck
    }

    /// The cache's counters.
    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// A handle of `inode` closed; at the last one the cache lets go of the file at once, or,
    /// if it still has work on it, once writeback has made it clean (see
    /// [`InodeTable::closed`]).
    pub(crate) fn file_closed(&self, inode: &Arc<Inode>) {
        let keep = !self.shut_down.load(Ordering::Acquire);
        if self.inodes.closed(inode, keep) {
            inode.hold_for_writeback();
            self.writeback.kick(false);
        }
    }

    /// Called by the flusher for a file without handles whose pages are all clean: cuts the
    /// file on disk back to `len()` if the tail block overshot it, then keeps it closed with
    /// its pages (see [`InodeTable::let_go`]).
    pub(crate) fn let_go(&self, inode: Arc<Inode>) {
        if inode.is_writable() && !inode.disk_len_right() {
            if let Err(e) = block_on(inode.cut_disk(None)) {
                tracing::warn!(path = %inode.path().display(), error = %e,
                    "letting go of a closed file: cannot cut it back to its length");
            }
        }
        let keep = !self.shut_down.load(Ordering::Acquire);
        self.inodes.let_go(inode, keep);
    }

    /// The eviction callback (`shrink_folio_list` for one candidate): removes the page in
    /// `frame` from its mapping if it is reclaimable (`PageDesc::freeze_if_reclaimable`: only the
    /// mapping pins it, and it is clean, unlocked and not under writeback), freezing its pin
    /// count at zero (`PageDesc::freeze_if_reclaimable`), so that the frame goes to the
    /// allocation with no pin anybody could still take.
    fn try_evict(&self, frame: FrameId) -> Verdict {
        let pages = self.pool.pages();
        let desc = pages.get(frame);
        let owner = desc.owner();
        if owner == NO_OWNER {
            return Verdict::Gone;
        }
        let Some(inode) = self.inodes.by_id(owner) else {
            // The inode is being dropped; its drop frees the frame.
            return Verdict::Busy;
        };
        let mut dirty = false;
        let removed = inode.mapping().remove_if(desc.index(), frame, pages, |d| {
            dirty = d.flags().is_dirty();
            d.freeze_if_reclaimable()
        });
        drop(inode);
        if removed {
            // Frozen: the mapping's pin is gone with the page, and nobody can pin it again.
            debug_assert_eq!(desc.pins(), 0);
            self.counters.add(Counter::Evictions, 1);
            Verdict::Evicted
        } else if dirty {
            Verdict::Dirty
        } else {
            Verdict::Busy
        }
    }

    /// Allocates a frame, evicting if needed. `None` when every frame is busy right now; if
    /// dirty pages stood in the way, background writeback is started so that they become
    /// evictable.
    pub(crate) fn try_alloc(&self) -> Option<FrameId> {
        // A pass that only aged hot pages (hits racing with it) made progress: try again at
        // once. Waiting instead would wait for a release that nothing may ever make.
        for _ in 0..4 {
            match self.pool.alloc(|f| self.try_evict(f)) {
                Ok(f) => return Some(f),
                Err(scan) => {
                    if scan.dirty > 0 {
                        self.writeback.kick(true);
                    }
                    if scan.aged == 0 {
                        return None;
                    }
                }
            }
        }
        None
    }

    /// Allocates a frame, waiting while every frame is busy (`__alloc_pages` with reclaim).
    /// A frame that is locked for I/O, pinned for a moment by a reader or waiting for
    /// writeback becomes evictable by itself, and every such change notifies `frame_event`; so
    /// the wait ends without polling. Only when every frame is held by long-lived user pins can
    /// nothing change: that is an error, not a hang.
    pub(crate) async fn alloc(&self) -> io::Result<FrameId> {
        loop {
            let ticket = self.frame_event.listen();
            self.alloc_waiters.fetch_add(1, Ordering::SeqCst);
            let got = self.try_alloc();
            if let Some(f) = got {
                self.alloc_waiters.fetch_sub(1, Ordering::SeqCst);
                return Ok(f);
            }
            if self.pool.pages().all_user_pinned() {
                self.alloc_waiters.fetch_sub(1, Ordering::SeqCst);
                return Err(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    format!(
                        "every one of the cache's {} frames is pinned by a page handle; raise \
                         memory_limit or hold fewer pages at once",
                        self.pool.frames()
                    ),
                ));
            }
            // Once the cache is shut down, nothing writes back any more: waiting for a dirty
            // frame to become free could last forever.
            if let Err(e) = self.check_open() {
                self.alloc_waiters.fetch_sub(1, Ordering::SeqCst);
                return Err(e);
            }
            self.counters.add(Counter::AllocWaits, 1);
            tracing::debug!(
                frames = self.pool.frames(),
                dirty = self.writeback.nr_dirty(),
                writeback = self.writeback.nr_writeback(),
                "eviction pressure: waiting for a frame"
            );
            let _waiting = WaiterGuard(&self.alloc_waiters);
            ticket.await;
        }
    }

    /// Wakes allocations waiting for a frame, if any: a frame was freed or a page may have
    /// become evictable. An allocation listens before it counts itself and scans after, so a
    /// change that sees no waiter is seen by the allocation's scan.
    #[inline]
    pub(crate) fn notify_if_alloc_waiters(&self) {
        if self.alloc_waiters.load(Ordering::SeqCst) > 0 {
            self.frame_event.notify_all();
        }
    }

    /// Drops one pin of `frame` (`put_page`): frees the frame when it was the last, and tells
    /// waiting allocations when the page has just become evictable.
    #[inline]
    pub(crate) fn put(&self, frame: FrameId) {
        let left = self.pool.pages().get(frame).unpin();
        self.pin_dropped(frame, left);
    }

    /// Drops a page handle's pin of `frame` (`PageDesc::unpin_user`), as [`put`](Self::put).
    #[inline]
    pub(crate) fn put_user(&self, frame: FrameId) {
        let left = self.pool.pages().get(frame).unpin_user();
        self.pin_dropped(frame, left);
    }

    /// What follows dropping a pin of `frame` that left `left` pins.
    #[inline]
    fn pin_dropped(&self, frame: FrameId, left: u32) {
        match left {
            0 => self.free_frame(frame),
            1 => self.notify_if_alloc_waiters(),
            _ => {}
        }
    }

    /// Returns `frame`, unpinned and in no mapping (its last pin dropped, or frozen and
    /// removed by `invalidate`), to the free list, and tells waiting allocations.
    pub(crate) fn free_frame(&self, frame: FrameId) {
        self.pool.free_frame(frame);
        self.notify_if_alloc_waiters();
    }

    pub(crate) fn stats(&self) -> Stats {
        let b = self.backend.stats();
        let lat = self.timed.summaries();
        let c = &self.counters;
        Stats {
            backend: self.backend.name(),
            fixed_buffers: self.backend_info.fixed_buffers(),
            fixed_buffer_bytes: b.fixed_buffer_bytes,
            thread_rings: b.thread_rings,
            caller_completions: b.caller_completions,
            reactor_rings: b.reactor_rings,
            reactor_completions: b.reactor_completions,
            backend_fallback: self.backend_info.fallback().map(str::to_owned),
            page_size: self.page_size,
            frames: self.pool.frames(),
            cached_pages: self.pool.frames() - self.pool.nr_free(),
            pinned_pages: self
                .pool
                .pages()
                .iter()
                .filter(|d| d.user_pins() > 0)
                .count(),
            hits: c.get(Counter::Hits),
            misses: c.get(Counter::Misses),
            waits: c.get(Counter::Waits),
            pages_read: c.get(Counter::PagesRead),
            readahead_pages: c.get(Counter::ReadaheadPages),
            readahead_hits: c.get(Counter::ReadaheadHits),
            evictions: c.get(Counter::Evictions),
            read_errors: c.get(Counter::ReadErrors),
            alloc_waits: c.get(Counter::AllocWaits),
            dirty_pages: self.writeback.nr_dirty(),
            writeback_pages: self.writeback.nr_writeback(),
            pages_written: c.get(Counter::PagesWritten),
            write_requests: c.get(Counter::WriteRequests),
            write_errors: c.get(Counter::WriteErrors),
            flushes: c.get(Counter::Flushes),
            flush_errors: c.get(Counter::FlushErrors),
            syncs: c.get(Counter::Syncs),
            throttle_waits: c.get(Counter::ThrottleWaits),
            open_files: self
                .open_inodes()
                .iter()
                .filter(|i| i.has_handles())
                .count(),
            idle_files: self.inodes.idle_len(),
            reopens: c.get(Counter::Reopens),
            stale_reopens: c.get(Counter::StaleReopens),
            dirty_pages_dropped: c.get(Counter::DirtyPagesDropped),
            stuck_waits: c.get(Counter::StuckWaits),
            read_latency: lat[0],
            write_latency: lat[1],
            flush_latency: lat[2],
            device_reads: b.reads,
            device_read_bytes: b.read_bytes,
            device_writes: b.writes,
            device_write_bytes: b.write_bytes,
            fsyncs: b.fsyncs,
            submit_calls: b.submit_calls,
            io_errors: b.errors,
        }
    }
}
