//! The cache-wide writeback state, the kernel's `struct bdi_writeback` with the node's
//! `NR_FILE_DIRTY` / `NR_WRITEBACK` counters: how many pages are dirty and under writeback,
//! the dirty thresholds and the throttling of writers against them, the list of inodes with
//! work for the flusher (`b_dirty`), the flusher thread, and the bookkeeping of its passes.
//!
//! [`WritebackState`] owns all of it; its fields are private and change only through the named
//! methods below, each called at one point of the page protocol (core `page`):
//!
//! | method | called when | kernel |
//! | --- | --- | --- |
//! | [`page_dirtied`](WritebackState::page_dirtied) | `PageDesc::mark_dirty` returned `true`, or `end_writeback` re-dirtied a page | `folio_account_dirtied` |
//! | [`dirty_cancelled`](WritebackState::dirty_cancelled) | `PageDesc::clear_dirty_for_io` returned `true` (truncation, giving up) | `folio_account_cleaned` |
//! | [`writeback_started`](WritebackState::writeback_started) | `PageDesc::start_writeback` returned `true` | `__folio_start_writeback` |
//! | [`writeback_ended`](WritebackState::writeback_ended) | in `end_writeback`'s accounting, before `WRITEBACK` clears | `__folio_end_writeback` |
//!
//! so that the dirty count is the number of pages whose `DIRTY` bit is set, and the writeback
//! count the number with `WRITEBACK` set, whenever no transition is half way (each counter
//! changes under the page lock or, for `writeback_ended`, under the page's `WRITEBACK`, right
//! after the bit). Tests check it with [`CacheInner::audit`](super::CacheInner) walking the
//! page table; the counters also refuse (in debug builds) to go below zero.
//!
//! # Locks
//!
//! The dirty-inode list's mutex is a leaf: `Arc`s are cloned out before any inode is called
//! into, and dropped after it is released. The writeback thread's command mutex (in
//! `writeback_thread`) is a leaf too. The counters are atomics; the dirty event is core's `Event`.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use uringcache_core::wait::Event;
use uringcache_core::writeback::{DirtyLimits, Throttle};

use super::writeback_thread::WritebackThread;
use crate::inode::Inode;
use crate::stats::{Counter, Counters};
use crate::util::block_on;

/// The cache-wide writeback state (`struct bdi_writeback`); see the module docs.
pub(crate) struct WritebackState {
    /// Background threshold and hard limit on dirty pages.
    limits: DirtyLimits,
    /// Dirty pages in the whole cache.
    nr_dirty: AtomicUsize,
    /// Pages under writeback in the whole cache.
    nr_writeback: AtomicUsize,
    /// Notified when writeback completes (the dirty count may have dropped, syncs may go on)
    /// and at the end of each flusher pass.
    dirty_event: Event,
    /// Inodes with dirty or writeback pages, held strongly so that their pages are written
    /// even after the last handle is dropped (`bdi->wb.b_dirty`).
    dirty_inodes: Mutex<HashMap<u32, Arc<Inode>>>,
    /// The writeback thread.
    thread: WritebackThread,
    /// WritebackThread passes completed, and pages the last one submitted: a throttled writer that
    /// sees a pass end having submitted nothing (every dirty page locked, say by its own
    /// `PageMut`s) goes on past the limit instead of waiting for writeback that cannot come.
    passes: AtomicU64,
    /// The flusher has been stopped (the cache shut down): throttled writers stop waiting.
    stopped: AtomicBool,
    last_pass_pages: AtomicUsize,
    /// Writeback passes in a row, with no user handle left, that ended with pages still dirty.
    orphan_failed_passes: AtomicU32,
    /// A page dirty for this long is written by the next timed pass (`dirty_expire_centisecs`).
    dirty_expire_ms: u64,
}

impl WritebackState {
    pub(super) fn new(limits: DirtyLimits, interval: Duration, dirty_expire: Duration) -> Self {
        WritebackState {
            limits,
            nr_dirty: AtomicUsize::new(0),
            nr_writeback: AtomicUsize::new(0),
            dirty_event: Event::new(),
            dirty_inodes: Mutex::new(HashMap::new()),
            thread: WritebackThread::new(interval),
            passes: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            last_pass_pages: AtomicUsize::new(0),
            orphan_failed_passes: AtomicU32::new(0),
            dirty_expire_ms: dirty_expire.as_millis() as u64,
        }
    }

    /// Dirty pages in the cache (`NR_FILE_DIRTY`).
    pub(crate) fn nr_dirty(&self) -> usize {
        self.nr_dirty.load(Ordering::Acquire)
    }

    /// Pages under writeback in the cache (`NR_WRITEBACK`).
    pub(crate) fn nr_writeback(&self) -> usize {
        self.nr_writeback.load(Ordering::Acquire)
    }

    /// Counts a page that went clean → dirty (`folio_account_dirtied`): exactly when
    /// `PageDesc::mark_dirty` returned `true` or `end_writeback` re-dirtied the page. Above
    /// the background threshold the flusher is kicked.
    pub(crate) fn page_dirtied(&self) {
        let dirty = self.nr_dirty.fetch_add(1, Ordering::AcqRel) + 1;
        if dirty > self.limits.background {
            self.thread.kick(false);
        }
    }

    /// Uncounts a dirty page whose dirtiness was forgotten without writing it
    /// (`folio_account_cleaned`): exactly when `PageDesc::clear_dirty_for_io` returned `true`.
    pub(crate) fn dirty_cancelled(&self) {
        let was = self.nr_dirty.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(was > 0, "dirty count below zero");
    }

    /// Moves `n` pages from dirty to under writeback (the accounting of
    /// `__folio_start_writeback`): exactly when `PageDesc::start_writeback` returned `true`.
    pub(crate) fn writeback_started(&self, n: usize) {
        let was = self.nr_dirty.fetch_sub(n, Ordering::AcqRel);
        debug_assert!(was >= n, "dirty count below zero");
        self.nr_writeback.fetch_add(n, Ordering::AcqRel);
    }

    /// Uncounts `n` pages whose writeback ended (`__folio_end_writeback`), in the accounting
    /// step of `PageDesc::end_writeback` (before `WRITEBACK` clears). A failed page was
    /// counted dirty again just before, by [`page_dirtied`](Self::page_dirtied).
    pub(crate) fn writeback_ended(&self, n: usize) {
        let was = self.nr_writeback.fetch_sub(n, Ordering::AcqRel);
        debug_assert!(was >= n, "writeback count below zero");
    }

    /// Tells throttled writers and waiting syncs that writeback made progress (a write
    /// completed, a truncation dropped dirty pages).
    pub(crate) fn notify_progress(&self) {
        self.dirty_event.notify_all();
    }

    /// Waits while too many pages are dirty (`balance_dirty_pages`): above the background
    /// threshold the flusher is kicked; at the limit the writer waits for writeback to bring
    /// the count down, or for a pass that could write nothing (then it goes on past the limit,
    /// as the kernel lets a paused writer go after its pause). Each wait counts in
    /// `throttle_waits`.
    pub(crate) async fn throttle(&self, counters: &Counters) {
        loop {
            match self.limits.throttle(self.nr_dirty()) {
                Throttle::Free => return,
                Throttle::Background => {
                    self.thread.kick(false);
                    return;
                }
                Throttle::Wait => {
                    let ticket = self.dirty_event.listen();
                    if self.stopped.load(Ordering::Acquire) {
                        // The cache is shut down: no writeback will come. The write itself
                        // goes on (and fails if it needs the device).
                        return;
                    }
                    let passes = self.passes.load(Ordering::Acquire);
                    self.thread.kick(true);
                    if self.limits.throttle(self.nr_dirty()) != Throttle::Wait {
                        return;
                    }
                    counters.add(Counter::ThrottleWaits, 1);
                    tracing::debug!(
                        dirty = self.nr_dirty.load(Ordering::Relaxed),
                        limit = self.limits.limit,
                        "writer throttled at the dirty limit"
                    );
                    ticket.await;
                    if self.passes.load(Ordering::Acquire) > passes
                        && self.last_pass_pages.load(Ordering::Acquire) == 0
                        && self.nr_writeback() == 0
                    {
                        // A pass ran since we asked and could write nothing (the dirty pages
                        // are locked, e.g. by this task's own PageMuts): waiting longer cannot
                        // help.
                        tracing::debug!(
                            "writeback cannot make progress; writer goes past the dirty limit"
                        );
                        return;
                    }
                }
            }
        }
    }

    /// Starts the flusher thread; see [`WritebackThread::spawn`].
    pub(super) fn spawn_thread(
        &self,
        pass: impl FnMut(bool) -> bool + Send + 'static,
    ) -> io::Result<()> {
        self.thread.spawn(pass)
    }

    /// Wakes the flusher for a pass now; `all` writes every dirty page, not only expired ones
    /// (`wb_start_background_writeback`, `wakeup_flusher_threads`).
    pub(crate) fn kick(&self, all: bool) {
        self.thread.kick(all);
    }

    /// Stops the flusher after its current pass, and releases the writers throttled at the
    /// dirty limit: no pass will come to free them.
    pub(super) fn stop_thread(&self) {
        self.stopped.store(true, Ordering::Release);
        self.thread.stop();
        self.dirty_event.notify_all();
    }

    /// Puts `inode` in the list of inodes with work for the flusher (the list half of
    /// `__mark_inode_dirty`). The caller makes sure it is not listed already.
    pub(crate) fn add_dirty_inode(&self, inode: &Arc<Inode>) {
        self.dirty_inodes
            .lock()
            .insert(inode.mapping().id(), inode.clone());
    }

    /// The inodes with work for the flusher, cloned out of the list.
    pub(super) fn dirty_inodes(&self) -> Vec<Arc<Inode>> {
        self.dirty_inodes.lock().values().cloned().collect()
    }

    /// Takes the listed inodes that have no dirty or writeback page out of the list
    /// (`inode_sync_complete` / the `b_dirty` pruning) and returns them, to be dropped or let
    /// go of after the lock.
    pub(super) fn take_clean_inodes(&self) -> Vec<Arc<Inode>> {
        let mut gone = Vec::new();
        self.dirty_inodes.lock().retain(|_, inode| {
            // Unlisted first: a page dirtied from here on lists the inode again.
            inode.set_in_dirty_list(false);
            let clean = inode.is_clean();
            if clean {
                gone.push(inode.clone());
            } else {
                inode.set_in_dirty_list(true);
            }
            !clean
        });
        gone
    }

    /// Empties the list (the cache is shut down: nothing will be written any more).
    pub(super) fn take_dirty_inodes(&self) -> Vec<Arc<Inode>> {
        self.dirty_inodes.lock().drain().map(|(_, i)| i).collect()
    }

    /// Whether more pages are dirty than the background threshold.
    pub(super) fn over_background(&self) -> bool {
        self.nr_dirty() > self.limits.background
    }

    /// The `dirtied_at` at or before which a page has expired at `now_ms`.
    pub(super) fn expired_before(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.dirty_expire_ms)
    }

    /// Blocks the flusher thread until at most `n` pages are under writeback.
    pub(super) fn wait_writeback_at_most(&self, n: usize) {
        while self.nr_writeback() > n {
            let ticket = self.dirty_event.listen();
            if self.nr_writeback() <= n {
                break;
            }
            block_on(ticket);
        }
    }

    /// Records a pass, with no user handle left, that ended with pages still dirty; returns
    /// how many such passes came in a row.
    pub(super) fn orphan_pass_failed(&self) -> u32 {
        self.orphan_failed_passes.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// A pass ran with user handles alive: the count of failed orphan passes starts over.
    pub(super) fn orphan_passes_reset(&self) {
        self.orphan_failed_passes.store(0, Ordering::Release);
    }

    /// Makes the next timed pass write every dirty page, without waking the flusher now.
    pub(super) fn kick_later(&self) {
        self.thread.kick_later();
    }

    /// Records the end of a pass that submitted `pages` pages, and wakes throttled writers to
    /// look again.
    pub(super) fn pass_done(&self, pages: usize) {
        self.last_pass_pages.store(pages, Ordering::Release);
        self.passes.fetch_add(1, Ordering::AcqRel);
        self.dirty_event.notify_all();
    }
}

#[cfg(test)]
impl super::CacheInner {
    /// Checks the writeback counters against the pages (tests, at a point where no
    /// transition is half way): the dirty count equals the pages marked dirty in the page
    /// table and the pages tagged dirty in the mappings, and the writeback count the pages
    /// under writeback.
    pub(crate) fn audit(&self) -> Result<(), String> {
        let pages = self.pool().pages();
        let (mut dirty, mut writeback) = (0, 0);
        for frame in 0..pages.len() as u32 {
            let f = pages.get(frame).flags();
            dirty += f.is_dirty() as usize;
            writeback += f.is_writeback() as usize;
        }
        let tagged: usize = self
            .open_inodes()
            .iter()
            .map(|i| i.mapping().nr_dirty())
            .sum();
        let wb = self.writeback();
        if (wb.nr_dirty(), wb.nr_writeback()) != (dirty, writeback) || tagged != dirty {
            return Err(format!(
                "counted {} dirty and {} under writeback; the pages have {dirty} dirty \
                 ({tagged} tagged) and {writeback} under writeback",
                wb.nr_dirty(),
                wb.nr_writeback()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use uringcache_uring::fault::{Fault, FaultSlot, OpKind};
    use uringcache_uring::FaultBackend;

    use crate::{Backend, Cache, OpenOptions};

    /// A cache whose flusher never runs by itself during a test (an hour between passes,
    /// thresholds out of reach), over a fault-injecting thread-pool backend, so that the
    /// counters are still between the test's steps.
    fn quiet_cache() -> (Cache, Arc<FaultBackend>) {
        let faults = FaultSlot::new();
        let cache = Cache::builder()
            .memory_limit(64 * 4096)
            .backend(Backend::Threads)
            .dirty_background_ratio(0.9)
            .dirty_ratio(0.95)
            .writeback_interval(Duration::from_secs(3600))
            .dirty_expire(Duration::from_secs(3600))
            .wrap_backend(faults.layer())
            .build()
            .unwrap();
        let fault = faults.get();
        (cache, fault)
    }

    fn audit(cache: &Cache, step: &str) {
        if let Err(e) = cache.inner().audit() {
            panic!("after {step}: {e}");
        }
    }

    /// Every way a page becomes dirty or stops being dirty, each followed by the audit: the
    /// dirty count always equals the pages marked dirty (and tagged), the writeback count the
    /// pages under writeback.
    #[test]
    fn dirty_count_matches_the_pages_through_every_transition() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            std::fs::write(&path, vec![7u8; 10 * 4096]).unwrap();
            let (cache, fault) = quiet_cache();
            let rw = OpenOptions::new().read(true).write(true).clone();
            let file = cache.open(&path, &rw).await.unwrap();
            let dirty = |n: usize| assert_eq!(cache.stats().dirty_pages, n);

            file.write_all_at(&[1; 4096], 0).await.unwrap(); // whole page, no read
            file.write_all_at(b"partial", 4096 + 10).await.unwrap(); // read-modify-write
            file.write_all_at(b"again", 4096 + 20).await.unwrap(); // dirty already
            audit(&cache, "writes");
            dirty(2);

            drop(file.page_mut(2).await.unwrap()); // dirtied at drop
            file.page_mut(3).await.unwrap().discard(); // not dirtied
            audit(&cache, "page handles");
            dirty(3);

            file.write_all_at(&[2; 100], 20 * 4096).await.unwrap(); // past end of file
            audit(&cache, "a write past the end");
            dirty(4);

            // A failing device: the pages stay dirty, each counted once.
            fault.inject(OpKind::Write, Fault::Fail(libc::EIO), None);
            assert!(file.sync_all().await.is_err());
            audit(&cache, "a failed sync");
            dirty(4);
            assert!(file.sync_all().await.is_err());
            audit(&cache, "a second failed sync");
            dirty(4);

            // A new write over a page that failed, then truncation of dirty pages.
            file.write_all_at(b"over", 0).await.unwrap();
            audit(&cache, "a write over a failed page");
            file.set_len(3 * 4096 + 5).await.unwrap();
            audit(&cache, "truncation");
            dirty(3);

            fault.clear();
            file.sync_all().await.unwrap();
            audit(&cache, "a sync");
            dirty(0);

            // A direct write over cached pages, dirty and clean.
            file.write_all_at(b"x", 0).await.unwrap();
            file.write_direct_at(&[3; 8192], 0).await.unwrap();
            audit(&cache, "a direct write");
            dirty(0);
            assert_eq!(cache.stats().writeback_pages, 0);
        });
    }
}
