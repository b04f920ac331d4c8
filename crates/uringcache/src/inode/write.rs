//! The buffered write path (`generic_perform_write` with `write_begin` / `write_end`),
//! truncation (`truncate_inode_pages_range`, `truncate_setsize`) and invalidation
//! (`invalidate_mapping_pages`).
//!
//! # Writing one page
//!
//! 1. Throttle (`balance_dirty_pages`): above the background threshold the flusher is kicked;
//!    at the dirty limit the writer waits for writeback to bring the count down.
//! 2. Find the page. A whole-page overwrite, or a page wholly past end of file, needs no read:
//!    a fresh frame is taken (zeroed where the write does not cover it). A partial write of a
//!    page holding file data goes through the read path first (read-modify-write), with its
//!    one-read-per-page rule.
//! 3. Lock the page ([`Pinned::lock`], `folio_lock`), check it still belongs to this file at
//!    this index (`PageDesc::is_mapped_at`: a truncation may have removed it meanwhile), wait
//!    for any writeback of it to finish ([`LockedPage::wait_stable`], stable pages), copy the
//!    bytes in, mark it up to date and dirty (`PageDesc::mark_dirty`, accounted once per
//!    clean → dirty), extend `len()`, unlock.
//!
//! A write future dropped half way leaves every page it touched unlocked: the lock is held by a
//! guard ([`LockedPage`], which owns the page's pin as a [`Pinned`]). Bytes already copied stay
//! (as with a short `write(2)`).

use std::io;
use std::mem::ManuallyDrop;
use std::sync::Arc;

use uringcache_core::page::{FrameId, PageDesc};
use uringcache_core::readahead::Window;

use crate::inode::{Inode, Pinned, ReadaheadSource};

/// Reads for read-modify-write: exactly the page asked, no readahead.
struct NoReadahead;

impl ReadaheadSource for NoReadahead {
    fn sync_window(&self, _: &Inode, index: u64, _: u64) -> Window {
        Window {
            start: index,
            size: 1,
            async_size: 0,
        }
    }

    fn async_window(&self, _: &Inode, _: u64, _: u64) -> Option<Window> {
        None
    }

    fn on_error(&self) {}
}

/// A page locked by this task, holding its pin as a [`Pinned`]; dropping it unlocks the page
/// and wakes its waiters (`folio_unlock`), then the pin goes with the `Pinned`.
pub(crate) struct LockedPage<'a> {
    page: Pinned<'a>,
}

impl<'a> Pinned<'a> {
    /// Locks the page (`folio_lock`), waiting in the wait table while another task holds it;
    /// the pin moves into the returned guard. A wait on a page a page handle holds is
    /// registered for the stuck-wait report (`CacheInner::wait_unlocked`).
    pub(crate) async fn lock(self) -> LockedPage<'a> {
        let desc = self.desc();
        while !desc.try_lock() {
            let inode = self.inode;
            inode
                .cache
                .wait_unlocked(
                    desc,
                    self.frame,
                    "a write or truncation",
                    &inode.path,
                    desc.index(),
                )
                .await;
        }
        LockedPage { page: self }
    }
}

impl<'a> LockedPage<'a> {
    /// Wraps a fresh frame from the pool (pinned and `LOCKED` by `CacheInner::alloc`) that the
    /// caller has just published in `inode`'s mapping.
    fn fresh(inode: &'a Inode, frame: FrameId) -> Self {
        LockedPage {
            page: Pinned { inode, frame },
        }
    }

    pub(crate) fn desc(&self) -> &PageDesc {
        self.page.desc()
    }

    /// Waits until the page is not under writeback (`folio_wait_stable`): writeback starts
    /// only under the page lock, which this guard holds, so it stays over and the bytes may
    /// change without the device reading them half way.
    pub(crate) async fn wait_stable(&self) {
        let waits = self.page.inode.cache.waits();
        while self.desc().flags().is_writeback() {
            waits.wait_writeback(self.desc(), self.page.frame).await;
        }
    }

    /// Hands the lock and the pin over to a page handle: the returned frame carries both, and
    /// its new owner ([`PageMut`](crate::PageMut), whose drop unlocks, wakes and unpins) must
    /// release them. Called only by `PageMut::new`.
    pub(crate) fn hand_over(self) -> FrameId {
        // Neither this guard's unlock nor its `Pinned`'s unpin runs: both now belong to the
        // handle the frame is given to.
        let this = ManuallyDrop::new(self);
        this.page.frame
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: this task holds the page's LOCKED bit and has waited out its writeback, so
        // no reader fills it and no write reads it while the slice is used; readers of an
        // up-to-date page may copy concurrently (the kernel's semantics for racing read/write).
        unsafe { self.page.inode.cache.arena().frame_mut(self.page.frame) }
    }
}

impl Drop for LockedPage<'_> {
    fn drop(&mut self) {
        // The unlock; the pin is dropped by `self.page` right after.
        let cache = &self.page.inode.cache;
        cache.waits().unlock(self.desc(), self.page.frame);
    }
}

impl Inode {
    /// Locks the page in `frame` (`lock_page`), taking over the pin the caller holds.
    pub(crate) async fn lock_page(&self, frame: FrameId) -> LockedPage<'_> {
        Pinned { inode: self, frame }.lock().await
    }

    /// Waits while too many pages are dirty (`balance_dirty_pages`, see
    /// `WritebackState::throttle`). It runs before the page is locked, so the pages a waiting
    /// task holds locked (through [`PageMut`](crate::PageMut) handles) were fewer than the
    /// limit when it took them, and writeback of the others can always bring the count down.
    async fn balance_dirty(&self) {
        let cache = &self.cache;
        cache.writeback().throttle(cache.counters()).await;
    }

    /// Writes `buf` at byte `offset` into the cache (`generic_perform_write`). All of it, or an
    /// error; the caller has checked the range.
    pub(crate) async fn write_at(self: &Arc<Self>, buf: &[u8], offset: u64) -> io::Result<()> {
        let ps = self.cache.page_size() as u64;
        let mut pos = offset;
        let end = offset + buf.len() as u64;
        self.check_fits(end)?;
        let _size = self.size_lock.shared().await;
        while pos < end {
            let index = pos >> self.cache.page_shift();
            let in_page = (pos & (ps - 1)) as usize;
            let n = (ps - in_page as u64).min(end - pos) as usize;
            let from = (pos - offset) as usize;
            self.write_page(index, in_page, &buf[from..from + n])
                .await?;
            pos += n as u64;
        }
        Ok(())
    }

    /// Writes `data` into page `index` at `in_page` (`write_begin` + copy + `write_end`).
    async fn write_page(
        self: &Arc<Self>,
        index: u64,
        in_page: usize,
        data: &[u8],
    ) -> io::Result<()> {
        let whole = in_page == 0 && data.len() == self.cache.page_size();
        let mut page = self.lock_for_write(index, whole, &NoReadahead).await?;
        page.bytes_mut()[in_page..in_page + data.len()].copy_from_slice(data);
        // A fresh page of a whole-page overwrite becomes readable only now (`write_end`).
        page.desc().mark_uptodate();
        self.mark_page_dirty(page.desc(), index);
        self.mapping
            .extend_size((index << self.cache.page_shift()) + (in_page + data.len()) as u64);
        Ok(())
    }

    /// Finds page `index`, locks it and makes it ready for new bytes (`write_begin`): after
    /// throttling, the page is in the mapping at `index`, locked, up to date and not under
    /// writeback. With `whole` (the caller overwrites every byte) nothing is read, and a fresh
    /// page is left not up to date for the caller to mark once its copy is done; a page wholly
    /// past end of file is zeroed. Otherwise the page's bytes are read first through `ra`
    /// (read-modify-write).
    pub(crate) async fn lock_for_write(
        self: &Arc<Self>,
        index: u64,
        whole: bool,
        ra: &dyn ReadaheadSource,
    ) -> io::Result<LockedPage<'_>> {
        let cache = &self.cache;
        let page_start = index << cache.page_shift();
        loop {
            self.balance_dirty().await;
            let beyond_eof = page_start >= self.mapping.size();
            let mut page = match self.mapping.lookup(index, cache.pool().pages()) {
                Some(frame) => self.lock_page(frame).await,
                None if whole || beyond_eof => {
                    // No file data to keep: a fresh frame, locked from the start.
                    let frame = cache.alloc().await?;
                    match self.mapping.insert(index, frame, cache.pool().pages()) {
                        Ok(()) => {
                            cache.pool().lru_add(frame, self.mapping.id(), index);
                            LockedPage::fresh(self, frame)
                        }
                        Err(existing) => {
                            // Another task created it first: use theirs. Ours was never
                            // published, so nobody waits on it.
                            cache.waits().unlock(cache.pool().pages().get(frame), frame);
                            cache.put(frame);
                            self.lock_page(existing).await
                        }
                    }
                }
                None => self.get_page(index, 1, ra).await?.lock().await,
            };
            let desc = page.desc();
            if !desc.is_mapped_at(self.mapping.id(), index) {
                continue; // truncated or evicted while we waited for the lock: start over
            }
            if !desc.flags().is_uptodate() {
                if whole {
                    // Every byte is about to be overwritten. The page stays not up to date
                    // until the caller's copy is done, so a reader waits for the lock instead
                    // of seeing the frame's old bytes (or zeros) in place of file data.
                } else if page_start >= self.mapping.size() {
                    page.bytes_mut().fill(0);
                    page.desc().mark_uptodate();
                } else {
                    // A page of file data whose read failed or never ran: read it (the read
                    // path retries failed pages) and start over.
                    drop(page);
                    drop(self.get_page(index, 1, ra).await?);
                    continue;
                }
            }
            page.wait_stable().await;
            return Ok(page);
        }
    }

    /// Drops every cached page from page `first` on (`truncate_inode_pages_range`): waits for
    /// their locks and writeback, forgets their dirtiness, and removes them; a page still
    /// pinned by a reader keeps its frame until the last unpin.
    pub(crate) async fn truncate_pages(self: &Arc<Self>, first: u64) {
        let cache = &self.cache;
        let pages = cache.pool().pages();
        for (index, _) in self.mapping.range(first, u64::MAX) {
            let Some(frame) = self.mapping.lookup(index, pages) else {
                continue;
            };
            let page = self.lock_page(frame).await;
            page.wait_stable().await;
            let desc = page.desc();
            if self.mapping.remove_if(index, frame, pages, |_| true) {
                // `truncate_cleanup_folio`: its dirtiness is forgotten, not written.
                if desc.clear_dirty_for_io() {
                    self.mapping.untag_dirty(index);
                    cache.writeback().dirty_cancelled();
                }
                desc.mark_orphan();
                cache.put(frame); // the mapping's pin
            }
        }
        cache.writeback().notify_progress();
    }

    /// Zeroes the cached bytes of the page holding byte `len` from `len` on, so that the page
    /// past a new end of file reads as zeros (`truncate_pagecache` → `truncate_inode_partial_folio`).
    async fn zero_tail(self: &Arc<Self>, len: u64) {
        let ps = self.cache.page_size() as u64;
        let in_page = (len & (ps - 1)) as usize;
        if in_page == 0 {
            return;
        }
        let index = len >> self.cache.page_shift();
        let Some(frame) = self.mapping.lookup(index, self.cache.pool().pages()) else {
            return;
        };
        let mut page = self.lock_page(frame).await;
        page.wait_stable().await;
        if page.desc().flags().is_uptodate() {
            page.bytes_mut()[in_page..].fill(0);
        }
    }

    /// Sets the file's length (`truncate_setsize` + the filesystem's `setattr`), under the size
    /// lock: no buffered or direct write runs meanwhile, as under the kernel's `i_rwsem`.
    ///
    /// Shrinking drops the pages past the end (waiting for their writeback), zeroes the rest of
    /// the last page, and only then cuts the file on disk: every write of the old bytes past the
    /// end has completed by then, so none can land after the cut.
    pub(crate) async fn set_len(self: &Arc<Self>, len: u64) -> io::Result<()> {
        self.check_fits(len)?;
        let _size = self.size_lock.exclusive().await;
        let old = self.mapping.size();
        if len < old {
            self.mapping.set_size(len);
            self.truncate_pages(len.div_ceil(self.cache.page_size() as u64))
                .await;
            self.zero_tail(len).await;
            self.cut_disk(Some(len)).await
        } else {
            if len > old {
                // Grow on disk first, so that the new range reads back as zeros.
                self.cut_disk(Some(len)).await?;
                self.mapping.extend_size(len);
            }
            Ok(())
        }
    }

    /// Drops the clean, unpinned, unlocked cached pages of pages `start..end`
    /// (`invalidate_mapping_pages`); dirty, locked, pinned pages and pages under writeback
    /// stay. Returns how many were dropped.
    pub(crate) fn invalidate(&self, start: u64, end: u64) -> usize {
        let cache = &self.cache;
        let pages = cache.pool().pages();
        let mut dropped = 0;
        for (index, frame) in self.mapping.range(start, end) {
            let removed = self
                .mapping
                .remove_if(index, frame, pages, |d| d.freeze_if_reclaimable());
            if removed {
                // Frozen: no pin left to drop, the frame is ours to free.
                cache.free_frame(frame);
                dropped += 1;
            }
        }
        dropped
    }
}
