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
//! 3. Lock the page, check it still belongs to this file at this index (a truncation may have
//!    removed it meanwhile), wait for any writeback of it to finish (stable pages), copy the
//!    bytes in, mark it dirty, extend `len()`, unlock.
//!
//! A write future dropped half way leaves every page it touched unlocked: the lock is held by a
//! guard. Bytes already copied stay (as with a short `write(2)`).

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use uringcache_core::page::{FrameId, PageDesc, PageState};
use uringcache_core::readahead::Window;
use uringcache_core::writeback::Throttle;

use crate::inode::{Inode, ReadaheadSource};
use crate::stats::Counter;

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

/// A page locked (and pinned) by this task; dropping it unlocks, wakes waiters and unpins.
pub(crate) struct LockedPage<'a> {
    inode: &'a Inode,
    frame: FrameId,
}

impl LockedPage<'_> {
    pub(crate) fn desc(&self) -> &PageDesc {
        self.inode.cache.pool().pages().get(self.frame)
    }

    /// The frame, keeping both the lock and the pin (the caller takes over releasing them).
    pub(crate) fn into_frame(self) -> FrameId {
        let frame = self.frame;
        std::mem::forget(self);
        frame
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: this task holds the page's LOCKED bit and has waited out its writeback, so
        // no reader fills it and no write reads it while the slice is used; readers of an
        // up-to-date page may copy concurrently (the kernel's semantics for racing read/write).
        unsafe { self.inode.cache.arena().frame_mut(self.frame) }
    }
}

impl Drop for LockedPage<'_> {
    fn drop(&mut self) {
        let cache = &self.inode.cache;
        cache.waits().clear_and_wake(
            cache.pool().pages().get(self.frame),
            self.frame,
            PageState::LOCKED,
        );
        cache.put(self.frame);
    }
}

impl Inode {
    /// Locks the pinned page in `frame` (`lock_page`), taking over the caller's pin.
    pub(crate) async fn lock_page(&self, frame: FrameId) -> LockedPage<'_> {
        let desc = self.cache.pool().pages().get(frame);
        while !desc.try_lock() {
            self.cache
                .wait_unlocked(
                    desc,
                    frame,
                    "a write or truncation",
                    &self.path,
                    desc.index(),
                )
                .await;
        }
        LockedPage { inode: self, frame }
    }

    /// Waits while too many pages are dirty (`balance_dirty_pages`). It runs before the page
    /// is locked, so the pages a waiting task holds locked (through [`PageMut`](crate::PageMut)
    /// handles) were fewer than the limit when it took them, and writeback of the others can
    /// always bring the count down.
    async fn balance_dirty(&self) {
        let cache = &self.cache;
        loop {
            match cache
                .limits
                .throttle(cache.nr_dirty.load(Ordering::Acquire))
            {
                Throttle::Free => return,
                Throttle::Background => {
                    cache.flusher.kick(false);
                    return;
                }
                Throttle::Wait => {
                    let ticket = cache.dirty_event.listen();
                    let passes = cache.wb_passes.load(Ordering::Acquire);
                    cache.flusher.kick(true);
                    if cache
                        .limits
                        .throttle(cache.nr_dirty.load(Ordering::Acquire))
                        != Throttle::Wait
                    {
                        return;
                    }
                    cache.counters().add(Counter::ThrottleWaits, 1);
                    tracing::debug!(
                        dirty = cache.nr_dirty.load(Ordering::Relaxed),
                        limit = cache.limits.limit,
                        "writer throttled at the dirty limit"
                    );
                    ticket.await;
                    if cache.wb_passes.load(Ordering::Acquire) > passes
                        && cache.wb_last_pass_pages.load(Ordering::Acquire) == 0
                        && cache.nr_writeback.load(Ordering::Acquire) == 0
                    {
                        // A pass ran since we asked and could write nothing (the dirty pages
                        // are locked, e.g. by this task's own PageMuts): waiting longer cannot
                        // help, so go on past the limit, as the kernel lets a paused writer go
                        // after its pause.
                        tracing::debug!(
                            "writeback cannot make progress; writer goes past the dirty limit"
                        );
                        return;
                    }
                }
            }
        }
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
        page.desc().set(PageState::UPTODATE);
        page.desc().clear(PageState::ERROR);
        self.redirty(page.desc(), index);
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
                            LockedPage { inode: self, frame }
                        }
                        Err(existing) => {
                            // Another task created it first: use theirs.
                            cache.pool().pages().get(frame).clear(PageState::LOCKED);
                            cache.put(frame);
                            self.lock_page(existing).await
                        }
                    }
                }
                None => {
                    let frame = self.get_page(index, 1, ra).await?.into_frame();
                    self.lock_page(frame).await
                }
            };
            let desc = page.desc();
            let st = desc.state();
            if desc.owner() != self.mapping.id()
                || desc.index() != index
                || st.has(PageState::ORPHAN)
            {
                continue; // truncated or evicted while we waited for the lock: start over
            }
            if !st.has(PageState::UPTODATE) {
                if whole {
                    // Every byte is about to be overwritten. The page stays not up to date
                    // until the caller's copy is done, so a reader waits for the lock instead
                    // of seeing the frame's old bytes (or zeros) in place of file data.
                } else if page_start >= self.mapping.size() {
                    page.bytes_mut().fill(0);
                    page.desc().set(PageState::UPTODATE);
                } else {
                    // A page of file data whose read failed or never ran: read it (the read
                    // path retries failed pages) and start over.
                    drop(page);
                    drop(self.get_page(index, 1, ra).await?);
                    continue;
                }
            }
            while page.desc().state().has(PageState::WRITEBACK) {
                cache
                    .waits()
                    .wait(page.desc(), page.frame, PageState::WRITEBACK)
                    .await;
            }
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
            while page.desc().state().has(PageState::WRITEBACK) {
                cache
                    .waits()
                    .wait(page.desc(), frame, PageState::WRITEBACK)
                    .await;
            }
            let desc = page.desc();
            if self.mapping.remove_if(index, frame, pages, |_| true) {
                if desc.clear(PageState::DIRTY).has(PageState::DIRTY) {
                    self.mapping.untag_dirty(index);
                    cache.nr_dirty.fetch_sub(1, Ordering::AcqRel);
                }
                desc.set(PageState::ORPHAN);
                cache.put(frame); // the mapping's pin
            }
        }
        cache.dirty_event.notify_all();
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
        while page.desc().state().has(PageState::WRITEBACK) {
            self.cache
                .waits()
                .wait(page.desc(), frame, PageState::WRITEBACK)
                .await;
        }
        if page.desc().state().has(PageState::UPTODATE) {
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
            let removed = self.mapping.remove_if(index, frame, pages, |d| {
                d.pins() == 1
                    && !d
                        .state()
                        .any(PageState::LOCKED | PageState::DIRTY | PageState::WRITEBACK)
            });
            if removed {
                cache.put(frame);
                dropped += 1;
            }
        }
        dropped
    }
}
