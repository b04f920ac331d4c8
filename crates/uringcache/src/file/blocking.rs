//! The blocking API: [`BlockingFile`], a [`File`] whose methods block the calling thread until
//! done, for synchronous callers (storage traits such as redb's `StorageBackend`, SQLite VFSs,
//! RocksDB environments) and threads outside any async runtime. Also
//! [`Cache::open_blocking`].
//!
//! Each method drives the [`File`] method of the same name with the backend's `block_on`
//! (with `io_uring`, the thread's own ring: this thread submits and reaps the I/O the call
//! needs, waiting in the kernel for it), so it has that method's semantics and errors
//! exactly: this module adds no state and no checks of its own.
//!
//! # Invariants
//!
//! * A `BlockingFile` is a [`File`] and nothing more: it shares the handle of the `File` it
//!   came from (readahead state, `prev_pos`, writeback error cursor), as a clone does.
//! * Nothing here needs the caller's executor: completions come from the backend (on the
//!   calling thread's own ring, or from the driver or pool thread, which wakes the parked
//!   thread).

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use uringcache_core::readahead::Advice;

use super::File;
use crate::cache::Cache;
use crate::options::OpenOptions;
use crate::page_ref::{PageMut, PageRef};
use crate::util::block_on_io;

/// A file of the cache with blocking methods: each call blocks the calling thread until it is
/// done, as [`std::fs::File`]'s do, and needs no async runtime. `Clone + Send + Sync`; clones
/// (and the [`File`] it came from) share one handle. Made by [`Cache::open_blocking`] or
/// [`File::blocking`]; [`file`](Self::file) gives the async handle back.
///
/// Every method is the [`File`] method of the same name, waited for on this thread: the same
/// semantics (a write lands in the cache and is written back later; a sync makes it durable),
/// the same errors (kinds and messages). A hit is a lookup and a copy on this thread, with no
/// system call. It also implements [`std::os::unix::fs::FileExt`], so code written against
/// `pread`-style files takes it as it is.
///
/// **Which thread does the I/O.** With `io_uring`, the calling thread gets a ring of its own
/// (made on its first blocking call, released when the thread exits): the I/O a call needs
/// goes out on it, and the thread waits in the kernel for its completions (one
/// `io_uring_enter` submits and waits, as one `pread` would), reaping and finishing them
/// itself: no other thread is woken. Every request the call started has completed when it
/// returns. If the ring cannot be made (memlock limit, too many rings), the call falls back
/// to the shared ring and its driver thread, with one warning. The thread backend hands the
/// requests to its pool and parks the caller until done.
///
/// **From async code.** Called from inside an async task, a method blocks that task's worker
/// thread for the duration of its I/O, as `std::fs` does: prefer the async [`File`] there (or
/// run the call under `tokio::task::spawn_blocking`). It still completes, since the backend
/// and not the runtime completes I/O, unless it waits for something only another task of the
/// same worker could release (a [`PageMut`] that task holds across an `.await`).
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("data.db");
/// let cache = uringcache::Cache::builder().memory_limit(16 << 20).build()?;
/// let file = cache.open_blocking(
///     &path,
///     uringcache::OpenOptions::new().read(true).write(true).create(true),
/// )?;
/// // Share it with plain threads: no runtime anywhere.
/// std::thread::scope(|s| {
///     for t in 0..4u8 {
///         let file = file.clone();
///         s.spawn(move || file.write_all_at(&[t; 4096], u64::from(t) * 4096));
///     }
/// });
/// file.sync_data()?; // written back and flushed
/// let mut buf = [0u8; 4096];
/// file.read_exact_at(&mut buf, 3 * 4096)?; // a hit: no system call
/// assert_eq!(buf, [3; 4096]);
/// assert_eq!(file.len(), 4 * 4096);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct BlockingFile {
    file: File,
}

impl Cache {
    /// Opens `path` through the cache like [`open`](Cache::open), blocking the calling thread
    /// until it is open, and returns a [`BlockingFile`]. The same options, checks and errors
    /// as `open`; no runtime needed.
    ///
    /// ```
    /// use uringcache::{Cache, OpenOptions};
    ///
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("log");
    /// let cache = Cache::builder().memory_limit(1 << 20).build()?;
    /// let log = cache.open_blocking(&path, OpenOptions::new().write(true).create(true))?;
    /// log.write_all_at(b"record 1\n", 0)?;
    /// log.sync_all()?;
    /// assert_eq!(std::fs::read(&path)?, b"record 1\n");
    ///
    /// let e = cache.open_blocking(dir.path().join("missing"), OpenOptions::new().read(true));
    /// assert_eq!(e.unwrap_err().kind(), std::io::ErrorKind::NotFound);
    /// # Ok(())
    /// # }
    /// ```
    pub fn open_blocking(
        &self,
        path: impl AsRef<Path>,
        options: &OpenOptions,
    ) -> io::Result<BlockingFile> {
        block_on_io(&**self.inner().backend(), self.open(path, options)).map(BlockingFile::new)
    }

    /// [`shutdown`](Cache::shutdown), blocking the calling thread until it is done: writes
    /// back and syncs every file, stops the cache, and returns the first error. The same
    /// semantics and errors; a second call is `Ok`.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("f");
    /// let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
    /// let file = cache.open_blocking(&path, uringcache::OpenOptions::new().write(true).create(true))?;
    /// file.write_all_at(b"kept", 0)?; // not synced
    /// cache.shutdown_blocking()?; // written back and flushed
    /// assert_eq!(std::fs::read(&path)?, b"kept");
    /// assert!(file.write_all_at(b"late", 0).is_err()); // the cache has been shut down
    /// # Ok(())
    /// # }
    /// ```
    pub fn shutdown_blocking(&self) -> io::Result<()> {
        block_on_io(&**self.inner().backend(), self.shutdown())
    }
}

impl BlockingFile {
    pub(super) fn new(file: File) -> BlockingFile {
        BlockingFile { file }
    }

    /// Runs one of the file's futures to completion on this thread, through the backend (which
    /// lets this thread reap its own I/O).
    fn wait<F: std::future::Future>(&self, fut: F) -> F::Output {
        block_on_io(&**self.file.cache().backend(), fut)
    }

    /// The async handle of this file (the same handle: readahead state and error reports are
    /// shared), for code that has a runtime.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("f");
    /// # let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
    /// let bf = cache.open_blocking(&path, uringcache::OpenOptions::new().write(true).create(true))?;
    /// bf.write_all_at(b"from a thread", 0)?;
    /// let file: uringcache::File = bf.file().clone();
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// file.sync_all().await?; // the same file, from async code
    /// # Ok::<(), std::io::Error>(())
    /// # })?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The file's length in bytes, as the cache knows it; see [`File::len`].
    pub fn len(&self) -> u64 {
        self.file.len()
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.file.is_empty()
    }

    /// The path the file was opened with.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Reads into `buf` from `offset`, blocking until done; returns the bytes read: 0 at or
    /// past end of file, fewer than `buf.len()` only when the file ends first. See
    /// [`File::read_at`].
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("f");
    /// std::fs::write(&path, vec![7u8; 10_000])?;
    /// # let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
    /// let file = cache.open_blocking(&path, uringcache::OpenOptions::new().read(true))?;
    /// let mut buf = vec![0u8; 4096];
    /// assert_eq!(file.read_at(&mut buf, 8192)?, 10_000 - 8192); // short: end of file
    /// assert_eq!(file.read_at(&mut buf, 20_000)?, 0); // past the end
    /// # Ok(())
    /// # }
    /// ```
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.wait(self.file.read_at(buf, offset))
    }

    /// Reads exactly `buf.len()` bytes from `offset`; `UnexpectedEof` if the file ends first.
    /// See [`File::read_exact_at`].
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.wait(self.file.read_exact_at(buf, offset))
    }

    /// Reads only what is cached (`IOCB_NOWAIT`): never blocks, never starts I/O;
    /// `WouldBlock` if the first page is not cached. See [`File::try_read_at`].
    pub fn try_read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.try_read_at(buf, offset)
    }

    /// Writes all of `buf` at `offset` into the cache and returns its length, blocking while
    /// the write waits (for a page to read, for writeback below the dirty limit). The bytes
    /// reach the device later, or at the next sync. See [`File::write_at`].
    pub fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.wait(self.file.write_at(buf, offset))
    }

    /// Writes all of `buf` at `offset` into the cache. See [`File::write_all_at`].
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("f");
    /// # let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
    /// let file = cache.open_blocking(&path, uringcache::OpenOptions::new().read(true).write(true).create(true))?;
    /// file.write_all_at(b"new bytes", 9_995)?; // extends the file; the gap reads as zeros
    /// assert_eq!(file.len(), 10_004);
    /// let mut buf = [0u8; 9];
    /// file.read_exact_at(&mut buf, 9_995)?; // read-your-writes, before any sync
    /// assert_eq!(&buf, b"new bytes");
    /// # Ok(())
    /// # }
    /// ```
    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.wait(self.file.write_all_at(buf, offset))
    }

    /// Writes back the dirty pages of `offset .. offset + len` and waits for them, without a
    /// flush. See [`File::sync_range`].
    pub fn sync_range(&self, offset: u64, len: u64) -> io::Result<()> {
        self.wait(self.file.sync_range(offset, len))
    }

    /// Makes the file's data durable (`fdatasync`). See [`File::sync_data`].
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("wal");
    /// # let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
    /// let wal = cache.open_blocking(&path, uringcache::OpenOptions::new().write(true).create(true))?;
    /// wal.write_all_at(b"commit 42", 0)?;
    /// wal.sync_data()?; // on the device: report the commit now
    /// # Ok(())
    /// # }
    /// ```
    pub fn sync_data(&self) -> io::Result<()> {
        self.wait(self.file.sync_data())
    }

    /// Makes the file's data and metadata durable (`fsync`): afterwards the file on disk has
    /// exactly [`len`](Self::len) bytes. See [`File::sync_all`].
    pub fn sync_all(&self) -> io::Result<()> {
        self.wait(self.file.sync_all())
    }

    /// Sets the file's length: shrinking drops the cached pages past the end and cuts the
    /// file on disk, growing extends it with zeros. See [`File::set_len`].
    pub fn set_len(&self, len: u64) -> io::Result<()> {
        self.wait(self.file.set_len(len))
    }

    /// Page `index` of the file, pinned and up to date, read from the device if needed, with
    /// no copy. See [`File::page`] and [`PageRef`].
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("f");
    /// std::fs::write(&path, vec![7u8; 10_000])?;
    /// # let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
    /// let file = cache.open_blocking(&path, uringcache::OpenOptions::new().read(true))?;
    /// let page = file.page(1)?; // bytes 4096..8192, pinned, no copy
    /// assert!(page.iter().all(|&b| b == 7));
    /// # Ok(())
    /// # }
    /// ```
    pub fn page(&self, index: u64) -> io::Result<PageRef> {
        self.wait(self.file.page(index))
    }

    /// Page `index` of the file, pinned and locked for writing; dropping the [`PageMut`] marks
    /// it dirty. See [`File::page_mut`]. Do not sync, truncate or direct-write this page from
    /// the thread that holds the handle: that call waits for the handle to be dropped, and
    /// so never returns.
    pub fn page_mut(&self, index: u64) -> io::Result<PageMut> {
        self.wait(self.file.page_mut(index))
    }

    /// Reads `offset .. offset + len` into the cache and waits for those reads. See
    /// [`File::readahead`].
    pub fn readahead(&self, offset: u64, len: u64) -> io::Result<()> {
        self.wait(self.file.readahead(offset, len))
    }

    /// Tells the cache how this handle will read (`posix_fadvise`). See [`File::advise`].
    pub fn advise(&self, advice: Advice) {
        self.file.advise(advice)
    }

    /// Drops the clean cached pages of `offset .. offset + len`. See [`File::invalidate`].
    pub fn invalidate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.wait(self.file.invalidate(offset, len))
    }

    /// Reads into `buf` from `offset` straight from the device, bypassing the cache (coherent
    /// with it). See [`File::read_direct_at`].
    pub fn read_direct_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.wait(self.file.read_direct_at(buf, offset))
    }

    /// Writes all of `buf` at `offset` straight to the device, bypassing the cache (coherent
    /// with it). See [`File::write_direct_at`].
    pub fn write_direct_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.wait(self.file.write_direct_at(buf, offset))
    }
}

/// `pread`/`pwrite`-style access, for code generic over [`FileExt`]. Each method is the
/// inherent method of the same name (buffered through the cache; `write_at` writes all of
/// `buf` or fails, and ignores [`OpenOptions::append`] as [`File::write_at`] does), and
/// `read_exact_at` / `write_all_at` are the inherent ones too, with their errors.
///
/// ```
/// use std::os::unix::fs::FileExt;
///
/// /// Reads a little-endian `u64` header from any `pread`-able file.
/// fn header<F: FileExt>(f: &F) -> std::io::Result<u64> {
///     let mut b = [0u8; 8];
///     f.read_exact_at(&mut b, 0)?;
///     Ok(u64::from_le_bytes(b))
/// }
///
/// # fn main() -> std::io::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("f");
/// std::fs::write(&path, 42u64.to_le_bytes())?;
/// let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
/// let cached = cache.open_blocking(&path, uringcache::OpenOptions::new().read(true))?;
/// assert_eq!(header(&cached)?, 42); // through the cache
/// assert_eq!(header(&std::fs::File::open(&path)?)?, 42); // through the kernel
/// # Ok(())
/// # }
/// ```
impl FileExt for BlockingFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        BlockingFile::read_at(self, buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        BlockingFile::write_at(self, buf, offset)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        BlockingFile::read_exact_at(self, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        BlockingFile::write_all_at(self, buf, offset)
    }
}

impl From<File> for BlockingFile {
    /// The same handle, with blocking methods; see [`File::blocking`].
    fn from(file: File) -> BlockingFile {
        BlockingFile::new(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_traits<T: Clone + Send + Sync + std::fmt::Debug + 'static>() {}

    #[test]
    fn a_blocking_file_is_clone_send_sync_and_debug() {
        assert_traits::<BlockingFile>();
    }

    fn scratch() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::Builder::new()
            .prefix("uringcache-blocking-")
            .tempdir_in(std::env::temp_dir())
            .unwrap();
        let path = dir.path().join("f");
        (dir, path)
    }

    fn rw() -> OpenOptions {
        let mut o = OpenOptions::new();
        o.read(true).write(true).create(true);
        o
    }

    #[test]
    fn blocking_and_async_handles_are_one_handle() {
        let (_dir, path) = scratch();
        let cache = Cache::builder().memory_limit(64 * 4096).build().unwrap();
        let bf = cache.open_blocking(&path, &rw()).unwrap();
        bf.write_all_at(b"abc", 10).unwrap();
        let file = bf.file().clone();
        let again = file.blocking();
        assert_eq!(again.len(), 13);
        let mut buf = [0u8; 3];
        crate::util::block_on(file.read_exact_at(&mut buf, 10)).unwrap();
        assert_eq!(&buf, b"abc");
        assert!(format!("{again:?}").contains("BlockingFile"));
        // The same error as the async method, kind and message.
        let mut big = [0u8; 8];
        let sync_err = again.read_exact_at(&mut big, 10).unwrap_err();
        let async_err = crate::util::block_on(file.read_exact_at(&mut big, 10)).unwrap_err();
        assert_eq!(sync_err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(sync_err.to_string(), async_err.to_string());
    }
}
