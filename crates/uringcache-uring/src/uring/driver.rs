//! The shared state, the submission queue, and the driver thread that reaps completions.
//!
//! * [`State`], behind the one mutex `Shared::state`, owns the submission queue's user-space
//!   side (a `SubmissionQueue` exists only while that mutex is held, so there is never more
//!   than one), the slab of in-flight operations (key = the SQE's `user_data`), the queue of
//!   requests waiting for completion queue room, the file table, and the `closing` flag.
//! * The driver thread ([`drive`]) owns the completion queue: it is its only consumer, so
//!   reaping needs no lock. It blocks in `io_uring_enter(GETEVENTS, min_complete = 1)`, takes
//!   every CQE available, decides under the mutex which operations finished and which continue
//!   (short transfers, `EINTR`, `EAGAIN`), starts waiting requests as room frees up, and then
//!   runs the completions with the mutex released.
//! * At most `max_inflight` operations (the completion queue's size less one, the slot of the
//!   shutdown wake-up) are in the slab, so the completion queue never overflows.
//! * Shutdown ([`Shared::close`]) sets `closing` and wakes the driver with a NOP whose
//!   `user_data` is [`WAKE`]; the driver stops once nothing is in flight or waiting.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use io_uring::{opcode, squeue, IoUring, SubmissionQueue};
use parking_lot::Mutex;
use slab::Slab;
use uringcache_core::backend::Completion;
use uringcache_core::frames::FrameArena;

use super::buffers::Regions;
use super::ops::InFlight;
use super::setup::FileEntry;
use super::thread_ring::Census;
use uringcache_core::backend::OpKind;

use crate::common::{complete, Counters, Step, MAX_RETRIES};

/// `user_data` of the NOP that wakes the driver at shutdown; never a slab key.
const WAKE: u64 = u64::MAX;

/// Everything behind the submission mutex.
pub(super) struct State {
    pub(super) ops: Slab<InFlight>,
    /// Requests waiting for completion queue room, oldest first.
    pub(super) pending: VecDeque<InFlight>,
    pub(super) files: Slab<FileEntry>,
    /// Slots in the registered file table (0: no table).
    pub(super) file_slots: u32,
    pub(super) closing: bool,
}

/// What the callers and the driver thread share.
pub(super) struct Shared {
    // Field order is drop order: the ring (and with it the kernel's references to the
    // registered buffers) goes before the arena.
    pub(super) ring: IoUring,
    pub(super) state: Mutex<State>,
    pub(super) arena: Arc<FrameArena>,
    pub(super) counters: Counters,
    /// The fixed-buffer table's regions (`None`: no table, every I/O unregistered).
    pub(super) buffers: Option<Regions>,
    pub(super) ftruncate_op: bool,
    pub(super) sqpoll: bool,
    pub(super) max_inflight: usize,
    pub(super) max_transfer: usize,
    /// The rings of blocking threads (`thread_ring`): how many, how much in flight.
    pub(super) thread_rings: Census,
    /// The rings reaped through tokio runtimes' reactors (`reactor_ring`).
    #[cfg(feature = "tokio")]
    pub(super) reactor_rings: Arc<super::reactor_ring::ReactorCensus>,
}

impl Shared {
    /// Pushes `entry`, submitting to make room when the queue is full.
    ///
    /// Called with the state mutex held (the caller owns `sq`).
    pub(super) fn push(&self, sq: &mut SubmissionQueue<'_>, entry: &squeue::Entry) {
        loop {
            // SAFETY: every buffer the entry names stays valid until its CQE: frames belong to
            // the cache and are not reused before the completion runs (Backend contract),
            // iovecs are boxed in the slab entry that is removed only after the CQE, and the
            // file stays open until `unregister` (Backend contract).
            if unsafe { sq.push(entry) }.is_ok() {
                return;
            }
            sq.sync();
            self.enter_submit();
            if self.sqpoll {
                let _ = self.ring.submitter().squeue_wait();
            }
            sq.sync();
        }
    }

    /// `io_uring_enter` to submit what is queued (no waiting).
    pub(super) fn enter_submit(&self) {
        for _ in 0..MAX_RETRIES {
            match self.ring.submit() {
                Ok(_) => {
                    self.counters.submitted();
                    return;
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) | Some(libc::EBUSY) => thread::yield_now(),
                    _ => {
                        tracing::error!("io_uring submit failed: {e}");
                        return;
                    }
                },
            }
        }
        tracing::error!("io_uring submit kept failing with EAGAIN/EBUSY; the driver will retry");
    }

    /// Starts `op` now: into the slab, its SQE into the queue.
    pub(super) fn start(&self, st: &mut State, sq: &mut SubmissionQueue<'_>, op: InFlight) {
        let entry = st.ops.vacant_entry();
        let key = entry.key();
        let op = entry.insert(op);
        let sqe = op.sqe(&self.arena, key);
        self.push(sq, &sqe);
    }

    /// Refuses new requests from now on and wakes the driver, which stops once every submitted
    /// operation has completed. Does nothing the second time.
    pub(super) fn close(&self) {
        let mut st = self.state.lock();
        if !st.closing {
            st.closing = true;
            // SAFETY: state mutex held (see `submit`).
            let mut sq = unsafe { self.ring.submission_shared() };
            self.push(&mut sq, &opcode::Nop::new().build().user_data(WAKE));
            drop(sq);
            self.enter_submit();
        }
    }
}

/// Starts the driver thread, `uringcache-uring`.
pub(super) fn spawn(shared: &Arc<Shared>) -> io::Result<JoinHandle<()>> {
    let driver_shared = Arc::clone(shared);
    thread::Builder::new()
        .name("uringcache-uring".into())
        .spawn(move || drive(&driver_shared))
}

/// The driver thread: wait for completions, reap them all, continue or finish each operation,
/// start waiting requests, run the completions.
fn drive(shared: &Shared) {
    let cq_cap = shared.ring.params().cq_entries() as usize;
    let mut cqes: Vec<(u64, i32)> = Vec::with_capacity(cq_cap);
    let mut finished: Vec<(Completion, OpKind, io::Result<usize>)> = Vec::with_capacity(cq_cap);
    loop {
        {
            let st = shared.state.lock();
            if st.closing && st.ops.is_empty() && st.pending.is_empty() {
                break;
            }
        }
        // Submits whatever the driver queued last round (continuations, waiting requests) and
        // sleeps until at least one completion is there.
        match shared.ring.submit_and_wait(1) {
            Ok(n) => {
                if n > 0 {
                    shared.counters.submitted();
                }
            }
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY) => {}
                _ => {
                    tracing::error!("io_uring_enter failed in the driver: {e}");
                    thread::sleep(std::time::Duration::from_millis(1));
                }
            },
        }
        {
            // SAFETY: the completion queue is only ever touched on this thread.
            let cq = unsafe { shared.ring.completion_shared() };
            cqes.extend(cq.map(|cqe| (cqe.user_data(), cqe.result())));
            // Dropping `cq` hands the entries back to the kernel.
        }
        if cqes.is_empty() {
            continue;
        }
        {
            let mut guard = shared.state.lock();
            let st = &mut *guard;
            // SAFETY: state mutex held (see `submit`).
            let mut sq = unsafe { shared.ring.submission_shared() };
            for (user_data, res) in cqes.drain(..) {
                if user_data == WAKE {
                    continue;
                }
                let key = user_data as usize;
                let Some(op) = st.ops.get_mut(key) else {
                    tracing::error!("io_uring completion for unknown operation {user_data}");
                    continue;
                };
                match op.on_cqe(res) {
                    Step::Again => {
                        let sqe = op.sqe(&shared.arena, key);
                        shared.push(&mut sq, &sqe);
                    }
                    Step::Done(result) => {
                        let op = st.ops.remove(key);
                        let kind = op.kind();
                        finished.push((op.done, kind, result));
                    }
                }
            }
            while st.ops.len() < shared.max_inflight {
                let Some(op) = st.pending.pop_front() else {
                    break;
                };
                shared.start(st, &mut sq, op);
            }
        }
        for (done, kind, result) in finished.drain(..) {
            complete(&shared.counters, kind, done, result);
        }
    }
    tracing::debug!("uringcache-uring driver stopped");
}
