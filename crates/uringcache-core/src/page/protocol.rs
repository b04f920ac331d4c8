//! The page protocol: every change of a page's state bits, as a named transition on
//! [`PageDesc`], each the counterpart of a kernel function (cited on each).
//!
//! A transition is one atomic read-modify-write of the state word (a compare-and-swap loop
//! where the new word depends on the old one), so a decision and its effect cannot be split by
//! another party: "was it clean?" and "it is dirty now" are one step, and so are "unlock" and
//! "were there waiters?". Where a transition must publish something besides the bits (the errno
//! of a failed I/O), it is stored first and the bits published after it with release ordering,
//! so that whoever sees the bit sees the errno.
//!
//! Transitions that clear `LOCKED` or `WRITEBACK` return whether the page has waiters
//! (`WAITERS`); the caller must then wake the wait table's bucket. The
//! [`WaitTable`](crate::wait::WaitTable) has the combined forms (`unlock`, `end_read`,
//! `end_writeback`) that do both, which is what callers normally use.
//!
//! Who may call what (the rules each transition checks in debug builds):
//!
//! | transition | caller holds | kernel |
//! | --- | --- | --- |
//! | [`try_lock`](PageDesc::try_lock) | a pin | `folio_trylock` |
//! | [`unlock`](PageDesc::unlock) | `LOCKED` | `folio_unlock` |
//! | [`finish_read`](PageDesc::finish_read) | `LOCKED` (the read's) | `folio_end_read` |
//! | [`mark_uptodate`](PageDesc::mark_uptodate) | `LOCKED` | `folio_mark_uptodate` |
//! | [`mark_dirty`](PageDesc::mark_dirty) | `LOCKED` (a writer) | `folio_mark_dirty` |
//! | [`clear_dirty_for_io`](PageDesc::clear_dirty_for_io) | `LOCKED` | `folio_clear_dirty_for_io` |
//! | [`start_writeback`](PageDesc::start_writeback) | `LOCKED` | `folio_clear_dirty_for_io` + `folio_start_writeback` |
//! | [`end_writeback`](PageDesc::end_writeback) | `WRITEBACK` (the write's) | `folio_redirty_for_writepage` on failure, `folio_end_writeback` |
//! | [`mark_orphan`](PageDesc::mark_orphan) | the page just left its mapping | `page_cache_delete` |
//! | [`freeze_if_reclaimable`](PageDesc::freeze_if_reclaimable) | the mapping's shard lock (write) | `mapping_evict_folio`, `folio_ref_freeze` in `__remove_mapping` |
//! | [`is_mapped_at`](PageDesc::is_mapped_at) | `LOCKED` | the `folio->mapping != mapping` check after `folio_lock` |
//! | [`set_readahead`](PageDesc::set_readahead), [`set_prefetched`](PageDesc::set_prefetched) | `LOCKED` (a fresh page) | `folio_set_readahead` |
//! | [`test_clear_readahead`](PageDesc::test_clear_readahead), [`test_clear_prefetched`](PageDesc::test_clear_prefetched) | a pin | `folio_test_clear_readahead` |

use super::bits::*;
use super::{PageDesc, PageFlags};
use crate::sync::atomic::Ordering;

/// The errno recorded for a failed I/O: `errno`, or `EIO` when the failure came without one
/// (0). The one place where a missing errno becomes `EIO`.
#[inline]
fn io_errno(errno: i32) -> i32 {
    debug_assert!(errno >= 0, "negative errno {errno}");
    if errno == 0 {
        libc::EIO
    } else {
        errno
    }
}

impl PageDesc {
    /// The current state (`folio->flags`).
    #[inline]
    pub fn flags(&self) -> PageFlags {
        PageFlags(self.state.load(Ordering::Acquire))
    }

    /// One read-modify-write of the state word: `f` maps the old word to the new one, or to
    /// `None` to leave it as it is. Returns `Ok(old)` when the word was changed, `Err(old)`
    /// when `f` declined.
    #[inline]
    fn update(&self, mut f: impl FnMut(u32) -> Option<u32>) -> Result<u32, u32> {
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            let Some(new) = f(cur) else {
                return Err(cur);
            };
            match self
                .state
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(old) => return Ok(old),
                Err(now) => cur = now,
            }
        }
    }

    /// Stores the errno of a failed I/O (`EIO` for 0) before the bits that announce it.
    #[inline]
    fn record_errno(&self, errno: i32) {
        self.errno.store(io_errno(errno), Ordering::Release);
    }

    /// The state of a frame just taken from the pool: `LOCKED` and nothing else (the kernel's
    /// `__folio_set_locked` on a new folio before `filemap_add_folio`). Only for a frame nobody
    /// else can see.
    #[inline]
    pub(crate) fn init_locked(&self) {
        self.state.store(LOCKED, Ordering::Release);
    }

    /// Tries to take `LOCKED` (`folio_trylock`). Returns whether this call took it; the caller
    /// holds a pin, so the frame is not reused meanwhile.
    #[inline]
    pub fn try_lock(&self) -> bool {
        self.state.fetch_or(LOCKED, Ordering::Acquire) & LOCKED == 0
    }

    /// Releases `LOCKED` (`folio_unlock`). Returns whether the page has waiters: the caller
    /// must then wake them ([`WaitTable::unlock`](crate::wait::WaitTable::unlock) does both).
    #[inline]
    #[must_use = "waiters of the page must be woken when this returns true"]
    pub fn unlock(&self) -> bool {
        let old = self.state.fetch_and(!LOCKED, Ordering::AcqRel);
        debug_assert!(old & LOCKED != 0, "unlock of an unlocked page");
        old & WAITERS != 0
    }

    /// Ends the read that filled the page (`folio_end_read`), in one step: on `Ok`, the page
    /// becomes up to date (any error of an earlier read is forgotten); on `Err(errno)` it
    /// records `errno` (`EIO` for 0), sets `ERROR` and drops the readahead marks (a failed
    /// readahead page neither starts a window nor counts as a readahead hit). Either way
    /// `LOCKED` is released. Returns whether waiters must be woken.
    ///
    /// The caller holds `LOCKED` for the read, on a page that is not up to date.
    #[must_use = "waiters of the page must be woken when this returns true"]
    pub fn finish_read(&self, result: Result<(), i32>) -> bool {
        let (set, clear) = match result {
            Ok(()) => (UPTODATE, ERROR | LOCKED),
            Err(errno) => {
                self.record_errno(errno);
                (ERROR, LOCKED | READAHEAD | PREFETCHED)
            }
        };
        let old = self
            .update(|s| Some((s | set) & !clear))
            .unwrap_or_else(|old| old);
        debug_assert!(old & LOCKED != 0, "finish_read of an unlocked page");
        debug_assert!(old & UPTODATE == 0, "finish_read of an up-to-date page");
        old & WAITERS != 0
    }

    /// Marks the page up to date (`folio_mark_uptodate`): its lock holder has filled the frame
    /// (zeros past end of file, or a write's bytes over every byte). A pending error stays
    /// until [`mark_dirty`](Self::mark_dirty) or a successful I/O clears it.
    #[inline]
    pub fn mark_uptodate(&self) {
        let old = self.state.fetch_or(UPTODATE, Ordering::AcqRel);
        debug_assert!(old & LOCKED != 0, "mark_uptodate of an unlocked page");
    }

    /// A writer's new bytes are in the page (`folio_mark_dirty`): sets `DIRTY` and clears
    /// `ERROR` (the failed I/O it recorded was about other bytes). Returns `true` when the page
    /// went from clean to dirty: the caller then counts it, tags it and records
    /// [`set_dirtied_at`](Self::set_dirtied_at), exactly once per clean → dirty, before it
    /// unlocks.
    ///
    /// The caller holds `LOCKED` and the page is up to date.
    #[must_use = "a page that went clean -> dirty must be counted"]
    pub fn mark_dirty(&self) -> bool {
        let old = self
            .update(|s| Some((s | DIRTY) & !ERROR))
            .unwrap_or_else(|old| old);
        debug_assert!(old & UPTODATE != 0, "mark_dirty of a page not up to date");
        old & DIRTY == 0
    }

    /// Clears `DIRTY` without writing the page (`folio_clear_dirty_for_io`; in truncation, the
    /// kernel's `folio_cancel_dirty`). Returns whether it was dirty: the caller then uncounts
    /// and untags it. The caller holds `LOCKED` and the page is not under writeback.
    #[must_use = "a page that was dirty must be uncounted"]
    pub fn clear_dirty_for_io(&self) -> bool {
        let old = self.state.fetch_and(!DIRTY, Ordering::AcqRel);
        debug_assert!(old & LOCKED != 0, "clear_dirty_for_io of an unlocked page");
        old & DIRTY != 0
    }

    /// Starts writeback of a dirty page (`folio_clear_dirty_for_io` then
    /// `folio_start_writeback`, in one step): `DIRTY` becomes `WRITEBACK`. Returns whether the
    /// page was dirty; a clean page is left as it is. The caller holds `LOCKED` (so no other
    /// writeback can start) and moves the page's accounting from dirty to writeback before it
    /// unlocks.
    #[must_use = "a page put under writeback must be accounted and written"]
    pub fn start_writeback(&self) -> bool {
        let res = self.update(|s| (s & DIRTY != 0).then_some((s & !DIRTY) | WRITEBACK));
        let old = res.unwrap_or_else(|old| old);
        debug_assert!(old & LOCKED != 0, "start_writeback of an unlocked page");
        debug_assert!(
            res.is_err() || old & WRITEBACK == 0,
            "start_writeback of a page already under writeback"
        );
        res.is_ok()
    }

    /// Ends writeback of the page (`folio_end_writeback`). On success (`errno` is `None`) the
    /// page's error is forgotten. On failure the errno is recorded (`EIO` for 0) with `ERROR`,
    /// and the page is dirty again (`folio_redirty_for_writepage`) unless it has left its
    /// mapping: its bytes are still the only copy. Returns whether waiters must be woken.
    ///
    /// `account(redirtied)` runs after the failure's re-dirtying and *before* `WRITEBACK`
    /// clears; `redirtied` says whether the page went from clean to dirty (then, and only then,
    /// the caller counts and tags it as dirty). The caller also moves the page out of its
    /// writeback accounting there, so that whoever waits for the writeback to end (a
    /// truncation that then forgets the page's dirtiness, a sync that then checks the counts)
    /// finds the accounting settled. A page dirtied again while under writeback is counted by
    /// whoever dirtied it, never twice.
    ///
    /// The caller is the write's completion, which owns `WRITEBACK`.
    #[must_use = "waiters of the page must be woken when this returns true"]
    pub fn end_writeback(&self, errno: Option<i32>, account: impl FnOnce(bool)) -> bool {
        let old = match errno {
            None => {
                account(false);
                self.state.fetch_and(!(WRITEBACK | ERROR), Ordering::AcqRel)
            }
            Some(errno) => {
                self.record_errno(errno);
                let old = self
                    .update(|s| Some(s | ERROR | if s & ORPHAN == 0 { DIRTY } else { 0 }))
                    .unwrap_or_else(|old| old);
                account(old & (DIRTY | ORPHAN) == 0);
                self.state.fetch_and(!WRITEBACK, Ordering::AcqRel)
            }
        };
        debug_assert!(
            old & WRITEBACK != 0,
            "end_writeback of a page not under writeback"
        );
        old & WAITERS != 0
    }

    /// Marks a page that has just left its mapping (`page_cache_delete` setting
    /// `folio->mapping = NULL`): it lives on through its pins, and its frame is freed at the last
    /// unpin. A holder of the page that re-checks it ([`is_mapped_at`](Self::is_mapped_at))
    /// learns it is gone.
    #[inline]
    pub fn mark_orphan(&self) {
        self.state.fetch_or(ORPHAN, Ordering::AcqRel);
    }

    /// Whether the page is still page `index` of mapping `owner` (the `folio->mapping !=
    /// mapping` re-check after `folio_lock` in `__filemap_get_folio`: "has the page been
    /// truncated?"). Asked by a task that pinned a page, then waited for its lock: a
    /// truncation or an eviction may have taken it meanwhile. Under `LOCKED` the answer stays.
    #[inline]
    pub fn is_mapped_at(&self, owner: u32, index: u64) -> bool {
        self.owner() == owner && self.index() == index && !self.flags().is_orphan()
    }

    /// Marks the page whose reading starts the next readahead window (`folio_set_readahead`
    /// in `page_cache_ra_unbounded`).
    #[inline]
    pub fn set_readahead(&self) {
        self.state.fetch_or(READAHEAD, Ordering::AcqRel);
    }

    /// Takes the readahead mark (`folio_test_clear_readahead`): returns whether this call
    /// cleared it, so that one reader starts the next window. Callers test
    /// [`PageFlags::is_readahead`] on the flags they read first, so a page without the mark
    /// costs no write.
    #[inline]
    pub fn test_clear_readahead(&self) -> bool {
        self.state.fetch_and(!READAHEAD, Ordering::AcqRel) & READAHEAD != 0
    }

    /// Marks a page read ahead and not yet used (the cache's own flag, for the readahead hit
    /// count; the kernel counts no such hits).
    #[inline]
    pub fn set_prefetched(&self) {
        self.state.fetch_or(PREFETCHED, Ordering::AcqRel);
    }

    /// Takes the prefetched mark, as [`test_clear_readahead`](Self::test_clear_readahead):
    /// returns whether this call cleared it (the first use of a read-ahead page).
    #[inline]
    pub fn test_clear_prefetched(&self) -> bool {
        self.state.fetch_and(!PREFETCHED, Ordering::AcqRel) & PREFETCHED != 0
    }

    /// Sets `WAITERS` (`folio_set_waiters`), returning the state before: the wait table does
    /// this under its bucket's lock, then re-reads the bit it waits for in the same step.
    #[inline]
    pub(crate) fn set_waiters(&self) -> PageFlags {
        PageFlags(self.state.fetch_or(WAITERS, Ordering::AcqRel))
    }

    /// Clears `WAITERS` (`folio_clear_waiters`), under the bucket lock, after a wake-up.
    #[inline]
    pub(crate) fn clear_waiters(&self) {
        self.state.fetch_and(!WAITERS, Ordering::AcqRel);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A page as a read leaves it: in a mapping (owner 1, index 0), pinned by it, up to date.
    fn cached() -> PageDesc {
        let d = PageDesc::default();
        d.set_identity(1, 0);
        d.pin();
        d.init_locked();
        assert!(!d.finish_read(Ok(())));
        d
    }

    fn locked() -> PageDesc {
        let d = cached();
        assert!(d.try_lock());
        d
    }

    #[test]
    fn lock_is_exclusive_and_unlock_reports_waiters() {
        let d = PageDesc::default();
        assert!(d.try_lock());
        assert!(!d.try_lock());
        assert!(!d.unlock());
        assert!(!d.flags().is_locked());
        assert!(d.try_lock());
        d.set_waiters();
        assert!(d.unlock());
        d.clear_waiters();
        assert!(!d.flags().has_waiters());
    }

    #[test]
    fn finish_read_ok_makes_the_page_up_to_date_and_forgets_an_old_error() {
        let d = PageDesc::default();
        d.init_locked();
        assert!(!d.finish_read(Err(libc::EIO)));
        assert!(d.flags().is_read_failed());
        assert!(d.try_lock(), "a failed page is retried under the lock");
        assert!(!d.finish_read(Ok(())));
        let f = d.flags();
        assert!(f.is_uptodate() && !f.is_error() && !f.is_locked());
        d.init_locked();
        d.set_waiters();
        assert!(d.finish_read(Ok(())), "waiters are reported");
    }

    #[test]
    fn finish_read_err_records_the_errno_and_drops_the_readahead_marks() {
        let d = PageDesc::default();
        d.init_locked();
        d.set_readahead();
        d.set_prefetched();
        assert!(!d.finish_read(Err(libc::ENOSPC)));
        let f = d.flags();
        assert!(f.is_read_failed() && !f.is_locked());
        assert!(!f.is_readahead() && !f.is_prefetched());
        assert_eq!(d.errno(), libc::ENOSPC);
        d.init_locked();
        assert!(!d.finish_read(Err(0)));
        assert_eq!(d.errno(), libc::EIO, "a failure without an errno is EIO");
    }

    #[test]
    fn mark_uptodate_keeps_the_lock_and_the_error() {
        let d = PageDesc::default();
        d.init_locked();
        assert!(!d.finish_read(Err(libc::EIO)));
        assert!(d.try_lock());
        d.mark_uptodate();
        let f = d.flags();
        assert!(f.is_uptodate() && f.is_locked() && f.is_error());
    }

    #[test]
    fn mark_dirty_reports_clean_to_dirty_once_and_clears_the_error() {
        let d = locked();
        assert!(d.mark_dirty());
        assert!(!d.mark_dirty(), "already dirty: counted once");
        assert!(d.flags().is_dirty());
        assert!(d.start_writeback());
        assert!(!d.end_writeback(Some(libc::EIO), |_| {}));
        assert!(d.flags().is_error());
        assert!(!d.mark_dirty(), "a failed writeback left it dirty");
        assert!(!d.flags().is_error(), "new bytes: the old error is moot");
    }

    #[test]
    fn clear_dirty_for_io_reports_whether_it_was_dirty() {
        let d = locked();
        assert!(!d.clear_dirty_for_io());
        assert!(d.mark_dirty());
        assert!(d.clear_dirty_for_io());
        assert!(!d.flags().is_dirty());
        assert!(!d.clear_dirty_for_io());
    }

    #[test]
    fn start_writeback_moves_dirty_to_writeback() {
        let d = locked();
        assert!(!d.start_writeback(), "a clean page is not written");
        assert!(!d.flags().is_writeback());
        assert!(d.mark_dirty());
        assert!(d.start_writeback());
        let f = d.flags();
        assert!(f.is_writeback() && !f.is_dirty() && f.is_locked());
    }

    #[test]
    fn end_writeback_success_clears_writeback_and_error() {
        let d = locked();
        assert!(d.mark_dirty());
        assert!(d.start_writeback());
        assert!(!d.unlock());
        let mut told = None;
        assert!(!d.end_writeback(None, |redirtied| told = Some(redirtied)));
        assert_eq!(told, Some(false), "accounted, not redirtied");
        let f = d.flags();
        assert!(!f.is_writeback() && !f.is_dirty() && !f.is_error());
    }

    #[test]
    fn end_writeback_failure_redirties_once_and_records_the_errno() {
        let d = locked();
        assert!(d.mark_dirty());
        assert!(d.start_writeback());
        assert!(!d.unlock());
        d.set_waiters();
        let mut redirtied = 0;
        assert!(
            d.end_writeback(Some(0), |r| redirtied += r as u32),
            "waiters reported"
        );
        d.clear_waiters(); // the wait table's wake
        assert_eq!(redirtied, 1);
        let f = d.flags();
        assert!(f.is_dirty() && f.is_error() && !f.is_writeback());
        assert_eq!(d.errno(), libc::EIO, "errno 0 is EIO");

        // Dirtied again by a writer during the writeback: the writer counted it.
        assert!(d.try_lock());
        assert!(d.start_writeback());
        assert!(d.mark_dirty(), "the writer's clean -> dirty");
        assert!(!d.unlock());
        assert!(!d.end_writeback(Some(libc::ENOSPC), |r| redirtied += r as u32));
        assert_eq!(redirtied, 1, "not counted a second time");
        assert!(d.flags().is_dirty());
        assert_eq!(d.errno(), libc::ENOSPC);
    }

    #[test]
    fn end_writeback_failure_of_an_orphan_leaves_it_clean() {
        let d = locked();
        assert!(d.mark_dirty());
        assert!(d.start_writeback());
        assert!(!d.unlock());
        d.mark_orphan();
        assert!(!d.end_writeback(Some(libc::EIO), |r| assert!(
            !r,
            "an orphan is not redirtied"
        )));
        let f = d.flags();
        assert!(!f.is_dirty() && f.is_error() && f.is_orphan() && !f.is_writeback());
    }

    #[test]
    fn freezes_only_with_the_mappings_pin_alone_and_idle() {
        let d = cached();
        d.pin();
        assert!(!d.freeze_if_reclaimable(), "a user's pin");
        d.unpin();
        assert!(d.try_lock());
        assert!(!d.freeze_if_reclaimable(), "locked");
        assert_eq!(d.pins(), 1, "a refused freeze gives the pin back");
        assert!(d.mark_dirty());
        assert!(!d.unlock());
        assert!(!d.freeze_if_reclaimable(), "dirty");
        assert!(d.try_lock());
        assert!(d.start_writeback());
        assert!(!d.unlock());
        assert!(!d.freeze_if_reclaimable(), "under writeback");
        assert!(!d.end_writeback(None, |_| {}));
        assert!(d.freeze_if_reclaimable());
        assert_eq!(d.pins(), 0, "frozen: the mapping's pin is gone");
        assert!(!d.try_pin(), "a frozen page is never pinned");
        assert!(!d.freeze_if_reclaimable(), "not in a mapping (no pin)");
    }

    #[test]
    fn user_pins_count_within_the_pins() {
        let d = cached();
        d.pin();
        d.mark_user_pin();
        assert_eq!((d.pins(), d.user_pins()), (2, 1));
        assert!(d.try_pin());
        d.mark_user_pin();
        assert_eq!((d.pins(), d.user_pins()), (3, 2));
        assert!(!d.freeze_if_reclaimable());
        assert_eq!(d.unpin_user(), 2);
        assert_eq!(d.unpin_user(), 1);
        assert_eq!(d.user_pins(), 0);
        assert!(d.freeze_if_reclaimable());
    }

    #[test]
    fn optimistic_reads_see_reuse() {
        let d = cached();
        let (g, f) = d.optimistic_at(1, 0).unwrap();
        assert!(f.is_uptodate());
        assert!(d.optimistic_at(1, 1).is_none() && d.optimistic_at(2, 0).is_none());
        assert!(d.unchanged_since(g));
        d.mark_orphan();
        assert!(
            d.optimistic_at(1, 0).is_none(),
            "an orphan is not looked at"
        );
        d.release();
        assert!(
            !d.unchanged_since(g),
            "a released frame has a new generation"
        );
        d.set_identity(1, 0);
        assert_ne!(d.optimistic_at(1, 0).unwrap().0, g);
    }

    #[test]
    fn mapped_at_fails_after_orphaning_or_reuse() {
        let d = cached();
        assert!(d.is_mapped_at(1, 0));
        assert!(!d.is_mapped_at(2, 0));
        assert!(!d.is_mapped_at(1, 1));
        d.mark_orphan();
        assert!(!d.is_mapped_at(1, 0));
        d.release();
        d.set_identity(1, 0);
        assert!(d.is_mapped_at(1, 0), "a fresh page at the same place");
    }

    #[test]
    fn readahead_marks_are_taken_once() {
        let d = PageDesc::default();
        d.init_locked();
        d.set_readahead();
        d.set_prefetched();
        assert!(!d.finish_read(Ok(())));
        let f = d.flags();
        assert!(f.is_readahead() && f.is_prefetched());
        assert!(d.test_clear_readahead());
        assert!(!d.test_clear_readahead());
        assert!(d.test_clear_prefetched());
        assert!(!d.test_clear_prefetched());
        assert!(d.flags().is_uptodate());
    }
}
