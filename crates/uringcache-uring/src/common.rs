//! Pieces both backends share: request validation, iovec building, counters, error values.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

use uringcache_core::backend::{BackendStats, Completion, FileId, OpKind};
use uringcache_core::frames::FrameArena;
use uringcache_core::page::FrameId;

/// Most iovecs one vectored system call accepts (`UIO_MAXIOV`). A request spanning more
/// segments is issued in pieces: the first call transfers what its iovecs cover and the rest
/// continues like a short transfer.
pub(crate) const IOV_MAX: usize = 1024;

/// Most bytes one read or write asks for; Linux caps a single transfer at `MAX_RW_COUNT`
/// (`INT_MAX` rounded down to a page) anyway, and continues like a short transfer.
pub(crate) const MAX_RW: usize = 1 << 30;

/// Consecutive `EINTR` / `EAGAIN` results tolerated on one operation before it fails.
pub(crate) const MAX_RETRIES: u32 = 1000;

/// The counters behind [`BackendStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    reads: AtomicU64,
    read_bytes: AtomicU64,
    writes: AtomicU64,
    write_bytes: AtomicU64,
    fsyncs: AtomicU64,
    submit_calls: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    /// Accounts for one finished operation.
    pub(crate) fn record(&self, kind: OpKind, result: &io::Result<usize>) {
        match (kind, result) {
            (_, Err(_)) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
            (OpKind::Read, Ok(n)) => {
                self.reads.fetch_add(1, Ordering::Relaxed);
                self.read_bytes.fetch_add(*n as u64, Ordering::Relaxed);
            }
            (OpKind::Write, Ok(n)) => {
                self.writes.fetch_add(1, Ordering::Relaxed);
                self.write_bytes.fetch_add(*n as u64, Ordering::Relaxed);
            }
            (OpKind::Fsync, Ok(_)) => {
                self.fsyncs.fetch_add(1, Ordering::Relaxed);
            }
            (OpKind::Truncate, Ok(_)) => {}
        }
    }

    /// Counts one system call that submitted work.
    pub(crate) fn submitted(&self) {
        self.submit_calls.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> BackendStats {
        BackendStats {
            reads: self.reads.load(Ordering::Relaxed),
            read_bytes: self.read_bytes.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            write_bytes: self.write_bytes.load(Ordering::Relaxed),
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            submit_calls: self.submit_calls.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            fixed_buffer_bytes: 0,
            thread_rings: 0,
            caller_completions: 0,
            reactor_rings: 0,
            reactor_completions: 0,
        }
    }
}

/// Runs a completion, counting its outcome first. A panicking completion is logged and
/// swallowed: it must not take the driver (and every other request's completion) with it.
pub(crate) fn complete(
    counters: &Counters,
    kind: OpKind,
    done: Completion,
    result: io::Result<usize>,
) {
    counters.record(kind, &result);
    if catch_unwind(AssertUnwindSafe(move || done(result))).is_err() {
        tracing::error!("a uringcache I/O completion panicked; the panic was contained");
    }
}

/// The error given to requests submitted after `shutdown`.
pub(crate) fn shut_down_error(backend: &str) -> io::Error {
    io::Error::other(format!(
        "the {backend} backend has been shut down; the request was not started"
    ))
}

/// The error given to requests naming a file that was never registered (or was unregistered).
pub(crate) fn unknown_file_error(backend: &str, file: FileId) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "file {} is not registered with the {backend} backend",
            file.0
        ),
    )
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Checks a read or write request against the arena: `len` fits in the frames, every frame
/// that `len` covers exists, and `offset + len` is a valid file position.
pub(crate) fn check_rw(
    arena: &FrameArena,
    offset: u64,
    frames: &[FrameId],
    len: usize,
) -> io::Result<()> {
    let page = arena.page_size();
    let room = frames.len().saturating_mul(page);
    if len > room {
        return Err(invalid(format!(
            "request of {len} bytes does not fit in {} frames of {page} bytes",
            frames.len()
        )));
    }
    let used = len.div_ceil(page);
    if let Some(&bad) = frames[..used]
        .iter()
        .find(|&&f| f as usize >= arena.frames())
    {
        return Err(invalid(format!(
            "frame {bad} is outside the arena of {} frames",
            arena.frames()
        )));
    }
    match offset.checked_add(len as u64) {
        Some(end) if end <= i64::MAX as u64 => Ok(()),
        _ => Err(invalid(format!(
            "file range {offset} + {len} overflows the largest file offset"
        ))),
    }
}

/// The frames that `len` bytes occupy.
pub(crate) fn used_frames(arena: &FrameArena, frames: &[FrameId], len: usize) -> usize {
    len.div_ceil(arena.page_size()).min(frames.len())
}

/// Whether the first `n` frames are consecutive frame ids (and so one run of memory).
pub(crate) fn consecutive(frames: &[FrameId]) -> bool {
    frames.windows(2).all(|w| w[0].checked_add(1) == Some(w[1]))
}

/// The iovecs covering bytes `done..len` of a request over `frames`, at most [`IOV_MAX`] of
/// them; frames adjacent in memory share one iovec.
pub(crate) fn build_iovecs(
    arena: &FrameArena,
    frames: &[FrameId],
    done: usize,
    len: usize,
    out: &mut Vec<libc::iovec>,
) {
    out.clear();
    let page = arena.page_size();
    let mut pos = done;
    let mut bytes = 0usize;
    while pos < len && bytes < MAX_RW {
        let frame = frames[pos / page];
        let within = pos % page;
        let seg = (page - within).min(len - pos);
        let base = arena.ptr(frame).wrapping_add(within);
        match out.last_mut() {
            Some(last) if (last.iov_base as *mut u8).wrapping_add(last.iov_len) == base => {
                last.iov_len += seg;
            }
            _ => {
                if out.len() == IOV_MAX {
                    break;
                }
                out.push(libc::iovec {
                    iov_base: base.cast(),
                    iov_len: seg,
                });
            }
        }
        pos += seg;
        bytes += seg;
    }
}

/// The outcome of one system call (or CQE) of a read or write, given the progress so far.
pub(crate) enum Step {
    /// Issue the rest of the transfer.
    Again,
    /// The request is finished with this result.
    Done(io::Result<usize>),
}

/// Progress of a read or write across short transfers.
#[derive(Debug)]
pub(crate) struct Progress {
    pub(crate) write: bool,
    pub(crate) len: usize,
    pub(crate) done: usize,
    pub(crate) retries: u32,
    /// Most bytes one system call (or SQE) asks for; the rest continues like a short transfer.
    pub(crate) max: usize,
}

impl Progress {
    pub(crate) fn new(write: bool, len: usize) -> Self {
        Progress {
            write,
            len,
            done: 0,
            retries: 0,
            max: MAX_RW,
        }
    }

    /// Caps each system call at `max` bytes (at least one byte, at most [`MAX_RW`]).
    pub(crate) fn with_max(mut self, max: usize) -> Self {
        self.max = max.clamp(1, MAX_RW);
        self
    }

    /// Where the next system call's transfer ends: the end of the request, or `max` bytes on.
    pub(crate) fn issue_end(&self) -> usize {
        self.len.min(self.done.saturating_add(self.max))
    }

    /// Applies a result in the kernel's convention (bytes, or `-errno`).
    ///
    /// * `n > 0`: progress; continue while bytes are left.
    /// * `0`: end of file for a read (complete with the total so far); for a write with bytes
    ///   left, `ENOSPC` (a write that makes no progress is never success).
    /// * `-EINTR` / `-EAGAIN`: issue the same remainder again.
    /// * `-EINVAL` on a read that already made progress: the previous transfer stopped at an
    ///   unaligned end of file, and an `O_DIRECT` read cannot start there; the total so far is the
    ///   answer.
    /// * other errors: fail with the errno.
    pub(crate) fn apply(&mut self, res: i64) -> Step {
        if res > 0 {
            self.retries = 0;
            self.done += res as usize;
            if self.done >= self.len {
                self.done = self.len;
                return Step::Done(Ok(self.done));
            }
            return Step::Again;
        }
        if res == 0 {
            return if self.write {
                Step::Done(Err(io::Error::from_raw_os_error(libc::ENOSPC)))
            } else {
                Step::Done(Ok(self.done))
            };
        }
        let errno = (-res) as i32;
        match errno {
            libc::EINTR | libc::EAGAIN if self.retries < MAX_RETRIES => {
                self.retries += 1;
                Step::Again
            }
            libc::EINVAL if !self.write && self.done > 0 => Step::Done(Ok(self.done)),
            _ => Step::Done(Err(io::Error::from_raw_os_error(errno))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iovecs_coalesce_adjacent_frames() {
        let arena = FrameArena::new(8, 4096).unwrap();
        let mut v = Vec::new();
        build_iovecs(&arena, &[1, 2, 3], 0, 3 * 4096, &mut v);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].iov_len, 3 * 4096);
        build_iovecs(&arena, &[5, 1, 2], 100, 3 * 4096, &mut v);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].iov_base as usize, arena.ptr(5) as usize + 100);
        assert_eq!(v[0].iov_len, 4096 - 100);
        assert_eq!(v[1].iov_len, 2 * 4096);
        build_iovecs(&arena, &[5, 1, 2], 4096 + 10, 2 * 4096 + 20, &mut v);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].iov_base as usize, arena.ptr(1) as usize + 10);
        assert_eq!(v[0].iov_len, 4096 + 10);
    }

    #[test]
    fn progress_rules() {
        let mut p = Progress::new(false, 8192);
        assert_eq!(p.issue_end(), 8192);
        assert_eq!(Progress::new(false, 8192).with_max(512).issue_end(), 512);
        assert!(matches!(p.apply(4096), Step::Again));
        assert!(matches!(p.apply(-(libc::EINTR as i64)), Step::Again));
        assert!(matches!(p.apply(0), Step::Done(Ok(4096))));
        let mut p = Progress::new(false, 8192);
        assert!(matches!(p.apply(1000), Step::Again));
        assert!(matches!(
            p.apply(-(libc::EINVAL as i64)),
            Step::Done(Ok(1000))
        ));
        let mut p = Progress::new(true, 8192);
        assert!(matches!(p.apply(4096), Step::Again));
        match p.apply(0) {
            Step::Done(Err(e)) => assert_eq!(e.raw_os_error(), Some(libc::ENOSPC)),
            _ => panic!("a write without progress must fail"),
        }
        let mut p = Progress::new(true, 4096);
        match p.apply(-(libc::EIO as i64)) {
            Step::Done(Err(e)) => assert_eq!(e.raw_os_error(), Some(libc::EIO)),
            _ => panic!("EIO must fail"),
        }
    }

    #[test]
    fn bad_requests_are_refused() {
        let arena = FrameArena::new(4, 4096).unwrap();
        assert!(check_rw(&arena, 0, &[0, 1], 8192).is_ok());
        assert!(check_rw(&arena, 0, &[0], 8192).is_err());
        assert!(check_rw(&arena, 0, &[9], 4096).is_err());
        assert!(check_rw(&arena, u64::MAX - 10, &[0], 4096).is_err());
        // Frames past `len` are not used and not checked.
        assert!(check_rw(&arena, 0, &[0, 99], 4096).is_ok());
    }
}
