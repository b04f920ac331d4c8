//! The portable backend: blocking `pread` / `pwrite` / `preadv` / `pwritev` / `fsync` /
//! `fdatasync` / `ftruncate` on a small pool of threads, for where `io_uring` is missing or
//! refused.
//!
//! Requests go through one unbounded crossbeam channel; idle workers block on it (no
//! spinning). Each worker runs a request to the end (continuing short transfers) and then calls
//! its completion. `shutdown` closes the channel: the workers drain what was queued and exit,
//! and are joined.
//!
//! **A blocked thread does its own.** Inside [`Backend::block_on`] (the cache's
//! `BlockingFile`), a lone request the thread submits (a miss, a sync's single write, a flush)
//! is not handed to the pool: it is queued on the thread (`Local`, a thread-local) and run
//! there by the `block_on` loop as soon as the future returns `Pending`, with no lock of the
//! caller held, as `pread` would run it: no hand-off and no wake-up. A batch of several
//! requests (a sync's scattered pages, a readahead window) still goes to the pool, so that
//! they run in parallel, and so do detached ones
//! ([`submit_detached`](uringcache_core::backend::submit_detached): async readahead, which
//! the call does not wait for). Requests queued on the thread when the future completes are
//! run before `block_on` returns.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam::channel::{self, Receiver, Sender};
use parking_lot::{Mutex, RwLock};
use slab::Slab;
use std::task::{Context, Poll};

use uringcache_core::backend::{
    submitting_detached, unpark_waker, Backend, BackendStats, FileId, Op, Request,
};
use uringcache_core::frames::FrameArena;
use uringcache_core::page::FrameId;

use crate::common::{
    build_iovecs, check_rw, complete, shut_down_error, unknown_file_error, Counters, Progress,
    Step, MAX_RETRIES, MAX_RW,
};
use crate::error;

const NAME: &str = "threads";

struct Job {
    fd: RawFd,
    req: Request,
}

/// The requests a thread blocked in [`ThreadsBackend::block_on`] runs itself, and whose
/// `block_on` that is (a backend's `Inner`, by address).
#[derive(Default)]
struct Local {
    active: Option<*const Inner>,
    jobs: Vec<Job>,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
}

/// Takes the jobs queued on this thread for `inner`.
fn take_local(inner: &Inner) -> Vec<Job> {
    let key: *const Inner = inner;
    let jobs = LOCAL
        .try_with(|l| match l.try_borrow_mut() {
            Ok(mut l) if l.active == Some(key) => std::mem::take(&mut l.jobs),
            _ => Vec::new(),
        })
        .unwrap_or_default();
    inner
        .caller_completions
        .fetch_add(jobs.len() as u64, std::sync::atomic::Ordering::Relaxed);
    jobs
}

struct Inner {
    /// Requests run by the thread blocked on them ([`Local`]).
    caller_completions: std::sync::atomic::AtomicU64,
    arena: Arc<FrameArena>,
    files: RwLock<Slab<RawFd>>,
    counters: Counters,
    /// Most bytes one system call transfers (see [`ThreadsBackend::with_max_transfer`]).
    max_transfer: usize,
}

/// The thread-pool backend. See the [module documentation](self).
///
/// Dropping it shuts it down (drains the queue and joins the workers).
pub struct ThreadsBackend {
    inner: Arc<Inner>,
    tx: Mutex<Option<Sender<Job>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for ThreadsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadsBackend")
            .field("threads", &self.workers.lock().len())
            .finish_non_exhaustive()
    }
}

impl ThreadsBackend {
    /// Starts `threads` worker threads (at least one) named `uringcache-io-N`.
    pub fn new(arena: Arc<FrameArena>, threads: usize) -> io::Result<ThreadsBackend> {
        Self::with_max_transfer(arena, threads, MAX_RW)
    }

    /// Like [`new`](Self::new), with each `pread`/`pwrite` asking for at most `max_transfer`
    /// bytes (a multiple of the files' direct-I/O alignment): larger requests are issued in
    /// pieces that continue like short transfers. Small values exercise that path in tests.
    pub fn with_max_transfer(
        arena: Arc<FrameArena>,
        threads: usize,
        max_transfer: usize,
    ) -> io::Result<ThreadsBackend> {
        let inner = Arc::new(Inner {
            caller_completions: Default::default(),
            arena,
            files: RwLock::new(Slab::new()),
            counters: Counters::default(),
            max_transfer,
        });
        let (tx, rx) = channel::unbounded::<Job>();
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let rx: Receiver<Job> = rx.clone();
            let inner = Arc::clone(&inner);
            let spawned = thread::Builder::new()
                .name(format!("uringcache-io-{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        run(&inner, job);
                    }
                });
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(e) => {
                    // Close the channel so the workers already started exit.
                    drop(tx);
                    for w in workers {
                        let _ = w.join();
                    }
                    return Err(error::os(e, "cannot start an I/O worker thread"));
                }
            }
        }
        Ok(ThreadsBackend {
            inner,
            tx: Mutex::new(Some(tx)),
            workers: Mutex::new(workers),
        })
    }
}

impl Backend for ThreadsBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn register(&self, fd: RawFd) -> io::Result<FileId> {
        if fd < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot register file descriptor {fd}"),
            ));
        }
        if self.tx.lock().is_none() {
            return Err(shut_down_error(NAME));
        }
        let key = self.inner.files.write().insert(fd);
        u32::try_from(key).map(FileId).map_err(|_| {
            self.inner.files.write().remove(key);
            io::Error::other("too many files registered")
        })
    }

    fn unregister(&self, file: FileId) {
        self.inner.files.write().try_remove(file.0 as usize);
    }

    unsafe fn submit(&self, batch: &mut Vec<Request>) {
        let mut refused = Vec::new();
        {
            let files = self.inner.files.read();
            let tx = self.tx.lock();
            // A lone request of a thread blocked in `block_on`: that thread runs it.
            let key: *const Inner = &*self.inner;
            if batch.len() == 1 && tx.is_some() && !submitting_detached() {
                if let Some(&fd) = files.get(batch[0].file.0 as usize) {
                    let queued = LOCAL
                        .try_with(|l| match l.try_borrow_mut() {
                            Ok(mut l) if l.active == Some(key) => {
                                let req = batch.pop().expect("one request");
                                l.jobs.push(Job { fd, req });
                                true
                            }
                            _ => false,
                        })
                        .unwrap_or(false);
                    if queued {
                        return;
                    }
                }
            }
            for req in batch.drain(..) {
                let Some(tx) = tx.as_ref() else {
                    refused.push((req, shut_down_error(NAME)));
                    continue;
                };
                let Some(&fd) = files.get(req.file.0 as usize) else {
                    let e = unknown_file_error(NAME, req.file);
                    refused.push((req, e));
                    continue;
                };
                if let Err(channel::SendError(job)) = tx.send(Job { fd, req }) {
                    refused.push((job.req, shut_down_error(NAME)));
                }
            }
        }
        for (req, e) in refused {
            complete(&self.inner.counters, req.op.kind(), req.done, Err(e));
        }
    }

    fn stats(&self) -> BackendStats {
        BackendStats {
            caller_completions: self
                .inner
                .caller_completions
                .load(std::sync::atomic::Ordering::Relaxed),
            ..self.inner.counters.snapshot()
        }
    }

    fn block_on(&self, step: &mut dyn FnMut(&mut Context<'_>) -> Poll<()>) {
        let inner = &*self.inner;
        let key: *const Inner = inner;
        let Ok(previous) = LOCAL.try_with(|l| l.borrow_mut().active.replace(key)) else {
            uringcache_core::backend::park_until_ready(step);
            return;
        };
        /// Runs what is still queued and restores the outer `block_on`'s backend, also when
        /// the future panics.
        struct Scope<'a>(&'a Inner, Option<*const Inner>);
        impl Drop for Scope<'_> {
            fn drop(&mut self) {
                loop {
                    let jobs = take_local(self.0);
                    if jobs.is_empty() {
                        break;
                    }
                    for job in jobs {
                        run(self.0, job);
                    }
                }
                let previous = self.1;
                let _ = LOCAL.try_with(|l| {
                    if let Ok(mut l) = l.try_borrow_mut() {
                        l.active = previous;
                    }
                });
            }
        }
        let _scope = Scope(inner, previous);
        let waker = unpark_waker();
        let mut cx = Context::from_waker(&waker);
        while step(&mut cx).is_pending() {
            let jobs = take_local(inner);
            if jobs.is_empty() {
                thread::park();
            }
            for job in jobs {
                run(inner, job);
            }
        }
    }

    fn shutdown(&self) {
        // Closing the channel lets the workers drain what is queued, then exit.
        drop(self.tx.lock().take());
        let me = thread::current().id();
        let workers: Vec<JoinHandle<()>> = std::mem::take(&mut *self.workers.lock());
        for w in workers {
            // A completion calling shutdown runs on a worker, which cannot join itself.
            if w.thread().id() == me {
                continue;
            }
            if w.join().is_err() {
                tracing::error!("a uringcache I/O worker thread panicked");
            }
        }
    }
}

impl Drop for ThreadsBackend {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(inner: &Inner, job: Job) {
    let Job { fd, req } = job;
    let kind = req.op.kind();
    let result = match req.op {
        Op::Read {
            offset,
            frames,
            len,
        } => rw(inner, fd, None, offset, &frames, len),
        Op::Write {
            offset,
            frames,
            len,
            dsync,
        } => rw(inner, fd, Some(dsync), offset, &frames, len),
        Op::Fsync { datasync } => retry(inner, || {
            // SAFETY: plain system calls on a descriptor the caller keeps open until
            // `unregister`, which it calls only when no request is in flight.
            unsafe {
                if datasync {
                    libc::fdatasync(fd)
                } else {
                    libc::fsync(fd)
                }
            }
        }),
        Op::Truncate { len } => match libc::off_t::try_from(len) {
            // SAFETY: as above.
            Ok(len) => retry(inner, || unsafe { libc::ftruncate(fd, len) }),
            Err(_) => Err(io::Error::from_raw_os_error(libc::EFBIG)),
        },
    };
    complete(&inner.counters, kind, req.done, result);
}

/// Runs a system call returning 0 or -1, again on `EINTR` / `EAGAIN`.
fn retry(inner: &Inner, mut call: impl FnMut() -> libc::c_int) -> io::Result<usize> {
    let mut tries = 0;
    loop {
        inner.counters.submitted();
        if call() == 0 {
            return Ok(0);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) | Some(libc::EAGAIN) if tries < MAX_RETRIES => tries += 1,
            _ => return Err(e),
        }
    }
}

/// A whole read or write (`write` is `Some(dsync)`): one `pread`/`pwrite` when the remaining
/// bytes are one run of memory, else `preadv`/`pwritev` with one iovec per run of frames, and
/// `pwritev2` with `RWF_DSYNC` for a data-synchronous write; short transfers continue.
fn rw(
    inner: &Inner,
    fd: RawFd,
    write: Option<bool>,
    offset: u64,
    frames: &[FrameId],
    len: usize,
) -> io::Result<usize> {
    check_rw(&inner.arena, offset, frames, len)?;
    if len == 0 {
        return Ok(0);
    }
    let mut progress = Progress::new(write.is_some(), len).with_max(inner.max_transfer);
    let mut iov: Vec<libc::iovec> = Vec::new();
    loop {
        build_iovecs(
            &inner.arena,
            frames,
            progress.done,
            progress.issue_end(),
            &mut iov,
        );
        // `check_rw` bounded `offset + len` by `i64::MAX`.
        let pos = (offset + progress.done as u64) as libc::off_t;
        inner.counters.submitted();
        // SAFETY: the iovecs cover frames of the arena that the request owns until its
        // completion runs (Backend contract); the descriptor stays open meanwhile.
        let n = unsafe {
            match (write, iov.len()) {
                (None, 1) => libc::pread(fd, iov[0].iov_base, iov[0].iov_len, pos),
                (Some(false), 1) => libc::pwrite(fd, iov[0].iov_base, iov[0].iov_len, pos),
                (None, k) => libc::preadv(fd, iov.as_ptr(), k as libc::c_int, pos),
                (Some(false), k) => libc::pwritev(fd, iov.as_ptr(), k as libc::c_int, pos),
                (Some(true), k) => {
                    libc::pwritev2(fd, iov.as_ptr(), k as libc::c_int, pos, libc::RWF_DSYNC)
                }
            }
        };
        let res = if n < 0 {
            -(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO) as i64)
        } else {
            n as i64
        };
        match progress.apply(res) {
            Step::Again => continue,
            Step::Done(result) => return result,
        }
    }
}
