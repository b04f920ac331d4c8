//! Rings per blocking thread: a thread that blocks in [`UringBackend::block_on`] (the blocking
//! API's wait) gets an `io_uring` of its own, submits on it the requests it makes during the
//! call, and waits in the kernel for their completions, reaping and finishing them itself.
//!
//! # Why
//!
//! On the shared ring a completion crosses threads: the driver thread reaps the CQE and wakes
//! the waiting thread, two wake-ups and a thread hop where `pread` has none. On its own ring
//! the blocked thread makes one `io_uring_enter` that submits its request and waits for the
//! completion, as one `pread` would, and no other thread runs.
//!
//! # The rings
//!
//! * One per (thread, backend), made on the thread's first [`block_on`] with that backend and
//!   kept in a thread-local ([`ThreadRings`]) until the thread exits (the backend's state is
//!   held weakly: a ring of a backend that is gone is closed at the thread's next call).
//!   `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN` where the kernel has them
//!   (completions are posted only when this thread enters the kernel to wait, which is the
//!   only time it wants them), `COOP_TASKRUN` otherwise, plain as the last resort.
//! * Bounded: at most [`UringConfig::thread_rings`](super::UringConfig::thread_rings) per
//!   backend ([`Census`]). A thread over the bound, or whose ring cannot be made (memlock,
//!   `io_uring_disabled` set while running, no file descriptors), or a kernel without
//!   `IORING_OP_FUTEX_WAIT` (before 6.7, see below), uses the shared ring and the parking wait:
//!   nothing fails; one `tracing::warn` per backend names the cause.
//! * Only what the call waits for: requests submitted through
//!   [`submit_detached`](uringcache_core::backend::submit_detached) (async readahead) go to the
//!   shared ring even from a blocked thread, since the call must not wait for them.
//! * Files by descriptor and frames unregistered (`READV` / `WRITEV`): the shared ring's file
//!   and buffer tables are that ring's only.
//! * Flushes are not put on the ring: the thread calls `fdatasync` / `fsync` itself, inline
//!   (`Later::Fsync`). `IORING_OP_FSYNC` always runs on an io-wq worker, so on the ring the
//!   blocked thread would wait for that worker and then for the completion's task work; a
//!   thread that only waits can make the call with no hop at all. A flush is always
//!   submitted alone, after the writes it covers completed, so nothing in its batch waits on
//!   it.
//!
//! # Waiting for completions and for wake-ups at once
//!
//! A blocked future may wait for something other than its own I/O (a page another thread is
//! reading, a frame the flusher frees, a group commit led by another thread) while its own
//! I/O is in flight. So the thread waits in its ring for either: its waker ([`ThreadWake`])
//! holds a [`RingWake`] word, and the ring keeps an `IORING_OP_FUTEX_WAIT` armed on that word
//! (expecting [`RingWake::FUTEX_EXPECTED`]); a wake that finds the thread in its ring
//! `futex_wake`s the word, which completes the armed wait and so ends the thread's
//! `io_uring_enter`. The protocol on the word, and why no wake is lost, is
//! `uringcache_core::ring_wake` (with loom models).
//!
//! A wake that finds the thread running (its own completion, reaped by itself) is two atomic
//! operations and no system call. A thread with nothing of its own in flight parks instead
//! ([`std::thread::park`], which every wake also unparks).
//!
//! The issue asked to measure this against `IORING_OP_MSG_RING` wake-ups; that was not done:
//! a `MSG_RING` needs a ring to send from (the waker's thread has none, or only the shared one
//! behind its mutex), where a futex wake is one system call from any thread.
//!
//! # Invariants
//!
//! * A ring is touched only by its thread (it lives in a thread-local), so its queues need no
//!   lock, and `SINGLE_ISSUER` holds.
//! * Every request submitted on the thread during a [`block_on`] has completed when it returns:
//!   the scope's drop waits for the ring's operations (also when the future panicked), so no
//!   completion is ever left for a thread that has gone on to do something else, and a frame
//!   goes back to the pool only after its CQE (completions run only for reaped CQEs).
//! * At most `cq_entries - 2` operations are in the kernel (the others wait in the ring's
//!   queue), leaving room for the futex wait and its cancellation: the CQ never overflows.
//! * The futex word lives in the `Arc<ThreadWake>` that the ring holds, so it outlives any
//!   wait armed on it; a ring being closed cancels its wait and reaps the cancellation first.
//! * No completion runs with the thread-local borrowed, so a completion (or a future) may
//!   submit again.
//! * Shutdown: [`UringBackend::shutdown`](super::UringBackend) drains the calling thread's own
//!   ring, then waits until no thread ring of the backend has an operation in flight
//!   ([`Census::wait_idle`]); requests submitted after it started fail with the shutdown error.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use io_uring::{opcode, IoUring};
use parking_lot::{Condvar, Mutex};
use uringcache_core::backend::{park_until_ready, submitting_detached, Op, Request};
use uringcache_core::ring_wake::RingWake;

use super::driver::Shared;
use super::ops::Later;
use super::own_ring::{Finished, OwnRing, RingQuota, FIRST_TAG};
use super::NAME;
use crate::common::{complete, shut_down_error, Counters};

/// Submission queue entries of a thread ring (the completion queue gets twice as many).
const ENTRIES: u32 = 64;

/// `user_data` of the ring's futex wait; never a slab key.
const FUTEX_TAG: u64 = FIRST_TAG + 1;
/// `user_data` of the cancellation of that wait.
const CANCEL_TAG: u64 = FIRST_TAG + 2;

/// `futex2` flags of the armed wait: a 32-bit, process-private futex.
const FUTEX2_SIZE_U32: u32 = 0x02;
const FUTEX2_PRIVATE: u32 = 128;
/// Any waiter (`FUTEX_BITSET_MATCH_ANY`).
const FUTEX_MATCH_ANY: u64 = u32::MAX as u64;

/// What a backend keeps about its thread rings: whether they are on, how many exist, how many
/// operations they have in flight (for shutdown).
pub(super) struct Census {
    /// How many rings (none when thread rings are off: configured so, or no `FUTEX_WAIT`
    /// opcode).
    quota: RingQuota,
    in_flight: AtomicUsize,
    /// Operations completed on thread rings, ever.
    completions: AtomicU64,
    closing: AtomicBool,
    idle_lock: Mutex<()>,
    idle: Condvar,
}

impl Census {
    /// `max` rings at most; none when `futex_op` is false (the kernel lacks
    /// `IORING_OP_FUTEX_WAIT`, Linux 6.7).
    pub(super) fn new(max: usize, futex_op: bool) -> Census {
        if max > 0 && !futex_op {
            tracing::debug!(
                "io_uring lacks FUTEX_WAIT (Linux 6.7); blocking calls use the shared ring"
            );
        }
        Census {
            quota: RingQuota::new(
                if futex_op { max } else { 0 },
                "thread rings (UringConfig::thread_rings)",
                "a blocking thread",
            ),
            in_flight: AtomicUsize::new(0),
            completions: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            idle_lock: Mutex::new(()),
            idle: Condvar::new(),
        }
    }

    /// Whether blocking calls may get rings of their own.
    pub(super) fn enabled(&self) -> bool {
        self.quota.enabled()
    }

    /// Thread rings in existence.
    pub(super) fn live(&self) -> usize {
        self.quota.live()
    }

    fn started(&self, n: usize) {
        self.in_flight.fetch_add(n, Ordering::SeqCst);
    }

    /// Operations completed on thread rings so far.
    pub(super) fn completions(&self) -> u64 {
        self.completions.load(Ordering::Relaxed)
    }

    /// A request this thread made itself, inline (a flush: see `Later::Fsync`).
    fn completed_inline(&self) {
        self.completions.fetch_add(1, Ordering::Relaxed);
    }

    fn finished(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.completions.fetch_add(n as u64, Ordering::Relaxed);
        if self.in_flight.fetch_sub(n, Ordering::SeqCst) == n && self.closing.load(Ordering::SeqCst)
        {
            let _guard = self.idle_lock.lock();
            self.idle.notify_all();
        }
    }

    /// Waits until no thread ring of the backend has an operation in flight (at shutdown;
    /// each ring's own thread reaps them).
    pub(super) fn wait_idle(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let mut guard = self.idle_lock.lock();
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            self.idle.wait(&mut guard);
        }
    }
}

/// The waker of a thread blocked in [`block_on`] (see the module docs for the protocol).
struct ThreadWake {
    /// Also the futex word of the rings' armed waits.
    word: RingWake,
    thread: Thread,
}

impl Wake for ThreadWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.word.notify() {
            futex_wake(&self.word);
        }
        self.thread.unpark();
    }
}

/// `FUTEX_WAKE` on `word`, every waiter.
fn futex_wake(word: &RingWake) {
    // SAFETY: a plain system call on the address of a live word; the kernel only uses it as
    // a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
}

/// A thread's own ring for one backend.
struct ThreadRing {
    // Field order is drop order: the ring goes before the futex word it may wait on (and
    // `Drop` cancels that wait first anyway).
    own: OwnRing,
    futex_armed: bool,
    wake: Arc<ThreadWake>,
}

impl ThreadRing {
    fn new(wake: Arc<ThreadWake>) -> io::Result<ThreadRing> {
        Ok(ThreadRing {
            own: OwnRing::new(build()?),
            futex_armed: false,
            wake,
        })
    }

    fn idle(&self) -> bool {
        self.own.idle()
    }

    /// Arms the futex wait on the waker's word (expecting `RingWake::FUTEX_EXPECTED`), unless armed.
    fn arm(&mut self, counters: &Counters) {
        if self.futex_armed {
            return;
        }
        // The word lives in `self.wake`, which outlives the ring (and `disarm` reaps the wait
        // before the ring closes).
        let word = self.wake.word.as_ptr().cast_const();
        let sqe = opcode::FutexWait::new(
            word,
            u64::from(RingWake::FUTEX_EXPECTED),
            FUTEX_MATCH_ANY,
            FUTEX2_SIZE_U32 | FUTEX2_PRIVATE,
        )
        .build()
        .user_data(FUTEX_TAG);
        self.own.push(&sqe, counters);
        self.futex_armed = true;
    }

    /// Takes every CQE there is (see [`OwnRing::reap`]), noting when the futex wait ended.
    fn reap(&mut self, shared: &Shared, finished: &mut Vec<Finished>) {
        let armed = &mut self.futex_armed;
        self.own.reap(shared, finished, |tag| {
            if tag == FUTEX_TAG {
                *armed = false;
            }
        });
    }

    /// Cancels the armed futex wait and reaps until it is gone (before the ring closes).
    fn disarm(&mut self) {
        let counters = Counters::default();
        if self.futex_armed {
            let cancel = opcode::AsyncCancel::new(FUTEX_TAG)
                .build()
                .user_data(CANCEL_TAG);
            self.own.push(&cancel, &counters);
        }
        while self.futex_armed {
            self.own.enter(1, &counters);
            for cqe in self.own.ring.completion() {
                if cqe.user_data() == FUTEX_TAG {
                    self.futex_armed = false;
                }
            }
        }
    }
}

/// Makes a thread ring with the best task-run mode the kernel has.
fn build() -> io::Result<IoUring> {
    let mut last = None;
    for mode in 0..3 {
        let mut builder = IoUring::builder();
        builder.dontfork().setup_clamp().setup_cqsize(2 * ENTRIES);
        match mode {
            0 => builder.setup_single_issuer().setup_defer_taskrun(),
            1 => builder.setup_single_issuer().setup_coop_taskrun(),
            _ => &mut builder,
        };
        match builder.build(ENTRIES) {
            Ok(ring) => return Ok(ring),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)))
}

/// A backend's place in a thread's [`ThreadRings`].
struct Slot {
    backend: Weak<Shared>,
    /// `None`: this thread uses the shared ring for this backend (no ring could be had).
    ring: Option<ThreadRing>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(ring) = &mut self.ring else {
            return;
        };
        // A scope always drains its ring, so nothing should be in flight; if something is
        // (a panic inside a completion), wait for it: the kernel must be done with its frames
        // before anything else may have them.
        let mut finished = Vec::new();
        let shared = self.backend.upgrade();
        while !ring.idle() {
            let counters = Counters::default();
            ring.own.enter(1, &counters);
            match &shared {
                Some(shared) => ring.reap(shared, &mut finished),
                None => break,
            }
        }
        ring.disarm();
        if let Some(shared) = shared {
            let n = finished.len();
            for (done, kind, result) in finished {
                complete(&shared.counters, kind, done, result);
            }
            shared.thread_rings.finished(n);
            shared.thread_rings.quota.release();
        }
    }
}

/// A thread's rings, one per backend it has blocked on, and the backend whose [`block_on`]
/// runs now (submissions from this thread go to that backend's ring).
#[derive(Default)]
struct ThreadRings {
    wake: Option<Arc<ThreadWake>>,
    slots: Vec<Slot>,
    active: Option<*const Shared>,
}

thread_local! {
    static THREAD_RINGS: RefCell<ThreadRings> = RefCell::new(ThreadRings::default());
}

impl ThreadRings {
    fn slot(&mut self, shared: *const Shared) -> Option<&mut Slot> {
        self.slots
            .iter_mut()
            .find(|s| std::ptr::eq(s.backend.as_ptr(), shared))
    }

    fn ring(&mut self, shared: *const Shared) -> Option<&mut ThreadRing> {
        self.slot(shared)?.ring.as_mut()
    }
}

/// The part of a [`block_on`] that must undo itself: makes the thread's ring for the backend
/// the active one, and on drop drains it and restores the one active before.
struct Scope<'a> {
    shared: &'a Shared,
    previous: Option<*const Shared>,
    wake: Arc<ThreadWake>,
}

impl<'a> Scope<'a> {
    /// `None`: this thread has no ring for `shared` (see the module docs); wait by parking.
    fn enter(shared: &'a Arc<Shared>) -> Option<Scope<'a>> {
        if !shared.thread_rings.enabled() {
            return None;
        }
        THREAD_RINGS
            .try_with(|cell| {
                let mut t = cell.try_borrow_mut().ok()?;
                let t = &mut *t;
                // Rings of backends that are gone are closed now.
                t.slots.retain(|s| s.backend.strong_count() > 0);
                let wake = t
                    .wake
                    .get_or_insert_with(|| {
                        Arc::new(ThreadWake {
                            word: RingWake::new(),
                            thread: thread::current(),
                        })
                    })
                    .clone();
                let key = Arc::as_ptr(shared);
                if t.slot(key).is_none() {
                    let census = &shared.thread_rings;
                    let ring = match census.quota.admit() {
                        Ok(()) => match ThreadRing::new(wake.clone()) {
                            Ok(ring) => Some(ring),
                            Err(e) => {
                                census.quota.release();
                                census
                                    .quota
                                    .warn_once(&format!("the ring cannot be made ({e})"));
                                None
                            }
                        },
                        Err(why) => {
                            census.quota.warn_once(&why);
                            None
                        }
                    };
                    t.slots.push(Slot {
                        backend: Arc::downgrade(shared),
                        ring,
                    });
                }
                t.ring(key)?;
                let previous = t.active.replace(key);
                Some(Scope {
                    shared,
                    previous,
                    wake,
                })
            })
            .ok()
            .flatten()
    }

    /// Waits for one of this thread's completions or a wake-up, then runs what finished.
    /// `false`: nothing of this thread is in flight on its ring (the caller parks).
    fn wait(&self) -> bool {
        let key: *const Shared = self.shared;
        let mut finished = Vec::new();
        let waited = THREAD_RINGS.with(|cell| {
            let mut t = cell.borrow_mut();
            let Some(ring) = t.ring(key) else {
                return false;
            };
            if ring.idle() {
                return false;
            }
            let counters = &self.shared.counters;
            if self.wake.word.enter() {
                ring.arm(counters);
                ring.own.enter(1, counters);
            } else if ring.own.unsubmitted() {
                ring.own.enter(0, counters);
            }
            self.wake.word.leave();
            ring.reap(self.shared, &mut finished);
            true
        });
        self.run(finished);
        waited
    }

    /// Waits until every operation on this thread's ring has completed.
    fn drain(&self) {
        drain_ring(self.shared);
    }

    fn run(&self, finished: Vec<Finished>) {
        let n = finished.len();
        for (done, kind, result) in finished {
            complete(&self.shared.counters, kind, done, result);
        }
        self.shared.thread_rings.finished(n);
    }
}

impl Drop for Scope<'_> {
    fn drop(&mut self) {
        self.drain();
        let previous = self.previous;
        let _ = THREAD_RINGS.try_with(|cell| {
            if let Ok(mut t) = cell.try_borrow_mut() {
                t.active = previous;
            }
        });
    }
}

/// Waits until every operation on this thread's ring for `shared` has completed, running their
/// completions; nothing when the thread has no such ring.
pub(super) fn drain_ring(shared: &Shared) {
    let key: *const Shared = shared;
    loop {
        let mut finished = Vec::new();
        let more = THREAD_RINGS
            .try_with(|cell| {
                let Ok(mut t) = cell.try_borrow_mut() else {
                    return false;
                };
                let Some(ring) = t.ring(key) else {
                    return false;
                };
                if ring.idle() {
                    return false;
                }
                ring.own.enter(1, &shared.counters);
                ring.reap(shared, &mut finished);
                true
            })
            .unwrap_or(false);
        let n = finished.len();
        for (done, kind, result) in finished {
            complete(&shared.counters, kind, done, result);
        }
        shared.thread_rings.finished(n);
        if !more {
            return;
        }
    }
}

/// [`Backend::block_on`](uringcache_core::backend::Backend::block_on) of the `io_uring`
/// backend: on this thread's own ring when it has one, parking otherwise.
pub(super) fn block_on(shared: &Arc<Shared>, step: &mut dyn FnMut(&mut Context<'_>) -> Poll<()>) {
    let Some(scope) = Scope::enter(shared) else {
        park_until_ready(step);
        return;
    };
    let waker = Waker::from(scope.wake.clone());
    let mut cx = Context::from_waker(&waker);
    loop {
        scope.wake.word.take_notified();
        if step(&mut cx).is_ready() {
            break;
        }
        if !scope.wait() && !scope.wake.word.notified() {
            thread::park();
        }
    }
    // `scope`'s drop drains the ring.
}

/// Starts `batch` on this thread's ring when the thread is inside a [`block_on`] of this
/// backend and has a ring, unless the batch is detached (async readahead, which the call must
/// not wait for: it goes to the shared ring); `false` (and `batch` untouched) otherwise.
pub(super) fn submit(shared: &Shared, batch: &mut Vec<Request>) -> bool {
    if !shared.thread_rings.enabled() || submitting_detached() {
        return false;
    }
    let key: *const Shared = shared;
    let mut later = Vec::new();
    let taken = THREAD_RINGS
        .try_with(|cell| {
            let Ok(mut t) = cell.try_borrow_mut() else {
                return false;
            };
            if t.active != Some(key) {
                return false;
            }
            let Some(ring) = t.ring(key) else {
                return false;
            };
            let st = shared.state.lock();
            if st.closing {
                for req in batch.drain(..) {
                    let kind = req.op.kind();
                    later.push(Later::Complete(req.done, kind, Err(shut_down_error(NAME))));
                }
                return true;
            }
            for req in batch.drain(..) {
                // A flush is made inline (see `Later::Fsync`): this thread only waits.
                // (An unknown file goes on to `prepare`, which reports it.)
                if let Op::Fsync { datasync } = req.op {
                    if let Some(entry) = st.files.get(req.file.0 as usize) {
                        later.push(Later::Fsync(req.done, entry.fd, datasync));
                        continue;
                    }
                }
                match shared.prepare(&st, req, true) {
                    Ok(op) => {
                        shared.thread_rings.started(1);
                        ring.own.start(shared, op);
                    }
                    Err(l) => later.push(l),
                }
            }
            true
        })
        .unwrap_or(false);
    for l in later {
        let inline = matches!(l, Later::Fsync(..));
        l.run(&shared.counters);
        if inline {
            shared.thread_rings.completed_inline();
        }
    }
    taken
}
