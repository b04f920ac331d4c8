//! The contract between the cache and the layer that moves bytes (the kernel's
//! `address_space_operations`: `readpage`, `writepages`, plus `fsync`).
//!
//! The cache never performs I/O itself. It builds [`Request`]s — "read this file range into
//! these frames", "write these frames to this file range", "flush this file" — and hands them in
//! batches to a [`Backend`]. The backend runs them (on `io_uring`, on a thread pool, or with
//! faults injected) and calls each request's [`Completion`] exactly once, from whatever thread
//! it likes. Completions must be short and never block: they flip page bits and wake wakers.
//!
//! # Invariants a backend keeps
//!
//! * The frames named by a request are not touched after its completion has been called, and the
//!   completion is called only after the device is done with them (a dropped future never leaves
//!   the kernel writing into a reused frame).
//! * A read returns the number of bytes read: less than asked only at end of file (short reads
//!   before the end are continued by the backend, not reported). The bytes of the frames past
//!   that count are unspecified; the cache zeroes them.
//! * A write transfers all `len` bytes or fails: a short write is continued, and a write that
//!   makes no progress fails with `ENOSPC` (never reported as success).
//! * An fsync completes only after the device flush; its error is returned, never dropped.
//! * The file descriptor registered with [`Backend::register`] stays open, owned by the caller,
//!   until [`Backend::unregister`] returns.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use crate::page::FrameId;

/// A file known to a backend (for `io_uring`, its slot in the registered file table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId(pub u32);

/// Called once with the outcome of a [`Request`]: bytes transferred, or the error.
pub type Completion = Box<dyn FnOnce(io::Result<usize>) + Send + 'static>;

/// The kind of an [`Op`] without its arguments: what the counters, the timing layer and fault
/// rules key on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// [`Op::Read`].
    Read,
    /// [`Op::Write`].
    Write,
    /// [`Op::Fsync`] (`fsync` or `fdatasync`).
    Fsync,
    /// [`Op::Truncate`].
    Truncate,
}

/// What a request does.
#[derive(Debug)]
pub enum Op {
    /// Read `len` bytes at `offset` into `frames`, in order, each one page long.
    Read {
        /// File offset, a multiple of the page size.
        offset: u64,
        /// Destination frames, consecutive pages of the file.
        frames: Vec<FrameId>,
        /// Bytes to read: at most `frames.len() * page_size`, a multiple of the file's direct
        /// I/O alignment.
        len: usize,
    },
    /// Write `len` bytes from `frames`, in order, to the file at `offset`.
    Write {
        /// File offset, a multiple of the page size.
        offset: u64,
        /// Source frames, consecutive pages of the file.
        frames: Vec<FrameId>,
        /// Bytes to write: at most `frames.len() * page_size`, a multiple of the file's direct
        /// I/O alignment (the tail block is written whole).
        len: usize,
        /// Write with `RWF_DSYNC`: when it completes successfully the bytes are durable, as
        /// after an `fdatasync` (the kernel issues a FUA write, or the write and a flush).
        dsync: bool,
    },
    /// Flush the file to stable storage (`fsync`, or `fdatasync` when `datasync`).
    Fsync {
        /// Flush data and only the metadata needed to read it back.
        datasync: bool,
    },
    /// Set the file's size on disk (`ftruncate`).
    Truncate {
        /// The new size in bytes.
        len: u64,
    },
}

impl Op {
    /// The operation's kind.
    ///
    /// ```
    /// use uringcache_core::backend::{Op, OpKind};
    /// assert_eq!(Op::Truncate { len: 0 }.kind(), OpKind::Truncate);
    /// ```
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Read { .. } => OpKind::Read,
            Op::Write { .. } => OpKind::Write,
            Op::Fsync { .. } => OpKind::Fsync,
            Op::Truncate { .. } => OpKind::Truncate,
        }
    }
}

/// One I/O for a backend to run.
pub struct Request {
    /// The file, as registered.
    pub file: FileId,
    /// What to do.
    pub op: Op,
    /// Called exactly once with the outcome.
    pub done: Completion,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("file", &self.file)
            .field("op", &self.op)
            .finish_non_exhaustive()
    }
}

/// Counters a backend keeps about its own work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendStats {
    /// Read requests completed.
    pub reads: u64,
    /// Bytes read from the device.
    pub read_bytes: u64,
    /// Write requests completed.
    pub writes: u64,
    /// Bytes written to the device.
    pub write_bytes: u64,
    /// Flushes completed.
    pub fsyncs: u64,
    /// System calls that submitted work (for `io_uring`, `io_uring_enter` calls).
    pub submit_calls: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Bytes of the frame arena registered with the kernel as fixed buffers so far (the
    /// `io_uring` backend registers regions of it as I/O first touches them); 0 for backends
    /// without fixed buffers. A level, not a count of work.
    pub fixed_buffer_bytes: u64,
    /// Rings of blocking threads in existence (the `io_uring` backend gives a thread blocked in
    /// [`Backend::block_on`] a ring of its own); a level. 0 for other backends.
    pub thread_rings: u64,
    /// Requests completed on the thread that submitted them and waits for them, in
    /// [`Backend::block_on`], with no hand-off to another thread: reaped from the thread's own
    /// ring (`io_uring`), or run by the thread itself (the thread pool, for lone requests).
    pub caller_completions: u64,
    /// Rings reaped through a tokio runtime's reactor in existence (the `io_uring` backend
    /// gives a task's worker thread on a multi-thread runtime a ring of its own); a level. 0
    /// for other backends.
    pub reactor_rings: u64,
    /// Requests completed on a reactor ring: reaped by a task of the runtime that submitted
    /// them, with no driver thread in between.
    pub reactor_completions: u64,
}

/// The I/O layer under the cache (`a_ops`): implemented by `uringcache-uring`.
pub trait Backend: Send + Sync + 'static {
    /// A short name for logs and statistics (`"io_uring"`, `"threads"`).
    fn name(&self) -> &'static str;

    /// Makes an open file descriptor (opened with `O_DIRECT` by the caller) known to the
    /// backend. The caller keeps ownership and closes it after [`unregister`](Self::unregister).
    fn register(&self, fd: RawFd) -> io::Result<FileId>;

    /// Forgets a file. Called only when no request on it is in flight.
    fn unregister(&self, file: FileId);

    /// Starts every request in `batch` (draining it), as few system calls as possible.
    /// Completions may run before this returns, on this thread or another. The requests of a
    /// batch are independent: they may start and complete in any order (the `io_uring`
    /// backend may even split a batch between rings), so a caller that needs one done before
    /// another (a flush after the writes it covers) waits for the first's completion.
    ///
    /// # Safety
    ///
    /// The device reads into and writes from the frames the requests name, at any moment
    /// until each request's completion runs. So, for every request, until its completion:
    /// its frames are frames of the arena the backend was built on, and they stay allocated
    /// to the caller (pinned: not freed, not handed to another page); nobody reads the frames
    /// of a `Read` or writes the frames of a `Write`; its file is registered.
    unsafe fn submit(&self, batch: &mut Vec<Request>);

    /// The backend's counters.
    fn stats(&self) -> BackendStats;

    /// Stops the backend's threads after every submitted request has completed.
    fn shutdown(&self);

    /// Calls `step` until it returns `Ready`, blocking the calling thread in between: how a
    /// blocking API (the cache's `BlockingFile`) waits for the cache's futures. `step` polls
    /// the caller's future with the context it is given.
    ///
    /// A backend that can let the waiting thread reap its own completions does so here (the
    /// `io_uring` backend's rings per blocking thread: requests submitted on this thread during
    /// the call go to the thread's own ring, and the thread waits in the kernel for them and
    /// for wake-ups at once). Every request submitted on this thread during the call has
    /// completed when it returns. The default parks the thread between polls
    /// ([`park_until_ready`]).
    fn block_on(&self, step: &mut dyn FnMut(&mut Context<'_>) -> Poll<()>) {
        park_until_ready(step);
    }
}

std::thread_local! {
    static DETACHED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// [`Backend::submit`] of requests that nothing on this thread will wait for (async
/// readahead): a backend that gives a thread blocked in [`Backend::block_on`] a ring of its
/// own (and waits for all of that ring's requests before the call returns) sends these to its
/// shared ring instead, so that a blocking read does not wait for the readahead it started.
/// Layers see them as any other submission ([`submitting_detached`] tells them apart).
///
/// # Safety
///
/// As for [`Backend::submit`].
pub unsafe fn submit_detached(backend: &dyn Backend, batch: &mut Vec<Request>) {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            DETACHED.with(|d| d.set(self.0));
        }
    }
    let _reset = Reset(DETACHED.with(|d| d.replace(true)));
    // SAFETY: the caller's obligations are those of `submit`.
    unsafe { backend.submit(batch) }
}

/// Whether the submission running on this thread came through [`submit_detached`].
pub fn submitting_detached() -> bool {
    DETACHED.with(|d| d.get())
}

/// Calls `step` until it returns `Ready`, parking the thread between calls with a waker that
/// unparks it: the default [`Backend::block_on`].
///
/// ```
/// use std::task::Poll;
/// let mut polls = 0;
/// uringcache_core::backend::park_until_ready(&mut |cx| {
///     polls += 1;
///     if polls < 3 {
///         cx.waker().wake_by_ref(); // as a completion would
///         Poll::Pending
///     } else {
///         Poll::Ready(())
///     }
/// });
/// assert_eq!(polls, 3);
/// ```
pub fn park_until_ready(step: &mut dyn FnMut(&mut Context<'_>) -> Poll<()>) {
    let waker = unpark_waker();
    let mut cx = Context::from_waker(&waker);
    while step(&mut cx).is_pending() {
        std::thread::park();
    }
}

/// A waker that unparks the calling thread (for a `block_on` that parks between polls).
///
/// ```
/// let waker = uringcache_core::backend::unpark_waker();
/// waker.wake_by_ref(); // the next park returns at once
/// std::thread::park();
/// ```
pub fn unpark_waker() -> Waker {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    std::thread_local! {
        // One per thread, made on first use: a blocking call (a hit included) clones it
        // instead of allocating a waker.
        static WAKER: Waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    }
    WAKER
        .try_with(Waker::clone)
        .unwrap_or_else(|_| Waker::from(Arc::new(Unpark(std::thread::current()))))
}

/// A backend wrapped around another that changes only how requests are submitted (a timing
/// layer, fault injection, tracing): every other method of [`Backend`] goes to the
/// [`inner`](Layer::inner) backend. Implementing `Layer` implements `Backend`.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use uringcache_core::backend::{Backend, Layer, Request};
///
/// /// Counts the requests on their way down.
/// struct Counting<B> {
///     inner: B,
///     requests: AtomicU64,
/// }
///
/// impl<B: Backend> Layer for Counting<B> {
///     fn inner(&self) -> &dyn Backend {
///         &self.inner
///     }
///
///     unsafe fn submit_layered(&self, batch: &mut Vec<Request>) {
///         self.requests.fetch_add(batch.len() as u64, Ordering::Relaxed);
///         // SAFETY: the caller's guarantees for the requests' frames are passed on unchanged.
///         unsafe { self.inner.submit(batch) }
///     }
/// }
/// ```
pub trait Layer: Send + Sync + 'static {
    /// The backend underneath.
    fn inner(&self) -> &dyn Backend;

    /// [`Backend::submit`] for this layer: starts every request of `batch`, usually by
    /// passing them (changed or not) to the inner backend.
    ///
    /// # Safety
    ///
    /// As for [`Backend::submit`]: the caller gives the same guarantees about the requests'
    /// frames, and the layer must keep them when it passes requests on.
    unsafe fn submit_layered(&self, batch: &mut Vec<Request>);

    /// [`Backend::shutdown`] for this layer; by default the inner backend's. A layer holding
    /// requests back releases them here first.
    fn shutdown_layered(&self) {
        self.inner().shutdown();
    }
}

impl<L: Layer> Backend for L {
    fn name(&self) -> &'static str {
        self.inner().name()
    }

    fn register(&self, fd: RawFd) -> io::Result<FileId> {
        self.inner().register(fd)
    }

    fn unregister(&self, file: FileId) {
        self.inner().unregister(file);
    }

    unsafe fn submit(&self, batch: &mut Vec<Request>) {
        // SAFETY: the caller's obligations for `batch` are those of `submit_layered`.
        unsafe { self.submit_layered(batch) }
    }

    fn stats(&self) -> BackendStats {
        self.inner().stats()
    }

    fn shutdown(&self) {
        self.shutdown_layered();
    }

    fn block_on(&self, step: &mut dyn FnMut(&mut Context<'_>) -> Poll<()>) {
        self.inner().block_on(step);
    }
}
