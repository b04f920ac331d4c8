//! The on-demand readahead state machine: given where a reader missed (or which marked page it
//! reached), decide which pages to read next.
//!
//! This module owns the per-handle readahead state ([`State`], the kernel's
//! `struct file_ra_state`) and the rules that move it; it does no I/O. It mirrors Linux
//! `mm/readahead.c`:
//!
//! * [`State::on_miss`] is `page_cache_sync_readahead` / `page_cache_sync_ra`: a reader needs a
//!   page that is not cached;
//! * [`State::on_marker`] is `page_cache_async_readahead` / `page_cache_async_ra`: a reader
//!   reached the page carrying the Readahead mark (`PG_readahead`), so the next window starts
//!   before the reader gets there;
//! * both follow the decision order of `ondemand_readahead`: start of file, hit of the expected
//!   mark, interleaved-stream recovery through `page_cache_next_miss`, oversize request,
//!   sequential with the previous read, context readahead (`try_context_readahead` and
//!   `count_history_pages`), and finally a plain random read that leaves the state alone;
//! * window sizes come from [`init_window_size`] (`get_init_ra_size`) and
//!   [`next_window_size`] (`get_next_ra_size`); a window that the reader would hit at once is
//!   merged with its successor as `ondemand_readahead`'s `readit:` step does before calling
//!   `page_cache_ra_order`;
//! * [`State::on_error`] is `shrink_readahead_size_eio`, [`State::set_advice`] the readahead
//!   half of `posix_fadvise` (`generic_fadvise`).
//!
//! Invariants, in page units:
//!
//! * every window returned satisfies `async_size <= size` and `start + size` does not overflow
//!   `u64` (a window that would run past `u64::MAX` is cut there and loses its mark);
//! * every window is at most [`State::ra_pages`] pages, the effective cap: `max_pages` under
//!   [`Advice::Normal`], twice that under [`Advice::Sequential`], divided by four per
//!   [`State::on_error`] since the last [`State::set_advice`] / [`State::set_max_pages`];
//! * the window of [`State::on_miss`] always starts at the page the reader missed, so the
//!   caller can read that page first and wait only for it;
//! * a random read (no pattern found, or [`Advice::Random`]) returns a window without a mark
//!   and does not change the state, so one stray read does not break a stream's ramp-up.
//!
//! The caller reads only the pages of a window that are not already cached, and sets the
//! Readahead mark on the page at [`Window::mark`] only if it actually inserted that page (a
//! mark on a page that was already cached would trigger readahead of pages that are there).
//! Unlike the kernel, the maximum is not raised to the device's optimal I/O size for oversize
//! requests (`bdi->io_pages`): the caller sizes `max_pages` for the device up front.

/// Access-pattern advice for a file handle, like `posix_fadvise`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Advice {
    /// No advice: on-demand readahead with the window capped at `max_pages`
    /// (`POSIX_FADV_NORMAL`).
    #[default]
    Normal,
    /// The handle reads sequentially: windows may grow to twice `max_pages`
    /// (`POSIX_FADV_SEQUENTIAL`, which doubles `ra_pages`).
    Sequential,
    /// The handle reads at random: no readahead, only the pages asked for
    /// (`POSIX_FADV_RANDOM`, the kernel's `FMODE_RANDOM`).
    Random,
}

/// A range of pages to read ahead: pages `start .. start + size`; the page at [`mark`]
/// gets the Readahead mark (`PG_readahead`) so that reaching it starts the next window
/// asynchronously.
///
/// [`mark`]: Window::mark
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// The first page of the window.
    pub start: u64,
    /// How many pages the window covers.
    pub size: u64,
    /// How many pages at the end of the window are read ahead of need: the mark sits on the
    /// first of them. 0 means no mark.
    pub async_size: u64,
}

impl Window {
    /// The page that gets the Readahead mark: `start + size - async_size`, or `None` when
    /// `async_size == 0`.
    pub fn mark(&self) -> Option<u64> {
        if self.async_size == 0 {
            return None;
        }
        Some(self.end().saturating_sub(self.async_size).max(self.start))
    }

    /// One past the last page (saturating at `u64::MAX`).
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.size)
    }

    /// Whether the window covers no page.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Whether page `index` lies in the window.
    pub fn contains(&self, index: u64) -> bool {
        index >= self.start && index < self.end()
    }
}

/// The first window of a stream for a request of `req_pages` pages with the window capped at
/// `max` (`get_init_ra_size`): the request rounded up to a power of two, then quadrupled while
/// that is at most `max / 32`, doubled while at most `max / 4`, else `max`. The result is at
/// most `max` and at least `min(req_pages, max)`.
pub fn init_window_size(req_pages: u64, max: u64) -> u64 {
    match req_pages.max(1).checked_next_power_of_two() {
        Some(size) if size <= max / 32 => size * 4,
        Some(size) if size <= max / 4 => size * 2,
        _ => max,
    }
}

/// The window that follows one of `cur` pages with the window capped at `max`
/// (`get_next_ra_size`): four times `cur` while `cur < max / 16`, twice while
/// `cur <= max / 2`, else `max`. The result is at most `max`.
pub fn next_window_size(cur: u64, max: u64) -> u64 {
    if cur < max / 16 {
        cur * 4
    } else if cur <= max / 2 {
        cur * 2
    } else {
        max
    }
}

/// Per-handle readahead state (`struct file_ra_state`), in page units.
///
/// It remembers the most recent readahead window (`start`, `size`, `async_size`), the window
/// cap, the advice and whether the next miss is the retry after a read error. The position of
/// the handle's previous read (`prev_pos`) is kept by the caller and passed in.
#[derive(Clone, Debug)]
pub struct State {
    /// The cap given by the caller (`bdi->ra_pages`), at least 1.
    max_pages: u64,
    /// The effective cap (`file_ra_state::ra_pages`): derived from `max_pages` and the advice,
    /// quartered by each read error; 0 disables readahead.
    ra_pages: u64,
    advice: Advice,
    /// The most recent readahead window.
    start: u64,
    size: u64,
    async_size: u64,
    /// The next miss follows a read error: read that one page only.
    retry: bool,
}

impl State {
    /// `max_pages`: the largest window (readahead_max / page_size, already capped by the
    /// caller to fit the memory budget); at least 1 (0 is taken as 1).
    pub fn new(max_pages: u64) -> Self {
        let max_pages = max_pages.max(1);
        State {
            max_pages,
            ra_pages: max_pages,
            advice: Advice::Normal,
            start: 0,
            size: 0,
            async_size: 0,
            retry: false,
        }
    }

    /// The window cap given to [`new`](State::new) or [`set_max_pages`](State::set_max_pages).
    pub fn max_pages(&self) -> u64 {
        self.max_pages
    }

    /// Changes the window cap (e.g. when the budget is small); 0 is taken as 1. This also
    /// undoes the shrinking done by [`on_error`](State::on_error).
    pub fn set_max_pages(&mut self, max_pages: u64) {
        self.max_pages = max_pages.max(1);
        self.ra_pages = self.advised_cap();
    }

    /// The effective window cap in pages (the kernel's `ra_pages`): `max_pages` under
    /// [`Advice::Normal`] and [`Advice::Random`], twice it under [`Advice::Sequential`],
    /// divided by four per read error since. 0 means readahead is off: misses read one page.
    pub fn ra_pages(&self) -> u64 {
        self.ra_pages
    }

    /// The advice in force.
    pub fn advice(&self) -> Advice {
        self.advice
    }

    /// Normal: max as given; Sequential: twice the max (as the kernel doubles `ra_pages` for
    /// `POSIX_FADV_SEQUENTIAL`); Random: no readahead at all, only what is asked. Like
    /// `posix_fadvise`, this resets the effective cap, undoing [`on_error`](State::on_error).
    pub fn set_advice(&mut self, advice: Advice) {
        self.advice = advice;
        self.ra_pages = self.advised_cap();
    }

    /// The current window (start, size, async_size) for tests and stats.
    pub fn window(&self) -> Window {
        Window {
            start: self.start,
            size: self.size,
            async_size: self.async_size,
        }
    }

    /// `page_cache_sync_readahead`: the reader missed at page `index`; its request covers
    /// `req_pages` pages starting there (0 is taken as 1). `prev_pos` is the byte position
    /// just after the handle's previous read (the caller keeps it; 0 for none yet),
    /// `page_size` its unit. `cached(i)` says whether page i is in the cache (for context
    /// readahead, which looks back for a run of cached pages when the state was lost to
    /// interleaved streams).
    ///
    /// Returns the window to read; it always starts at `index` and covers at least
    /// `min(req_pages, max(ra_pages(), 1))` pages, except right after
    /// [`on_error`](State::on_error), when it is the one page at `index`, and at
    /// `index == u64::MAX`, where no page has a representable end and the window is empty.
    /// A random access (and [`Advice::Random`]) gets exactly the request, capped, without a
    /// mark, and leaves the state alone.
    pub fn on_miss(
        &mut self,
        index: u64,
        req_pages: u64,
        prev_pos: u64,
        page_size: u64,
        cached: impl Fn(u64) -> bool,
    ) -> Window {
        let req = req_pages.max(1);
        if self.retry {
            // The kernel re-reads a failed page alone (`filemap_read_folio`).
            self.retry = false;
            return plain(index, 1);
        }
        let cap = self.ra_pages;
        if self.advice == Advice::Random || cap == 0 {
            // `force_page_cache_ra`: what was asked, up to the cap; with readahead shrunk
            // away by errors the kernel reads a single page.
            return plain(index, req.min(cap.max(1)));
        }

        // Start of file: assume a whole-file read.
        if index == 0 {
            return self.initial(index, req, cap);
        }

        // The reader ran into the expected mark or just past the window without the async
        // readahead having run (mark page evicted, or left unmarked because it was cached):
        // the stream is ours, keep ramping, from the page it needs.
        if self.size > 0 && (Some(index) == self.window().mark() || index == self.window().end()) {
            let size = next_window_size(self.size, cap);
            self.set(index, size, size);
            return self.readit(index, cap);
        }

        // Oversize request: read the most we may, with a mark so the rest follows.
        if req > cap {
            return self.initial(index, req, cap);
        }

        // Sequential with the previous read: trivial (index == prev + 1) or unaligned
        // (index == prev) reads.
        let sequential = prev_pos
            .checked_div(page_size)
            .and_then(|prev_index| index.checked_sub(prev_index))
            .is_some_and(|distance| distance <= 1);
        if sequential {
            return self.initial(index, req, cap);
        }

        // Context readahead: the state may belong to another stream of this handle; the
        // cached pages right before `index` tell whether a stream is reaching here.
        let history = count_history(index, cap, &cached);
        if history > req {
            // Cached from the start of the file: a strong sign of a whole-file read.
            let history = if history >= index {
                history.saturating_mul(2)
            } else {
                history
            };
            self.set(index, history.saturating_add(req).min(cap), 1);
            return self.readit(index, cap);
        }

        // A standalone random read: read as is, and do not pollute the state.
        plain(index, req)
    }

    /// `page_cache_async_readahead`: the reader reached a page carrying the Readahead mark at
    /// `index`, with `req_pages` pages of its request left from there (0 is taken as 1).
    /// Returns the next window to start without waiting, or `None` (Random advice, readahead
    /// shrunk away by errors, or a full window already cached ahead of the reader).
    ///
    /// When the mark is the one the state expects (`start + size - async_size`, or the page
    /// just past the window) the window moves on and grows; otherwise the state belongs to
    /// another stream sharing the handle, and the run of cached pages after `index` (which
    /// this stream's last window left) gives the size to grow from, as
    /// `page_cache_next_miss` does in the kernel.
    pub fn on_marker(
        &mut self,
        index: u64,
        req_pages: u64,
        cached: impl Fn(u64) -> bool,
    ) -> Option<Window> {
        // Unlike a miss, the position of the previous read plays no part here: the mark alone
        // says the stream is sequential.
        let req = req_pages.max(1);
        let cap = self.ra_pages;
        if self.advice == Advice::Random || cap == 0 {
            return None;
        }

        let current = self.window();
        if self.size > 0 && (Some(index) == current.mark() || index == current.end()) {
            let start = current.end();
            if start == u64::MAX {
                return None;
            }
            let size = next_window_size(self.size, cap);
            self.set(start, size, size);
            return Some(self.readit(index, cap));
        }

        // A mark without matching state: interleaved streams. The cached run after `index`
        // is what remains of this stream's previous window (normally its async part).
        let start = next_miss(index, cap, &cached)?;
        let run = start - index; // >= 1: the scan starts after `index`
        let size = next_window_size(run.saturating_add(req), cap);
        self.set(start, size, size);
        Some(self.readit(index, cap))
    }

    /// After a read error (`shrink_readahead_size_eio`): the effective cap is divided by four
    /// (down to 0, readahead off), and the next miss reads the one page it needs, so a retry
    /// reads one page rather than the whole window again. [`set_advice`](State::set_advice)
    /// and [`set_max_pages`](State::set_max_pages) restore the cap.
    pub fn on_error(&mut self) {
        self.ra_pages /= 4;
        self.retry = true;
        // A window larger than the new cap would let the next mark hit read past it.
        self.size = self.size.min(self.ra_pages);
        self.async_size = self.async_size.min(self.size);
    }

    /// The cap the advice gives, before any error shrinks it.
    fn advised_cap(&self) -> u64 {
        match self.advice {
            Advice::Sequential => self.max_pages.saturating_mul(2),
            Advice::Normal | Advice::Random => self.max_pages,
        }
    }

    /// Records a window, cut at the end of the page index space: a cut window has no
    /// successor, so it carries no mark.
    fn set(&mut self, start: u64, size: u64, async_size: u64) {
        let room = u64::MAX - start;
        if size > room {
            self.size = room;
            self.async_size = 0;
        } else {
            self.size = size;
            self.async_size = async_size.min(size);
        }
        self.start = start;
    }

    /// The first window of a stream at `index` (`initial_readahead:`): the mark goes right
    /// after the pages the reader asked for.
    fn initial(&mut self, index: u64, req: u64, cap: u64) -> Window {
        let size = init_window_size(req, cap);
        let async_size = if size > req { size - req } else { size };
        self.set(index, size, async_size);
        self.readit(index, cap)
    }

    /// The `readit:` step: if the reader at `index` would hit this very window's mark at once
    /// (the whole window is async and starts at `index`), merge the next window into it, so
    /// that the mark lies ahead of the reader.
    fn readit(&mut self, index: u64, cap: u64) -> Window {
        if index == self.start && self.size == self.async_size && self.size > 0 {
            let add = next_window_size(self.size, cap);
            match self.size.checked_add(add) {
                Some(total) if total <= cap => self.set(self.start, total, add),
                _ => self.set(self.start, cap, cap / 2),
            }
        }
        self.window()
    }
}

/// A window of `size` pages at `index` without a mark, cut at the end of the index space.
fn plain(index: u64, size: u64) -> Window {
    Window {
        start: index,
        size: size.min(u64::MAX - index),
        async_size: 0,
    }
}

/// `count_history_pages`: how many pages right before `index` are cached, contiguously,
/// looking back at most `max` pages (never before page 0).
fn count_history(index: u64, max: u64, cached: &impl Fn(u64) -> bool) -> u64 {
    let limit = max.min(index);
    (1..=limit).take_while(|&back| cached(index - back)).count() as u64
}

/// `page_cache_next_miss` after a marked page: the first page after `index` that is not
/// cached, looking at most `max` pages ahead. `None` when all of them are cached (a full
/// window is already there) or the index space ends first.
fn next_miss(index: u64, max: u64, cached: &impl Fn(u64) -> bool) -> Option<u64> {
    let first = index.checked_add(1)?;
    let last = first.saturating_add(max - 1).min(u64::MAX - 1);
    (first..=last).find(|&i| !cached(i))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const PS: u64 = 4096;

    fn w(start: u64, size: u64, async_size: u64) -> Window {
        Window {
            start,
            size,
            async_size,
        }
    }

    /// What triggered a window.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Ev {
        Miss(u64),
        Mark(u64),
    }

    /// A model of the read path (`filemap_read`): a page cache of indices, marks on the pages
    /// the caller inserted at `Window::mark`, one `prev_pos` per reader, and a log of every
    /// window readahead produced.
    struct Sim {
        cache: BTreeSet<u64>,
        marks: BTreeSet<u64>,
        log: Vec<(Ev, Window)>,
    }

    impl Sim {
        fn new() -> Self {
            Sim {
                cache: BTreeSet::new(),
                marks: BTreeSet::new(),
                log: Vec::new(),
            }
        }

        fn fill(&mut self, win: Window) {
            let mark = win.mark();
            let mut i = win.start;
            while i < win.end() {
                if self.cache.insert(i) && Some(i) == mark {
                    self.marks.insert(i);
                }
                i += 1;
            }
        }

        /// Reads pages `index .. index + pages` through `ra`, updating `prev_pos`.
        fn read(&mut self, ra: &mut State, prev_pos: &mut u64, index: u64, pages: u64) {
            let end = index + pages;
            for i in index..end {
                let left = end - i;
                if !self.cache.contains(&i) {
                    let cache = &self.cache;
                    let win = ra.on_miss(i, left, *prev_pos, PS, |p| cache.contains(&p));
                    assert_eq!(win.start, i, "a sync window starts at the missed page");
                    assert!(win.size >= left.min(ra.ra_pages().max(1)), "{win:?}");
                    self.log.push((Ev::Miss(i), win));
                    self.fill(win);
                }
                if self.marks.remove(&i) {
                    let cache = &self.cache;
                    if let Some(win) = ra.on_marker(i, left, |p| cache.contains(&p)) {
                        self.log.push((Ev::Mark(i), win));
                        self.fill(win);
                    }
                }
                assert!(self.cache.contains(&i));
            }
            *prev_pos = end * PS;
        }
    }

    /// Reads `total` pages from page 0 in requests of `req` pages; returns the log.
    fn stream(ra: &mut State, req: u64, total: u64) -> Vec<(Ev, Window)> {
        let mut sim = Sim::new();
        let mut prev = 0;
        let mut i = 0;
        while i < total {
            sim.read(ra, &mut prev, i, req);
            i += req;
        }
        sim.log
    }

    fn sizes(log: &[(Ev, Window)]) -> Vec<u64> {
        log.iter().map(|(_, w)| w.size).collect()
    }

    #[test]
    fn window_sizes_follow_the_kernel_formulas() {
        // max 32 pages (the kernel's 128 KiB): 1-2 pages -> 16 KiB, 3-4 -> 32 KiB, 5-8 -> 64
        // KiB, more -> 128 KiB, as get_init_ra_size's comment says.
        assert_eq!(init_window_size(1, 32), 4);
        assert_eq!(init_window_size(2, 32), 4);
        assert_eq!(init_window_size(3, 32), 8);
        assert_eq!(init_window_size(4, 32), 8);
        assert_eq!(init_window_size(5, 32), 16);
        assert_eq!(init_window_size(8, 32), 16);
        assert_eq!(init_window_size(9, 32), 32);
        assert_eq!(init_window_size(1000, 32), 32);
        assert_eq!(init_window_size(u64::MAX, 32), 32);
        assert_eq!(init_window_size(1, 1), 1);
        assert_eq!(next_window_size(4, 512), 16);
        assert_eq!(next_window_size(31, 512), 124);
        assert_eq!(next_window_size(32, 512), 64);
        assert_eq!(next_window_size(256, 512), 512);
        assert_eq!(next_window_size(257, 512), 512);
        assert_eq!(next_window_size(2000, 512), 512);
        assert_eq!(next_window_size(u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn window_mark_and_end() {
        assert_eq!(w(10, 8, 3).mark(), Some(15));
        assert_eq!(w(10, 8, 8).mark(), Some(10));
        assert_eq!(w(10, 8, 0).mark(), None);
        assert_eq!(w(10, 8, 0).end(), 18);
        assert_eq!(w(u64::MAX - 1, 5, 2).end(), u64::MAX);
        assert!(w(10, 8, 0).contains(17) && !w(10, 8, 0).contains(18));
    }

    #[test]
    fn sequential_single_pages_ramp_up_to_max() {
        let mut ra = State::new(512);
        let log = stream(&mut ra, 1, 1400);
        assert_eq!(
            log,
            vec![
                (Ev::Miss(0), w(0, 4, 3)),
                (Ev::Mark(1), w(4, 16, 16)),
                (Ev::Mark(4), w(20, 64, 64)),
                (Ev::Mark(20), w(84, 128, 128)),
                (Ev::Mark(84), w(212, 256, 256)),
                (Ev::Mark(212), w(468, 512, 512)),
                (Ev::Mark(468), w(980, 512, 512)),
                (Ev::Mark(980), w(1492, 512, 512)),
            ]
        );
        assert_eq!(ra.window(), w(1492, 512, 512));
    }

    #[test]
    fn sequential_128k_reads_ramp_up_to_max() {
        let mut ra = State::new(512);
        let log = stream(&mut ra, 32, 1440);
        assert_eq!(
            log,
            vec![
                (Ev::Miss(0), w(0, 64, 32)),
                (Ev::Mark(32), w(64, 128, 128)),
                (Ev::Mark(64), w(192, 256, 256)),
                (Ev::Mark(192), w(448, 512, 512)),
                (Ev::Mark(448), w(960, 512, 512)),
                (Ev::Mark(960), w(1472, 512, 512)),
            ]
        );
    }

    #[test]
    fn sequential_stream_from_the_middle_of_a_file() {
        // Not at page 0: the first miss looks random, the next one follows it.
        let mut ra = State::new(512);
        let mut sim = Sim::new();
        let mut prev = 0;
        for i in 1000..1030 {
            sim.read(&mut ra, &mut prev, i, 1);
        }
        assert_eq!(
            sim.log,
            vec![
                (Ev::Miss(1000), w(1000, 1, 0)),
                (Ev::Miss(1001), w(1001, 4, 3)),
                (Ev::Mark(1002), w(1005, 16, 16)),
                (Ev::Mark(1005), w(1021, 64, 64)),
                (Ev::Mark(1021), w(1085, 128, 128)),
            ]
        );
    }

    #[test]
    fn request_bigger_than_max() {
        let mut ra = State::new(64);
        // Read directly: the window is max pages, marked half way so the rest follows.
        let win = ra.on_miss(1000, 200, 0, PS, |_| false);
        assert_eq!(win, w(1000, 64, 32));
        assert_eq!(win.mark(), Some(1032));

        // Through the read path: after the first window the marks keep the rest coming.
        let mut ra = State::new(64);
        let mut sim = Sim::new();
        let mut prev = 0;
        sim.read(&mut ra, &mut prev, 1000, 200);
        assert_eq!(
            sim.log,
            vec![
                (Ev::Miss(1000), w(1000, 64, 32)),
                (Ev::Mark(1032), w(1064, 64, 64)),
                (Ev::Mark(1064), w(1128, 64, 64)),
                (Ev::Mark(1128), w(1192, 64, 64)),
                (Ev::Mark(1192), w(1256, 64, 64)),
            ]
        );
        // Same at the start of the file.
        let mut ra = State::new(64);
        assert_eq!(ra.on_miss(0, 1000, 0, PS, |_| false), w(0, 64, 32));
    }

    #[test]
    fn request_equal_to_max_is_merged_with_the_next_window() {
        let mut ra = State::new(32);
        // The whole first window would be async (its mark on the page being read): readit
        // merges, which at the cap means max pages with the mark half way.
        assert_eq!(ra.on_miss(0, 32, 0, PS, |_| false), w(0, 32, 16));
        // A sync miss just past the window (its mark never reached) keeps ramping from the
        // missed page, and merges too: next(4) = 8, plus next(8) = 16, marked after the 8.
        let mut ra = State::new(64);
        assert_eq!(ra.on_miss(0, 1, 0, PS, |_| false), w(0, 4, 3));
        assert_eq!(ra.on_miss(4, 1, 0, PS, |_| false), w(4, 24, 16));
    }

    #[test]
    fn two_interleaved_streams_both_ramp() {
        let mut ra = State::new(512);
        let mut sim = Sim::new();
        // One handle (one State, one prev_pos) read by two sequential readers taking turns.
        let mut prev = 0;
        for r in 0..600 {
            sim.read(&mut ra, &mut prev, r, 1);
            sim.read(&mut ra, &mut prev, 100_000 + r, 1);
        }
        assert_eq!(
            sim.log,
            vec![
                (Ev::Miss(0), w(0, 4, 3)),
                // B's first two reads look random: no cached history yet, no state change.
                (Ev::Miss(100_000), w(100_000, 1, 0)),
                (Ev::Mark(1), w(4, 16, 16)),
                (Ev::Miss(100_001), w(100_001, 1, 0)),
                // Two cached pages behind B: context readahead starts a stream.
                (Ev::Miss(100_002), w(100_002, 3, 1)),
                // A's mark does not match B's state: the cached run 5..20 gives the size.
                (Ev::Mark(4), w(20, 68, 68)),
                (Ev::Mark(100_004), w(100_005, 8, 8)),
                (Ev::Mark(100_005), w(100_013, 32, 32)),
                (Ev::Mark(100_013), w(100_045, 64, 64)),
                (Ev::Mark(20), w(88, 138, 138)),
                (Ev::Mark(100_045), w(100_109, 130, 130)),
                (Ev::Mark(88), w(226, 278, 278)),
                (Ev::Mark(100_109), w(100_239, 262, 262)),
                (Ev::Mark(226), w(504, 512, 512)),
                (Ev::Mark(100_239), w(100_501, 512, 512)),
                (Ev::Mark(100_501), w(101_013, 512, 512)),
                (Ev::Mark(504), w(1016, 512, 512)),
            ]
        );
    }

    #[test]
    fn random_reads_read_only_what_is_asked() {
        let mut ra = State::new(512);
        let mut sim = Sim::new();
        let mut prev = 0;
        for &(i, n) in &[
            (5000, 1),
            (17, 1),
            (90_000, 4),
            (333, 1),
            (70_000, 2),
            (42, 8),
        ] {
            sim.read(&mut ra, &mut prev, i, n);
        }
        assert_eq!(
            sim.log,
            vec![
                (Ev::Miss(5000), w(5000, 1, 0)),
                (Ev::Miss(17), w(17, 1, 0)),
                (Ev::Miss(90_000), w(90_000, 4, 0)),
                (Ev::Miss(333), w(333, 1, 0)),
                (Ev::Miss(70_000), w(70_000, 2, 0)),
                (Ev::Miss(42), w(42, 8, 0)),
            ]
        );
        // Random reads do not pollute the state.
        assert_eq!(ra.window(), w(0, 0, 0));
        // Cached history no longer than the request is still random (`size <= req_size`).
        let win = ra.on_miss(2000, 2, 0, PS, |p| p >= 1998);
        assert_eq!(win, w(2000, 2, 0));
        // One page more of history than the request: a stream of history + request pages.
        let win = ra.on_miss(2000, 2, 0, PS, |p| p >= 1997);
        assert_eq!(win, w(2000, 5, 1));
        // History back to page 0 counts double (whole-file read): 2 * 10 + 1.
        let mut ra = State::new(512);
        assert_eq!(ra.on_miss(10, 1, 0, PS, |p| p < 10), w(10, 21, 1));
        // History is looked up at most max pages back.
        let mut ra = State::new(16);
        assert_eq!(ra.on_miss(1000, 1, 0, PS, |_| true), w(1000, 16, 1));
    }

    #[test]
    fn advice_random_reads_exactly_the_request() {
        let mut ra = State::new(512);
        ra.set_advice(Advice::Random);
        assert_eq!(ra.advice(), Advice::Random);
        assert_eq!(ra.on_miss(0, 1, 0, PS, |_| false), w(0, 1, 0));
        assert_eq!(ra.on_miss(1, 1, PS, PS, |_| false), w(1, 1, 0));
        assert_eq!(ra.on_miss(2, 32, 2 * PS, PS, |_| true), w(2, 32, 0));
        assert_eq!(ra.on_miss(10, 1000, 0, PS, |_| false), w(10, 512, 0));
        assert_eq!(ra.on_marker(1, 1, |_| true), None);
        assert_eq!(ra.window(), w(0, 0, 0));
        // Back to normal: readahead again.
        ra.set_advice(Advice::Normal);
        assert_eq!(ra.on_miss(0, 1, 0, PS, |_| false), w(0, 4, 3));
    }

    #[test]
    fn advice_sequential_doubles_the_cap() {
        let mut ra = State::new(256);
        assert_eq!(
            sizes(&stream(&mut ra, 1, 600)),
            vec![4, 16, 32, 64, 128, 256, 256, 256]
        );
        let mut ra = State::new(256);
        ra.set_advice(Advice::Sequential);
        assert_eq!(ra.max_pages(), 256);
        assert_eq!(ra.ra_pages(), 512);
        assert_eq!(
            sizes(&stream(&mut ra, 1, 1400)),
            vec![4, 16, 64, 128, 256, 512, 512, 512]
        );
        ra.set_advice(Advice::Normal);
        assert_eq!(ra.ra_pages(), 256);
    }

    #[test]
    fn set_max_pages_caps_the_windows() {
        let mut ra = State::new(512);
        ra.set_max_pages(8);
        assert_eq!(ra.max_pages(), 8);
        assert_eq!(sizes(&stream(&mut ra, 1, 40)), vec![2, 4, 8, 8, 8, 8, 8, 8]);
        ra.set_max_pages(0);
        assert_eq!(ra.max_pages(), 1);
        assert_eq!(ra.on_miss(0, 1, 0, PS, |_| false), w(0, 1, 0));
        assert_eq!(State::new(0).max_pages(), 1);
    }

    #[test]
    fn errors_shrink_the_windows() {
        let mut ra = State::new(512);
        let mut sim = Sim::new();
        let mut prev = 0;
        for i in 0..100 {
            sim.read(&mut ra, &mut prev, i, 1);
        }
        assert_eq!(ra.window(), w(212, 256, 256));

        // A read at page 300 failed (its pages were dropped): the retry reads that page alone.
        ra.on_error();
        assert_eq!(ra.ra_pages(), 128);
        assert_eq!(ra.window(), w(212, 128, 128));
        assert_eq!(ra.on_miss(300, 4, 300 * PS, PS, |_| false), w(300, 1, 0));
        // Then readahead starts over, capped at a quarter.
        assert_eq!(ra.on_miss(301, 1, 301 * PS, PS, |_| false), w(301, 4, 3));
        assert_eq!(ra.on_marker(302, 1, |_| true), Some(w(305, 16, 16)));
        assert_eq!(ra.on_marker(305, 1, |_| true), Some(w(321, 32, 32)));
        assert_eq!(ra.on_marker(321, 1, |_| true), Some(w(353, 64, 64)));
        assert_eq!(ra.on_marker(353, 1, |_| true), Some(w(417, 128, 128)));
        assert_eq!(ra.on_marker(417, 1, |_| true), Some(w(545, 128, 128)));

        // More errors: 128 -> 32 -> 8 -> 2 -> 0, then no readahead at all.
        ra.on_error();
        assert_eq!(ra.ra_pages(), 32);
        assert_eq!(ra.window(), w(545, 32, 32));
        for _ in 0..3 {
            ra.on_error();
        }
        assert_eq!(ra.ra_pages(), 0);
        assert_eq!(ra.on_miss(600, 4, 600 * PS, PS, |_| false), w(600, 1, 0));
        assert_eq!(ra.on_miss(601, 4, 601 * PS, PS, |_| false), w(601, 1, 0));
        assert_eq!(ra.on_marker(545, 1, |_| true), None);

        // fadvise restores the cap, as in the kernel.
        ra.set_advice(Advice::Normal);
        assert_eq!(ra.ra_pages(), 512);
        assert_eq!(ra.on_miss(0, 1, 0, PS, |_| false), w(0, 4, 3));
    }

    #[test]
    fn interleaved_mark_with_a_full_window_cached_ahead_reads_nothing() {
        let mut ra = State::new(16);
        // State belongs to another stream; everything after 100 is cached.
        assert_eq!(ra.on_miss(0, 1, 0, PS, |_| false), w(0, 2, 1));
        assert_eq!(ra.on_marker(100, 1, |_| true), None);
        assert_eq!(ra.window(), w(0, 2, 1));
        // One page short of a full window: read from the first miss.
        assert_eq!(ra.on_marker(100, 1, |p| p <= 115), Some(w(116, 16, 16)));
    }

    #[test]
    fn indices_near_u64_max_do_not_overflow() {
        let top = u64::MAX;
        let mut ra = State::new(512);
        // Sequential with the previous read (page_size 1 keeps prev_pos in range).
        assert_eq!(
            ra.on_miss(top - 2, 1, top - 2, 1, |_| false),
            w(top - 2, 2, 0)
        );
        assert_eq!(ra.on_miss(top - 1, 1, 0, PS, |_| false), w(top - 1, 1, 0));
        assert_eq!(ra.on_miss(top, 1, 0, PS, |_| false), w(top, 0, 0));
        assert_eq!(ra.on_miss(top, u64::MAX, top, 1, |_| true), w(top, 0, 0));
        assert_eq!(
            ra.on_miss(top - 10, u64::MAX, 0, PS, |_| true),
            w(top - 10, 10, 0)
        );
        // Context readahead with everything cached behind.
        assert_eq!(
            ra.on_miss(top - 100, 1, 0, PS, |_| true),
            w(top - 100, 100, 0)
        );

        // A stream ramping into the end of the index space.
        let mut ra = State::new(512);
        // (page_size 0 gives no previous position: only the cached history counts.)
        let history = |p: u64| p >= top - 50 && p < top - 40;
        assert_eq!(ra.on_miss(top - 40, 1, 0, 0, history), w(top - 40, 11, 1));
        assert_eq!(
            ra.on_marker(top - 30, 1, |_| false),
            Some(w(top - 29, 29, 0))
        );
        assert_eq!(ra.window(), w(top - 29, 29, 0));
        assert_eq!(ra.on_marker(top - 29, 1, |_| true), None);
        assert_eq!(ra.on_marker(top, 1, |_| true), None);
        assert_eq!(ra.on_marker(top - 1, u64::MAX, |_| false), None);

        // Huge caps and requests.
        let mut ra = State::new(u64::MAX);
        ra.set_advice(Advice::Sequential);
        assert_eq!(ra.ra_pages(), u64::MAX);
        assert_eq!(
            ra.on_miss(0, u64::MAX, 0, PS, |_| false),
            w(0, u64::MAX, u64::MAX / 2)
        );
        let mut ra = State::new(u64::MAX);
        assert_eq!(ra.on_miss(5, 1, 0, PS, |_| false), w(5, 1, 0));
        assert_eq!(ra.on_miss(1, 1, PS, PS, |_| false), w(1, 4, 3));
    }
}
