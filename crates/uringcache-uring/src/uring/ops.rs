//! Operations: how a [`Request`] becomes SQEs, and what a CQE does to it.
//!
//! [`Shared::prepare`] turns a request into an [`InFlight`] operation (or into a [`Later`], work
//! done on the submitting thread: an immediate completion for a request refused up front, or
//! the `ftruncate(2)` fallback). [`InFlight::sqe`] builds the SQE for what is left of an
//! operation — `READ_FIXED` / `WRITE_FIXED` when its frames are one run of memory inside one
//! registered region of the arena (`buffers.rs`), `READV` / `WRITEV` otherwise, `FSYNC`, `FTRUNCATE` — and [`InFlight::on_cqe`] applies a
//! result: finish, or continue (short transfers, `EINTR`, `EAGAIN`, with the rules of
//! [`Progress`]).
//!
//! Invariants: an operation is only touched with the state mutex held (it lives in the slab or
//! the queue of waiting requests of [`State`]); its [`IoVecs`] are replaced only once the CQE
//! of the SQE that names them has arrived, so the kernel never reads freed iovecs.

use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};
use uringcache_core::backend::{Completion, Op, OpKind, Request};
use uringcache_core::frames::FrameArena;
use uringcache_core::page::FrameId;

use super::driver::{Shared, State};
use super::NAME;
use crate::common::{
    build_iovecs, check_rw, complete, consecutive, unknown_file_error, used_frames, Counters,
    Progress, Step, MAX_RETRIES,
};

/// How an SQE names its file.
#[derive(Clone, Copy, Debug)]
enum Target {
    Fd(RawFd),
    Fixed(u32),
}

/// Builds an SQE with the target as `types::Fd` or `types::Fixed`.
macro_rules! with_target {
    ($target:expr, |$fd:ident| $body:expr) => {
        match $target {
            Target::Fd(raw) => {
                let $fd = types::Fd(raw);
                $body
            }
            Target::Fixed(slot) => {
                let $fd = types::Fixed(slot);
                $body
            }
        }
    };
}

/// The iovecs of a vectored operation. Boxed, so their address stays put while the slab that
/// holds the operation grows, until the operation's CQE arrives.
struct IoVecs(Box<[libc::iovec]>);

// SAFETY: the iovecs point into the frame arena, which is `Send + Sync`; they are only read by
// the kernel and rebuilt under the state mutex.
unsafe impl Send for IoVecs {}

/// One operation the kernel works on (or that waits for room to be started).
pub(super) struct InFlight {
    target: Target,
    work: Work,
    pub(super) done: Completion,
}

enum Work {
    Rw {
        offset: u64,
        frames: Vec<FrameId>,
        /// Fixed buffer index when the frames are one run of memory in one registered region.
        fixed: Option<u16>,
        iovecs: IoVecs,
        progress: Progress,
        /// `RWF_DSYNC` on every SQE of the write.
        dsync: bool,
    },
    Fsync {
        datasync: bool,
        retries: u32,
    },
    Truncate {
        len: u64,
        retries: u32,
    },
}

impl InFlight {
    pub(super) fn kind(&self) -> OpKind {
        match &self.work {
            Work::Rw { progress, .. } if progress.write => OpKind::Write,
            Work::Rw { .. } => OpKind::Read,
            Work::Fsync { .. } => OpKind::Fsync,
            Work::Truncate { .. } => OpKind::Truncate,
        }
    }

    /// The SQE for what is left of the operation.
    pub(super) fn sqe(&mut self, arena: &FrameArena, key: usize) -> squeue::Entry {
        let target = self.target;
        let entry = match &mut self.work {
            Work::Rw {
                offset,
                frames,
                fixed,
                iovecs,
                progress,
                dsync,
            } => {
                let rw_flags = if *dsync { libc::RWF_DSYNC } else { 0 };
                let pos = *offset + progress.done as u64;
                let left = progress.len - progress.done;
                match *fixed {
                    Some(buf_index) => {
                        // One run of registered memory: frames[0] onwards, consecutive ids.
                        let buf = arena.ptr(frames[0]).wrapping_add(progress.done);
                        let n = (progress.issue_end() - progress.done).min(left) as u32;
                        if progress.write {
                            with_target!(target, |fd| opcode::WriteFixed::new(
                                fd, buf, n, buf_index
                            )
                            .offset(pos)
                            .rw_flags(rw_flags as _)
                            .build())
                        } else {
                            with_target!(target, |fd| opcode::ReadFixed::new(fd, buf, n, buf_index)
                                .offset(pos)
                                .build())
                        }
                    }
                    None => {
                        let mut v = Vec::new();
                        build_iovecs(arena, frames, progress.done, progress.issue_end(), &mut v);
                        // The previous iovecs (if any) belong to an SQE whose CQE has arrived:
                        // the kernel is done with them.
                        *iovecs = IoVecs(v.into_boxed_slice());
                        let (ptr, n) = (iovecs.0.as_ptr(), iovecs.0.len() as u32);
                        if progress.write {
                            with_target!(target, |fd| opcode::Writev::new(fd, ptr, n)
                                .offset(pos)
                                .rw_flags(rw_flags as _)
                                .build())
                        } else {
                            with_target!(target, |fd| opcode::Readv::new(fd, ptr, n)
                                .offset(pos)
                                .build())
                        }
                    }
                }
            }
            Work::Fsync { datasync, .. } => {
                let flags = if *datasync {
                    types::FsyncFlags::DATASYNC
                } else {
                    types::FsyncFlags::empty()
                };
                with_target!(target, |fd| opcode::Fsync::new(fd).flags(flags).build())
            }
            Work::Truncate { len, .. } => {
                with_target!(target, |fd| opcode::Ftruncate::new(fd, *len).build())
            }
        };
        entry.user_data(key as u64)
    }

    /// Applies a CQE result: continue, or finish with a result.
    pub(super) fn on_cqe(&mut self, res: i32) -> Step {
        match &mut self.work {
            Work::Rw { progress, .. } => progress.apply(res as i64),
            Work::Fsync { retries, .. } | Work::Truncate { retries, .. } => {
                if res >= 0 {
                    return Step::Done(Ok(0));
                }
                let errno = -res;
                if (errno == libc::EINTR || errno == libc::EAGAIN) && *retries < MAX_RETRIES {
                    *retries += 1;
                    Step::Again
                } else {
                    Step::Done(Err(io::Error::from_raw_os_error(errno)))
                }
            }
        }
    }
}

/// What the submitting thread does after releasing the mutex.
pub(super) enum Later {
    /// Run a completion with this result.
    Complete(Completion, OpKind, io::Result<usize>),
    /// `ftruncate(2)` on this thread: the kernel (before Linux 6.9) lacks
    /// `IORING_OP_FTRUNCATE`. Truncation is rare (`set_len`) and quick (metadata only, no data
    /// transfer), so a synchronous call on the submitting thread costs less than a hand-off to
    /// another thread, and its completion runs right after `submit` releases the mutex.
    Truncate(Completion, RawFd, u64),
    /// `fdatasync(2)` (`true`) or `fsync(2)` on this thread: a thread blocked in
    /// `Backend::block_on` with a ring of its own flushes inline. `IORING_OP_FSYNC` always
    /// runs on an io-wq worker, so on the ring the blocked thread would wait for that worker
    /// and then for the task work that posts the completion: two thread hops where the
    /// thread, which only waits, can make the call itself.
    Fsync(Completion, RawFd, bool),
}

impl Later {
    /// Does it (on the submitting thread, with the state mutex released) and runs the
    /// completion.
    pub(super) fn run(self, counters: &Counters) {
        match self {
            Later::Complete(done, kind, result) => complete(counters, kind, done, result),
            Later::Truncate(done, fd, len) => {
                let result = match libc::off_t::try_from(len) {
                    // SAFETY: plain system call on a descriptor the caller keeps open.
                    Ok(len) => match unsafe { libc::ftruncate(fd, len) } {
                        0 => Ok(0),
                        _ => Err(io::Error::last_os_error()),
                    },
                    Err(_) => Err(io::Error::from_raw_os_error(libc::EFBIG)),
                };
                counters.submitted();
                complete(counters, OpKind::Truncate, done, result)
            }
            Later::Fsync(done, fd, datasync) => {
                let result = loop {
                    counters.submitted();
                    // SAFETY: plain system calls on a descriptor the caller keeps open until
                    // `unregister`, which it calls only when no request is in flight.
                    let rc = unsafe {
                        if datasync {
                            libc::fdatasync(fd)
                        } else {
                            libc::fsync(fd)
                        }
                    };
                    if rc == 0 {
                        break Ok(0);
                    }
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::EINTR) {
                        break Err(e);
                    }
                };
                complete(counters, OpKind::Fsync, done, result)
            }
        }
    }
}

impl Shared {
    /// Turns a request into an operation, or into something done on this thread. An operation
    /// for a thread's own ring (`thread_ring`) names its file by descriptor and its frames
    /// unregistered: the shared ring's file and buffer tables are not that ring's.
    pub(super) fn prepare(
        &self,
        st: &State,
        req: Request,
        thread_ring: bool,
    ) -> Result<InFlight, Later> {
        let Request { file, op, done } = req;
        let kind = op.kind();
        let Some(entry) = st.files.get(file.0 as usize) else {
            return Err(Later::Complete(
                done,
                kind,
                Err(unknown_file_error(NAME, file)),
            ));
        };
        let target = if entry.fixed && !thread_ring {
            Target::Fixed(file.0)
        } else {
            Target::Fd(entry.fd)
        };
        let dsync = matches!(op, Op::Write { dsync: true, .. });
        let work = match op {
            Op::Read {
                offset,
                frames,
                len,
            }
            | Op::Write {
                offset,
                frames,
                len,
                ..
            } => {
                if let Err(e) = check_rw(&self.arena, offset, &frames, len) {
                    return Err(Later::Complete(done, kind, Err(e)));
                }
                if len == 0 {
                    return Err(Later::Complete(done, kind, Ok(0)));
                }
                let used = &frames[..used_frames(&self.arena, &frames, len)];
                let fixed = match &self.buffers {
                    Some(regions) if !thread_ring && consecutive(used) => regions.index_for(used),
                    _ => None,
                };
                Work::Rw {
                    offset,
                    frames,
                    fixed,
                    iovecs: IoVecs(Box::new([])),
                    progress: Progress::new(kind == OpKind::Write, len).with_max(self.max_transfer),
                    dsync,
                }
            }
            Op::Fsync { datasync } => Work::Fsync {
                datasync,
                retries: 0,
            },
            Op::Truncate { len } => {
                if !self.ftruncate_op {
                    return Err(Later::Truncate(done, entry.fd, len));
                }
                Work::Truncate { len, retries: 0 }
            }
        };
        Ok(InFlight { target, work, done })
    }
}
