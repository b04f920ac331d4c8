//! Syncs (`filemap_write_and_wait_range`, `vfs_fsync_range`), cuts of the file on disk
//! through the disk gate, and group-committed flushes, for one inode. The design is in the
//! sibling `writeback` module.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use uringcache_core::backend::{Op, Request};
use uringcache_core::errseq::ErrCursor;
use uringcache_core::group_commit::FlushStart;

use super::writeback::{FlushWaiterGuard, PendingCut, DSYNC_MAX_PAGES};
use crate::inode::Inode;
use crate::stats::Counter;
use crate::util::OneShot;

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

impl Inode {
    /// Waits until the page at `index`, if cached, is neither locked nor under writeback.
    async fn wait_idle(&self, index: u64) {
        let pages = self.cache.pool().pages();
        let Some(frame) = self.mapping.lookup(index, pages) else {
            return;
        };
        let desc = pages.get(frame);
        self.cache
            .wait_unlocked(desc, frame, "a sync", &self.path, index)
            .await;
        self.cache.waits().wait_writeback(desc, frame).await;
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
            // SAFETY: writeback and direct writes: their frames are pinned for the I/O and
            // under WRITEBACK (no writer changes them, stable pages) or temporary frames of
            // the caller's, in no mapping, until the completion drops the I/O's pins.
            unsafe { self.cache.backend().submit(&mut go) };
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
        let mut batch = vec![Request {
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
                    f.commit.note_unflushed();
                    f.gate.cut_done()
                };
                if let Some(cut) = next.next_cut {
                    this.start_cut(cut);
                }
                let mut release = next.release;
                if !release.is_empty() {
                    // SAFETY: writes held by the gate, as admitted in `submit_writes`.
                    unsafe { this.cache.backend().submit(&mut release) };
                }
                done(res);
            }),
        }];
        // SAFETY: an ftruncate names no frame.
        unsafe { self.cache.backend().submit(&mut batch) };
    }

    /// Records the completion of write request `seq` (after its pages and the error sequence
    /// were updated; `durable` when it was a successful `RWF_DSYNC` write), releases the syncs
    /// it made durable, and starts the flush it was the last one missing for, if any.
    pub(super) fn write_done(self: &Arc<Self>, seq: u64, durable: bool) {
        let (done, cut) = {
            let mut f = self.wb.flush.lock();
            (f.commit.write_done(seq, durable), f.gate.write_done())
        };
        if let Some(cut) = cut {
            self.start_cut(cut);
        }
        if let Some(flush) = done.start {
            self.start_flush(flush);
        }
        if done.settled {
            self.wb.flush_done.notify_all();
        }
    }

    /// Records that bytes reached the device without being made durable (a direct write, an
    /// `ftruncate`): the next sync must flush.
    pub(crate) fn note_unflushed(&self) {
        self.wb.flush.lock().commit.note_unflushed();
    }

    /// The newest write request of this file so far: a sync that has submitted its writes
    /// needs a flush covering up to here (its own writes and every write already in flight).
    fn last_write_seq(&self) -> u64 {
        self.wb.flush.lock().commit.last_write()
    }

    /// Flushes the file to stable storage once every write request up to `need` has
    /// completed, sharing the flush with concurrent callers (group commit): the call returns
    /// after a flush that started after the call, and after those writes, has completed.
    /// At most one flush per file is in flight.
    pub(crate) async fn flush(self: &Arc<Self>, full: bool, need: u64) {
        let (id, start) = self.wb.flush.lock().commit.join(need, full);
        // A sync dropped while it waits leaves no waiter behind to start flushes for.
        let _guard = FlushWaiterGuard { inode: self, id };
        if let Some(flush) = start {
            self.start_flush(flush);
        }
        loop {
            let ticket = self.wb.flush_done.listen();
            if !self.wb.flush.lock().commit.is_waiting(id) {
                return;
            }
            ticket.await;
        }
    }

    /// Submits a flush covering writes up to `covers`; its completion (not the
    /// caller, who may go away) records the outcome, releases every waiter it satisfies, starts
    /// the next flush if one is due, and wakes the waiters.
    fn start_flush(self: &Arc<Self>, flush: FlushStart) {
        let this = self.clone();
        let FlushStart { full, covers } = flush;
        self.cache.counters().add(Counter::Flushes, 1);
        tracing::trace!(full, covers, "flush");
        let mut batch = vec![Request {
            file: self.file_id,
            op: Op::Fsync { datasync: !full },
            done: Box::new(move |res| {
                if let Err(e) = &res {
                    let errno = crate::error::errno_of(e);
                    tracing::error!(path = %this.path.display(), error = %e, "flush failed");
                    this.cache.counters().add(Counter::FlushErrors, 1);
                    this.wb.poisoned.store(errno, Ordering::Release);
                    this.mapping.wb_err().set(errno);
                }
                let next = this.wb.flush.lock().commit.flush_done(res.is_ok(), flush);
                if let Some(next) = next {
                    this.start_flush(next);
                }
                this.wb.flush_done.notify_all();
            }),
        }];
        // SAFETY: a flush names no frame.
        unsafe { self.cache.backend().submit(&mut batch) };
    }

    /// `sync_range` / `sync_data` / `sync_all` for a handle whose error cursor is `cursor`.
    pub(crate) async fn sync(
        self: &Arc<Self>,
        kind: SyncKind,
        cursor: &ErrCursor,
    ) -> io::Result<()> {
        self.cache.counters().add(Counter::Syncs, 1);
        self.sync_once(kind, cursor).await
    }

    async fn sync_once(self: &Arc<Self>, kind: SyncKind, cursor: &ErrCursor) -> io::Result<()> {
        let shift = self.cache.page_shift();
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
            let dsync = !full
                && targets.len() <= DSYNC_MAX_PAGES
                && self.wb.flush.lock().commit.alone_and_clean();
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
