//! Writeback error sequences: the kernel's `errseq_t` (`lib/errseq.c`), so that every handle
//! sees every writeback error exactly once.
//!
//! A mapping owns one [`ErrSeq`]: a single atomic word holding a counter of errors recorded so
//! far and the errno of the last one. A handle samples it when it opens ([`ErrSeq::sample`]) and
//! keeps the sample as its cursor. When the handle syncs, [`ErrSeq::check_and_advance`] compares
//! the word with its cursor: if errors were recorded since, the handle gets the latest errno and
//! its cursor moves on, so the next sync of the same handle does not report it again — while
//! every *other* handle open at the time still has its own report pending.
//!
//! This is what PostgreSQL's "fsyncgate" (2018) was about: a write error must not be consumed by
//! whichever handle happens to sync first, and must never turn into a clean page.
//!
//! # Invariants
//!
//! * The counter only grows; a cursor never passes the current value.
//! * A handle opened after an error does not report it (its sample already includes it).

use crate::sync::atomic::{AtomicU64, Ordering};

/// The error sequence of one mapping.
#[derive(Debug, Default)]
pub struct ErrSeq(AtomicU64);

/// A handle's position in an [`ErrSeq`] (`file->f_wb_err`).
#[derive(Debug, Default)]
pub struct ErrCursor(AtomicU64);

const ERRNO_BITS: u32 = 16;
const ERRNO_MASK: u64 = (1 << ERRNO_BITS) - 1;

impl ErrSeq {
    /// A sequence with no error recorded.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an error (`errseq_set`); `errno` is a positive OS error number.
    pub fn set(&self, errno: i32) {
        let errno = (errno.unsigned_abs() as u64 & ERRNO_MASK).max(1);
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            let count = (cur >> ERRNO_BITS) + 1;
            let new = (count << ERRNO_BITS) | errno;
            match self
                .0
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }

    /// A cursor that sees only errors recorded from now on (`errseq_sample`).
    pub fn sample(&self) -> ErrCursor {
        ErrCursor(AtomicU64::new(self.0.load(Ordering::Acquire)))
    }

    /// Number of errors recorded so far.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Acquire) >> ERRNO_BITS
    }

    /// Whether errors were recorded since `cursor` was last advanced, without advancing it
    /// (`errseq_check`). Returns the latest errno.
    pub fn check(&self, cursor: &ErrCursor) -> Option<i32> {
        let cur = self.0.load(Ordering::Acquire);
        if cur != cursor.0.load(Ordering::Acquire) {
            Some((cur & ERRNO_MASK) as i32)
        } else {
            None
        }
    }

    /// Reports errors recorded since `cursor` and moves the cursor past them
    /// (`errseq_check_and_advance`). Two concurrent calls on one cursor report an error once.
    pub fn check_and_advance(&self, cursor: &ErrCursor) -> Option<i32> {
        let cur = self.0.load(Ordering::Acquire);
        let seen = cursor.0.swap(cur, Ordering::AcqRel);
        if seen != cur && (cur >> ERRNO_BITS) > (seen >> ERRNO_BITS) {
            Some((cur & ERRNO_MASK) as i32)
        } else {
            None
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn each_handle_sees_each_error_once() {
        let seq = ErrSeq::new();
        let a = seq.sample();
        let b = seq.sample();
        assert_eq!(seq.check_and_advance(&a), None);
        seq.set(libc::EIO);
        let late = seq.sample();
        assert_eq!(seq.check(&a), Some(libc::EIO));
        assert_eq!(seq.check_and_advance(&a), Some(libc::EIO));
        assert_eq!(seq.check_and_advance(&a), None, "reported once to a");
        assert_eq!(
            seq.check_and_advance(&b),
            Some(libc::EIO),
            "b still gets it"
        );
        assert_eq!(seq.check_and_advance(&late), None, "opened after the error");
        seq.set(libc::ENOSPC);
        assert_eq!(seq.check_and_advance(&late), Some(libc::ENOSPC));
        assert_eq!(seq.check_and_advance(&b), Some(libc::ENOSPC));
        assert_eq!(seq.count(), 2);
    }

    #[test]
    fn the_same_errno_twice_is_two_errors() {
        let seq = ErrSeq::new();
        let a = seq.sample();
        seq.set(libc::EIO);
        assert_eq!(seq.check_and_advance(&a), Some(libc::EIO));
        seq.set(libc::EIO);
        assert_eq!(seq.check_and_advance(&a), Some(libc::EIO));
    }

    #[test]
    fn concurrent_checks_on_one_cursor_report_once() {
        use std::sync::Arc;
        for _ in 0..200 {
            let seq = Arc::new(ErrSeq::new());
            let cursor = Arc::new(seq.sample());
            seq.set(libc::EIO);
            let hits: usize = (0..4)
                .map(|_| {
                    let (s, c) = (seq.clone(), cursor.clone());
                    std::thread::spawn(move || s.check_and_advance(&c).is_some() as usize)
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|h| h.join().unwrap())
                .sum();
            assert_eq!(hits, 1);
        }
    }
}
