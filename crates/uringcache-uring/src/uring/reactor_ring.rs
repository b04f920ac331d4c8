//! Rings reaped through a tokio runtime's reactor: a task on a multi-thread tokio runtime
//! submits on a ring of its worker thread's own, whose file descriptor is registered with the
//! runtime (`AsyncFd`), and a small reaper task on the runtime reaps it when the reactor says
//! it is readable. A completion then costs one wake-up, the worker's own (it sleeps in
//! `epoll_wait` anyway when it has nothing to do), where the shared ring costs two: the driver
//! thread's, then the worker's, woken by the driver thread.
//!
//! # The rings
//!
//! * One per (thread, backend, runtime), made on the thread's first submission from inside
//!   that runtime (`tokio::runtime::Handle::try_current`), kept in a thread-local until the
//!   thread exits, bounded by [`UringConfig::reactor_rings`](super::UringConfig::reactor_rings)
//!   per backend. A plain ring (no `SINGLE_ISSUER`, no `DEFER_TASKRUN`): the reaper may run on
//!   any worker, shutdown reaps from whichever thread calls it, and neither may need the
//!   submitting thread to enter the kernel for the completions to be posted.
//! * Only on multi-thread runtimes: their workers drive the reactor whenever they have nothing
//!   else to do, for as long as the runtime lives. A current-thread runtime drives it only
//!   inside `block_on`; a completion left on its ring between two `block_on`s would hold its
//!   page locked for any other executor waiting on it, so its tasks use the shared ring.
//! * Needs the runtime's I/O driver (`Builder::enable_io`, which `#[tokio::main]` and
//!   `Runtime::new` turn on). tokio has no way to ask whether it is there but to try: the
//!   registration panics without it. The first submission from each runtime tries, with the
//!   panic caught and its message kept quiet on this thread only (a panic hook installed once
//!   that forwards every other panic to the hook that was there before). In a build with
//!   `panic = "abort"` nothing can be caught, so reactor rings are off there.
//! * A thread whose ring cannot be had (over the bound, no I/O driver, the ring or the
//!   registration refused) uses the shared ring; one `tracing::warn` per backend names why.
//! * Only small transfers (at most [`MAX_TRANSFER`]), flushes and truncations: a larger read
//!   or write (a readahead window, a write-back run) goes to the shared ring, whose fixed
//!   buffers spare it pinning its pages per I/O and whose driver thread finishes it without
//!   waiting for a busy worker. A batch may be split between the two; nothing in a batch is
//!   ordered (a flush is only ever submitted after the writes it covers completed).
//! * Files by descriptor and frames unregistered (`READV` / `WRITEV`), as on blocking threads'
//!   rings: the shared ring's tables are that ring's only.
//!
//! # Invariants
//!
//! * The ring's state (its queues, its operations) is behind its own mutex, taken by the
//!   submitting thread, the reaper and shutdown. Lock order: the backend's state mutex
//!   (`Shared::state`, held while requests become operations) before a ring's mutex; no
//!   completion runs with either held.
//! * `open` says whether the ring takes operations; it turns false, under the ring's mutex,
//!   when the reaper is gone (the runtime shut down) and when the backend shuts down. A
//!   submission that finds the ring closed goes to the shared ring instead, so nothing is ever
//!   left on a ring that nobody reaps.
//! * Every operation on a ring completes before the ring closes: the reaper's drop (when the
//!   runtime drops the task at its shutdown) and the backend's shutdown both reap the ring
//!   until it is idle, waiting in `io_uring_enter`. A frame goes back to the pool only after
//!   its CQE, whoever reaps it.
//! * The reaper ends once its ring is retired (its thread exited: the thread-local's drop
//!   wakes it with a NOP) or closed, and idle; the ring closes when the last of the thread's
//!   slot and the reaper lets go of it. The reaper holds the backend weakly, so a backend
//!   that is dropped is not kept alive by a runtime that lives on.

use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once, Weak};

use io_uring::{opcode, IoUring};
use parking_lot::Mutex;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::runtime::{Handle, RuntimeFlavor};
use uringcache_core::backend::{Op, Request};

use super::driver::Shared;
use super::ops::Later;
use super::own_ring::{Finished, OwnRing, RingQuota, FIRST_TAG};
use super::NAME;
use crate::common::{complete, shut_down_error, Counters};

/// `user_data` of the NOP that wakes a reaper to look at its ring's flags.
const WAKE_TAG: u64 = FIRST_TAG + 3;

/// Largest transfer a reactor ring takes; larger reads and writes (readahead windows,
/// write-back runs) go to the shared ring. Their completion's wake-up is a small part of their
/// cost, while the shared ring's fixed buffers spare pinning each of their pages per I/O, and
/// its driver thread finishes them (frees frames, ends write-back) without waiting for a
/// worker that may be busy copying.
const MAX_TRANSFER: usize = 128 << 10;

/// Whether `req` goes to a reactor ring (see [`MAX_TRANSFER`]).
fn small(req: &Request) -> bool {
    match &req.op {
        Op::Read { len, .. } | Op::Write { len, .. } => *len <= MAX_TRANSFER,
        Op::Fsync { .. } | Op::Truncate { .. } => true,
    }
}

/// What a backend keeps about its reactor rings.
pub(super) struct ReactorCensus {
    /// How many rings (none when reactor rings are off).
    quota: RingQuota,
    /// Submission queue entries of each ring (the completion queue gets twice as many).
    entries: u32,
    /// Operations completed on reactor rings, ever.
    completions: AtomicU64,
    /// Every ring, for shutdown.
    rings: Mutex<Vec<Weak<ReactorRing>>>,
}

impl ReactorCensus {
    /// At most `max` rings of `entries` submission entries each.
    pub(super) fn new(max: usize, entries: u32) -> Arc<ReactorCensus> {
        let max = if cfg!(panic = "unwind") { max } else { 0 };
        Arc::new(ReactorCensus {
            quota: RingQuota::new(
                max,
                "reactor rings (UringConfig::reactor_rings)",
                "a task on this tokio runtime",
            ),
            entries: entries.clamp(8, 4096),
            completions: AtomicU64::new(0),
            rings: Mutex::new(Vec::new()),
        })
    }

    /// Whether tasks may get reactor rings.
    pub(super) fn enabled(&self) -> bool {
        self.quota.enabled()
    }

    /// Reactor rings in existence.
    pub(super) fn live(&self) -> usize {
        self.quota.live()
    }

    /// Operations completed on reactor rings so far.
    pub(super) fn completions(&self) -> u64 {
        self.completions.load(Ordering::Relaxed)
    }
}

/// The ring's descriptor as tokio sees it (the ring owns it).
struct RingFd(RawFd);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

struct RingState {
    own: OwnRing,
    /// Takes operations (see the module docs).
    open: bool,
    /// Its thread exited: the reaper ends once the ring is idle.
    retired: bool,
}

/// A thread's ring for one backend on one runtime.
pub(super) struct ReactorRing {
    // Field order is drop order: the registration goes before the ring (and its descriptor).
    fd: AsyncFd<RingFd>,
    state: Mutex<RingState>,
    census: Arc<ReactorCensus>,
}

impl Drop for ReactorRing {
    fn drop(&mut self) {
        self.census.quota.release();
    }
}

impl ReactorRing {
    /// Makes a ring, registers it with the current runtime and spawns its reaper there.
    fn make(shared: &Arc<Shared>, handle: &Handle) -> Result<Arc<ReactorRing>, String> {
        let census = &shared.reactor_rings;
        census.quota.admit()?;
        let ring = match IoUring::builder()
            .dontfork()
            .setup_clamp()
            .setup_cqsize(2 * census.entries)
            .build(census.entries)
        {
            Ok(ring) => ring,
            Err(e) => {
                census.quota.release();
                return Err(format!("the ring cannot be made ({e})"));
            }
        };
        let fd = match register(ring.as_raw_fd()) {
            Ok(fd) => fd,
            Err(why) => {
                census.quota.release();
                return Err(why);
            }
        };
        let ring = Arc::new(ReactorRing {
            fd,
            state: Mutex::new(RingState {
                own: OwnRing::new(ring),
                open: true,
                retired: false,
            }),
            census: census.clone(),
        });
        {
            let mut rings = census.rings.lock();
            rings.retain(|r| r.strong_count() > 0);
            rings.push(Arc::downgrade(&ring));
        }
        // Captured, so dropped (and the ring drained and closed) even if the runtime drops the
        // task before ever polling it.
        let guard = ReaperGuard {
            ring: ring.clone(),
            backend: Arc::downgrade(shared),
        };
        drop(handle.spawn(async move { guard.run().await }));
        Ok(ring)
    }

    /// Starts the small requests of `batch` here (see [`MAX_TRANSFER`]), leaving the others
    /// in `batch`; `false` (and `batch` untouched) when the ring is closed.
    fn submit(&self, shared: &Shared, batch: &mut Vec<Request>) -> bool {
        let mut later = Vec::new();
        {
            let st = shared.state.lock();
            let mut rs = self.state.lock();
            if !rs.open {
                return false;
            }
            let mut i = 0;
            while i < batch.len() {
                if !small(&batch[i]) {
                    i += 1;
                    continue;
                }
                let req = batch.swap_remove(i);
                if st.closing {
                    let kind = req.op.kind();
                    later.push(Later::Complete(req.done, kind, Err(shut_down_error(NAME))));
                    continue;
                }
                match shared.prepare(&st, req, true) {
                    Ok(op) => rs.own.start(shared, op),
                    Err(l) => later.push(l),
                }
            }
            drop(st);
            if rs.own.unsubmitted() {
                rs.own.enter(0, &shared.counters);
            }
        }
        for l in later {
            l.run(&shared.counters);
        }
        true
    }

    /// Wakes the reaper (a NOP completes), so that it looks at the flags.
    fn wake_reaper(rs: &mut RingState) {
        let counters = Counters::default();
        rs.own
            .push(&opcode::Nop::new().build().user_data(WAKE_TAG), &counters);
        rs.own.enter(0, &counters);
    }

    /// Closes the ring to new operations and reaps it until idle, waiting in the kernel;
    /// then wakes the reaper so it ends.
    fn drain(&self, shared: &Shared) {
        let mut finished = Vec::new();
        loop {
            let idle = {
                let mut rs = self.state.lock();
                rs.open = false;
                rs.own.reap(shared, &mut finished, |_| {});
                let idle = rs.own.idle();
                if idle {
                    Self::wake_reaper(&mut rs);
                } else {
                    rs.own.enter(1, &shared.counters);
                }
                idle
            };
            run(shared, &self.census, &mut finished);
            if idle {
                return;
            }
        }
    }
}

/// Runs finished operations' completions (no lock held).
fn run(shared: &Shared, census: &ReactorCensus, finished: &mut Vec<Finished>) {
    if finished.is_empty() {
        return;
    }
    census
        .completions
        .fetch_add(finished.len() as u64, Ordering::Relaxed);
    for (done, kind, result) in finished.drain(..) {
        complete(&shared.counters, kind, done, result);
    }
}

/// The reaper task's state; its drop drains the ring (the runtime dropped the task).
struct ReaperGuard {
    ring: Arc<ReactorRing>,
    backend: Weak<Shared>,
}

impl ReaperGuard {
    async fn run(&self) {
        let mut finished = Vec::new();
        loop {
            let Ok(mut ready) = self.ring.fd.readable().await else {
                return;
            };
            let Some(shared) = self.backend.upgrade() else {
                return;
            };
            let done = {
                let mut rs = self.ring.state.lock();
                rs.own.reap(&shared, &mut finished, |_| {});
                // Continuations of short transfers and operations that waited for room.
                if rs.own.unsubmitted() {
                    rs.own.enter(0, &shared.counters);
                }
                // Readiness that arrived after `ready` was made stays set (tokio's ticks).
                ready.clear_ready();
                (rs.retired || !rs.open) && rs.own.idle()
            };
            run(&shared, &self.ring.census, &mut finished);
            if done {
                return;
            }
        }
    }
}

impl Drop for ReaperGuard {
    fn drop(&mut self) {
        {
            let mut rs = self.ring.state.lock();
            rs.open = false;
            if rs.own.idle() {
                return;
            }
        }
        // The runtime dropped the task with operations in flight: the kernel must be done with
        // their frames before anything else may have them.
        if let Some(shared) = self.backend.upgrade() {
            self.ring.drain(&shared);
        }
    }
}

/// A backend's place in a thread's reactor rings.
struct Slot {
    backend: Weak<Shared>,
    runtime: tokio::runtime::Id,
    /// `None`: this thread uses the shared ring on this runtime (no ring could be had).
    ring: Option<Arc<ReactorRing>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(ring) = &self.ring {
            let mut rs = ring.state.lock();
            rs.retired = true;
            if rs.open {
                ReactorRing::wake_reaper(&mut rs);
            }
        }
    }
}

thread_local! {
    static REACTOR_RINGS: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

/// Starts the small requests of `batch` (see [`MAX_TRANSFER`]) on this thread's reactor ring
/// when the thread is inside a multi-thread tokio runtime and has (or can make) one, leaving
/// the others in `batch`; `true` when nothing is left.
pub(super) fn submit(shared: &Arc<Shared>, batch: &mut Vec<Request>) -> bool {
    if !shared.reactor_rings.enabled() || !batch.iter().any(small) {
        return false;
    }
    let Ok(handle) = Handle::try_current() else {
        return false;
    };
    if handle.runtime_flavor() != RuntimeFlavor::MultiThread {
        return false;
    }
    let runtime = handle.id();
    let ring = REACTOR_RINGS
        .try_with(|cell| {
            let mut slots = cell.try_borrow_mut().ok()?;
            let key = Arc::as_ptr(shared);
            if let Some(slot) = slots
                .iter()
                .find(|s| s.runtime == runtime && std::ptr::eq(s.backend.as_ptr(), key))
            {
                return slot.ring.clone();
            }
            // Rings of backends that are gone are let go of now.
            slots.retain(|s| s.backend.strong_count() > 0);
            let ring = match ReactorRing::make(shared, &handle) {
                Ok(ring) => Some(ring),
                Err(why) => {
                    shared.reactor_rings.quota.warn_once(&why);
                    None
                }
            };
            slots.push(Slot {
                backend: Arc::downgrade(shared),
                runtime,
                ring: ring.clone(),
            });
            ring
        })
        .ok()
        .flatten();
    match ring {
        Some(ring) => ring.submit(shared, batch) && batch.is_empty(),
        None => false,
    }
}

/// At shutdown: reaps every reactor ring of the backend until idle (from this thread, so it
/// needs no runtime to be running) and closes them to new operations.
pub(super) fn drain_all(shared: &Shared) {
    let rings: Vec<Arc<ReactorRing>> = shared
        .reactor_rings
        .rings
        .lock()
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for ring in rings {
        ring.drain(shared);
    }
}

thread_local! {
    /// Set while this thread tries to register a ring (the panic of a runtime without an I/O
    /// driver is expected, and not reported).
    static PROBING: Cell<bool> = const { Cell::new(false) };
}

/// Registers the ring's descriptor with the current runtime's reactor, or says why not.
fn register(fd: RawFd) -> Result<AsyncFd<RingFd>, String> {
    static QUIET_HOOK: Once = Once::new();
    if std::thread::panicking() {
        return Err("the thread is panicking".into());
    }
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !PROBING.with(Cell::get) {
                previous(info);
            }
        }));
    });
    PROBING.with(|p| p.set(true));
    let result = std::panic::catch_unwind(|| {
        // SAFETY: the descriptor is the ring's, which the `ReactorRing` owns and closes only
        // after this `AsyncFd` (its field declared first) is dropped.
        unsafe { AsyncFd::register_with_interest(RingFd(fd), Interest::READABLE) }
    });
    PROBING.with(|p| p.set(false));
    match result {
        Ok(Ok(fd)) => Ok(fd),
        Ok(Err(e)) => Err(format!(
            "the runtime's reactor refused the ring ({})",
            e.into_parts().1
        )),
        Err(_) => Err("the tokio runtime has no I/O driver (Builder::enable_io)".into()),
    }
}
