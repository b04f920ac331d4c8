//! The per-cache writeback thread (the kernel's flusher, `wb_workfn`), its passes, and what
//! happens to files and pages when handles go away: closed files let go of, pages that can
//! never be written given up on once nobody is left to tell. See the parent module.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use uringcache_core::page::PageState;

use crate::cache::CacheInner;
use crate::inode::Inode;
use crate::stats::Counter;
use crate::util::block_on;

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
        self.report_stuck_waits();
        if orphaned {
            self.inodes().clear_idle();
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
        self.inodes().prune_idle(self.now_ms());
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
