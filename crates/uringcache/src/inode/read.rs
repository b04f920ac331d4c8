//! The read path: filling pages from the device (`filemap_read_page`,
//! `page_cache_ra_unbounded`, the completion half of `mpage_end_io`).
//!
//! # Page life in the read path
//!
//! 1. A reader misses at index *i*. The readahead state machine gives a window; for each absent
//!    page of it a frame is allocated (pinned once for the I/O, `LOCKED`), inserted into the
//!    mapping (which pins it once more) and queued with the eviction policy. Runs of consecutive
//!    pages become one device read each, and the whole window is submitted in one batch.
//! 2. Everyone who wants a page that is `LOCKED` and not `UPTODATE` waits on it in the page
//!    wait table: one device read however many tasks miss at once.
//! 3. The completion zeroes whatever lies past end of file and ends the read
//!    (`WaitTable::end_read` → `PageDesc::finish_read`: up to date, or `ERROR` with the errno;
//!    unlocked in the same step; waiters woken), then drops the I/O's pin.
//! 4. A waiter that finds `ERROR` returns the error; a later reader that finds a failed page
//!    unlocked locks it and reads that one page again (the kernel's retry).
//!
//! # Verify on fill
//!
//! A file may carry a verify hook ([`OpenOptions::verify`](crate::OpenOptions::verify), the
//! `ext2_check_page` pattern). The read completion runs it on every page it filled, after the
//! tail past end of file is zeroed and before `UPTODATE` is set, so no reader ever sees bytes the
//! hook has not accepted. A rejected page gets `ERROR` with `EBADMSG` instead of `UPTODATE`, and
//! the hook's message is kept for the reader's error (`InvalidData`); like any failed read, the
//! next reader that did not wait for that read reads the page again, and the hook runs again.
//! Pages filled without a device read (whole-page writes, pages past end of file) are not
//! verified.
//!
//! # Pages past end of file
//!
//! A reader asking for a page wholly past end of file (through [`File::page`](crate::File::page)
//! or a read racing a truncation) gets a zero-filled, clean, up-to-date page inserted in the
//! mapping, the way the write path creates such pages: nothing is read, nothing is dirtied.
//! The same holds for a page past the end of the file *on the device* but within `len()` (the
//! cache grew the file with pages written further on, not yet written back): it is a hole,
//! zeros, and readahead windows stop there too.

use std::io;
use std::sync::Arc;

use uringcache_core::backend::{Op, Request};
use uringcache_core::mapping::Speculative;
use uringcache_core::page::{FrameId, PageFlags};
use uringcache_core::readahead::Window;
use uringcache_core::run::{Run, RunBuilder};

use super::{Inode, Pinned, ReadaheadSource};
use crate::options::VerifyFn;
use crate::stats::Counter;

impl Inode {
    /// Finds and pins the page at `index` (`filemap_get_entry`): lock-free through the
    /// mapping's hints first (`Mapping::lookup_speculative`), under the shard lock when no
    /// hint serves (`lookup_and_hint`, which publishes one).
    #[inline]
    pub(crate) fn lookup(&self, index: u64) -> Option<FrameId> {
        let pages = self.cache.pool().pages();
        match self.mapping.lookup_speculative(index, pages) {
            Speculative::Pinned(frame) => return Some(frame),
            // Pinned a frame that holds another page by now: that pin may be its last.
            Speculative::Stray(frame) => self.cache.put(frame),
            Speculative::Miss => {}
        }
        self.mapping.lookup_and_hint(index, pages)
    }

    /// A hit without a pin (`filemap_read` at its fastest): copies the bytes `in_page ..
    /// in_page + dst.len()` of page `index` into `dst` if the page is cached and up to date,
    /// and keeps the copy only if the frame was not reused while it ran (an optimistic read:
    /// core `mapping`). Counts the hit, and the access when `accessed`. Returns `false`, with
    /// `dst` to be overwritten, when the caller must take the pinned path: no hint, not up to
    /// date, a readahead mark to take, or the frame changed under the copy.
    ///
    /// Writes no shared line: one load of the hints, loads of the descriptor, the copy, a
    /// per-thread counter.
    #[inline]
    pub(crate) fn copy_if_cached(
        &self,
        index: u64,
        in_page: usize,
        dst: &mut [u8],
        accessed: bool,
    ) -> bool {
        let pages = self.cache.pool().pages();
        let Some(peek) = self.mapping.peek(index, pages) else {
            return false;
        };
        let st = peek.flags;
        if !st.is_uptodate() || st.is_readahead() || st.is_prefetched() {
            return false;
        }
        debug_assert!(in_page + dst.len() <= self.cache.page_size());
        // SAFETY: the span lies within one page (`page_spans`); the bytes are used only if
        // `unchanged_since` below says the frame was not reused during the copy. An up-to-date
        // page's bytes change in place only under a writer's LOCKED, which readers do not
        // exclude (the documented semantics of racing reads and writes).
        unsafe { self.cache.arena().copy_optimistic(peek.frame, in_page, dst) };
        let desc = pages.get(peek.frame);
        if !desc.unchanged_since(peek.generation) {
            return false;
        }
        self.cache.counters().add(Counter::Hits, 1);
        if accessed {
            desc.mark_accessed();
        }
        true
    }

    /// Returns the page at `index` pinned and up to date if it is cached and ready, without
    /// waiting or reading (`IOCB_NOWAIT`).
    pub(crate) fn try_get_page(&self, index: u64) -> Option<Pinned<'_>> {
        let frame = self.lookup(index)?;
        let page = Pinned { inode: self, frame };
        let st = page.desc().flags();
        if st.is_uptodate() {
            self.note_hit(&page, st);
            Some(page)
        } else {
            None
        }
    }

    #[inline]
    fn note_hit(&self, page: &Pinned<'_>, st: PageFlags) {
        self.cache.counters().add(Counter::Hits, 1);
        if st.is_prefetched() && page.desc().test_clear_prefetched() {
            self.cache.counters().add(Counter::ReadaheadHits, 1);
        }
    }

    /// Returns the page at `index` pinned and up to date, reading it (and a readahead window)
    /// on a miss (`filemap_get_pages`). `req_pages` is how many pages the caller's request
    /// still covers from `index`.
    pub(crate) async fn get_page(
        self: &Arc<Self>,
        index: u64,
        req_pages: u64,
        ra: &dyn ReadaheadSource,
    ) -> io::Result<Pinned<'_>> {
        // Counted once per page access: a hit, a miss (we start the read) or a wait (somebody
        // else's read is in flight).
        let mut counted = false;
        let mut count = |c: Counter| {
            if !std::mem::replace(&mut counted, true) {
                self.cache.counters().add(c, 1);
            }
        };
        let mut waited = false;
        loop {
            let Some(frame) = self.lookup(index) else {
                count(Counter::Misses);
                if index >= self.read_end_page() {
                    // Wholly past end of file, or past what the device holds (a hole the
                    // file grew over in the cache): nothing to read, the page is zeros.
                    self.add_zero_page(index).await?;
                    continue;
                }
                let window = ra.sync_window(self, index, req_pages);
                self.read_window(window, Some(index)).await?;
                // Whoever started (or lost the race to start) the read gets its outcome.
                waited = true;
                continue;
            };
            let page = Pinned { inode: self, frame };
            let desc = page.desc();
            let st = desc.flags();
            if st.is_readahead() && desc.test_clear_readahead() {
                if let Some(window) = ra.async_window(self, index, req_pages) {
                    self.start_readahead(window);
                }
            }
            if st.is_uptodate() {
                count(Counter::Hits);
                if st.is_prefetched() && desc.test_clear_prefetched() {
                    self.cache.counters().add(Counter::ReadaheadHits, 1);
                }
                return Ok(page);
            }
            if st.is_locked() {
                count(Counter::Waits);
                self.cache.waits().wait_locked(desc, frame).await;
                waited = true;
                continue;
            }
            // Not up to date and unlocked: a read of it failed. A reader that started or waited
            // for that read gets its error; any other reader reads this one page again.
            if waited && st.is_error() {
                ra.on_error();
                return Err(self.read_error(index, desc.errno()));
            }
            count(Counter::Misses);
            if desc.try_lock() {
                if desc.flags().is_uptodate() {
                    // Filled by another task between our look and our lock.
                    self.cache.waits().unlock(desc, frame);
                    continue;
                }
                desc.pin(); // the I/O's own pin, dropped by the completion
                let mut batch = Vec::with_capacity(1);
                let run = Run {
                    first: index,
                    frames: vec![frame],
                    bytes: self.cache.page_size(),
                };
                self.push_read(&mut batch, run);
                // SAFETY: the page is LOCKED by us and not up to date (nobody reads or writes
                // its bytes), pinned for the I/O until the completion unlocks and unpins it.
                unsafe { self.cache.backend().submit(&mut batch) };
            }
            waited = true;
            // Wait for the read (ours or another task's) on the next turn.
        }
    }

    fn read_error(&self, index: u64, errno: i32) -> io::Error {
        if errno == libc::EBADMSG {
            let msg = self.verify_errors.lock().get(&index).cloned();
            return io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "page {index} (offset {}) of {} failed verification: {}",
                    index << self.cache.page_shift(),
                    self.path.display(),
                    msg.as_deref().unwrap_or("rejected by the verify hook")
                ),
            );
        }
        crate::error::errno(
            errno,
            format!(
                "reading page {index} (offset {}) of {} failed",
                index << self.cache.page_shift(),
                self.path.display()
            ),
        )
    }

    /// Inserts a zero-filled, clean, up-to-date page at `index`, wholly past end of file, unless
    /// a page is there already (`grab_cache_page` + `zero_user` for a hole past EOF). If the
    /// file grew over `index` meanwhile, the page is dropped again (it may hold data on the
    /// device now) and the caller's next lookup reads it.
    pub(crate) async fn add_zero_page(self: &Arc<Self>, index: u64) -> io::Result<()> {
        let cache = &self.cache;
        let pages = cache.pool().pages();
        let frame = cache.alloc().await?; // pinned and LOCKED, in no mapping yet
        if let Err(existing) = self.mapping.insert(index, frame, pages) {
            cache.waits().unlock(self.desc(frame), frame); // never published: nobody waits
            cache.put(frame);
            cache.put(existing);
            return Ok(());
        }
        cache.pool().lru_add(frame, self.mapping.id(), index);
        // SAFETY: the page is LOCKED by this task and not up to date: nobody else reads or
        // writes its bytes until it is unlocked below.
        unsafe { cache.arena().frame_mut(frame).fill(0) };
        let desc = self.desc(frame);
        if index >= self.read_end_page() {
            // Filled with zeros: as good as a read.
            cache.waits().end_read(desc, frame, Ok(()));
        } else {
            if self.mapping.remove_if(index, frame, pages, |_| true) {
                // The size moved past `index` while the page was being made (a direct write,
                // a write further on): leave it to a real read. Tasks that pinned it
                // meanwhile find it neither up to date nor failed, and read it themselves.
                desc.mark_orphan();
                cache.put(frame); // the mapping's pin
            }
            cache.waits().unlock(desc, frame);
        }
        cache.put(frame);
        Ok(())
    }

    /// Starts reading `window` without waiting for anything (async readahead): pages that
    /// cannot get a frame right now are skipped.
    pub(crate) fn start_readahead(self: &Arc<Self>, window: Window) {
        let mut reads = self.read_batch();
        self.fill_run(window.start, window.end(), window.mark(), &mut reads);
        self.end_run(&mut reads);
        if !reads.requests.is_empty() {
            // SAFETY: as in `submit`. Detached: nobody waits for these reads, so a blocking
            // caller's own ring (which it drains before returning) is not the place for them.
            unsafe {
                uringcache_core::backend::submit_detached(
                    &**self.cache.backend(),
                    &mut reads.requests,
                )
            };
        }
    }

    /// Reads the absent pages of `window` (`page_cache_ra_unbounded`). The page `demand`, if
    /// given, is the one a reader needs: it waits for a frame if every frame is busy, while the
    /// others are read only if a frame is free or evictable now. Returns the index after the
    /// last page considered.
    pub(crate) async fn read_window(
        self: &Arc<Self>,
        window: Window,
        demand: Option<u64>,
    ) -> io::Result<u64> {
        let mut reads = self.read_batch();
        let mut start = window.start;
        if let Some(d) = demand {
            if d < self.read_end_page() && !self.mapping.contains(d) {
                // Nothing is gathered yet, so waiting here holds no locked page hostage.
                let frame = self.cache.alloc().await?;
                self.add_page(frame, d, window.mark(), false, &mut reads);
                if d == window.start {
                    start = d + 1;
                } else {
                    // A window that does not start at the page needed (the readahead state
                    // chose another): the needed page goes first, on its own, so that a
                    // window cut short by a lack of free frames cannot leave it unread (and
                    // its reader looping).
                    self.end_run(&mut reads);
                }
            }
        }
        let end = self.fill_run(start, window.end(), window.mark(), &mut reads);
        self.submit(reads);
        Ok(end)
    }

    /// One past the last page of the file that the device may hold bytes of: pages from here
    /// on are zeros without a read. That is the end of file, or the end of the file on disk
    /// when the cache has grown the file past it (`disk_size` covers every completed write:
    /// writeback raises it before a page becomes clean, a direct write before its pages are
    /// revisited).
    pub(crate) fn read_end_page(&self) -> u64 {
        let on_disk = self.wb.disk_size.load(std::sync::atomic::Ordering::Acquire);
        self.mapping
            .size()
            .min(on_disk)
            .div_ceil(self.cache.page_size() as u64)
    }

    /// Allocates, inserts and gathers reads for the absent pages in `start..end` (clamped to end
    /// of file), marking `mark` with `READAHEAD`. Stops at the first page that cannot get a
    /// frame without waiting. Returns the index where it stopped.
    fn fill_run(
        self: &Arc<Self>,
        start: u64,
        end: u64,
        mark: Option<u64>,
        reads: &mut ReadBatch,
    ) -> u64 {
        let end = end.min(self.read_end_page());
        let mut i = start;
        while i < end {
            if !self.mapping.contains(i) {
                let Some(frame) = self.cache.try_alloc() else {
                    break;
                };
                self.add_page(frame, i, mark, true, reads);
            }
            i += 1;
        }
        i
    }

    /// Inserts a freshly allocated, locked `frame` at `index` and adds it to the batch
    /// (`add_to_page_cache_lru` + gathering for `read_pages`).
    fn add_page(
        self: &Arc<Self>,
        frame: FrameId,
        index: u64,
        mark: Option<u64>,
        prefetch: bool,
        reads: &mut ReadBatch,
    ) {
        let pool = &self.cache.pool();
        if let Err(existing) = self.mapping.insert(index, frame, pool.pages()) {
            // Another reader inserted it first: give our frame back, leave theirs alone.
            self.cache.put(existing);
            self.cache.put(frame);
            return;
        }
        pool.lru_add(frame, self.mapping.id(), index);
        let desc = self.desc(frame);
        if prefetch {
            desc.set_prefetched();
            self.cache.counters().add(Counter::ReadaheadPages, 1);
        }
        if mark == Some(index) {
            desc.set_readahead();
        }
        if let Some(run) = reads.run.push(index, frame, self.cache.page_size()) {
            self.push_read(&mut reads.requests, run);
        }
    }

    /// Ends the run being gathered: the next page starts a request of its own.
    fn end_run(self: &Arc<Self>, reads: &mut ReadBatch) {
        if let Some(run) = reads.run.finish() {
            self.push_read(&mut reads.requests, run);
        }
    }

    /// Submits everything gathered in `reads`, in one backend call.
    fn submit(self: &Arc<Self>, mut reads: ReadBatch) {
        self.end_run(&mut reads);
        if !reads.requests.is_empty() {
            // SAFETY: every frame read into is a fresh page, LOCKED and not up to date, pinned
            // for the I/O until its completion unlocks and unpins it (see `add_page`).
            unsafe { self.cache.backend().submit(&mut reads.requests) };
        }
    }

    /// Appends a read of `frames` (consecutive pages from `index`, locked, each with a pin for
    /// the I/O) to `batch`.
    fn push_read(self: &Arc<Self>, batch: &mut Vec<Request>, run: Run) {
        let this = self.clone();
        let Run {
            first: index,
            frames,
            bytes: len,
        } = run;
        let done_frames = frames.clone();
        batch.push(Request {
            file: self.file_id,
            op: Op::Read {
                offset: index << self.cache.page_shift(),
                frames,
                len,
            },
            done: Box::new(move |res| this.complete_read(index, &done_frames, res)),
        });
    }

    /// The completion of a read of consecutive pages from `first` (`mpage_end_io` →
    /// `folio_end_read`), with the verify hook run on each page before it becomes up to date.
    fn complete_read(&self, first: u64, frames: &[FrameId], res: io::Result<usize>) {
        let ps = self.cache.page_size();
        match res {
            Ok(n) => {
                self.cache
                    .counters()
                    .add(Counter::PagesRead, frames.len() as u64);
                let verify = self.verify.read().clone();
                for (k, &frame) in frames.iter().enumerate() {
                    let start = k * ps;
                    if n < start + ps {
                        let from = n.saturating_sub(start);
                        // SAFETY: the page is LOCKED by this I/O, which owns its bytes until
                        // it clears the bit below.
                        unsafe { self.cache.arena().frame_mut(frame)[from..].fill(0) };
                    }
                    let index = first + k as u64;
                    if let Some(verify) = &verify {
                        if let Err(msg) = self.run_verify(verify, index, frame) {
                            self.reject_page(index, frame, msg);
                            continue;
                        }
                    }
                    self.end_read_io(frame, Ok(()));
                }
            }
            Err(e) => {
                let errno = crate::error::errno_of(&e);
                tracing::debug!(path = %self.path.display(), error = %e, pages = frames.len(), "read failed");
                self.cache
                    .counters()
                    .add(Counter::ReadErrors, frames.len() as u64);
                for &frame in frames {
                    self.end_read_io(frame, Err(errno));
                }
            }
        }
    }

    /// Runs the verify hook on the freshly read page in `frame` (locked by the read). A panic
    /// in the hook counts as a rejection: it must not take the completion thread down.
    fn run_verify(&self, verify: &VerifyFn, index: u64, frame: FrameId) -> Result<(), String> {
        // SAFETY: the page is LOCKED by the read completing, so nobody writes its bytes.
        let bytes = unsafe { self.cache.arena().frame(frame) };
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| verify(index, bytes)))
            .unwrap_or_else(|_| Err("the verify hook panicked".to_string()));
        if res.is_ok() && !self.verify_errors.lock().is_empty() {
            self.verify_errors.lock().remove(&index);
        }
        res
    }

    /// Fails the page in `frame` after the verify hook rejected it: `ERROR` with `EBADMSG`, not
    /// up to date; its waiters wake to the error and the I/O's pin is dropped.
    fn reject_page(&self, index: u64, frame: FrameId, msg: String) {
        tracing::warn!(path = %self.path.display(), index, error = %msg, "page failed verification");
        self.cache.counters().add(Counter::ReadErrors, 1);
        self.verify_errors.lock().insert(index, msg);
        self.end_read_io(frame, Err(libc::EBADMSG));
    }

    /// Ends a device read of the page in `frame` (`folio_end_read`): drops the read's own pin,
    /// then unlocks the page with `result` and wakes its waiters. The pin goes first, as the
    /// kernel's readahead holds no reference across the read: a task woken by the unlock never
    /// finds the read's pin still there (an `invalidate` right after a read returned finds the
    /// page pinned only by the mapping). The mapping's pin keeps the frame meanwhile: a page
    /// locked by a read never leaves its mapping (eviction and invalidation skip locked pages,
    /// truncation and direct writes lock the page first, `drop_all_pages` skips it).
    fn end_read_io(&self, frame: FrameId, result: Result<(), i32>) {
        let desc = self.desc(frame);
        let left = desc.unpin();
        debug_assert!(left >= 1, "a page being read left its mapping");
        self.cache.waits().end_read(desc, frame, result);
        // What `put` tells waiting allocations when only the mapping pins the page, now that
        // it is unlocked and may be evicted.
        if left == 1 {
            self.cache.notify_if_alloc_waiters();
        }
    }

    /// Waits until no page of `start..end` is locked (reads in flight have completed). Returns
    /// the first read error found.
    pub(crate) async fn wait_range(&self, start: u64, end: u64) -> io::Result<()> {
        for (index, _) in self.mapping.range(start, end) {
            let Some(frame) = self.mapping.lookup(index, self.cache.pool().pages()) else {
                continue;
            };
            let page = Pinned { inode: self, frame };
            let desc = page.desc();
            self.cache.waits().wait_locked(desc, frame).await;
            if desc.flags().is_read_failed() {
                return Err(self.read_error(index, desc.errno()));
            }
        }
        Ok(())
    }
}

/// Reads gathered for one submission: finished requests plus the run being extended.
struct ReadBatch {
    requests: Vec<Request>,
    run: RunBuilder,
}

impl Inode {
    /// An empty batch of reads, split into requests at the cache's request size.
    fn read_batch(&self) -> ReadBatch {
        ReadBatch {
            requests: Vec::new(),
            run: RunBuilder::new(self.cache.max_request_pages(), self.cache.page_size()),
        }
    }
}
