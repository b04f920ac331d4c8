//! The wake word of a thread that waits in its own `io_uring` for its completions and for
//! wake-ups at once (the `io_uring` backend's rings per blocking thread).
//!
//! A [`RingWake`] is one 32-bit word with two bits: `NOTIFIED`, set by every wake, and
//! `IN_RING`, set by the owning thread while it is (or is about to be) blocked in
//! `io_uring_enter`. The thread's ring keeps an `IORING_OP_FUTEX_WAIT` armed on the word that
//! expects exactly [`RingWake::FUTEX_EXPECTED`] (`IN_RING` alone), so a `futex_wake` of the
//! word ends the thread's wait in the kernel. This module owns only the protocol on the word;
//! the system calls (arming the wait, `futex_wake`) are the backend's.
//!
//! # No lost wake-up
//!
//! The thread [`enter`](RingWake::enter)s (an atomic OR returning the old word) and waits only
//! if `NOTIFIED` was not set; a wake [`notify`](RingWake::notify)s (also an atomic OR) and
//! asks for a `futex_wake` exactly when the old word had `IN_RING` and not `NOTIFIED`. Both are
//! read-modify-writes of one word, so either the wake comes first (the thread sees `NOTIFIED`
//! and does not wait) or the thread does (the wake sees `IN_RING` and wakes the futex). A futex
//! wait armed while the word is anything but `IN_RING` completes at once (`EAGAIN`). The loom
//! models `loom_ring_wake_*` check both cases: a wait armed as the thread enters, and one armed
//! earlier and still pending.

use crate::sync::atomic::{AtomicU32, Ordering};

const NOTIFIED: u32 = 1;
const IN_RING: u32 = 2;

/// The wake word of one thread (see the module docs).
///
/// ```
/// use uringcache_core::ring_wake::RingWake;
///
/// let word = RingWake::new();
/// assert!(word.enter()); // nothing pending: the thread may wait in its ring
/// assert!(word.notify()); // a wake while it waits: futex_wake the word
/// word.leave();
/// word.take_notified();
/// assert!(!word.notify()); // a wake while it runs: no system call
/// assert!(!word.enter()); // ...and the thread does not wait
/// ```
#[derive(Debug, Default)]
pub struct RingWake {
    state: AtomicU32,
}

impl RingWake {
    /// The value an armed futex wait on the word expects: `IN_RING` alone (the thread waits,
    /// and no wake has come since it entered).
    pub const FUTEX_EXPECTED: u32 = IN_RING;

    /// A word with no wake pending and the thread running.
    pub fn new() -> RingWake {
        RingWake {
            state: AtomicU32::new(0),
        }
    }

    /// A wake-up: records it, and returns whether the thread must be woken with a
    /// `futex_wake` of the word (it is in its ring and nobody woke it yet). The caller also
    /// unparks the thread, which may be parked instead (nothing of its own in flight).
    pub fn notify(&self) -> bool {
        let old = self.state.fetch_or(NOTIFIED, Ordering::AcqRel);
        old & (IN_RING | NOTIFIED) == IN_RING
    }

    /// Takes a pending wake, before the thread polls its future again.
    pub fn take_notified(&self) {
        self.state.fetch_and(!NOTIFIED, Ordering::AcqRel);
    }

    /// Whether a wake is pending.
    pub fn notified(&self) -> bool {
        self.state.load(Ordering::Acquire) & NOTIFIED != 0
    }

    /// The thread is about to wait in its ring: returns `false` if a wake is already pending
    /// (then it must not wait, only submit), `true` if it may wait.
    pub fn enter(&self) -> bool {
        self.state.fetch_or(IN_RING, Ordering::AcqRel) & NOTIFIED == 0
    }

    /// The thread is back from its ring.
    pub fn leave(&self) {
        self.state.fetch_and(!IN_RING, Ordering::AcqRel);
    }

    /// Whether a futex wait that expects [`FUTEX_EXPECTED`](Self::FUTEX_EXPECTED), armed now,
    /// would sleep (what the kernel checks when it arms the wait).
    pub fn futex_would_sleep(&self) -> bool {
        self.state.load(Ordering::Acquire) == Self::FUTEX_EXPECTED
    }

    /// The word's address, for the futex wait and wake system calls.
    #[cfg(not(loom))]
    pub fn as_ptr(&self) -> *mut u32 {
        self.state.as_ptr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_before_the_wait_keeps_the_thread_out_of_the_ring() {
        let w = RingWake::new();
        assert!(!w.notify(), "running: no futex wake");
        assert!(w.notified());
        assert!(!w.enter(), "a wake is pending: do not wait");
        assert!(!w.futex_would_sleep(), "an armed wait completes at once");
        w.leave();
        w.take_notified();
        assert!(!w.notified());
    }

    #[test]
    fn a_wake_during_the_wait_asks_for_one_futex_wake() {
        let w = RingWake::new();
        assert!(w.enter());
        assert!(w.futex_would_sleep());
        assert!(w.notify(), "in the ring: futex wake");
        assert!(!w.notify(), "already woken: no second system call");
        assert!(!w.futex_would_sleep());
        w.leave();
    }
}
