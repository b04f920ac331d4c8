//! Helpers shared by the integration tests: scratch files with known contents, caches of a
//! given budget, and running one test body under several tokio runtime flavours.

#![allow(dead_code)]

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};

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

/// A cache of `frames` pages of 4 KiB.
pub fn cache(frames: usize) -> uringcache::Cache {
    uringcache::Cache::builder()
        .memory_limit(frames * 4096)
        .page_size(4096)
        .build()
        .expect("build cache")
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

/// Runs `body` on a current-thread runtime and on a multi-thread runtime.
pub fn on_runtimes<F, Fut>(body: F)
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
