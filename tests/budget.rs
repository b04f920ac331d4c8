//! The budget costs nothing until used: building a 4 GiB cache maps its frame arena without
//! making it resident, on both backends, and `io_uring` registers fixed buffers only for the
//! regions that I/O touches; where the kernel refuses to pin more (`RLIMIT_MEMLOCK`), the
//! rest of the frames are used unregistered.
//!
//! Resident memory (`/proc/self/statm`) is process-wide, so each check runs in a child process:
//! this test binary run again with only that test (`--exact`) and [`CHILD_ENV`] set, where no
//! other test allocates meanwhile. The parent only checks that the child passed.

mod common;

use std::io;

use uringcache::{Backend, Cache, OpenOptions};

/// Set in the child process to the backend it checks.
const CHILD_ENV: &str = "URINGCACHE_BUDGET_CHILD";
const BUDGET: usize = 4 << 30;
/// Most the process may grow by when the cache is built.
const BUILD_GROWTH: u64 = 64 << 20;
/// Bytes read through the cache.
const READ: usize = 6 << 20;

/// This process's resident bytes.
fn resident() -> u64 {
    let text = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("statm's resident field");
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Runs `test` in a child process with [`CHILD_ENV`] = `backend` ([`common::in_child`]).
fn in_child(test: &str, backend: &str, body: impl FnOnce()) {
    common::in_child(CHILD_ENV, test, backend, body);
}

/// Builds a 4 GiB cache on `backend` and reads [`READ`] bytes through it, checking resident
/// growth and the fixed-buffer figures.
fn check(backend: Backend) {
    let before = resident();
    let cache = match Cache::builder()
        .memory_limit(BUDGET)
        .page_size(4096)
        .backend(backend)
        .build()
    {
        Ok(c) => c,
        Err(e)
            if backend == Backend::IoUring
                && matches!(
                    e.kind(),
                    io::ErrorKind::PermissionDenied | io::ErrorKind::Unsupported
                ) =>
        {
            eprintln!("skipped: io_uring unavailable here: {e}");
            return;
        }
        Err(e) => panic!("build of a 4 GiB cache on {backend:?}: {e}"),
    };
    let built = resident();
    let growth = built.saturating_sub(before);
    eprintln!(
        "{backend:?}: resident {:.1} MiB before the build, {:.1} MiB after (+{:.1} MiB)",
        mib(before),
        mib(built),
        mib(growth)
    );
    assert!(
        growth < BUILD_GROWTH,
        "building a 4 GiB cache on {backend:?} grew the process by {:.1} MiB",
        mib(growth)
    );
    let s = cache.stats();
    assert_eq!(s.frames, BUDGET / 4096);
    assert_eq!(s.fixed_buffer_bytes, 0, "nothing registered before any I/O");
    let uring = s.backend == "io_uring";
    assert_eq!(uring, backend == Backend::IoUring);

    read_and_check(&cache, READ, 7, 256 << 10);
    let s = cache.stats();
    let read = resident();
    eprintln!(
        "{backend:?}: after reading {} MiB: resident {:.1} MiB, {} (fixed buffers {}, {:.1} MiB registered)",
        READ >> 20,
        mib(read),
        s.backend,
        s.fixed_buffers,
        mib(s.fixed_buffer_bytes)
    );
    assert!(s.device_read_bytes >= READ as u64);
    if uring {
        assert!(s.fixed_buffers, "io_uring has its fixed-buffer table");
        // The pages read lie in a few regions of a few MiB: those, and only those, are
        // registered (a region is at most 4 MiB at this budget).
        assert!(s.fixed_buffer_bytes > 0, "reads registered their regions");
        assert!(
            s.fixed_buffer_bytes <= (READ as u64).next_multiple_of(4 << 20) + (4 << 20),
            "{} bytes registered for {READ} bytes read",
            s.fixed_buffer_bytes
        );
    } else {
        assert!(!s.fixed_buffers && s.fixed_buffer_bytes == 0);
    }
    assert!(
        read.saturating_sub(before) < BUILD_GROWTH + 2 * s.fixed_buffer_bytes + READ as u64,
        "reading {READ} bytes left the process {:.1} MiB larger than before the build",
        mib(read.saturating_sub(before))
    );
    shutdown(&cache);
}

#[test]
fn a_4_gib_budget_is_not_resident_until_used_io_uring() {
    in_child(
        "a_4_gib_budget_is_not_resident_until_used_io_uring",
        "io_uring",
        || check(Backend::IoUring),
    );
}

#[test]
fn a_4_gib_budget_is_not_resident_until_used_threads() {
    in_child(
        "a_4_gib_budget_is_not_resident_until_used_threads",
        "threads",
        || check(Backend::Threads),
    );
}

/// `capget`/`capset`'s header and data (version 3: two 32-bit words per set).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;
const CAP_IPC_LOCK: u32 = 14;

/// Drops `CAP_IPC_LOCK` from this process's effective set (pinned memory then counts against
/// `RLIMIT_MEMLOCK`, root or not), and sets that limit to `bytes`.
fn limit_pinned_memory(bytes: u64) {
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: the header and two data words, as capget(2) wants for version 3.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) };
    assert_eq!(rc, 0, "capget: {}", io::Error::last_os_error());
    data[0].effective &= !(1 << CAP_IPC_LOCK);
    // SAFETY: as above; dropping an effective capability needs no privilege.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", io::Error::last_os_error());
    let lim = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: plain system call on a valid struct; lowering a limit needs no privilege.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
    assert_eq!(rc, 0, "setrlimit: {}", io::Error::last_os_error());
}

/// With room to pin 8 MiB only, a cache reading 24 MiB registers what fits and reads the
/// rest unregistered: every byte right, fixed buffers still reported, at most 8 MiB of them.
fn refused_registration() {
    const PINNABLE: u64 = 8 << 20;
    const LEN: usize = 24 << 20;
    limit_pinned_memory(PINNABLE);
    let cache = match Cache::builder()
        .memory_limit(64 << 20)
        .page_size(4096)
        .backend(Backend::IoUring)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skipped: io_uring unavailable here: {e}");
            return;
        }
    };
    read_and_check(&cache, LEN, 13, 128 << 10);
    let s = cache.stats();
    eprintln!(
        "fixed buffers {}, {:.1} MiB registered after reading {} MiB with {} MiB pinnable",
        s.fixed_buffers,
        mib(s.fixed_buffer_bytes),
        LEN >> 20,
        PINNABLE >> 20
    );
    assert!(s.fixed_buffers);
    assert!(
        s.fixed_buffer_bytes <= PINNABLE,
        "{} bytes registered over the limit",
        s.fixed_buffer_bytes
    );
    assert_eq!(s.io_errors, 0);
    shutdown(&cache);
}

#[test]
fn a_refused_registration_leaves_the_rest_unregistered() {
    in_child(
        "a_refused_registration_leaves_the_rest_unregistered",
        "memlock",
        refused_registration,
    );
}

/// Writes a `len`-byte scratch file (a pattern by `step`), reads it all through `cache` in
/// `chunk`-byte reads and checks every byte.
fn read_and_check(cache: &Cache, len: usize, step: usize, chunk: usize) {
    let dir = tempfile::tempdir_in(std::env::temp_dir()).expect("scratch dir");
    let path = dir.path().join("data");
    let data: Vec<u8> = (0..len).map(|i| (i * step + i / 4096) as u8).collect();
    std::fs::write(&path, &data).expect("write the scratch file");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let f = cache
            .open(&path, OpenOptions::new().read(true))
            .await
            .expect("open");
        let mut buf = vec![0u8; chunk];
        for off in (0..len).step_by(chunk) {
            f.read_exact_at(&mut buf, off as u64).await.expect("read");
            assert!(buf == data[off..off + chunk], "bytes at {off}");
        }
    });
}

/// Shuts `cache` down (writes back, stops) on a throwaway runtime.
fn shutdown(cache: &Cache) {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(cache.shutdown())
        .expect("shutdown");
}
