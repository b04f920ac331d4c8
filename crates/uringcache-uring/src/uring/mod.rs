//! The `io_uring` backend: callers submit from their own threads, one driver thread reaps
//! the shared ring; blocking threads and tokio workers may have rings of their own.
//!
//! See the crate documentation for the design; this module holds the public face
//! ([`UringBackend`], [`UringConfig`], [`MAX_ENTRIES`]) and the [`Backend`] implementation, and
//! its submodules the mechanics:
//!
//! * `setup`: ring creation, the opcode probe, the fixed-buffer table and the registration of
//!   the arena's regions into it, the file table, the setup errors and the advice they give.
//! * `buffers`: which regions of the arena are registered (`buffers::Regions`, atomics only):
//!   each is registered once, by the first submitter that touches it, without a lock.
//! * `ops`: requests into operations and SQEs (fixed or vectored reads and writes, fsync,
//!   truncation, the `ftruncate(2)` fallback), and what each CQE does to an operation (finish,
//!   or continue a short transfer, `EINTR`, `EAGAIN`).
//! * `driver`: the state behind the one mutex — the submission queue's user-space side, the
//!   slab of in-flight operations (key = `user_data`), the queue of requests waiting for
//!   completion queue room, and the file table — and the driver thread, which owns the
//!   completion queue. It blocks in `io_uring_enter(GETEVENTS, min_complete = 1)`, takes every
//!   CQE available, decides under the mutex which operations finished and which continue,
//!   starts waiting requests as room frees up, and then runs the completions with the mutex
//!   released.
//! * `own_ring`: the bookkeeping of a ring besides the shared one (its operations, those
//!   waiting for room, reaping), used by the next two.
//! * `thread_ring`: a ring per thread blocked in `Backend::block_on`, reaped by that thread.
//! * `reactor_ring` (feature `tokio`): a ring per worker thread of a multi-thread tokio
//!   runtime, registered with the runtime's reactor and reaped by a task on it.
//!
//! Lock: the state mutex (`Shared::state`) is the only one on the I/O path; every
//! `SubmissionQueue` is made and dropped with it held, and no completion runs with it held.
//! Registering a region of the arena happens at the end of `submit`, with that mutex released.
//! `UringBackend::driver` (the join handle) is taken only at shutdown. A reactor ring's own
//! mutex may be taken with the state mutex held (while requests become operations), never the
//! other way round.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::{self, JoinHandle, ThreadId};

use parking_lot::Mutex;
use uringcache_core::backend::{Backend, BackendStats, FileId, Op, Request};
use uringcache_core::frames::FrameArena;

use crate::common::{shut_down_error, used_frames, MAX_RW};

mod buffers;
mod driver;
mod ops;
mod own_ring;
#[cfg(feature = "tokio")]
mod reactor_ring;
mod setup;
mod thread_ring;

use driver::Shared;
use ops::Later;

const NAME: &str = "io_uring";

/// The most submission queue entries a ring can have (the kernel's `IORING_MAX_ENTRIES`).
/// Larger values of [`UringConfig::entries`] are clamped to it (`IORING_SETUP_CLAMP`).
pub const MAX_ENTRIES: u32 = 32768;

/// Settings of a [`UringBackend`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UringConfig {
    /// Submission queue entries (rounded up to a power of two by the kernel, clamped to its
    /// maximum, [`MAX_ENTRIES`]). The completion queue gets twice as many, and at most that many operations less
    /// one are in flight at once; further requests wait in the backend until room frees up.
    /// Default 256.
    pub entries: u32,
    /// Let a kernel thread poll the submission queue (`IORING_SETUP_SQPOLL`), which saves the
    /// submit system call but keeps a core busy while I/O flows. Default `false`: on small
    /// machines (2 cores) the polling thread costs more than it saves.
    pub sqpoll: bool,
    /// Use fixed buffers for the frame arena, so that reads and writes of consecutive frames
    /// skip per-I/O page pinning: a sparse table at setup (`IORING_REGISTER_BUFFERS2`), into
    /// which each region of the arena (4 MiB; more above 64 GiB) is registered
    /// (`IORING_REGISTER_BUFFERS_UPDATE`) the first time a request touches it. Default `true`.
    /// If the kernel refuses the table (before Linux 5.13), or a region's registration fails
    /// (typically `RLIMIT_MEMLOCK`), a warning is logged and the frames not registered are used
    /// unregistered.
    pub register_buffers: bool,
    /// Use a registered file table (`IORING_REGISTER_FILES`) so that each I/O skips the file
    /// descriptor lookup. Default `true`. If the kernel refuses it, plain descriptors are used.
    pub register_files: bool,
    /// Most bytes one SQE transfers; a larger request is issued in pieces, each continuing
    /// like a short transfer. Default 1 GiB (the kernel's own cap). A multiple of the files'
    /// direct-I/O alignment; small values exercise the short-transfer path in tests.
    pub max_transfer: usize,
    /// Most rings of blocking threads: a thread blocked in
    /// [`Backend::block_on`] (the cache's
    /// `BlockingFile`) gets a ring of its own, on which it submits and reaps its own I/O, one
    /// `io_uring_enter` per wait (see the crate documentation). Threads beyond this many use
    /// the shared ring. `0` turns thread rings off. Default 64. Needs
    /// `IORING_OP_FUTEX_WAIT` (Linux 6.7); without it every thread uses the shared ring.
    pub thread_rings: usize,
    /// Most rings reaped through tokio runtimes' reactors (feature `tokio`): a task on a
    /// multi-thread tokio runtime submits on a ring of its worker thread's own, registered
    /// with the runtime's reactor, and a reaper task on the runtime reaps it, so that a
    /// completion wakes the worker once, directly, instead of the driver thread first (see the
    /// crate documentation). One per (thread, runtime); threads beyond this many use the
    /// shared ring. `0` turns reactor rings off. Default 64. Without the feature, or in a
    /// build with `panic = "abort"` (the runtime's I/O driver cannot be probed), every task
    /// uses the shared ring.
    pub reactor_rings: usize,
}

impl Default for UringConfig {
    fn default() -> Self {
        UringConfig {
            entries: 256,
            sqpoll: false,
            register_buffers: true,
            register_files: true,
            max_transfer: MAX_RW,
            thread_rings: 64,
            reactor_rings: 64,
        }
    }
}

/// The `io_uring` backend. See the [crate documentation](crate) for the design.
///
/// Dropping it shuts it down: it waits for every submitted request to complete and joins the
/// driver thread.
pub struct UringBackend {
    shared: Arc<Shared>,
    driver: Mutex<Option<JoinHandle<()>>>,
    driver_id: ThreadId,
}

impl std::fmt::Debug for UringBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringBackend")
            .field("fixed_buffers", &self.uses_fixed_buffers())
            .field("fixed_buffer_bytes", &self.fixed_buffer_bytes())
            .field("ftruncate_op", &self.shared.ftruncate_op)
            .field("max_inflight", &self.shared.max_inflight)
            .finish_non_exhaustive()
    }
}

impl UringBackend {
    /// Sets up the ring, registers the arena and the file table (as configured), and starts
    /// the driver thread.
    ///
    /// Errors say what to change when the kernel refuses `io_uring` (see [`probe`](Self::probe)).
    pub fn new(arena: Arc<FrameArena>, config: UringConfig) -> io::Result<UringBackend> {
        let shared = Arc::new(setup::shared(arena, &config)?);
        let handle = driver::spawn(&shared)?;
        let driver_id = handle.thread().id();
        Ok(UringBackend {
            shared,
            driver: Mutex::new(Some(handle)),
            driver_id,
        })
    }

    /// Checks that `io_uring` can be set up here and supports the opcodes this backend uses
    /// (fixed and vectored reads and writes, fsync, nop). The error says what to change:
    /// `io_uring` refused by seccomp or `kernel.io_uring_disabled` (use the threads backend),
    /// a kernel without `io_uring`, or one too old for the opcodes.
    pub fn probe() -> io::Result<()> {
        setup::probe()
    }

    /// Whether the backend has a fixed-buffer table for the frame arena, into which it
    /// registers each region of the arena the first time an I/O touches it (false when
    /// disabled in the config or refused by the kernel). How much is registered so far:
    /// [`fixed_buffer_bytes`](Self::fixed_buffer_bytes).
    pub fn uses_fixed_buffers(&self) -> bool {
        self.shared.buffers.is_some()
    }

    /// Bytes of the frame arena registered as fixed buffers so far (pinned by the kernel), a
    /// whole number of regions; also in [`BackendStats::fixed_buffer_bytes`]. It stops
    /// growing if a registration fails (a warning says why, typically `RLIMIT_MEMLOCK`).
    pub fn fixed_buffer_bytes(&self) -> u64 {
        self.shared
            .buffers
            .as_ref()
            .map_or(0, |b| b.registered_bytes())
    }

    /// Bytes of one region of the fixed-buffer table (each registered as one buffer; the last
    /// one of the arena may be shorter), or `None` without a table.
    pub fn fixed_buffer_region(&self) -> Option<usize> {
        self.shared.buffers.as_ref().map(|b| b.region_bytes())
    }

    /// Whether files go through the registered file table.
    pub fn uses_fixed_files(&self) -> bool {
        self.shared.state.lock().file_slots > 0
    }

    /// Whether truncation runs as `IORING_OP_FTRUNCATE` (Linux 6.9+) rather than as an
    /// `ftruncate(2)` on the submitting thread.
    pub fn uses_ftruncate_op(&self) -> bool {
        self.shared.ftruncate_op
    }

    /// Rings of blocking threads in existence now (see [`UringConfig::thread_rings`]).
    pub fn thread_rings(&self) -> usize {
        self.shared.thread_rings.live()
    }

    /// Whether blocking threads may get rings of their own: on in the config, and the kernel
    /// has `IORING_OP_FUTEX_WAIT` (Linux 6.7).
    pub fn uses_thread_rings(&self) -> bool {
        self.shared.thread_rings.enabled()
    }

    /// Rings reaped through tokio runtimes' reactors in existence now (see
    /// [`UringConfig::reactor_rings`]).
    pub fn reactor_rings(&self) -> usize {
        #[cfg(feature = "tokio")]
        return self.shared.reactor_rings.live();
        #[cfg(not(feature = "tokio"))]
        0
    }

    /// Operations completed on reactor rings so far (reaped by a tokio runtime's reactor).
    fn reactor_completions(&self) -> u64 {
        #[cfg(feature = "tokio")]
        return self.shared.reactor_rings.completions();
        #[cfg(not(feature = "tokio"))]
        0
    }

    /// Whether tasks on multi-thread tokio runtimes may get reactor rings: on in the config,
    /// built with the feature `tokio`, and with `panic = "unwind"`.
    pub fn uses_reactor_rings(&self) -> bool {
        #[cfg(feature = "tokio")]
        return self.shared.reactor_rings.enabled();
        #[cfg(not(feature = "tokio"))]
        false
    }

    /// Most operations in flight at once (the completion queue's size less one); further
    /// requests wait inside the backend.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_inflight
    }
}

impl Backend for UringBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn register(&self, fd: RawFd) -> io::Result<FileId> {
        self.shared.register_file(fd)
    }

    fn unregister(&self, file: FileId) {
        self.shared.unregister_file(file)
    }

    unsafe fn submit(&self, batch: &mut Vec<Request>) {
        if batch.is_empty() {
            return;
        }
        let shared = &*self.shared;
        if thread_ring::submit(shared, batch) {
            return;
        }
        #[cfg(feature = "tokio")]
        if reactor_ring::submit(&self.shared, batch) {
            return;
        }
        // Regions of the arena first touched by this batch: registered below, once its I/O is
        // under way (these requests go unregistered; later ones into the regions are fixed).
        // Not on the driver thread, whose completions must not wait for that.
        let mut unregistered = Vec::new();
        if let Some(regions) = &shared.buffers {
            if !regions.settled() && thread::current().id() != self.driver_id {
                for req in batch.iter() {
                    if let Op::Read { frames, len, .. } | Op::Write { frames, len, .. } = &req.op {
                        let used = &frames[..used_frames(&shared.arena, frames, *len)];
                        regions.wanted(used, &mut unregistered);
                    }
                }
            }
        }
        let mut later = Vec::new();
        let mut started = false;
        {
            let mut st = shared.state.lock();
            if st.closing {
                unregistered.clear();
                for req in batch.drain(..) {
                    let kind = req.op.kind();
                    later.push(Later::Complete(req.done, kind, Err(shut_down_error(NAME))));
                }
            } else {
                // SAFETY: the submission queue is only ever touched with the state mutex held,
                // so this is the only `SubmissionQueue` in existence.
                let mut sq = unsafe { shared.ring.submission_shared() };
                for req in batch.drain(..) {
                    match shared.prepare(&st, req, false) {
                        Ok(op) => {
                            if st.pending.is_empty() && st.ops.len() < shared.max_inflight {
                                shared.start(&mut st, &mut sq, op);
                                started = true;
                            } else {
                                st.pending.push_back(op);
                            }
                        }
                        Err(l) => later.push(l),
                    }
                }
                // Publishes the tail.
                drop(sq);
            }
        }
        if started {
            shared.enter_submit();
        }
        for l in later {
            l.run(&shared.counters);
        }
        if let Some(regions) = &shared.buffers {
            for r in unregistered {
                regions.ensure(r, &mut |slot, first, n| {
                    shared.register_region(slot, first, n)
                });
            }
        }
    }

    fn stats(&self) -> BackendStats {
        BackendStats {
            fixed_buffer_bytes: self.fixed_buffer_bytes(),
            thread_rings: self.shared.thread_rings.live() as u64,
            caller_completions: self.shared.thread_rings.completions(),
            reactor_rings: self.reactor_rings() as u64,
            reactor_completions: self.reactor_completions(),
            ..self.shared.counters.snapshot()
        }
    }

    fn block_on(&self, step: &mut dyn FnMut(&mut Context<'_>) -> Poll<()>) {
        thread_ring::block_on(&self.shared, step);
    }

    fn shutdown(&self) {
        self.shared.close();
        // The thread rings: this thread's own first (nobody else can reap it), then the other
        // threads' (each reaps its own).
        thread_ring::drain_ring(&self.shared);
        self.shared.thread_rings.wait_idle();
        // The reactor rings: reaped from here, so that no runtime needs to run.
        #[cfg(feature = "tokio")]
        reactor_ring::drain_all(&self.shared);
        // A completion may call shutdown on the driver thread: it cannot join itself; the
        // driver stops on its own once everything completed.
        if thread::current().id() == self.driver_id {
            return;
        }
        let handle = self.driver.lock().take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                tracing::error!("the uringcache-uring driver thread panicked");
            }
        }
    }
}

impl Drop for UringBackend {
    fn drop(&mut self) {
        self.shutdown();
    }
}
