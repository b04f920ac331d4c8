//! Group commit by write sequence: concurrent syncs of one file share flushes (the shape of
//! jbd2's commit sequence and of a WAL's group commit), as a pure state machine.
//!
//! Every writeback write request of the file takes the next sequence number when it is built
//! ([`GroupCommit::begin_write`]); a sync that has submitted its writes joins
//! ([`GroupCommit::join`]) needing a flush that *starts* once every write numbered up to its
//! `need` has completed. Flushes run one at a time, each covering the longest prefix of
//! completed writes at its start; the next one is started by whoever makes it possible — the
//! sync joining, the completion of the last write it waits for, or the completion of the flush
//! before it — so a write's completion leads straight to the flush on the completing thread,
//! with no task woken in between. Every method that may make a flush possible returns it as a
//! [`FlushStart`]: the caller submits it and reports its completion with
//! [`GroupCommit::flush_done`].
//!
//! Durability without a flush: the state counts completions that left bytes on the device
//! without making them durable (plain writes, direct writes, `ftruncate`s: its *epoch*). When
//! nothing non-durable completed since the last successful flush, a data sync whose writes were
//! all `RWF_DSYNC` is satisfied without a flush ([`GroupCommit::join`] and
//! [`GroupCommit::write_done`] release such waiters at once).
//!
//! ```
//! use uringcache_core::group_commit::{FlushStart, GroupCommit};
//! let mut g = GroupCommit::new();
//! let w = g.begin_write();
//! let (sync, start) = g.join(w, false); // needs write `w` flushed
//! assert_eq!(start, None, "the write is still in flight");
//! let done = g.write_done(w, false); // its completion makes the flush possible
//! assert_eq!(done.start, Some(FlushStart { full: false, covers: w }));
//! g.flush_done(true, FlushStart { full: false, covers: w });
//! assert!(!g.is_waiting(sync), "the sync's flush is done");
//! ```

use std::collections::BTreeSet;

/// A flush the caller must submit now: full (`fsync`) or data-only (`fdatasync`), covering the
/// writes numbered up to `covers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlushStart {
    /// Only a full flush satisfies some waiter (`fsync`, not `fdatasync`).
    pub full: bool,
    /// Every write numbered up to here had completed when the flush started.
    pub covers: u64,
}

/// What the completion of a write leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteDone {
    /// Some waiters were satisfied without a flush (wake them).
    pub settled: bool,
    /// The flush this write was the last one missing for.
    pub start: Option<FlushStart>,
}

/// The group-commit state of one file; see the module docs.
#[derive(Debug)]
pub struct GroupCommit {
    /// The sequence number the next write request gets (numbers start at 1).
    next_seq: u64,
    /// Write requests not yet completed.
    in_flight: BTreeSet<u64>,
    /// A flush is in flight.
    running: bool,
    /// Syncs waiting for a flush, each removed by the completion of the first flush that
    /// satisfies it.
    waiters: Vec<Waiter>,
    next_waiter: u64,
    /// Waiters with an id below this joined before the running flush started: only they can
    /// be satisfied by it (what a sync did before joining — an `ftruncate`, a direct write —
    /// must precede the flush's start).
    running_bound: u64,
    /// Set when a flush first became possible: it waits for the writes submitted up to here.
    cutoff: Option<u64>,
    /// Completions that left bytes on the device without making them durable. Starts at 1:
    /// whatever was written before the cache opened the file is not known to be durable.
    epoch: u64,
    /// `epoch` at the start of the newest successful flush: when the two are equal, every
    /// completed write is durable — flushed, or written with `RWF_DSYNC`.
    flushed_epoch: u64,
    /// `epoch` at the start of the running flush.
    running_epoch: u64,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    /// The newest write the flush must cover.
    need: u64,
    /// Only a full flush will do.
    full: bool,
}

impl Default for GroupCommit {
    fn default() -> Self {
        Self::new()
    }
}

impl GroupCommit {
    /// Nothing written, nothing waiting; the file's earlier contents not known to be durable.
    pub fn new() -> Self {
        GroupCommit {
            next_seq: 1,
            in_flight: BTreeSet::new(),
            running: false,
            waiters: Vec::new(),
            next_waiter: 0,
            running_bound: 0,
            cutoff: None,
            epoch: 1,
            flushed_epoch: 0,
            running_epoch: 0,
        }
    }

    /// Numbers a write request about to be submitted, and counts it in flight.
    pub fn begin_write(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight.insert(seq);
        seq
    }

    /// The newest write numbered so far: a sync that has submitted its writes needs a flush
    /// covering up to here (its own writes and every write already in flight).
    pub fn last_write(&self) -> u64 {
        self.next_seq - 1
    }

    /// Write `seq` has completed; `durable` when it was a successful `RWF_DSYNC` write.
    pub fn write_done(&mut self, seq: u64, durable: bool) -> WriteDone {
        self.in_flight.remove(&seq);
        if !durable {
            self.epoch += 1;
        }
        WriteDone {
            settled: self.settle(),
            start: self.try_start(),
        }
    }

    /// Bytes reached the device without being made durable (a direct write, an `ftruncate`):
    /// the next sync must flush.
    pub fn note_unflushed(&mut self) {
        self.epoch += 1;
    }

    /// A sync joins, needing every write up to `need` flushed (`full`: by an `fsync`). Returns
    /// its id (for [`is_waiting`](Self::is_waiting) and [`leave`](Self::leave)) and the flush
    /// to start now, if its joining made one possible.
    pub fn join(&mut self, need: u64, full: bool) -> (u64, Option<FlushStart>) {
        let id = self.next_waiter;
        self.next_waiter += 1;
        self.waiters.push(Waiter { id, need, full });
        self.settle();
        (id, self.try_start())
    }

    /// Whether the sync `id` still waits for its flush.
    pub fn is_waiting(&self, id: u64) -> bool {
        self.waiters.iter().any(|w| w.id == id)
    }

    /// The sync `id` gives up waiting (its future was dropped).
    pub fn leave(&mut self, id: u64) {
        self.waiters.retain(|w| w.id != id);
    }

    /// The running flush `flush` has completed (`ok`: successfully). Releases every waiter it
    /// satisfies — joined before it started, every write it needs covered, wanting no more
    /// than it gave — and returns the next flush to start, if one is due. A failed flush
    /// releases its waiters too: the caller records the failure where they will find it.
    pub fn flush_done(&mut self, ok: bool, flush: FlushStart) -> Option<FlushStart> {
        self.running = false;
        if ok {
            self.flushed_epoch = self.flushed_epoch.max(self.running_epoch);
        }
        let bound = self.running_bound;
        let FlushStart { full, covers } = flush;
        self.waiters
            .retain(|w| !(w.id < bound && w.need <= covers && (full || !w.full)));
        self.settle();
        self.try_start()
    }

    /// Whether a sync alone on this file may write its pages with `RWF_DSYNC` instead of
    /// waiting for a flush: nothing in flight or waiting to share a flush with, and nothing
    /// non-durable to flush.
    pub fn alone_and_clean(&self) -> bool {
        !self.running
            && self.waiters.is_empty()
            && self.in_flight.is_empty()
            && self.epoch == self.flushed_epoch
    }

    /// The newest sequence number up to which every write has completed.
    fn completed_prefix(&self) -> u64 {
        match self.in_flight.first() {
            Some(&oldest) => oldest - 1,
            None => self.next_seq.max(1) - 1,
        }
    }

    /// Releases the data-sync waiters that need no flush: every write they need has completed
    /// and nothing completed since the last flush is non-durable (their writes were
    /// `RWF_DSYNC`). Returns whether any was released.
    fn settle(&mut self) -> bool {
        if self.epoch != self.flushed_epoch {
            return false;
        }
        let covers = self.completed_prefix();
        let before = self.waiters.len();
        self.waiters.retain(|w| w.full || w.need > covers);
        self.waiters.len() != before
    }

    /// Decides whether a flush may start now: none in flight and some waiter's writes all
    /// complete.
    fn try_start(&mut self) -> Option<FlushStart> {
        if self.running {
            return None;
        }
        let covers = self.completed_prefix();
        let mut ready = false;
        let mut full = false;
        for w in self.waiters.iter().filter(|w| w.need <= covers) {
            ready = true;
            full |= w.full;
        }
        if !ready {
            return None;
        }
        // Batching: the first time a flush could start, every write submitted so far is
        // included — the writes of syncs that joined a moment later are already on their way,
        // and a flush now would leave them to the next one. Writes submitted after that moment
        // do not delay it, so a stream of new syncs cannot starve the ready ones.
        let cutoff = *self.cutoff.get_or_insert(self.next_seq - 1);
        if covers < cutoff {
            return None;
        }
        self.cutoff = None;
        self.running = true;
        self.running_bound = self.next_waiter;
        self.running_epoch = self.epoch;
        Some(FlushStart { full, covers })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn start(full: bool, covers: u64) -> Option<FlushStart> {
        Some(FlushStart { full, covers })
    }

    #[test]
    fn a_flush_starts_when_the_writes_it_needs_complete() {
        let mut g = GroupCommit::new();
        let a = g.begin_write();
        let b = g.begin_write();
        assert_eq!(g.join(b, false).1, None);
        assert_eq!(
            g.write_done(b, false).start,
            None,
            "{a} is older and in flight"
        );
        assert_eq!(g.write_done(a, false).start, start(false, 2));
        let (_, again) = g.join(b, false);
        assert_eq!(again, None, "one flush at a time");
    }

    #[test]
    fn a_ready_flush_waits_for_writes_already_submitted_but_not_for_later_ones() {
        let mut g = GroupCommit::new();
        let a = g.begin_write();
        let b = g.begin_write(); // another sync's write, on its way
        g.write_done(a, false);
        assert_eq!(
            g.join(a, false).1,
            None,
            "{b} was submitted before it became possible"
        );
        let c = g.begin_write(); // later writes do not delay it
        g.join(c, true);
        // Covers 2 (c is in flight), and only the first waiter is ready: a data flush.
        assert_eq!(g.write_done(b, false).start, start(false, 2));
    }

    #[test]
    fn a_full_waiter_makes_the_flush_full_and_both_are_released_by_it() {
        let mut g = GroupCommit::new();
        let a = g.begin_write();
        g.write_done(a, false);
        let (x, first) = g.join(a, false);
        assert_eq!(first, start(false, 1));
        // Joined while the data flush runs: not satisfied by it, and wants a full one.
        let (y, none) = g.join(a, true);
        assert_eq!(none, None);
        let next = g.flush_done(true, first.unwrap());
        assert!(!g.is_waiting(x));
        assert!(g.is_waiting(y), "joined after the flush started");
        assert_eq!(next, start(true, 1));
        assert_eq!(g.flush_done(true, next.unwrap()), None);
        assert!(!g.is_waiting(y));
    }

    #[test]
    fn dsync_writes_alone_need_no_flush_but_an_unflushed_change_does() {
        let mut g = GroupCommit::new();
        let a = g.begin_write();
        g.write_done(a, false);
        let (s, f) = g.join(a, false);
        g.flush_done(true, f.unwrap());
        assert!(!g.is_waiting(s));
        assert!(g.alone_and_clean());
        let d = g.begin_write();
        let (s, f) = g.join(d, false);
        assert_eq!(f, None);
        let done = g.write_done(d, true); // RWF_DSYNC: durable by itself
        assert!(done.settled && !g.is_waiting(s));
        assert_eq!(done.start, None, "no flush needed");
        g.note_unflushed(); // an ftruncate, say
        assert!(!g.alone_and_clean());
        let (_, f) = g.join(d, false);
        assert_eq!(f, start(false, d), "the change must be flushed");
    }

    #[test]
    fn a_sync_that_leaves_is_not_waited_for() {
        let mut g = GroupCommit::new();
        let a = g.begin_write();
        let (s, _) = g.join(a, true);
        g.leave(s);
        assert_eq!(g.write_done(a, false).start, None, "nobody needs a flush");
    }
}
