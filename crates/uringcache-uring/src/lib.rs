//! # uringcache-uring: the I/O layer under uringcache
//!
//! Two implementations of [`uringcache_core::backend::Backend`] move bytes between files
//! opened with `O_DIRECT` and the cache's frame arena:
//!
//! * [`UringBackend`] drives one `io_uring`;
//! * [`ThreadsBackend`] runs blocking `pread` / `pwrite` / `fsync` calls on a few threads, for
//!   where `io_uring` is missing or refused (seccomp, `kernel.io_uring_disabled`).
//!
//! plus helpers for the files themselves: [`open_direct`] (and [`open_direct_tracked`], which
//! tells whether it created the file, with [`remove_created`] to undo that), [`dio_alignment`],
//! [`fits_in_file`] and [`max_file_size`] (the filesystem's file-size limit).
//!
//! ## Cargo features
//!
//! * `fault-injection` (off by default): the module `fault` and its `FaultBackend`, which wraps
//!   either backend to fail or hold back chosen requests — a test tool, kept out of
//!   production builds. Enable it in `[dev-dependencies]`:
//!   `uringcache-uring = { version = "0.1", features = ["fault-injection"] }`.
//! * `tokio` (off by default; `uringcache` turns it on with its own `tokio` feature): rings
//!   reaped through a tokio runtime's reactor (below, and [`UringConfig::reactor_rings`]).
//!
//! Errors that come from the OS keep it: the `io::Error` they return has the OS error's kind
//! and the OS error itself as its `source()`, so its errno is
//! `e.raw_os_error().or_else(|| e.source()?.downcast_ref::<io::Error>()?.raw_os_error())`.
//!
//! ## The `io_uring` driver
//!
//! * **Callers submit.** [`Backend::submit`](uringcache_core::backend::Backend::submit) runs on
//!   the caller's thread: under one mutex it turns each request into an SQE (recording the
//!   operation in a slab whose key is the SQE's `user_data`), then makes *one* `io_uring_enter`
//!   for the whole batch. No hand-off to another thread, no wake-up on the submit path.
//! * **One driver thread reaps.** The thread `uringcache-uring` sleeps in `io_uring_enter` with
//!   `GETEVENTS` until at least one completion is posted, then takes *every* CQE available, so
//!   one wake serves a whole batch. Short transfers, `EINTR` and `EAGAIN` are continued right
//!   there (a short read at end of file completes with the bytes read; a write that makes no
//!   progress fails with `ENOSPC`), requests waiting for room are started, and the completions
//!   run with the mutex released. When nothing is in flight the driver is blocked in the kernel:
//!   an idle cache uses no CPU.
//! * **Why one thread.** The completion queue has a single consumer by construction, so reaping
//!   needs no lock; completions only flip page bits and wake wakers, which one thread does far
//!   faster than a device completes I/O. Callers never wait for the driver to submit.
//! * **Blocking threads reap their own.** A thread blocked in
//!   [`Backend::block_on`](uringcache_core::backend::Backend::block_on) (the cache's
//!   `BlockingFile`) gets a ring of its own (`SINGLE_ISSUER | DEFER_TASKRUN`, made on first
//!   use, bounded by [`UringConfig::thread_rings`], released when the thread exits): the
//!   requests it submits during the call go there, and it waits in `io_uring_enter` for their
//!   completions and, through an armed `IORING_OP_FUTEX_WAIT` on its waker's word, for
//!   wake-ups from other threads at once. One system call per miss, no thread hop. Every request
//!   it started has completed when the call returns. See the `uring::thread_ring` module.
//! * **Tasks on a tokio runtime are reaped by the runtime** (feature `tokio`). A task on a
//!   multi-thread tokio runtime submits on a ring of its worker thread's own (made on first
//!   use, bounded by [`UringConfig::reactor_rings`]), whose descriptor is registered with the
//!   runtime's reactor; a small reaper task on the runtime takes its completions when the
//!   reactor reports it readable. The worker that sleeps in `epoll_wait` is woken once, by the
//!   completion itself, where the shared ring wakes the driver thread, which then wakes it.
//!   Current-thread runtimes (which drive their reactor only inside `block_on`), runtimes
//!   without an I/O driver and other executors use the shared ring. Shutdown reaps every such
//!   ring itself, and a runtime dropped with I/O in flight reaps its rings before it goes. See
//!   the `uring::reactor_ring` module.
//! * **Bounded in flight.** At most the completion queue's size (less one slot kept for the
//!   shutdown wake-up) operations are in flight, so completions can never overflow; further
//!   requests queue inside the backend and start as completions free room.
//! * **Fixed buffers and files are optimisations.** The arena gets a sparse fixed-buffer table
//!   at setup, and each 4 MiB region of it is registered the first time a submitted request
//!   touches it, so that a large budget costs neither start-up time nor pinned memory until
//!   it is used (`READ_FIXED` / `WRITE_FIXED` when a request's frames are one run of memory in
//!   one registered region, vectored I/O otherwise); if a registration is refused
//!   (`RLIMIT_MEMLOCK`), a warning is logged once and the rest of the frames are used
//!   unregistered. Files go in a sparse registered table, with plain descriptors as the
//!   fallback.
//! * **No SQPOLL by default.** A polling kernel thread saves the submit system call but keeps a
//!   core busy; on the small machines this targets (2 cores) that costs more than it saves.
//!   [`UringConfig::sqpoll`] turns it on.
//! * **Shutdown** refuses new requests (their completions get an error that says so), waits for
//!   every submitted operation to complete, wakes the driver with a NOP and joins it. Dropping
//!   the backend does the same, so the kernel never writes into frames after the backend is
//!   gone.
//!
//! * **Truncation** is `IORING_OP_FTRUNCATE` where the kernel's probe lists it (Linux 6.9+);
//!   elsewhere it is an `ftruncate(2)` on the submitting thread, whose completion runs right
//!   after `submit` (truncation is rare and touches metadata only).
//!
//! Completions run on the driver thread, on the blocked thread of a thread ring, or on the
//! runtime's worker that reaps a reactor ring (or, for requests refused up front, on the
//! submitting thread); they may submit more requests.
//!
//! ## The thread pool
//!
//! [`ThreadsBackend`] feeds a crossbeam channel to a few threads that block on it when idle and
//! run each request to the end with the same short-transfer rules (`preadv` / `pwritev` with
//! one iovec per run of frames when the frames are not adjacent in memory).

#![deny(missing_docs)]

mod common;
mod direct;
pub mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
mod limits;
pub mod threads;
pub mod uring;

pub use direct::{dio_alignment, open_direct, open_direct_tracked, remove_created, Opened};
#[cfg(feature = "fault-injection")]
pub use fault::FaultBackend;
pub use limits::{fits_in_file, max_file_size};
pub use threads::ThreadsBackend;
pub use uring::{UringBackend, UringConfig};
