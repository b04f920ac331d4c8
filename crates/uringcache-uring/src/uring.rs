//! The `io_uring` backend: callers submit from their own threads, one driver thread reaps.
//!
//! See the crate documentation for the design; this module holds the mechanics:
//!
//! * `State` (behind one mutex) owns the submission queue's user-space side, the slab of
//!   in-flight operations (key = `user_data`), the queue of requests waiting for completion
//!   queue room, and the file table.
//! * The driver thread owns the completion queue. It blocks in `io_uring_enter(GETEVENTS,
//!   min_complete = 1)`, takes every CQE available, decides under the mutex which operations
//!   finished and which continue (short transfers, `EINTR`, `EAGAIN`), starts waiting requests
//!   as room frees up, and then runs the completions with the mutex released.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::thread::{self, JoinHandle, ThreadId};

use io_uring::{opcode, squeue, types, IoUring, Probe, SubmissionQueue};
use parking_lot::Mutex;
use slab::Slab;
use uringcache_core::backend::{Backend, BackendStats, Completion, FileId, Op, Request};
use uringcache_core::frames::FrameArena;
use uringcache_core::page::FrameId;

use crate::common::{
    build_iovecs, check_rw, complete, consecutive, shut_down_error, unknown_file_error,
    used_frames, Counters, Kind, Progress, Step, MAX_RETRIES, MAX_RW,
};
use crate::error;

/// `user_data` of the NOP that wakes the driver at shutdown; never a slab key.
const WAKE: u64 = u64::MAX;

/// Slots of the sparse registered-file table.
const FILE_SLOTS: u32 = 1024;

/// How long an idle SQPOLL kernel thread spins before it sleeps (milliseconds).
const SQPOLL_IDLE_MS: u32 = 50;

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
    /// Register the frame arena as fixed buffers (`IORING_REGISTER_BUFFERS`) so that reads and
    /// writes of consecutive frames skip per-I/O page pinning. Default `true`. If registration
    /// fails (typically `RLIMIT_MEMLOCK`), a warning is logged and the same frames are used
    /// unregistered.
    pub register_buffers: bool,
    /// Use a registered file table (`IORING_REGISTER_FILES`) so that each I/O skips the file
    /// descriptor lookup. Default `true`. If the kernel refuses it, plain descriptors are used.
    pub register_files: bool,
    /// Most bytes one SQE transfers; a larger request is issued in pieces, each continuing
    /// like a short transfer. Default 1 GiB (the kernel's own cap). A multiple of the files'
    /// direct-I/O alignment; small values exercise the short-transfer path in tests.
    pub max_transfer: usize,
}

impl Default for UringConfig {
    fn default() -> Self {
        UringConfig {
            entries: 256,
            sqpoll: false,
            register_buffers: true,
            register_files: true,
            max_transfer: MAX_RW,
        }
    }
}

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
struct InFlight {
    target: Target,
    work: Work,
    done: Completion,
}

enum Work {
    Rw {
        offset: u64,
        frames: Vec<FrameId>,
        /// Fixed buffer index when the frames are one registered run of memory.
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
    fn kind(&self) -> Kind {
        match &self.work {
            Work::Rw { progress, .. } if progress.write => Kind::Write,
            Work::Rw { .. } => Kind::Read,
            Work::Fsync { .. } => Kind::Fsync,
            Work::Truncate { .. } => Kind::Truncate,
        }
    }

    /// The SQE for what is left of the operation.
    fn sqe(&mut self, arena: &FrameArena, key: usize) -> squeue::Entry {
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
    fn on_cqe(&mut self, res: i32) -> Step {
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

struct FileEntry {
    fd: RawFd,
    /// Whether the file sits in the registered table at slot = its key.
    fixed: bool,
}

/// Everything behind the submission mutex.
struct State {
    ops: Slab<InFlight>,
    /// Requests waiting for completion queue room, oldest first.
    pending: VecDeque<InFlight>,
    files: Slab<FileEntry>,
    /// Slots in the registered file table (0: no table).
    file_slots: u32,
    closing: bool,
}

/// What the submitting thread does after releasing the mutex.
enum Later {
    /// Run a completion with this result.
    Complete(Completion, Kind, io::Result<usize>),
    /// `ftruncate(2)` on this thread: the kernel (before Linux 6.9) lacks
    /// `IORING_OP_FTRUNCATE`. Truncation is rare (`set_len`) and quick (metadata only, no data
    /// transfer), so a synchronous call on the submitting thread costs less than a hand-off to
    /// another thread, and its completion runs right after `submit` releases the mutex.
    Truncate(Completion, RawFd, u64),
}

struct Shared {
    // Field order is drop order: the ring (and with it the kernel's references to the
    // registered buffers) goes before the arena.
    ring: IoUring,
    state: Mutex<State>,
    arena: Arc<FrameArena>,
    counters: Counters,
    fixed_buffers: bool,
    ftruncate_op: bool,
    sqpoll: bool,
    max_inflight: usize,
    max_transfer: usize,
}

impl Shared {
    /// Pushes `entry`, submitting to make room when the queue is full.
    ///
    /// Called with the state mutex held (the caller owns `sq`).
    fn push(&self, sq: &mut SubmissionQueue<'_>, entry: &squeue::Entry) {
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
    fn enter_submit(&self) {
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
    fn start(&self, st: &mut State, sq: &mut SubmissionQueue<'_>, op: InFlight) {
        let entry = st.ops.vacant_entry();
        let key = entry.key();
        let op = entry.insert(op);
        let sqe = op.sqe(&self.arena, key);
        self.push(sq, &sqe);
    }

    /// Turns a request into an operation, or into something done on this thread.
    fn prepare(&self, st: &State, req: Request) -> Result<InFlight, Later> {
        let Request { file, op, done } = req;
        let kind = Kind::of(&op);
        let Some(entry) = st.files.get(file.0 as usize) else {
            return Err(Later::Complete(
                done,
                kind,
                Err(unknown_file_error(NAME, file)),
            ));
        };
        let target = if entry.fixed {
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
                let fixed = (self.fixed_buffers
                    && consecutive(used)
                    && self.arena.same_chunk(used[0], used[used.len() - 1]))
                .then(|| self.arena.buf_index(used[0]));
                Work::Rw {
                    offset,
                    frames,
                    fixed,
                    iovecs: IoVecs(Box::new([])),
                    progress: Progress::new(kind == Kind::Write, len).with_max(self.max_transfer),
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
            .field("fixed_buffers", &self.shared.fixed_buffers)
            .field("ftruncate_op", &self.shared.ftruncate_op)
            .field("max_inflight", &self.shared.max_inflight)
            .finish_non_exhaustive()
    }
}

/// Opcodes the backend cannot work without, with their names for error messages.
const REQUIRED_OPS: [(u8, &str); 6] = [
    (opcode::ReadFixed::CODE, "READ_FIXED"),
    (opcode::WriteFixed::CODE, "WRITE_FIXED"),
    (opcode::Readv::CODE, "READV"),
    (opcode::Writev::CODE, "WRITEV"),
    (opcode::Fsync::CODE, "FSYNC"),
    (opcode::Nop::CODE, "NOP"),
];

fn check_ops(probe: &Probe) -> io::Result<()> {
    let missing: Vec<&str> = REQUIRED_OPS
        .iter()
        .filter(|(code, _)| !probe.is_supported(*code))
        .map(|(_, name)| *name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "the kernel's io_uring lacks {}; upgrade the kernel, or {THREADS_ADVICE}",
                missing.join(", ")
            ),
        ))
    }
}

/// Rewrites an `io_uring_setup` error into one that says what to change, keeping the OS
/// error as its `source()`.
fn explain_setup_error(e: io::Error, entries: u32) -> io::Error {
    let (kind, msg) = match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => (
            io::ErrorKind::PermissionDenied,
            format!("io_uring is refused (seccomp or kernel.io_uring_disabled); {THREADS_ADVICE}"),
        ),
        Some(libc::ENOSYS) => (
            io::ErrorKind::Unsupported,
            format!("the kernel lacks io_uring (Linux 5.6 or later is needed); {THREADS_ADVICE}"),
        ),
        Some(libc::ENOMEM) => (
            io::ErrorKind::OutOfMemory,
            "io_uring setup could not get memory for its rings; on kernels before 5.12 the \
             rings count against RLIMIT_MEMLOCK (`ulimit -l`): raise it, lower `entries`, or \
             use the threads backend"
                .to_string(),
        ),
        Some(libc::EINVAL) => (
            io::ErrorKind::InvalidInput,
            format!("io_uring setup refused {entries} entries with these flags"),
        ),
        _ => (e.kind(), "io_uring setup failed".to_string()),
    };
    error::with_kind(kind, e, msg)
}

/// What to do when `io_uring` is unusable, in words that do not depend on how the API crate
/// spells its choice of backend: the thread pool by the name it reports
/// ([`ThreadsBackend`](crate::ThreadsBackend)'s `name()`, "threads"; `tests/fallback.rs` of
/// the workspace checks that the advice names it).
const THREADS_ADVICE: &str = "use the threads backend (a thread pool) instead";

fn build_ring(config: &UringConfig) -> io::Result<IoUring> {
    if config.entries == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an io_uring needs at least one entry (UringConfig::entries is 0)",
        ));
    }
    let mut builder = IoUring::builder();
    // No COOP_TASKRUN / DEFER_TASKRUN: without DEFER_TASKRUN the kernel posts a file I/O's CQE
    // from task work queued to the thread that submitted it, and with COOP_TASKRUN that thread
    // would run it only at its next system call. A caller that submits and then blocks (or
    // computes) would hold back its CQEs; the default notification (TWA_SIGNAL) runs the task
    // work promptly, so the driver is woken. (DEFER_TASKRUN also needs a single issuer.)
    builder.dontfork().setup_clamp();
    if config.sqpoll {
        builder.setup_sqpoll(SQPOLL_IDLE_MS);
    }
    let mut with_submit_all = builder.clone();
    with_submit_all.setup_submit_all();
    match with_submit_all.build(config.entries) {
        Ok(ring) => Ok(ring),
        // IORING_SETUP_SUBMIT_ALL needs Linux 5.18: try without it.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => builder.build(config.entries),
        Err(e) => Err(e),
    }
    .map_err(|e| explain_setup_error(e, config.entries))
}

impl UringBackend {
    /// Sets up the ring, registers the arena and the file table (as configured), and starts
    /// the driver thread.
    ///
    /// Errors say what to change when the kernel refuses `io_uring` (see [`probe`](Self::probe)).
    pub fn new(arena: Arc<FrameArena>, config: UringConfig) -> io::Result<UringBackend> {
        let ring = build_ring(&config)?;
        let submitter = ring.submitter();

        let mut probe = Probe::new();
        let ftruncate_op = match submitter.register_probe(&mut probe) {
            Ok(()) => {
                check_ops(&probe)?;
                probe.is_supported(opcode::Ftruncate::CODE)
            }
            Err(e) => {
                tracing::debug!("io_uring probe unavailable ({e}); assuming the base opcodes");
                false
            }
        };

        let mut fixed_buffers = false;
        if config.register_buffers {
            let iovecs: Vec<libc::iovec> = arena
                .chunks()
                .into_iter()
                .map(|(base, len)| libc::iovec {
                    iov_base: base.cast(),
                    iov_len: len,
                })
                .collect();
            // SAFETY: the chunks cover the arena's mapping, which outlives the ring: `Shared`
            // drops the ring before its `Arc<FrameArena>`.
            match unsafe { submitter.register_buffers(&iovecs) } {
                Ok(()) => fixed_buffers = true,
                Err(e) => tracing::warn!(
                    "uringcache: cannot register the {} MiB frame arena as io_uring fixed \
                     buffers ({e}); using unregistered I/O into the same frames (raise \
                     RLIMIT_MEMLOCK, `ulimit -l`, to enable them)",
                    (arena.frames() * arena.page_size()) >> 20
                ),
            }
        }

        let mut file_slots = 0;
        if config.register_files {
            match submitter.register_files_sparse(FILE_SLOTS) {
                Ok(()) => file_slots = FILE_SLOTS,
                Err(e) => tracing::debug!(
                    "io_uring sparse file table unavailable ({e}); using plain descriptors"
                ),
            }
        }

        let max_inflight = (ring.params().cq_entries() as usize)
            .saturating_sub(1)
            .max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                ops: Slab::with_capacity(max_inflight.min(1024)),
                pending: VecDeque::new(),
                files: Slab::new(),
                file_slots,
                closing: false,
            }),
            ring,
            arena,
            counters: Counters::default(),
            fixed_buffers,
            ftruncate_op,
            sqpoll: config.sqpoll,
            max_inflight,
            max_transfer: config.max_transfer,
        });

        let driver_shared = Arc::clone(&shared);
        let handle = thread::Builder::new()
            .name("uringcache-uring".into())
            .spawn(move || drive(&driver_shared))?;
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
        let ring = build_ring(&UringConfig {
            entries: 4,
            ..UringConfig::default()
        })?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe).map_err(|e| {
            error::with_kind(
                io::ErrorKind::Unsupported,
                e,
                format!(
                    "the kernel's io_uring cannot report its opcodes (Linux 5.6 or later is \
                     needed); {THREADS_ADVICE}"
                ),
            )
        })?;
        check_ops(&probe)
    }

    /// Whether the frame arena is registered as fixed buffers (false when disabled in the
    /// config or refused by the kernel).
    pub fn uses_fixed_buffers(&self) -> bool {
        self.shared.fixed_buffers
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
        if fd < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot register file descriptor {fd}"),
            ));
        }
        let mut st = self.shared.state.lock();
        if st.closing {
            return Err(shut_down_error(NAME));
        }
        let key = st.files.vacant_key();
        let id = u32::try_from(key).map_err(|_| io::Error::other("too many files registered"))?;
        let mut fixed = false;
        if id < st.file_slots {
            match self
                .shared
                .ring
                .submitter()
                .register_files_update(id, &[fd])
            {
                Ok(_) => fixed = true,
                Err(e) => tracing::debug!(
                    "io_uring file table update failed ({e}); file {id} uses its descriptor"
                ),
            }
        }
        st.files.insert(FileEntry { fd, fixed });
        Ok(FileId(id))
    }

    fn unregister(&self, file: FileId) {
        let mut st = self.shared.state.lock();
        if let Some(entry) = st.files.try_remove(file.0 as usize) {
            if entry.fixed {
                if let Err(e) = self
                    .shared
                    .ring
                    .submitter()
                    .register_files_update(file.0, &[-1])
                {
                    tracing::warn!("io_uring file table slot {} not cleared: {e}", file.0);
                }
            }
        }
    }

    unsafe fn submit(&self, batch: &mut Vec<Request>) {
        if batch.is_empty() {
            return;
        }
        let shared = &*self.shared;
        let mut later = Vec::new();
        let mut started = false;
        {
            let mut st = shared.state.lock();
            if st.closing {
                for req in batch.drain(..) {
                    let kind = Kind::of(&req.op);
                    later.push(Later::Complete(req.done, kind, Err(shut_down_error(NAME))));
                }
            } else {
                // SAFETY: the submission queue is only ever touched with the state mutex held,
                // so this is the only `SubmissionQueue` in existence.
                let mut sq = unsafe { shared.ring.submission_shared() };
                for req in batch.drain(..) {
                    match shared.prepare(&st, req) {
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
            match l {
                Later::Complete(done, kind, result) => {
                    complete(&shared.counters, kind, done, result)
                }
                Later::Truncate(done, fd, len) => {
                    let result = match libc::off_t::try_from(len) {
                        // SAFETY: plain system call on a descriptor the caller keeps open.
                        Ok(len) => match unsafe { libc::ftruncate(fd, len) } {
                            0 => Ok(0),
                            _ => Err(io::Error::last_os_error()),
                        },
                        Err(_) => Err(io::Error::from_raw_os_error(libc::EFBIG)),
                    };
                    shared.counters.submitted();
                    complete(&shared.counters, Kind::Truncate, done, result)
                }
            }
        }
    }

    fn stats(&self) -> BackendStats {
        self.shared.counters.snapshot()
    }

    fn shutdown(&self) {
        let shared = &*self.shared;
        {
            let mut st = shared.state.lock();
            if !st.closing {
                st.closing = true;
                // SAFETY: state mutex held (see `submit`).
                let mut sq = unsafe { shared.ring.submission_shared() };
                shared.push(&mut sq, &opcode::Nop::new().build().user_data(WAKE));
                drop(sq);
                shared.enter_submit();
            }
        }
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

/// The driver thread: wait for completions, reap them all, continue or finish each operation,
/// start waiting requests, run the completions.
fn drive(shared: &Shared) {
    let cq_cap = shared.ring.params().cq_entries() as usize;
    let mut cqes: Vec<(u64, i32)> = Vec::with_capacity(cq_cap);
    let mut finished: Vec<(Completion, Kind, io::Result<usize>)> = Vec::with_capacity(cq_cap);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_errors_keep_their_errno_and_say_what_to_do() {
        for (errno, kind) in [
            (libc::EPERM, io::ErrorKind::PermissionDenied),
            (libc::EACCES, io::ErrorKind::PermissionDenied),
            (libc::ENOSYS, io::ErrorKind::Unsupported),
            (libc::ENOMEM, io::ErrorKind::OutOfMemory),
            (libc::EINVAL, io::ErrorKind::InvalidInput),
            (
                libc::EFAULT,
                io::Error::from_raw_os_error(libc::EFAULT).kind(),
            ),
        ] {
            let e = explain_setup_error(io::Error::from_raw_os_error(errno), 64);
            assert_eq!(e.kind(), kind, "{e}");
            assert_eq!(error::raw_os_error_of(&e), Some(errno), "{e}");
            assert!(e.to_string().contains("io_uring"), "{e}");
            if matches!(errno, libc::EPERM | libc::EACCES | libc::ENOSYS) {
                assert!(e.to_string().contains("threads backend"), "{e}");
            }
        }
    }
}
