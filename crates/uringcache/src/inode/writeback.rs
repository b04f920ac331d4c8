//! Writeback: from dirty pages to durable bytes (`mm/page-writeback.c`, `fs/fs-writeback.c`,
//! `filemap_write_and_wait_range`, `vfs_fsync_range`).
//!
//! * **Starting writeback** ([`Inode::write_pages`], `write_cache_pages`): a dirty page is
//!   locked, moved from `DIRTY` to `WRITEBACK` (`PageDesc::start_writeback`; from the mapping's
//!   dirty tag to its writeback tag; `WritebackState::writeback_started`), unlocked, and
//!   gathered with its neighbours into one `O_DIRECT` write per run of consecutive pages. The
//!   page holding end of file is written up to the end rounded up to
//!   the direct-I/O alignment (the tail block is written whole).
//! * **Stable pages**: a writer waits for `WRITEBACK` to clear before it changes a page, so the
//!   bytes on their way to the device never change under the device's feet; a page dirtied
//!   again after its writeback started is simply dirty again, and is written again.
//! * **Completion** (`WaitTable::end_writeback` → `PageDesc::end_writeback`): success clears
//!   `WRITEBACK`; failure puts the page back to `DIRTY` (never clean; counted again only if it
//!   had gone clean), records the errno on the page and in the mapping's error sequence, and
//!   clears `WRITEBACK`. The page's accounting (dirty again, out of writeback) is settled
//!   before `WRITEBACK` clears. Either way waiters on the page and throttled writers are woken.
//! * **The flusher** ([`WritebackThread`]): one thread per cache, asleep on a condition variable; woken
//!   every `writeback_interval` to write pages older than `dirty_expire`, or at once when the
//!   dirty count passes the background threshold or eviction finds only dirty pages.
//! * **Sync** ([`Inode::sync`]): the dirty pages of the range at the moment of the call are the
//!   ones to write (a snapshot of the dirty set, as the TOWRITE tag is in the kernel, so writers that keep dirtying cannot starve a sync); then
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
//!
//! This file has the per-inode state and the write path of writeback (starting writeback,
//! completions, marking pages dirty and accounting them); [`super::sync`] has the syncs, cuts
//! and flushes; the cache's `WritebackState` (`cache::writeback`) owns the cache-wide counts,
//! the dirty-inode list and the writeback thread, and the cache's `writeback_pass` module runs
//! the passes.
//!
//! # One way in
//!
//! Every device write of cached pages starts in [`Inode::write_pages`]: the pages to write,
//! an age limit, and whether to write with `RWF_DSYNC`. Its callers only choose the pages and
//! what to wait for:
//!
//! | caller | pages | then |
//! | --- | --- | --- |
//! | `write_back` (a pass of the writeback thread, also the one eviction kicks) | every dirty page, or those older than `dirty_expire` | nothing |
//! | `submit_all` (a sync) | the range's dirty pages at the call | waits for busy pages and writes them again |
//! | `write_and_wait` (direct I/O, `sync_range`) | the range's dirty pages | waits for them and for writes in flight |
//!
//! # Lock order
//!
//! `InodeWriteback::flush` (group commit and the disk gate) is a leaf: taken for a few
//! instructions, never while submitting to the backend, taking a page lock or another lock.
//! The flusher's command mutex is a leaf too. The dirty-inode list of `WritebackState` is
//! taken alone (an `Arc` is cloned out before any inode is called into). The page transitions
//! run under the page lock (`LOCKED`), except the completion's, which owns `WRITEBACK`.

use std::io;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use uringcache_core::backend::{Completion, Op, Request};
use uringcache_core::disk_gate::DiskGate;
use uringcache_core::group_commit::GroupCommit;
use uringcache_core::page::{FrameId, PageDesc};
use uringcache_core::run::{Run, RunBuilder};
use uringcache_core::wait::Event;
use uringcache_core::writeback::tail_len;

use crate::inode::Inode;
use crate::stats::Counter;

/// Per-inode writeback state: what is on disk, and the group-commit flush sequence.
#[derive(Debug)]
pub(crate) struct InodeWriteback {
    /// The file's length on disk as far as the cache knows (writes of the tail block may make
    /// it longer than `len()` until the next sync cuts it back).
    pub(super) disk_size: AtomicU64,
    /// `len()` at the last successful full flush.
    pub(super) synced_size: AtomicU64,
    pub(super) flush: Mutex<FlushState>,
    pub(super) flush_done: Event,
    /// The errno of a failed flush; once set, every later sync fails.
    pub(super) poisoned: AtomicI32,
}

/// What the flush mutex guards: group commit of the file's syncs and the disk gate between
/// its device writes and cuts. One mutex, so that a write's completion updates both at once.
#[derive(Debug, Default)]
pub(super) struct FlushState {
    pub(super) commit: GroupCommit,
    /// Device writes (writeback and direct) against cuts of the file on disk.
    pub(super) gate: DiskGate<Request, PendingCut>,
}

/// A cut of the file on disk waiting in the [`DiskGate`]: the length, and whom to tell.
pub(super) struct PendingCut {
    pub(super) len: u64,
    pub(super) done: Completion,
}

impl std::fmt::Debug for PendingCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCut")
            .field("len", &self.len)
            .finish()
    }
}

impl InodeWriteback {
    /// Forgets a failed flush (a reopen after every handle that could hear of it closed).
    pub(crate) fn clear_poison(&self) {
        self.poisoned.store(0, Ordering::Release);
    }

    pub(crate) fn new(size: u64) -> Self {
        InodeWriteback {
            disk_size: AtomicU64::new(size),
            synced_size: AtomicU64::new(size),
            flush: Mutex::new(FlushState::default()),
            flush_done: Event::new(),
            poisoned: AtomicI32::new(0),
        }
    }
}

/// Removes a sync's flush waiter if the sync is dropped while it waits.
pub(super) struct FlushWaiterGuard<'a> {
    pub(super) inode: &'a Inode,
    pub(super) id: u64,
}

impl Drop for FlushWaiterGuard<'_> {
    fn drop(&mut self) {
        self.inode.wb.flush.lock().commit.leave(self.id);
    }
}

/// The most pages a sync writes with `RWF_DSYNC` (each such write makes the kernel flush the
/// device's cache, so a large sync is cheaper as plain writes and one flush).
pub(super) const DSYNC_MAX_PAGES: usize = 8;

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
        let pages = cache.pool().pages();
        let ps = cache.page_size();
        let mut requests = Vec::new();
        let mut runs = RunBuilder::new(cache.max_request_pages(), ps);
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
            let st = desc.flags();
            let skip = if !st.is_dirty() || st.is_orphan() {
                Some(false)
            } else if st.is_writeback() {
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
                cache.waits().unlock(desc, frame);
                cache.put(frame);
                continue;
            }
            // Read the size under the page lock: a writer extends it before unlocking, so it
            // covers every byte of this page that was written.
            let len = tail_len(index, ps, self.mapping.size(), self.dio_align);
            // Under the page lock: DIRTY seen above stays set, so this moves it to WRITEBACK.
            let started = desc.start_writeback();
            debug_assert!(started, "a locked dirty page must start writeback");
            self.mapping.start_writeback(index);
            cache.writeback().writeback_started(1);
            cache.waits().unlock(desc, frame);
            if len == 0 {
                // Wholly past end of file (a truncation is dropping it): nothing to write.
                self.finish_writeback(index, frame, None);
                continue;
            }
            // The lookup's pin now belongs to the write.
            if let Some(run) = runs.push(index, frame, len) {
                self.push_write(&mut requests, run, dsync);
            }
            submitted += 1;
        }
        if let Some(run) = runs.finish() {
            self.push_write(&mut requests, run, dsync);
        }
        self.submit_writes(requests);
        (submitted, busy)
    }

    /// Makes the write request of one run (numbered for group commit) and adds it to
    /// `requests`.
    fn push_write(self: &Arc<Self>, requests: &mut Vec<Request>, run: Run, dsync: bool) {
        let Run {
            first,
            frames,
            bytes: len,
        } = run;
        let offset = first << self.cache.page_shift();
        let this = self.clone();
        let done_frames = frames.clone();
        let seq = self.wb.flush.lock().commit.begin_write();
        requests.push(Request {
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
                    .counters()
                    .add(Counter::PagesWritten, frames.len() as u64);
                cache.counters().add(Counter::WriteRequests, 1);
                None
            }
            Err(e) => {
                let errno = crate::error::errno_of(e);
                tracing::warn!(
                    path = %self.path.display(), offset, len, error = %e,
                    "writeback failed; the pages stay dirty"
                );
                cache.counters().add(Counter::WriteErrors, 1);
                Some(errno)
            }
        };
        for (k, &frame) in frames.iter().enumerate() {
            self.finish_writeback(first + k as u64, frame, errno);
        }
        if let Some(errno) = errno {
            self.mapping.wb_err().set(errno);
        }
        cache.writeback().notify_progress();
        cache.notify_if_alloc_waiters();
    }

    /// Ends writeback of one page (`folio_end_writeback`; on failure the page is dirty again
    /// first), drops the write's pin. The page's accounting moves before `WRITEBACK` clears: a
    /// re-dirtied page is counted and tagged dirty, then untagged and uncounted as writeback.
    fn finish_writeback(self: &Arc<Self>, index: u64, frame: FrameId, errno: Option<i32>) {
        let cache = &self.cache;
        let desc = cache.pool().pages().get(frame);
        cache
            .waits()
            .end_writeback(desc, frame, errno, |redirtied| {
                if redirtied {
                    self.page_dirtied(desc, index);
                }
                self.mapping.end_writeback(index);
                cache.writeback().writeback_ended(1);
            });
        cache.put(frame);
    }

    /// A writer's new bytes are in the locked page `index` (`folio_mark_dirty`): marks it
    /// dirty and, when it went clean → dirty, accounts it ([`page_dirtied`](Self::page_dirtied)).
    pub(crate) fn mark_page_dirty(self: &Arc<Self>, desc: &PageDesc, index: u64) {
        if desc.mark_dirty() {
            self.page_dirtied(desc, index);
        }
    }

    /// Accounts page `index`, which just went clean → dirty (`folio_account_dirtied` +
    /// `__mark_inode_dirty`): records when, tags it in the mapping, makes sure the flusher
    /// knows the inode, and counts it cache-wide (`WritebackState::page_dirtied`, which kicks
    /// the flusher above the background threshold). Called exactly when `mark_dirty` returned
    /// `true` or a failed writeback re-dirtied the page, under the page lock or its writeback.
    fn page_dirtied(self: &Arc<Self>, desc: &PageDesc, index: u64) {
        desc.set_dirtied_at(self.cache.now_ms());
        self.mapping.tag_dirty(index);
        self.hold_for_writeback();
        self.cache.writeback().page_dirtied();
    }

    /// Puts the inode in the flusher's list (`__mark_inode_dirty`), which holds it until its
    /// pages are clean, even after its last handle is gone. A closed file dirtied again (by a
    /// page handle that outlived it) is the cache's work again: its stamp is void.
    pub(crate) fn hold_for_writeback(self: &Arc<Self>) {
        if !self.in_dirty_list.swap(true, Ordering::AcqRel) {
            if self.handles.load(Ordering::Acquire) == 0 {
                *self.stamp.lock() = None;
            }
            self.cache.writeback().add_dirty_inode(self);
        }
    }
}

impl Inode {
    /// Forgets every dirty page that is not under writeback (it stays cached, clean, with the
    /// bytes that could not be written). Returns their indices and the last errno seen on one.
    pub(crate) fn discard_dirty_pages(self: &Arc<Self>) -> (Vec<u64>, i32) {
        let cache = &self.cache;
        let pages = cache.pool().pages();
        let mut dropped = Vec::new();
        let mut errno = 0;
        for index in self.mapping.dirty_range(0, u64::MAX, usize::MAX) {
            let Some(frame) = self.mapping.lookup(index, pages) else {
                continue;
            };
            let desc = pages.get(frame);
            if desc.try_lock() {
                if !desc.flags().is_writeback() && desc.clear_dirty_for_io() {
                    self.mapping.untag_dirty(index);
                    cache.writeback().dirty_cancelled();
                    errno = desc.errno();
                    dropped.push(index);
                }
                cache.waits().unlock(desc, frame);
            }
            cache.put(frame);
        }
        (dropped, errno)
    }
}
