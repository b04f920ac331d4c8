//! Direct I/O through a cached file's handle (`IOCB_DIRECT`): [`File::read_direct_at`] and
//! [`File::write_direct_at`] move bytes between the caller's buffer and the device without
//! leaving them in the cache, and stay coherent with the cached pages of the same file.
//!
//! # Coherence (as `generic_file_direct_write` / `kiocb_invalidate_post_direct_write`)
//!
//! * Before a direct read or write, the dirty pages of the range are written back and every
//!   write in flight there is waited for (`filemap_write_and_wait_range`), so the device holds
//!   everything written through the cache before the call. A failed writeback fails the call.
//! * The device I/O goes through temporary frames taken from the cache's pool (bounded by the
//!   largest readahead window per request, and never waiting for a second frame while holding
//!   one): never inserted in a mapping, freed when both the call and the I/O are done with
//!   them, so a dropped future never leaves the device writing into a reused frame.
//! * After a direct write, the file's size is extended, then every cached page of the range
//!   is locked in turn (waiting for fills and writers) and either dropped, if it is clean and
//!   nobody else pins it, or updated in place with the bytes just written, if it is pinned
//!   (a [`PageRef`](crate::PageRef) holder sees the new bytes) or dirty again. No stale page
//!   survives; a page being read from the device when the write landed is waited for and
//!   then updated.
//! * A direct write that does not start or end on a page boundary reads the edge pages from
//!   the device first and writes whole pages (read-modify-write), so any offset and length
//!   work. The page holding the end of file is written up to the end rounded up to the
//!   direct-I/O alignment, as writeback does; the next `sync_*` cuts the file back.
//!
//! Direct I/O racing buffered writes to the same bytes has no defined winner (as in the
//! kernel), but the cache and the device agree again once both are done.

use std::io;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use uringcache_core::backend::{Op, Request};
use uringcache_core::page::{FrameId, PageDesc};

use crate::cache::CacheInner;
use crate::inode::Inode;
use crate::util::OneShot;

/// Frames taken from the pool for one direct request, in no mapping; each holds one pin of
/// ours and is freed at the last unpin (ours or the I/O's).
struct TempFrames {
    cache: Arc<CacheInner>,
    frames: Vec<FrameId>,
}

impl TempFrames {
    /// Up to `want` frames: the first waits for a frame if none is free, the others are taken
    /// only if free or evictable now (so two direct requests never hold frames while waiting
    /// for more).
    async fn take(cache: &Arc<CacheInner>, want: usize) -> io::Result<TempFrames> {
        let first = cache.alloc().await?;
        let mut t = TempFrames {
            cache: cache.clone(),
            frames: Vec::with_capacity(want),
        };
        t.frames.push(first);
        while t.frames.len() < want {
            match cache.try_alloc() {
                Some(f) => t.frames.push(f),
                None => break,
            }
        }
        Ok(t)
    }

    fn len(&self) -> usize {
        self.frames.len()
    }

    fn bytes(&self, k: usize) -> &[u8] {
        // SAFETY: the frame is ours (pinned, LOCKED, in no mapping) and no I/O is in flight on
        // it when the caller looks (device_io has completed).
        unsafe { self.cache.arena().frame(self.frames[k]) }
    }

    #[allow(clippy::mut_from_ref)]
    fn bytes_mut(&self, k: usize) -> &mut [u8] {
        // SAFETY: as in `bytes`; callers never hold two slices of one frame at once.
        unsafe { self.cache.arena().frame_mut(self.frames[k]) }
    }
}

impl Drop for TempFrames {
    fn drop(&mut self) {
        for &f in &self.frames {
            self.cache.put(f);
        }
    }
}

impl Inode {
    /// One device read or write of `len` bytes at `offset` through `frames[range]`, awaited. The
    /// I/O holds its own pins on the frames (and the inode), dropped by its completion.
    async fn device_io(
        self: &Arc<Self>,
        write: bool,
        offset: u64,
        frames: &[FrameId],
        len: usize,
    ) -> io::Result<usize> {
        let pages = self.cache.pool().pages();
        for &f in frames {
            pages.get(f).pin();
        }
        let (cell, done) = OneShot::new();
        let inode = self.clone();
        let io_frames = frames.to_vec();
        let frames = frames.to_vec();
        let op = if write {
            Op::Write {
                offset,
                frames,
                len,
                dsync: false,
            }
        } else {
            Op::Read {
                offset,
                frames,
                len,
            }
        };
        let request = Request {
            file: self.file_id,
            op,
            done: Box::new(move |res| {
                for f in io_frames {
                    inode.cache.put(f);
                }
                if write {
                    if res.is_ok() {
                        // Recorded before the gate may start a cut, which records its own.
                        inode
                            .wb
                            .disk_size
                            .fetch_max(offset + len as u64, Ordering::AcqRel);
                    }
                    // On the device, not yet flushed: the next sync_data must flush.
                    inode.note_unflushed();
                    inode.disk_write_done();
                }
                done(res);
            }),
        };
        if write {
            // Through the disk gate: never while the file is being cut on disk.
            self.submit_writes(vec![request]);
        } else {
            // SAFETY: temporary frames of this call, in no mapping, pinned for the I/O until
            // its completion; the call reads them only after awaiting it.
            unsafe { self.cache.backend().submit(&mut vec![request]) };
        }
        cell.wait().await.map_err(|e| {
            crate::error::os(
                e,
                format!(
                    "direct {} of {len} bytes at offset {offset} of {} failed",
                    if write { "write" } else { "read" },
                    self.path.display()
                ),
            )
        })
    }

    /// Writes back the dirty pages of `start..end` and waits; fails if one of them could not
    /// be written (it is still dirty with an error).
    async fn write_back_range_for_direct(self: &Arc<Self>, start: u64, end: u64) -> io::Result<()> {
        self.write_and_wait(start, end).await;
        let pages = self.cache.pool().pages();
        for index in self.mapping.dirty_range(start, end, usize::MAX) {
            let Some(frame) = self.mapping.lookup(index, pages) else {
                continue;
            };
            let desc = pages.get(frame);
            let st = desc.flags();
            let errno = desc.errno();
            self.cache.put(frame);
            if st.is_dirty() && st.is_error() {
                // Still dirty after a writeback that was waited for: it failed.
                return Err(crate::error::errno(
                    errno,
                    format!(
                        "writing back page {index} of {} before direct I/O failed",
                        self.path.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// After a direct write of `data` at byte `offset` (pages `start..end`): drops the clean,
    /// otherwise unpinned cached pages of the range and copies the new bytes into the others
    /// (`invalidate_inode_pages2_range`, with pinned pages updated instead of left stale).
    async fn after_direct_write(self: &Arc<Self>, start: u64, end: u64, data: &[u8], offset: u64) {
        let cache = &self.cache;
        let pages = cache.pool().pages();
        let ps = cache.page_size() as u64;
        let data_end = offset + data.len() as u64;
        for (index, _) in self.mapping.range(start, end) {
            let Some(frame) = self.mapping.lookup(index, pages) else {
                continue;
            };
            let mut page = self.lock_page(frame).await;
            page.wait_stable().await;
            let desc = page.desc();
            if !desc.is_mapped_at(self.mapping.id(), index) {
                continue;
            }
            // The mapping's pin and ours, and clean (locked by us, out of writeback): nobody
            // else holds the page (`invalidate_complete_folio2`).
            let unshared = |d: &PageDesc| d.pins() == 2 && !d.flags().is_dirty();
            if self.mapping.remove_if(index, frame, pages, unshared) {
                cache.put(frame); // the mapping's pin; ours goes with `page`
                continue;
            }
            if desc.flags().is_uptodate() {
                let page_start = index * ps;
                let lo = offset.max(page_start);
                let hi = data_end.min(page_start + ps);
                if lo < hi {
                    let dst = &mut page.bytes_mut()
                        [(lo - page_start) as usize..(hi - page_start) as usize];
                    dst.copy_from_slice(&data[(lo - offset) as usize..(hi - offset) as usize]);
                }
            }
            // Not up to date: the next reader reads the device, which has the new bytes.
        }
    }

    /// Starts a direct read or write of bytes `offset..end`: writes back the dirty pages of
    /// the range and waits for every write there (`filemap_write_and_wait_range`). Returns the
    /// device requests to make, one [`DirectChunks::next`] at a time.
    async fn begin_direct(self: &Arc<Self>, offset: u64, end: u64) -> io::Result<DirectChunks> {
        let shift = self.cache.page_shift();
        let pages = (offset >> shift)..((end - 1) >> shift) + 1;
        self.write_back_range_for_direct(pages.start, pages.end)
            .await?;
        Ok(DirectChunks {
            next: pages.start,
            pages,
        })
    }

    /// The device I/O of [`File::read_direct_at`](crate::File::read_direct_at) once the handle
    /// has checked the request: writes back and waits on the range's dirty pages, then reads
    /// through temporary frames, a readahead window's worth per device request.
    pub(crate) async fn read_direct(
        self: &Arc<Self>,
        buf: &mut [u8],
        offset: u64,
    ) -> io::Result<usize> {
        let inode = self;
        let size = inode.mapping.size();
        if buf.is_empty() || offset >= size {
            return Ok(0);
        }
        let end = (offset + buf.len() as u64).min(size);
        let ps = inode.cache.page_size();
        let mut chunks = inode.begin_direct(offset, end).await?;
        while let Some((chunk, frames)) = chunks.next(inode).await? {
            let k = frames.len();
            let n = inode
                .device_io(false, chunk, &frames.frames, k * ps)
                .await?;
            for j in 0..k {
                let page_start = chunk + (j * ps) as u64;
                let lo = offset.max(page_start);
                let hi = end.min(page_start + ps as u64);
                if lo >= hi {
                    continue;
                }
                let out = &mut buf[(lo - offset) as usize..(hi - offset) as usize];
                // Bytes past what the device returned (a hole at the end) read as zeros.
                let valid = (n as u64).saturating_sub(lo - chunk).min(hi - lo) as usize;
                let from = (lo - page_start) as usize;
                out[..valid].copy_from_slice(&frames.bytes(j)[from..from + valid]);
                out[valid..].fill(0);
            }
        }
        Ok((end - offset) as usize)
    }

    /// The device I/O of [`File::write_direct_at`](crate::File::write_direct_at) once the
    /// handle has checked the request (`end` = `offset + buf.len()`, non-empty): under the
    /// size lock shared, writes back the range, writes whole pages through temporary frames
    /// (reading the edge pages first), then updates or drops the cached pages.
    pub(crate) async fn write_direct(
        self: &Arc<Self>,
        buf: &[u8],
        offset: u64,
        end: u64,
    ) -> io::Result<usize> {
        let inode = self;
        inode.check_fits(end)?;
        // Under the size lock, as buffered writes: never while set_len changes the size.
        let _size = inode.size_lock.shared().await;
        let ps = inode.cache.page_size();
        let mut chunks = inode.begin_direct(offset, end).await?;
        while let Some((chunk, frames)) = chunks.next(inode).await? {
            let k = frames.len();
            let chunk_end = chunk + (k * ps) as u64;
            // Edge pages that the write covers only in part: their other bytes come from the
            // device (after the writeback above, it holds the latest of them).
            let mut edges = Vec::with_capacity(2);
            if offset > chunk {
                edges.push(0);
            }
            if end < chunk_end && !edges.contains(&(k - 1)) {
                edges.push(k - 1);
            }
            for j in edges {
                let page_start = chunk + (j * ps) as u64;
                let n = inode
                    .device_io(false, page_start, &frames.frames[j..j + 1], ps)
                    .await?;
                frames.bytes_mut(j)[n.min(ps)..].fill(0);
            }
            for j in 0..k {
                let page_start = chunk + (j * ps) as u64;
                let lo = offset.max(page_start);
                let hi = end.min(page_start + ps as u64);
                if lo < hi {
                    frames.bytes_mut(j)[(lo - page_start) as usize..(hi - page_start) as usize]
                        .copy_from_slice(&buf[(lo - offset) as usize..(hi - offset) as usize]);
                }
            }
            // The page holding the (new) end of file is written up to it, rounded up to the
            // direct-I/O alignment; every other page whole.
            let new_size = inode.mapping.size().max(end);
            let len = if chunk_end > new_size {
                let tail = (new_size - chunk) as usize;
                tail.next_multiple_of(inode.dio_align).min(k * ps)
            } else {
                k * ps
            };
            inode.device_io(true, chunk, &frames.frames, len).await?;
        }
        // Size first, then the cached pages: a page made past the old end of file meanwhile
        // either sees the new size and drops itself, or is found here.
        inode.mapping.extend_size(end);
        let pages = chunks.pages();
        inode
            .after_direct_write(pages.start, pages.end, buf, offset)
            .await;
        Ok(buf.len())
    }
}

/// The device requests of one direct read or write: consecutive chunks of its pages, each at
/// most a request's worth.
struct DirectChunks {
    pages: Range<u64>,
    next: u64,
}

impl DirectChunks {
    /// The pages the I/O touches.
    fn pages(&self) -> Range<u64> {
        self.pages.clone()
    }

    /// Temporary frames for the next request (at most a request's worth, fewer if frames are
    /// short; never waiting for a second frame while holding one), with the request's file
    /// offset; `None` when every page is done.
    async fn next(&mut self, inode: &Inode) -> io::Result<Option<(u64, TempFrames)>> {
        if self.next >= self.pages.end {
            return Ok(None);
        }
        let want = (self.pages.end - self.next).min(inode.cache.max_request_pages() as u64);
        let frames = TempFrames::take(&inode.cache, want as usize).await?;
        let offset = self.next << inode.cache.page_shift();
        self.next += frames.len() as u64;
        Ok(Some((offset, frames)))
    }
}
