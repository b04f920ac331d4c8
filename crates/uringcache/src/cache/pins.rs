//! Pin accounting of page handles ([`PageRef`](crate::PageRef), [`PageMut`](crate::PageMut)):
//! how many live handles pin each frame, and how many frames have at least one. A page handle
//! does not unpin by itself, so an allocation that finds every frame pinned this way fails with
//! a clear error instead of waiting for a release that only the caller can make.
//!
//! # Invariants
//!
//! `pinned_frames` equals the number of frames whose count is non-zero: the count of a frame
//! and the total change together in [`UserPins::add`] and [`UserPins::remove`] (each one RMW
//! on the frame's counter decides whether the total moves). Lock-free; nothing here blocks.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use uringcache_core::page::FrameId;

/// Per frame, the live page handles pinning it, and the frames with one.
#[derive(Debug)]
pub(crate) struct UserPins {
    per_frame: Box<[AtomicU32]>,
    frames: AtomicUsize,
}

impl UserPins {
    pub(crate) fn new(frames: usize) -> Self {
        UserPins {
            per_frame: (0..frames).map(|_| AtomicU32::new(0)).collect(),
            frames: AtomicUsize::new(0),
        }
    }

    /// Counts a new handle pinning `frame`.
    pub(crate) fn add(&self, frame: FrameId) {
        if self.per_frame[frame as usize].fetch_add(1, Ordering::AcqRel) == 0 {
            self.frames.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Uncounts a handle of `frame`; called before the handle's pin is dropped.
    pub(crate) fn remove(&self, frame: FrameId) {
        let was = self.per_frame[frame as usize].fetch_sub(1, Ordering::AcqRel);
        debug_assert!(was > 0, "a page handle of frame {frame} uncounted twice");
        if was == 1 {
            self.frames.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Whether a live page handle pins `frame`.
    pub(crate) fn is_pinned(&self, frame: FrameId) -> bool {
        self.per_frame[frame as usize].load(Ordering::Acquire) > 0
    }

    /// Frames pinned by at least one page handle.
    pub(crate) fn pinned_frames(&self) -> usize {
        self.frames.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_count_once_however_many_handles_pin_them() {
        let pins = UserPins::new(4);
        pins.add(1);
        pins.add(1);
        pins.add(3);
        assert_eq!(pins.pinned_frames(), 2);
        assert!(pins.is_pinned(1) && !pins.is_pinned(0));
        pins.remove(1);
        assert_eq!(pins.pinned_frames(), 2);
        pins.remove(1);
        pins.remove(3);
        assert_eq!(pins.pinned_frames(), 0);
        assert!(!pins.is_pinned(1));
    }
}
