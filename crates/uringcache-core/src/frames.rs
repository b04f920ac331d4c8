//! The frame arena: one page-aligned allocation holding every page frame of the cache.
//!
//! The arena is mapped once with `mmap` (anonymous, private) at build time, advised
//! `MADV_HUGEPAGE` when it is large enough for huge pages to help, and never grows: the cache's
//! memory budget *is* the arena. Frame `i` occupies bytes `i * page_size .. (i + 1) * page_size`.
//! Since a single `io_uring` fixed buffer may not exceed 1 GiB, [`FrameArena::chunks`] splits the
//! arena into registrable pieces and [`FrameArena::buf_index`] tells which piece a frame is in.
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

/// Largest registrable fixed buffer (the kernel refuses buffers above 1 GiB).
const MAX_FIXED_BUFFER: usize = 1 << 30;

/// The page frames of the cache, in one mapping.
#[derive(Debug)]
pub struct FrameArena {
    base: NonNull<u8>,
    len: usize,
    page_size: usize,
    frames: usize,
    frames_per_chunk: usize,
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
        let frames_per_chunk = (MAX_FIXED_BUFFER / page_size).max(1);
        Ok(FrameArena {
            // SAFETY: mmap succeeded, so the pointer is not null.
            base: unsafe { NonNull::new_unchecked(ptr.cast()) },
            len,
            page_size,
            frames,
            frames_per_chunk,
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

    /// The arena as registrable pieces of at most 1 GiB each: `(address, length)` pairs for
    /// `io_uring_register_buffers`, in order.
    pub fn chunks(&self) -> Vec<(*mut u8, usize)> {
        let chunk_len = self.frames_per_chunk * self.page_size;
        (0..self.len)
            .step_by(chunk_len)
            .map(|start| {
                // SAFETY: `start` is within the mapping.
                let p = unsafe { self.base.as_ptr().add(start) };
                (p, chunk_len.min(self.len - start))
            })
            .collect()
    }

    /// Which piece of [`chunks`](Self::chunks) holds `frame` (the fixed buffer index).
    #[inline]
    pub fn buf_index(&self, frame: FrameId) -> u16 {
        (frame as usize / self.frames_per_chunk) as u16
    }

    /// Whether `a` and `b` (with `b == a + 1`) lie in the same registrable piece, so that one
    /// fixed-buffer I/O may span both.
    #[inline]
    pub fn same_chunk(&self, a: FrameId, b: FrameId) -> bool {
        self.buf_index(a) == self.buf_index(b)
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
        let chunks = arena.chunks();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].1, 8 * 4096);
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(FrameArena::new(8, 3000).is_err());
        assert!(FrameArena::new(0, 4096).is_err());
        let err = FrameArena::new(usize::MAX / 2, 4096).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
