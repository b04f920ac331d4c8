//! Helpers shared by the integration tests: scratch files with known contents, caches of a
//! given budget on a given backend, one test run on each backend (`backend_test!`), and one
//! test body run under several tokio runtime flavours.

#![allow(dead_code)]

use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use uringcache::Backend;

/// A deterministic byte pattern that differs from page to page and within a page.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A scratch directory on the checkout's filesystem (ext4, where `O_DIRECT` works).
pub fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("uringcache-test-")
        .tempdir_in(std::env::temp_dir())
        .expect("scratch dir")
}

/// Writes `len` pattern bytes to `dir/name` with std::fs and returns the path and contents.
pub fn make_file(dir: &Path, name: &str, len: usize, seed: u64) -> (PathBuf, Vec<u8>) {
    let path = dir.join(name);
    let data = pattern(len, seed);
    std::fs::write(&path, &data).expect("write scratch file");
    (path, data)
}

/// A builder of a cache on `backend` (every other setting the default).
pub fn builder(backend: Backend) -> uringcache::CacheBuilder {
    let mut b = uringcache::Cache::builder();
    b.backend(backend);
    b
}

/// A cache on `backend` of `frames` pages of 4 KiB.
pub fn cache_on(backend: Backend, frames: usize) -> uringcache::Cache {
    builder(backend)
        .memory_limit(frames * 4096)
        .page_size(4096)
        .build()
        .unwrap_or_else(|e| panic!("build a cache of {frames} pages on {backend:?}: {e}"))
}

/// Set (to any value) to make a test's `io_uring` variant fail, not pass, where `io_uring`
/// cannot be set up. `.ci/run` sets it.
pub const REQUIRE_URING_ENV: &str = "URINGCACHE_TEST_REQUIRE_URING";

/// Why a cache cannot be built on `Backend::IoUring` here, `None` if it can. Found out once
/// per test binary by building a tiny cache.
pub fn io_uring_unavailable() -> Option<&'static str> {
    static PROBE: OnceLock<Option<String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            builder(Backend::IoUring)
                .memory_limit(4 * 4096)
                .page_size(4096)
                .build()
                .err()
                .map(|e| e.to_string())
        })
        .as_deref()
}

/// `Some(Backend::IoUring)` where `io_uring` can be set up. Elsewhere (a kernel without it, a
/// container whose seccomp profile refuses it) says so on stderr, uncaptured, and returns
/// `None`, so that `test` passes without running; with [`REQUIRE_URING_ENV`] set it panics
/// instead.
pub fn io_uring_or_skip(test: &str) -> Option<Backend> {
    let Some(reason) = io_uring_unavailable() else {
        return Some(Backend::IoUring);
    };
    if std::env::var_os(REQUIRE_URING_ENV).is_some() {
        panic!(
            "{test}: io_uring cannot be set up on this machine and {REQUIRE_URING_ENV} is set: \
             {reason}"
        );
    }
    // Straight to the process's stderr: the test harness captures `eprintln!` of a test that
    // passes, and this must be seen.
    let _ = writeln!(
        io::stderr().lock(),
        "*** SKIPPED {test}: io_uring cannot be set up on this machine, so this test passes \
         without running ({REQUIRE_URING_ENV}=1 makes it fail): {reason}"
    );
    None
}

/// Makes each named function `fn name(backend: Backend)` a pair of tests, `name::io_uring`
/// and `name::threads`, that call it with `Backend::IoUring` and `Backend::Threads` (a module
/// and a function may share a name). Written just above the function, like an attribute:
///
/// ```ignore
/// common::backend_test!(reads_match_std_fs);
/// fn reads_match_std_fs(backend: Backend) {
///     let cache = common::cache_on(backend, 64);
///     // ...
/// }
/// ```
///
/// `cargo test reads_match_std_fs` runs both, `cargo test reads_match_std_fs::threads` one,
/// `cargo test ::threads` every test's thread-pool variant. The `io_uring` variant passes
/// without running, saying so loudly, where `io_uring` cannot be set up
/// ([`io_uring_or_skip`]). A function left out of every `backend_test!` is dead code, which
/// the lints refuse.
#[allow(unused_macros)] // by the few test files that name their backends themselves
macro_rules! backend_test {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[test]
            fn io_uring() {
                if let Some(b) = $crate::common::io_uring_or_skip(concat!(module_path!(), "::io_uring")) {
                    super::$name(b);
                }
            }

            #[test]
            fn threads() {
                super::$name(uringcache::Backend::Threads);
            }
        }
    )+};
}
#[allow(unused_imports)]
pub(crate) use backend_test;

/// Runs `test` (this test binary's test of that name) in a child process with the
/// environment variable `env` = `value`, unless this is that child: then runs `body`. For
/// checks of process-wide state (resident memory, resource limits) that other tests running
/// at the same time would disturb. The parent checks that the child ran the test and passed.
pub fn in_child(env: &str, test: &str, value: &str, body: impl FnOnce()) {
    if std::env::var(env).as_deref() == Ok(value) {
        body();
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().expect("current_exe"))
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(env, value)
        .output()
        .expect("run the child test process");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    eprintln!("child {test}:\n{stdout}{stderr}");
    assert!(out.status.success(), "child {test} failed: {}", out.status);
    assert!(
        stdout.contains("1 passed"),
        "child {test} did not run the test:\n{stdout}"
    );
}

/// Read-only open options.
pub fn ro() -> uringcache::OpenOptions {
    let mut o = uringcache::OpenOptions::new();
    o.read(true);
    o
}

/// A multi-thread runtime with 4 workers (more than the 2 cores, to shake out races).
pub fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

/// Read-write open options that create the file.
pub fn rw() -> uringcache::OpenOptions {
    let mut o = uringcache::OpenOptions::new();
    o.read(true).write(true).create(true);
    o
}

/// Runs `body` on the four executors the cache promises to work on: a tokio current-thread
/// runtime, a tokio multi-thread runtime (where the `io_uring` backend's tasks get rings reaped
/// by the runtime's reactor), `futures::executor::block_on` (no reactor at all) and
/// `smol::block_on` (its own reactor). A body that needs tokio itself (`tokio::spawn`,
/// `tokio::time`) uses [`on_tokio_runtimes`].
pub fn on_runtimes<F, Fut>(body: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = io::Result<()>> + Send + 'static,
{
    on_tokio_runtimes(&body);
    futures::executor::block_on(body()).expect("futures::executor::block_on");
    smol::block_on(body()).expect("smol::block_on");
}

/// Runs `body` on one of the four executors of [`on_runtimes`], the `n % 4`th: for a test that
/// repeats a long body (seeds), each repetition on the next executor.
#[allow(dead_code)] // by the test files without seeded bodies
pub fn on_executor<F, Fut>(n: u64, body: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = io::Result<()>> + Send + 'static,
{
    match n % 4 {
        0 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(body())
            .expect("current-thread runtime"),
        1 => multi_thread()
            .block_on(async { tokio::spawn(body()).await.expect("task panicked") })
            .expect("multi-thread runtime"),
        2 => futures::executor::block_on(body()).expect("futures::executor::block_on"),
        _ => smol::block_on(body()).expect("smol::block_on"),
    }
}

/// Runs `body` on a tokio current-thread runtime and on a tokio multi-thread runtime.
pub fn on_tokio_runtimes<F, Fut>(body: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = io::Result<()>> + Send + 'static,
{
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(body())
        .expect("current-thread runtime");
    multi_thread()
        .block_on(async { tokio::spawn(body()).await.expect("task panicked") })
        .expect("multi-thread runtime");
}

/// Asserts two byte strings are equal, reporting the first difference instead of both
/// strings.
#[track_caller]
pub fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: {} bytes, expected {}; first difference at byte {first} (page {}): got {:?}, want {:?}",
        got.len(),
        want.len(),
        first / 4096,
        got.get(first..(first + 8).min(got.len())),
        want.get(first..(first + 8).min(want.len())),
    );
}

/// The file's bytes on disk, as `std::fs::read` returns them, but read with `O_DIRECT`.
///
/// A buffered read would fill the kernel's page cache with pages of the file while the cache's
/// background writeback may have `O_DIRECT` writes in flight to them; the kernel then fails to
/// invalidate those pages ("Page cache invalidation failure on direct I/O" in dmesg) and marks
/// the file's mapping with `EIO`, which the cache's next `fsync` reports: a failure the test
/// itself would cause.
pub fn read_disk(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    const ALIGN: usize = 4096;
    const CHUNK: usize = 1 << 20;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path.as_ref())?;
    let size = f.metadata()?.len() as usize;
    let mut raw = vec![0u8; CHUNK + ALIGN];
    let skew = raw.as_ptr().align_offset(ALIGN);
    let buf = &mut raw[skew..skew + CHUNK];
    let mut out = Vec::with_capacity(size);
    loop {
        let n = match f.read_at(buf, out.len() as u64) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.extend_from_slice(&buf[..n]);
        // Short (at the end of the file) or empty: done; the next offset may be unaligned.
        if n < CHUNK {
            if n % 512 == 0 && n > 0 {
                continue;
            }
            break;
        }
    }
    Ok(out)
}
