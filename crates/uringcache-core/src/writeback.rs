//! Dirty-page accounting and writeback decisions (`mm/page-writeback.c`), as pure functions.
//!
//! * [`DirtyLimits`]: the background threshold and the hard limit on dirty pages, as fractions
//!   of the budget (`dirty_background_ratio`, `dirty_ratio`), and what a writer must do at a
//!   given dirty count (`balance_dirty_pages`): run free, start background writeback, or wait.
//! * [`tail_len`]: how much of the last page of a file an `O_DIRECT` write must cover: the
//!   bytes up to end of file, rounded up to the direct-I/O alignment.
//!
//! Nothing here touches pages or does I/O; the `uringcache` crate applies these decisions.

/// What a writer should do before dirtying another page (`balance_dirty_pages`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Throttle {
    /// Below the background threshold: nothing to do.
    Free,
    /// Above the background threshold: make sure background writeback runs, do not wait.
    Background,
    /// At or above the limit: start writeback and wait until the dirty count drops below it.
    Wait,
}

/// The dirty thresholds of a cache, in pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirtyLimits {
    /// Background writeback starts above this many dirty pages.
    pub background: usize,
    /// Writers wait at this many dirty pages.
    pub limit: usize,
}

impl DirtyLimits {
    /// Limits for `frames` frames from the two ratios (each clamped to 0..=1; the background
    /// threshold is kept below the limit, and the limit leaves at least one clean frame).
    pub fn new(frames: usize, background_ratio: f64, limit_ratio: f64) -> Self {
        let frames_f = frames as f64;
        let limit = ((limit_ratio.clamp(0.0, 1.0) * frames_f) as usize)
            .clamp(1, frames.saturating_sub(1).max(1));
        let background =
            ((background_ratio.clamp(0.0, 1.0) * frames_f) as usize).min(limit.saturating_sub(1));
        DirtyLimits { background, limit }
    }

    /// What a writer does when `dirty` pages are dirty.
    pub fn throttle(&self, dirty: usize) -> Throttle {
        if dirty >= self.limit {
            Throttle::Wait
        } else if dirty > self.background {
            Throttle::Background
        } else {
            Throttle::Free
        }
    }
}

/// Bytes of page `index` to write so that the file's first `size` bytes reach the device:
/// the whole page before the last one, the part up to `size` rounded up to `align` for the
/// page holding the end, 0 for pages wholly past the end.
pub fn tail_len(index: u64, page_size: usize, size: u64, align: usize) -> usize {
    let start = index.saturating_mul(page_size as u64);
    if start >= size {
        return 0;
    }
    let in_file = (size - start).min(page_size as u64) as usize;
    in_file.next_multiple_of(align.max(1)).min(page_size)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn limits_like_the_kernel_defaults() {
        let l = DirtyLimits::new(1000, 0.10, 0.20);
        assert_eq!(
            l,
            DirtyLimits {
                background: 100,
                limit: 200
            }
        );
        assert_eq!(l.throttle(0), Throttle::Free);
        assert_eq!(l.throttle(100), Throttle::Free);
        assert_eq!(l.throttle(101), Throttle::Background);
        assert_eq!(l.throttle(199), Throttle::Background);
        assert_eq!(l.throttle(200), Throttle::Wait);
    }

    #[test]
    fn tiny_budgets_keep_sane_limits() {
        let l = DirtyLimits::new(4, 0.10, 0.20);
        assert_eq!(l.limit, 1);
        assert_eq!(l.background, 0);
        let l = DirtyLimits::new(16, 0.5, 2.0);
        assert_eq!(l.limit, 15, "one frame stays clean");
        assert_eq!(l.background, 8);
        let l = DirtyLimits::new(100, 0.9, 0.2);
        assert!(l.background < l.limit);
    }

    #[test]
    fn the_tail_block_is_written_whole() {
        assert_eq!(tail_len(0, 4096, 10_000, 512), 4096);
        assert_eq!(
            tail_len(2, 4096, 10_000, 512),
            2048,
            "1808 bytes round up to 2048"
        );
        assert_eq!(tail_len(2, 4096, 8193, 512), 512);
        assert_eq!(tail_len(2, 4096, 8192, 512), 0);
        assert_eq!(tail_len(3, 4096, 10_000, 512), 0);
        assert_eq!(tail_len(2, 4096, 10_000, 4096), 4096);
        assert_eq!(tail_len(u64::MAX, 4096, u64::MAX, 512), 0);
    }
}
