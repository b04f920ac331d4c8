//! Runs: gathering consecutive pages into device requests, the one place that decides where a
//! request ends, for reads (readahead windows), writeback and direct I/O alike (the kernel's bio
//! building in `mpage_readahead` / `mpage_writepages`, `bio_add_folio` refusing a page that is
//! not contiguous or would pass the request limit).
//!
//! A [`RunBuilder`] is fed pages in index order, each with the bytes of it to transfer, and
//! hands back a finished [`Run`] whenever the next page cannot extend the current one: it is
//! not the next index, the run already has `max_pages` pages, or the run ends with a partial
//! page (the page holding end of file is written up to the end rounded to the device's
//! alignment, and nothing can follow it in the same request). Direct I/O, whose pages are
//! consecutive by construction, splits at the same `max_pages`.
//!
//! Pure bookkeeping: no I/O, no locks, no allocation beyond the run's frame list.

use crate::page::FrameId;

/// Consecutive pages of one file going to or from the device in one request.
#[derive(Debug, PartialEq, Eq)]
pub struct Run {
    /// Index of the first page.
    pub first: u64,
    /// The pages' frames, in index order.
    pub frames: Vec<FrameId>,
    /// Bytes to transfer: whole pages, except that the last may be partial.
    pub bytes: usize,
}

/// Gathers pages pushed in index order into [`Run`]s of at most `max_pages` pages.
///
/// ```
/// use uringcache_core::run::RunBuilder;
///
/// let mut runs = RunBuilder::new(2, 4096);
/// assert_eq!(runs.push(10, 0, 4096), None);
/// assert_eq!(runs.push(11, 1, 4096), None);
/// let full = runs.push(12, 2, 4096).unwrap(); // a third page would pass max_pages
/// assert_eq!((full.first, full.frames.len(), full.bytes), (10, 2, 8192));
/// let gap = runs.push(20, 3, 512).unwrap(); // not the next index
/// assert_eq!((gap.first, gap.bytes), (12, 4096));
/// let last = runs.finish().unwrap();
/// assert_eq!((last.first, last.bytes), (20, 512));
/// assert_eq!(runs.finish(), None);
/// ```
#[derive(Debug)]
pub struct RunBuilder {
    max_pages: usize,
    page_size: usize,
    first: u64,
    frames: Vec<FrameId>,
    bytes: usize,
    /// The run ends with a partial page and cannot be extended.
    closed: bool,
}

impl RunBuilder {
    /// A builder of runs of at most `max_pages` pages (at least 1) of `page_size` bytes.
    pub fn new(max_pages: usize, page_size: usize) -> Self {
        RunBuilder {
            max_pages: max_pages.max(1),
            page_size,
            first: 0,
            frames: Vec::new(),
            bytes: 0,
            closed: false,
        }
    }

    /// The most pages one run holds.
    pub fn max_pages(&self) -> usize {
        self.max_pages
    }

    /// Adds page `index`, held in `frame`, of which `bytes` (at most the page size, more than 0)
    /// are to be transferred. Returns the run this page could not extend, if any; the page then
    /// starts the next one.
    pub fn push(&mut self, index: u64, frame: FrameId, bytes: usize) -> Option<Run> {
        debug_assert!(bytes > 0 && bytes <= self.page_size);
        let extends = !self.frames.is_empty()
            && !self.closed
            && self.first + self.frames.len() as u64 == index
            && self.frames.len() < self.max_pages;
        let done = if extends { None } else { self.finish() };
        if self.frames.is_empty() {
            self.first = index;
        }
        self.frames.push(frame);
        self.bytes += bytes;
        self.closed = bytes < self.page_size;
        done
    }

    /// Ends the current run and returns it (`None` if no page was pushed since the last one).
    pub fn finish(&mut self) -> Option<Run> {
        if self.frames.is_empty() {
            return None;
        }
        self.closed = false;
        Some(Run {
            first: self.first,
            frames: std::mem::take(&mut self.frames),
            bytes: std::mem::take(&mut self.bytes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runs a builder makes of `pages` (index, bytes), frames numbered by position.
    fn runs_of(pages: &[(u64, usize)], max_pages: usize) -> Vec<Run> {
        let mut b = RunBuilder::new(max_pages, 4096);
        let mut out: Vec<Run> = pages
            .iter()
            .enumerate()
            .filter_map(|(k, &(i, n))| b.push(i, k as FrameId, n))
            .collect();
        out.extend(b.finish());
        out
    }

    #[test]
    fn consecutive_pages_share_a_run_up_to_the_limit() {
        let pages: Vec<_> = (0..5).map(|i| (i, 4096)).collect();
        let runs = runs_of(&pages, 2);
        let shape: Vec<_> = runs.iter().map(|r| (r.first, r.frames.len())).collect();
        assert_eq!(shape, [(0, 2), (2, 2), (4, 1)]);
        assert!(runs.iter().all(|r| r.bytes == r.frames.len() * 4096));
    }

    #[test]
    fn a_gap_ends_a_run() {
        let runs = runs_of(&[(1, 4096), (2, 4096), (5, 4096)], 8);
        let shape: Vec<_> = runs.iter().map(|r| (r.first, r.frames.clone())).collect();
        assert_eq!(shape, [(1, vec![0, 1]), (5, vec![2])]);
    }

    #[test]
    fn a_partial_page_closes_its_run() {
        let runs = runs_of(&[(0, 4096), (1, 1024), (2, 4096)], 8);
        let shape: Vec<_> = runs.iter().map(|r| (r.first, r.bytes)).collect();
        assert_eq!(shape, [(0, 5120), (2, 4096)]);
    }

    #[test]
    fn nothing_pushed_is_no_run() {
        assert!(runs_of(&[], 4).is_empty());
        let mut b = RunBuilder::new(0, 4096);
        assert_eq!(b.max_pages(), 1);
        assert_eq!(b.finish(), None);
    }

    /// Every page pushed lands in exactly one run, in order; runs never pass the limit, are
    /// consecutive inside, and only the last page of a run may be partial.
    #[test]
    fn random_pages_are_each_in_one_well_formed_run() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..500 {
            let max = (next() % 6 + 1) as usize;
            let mut index = 0u64;
            let pages: Vec<(u64, usize)> = (0..(next() % 40))
                .map(|_| {
                    index += 1 + (next() % 3 == 0) as u64 * (next() % 4);
                    let bytes = if next() % 5 == 0 { 512 } else { 4096 };
                    (index, bytes)
                })
                .collect();
            let runs = runs_of(&pages, max);
            let flat: Vec<FrameId> = runs.iter().flat_map(|r| r.frames.clone()).collect();
            assert_eq!(flat, (0..pages.len() as FrameId).collect::<Vec<_>>());
            for r in &runs {
                assert!(!r.frames.is_empty() && r.frames.len() <= max);
                let members = &pages[r.frames[0] as usize..=*r.frames.last().unwrap() as usize];
                for (k, &(i, n)) in members.iter().enumerate() {
                    assert_eq!(i, r.first + k as u64, "a run is consecutive");
                    assert!(
                        n == 4096 || k == members.len() - 1,
                        "partial only at the end"
                    );
                }
                assert_eq!(r.bytes, members.iter().map(|&(_, n)| n).sum::<usize>());
            }
        }
    }
}
