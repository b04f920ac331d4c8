//! Writeback: from dirty pages to durable bytes (`mm/page-writeback.c`, `fs/fs-writeback.c`,
//! `filemap_write_and_wait_range`, `vfs_fsync_range`).
//!
//! * **Starting writeback** ([`Inode::write_pages`], `write_cache_pages`): a dirty page is
//!   locked, moved from `DIRTY` to `WRITEBACK` (and from the mapping's dirty tag to its
//!   writeback tag), unlocked, and gathered with its neighbours into one `O_DIRECT` write per run
//!   of consecutive pages. The page holding end of file is written up to the end rounded up to
//!   the direct-I/O alignment (the tail block is written whole).
//! * **Stable pages**: a writer waits for `WRITEBACK` to clear before it changes a page, so the
//!   bytes on their way to the device never change under the device's feet; a page dirtied
//!   again after its writeback started is simply dirty again, and is written again.
//! * **Completion**: success clears `WRITEBACK`; failure puts the page back to `DIRTY` (never
//!   clean), records the errno in the mapping's error sequence and clears `WRITEBACK`. Either
//!   way waiters on the page and throttled writers are woken.
//! * **The flusher** ([`Flusher`]): one thread per cache, asleep on a condition variable; woken
//!   every `writeback_interval` to write pages older than `dirty_expire`, or at once when the
//!   dirty count passes the background threshold or eviction finds only dirty pages.
//! * **Sync** ([`Inode::sync`]): the dirty pages of the range at the moment of the call are the
//!   ones to write (the TOWRITE tag, so writers that keep dirtying cannot starve a sync); then
//!   every page of the range under writeback is waited for; then, for `sync_data`/`sync_all`,
//!   the on-disk length is cut back to `len()` if the tail block overshot it, and the file is
//!   flushed. Concurrent syncs of a file share flushes (group commit, [`Inode::flush`]): each
//!   write request carries a per-file sequence number, a sync waits for a flush covering the
//!   newest one at the time it submitted its writes, and the flush is started by the
//!   completion that makes it possible — usually the last write's, on the completing thread,
//!   so a `sync_data` costs one task wake-up, not two. When the length on disk must change
//!   first (an unaligned tail, a grown file), the sync waits for its writes, truncates, then
//!   joins.
//! * **Cuts** ([`Inode::cut_disk`]): an `ftruncate` of the file on disk (a sync cutting back an
//!   overshooting tail block, `set_len`, letting go of a file) never overlaps a device write of
//!   the same file ([`DiskGate`]): it waits for the writes in flight, and writes submitted
//!   meanwhile are held until it has completed. So an `ftruncate` to an unaligned length never
//!   meets an `O_DIRECT` write of the block it zeroes (ext4 would record a false `EIO`), and
//!   no write lands after a cut it preceded in the cache's view. A sync's cut takes the length
//!   at registration; a write that extends the file after that is held and lands after the cut.
//!   `set_len` holds the size lock against buffered and direct writes while it drops pages and
//!   cuts, as the kernel's `i_rwsem` does.
//! * **Errors**: each handle's cursor into the mapping's error sequence makes the next sync of
//!   every handle open at the time report a writeback error once. A failed flush poisons the
//!   inode: data written before it may not be durable, so no later sync of it ever reports
//!   success until every handle is closed and the file reopened.

use std::collections::BTreeSet;
use std::io;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use uringcache_core::backend::{Completion, Op, Request};
use uringcache_core::disk_gate::DiskGate;
use uringcache_core::errseq::ErrCursor;
use uringcache_core::page::{FrameId, PageState};
use uringcache_core::wait::Event;
use uringcache_core::writeback::tail_len;

use crate::cache::CacheInner;
use crate::inode::Inode;
use crate::stats::Counter;
use crate::util::{block_on, OneShot};

/// What a sync covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SyncKind {
    /// Write back and wait on a byte range; no flush (`filemap_write_and_wait_range`).
    Range(u64, u64),
    /// Everything, then a data flush (`fdatasync`; a full one if the length changed).
    Data,
    /// Everything, then a full flush (`fsync`).
    All,
}

/// Per-inode writeback state: what is on disk, and the group-commit flush sequence.
#[derive(Debug)]
pub(crate) struct InodeWriteback {
    /// The file's length on disk as far as the cache knows (writes of the tail block may make
    /// it longer than `len()` until the next sync cuts it back).
    pub(crate) disk_size: AtomicU64,
    /// `len()` at the last successful full flush.
    synced_size: AtomicU64,
    flush: Mutex<FlushState>,
    flush_done: Event,
    /// The errno of a failed flush; once set, every later sync fails.
    poisoned: AtomicI32,
}

/// Group commit by write sequence (the shape of jbd2's commit sequence and of a WAL's group
/// commit). Every writeback write request of the file gets the next sequence number when it is
/// built; a sync that has submitted its writes needs a flush that *starts* once every write
/// numbered up to its `need` has completed. Flushes run one at a time, each covering the
/// longest prefix of completed writes at its start; the next one is started by whoever makes
/// it possible — the sync joining, the completion of the last write it waits for, or the
/// completion of the flush before it — so a write's completion leads straight to the flush on
/// the completing thread, with no task woken in between.
#[derive(Debug, Default)]
struct FlushState {
    /// The sequence number the next write request gets (numbers start at 1).
    next_seq: u64,
    /// Write requests not yet completed.
    in_flight: BTreeSet<u64>,
    /// A flush is in flight.
    running: bool,
    /// Syncs waiting for a flush, each removed by the completion of the first flush that
    /// satisfies it.
    waiters: Vec<FlushWaiter>,
    next_waiter: u64,
    /// Waiters with an id below this joined before the running flush started: only they
    /// can be satisfied by it (what a sync did before joining — an `ftruncate`, a direct
    /// write — must precede the flush's start).
    running_bound: u64,
    /// Set when a flush first became possible: it waits for the writes submitted up to here.
    cutoff: Option<u64>,
    /// Completions that left bytes on the device without making them durable (plain writes,
    /// direct writes, `ftruncate`s). Starts at 1: whatever was written before the cache
    /// opened the file is not known to be durable.
    epoch: u64,
    /// `epoch` at the start of the newest successful flush: when the two are equal, every
    /// completed write is durable — flushed, or written with `RWF_DSYNC`.
    flushed_epoch: u64,
    /// `epoch` at the start of the running flush.
    running_epoch: u64,
    /// Device writes (writeback and direct) against cuts of the file on disk.
    gate: DiskGate<Request, PendingCut>,
}

/// A cut of the file on disk waiting in the [`DiskGate`]: the length, and whom to tell.
struct PendingCut {
    len: u64,
    done: Completion,
}

impl std::fmt::Debug for PendingCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCut")
            .field("len", &self.len)
            .finish()
    }
}

#[derive(Debug)]
struct FlushWaiter {
    id: u64,
    /// The newest write the flush must cover.
    need: u64,
    /// Only a full flush will do (`fsync`, not `fdatasync`). A waiter that is not full is
    /// also satisfied without a flush once every write it needs has completed and every
    /// completed write is durable (data-synchronous writes, see [`FlushState::settle`]).
    full: bool,
}

impl FlushState {
    /// The newest sequence number up to which every write has completed.
    fn completed_prefix(&self) -> u64 {
        match self.in_flight.first() {
            Some(&oldest) => oldest - 1,
            None => self.next_seq.max(1) - 1,
        }
    }

    /// Releases the data-sync waiters that need no flush: every write they need has
    /// completed and nothing completed since the last flush is non-durable (their writes were
    /// `RWF_DSYNC`). Returns whether any was released.
    fn settle(&mut self) -> bool {
        if self.epoch != self.flushed_epoch {
            return false;
        }
        let covers = self.completed_prefix();
        let before = self.waiters.len();
        self.waiters.retain(|w| w.full || w.need > covers);
        self.waiters.len() != before
    }

    /// Whether a sync alone on this file may write its pages with `RWF_DSYNC` instead of
    /// waiting for a flush: nothing in flight or waiting to share a flush with, and nothing
    /// non-durable to flush.
    fn alone_and_clean(&self) -> bool {
        !self.running
            && self.waiters.is_empty()
            && self.in_flight.is_empty()
            && self.epoch == self.flushed_epoch
    }

    /// Decides whether a flush may start now: none in flight and some waiter's writes all
    /// complete. Returns whether it is full and the prefix of writes it covers.
    fn try_start(&mut self) -> Option<(bool, u64)> {
        if self.running {
            return None;
        }
        let covers = self.completed_prefix();
        let mut ready = false;
        let mut full = false;
        for w in self.waiters.iter().filter(|w| w.need <= covers) {
            ready = true;
            full |= w.full;
        }
        if !ready {
            return None;
        }
        // Batching: the first time a flush could start, every write submitted so far is
        // included — the writes of syncs that joined a moment later are already on their way,
        // and a flush now would leave them to the next one. Writes submitted after that moment
        // do not delay it, so a stream of new syncs cannot starve the ready ones.
        let cutoff = *self.cutoff.get_or_insert(self.next_seq - 1);
        if covers < cutoff {
            return None;
        }
        self.cutoff = None;
        self.running = true;
        self.running_bound = self.next_waiter;
        self.running_epoch = self.epoch;
        Some((full, covers))
    }
}

impl InodeWriteback {
    pub(crate) fn new(size: u64) -> Self {
        InodeWriteback {
            disk_size: AtomicU64::new(size),
            synced_size: AtomicU64::new(size),
            flush: Mutex::new(FlushState {
                next_seq: 1,
                epoch: 1,
                ..FlushState::default()
            }),
            flush_done: Event::new(),
            poisoned: AtomicI32::new(0),
        }
    }
}

/// Removes a sync's flush waiter if the sync is dropped while it waits.
struct FlushWaiterGuard<'a> {
    inode: &'a Inode,
    id: u64,
}

impl Drop for FlushWaiterGuard<'_> {
    fn drop(&mut self) {
        let mut f = self.inode.wb.flush.lock();
        f.waiters.retain(|w| w.id != self.id);
    }
}

/// The most pages a sync writes with `RWF_DSYNC` (each such write makes the kernel flush the
/// device's cache, so a large sync is cheaper as plain writes and one flush).
const DSYNC_MAX_PAGES: usize = 8;

/// Writes gathered for one submission.
#[derive(Default)]
struct WriteBatch {
    requests: Vec<Request>,
    run_start: u64,
    run: Vec<FrameId>,
    run_bytes: usize,
    /// The run ends with a partial (tail) page and cannot be extended.
    run_closed: bool,
    /// Write with `RWF_DSYNC`.
    dsync: bool,
}

impl Inode {
    /// Starts writeback of the dirty pages in `indices` (sorted) without waiting
    /// (`write_cache_pages`). With `older_than`, only pages dirtied at or before that time
    /// (cache clock, ms) are written. Returns how many pages were submitted and which pages
    /// were busy (locked, or already under writeback) and were skipped.
    pub(crate) fn write_pages(
        self: &Arc<Self>,
        indices: &[u64],
        older_than: Option<u64>,
        dsync: bool,
    ) -> (usize, Vec<u64>) {
        let cache = &self.cache;
        let pages = cache.pool.pages();
        let ps = cache.page_size;
        let mut batch = WriteBatch {
            dsync,
            ..WriteBatch::default()
        };
        let mut busy = Vec::new();
        let mut submitted = 0;
        for &index in indices {
            let Some(frame) = self.mapping.lookup(index, pages) else {
                continue;
            };
            let desc = pages.get(frame);
            if !desc.try_lock() {
                busy.push(index);
                cache.put(frame);
                continue;
            }
            let st = desc.state();
            let skip = if !st.has(PageState::DIRTY) || st.has(PageState::ORPHAN) {
                Some(false)
            } else if st.has(PageState::WRITEBACK) {
                Some(true)
            } else if older_than.is_some_and(|t| desc.dirtied_at() > t) {
                Some(false)
            } else {
                None
            };
            if let Some(is_busy) = skip {
                if is_busy {
                    busy.push(index);
                }
                cache.waits.clear_and_wake(desc, frame, PageState::LOCKED);
                cache.put(frame);
                continue;
            }
            // Read the size under the page lock: a writer extends it before unlocking, so it
            // covers every byte of this page that was written.
            let len = tail_len(index, ps, self.mapping.size(), self.dio_align);
            // clear_page_dirty_for_io + set_page_writeback, under the page lock.
            desc.set(PageState::WRITEBACK);
            desc.clear(PageState::DIRTY);
            self.mapping.start_writeback(index);
            cache.nr_dirty.fetch_sub(1, Ordering::AcqRel);
            cache.nr_writeback.fetch_add(1, Ordering::AcqRel);
            cache.waits.clear_and_wake(desc, frame, PageState::LOCKED);
            if len == 0 {
                // Wholly past end of file (a truncation is dropping it): nothing to write.
                self.finish_writeback(index, frame, None);
                continue;
            }
            let contiguous = !batch.run.is_empty()
                && !batch.run_closed
                && batch.run_start + batch.run.len() as u64 == index
                && batch.run.len() < self.max_write_pages();
            if !contiguous {
                self.flush_write_run(&mut batch);
                batch.run_start = index;
            }
            batch.run.push(frame); // the lookup's pin now belongs to the write
            batch.run_bytes += len;
            batch.run_closed = len < ps;
            submitted += 1;
        }
        self.flush_write_run(&mut batch);
        self.submit_writes(batch.requests);
        (submitted, busy)
    }

    fn max_write_pages(&self) -> usize {
        // As large as the largest read window: big writes reach the device's bandwidth.
        self.cache.ra_max_pages.max(1) as usize
    }

    fn flush_write_run(self: &Arc<Self>, batch: &mut WriteBatch) {
        if batch.run.is_empty() {
            return;
        }
        let frames = std::mem::take(&mut batch.run);
        let len = std::mem::take(&mut batch.run_bytes);
        batch.run_closed = false;
        let first = batch.run_start;
        let offset = first << self.cache.page_shift;
        let this = self.clone();
        let done_frames = frames.clone();
        let dsync = batch.dsync;
        let seq = {
            let mut f = self.wb.flush.lock();
            let seq = f.next_seq;
            f.next_seq += 1;
            f.in_flight.insert(seq);
            seq
        };
        batch.requests.push(Request {
            file: self.file_id,
            op: Op::Write {
                offset,
                frames,
                len,
                dsync,
            },
            done: Box::new(move |res| {
                let durable = dsync && res.is_ok();
                this.complete_write(first, offset, len, &done_frames, res);
                this.write_done(seq, durable);
            }),
        });
    }

    /// The completion of a write (`end_page_writeback`, `mapping_set_error`).
    fn complete_write(
        self: &Arc<Self>,
        first: u64,
        offset: u64,
        len: usize,
        frames: &[FrameId],
        res: io::Result<usize>,
    ) {
        let cache = &self.cache;
        let errno = match &res {
            Ok(_) => {
                // No cut runs while a write is in flight (the disk gate), so this cannot be
                // overtaken by a cut's own record of the length.
                self.wb
                    .disk_size
                    .fetch_max(offset + len as u64, Ordering::AcqRel);
                cache
                    .counters
                    .add(Counter::PagesWritten, frames.len() as u64);
                cache.counters.add(Counter::WriteRequests, 1);
                None
            }
            Err(e) => {
                let errno = crate::error::raw_os_error_of(e).unwrap_or(libc::EIO);
                tracing::warn!(
                    path = %self.path.display(), offset, len, error = %e,
                    "writeback failed; the pages stay dirty"
                );
                cache.counters.add(Counter::WriteErrors, 1);
                Some(errno)
            }
        };
        for (k, &frame) in frames.iter().enumerate() {
            self.finish_writeback(first + k as u64, frame, errno);
        }
        if let Some(errno) = errno {
            self.mapping.wb_err().set(errno);
        }
        cache.dirty_event.notify_all();
        if cache.has_alloc_waiters() {
            cache.frame_event.notify_all();
        }
    }

    /// Ends writeback of one page; on failure the page goes back to dirty first.
    fn finish_writeback(self: &Arc<Self>, index: u64, frame: FrameId, errno: Option<i32>) {
        let cache = &self.cache;
        let desc = cache.pool.pages().get(frame);
        if let Some(errno) = errno {
            desc.set_errno(errno);
            desc.set(PageState::ERROR);
            if !desc.state().has(PageState::ORPHAN) {
                self.redirty(desc, index);
            }
        } else {
            desc.clear(PageState::ERROR);
        }
        self.mapping.end_writeback(index);
        cache.nr_writeback.fetch_sub(1, Ordering::AcqRel);
        cache
            .waits
            .clear_and_wake(desc, frame, PageState::WRITEBACK);
        cache.put(frame);
    }

    /// Marks a page dirty (`set_page_dirty` → `__mark_inode_dirty`): tags it, counts it and
    /// makes sure the flusher knows the inode. Returns whether the page was clean.
    pub(crate) fn redirty(
        self: &Arc<Self>,
        desc: &uringcache_core::page::PageDesc,
        index: u64,
    ) -> bool {
        if desc.set(PageState::DIRTY).has(PageState::DIRTY) {
            return false;
        }
        let cache = &self.cache;
        desc.set_dirtied_at(cache.now_ms());
        self.mapping.tag_dirty(index);
        cache.nr_dirty.fetch_add(1, Ordering::AcqRel);
        self.hold_for_writeback();
        if cache.nr_dirty.load(Ordering::Relaxed) > cache.limits.background {
            cache.flusher.kick(false);
        }
        true
    }

    /// Puts the inode in the flusher's list (`__mark_inode_dirty`), which holds it until its
    /// pages are clean, even after its last handle is gone. A closed file dirtied again (by a
    /// page handle that outlived it) is the cache's work again: its stamp is void.
    pub(crate) fn hold_for_writeback(self: &Arc<Self>) {
        if !self.in_dirty_list.swap(true, Ordering::AcqRel) {
            if self.handles.load(Ordering::Acquire) == 0 {
                *self.stamp.lock() = None;
            }
            self.cache
                .dirty_inodes
                .lock()
                .insert(self.mapping.id(), self.clone());
        }
    }

    /// Waits until the page at `index`, if cached, is neither locked nor under writeback.
    async fn wait_idle(&self, index: u64) {
        let pages = self.cache.pool.pages();
        let Some(frame) = self.mapping.lookup(index, pages) else {
            return;
        };
        let desc = pages.get(frame);
        self.cache.waits.wait(desc, frame, PageState::LOCKED).await;
        self.cache
            .waits
            .wait(desc, frame, PageState::WRITEBACK)
            .await;
        self.cache.put(frame);
    }

    /// Writes back the dirty pages of pages `start..end` and waits for them and for every
    /// write already in flight there (`filemap_write_and_wait_range`).
    pub(crate) async fn write_and_wait(self: &Arc<Self>, start: u64, end: u64) {
        let targets = self.mapping.dirty_range(start, end, usize::MAX);
        let in_flight = self.mapping.writeback_range(start, end);
        self.submit_all(&targets, false).await;
        for &index in targets.iter().chain(in_flight.iter()) {
            self.wait_idle(index).await;
        }
    }

    /// Starts writeback of the dirty pages among `targets`, waiting only for those that are
    /// busy (locked, or under an earlier writeback while dirty again) before writing them;
    /// returns once every one is submitted or found clean.
    async fn submit_all(self: &Arc<Self>, targets: &[u64], dsync: bool) {
        let mut busy = self.write_pages(targets, None, dsync).1;
        while !busy.is_empty() {
            for &index in &busy {
                self.wait_idle(index).await;
            }
            busy = self.write_pages(&busy, None, dsync).1;
        }
    }

    /// Submits device writes of this file through the disk gate: at once, or after the cuts
    /// registered before them (see [`DiskGate`]). Each write's completion must call
    /// [`disk_write_done`](Self::disk_write_done).
    pub(crate) fn submit_writes(self: &Arc<Self>, writes: Vec<Request>) {
        if writes.is_empty() {
            return;
        }
        let mut go = self.wb.flush.lock().gate.admit(writes);
        if !go.is_empty() {
            self.cache.backend.submit(&mut go);
        }
    }

    /// A device write admitted by the gate has completed (after its pages and `disk_size`
    /// were updated): starts the cut it was the last one holding back, if any.
    pub(crate) fn disk_write_done(self: &Arc<Self>) {
        let cut = self.wb.flush.lock().gate.write_done();
        if let Some(cut) = cut {
            self.start_cut(cut);
        }
    }

    /// Cuts (or extends) the file on disk to `len` bytes, or with `None` to `len()` read at
    /// registration, and waits (`ftruncate`). The cut runs when no device write of the file
    /// is in flight, and writes submitted meanwhile wait for it (see [`DiskGate`]).
    pub(crate) async fn cut_disk(self: &Arc<Self>, len: Option<u64>) -> io::Result<()> {
        let (cell, done) = OneShot::new();
        let (len, start) = {
            let mut f = self.wb.flush.lock();
            let len = len.unwrap_or_else(|| self.mapping.size());
            (len, f.gate.register_cut(PendingCut { len, done }))
        };
        if let Some(cut) = start {
            self.start_cut(cut);
        }
        cell.wait().await.map_err(|e| {
            crate::error::os(
                e,
                format!(
                    "cannot set the length of {} to {len} bytes",
                    self.path.display()
                ),
            )
        })?;
        Ok(())
    }

    /// Submits the `ftruncate` of a cut the gate let through. Its completion records the new
    /// length on disk, then starts the next cut or releases the writes held behind it, then
    /// tells the waiter.
    fn start_cut(self: &Arc<Self>, cut: PendingCut) {
        let PendingCut { len, done } = cut;
        let this = self.clone();
        self.cache.backend.submit(&mut vec![Request {
            file: self.file_id,
            op: Op::Truncate { len },
            done: Box::new(move |res| {
                if res.is_ok() {
                    this.wb.disk_size.store(len, Ordering::Release);
                }
                let next = {
                    let mut f = this.wb.flush.lock();
                    // On the device, not yet durable (a metadata change): the next sync
                    // flushes.
                    f.epoch += 1;
                    f.gate.cut_done()
                };
                if let Some(cut) = next.next_cut {
                    this.start_cut(cut);
                }
                let mut release = next.release;
                if !release.is_empty() {
                    this.cache.backend.submit(&mut release);
                }
                done(res);
            }),
        }]);
    }

    /// Records the completion of write request `seq` (after its pages and the error sequence
    /// were updated; `durable` when it was a successful `RWF_DSYNC` write), releases the syncs
    /// it made durable, and starts the flush it was the last one missing for, if any.
    fn write_done(self: &Arc<Self>, seq: u64, durable: bool) {
        let (settled, start, cut) = {
            let mut f = self.wb.flush.lock();
            f.in_flight.remove(&seq);
            if !durable {
                f.epoch += 1;
            }
            (f.settle(), f.try_start(), f.gate.write_done())
        };
        if let Some(cut) = cut {
            self.start_cut(cut);
        }
        if let Some((full, covers)) = start {
            self.start_flush(full, covers);
        }
        if settled {
            self.wb.flush_done.notify_all();
        }
    }

    /// Records that bytes reached the device without being made durable (a direct write, an
    /// `ftruncate`): the next sync must flush.
    pub(crate) fn note_unflushed(&self) {
        self.wb.flush.lock().epoch += 1;
    }

    /// The newest write request of this file so far: a sync that has submitted its writes
    /// needs a flush covering up to here (its own writes and every write already in flight).
    fn last_write_seq(&self) -> u64 {
        self.wb.flush.lock().next_seq - 1
    }

    /// Flushes the file to stable storage once every write request up to `need` has
    /// completed, sharing the flush with concurrent callers (group commit): the call returns
    /// after a flush that started after the call, and after those writes, has completed.
    /// At most one flush per file is in flight.
    pub(crate) async fn flush(self: &Arc<Self>, full: bool, need: u64) {
        let (id, start) = {
            let mut f = self.wb.flush.lock();
            let id = f.next_waiter;
            f.next_waiter += 1;
            f.waiters.push(FlushWaiter { id, need, full });
            f.settle();
            (id, f.try_start())
        };
        // A sync dropped while it waits leaves no waiter behind to start flushes for.
        let _guard = FlushWaiterGuard { inode: self, id };
        if let Some((full, covers)) = start {
            self.start_flush(full, covers);
        }
        loop {
            let ticket = self.wb.flush_done.listen();
            if !self.wb.flush.lock().waiters.iter().any(|w| w.id == id) {
                return;
            }
            ticket.await;
        }
    }

    /// Submits a flush covering writes up to `covers`; its completion (not the
    /// caller, who may go away) records the outcome, releases every waiter it satisfies, starts
    /// the next flush if one is due, and wakes the waiters.
    fn start_flush(self: &Arc<Self>, full: bool, covers: u64) {
        let this = self.clone();
        self.cache.counters.add(Counter::Flushes, 1);
        tracing::trace!(full, covers, "flush");
        self.cache.backend.submit(&mut vec![Request {
            file: self.file_id,
            op: Op::Fsync { datasync: !full },
            done: Box::new(move |res| {
                if let Err(e) = &res {
                    let errno = crate::error::raw_os_error_of(e).unwrap_or(libc::EIO);
                    tracing::error!(path = %this.path.display(), error = %e, "flush failed");
                    this.cache.counters.add(Counter::FlushErrors, 1);
                    this.wb.poisoned.store(errno, Ordering::Release);
                    this.mapping.wb_err().set(errno);
                }
                let next = {
                    let mut f = this.wb.flush.lock();
                    f.running = false;
                    if res.is_ok() {
                        f.flushed_epoch = f.flushed_epoch.max(f.running_epoch);
                    }
                    // Satisfied: waiting before this flush started, every write it needs
                    // covered, and wanting no more than this flush gave.
                    let bound = f.running_bound;
                    f.waiters
                        .retain(|w| !(w.id < bound && w.need <= covers && (full || !w.full)));
                    f.settle();
                    f.try_start()
                };
                if let Some((full, covers)) = next {
                    this.start_flush(full, covers);
                }
                this.wb.flush_done.notify_all();
            }),
        }]);
    }

    /// `sync_range` / `sync_data` / `sync_all` for a handle whose error cursor is `cursor`.
    /// A write that raced a truncation while the sync ran (its pages went back to dirty) makes
    /// the sync go round again.
    pub(crate) async fn sync(
        self: &Arc<Self>,
        kind: SyncKind,
        cursor: &ErrCursor,
    ) -> io::Result<()> {
        self.cache.counters.add(Counter::Syncs, 1);
        self.sync_once(kind, cursor).await
    }

    async fn sync_once(self: &Arc<Self>, kind: SyncKind, cursor: &ErrCursor) -> io::Result<()> {
        let shift = self.cache.page_shift;
        let (start, end) = match kind {
            SyncKind::Range(s, e) => (s >> shift, e.div_ceil(1 << shift)),
            SyncKind::Data | SyncKind::All => (0, u64::MAX),
        };
        let size = self.mapping.size();
        // The fast path of sync_data / sync_all: submit the dirty pages and join the flush
        // at once, so that the completion of the last write starts the flush without this task
        // running in between. It needs a file whose on-disk length is already right and stays
        // so: an aligned length (the tail block is not written past it) that the disk has.
        let fast = !matches!(kind, SyncKind::Range(..))
            && size.is_multiple_of(self.dio_align as u64)
            && self.wb.disk_size.load(Ordering::Acquire) == size;
        // A full flush for sync_all, and for sync_data when the length changed since the last.
        let full_for =
            |size| kind == SyncKind::All || self.wb.synced_size.load(Ordering::Acquire) != size;
        let full = full_for(size);
        if fast {
            let targets = self.mapping.dirty_range(start, end, usize::MAX);
            // A data sync alone on the file, of a few pages: write them with RWF_DSYNC and
            // need no flush at all (one device round trip, the kernel's FUA or write+flush).
            // With company, or with many pages, plain writes and one shared flush cost less.
            let dsync =
                !full && targets.len() <= DSYNC_MAX_PAGES && self.wb.flush.lock().alone_and_clean();
            self.submit_all(&targets, dsync).await;
        } else {
            self.write_and_wait(start, end).await;
        }
        if !matches!(kind, SyncKind::Range(..)) {
            // After the slow path's writes, the length as it is now (as before this change).
            let (size, full) = if fast {
                (size, full)
            } else {
                let size = self.mapping.size();
                (size, full_for(size))
            };
            if !fast && self.wb.disk_size.load(Ordering::Acquire) != size {
                // The length is read again at the cut's registration: the file may have grown
                // since (its new pages' writes are held behind the cut).
                if let Err(e) = self.cut_disk(None).await {
                    self.mapping.wb_err().check_and_advance(cursor);
                    return Err(e);
                }
            }
            self.flush(full, self.last_write_seq()).await;
            if full && self.wb.poisoned.load(Ordering::Acquire) == 0 {
                self.wb.synced_size.store(size, Ordering::Release);
            }
        }
        if let Some(errno) = self.mapping.wb_err().check_and_advance(cursor) {
            return Err(self.sync_error("writing back", errno));
        }
        let poisoned = self.wb.poisoned.load(Ordering::Acquire);
        if poisoned != 0 && !matches!(kind, SyncKind::Range(..)) {
            return Err(self.sync_error(
                "an earlier flush failed, so data written before it may not be durable; reopen the file after checking it; flushing",
                poisoned,
            ));
        }
        Ok(())
    }

    fn sync_error(&self, what: &str, errno: i32) -> io::Error {
        crate::error::errno(errno, format!("{what} {} failed", self.path.display()))
    }

    /// Writes back pages of this inode (the flusher's `writeback_sb_inodes` for one inode):
    /// all dirty pages, or those dirtied at or before `older_than`. Returns pages submitted.
    pub(crate) fn write_back(self: &Arc<Self>, older_than: Option<u64>) -> usize {
        let dirty = self.mapping.dirty_range(0, u64::MAX, usize::MAX);
        self.write_pages(&dirty, older_than, false).0
    }
}

/// The per-cache writeback thread (the kernel's flusher, `wb_workfn`).
pub(crate) struct Flusher {
    shared: Arc<FlusherShared>,
}

struct FlusherShared {
    cmd: Mutex<FlusherCmd>,
    wake: Condvar,
    interval: Duration,
}

#[derive(Default)]
struct FlusherCmd {
    kicked: bool,
    all: bool,
    stop: bool,
}

impl Flusher {
    pub(crate) fn new(interval: Duration) -> Self {
        Flusher {
            shared: Arc::new(FlusherShared {
                cmd: Mutex::new(FlusherCmd::default()),
                wake: Condvar::new(),
                interval,
            }),
        }
    }

    /// Starts the thread. It holds only a weak reference to the cache and exits when the cache
    /// is gone or [`stop`](Self::stop) is called.
    pub(crate) fn spawn(&self, cache: Weak<CacheInner>) -> io::Result<()> {
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("uringcache-wb".into())
            .spawn(move || flusher_main(&shared, &cache))
            .map(|_| ())
            .map_err(|e| crate::error::os(e, "cannot start the writeback thread"))
    }

    /// Wakes the thread for a pass now; `all` writes every dirty page, not only expired ones.
    pub(crate) fn kick(&self, all: bool) {
        let mut cmd = self.shared.cmd.lock();
        if cmd.kicked && (cmd.all || !all) {
            return;
        }
        cmd.kicked = true;
        cmd.all |= all;
        self.shared.wake.notify_one();
    }

    /// Makes the next timed pass write every dirty page, without waking the thread now.
    pub(crate) fn kick_later(&self) {
        self.shared.cmd.lock().all = true;
    }

    /// Stops the thread after its current pass.
    pub(crate) fn stop(&self) {
        self.shared.cmd.lock().stop = true;
        self.shared.wake.notify_one();
    }
}

fn flusher_main(shared: &FlusherShared, cache: &Weak<CacheInner>) {
    loop {
        let all = {
            let mut cmd = shared.cmd.lock();
            if !cmd.kicked && !cmd.stop {
                shared.wake.wait_for(&mut cmd, shared.interval);
            }
            if cmd.stop {
                return;
            }
            cmd.kicked = false;
            std::mem::take(&mut cmd.all)
        };
        let Some(cache) = cache.upgrade() else {
            return;
        };
        cache.writeback_pass(all);
    }
}

impl CacheInner {
    /// Most pages under writeback at once from the flusher; beyond it the flusher waits for
    /// completions (the device queue is full anyway).
    fn max_writeback_pages(&self) -> usize {
        (self.pool.frames() / 4).max(64)
    }

    /// One flusher pass (`wb_writeback`): writes every inode's expired dirty pages, or all of
    /// them when above the background threshold or asked to, then forgets inodes that are
    /// clean.
    pub(crate) fn writeback_pass(&self, all: bool) {
        let over = self.nr_dirty.load(Ordering::Acquire) > self.limits.background;
        let inodes: Vec<Arc<Inode>> = self.dirty_inodes.lock().values().cloned().collect();
        let span = tracing::debug_span!(
            "writeback_pass",
            all,
            over_background = over,
            files = inodes.len(),
            pages = tracing::field::Empty
        );
        let _entered = span.enter();
        let started = std::time::Instant::now();
        // What to write: every dirty page when eviction needs frames or above the background
        // threshold; otherwise the pages older than `dirty_expire`.
        let older_than = if all || over || self.user_handles.load(Ordering::Acquire) == 0 {
            None
        } else {
            Some(self.now_ms().saturating_sub(self.dirty_expire_ms))
        };
        let mut pages = 0;
        for inode in &inodes {
            pages += inode.write_back(older_than);
            while self.nr_writeback.load(Ordering::Acquire) > self.max_writeback_pages() {
                let ticket = self.dirty_event.listen();
                if self.nr_writeback.load(Ordering::Acquire) <= self.max_writeback_pages() {
                    break;
                }
                block_on(ticket);
            }
        }
        drop(inodes);
        let orphaned = self.user_handles.load(Ordering::Acquire) == 0;
        if orphaned {
            // No handle is left to sync or to drop the cache: wait for this pass's writes,
            // then let go of the clean files, the last references to the cache.
            while self.nr_writeback.load(Ordering::Acquire) > 0 {
                let ticket = self.dirty_event.listen();
                if self.nr_writeback.load(Ordering::Acquire) == 0 {
                    break;
                }
                block_on(ticket);
            }
            if self.nr_dirty.load(Ordering::Acquire) > 0 {
                let failed = self.orphan_failed_passes.fetch_add(1, Ordering::AcqRel) + 1;
                if failed >= GIVE_UP_AFTER {
                    self.give_up_on_failed_pages();
                } else {
                    // Try again at the next interval, all of it.
                    self.flusher.kick_later();
                }
            }
        } else {
            self.orphan_failed_passes.store(0, Ordering::Release);
        }
        self.prune_dirty_inodes();
        if orphaned {
            self.clear_idle();
        }
        self.wb_last_pass_pages.store(pages, Ordering::Release);
        self.wb_passes.fetch_add(1, Ordering::AcqRel);
        // Throttled writers re-check: the dirty count may have dropped, or writeback may have
        // found nothing it could write. Waiting allocations re-scan too: the pass may have made
        // pages evictable, and a periodic re-check bounds any wait whose wake-up was missed to
        // one writeback interval.
        self.dirty_event.notify_all();
        if self.has_alloc_waiters() {
            self.frame_event.notify_all();
        }
        span.record("pages", pages);
        if pages > 0 {
            tracing::debug!(
                pages,
                us = started.elapsed().as_micros() as u64,
                "writeback pass"
            );
        }
    }

    /// Drops the flusher's references to inodes with no dirty page and no writeback; those
    /// without handles are let go of (cut back to `len()` on disk, kept idle).
    fn prune_dirty_inodes(&self) {
        let mut gone = Vec::new();
        {
            let mut list = self.dirty_inodes.lock();
            list.retain(|_, inode| {
                inode.in_dirty_list.store(false, Ordering::Release);
                let clean = inode.is_clean();
                if !clean {
                    inode.in_dirty_list.store(true, Ordering::Release);
                } else {
                    gone.push(inode.clone());
                }
                !clean
            });
        }
        // Outside the lock: letting go waits for a cut, and the last reference to an inode
        // may drop it.
        for inode in gone {
            if inode.handles.load(Ordering::Acquire) == 0 {
                self.let_go(inode);
            }
        }
        self.prune_idle();
    }

    /// After the last handle of the cache is gone, dirty pages that failed to be written
    /// [`GIVE_UP_AFTER`] passes in a row are dropped, each file's lost byte ranges logged with
    /// the error: nobody is left to report it to, and keeping them would keep the cache's
    /// threads and memory forever.
    fn give_up_on_failed_pages(&self) {
        let inodes: Vec<Arc<Inode>> = self.dirty_inodes.lock().values().cloned().collect();
        for inode in inodes {
            let (indices, errno) = inode.discard_dirty_pages();
            if indices.is_empty() {
                continue;
            }
            let ps = self.page_size as u64;
            let ranges: Vec<String> = uringcache_core::writeback::coalesce(&indices, usize::MAX)
                .iter()
                .map(|r| {
                    format!(
                        "{}..{}",
                        r.start * ps,
                        (r.end * ps).min(inode.mapping.size())
                    )
                })
                .collect();
            let error = crate::error::errno(errno, "writing back");
            tracing::error!(
                path = %inode.path.display(),
                bytes = %ranges.join(", "),
                pages = indices.len(),
                %error,
                "no handle is left and writing back kept failing: these unsynced bytes are lost"
            );
            self.counters
                .add(Counter::DirtyPagesDropped, indices.len() as u64);
        }
    }
}

/// Writeback passes in a row that leave pages dirty, with no handle of the cache left, before
/// those pages are given up on.
pub(crate) const GIVE_UP_AFTER: u32 = 3;

impl Inode {
    /// Forgets every dirty page that is not under writeback (it stays cached, clean, with the
    /// bytes that could not be written). Returns their indices and the last errno seen on one.
    fn discard_dirty_pages(self: &Arc<Self>) -> (Vec<u64>, i32) {
        let cache = &self.cache;
        let pages = cache.pool.pages();
        let mut dropped = Vec::new();
        let mut errno = 0;
        for index in self.mapping.dirty_range(0, u64::MAX, usize::MAX) {
            let Some(frame) = self.mapping.lookup(index, pages) else {
                continue;
            };
            let desc = pages.get(frame);
            if desc.try_lock() {
                let st = desc.state();
                if !st.has(PageState::WRITEBACK)
                    && desc.clear(PageState::DIRTY).has(PageState::DIRTY)
                {
                    self.mapping.untag_dirty(index);
                    cache.nr_dirty.fetch_sub(1, Ordering::AcqRel);
                    errno = desc.errno();
                    dropped.push(index);
                }
                cache.waits.clear_and_wake(desc, frame, PageState::LOCKED);
            }
            cache.put(frame);
        }
        (dropped, errno)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> FlushState {
        FlushState {
            next_seq: 1,
            ..FlushState::default()
        }
    }

    fn submit(f: &mut FlushState) -> u64 {
        let seq = f.next_seq;
        f.next_seq += 1;
        f.in_flight.insert(seq);
        seq
    }

    fn join(f: &mut FlushState, need: u64, full: bool) -> u64 {
        let id = f.next_waiter;
        f.next_waiter += 1;
        f.waiters.push(FlushWaiter { id, need, full });
        id
    }

    #[test]
    fn a_flush_starts_when_the_writes_it_needs_complete() {
        let mut f = state();
        assert_eq!(f.try_start(), None, "no waiter, no flush");
        let a = submit(&mut f);
        let b = submit(&mut f);
        join(&mut f, b, false);
        assert_eq!(f.try_start(), None);
        f.in_flight.remove(&b);
        assert_eq!(
            f.try_start(),
            None,
            "write {a} is older and still in flight"
        );
        f.in_flight.remove(&a);
        assert_eq!(f.try_start(), Some((false, 2)));
        assert_eq!(f.try_start(), None, "one flush at a time");
    }

    #[test]
    fn a_ready_flush_waits_for_writes_already_submitted_but_not_for_later_ones() {
        let mut f = state();
        let a = submit(&mut f);
        let b = submit(&mut f); // another sync's write, on its way
        f.in_flight.remove(&a);
        join(&mut f, a, false);
        assert_eq!(
            f.try_start(),
            None,
            "{b} was submitted before the flush became possible"
        );
        let c = submit(&mut f); // later writes do not delay it
        join(&mut f, c, true);
        f.in_flight.remove(&b);
        // Covers 2 (c is in flight), and only the first waiter is ready: a data flush.
        assert_eq!(f.try_start(), Some((false, 2)));
    }

    #[test]
    fn a_full_waiter_makes_the_flush_full() {
        let mut f = state();
        let a = submit(&mut f);
        f.in_flight.remove(&a);
        join(&mut f, a, false);
        join(&mut f, a, true);
        assert_eq!(f.try_start(), Some((true, 1)));
        assert_eq!(f.running_bound, 2, "both waiters joined before it started");
    }
}
