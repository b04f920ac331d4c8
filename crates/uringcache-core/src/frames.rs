//! The frame arena: one page-aligned allocation holding every page frame of the cache.
//!
//! The arena is mapped once with `mmap` (anonymous, private) at build time, advised
//! `MADV_HUGEPAGE` when it is large enough for huge pages to help, and never grows: the cache's
//! memory budget *is* the arena. Frame `i` occupies bytes `i * page_size .. (i + 1) * page_size`.
//!
//! The mapping is lazy: no `MAP_POPULATE`, and nothing here writes a frame, so building costs no
//! resident memory and a frame's memory becomes resident when it is first used (by a copy, or by
//! the device reading into it; the `io_uring` backend also faults in each region of the arena
//! it registers as fixed buffers, on first use). Resident memory grows with the pages cached,
//! up to the budget.
//!
//! # Invariants
//!
//! The arena hands out raw pointers; it does not know who may touch which frame. The page
//! state bits (`page` module) say that: a frame is written only by the holder of its page's
//! `LOCKED` bit (or by the device, on behalf of that holder), and read by pinned readers of an
//! up-to-date page. The arena's memory stays mapped until the arena is dropped, and the cache
//! drops it only after every I/O into it has completed.

use std::io;
use std::ptr::NonNull;

use crate::page::FrameId;

/// The page frames of the cache, in one mapping.
#[derive(Debug)]
pub struct FrameArena {
    base: NonNull<u8>,
    len: usize,
    page_size: usize,
    frames: usize,
}

// SAFETY: the arena is a plain block of memory; every access to its bytes goes through raw
// pointers whose use is synchronised by the page state bits (see the module docs).
unsafe impl Send for FrameArena {}
// SAFETY: as above; `&FrameArena` only hands out pointers.
unsafe impl Sync for FrameArena {}

impl FrameArena {
    /// Maps `frames` frames of `page_size` bytes. `page_size` must be a power of two.
    pub fn new(frames: usize, page_size: usize) -> io::Result<Self> {
        if !page_size.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("page size {page_size} is not a power of two"),
            ));
        }
        if frames == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a frame arena needs at least one frame",
            ));
        }
        let len = frames.checked_mul(page_size).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{frames} frames of {page_size} bytes overflow the address space"),
            )
        })?;
        // SAFETY: an anonymous private mapping with no address hint; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            let err = io::Error::last_os_error();
            return Err(io::Error::new(
                err.kind(),
                format!("cannot map {len} bytes of page frames: {err}"),
            ));
        }
        if len >= 4 << 20 {
            // SAFETY: advice on the range just mapped; failure only loses the hint.
            unsafe {
                libc::madvise(ptr, len, libc::MADV_HUGEPAGE);
            }
        }
        Ok(FrameArena {
            // SAFETY: mmap succeeded, so the pointer is not null.
            base: unsafe { NonNull::new_unchecked(ptr.cast()) },
            len,
            page_size,
            frames,
        })
    }

    /// Bytes in one frame.
    #[inline]
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// Number of frames.
    #[inline]
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Start of `frame`'s bytes.
    #[inline]
    pub fn ptr(&self, frame: FrameId) -> *mut u8 {
        assert!((frame as usize) < self.frames, "frame {frame} out of range");
        // SAFETY: in bounds of the mapping by the assertion above.
        unsafe { self.base.as_ptr().add(frame as usize * self.page_size) }
    }

    /// The frame's bytes, shared.
    ///
    /// # Safety
    /// The caller holds a pin on an up-to-date page in this frame, or its `LOCKED` bit, so that
    /// the frame is not reused while the slice lives.
    #[inline]
    pub unsafe fn frame(&self, frame: FrameId) -> &[u8] {
        std::slice::from_raw_parts(self.ptr(frame), self.page_size)
    }

    /// Copies `dst.len()` bytes of `frame` from byte `offset` into `dst`, for an optimistic
    /// read (core `mapping`: a hit copies without a pin, then validates with
    /// `PageDesc::unchanged_since`). The copy holds no reference into the frame across it.
    ///
    /// # Safety
    /// `offset + dst.len()` is at most the page size. The frame may be written meanwhile (its
    /// reuse, a writer): the bytes copied may then be torn, and the caller must not use them
    /// unless it validates afterwards that the frame was not reused — the seqlock reader's
    /// discipline. (Rust has no atomic memory copy; like every seqlock, the racing loads are
    /// plain loads of memory that stays mapped, and their result is discarded.)
    #[inline]
    pub unsafe fn copy_optimistic(&self, frame: FrameId, offset: usize, dst: &mut [u8]) {
        debug_assert!(offset + dst.len() <= self.page_size);
        std::ptr::copy_nonoverlapping(self.ptr(frame).add(offset), dst.as_mut_ptr(), dst.len());
    }

    /// The frame's bytes, exclusive.
    ///
    /// # Safety
    /// The caller holds the page's `LOCKED` bit (or owns the frame outright, before it is
    /// published in a mapping), and no other reference to these bytes is used meanwhile.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn frame_mut(&self, frame: FrameId) -> &mut [u8] {
        std::slice::from_raw_parts_mut(self.ptr(frame), self.page_size)
    }
}

impl Drop for FrameArena {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no borrow outlives the arena.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn frames_are_aligned_and_disjoint() {
        let arena = FrameArena::new(8, 4096).unwrap();
        for f in 0..8 {
            assert_eq!(arena.ptr(f) as usize % 4096, 0);
        }
        // SAFETY: single-threaded test, no other borrow.
        unsafe {
            arena.frame_mut(3).fill(7);
            assert!(arena.frame(3).iter().all(|&b| b == 7));
            assert!(arena.frame(2).iter().all(|&b| b == 0));
            assert!(arena.frame(4).iter().all(|&b| b == 0));
        }
    }

    /// Pages of `len` bytes from `base` resident now (`mincore`).
    fn resident_pages(base: *mut u8, len: usize) -> usize {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let mut v = vec![0u8; len.div_ceil(page)];
        // SAFETY: the range is one mapping of this process; `v` has a byte per page.
        let rc = unsafe { libc::mincore(base.cast(), len, v.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", io::Error::last_os_error());
        v.iter().filter(|&&b| b & 1 != 0).count()
    }

    #[test]
    fn the_arena_is_resident_only_where_used() {
        // 64 MiB of 4 KiB frames: nothing resident after mapping; touching one frame makes
        // at most a huge page resident.
        let frames = 16384;
        let arena = FrameArena::new(frames, 4096).unwrap();
        let (base, len) = (arena.ptr(0), frames * 4096);
        assert_eq!(
            resident_pages(base, len),
            0,
            "mapping the arena populated it"
        );
        // SAFETY: single-threaded test, no other borrow.
        unsafe { arena.frame_mut(100).fill(1) };
        let n = resident_pages(base, len);
        assert!(
            (1..=(2 << 20) / 4096).contains(&n),
            "{n} pages resident after one frame was written"
        );
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(FrameArena::new(8, 3000).is_err());
        assert!(FrameArena::new(0, 4096).is_err());
        let err = FrameArena::new(usize::MAX / 2, 4096).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
