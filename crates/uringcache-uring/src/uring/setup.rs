//! Setup: creating the ring, probing its opcodes, the fixed-buffer table and the registration
//! of the arena into it, the file table, and the setup errors with the advice they give.
//!
//! [`build_ring`] creates the ring (falling back from `IORING_SETUP_SUBMIT_ALL` on kernels
//! before 5.18); [`shared`] probes it, makes the sparse fixed-buffer table and the sparse file
//! table (each an optimisation: when refused, plain buffers and descriptors are used) and
//! assembles the [`Shared`] state. [`Shared::register_file`] and [`Shared::unregister_file`]
//! keep the file table, with the state mutex held: a file's slab key is its [`FileId`] and, when
//! it is below `State::file_slots` and the kernel accepted the update, its slot in the
//! registered table ([`FileEntry::fixed`]).
//!
//! # Fixed buffers: what is registered when
//!
//! Registering memory as fixed buffers pins it, and pinning faults it in: registering the whole
//! arena at setup (as this backend once did) made `Cache::build` take seconds per GiB of budget
//! here and made the whole budget resident from the start. Instead:
//!
//! * **At setup**, only an empty table: one slot per region of the arena ([`Regions`]: 4 MiB
//!   each, doubled until the table fits the kernel's 16384 entries, so 4 MiB up to 64 GiB of
//!   budget), made with `IORING_REGISTER_BUFFERS2` + `IORING_RSRC_REGISTER_SPARSE` (Linux 5.19;
//!   from 5.13, a table of empty entries). Nothing is pinned, nothing faulted in. Without it
//!   (older kernels, `UringConfig::register_buffers` off) every I/O is vectored.
//! * **On first use**: `UringBackend::submit` notes the regions that the frames of its batch's
//!   reads and writes lie in and that are not registered yet ([`Regions::wanted`]); those
//!   requests go out unregistered, and once the batch is submitted and the state mutex
//!   released, the same thread registers each of those regions ([`Regions::ensure`],
//!   [`Shared::register_region`]): faulted in with `MADV_POPULATE_WRITE` (no lock of ours or
//!   the kernel's held), then `IORING_REGISTER_BUFFERS_UPDATE` of its slot (which holds the
//!   kernel's ring lock only while it pins pages already present). So the request that first
//!   touches a region does not wait for it: the device works while the region is registered.
//!   One compare-and-swap per region decides who registers it; a concurrent submitter
//!   touching a region being registered does not wait either: its request goes unregistered.
//!   The driver thread never registers (its completions must not stall).
//! * **Then**: a request whose used frames are consecutive and lie in one registered region
//!   is `READ_FIXED` / `WRITE_FIXED` with that region's slot as the buffer index
//!   ([`Regions::index_for`], in `Shared::prepare`); any other (scattered frames, a run across
//!   a region boundary, a region not registered) is `READV` / `WRITEV` into the same frames.
//! * **A failed registration** (typically `RLIMIT_MEMLOCK` without `CAP_IPC_LOCK`) logs one
//!   warning and stops all further attempts; regions registered before stay in use.
//!
//! Resident memory thus grows with the regions I/O has touched (a region at a time: at most
//! 4 MiB beyond the frames in use), and `fixed_buffer_bytes` says how much is pinned.
//!
//! Invariants: a registered region stays registered for the ring's life: nothing unregisters
//! or replaces a slot, so an SQE naming a slot never meets a changed table, whatever is in
//! flight. Every registered buffer lies inside the arena's mapping, which outlives the ring
//! (`Shared` drops the ring, and with it the kernel's pins, before its `Arc<FrameArena>`). A
//! slot is named in an SQE only after its registration returned (the region's state is stored
//! `REGISTERED` with release ordering after the system call, and read with acquire). Which
//! opcode a request uses changes nothing else: its I/O still goes only into the cache's frames
//! it names, and those go back to the pool only after its CQE.
//!
//! Locks: no new one. Region states are atomics; the registration runs with none of the
//! backend's locks held (after the state mutex is released, in the same `submit`), so the
//! state mutex → kernel ring lock order of `register_file` is the only nesting, as before.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use io_uring::{opcode, IoUring, Probe, Submitter};
use parking_lot::Mutex;
use slab::Slab;
use uringcache_core::backend::FileId;
use uringcache_core::frames::FrameArena;
use uringcache_core::page::FrameId;

use super::buffers::{Regions, REGION_BYTES};
use super::driver::{Shared, State};
use super::thread_ring::Census;
use super::{UringConfig, NAME};
use crate::common::{shut_down_error, Counters};
use crate::error;

/// Slots of the sparse registered-file table.
const FILE_SLOTS: u32 = 1024;

/// How long an idle SQPOLL kernel thread spins before it sleeps (milliseconds).
const SQPOLL_IDLE_MS: u32 = 50;

/// A registered file.
pub(super) struct FileEntry {
    pub(super) fd: RawFd,
    /// Whether the file sits in the registered table at slot = its key.
    pub(super) fixed: bool,
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

/// Sets up the ring, checks its opcodes, registers the arena and the file table (as
/// configured): the state the backend and its driver thread share.
pub(super) fn shared(arena: Arc<FrameArena>, config: &UringConfig) -> io::Result<Shared> {
    let ring = build_ring(config)?;
    let submitter = ring.submitter();

    let mut probe = Probe::new();
    let (ftruncate_op, futex_op) = match submitter.register_probe(&mut probe) {
        Ok(()) => {
            check_ops(&probe)?;
            (
                probe.is_supported(opcode::Ftruncate::CODE),
                probe.is_supported(opcode::FutexWait::CODE),
            )
        }
        Err(e) => {
            tracing::debug!("io_uring probe unavailable ({e}); assuming the base opcodes");
            (false, false)
        }
    };

    let buffers = if config.register_buffers {
        buffer_table(&submitter, &arena)
    } else {
        None
    };

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
    Ok(Shared {
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
        buffers,
        ftruncate_op,
        sqpoll: config.sqpoll,
        max_inflight,
        max_transfer: config.max_transfer,
        thread_rings: Census::new(config.thread_rings, futex_op),
        #[cfg(feature = "tokio")]
        reactor_rings: super::reactor_ring::ReactorCensus::new(
            config.reactor_rings,
            config.entries,
        ),
    })
}

/// Makes the sparse fixed-buffer table for the arena's regions; nothing is registered yet (see
/// the module docs). `None`, and unregistered I/O, when the kernel refuses the table.
fn buffer_table(submitter: &Submitter<'_>, arena: &FrameArena) -> Option<Regions> {
    let regions = Regions::new(arena.frames(), arena.page_size(), REGION_BYTES);
    let slots = regions.slots();
    let made = match submitter.register_buffers_sparse(slots) {
        // IORING_RSRC_REGISTER_SPARSE needs Linux 5.19; from 5.13, a table of empty entries
        // is the same thing.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let empty = vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                slots as usize
            ];
            let tags = vec![0u64; slots as usize];
            // SAFETY: empty entries name no memory.
            unsafe { submitter.register_buffers2(&empty, &tags) }
        }
        made => made,
    };
    match made {
        Ok(()) => Some(regions),
        Err(e) => {
            tracing::warn!(
                "uringcache: the kernel refuses a sparse io_uring fixed-buffer table of {slots} \
                 entries ({e}; Linux 5.13 or later is needed); the frame arena is used \
                 unregistered"
            );
            None
        }
    }
}

/// Checks that `io_uring` can be set up here and supports the opcodes the backend uses (see
/// [`UringBackend::probe`](super::UringBackend::probe)).
pub(super) fn probe() -> io::Result<()> {
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

impl Shared {
    /// Registers region `slot` of the arena, `frames` frames from `first`, as fixed buffer
    /// `slot` (called once per region, through [`Regions::ensure`], with no lock of the
    /// backend held).
    pub(super) fn register_region(
        &self,
        slot: u32,
        first: FrameId,
        frames: usize,
    ) -> io::Result<()> {
        let base = self.arena.ptr(first);
        let len = frames * self.arena.page_size();
        // Fault the region in before registering it: the registration holds the kernel's ring
        // lock (which every `io_uring_enter` that submits takes too) while it pins, and then
        // finds the pages already there. Only advice: where `MADV_POPULATE_WRITE` is missing
        // (before Linux 5.14) the pinning faults them in.
        // SAFETY: the range lies in the arena's mapping; populating changes no byte of it.
        unsafe {
            libc::madvise(base.cast(), len, libc::MADV_POPULATE_WRITE);
        }
        let iov = libc::iovec {
            iov_base: base.cast(),
            iov_len: len,
        };
        // SAFETY: the region lies in the arena's mapping, which outlives the ring (`Shared`
        // drops the ring before its `Arc<FrameArena>`), and stays registered until then.
        unsafe {
            self.ring
                .submitter()
                .register_buffers_update(slot, &[iov], None)
        }
    }

    /// Adds `fd` to the file table, in the registered table when there is a slot for it.
    pub(super) fn register_file(&self, fd: RawFd) -> io::Result<FileId> {
        if fd < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot register file descriptor {fd}"),
            ));
        }
        let mut st = self.state.lock();
        if st.closing {
            return Err(shut_down_error(NAME));
        }
        let key = st.files.vacant_key();
        let id = u32::try_from(key).map_err(|_| io::Error::other("too many files registered"))?;
        let mut fixed = false;
        if id < st.file_slots {
            match self.ring.submitter().register_files_update(id, &[fd]) {
                Ok(_) => fixed = true,
                Err(e) => tracing::debug!(
                    "io_uring file table update failed ({e}); file {id} uses its descriptor"
                ),
            }
        }
        st.files.insert(FileEntry { fd, fixed });
        Ok(FileId(id))
    }

    /// Removes `file` from the file table (and clears its registered slot).
    pub(super) fn unregister_file(&self, file: FileId) {
        let mut st = self.state.lock();
        if let Some(entry) = st.files.try_remove(file.0 as usize) {
            if entry.fixed {
                if let Err(e) = self.ring.submitter().register_files_update(file.0, &[-1]) {
                    tracing::warn!("io_uring file table slot {} not cleared: {e}", file.0);
                }
            }
        }
    }
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
