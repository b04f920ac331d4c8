//! A ring of the backend's own besides the shared one, and the bookkeeping every such ring
//! needs: its in-flight operations (slab key = `user_data`), the operations waiting for room
//! in its completion queue, and reaping. Used by the rings of blocking threads
//! (`thread_ring`) and by the rings reaped through a tokio runtime's reactor (`reactor_ring`).
//!
//! Invariants: at most `cq_entries - RESERVED` operations are in the kernel at once (the
//! others wait in `pending`), which leaves room for the owner's few control entries (a futex
//! wait and its cancellation, a wake-up NOP) so the completion queue never overflows; an
//! operation leaves the slab only when its last CQE is reaped, so its frames and iovecs stay
//! valid while the kernel may use them. A ring is never touched by two threads at once: its
//! owner keeps it in a thread-local or behind a mutex.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use io_uring::{squeue, IoUring};
use slab::Slab;
use uringcache_core::backend::{Completion, OpKind};

use super::driver::Shared;
use super::ops::InFlight;
use crate::common::{Counters, Step};

/// Completion-queue entries kept free for the owner's control entries.
const RESERVED: usize = 2;

/// `user_data` at or above this are the owner's control entries, never slab keys.
pub(super) const FIRST_TAG: u64 = u64::MAX - 15;

/// A finished operation, its completion still to run (with every lock released).
pub(super) type Finished = (Completion, OpKind, io::Result<usize>);

/// How many rings of one kind (blocking threads', reactor rings) a backend may have and has,
/// and the one warning per backend when a thread must do without.
pub(super) struct RingQuota {
    /// Most rings; 0 when this kind is off.
    max: usize,
    live: AtomicUsize,
    warned: AtomicBool,
    /// The rings' kind and the setting that bounds them, for messages
    /// (`"thread rings (UringConfig::thread_rings)"`).
    kind: &'static str,
    /// Who falls back to the shared ring, for the warning (`"a blocking thread"`).
    user: &'static str,
}

impl RingQuota {
    pub(super) fn new(max: usize, kind: &'static str, user: &'static str) -> RingQuota {
        RingQuota {
            max,
            live: AtomicUsize::new(0),
            warned: AtomicBool::new(false),
            kind,
            user,
        }
    }

    /// Whether rings of this kind may be made at all.
    pub(super) fn enabled(&self) -> bool {
        self.max > 0
    }

    /// Rings of this kind in existence.
    pub(super) fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Takes one of the `max` places, or says why not.
    pub(super) fn admit(&self) -> Result<(), String> {
        let mut n = self.live.load(Ordering::Relaxed);
        loop {
            if n >= self.max {
                return Err(format!("{} {} exist already", self.max, self.kind));
            }
            match self
                .live
                .compare_exchange_weak(n, n + 1, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(now) => n = now,
            }
        }
    }

    /// Gives back a place taken by [`admit`](Self::admit).
    pub(super) fn release(&self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
    }

    /// Logs, once per backend, why a thread uses the shared ring.
    pub(super) fn warn_once(&self, why: &str) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "uringcache: {} uses the shared io_uring (completions reaped by the driver \
                 thread) instead of a ring of its own: {why}",
                self.user
            );
        }
    }
}

/// One ring and its operations.
pub(super) struct OwnRing {
    pub(super) ring: IoUring,
    ops: Slab<InFlight>,
    /// Operations waiting for room in the completion queue, oldest first.
    pending: VecDeque<InFlight>,
    max_inflight: usize,
    /// SQEs pushed since the last `io_uring_enter`.
    unsubmitted: bool,
    /// The CQEs of one reap, kept so that reaping does not allocate.
    cqes: Vec<(u64, i32)>,
}

impl OwnRing {
    pub(super) fn new(ring: IoUring) -> OwnRing {
        let max_inflight = (ring.params().cq_entries() as usize)
            .saturating_sub(RESERVED)
            .max(1);
        OwnRing {
            ring,
            ops: Slab::new(),
            pending: VecDeque::new(),
            max_inflight,
            unsubmitted: false,
            cqes: Vec::new(),
        }
    }

    /// No operation in the kernel or waiting.
    pub(super) fn idle(&self) -> bool {
        self.ops.is_empty() && self.pending.is_empty()
    }

    /// Whether SQEs were pushed since the last `io_uring_enter`.
    pub(super) fn unsubmitted(&self) -> bool {
        self.unsubmitted
    }

    /// Pushes an SQE, submitting to make room when the queue is full.
    ///
    /// The entry's buffers must stay valid until its CQE: for operations this holds (see
    /// [`start`](Self::start)); a control entry's owner keeps what it names alive.
    pub(super) fn push(&mut self, entry: &squeue::Entry, counters: &Counters) {
        loop {
            // SAFETY: every buffer the entry names stays valid until its CQE: frames belong to
            // the cache and are not reused before the completion runs (Backend contract),
            // iovecs are boxed in the slab entry that is removed only after the CQE, the file
            // stays open until `unregister` (Backend contract), and the owners of control
            // entries keep what they name alive longer than the ring (see their modules).
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                self.unsubmitted = true;
                return;
            }
            self.enter(0, counters);
        }
    }

    /// Starts `op`, or queues it when the completion queue has no room.
    pub(super) fn start(&mut self, shared: &Shared, op: InFlight) {
        if self.ops.len() >= self.max_inflight {
            self.pending.push_back(op);
            return;
        }
        let key = self.ops.insert(op);
        let sqe = self.ops[key].sqe(&shared.arena, key);
        self.push(&sqe, &shared.counters);
    }

    /// `io_uring_enter`: submits what is queued and waits for `want` completions. Errors
    /// other than a signal are logged; the caller's loop comes back.
    pub(super) fn enter(&mut self, want: usize, counters: &Counters) {
        match self.ring.submit_and_wait(want) {
            Ok(_) => {
                if std::mem::take(&mut self.unsubmitted) {
                    counters.submitted();
                }
            }
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN) | Some(libc::EBUSY) => thread::yield_now(),
                _ => tracing::error!("io_uring_enter failed on a uringcache ring: {e}"),
            },
        }
    }

    /// Takes every CQE there is: continues or finishes each operation (finished ones go to
    /// `finished`), hands control entries (`user_data >= FIRST_TAG`) to `on_tag`, and starts
    /// waiting operations as room frees up. Returns how many CQEs it took.
    pub(super) fn reap(
        &mut self,
        shared: &Shared,
        finished: &mut Vec<Finished>,
        mut on_tag: impl FnMut(u64),
    ) -> usize {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.extend(
            self.ring
                .completion()
                .map(|cqe| (cqe.user_data(), cqe.result())),
        );
        let taken = cqes.len();
        for (user_data, res) in cqes.drain(..) {
            if user_data >= FIRST_TAG {
                on_tag(user_data);
                continue;
            }
            let key = user_data as usize;
            let Some(op) = self.ops.get_mut(key) else {
                tracing::error!(
                    "io_uring completion for unknown operation {user_data} on a uringcache ring"
                );
                continue;
            };
            match op.on_cqe(res) {
                Step::Again => {
                    let sqe = op.sqe(&shared.arena, key);
                    self.push(&sqe, &shared.counters);
                }
                Step::Done(result) => {
                    let op = self.ops.remove(key);
                    let kind = op.kind();
                    finished.push((op.done, kind, result));
                }
            }
        }
        self.cqes = cqes;
        while self.ops.len() < self.max_inflight {
            let Some(op) = self.pending.pop_front() else {
                break;
            };
            self.start(shared, op);
        }
        taken
    }
}
