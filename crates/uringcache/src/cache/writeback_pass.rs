//! The cache-wide side of writeback (`fs/fs-writeback.c`): the writeback thread's passes over the files
//! with dirty pages (`wb_writeback`), pruning clean files from the list, and giving up on pages
//! that can never be written once nobody is left to tell. The per-file side is in the inode's
//! `writeback` and `sync` modules; the counts, the list and the thread are owned by
//! [`WritebackState`](super::WritebackState) (`writeback`), which this pass drives through its methods.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use uringcache_core::run::RunBuilder;

use super::CacheInner;
use crate::inode::Inode;
use crate::stats::Counter;

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
        let wb = self.writeback();
        let over = wb.over_background();
        let inodes: Vec<Arc<Inode>> = wb.dirty_inodes();
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
            Some(wb.expired_before(self.now_ms()))
        };
        let mut pages = 0;
        for inode in &inodes {
            pages += inode.write_back(older_than);
            wb.wait_writeback_at_most(self.max_writeback_pages());
        }
        drop(inodes);
        let orphaned = self.user_handles.load(Ordering::Acquire) == 0;
        if orphaned {
            // No handle is left to sync or to drop the cache: wait for this pass's writes,
            // then let go of the clean files, the last references to the cache.
            wb.wait_writeback_at_most(0);
            if wb.nr_dirty() > 0 {
                if wb.orphan_pass_failed() >= GIVE_UP_AFTER {
                    self.give_up_on_failed_pages();
                } else {
                    // Try again at the next interval, all of it.
                    wb.kick_later();
                }
            }
        } else {
            wb.orphan_passes_reset();
        }
        self.prune_dirty_inodes();
        self.report_stuck_waits();
        if orphaned {
            self.inodes().clear_idle();
        }
        // Throttled writers re-check: the dirty count may have dropped, or writeback may have
        // found nothing it could write. Waiting allocations re-scan too: the pass may have made
        // pages evictable, and a periodic re-check bounds any wait whose wake-up was missed to
        // one writeback interval.
        wb.pass_done(pages);
        self.notify_if_alloc_waiters();
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
        // Outside the list's lock: letting go waits for a cut, and the last reference to an
        // inode may drop it.
        for inode in self.writeback().take_clean_inodes() {
            if !inode.has_handles() {
                self.let_go(inode);
            }
        }
        self.inodes().prune_idle(self.now_ms());
    }

    /// After the last handle of the cache is gone, dirty pages that failed to be written
    /// [`GIVE_UP_AFTER`] passes in a row are dropped, each file's lost byte ranges logged with
    /// the error: nobody is left to report it to, and keeping them would keep the cache's
    /// threads and memory forever.
    fn give_up_on_failed_pages(&self) {
        for inode in self.writeback().dirty_inodes() {
            let (indices, errno) = inode.discard_dirty_pages();
            if indices.is_empty() {
                continue;
            }
            let ps = self.page_size as u64;
            let mut runs = RunBuilder::new(usize::MAX, 1);
            let mut spans: Vec<(u64, u64)> = Vec::new();
            for &i in &indices {
                spans.extend(
                    runs.push(i, 0, 1)
                        .map(|r| (r.first, r.first + r.bytes as u64)),
                );
            }
            spans.extend(runs.finish().map(|r| (r.first, r.first + r.bytes as u64)));
            let size = inode.mapping().size();
            let ranges: Vec<String> = spans
                .iter()
                .map(|&(start, end)| format!("{}..{}", start * ps, (end * ps).min(size)))
                .collect();
            let error = crate::error::errno(errno, "writing back");
            tracing::error!(
                path = %inode.path().display(),
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
