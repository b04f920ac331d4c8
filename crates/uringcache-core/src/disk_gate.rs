//! The disk gate: device writes and cuts of one file never overlap in time.
//!
//! A cut is an `ftruncate` of the file on disk (a sync trimming the tail block that `O_DIRECT`
//! wrote whole, `set_len`, letting go of a file). Two things go wrong when a cut and a direct
//! write of the same file are in flight together:
//!
//! * **a false error**: an `ftruncate` to an unaligned length makes ext4 zero the partial last
//!   block through the kernel's own page cache (`ext4_block_truncate_page`); an `O_DIRECT`
//!   write of that block at the same moment cannot invalidate that page, and the kernel
//!   records `EIO` in the file's error sequence ("Page cache invalidation failure on direct
//!   I/O"), which the next `fsync` reports although nothing failed;
//! * **a wrong length**: a write of the tail block landing after the `ftruncate` leaves the file
//!   longer than the length cut to, while the cut's completion records that length.
//!
//! [`DiskGate`] serialises them the way a reader-writer lock would, without blocking anyone:
//! writes are admitted while no cut is registered; a registered cut waits until the writes in
//! flight have completed, and writes submitted meanwhile are *held* (kept, not submitted) until
//! every registered cut has completed, then released in one batch. Cuts run one at a time, in
//! the order registered. Every decision is returned to the caller, which submits what it is
//! told to; nothing here does I/O. The caller keeps the gate under its own lock.
//!
//! ```
//! use uringcache_core::disk_gate::DiskGate;
//! let mut gate: DiskGate<&str, u64> = DiskGate::new();
//! assert_eq!(gate.admit(vec!["w1"]), vec!["w1"]); // no cut: submit at once
//! assert_eq!(gate.register_cut(700), None); // a write is in flight: the cut waits
//! assert!(gate.admit(vec!["w2"]).is_empty()); // held behind the cut
//! assert_eq!(gate.write_done(), Some(700)); // the last write done: start the cut
//! let done = gate.cut_done();
//! assert_eq!((done.next_cut, done.release), (None, vec!["w2"]));
//! ```

use std::collections::VecDeque;

/// Writes and cuts of one file, kept apart in time; see the module docs. `W` is a write
/// request, `C` what the caller needs to start a cut (its length, its completion).
#[derive(Debug)]
pub struct DiskGate<W, C> {
    /// Writes submitted and not yet completed.
    writes: usize,
    /// Cuts registered and not started yet, in registration order.
    cuts: VecDeque<C>,
    /// A cut has been started (handed to the caller) and has not completed.
    cutting: bool,
    /// Writes submitted while a cut was registered, in submission order.
    held: Vec<W>,
}

impl<W, C> Default for DiskGate<W, C> {
    fn default() -> Self {
        Self::new()
    }
}

/// What the completion of a cut leads to.
#[derive(Debug, PartialEq, Eq)]
pub struct CutDone<W, C> {
    /// The next registered cut, to start now (no write is in flight).
    pub next_cut: Option<C>,
    /// Writes held behind the cuts, to submit now (no cut is registered any more).
    pub release: Vec<W>,
}

impl<W, C> DiskGate<W, C> {
    /// A gate with nothing in flight.
    pub fn new() -> Self {
        DiskGate {
            writes: 0,
            cuts: VecDeque::new(),
            cutting: false,
            held: Vec::new(),
        }
    }

    /// Offers writes for submission: returns those to submit now (all of them when no cut is
    /// registered, counted as in flight) and holds the others until the cuts are over.
    pub fn admit(&mut self, writes: Vec<W>) -> Vec<W> {
        if !self.cut_pending() {
            self.writes += writes.len();
            writes
        } else {
            self.held.extend(writes);
            Vec::new()
        }
    }

    /// A write admitted earlier has completed. Returns the cut to start, if this was the last
    /// write a registered cut waited for.
    pub fn write_done(&mut self) -> Option<C> {
        debug_assert!(self.writes > 0, "a write completed that was never admitted");
        self.writes = self.writes.saturating_sub(1);
        self.try_start_cut()
    }

    /// Registers a cut. Returns it back when it may start at once (no write in flight, no
    /// other cut registered before it); otherwise it starts later, from [`write_done`] or
    /// [`cut_done`].
    ///
    /// [`write_done`]: Self::write_done
    /// [`cut_done`]: Self::cut_done
    pub fn register_cut(&mut self, cut: C) -> Option<C> {
        self.cuts.push_back(cut);
        self.try_start_cut()
    }

    /// The running cut has completed (successfully or not): the next cut starts, or, when none
    /// is left, the held writes are released (and counted as in flight).
    pub fn cut_done(&mut self) -> CutDone<W, C> {
        debug_assert!(self.cutting, "a cut completed that was never started");
        self.cutting = false;
        let next_cut = self.try_start_cut();
        let release = if !self.cut_pending() {
            let held = std::mem::take(&mut self.held);
            self.writes += held.len();
            held
        } else {
            Vec::new()
        };
        CutDone { next_cut, release }
    }

    /// Whether a cut is registered (running or waiting): writes offered now are held.
    pub fn cut_pending(&self) -> bool {
        self.cutting || !self.cuts.is_empty()
    }

    /// Writes in flight (admitted, not completed).
    pub fn writes_in_flight(&self) -> usize {
        self.writes
    }

    fn try_start_cut(&mut self) -> Option<C> {
        if self.cutting || self.writes > 0 {
            return None;
        }
        let next = self.cuts.pop_front()?;
        self.cutting = true;
        Some(next)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn writes_flow_freely_without_cuts() {
        let mut g: DiskGate<u32, u64> = DiskGate::new();
        assert_eq!(g.admit(vec![1, 2]), vec![1, 2]);
        assert_eq!(g.writes_in_flight(), 2);
        assert_eq!(g.write_done(), None);
        assert_eq!(g.write_done(), None);
        assert_eq!(g.writes_in_flight(), 0);
    }

    #[test]
    fn a_cut_waits_for_every_write_in_flight_and_holds_new_ones() {
        let mut g: DiskGate<u32, u64> = DiskGate::new();
        g.admit(vec![1, 2]);
        assert_eq!(g.register_cut(100), None, "writes in flight");
        assert!(g.admit(vec![3]).is_empty(), "held behind the cut");
        assert_eq!(g.write_done(), None, "one write still in flight");
        assert_eq!(g.write_done(), Some(100));
        assert_eq!(g.writes_in_flight(), 0, "held writes are not in flight");
        assert!(g.admit(vec![4]).is_empty(), "still held while the cut runs");
        let done = g.cut_done();
        assert_eq!(done.next_cut, None);
        assert_eq!(done.release, vec![3, 4], "released in submission order");
        assert_eq!(g.writes_in_flight(), 2);
        assert!(!g.cut_pending());
    }

    #[test]
    fn cuts_run_one_at_a_time_in_order_and_writes_wait_for_all_of_them() {
        let mut g: DiskGate<u32, u64> = DiskGate::new();
        assert_eq!(g.register_cut(10), Some(10), "nothing in flight: at once");
        assert_eq!(g.register_cut(20), None, "one cut at a time");
        assert!(g.admit(vec![1]).is_empty());
        let first = g.cut_done();
        assert_eq!(first.next_cut, Some(20));
        assert!(first.release.is_empty(), "a cut is still registered");
        let second = g.cut_done();
        assert_eq!(second.next_cut, None);
        assert_eq!(second.release, vec![1]);
    }

    #[test]
    fn a_cut_registered_while_the_released_writes_run_waits_for_them() {
        let mut g: DiskGate<u32, u64> = DiskGate::new();
        g.register_cut(10);
        g.admit(vec![1, 2]);
        assert_eq!(g.cut_done().release, vec![1, 2]);
        assert_eq!(g.register_cut(30), None);
        assert_eq!(g.write_done(), None);
        assert_eq!(g.write_done(), Some(30));
    }

    /// Random interleavings against the invariant: never a write in flight while a cut runs,
    /// and every write and cut eventually goes out.
    #[test]
    fn random_interleavings_never_overlap_a_write_and_a_cut() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..200 {
            let mut g: DiskGate<u32, u32> = DiskGate::new();
            let (mut in_flight, mut running): (Vec<u32>, Option<u32>) = (Vec::new(), None);
            let (mut next, mut started, mut offered, mut cuts_made, mut cuts_done) =
                (0u32, 0usize, 0usize, 0u32, 0u32);
            for _ in 0..300 {
                match rand(4) {
                    0 => {
                        next += 1;
                        offered += 1;
                        in_flight.extend(g.admit(vec![next]));
                    }
                    1 if !in_flight.is_empty() => {
                        let i = rand(in_flight.len() as u64) as usize;
                        in_flight.swap_remove(i);
                        started += 1;
                        if let Some(c) = g.write_done() {
                            assert!(running.replace(c).is_none());
                        }
                    }
                    2 => {
                        cuts_made += 1;
                        if let Some(c) = g.register_cut(cuts_made) {
                            assert!(running.replace(c).is_none());
                        }
                    }
                    _ => {
                        if let Some(c) = running.take() {
                            cuts_done += 1;
                            assert_eq!(c, cuts_done, "cuts run in registration order");
                            let d = g.cut_done();
                            running = d.next_cut;
                            in_flight.extend(d.release);
                        }
                    }
                }
                assert!(
                    running.is_none() || in_flight.is_empty(),
                    "a cut runs while writes are in flight"
                );
                assert_eq!(g.writes_in_flight(), in_flight.len());
            }
            // Drain: everything offered is eventually written, every cut made.
            loop {
                if let Some(c) = running.take() {
                    cuts_done += 1;
                    assert_eq!(c, cuts_done);
                    let d = g.cut_done();
                    running = d.next_cut;
                    in_flight.extend(d.release);
                } else if let Some(_w) = in_flight.pop() {
                    started += 1;
                    running = g.write_done();
                } else {
                    break;
                }
            }
            assert_eq!(cuts_done, cuts_made);
            assert_eq!(started, offered);
        }
    }
}
