//! File handles: [`OpenOptions`], [`File`], and the buffered read path
//! (`generic_file_buffered_read` / `filemap_read`).
//!
//! A [`File`] is one open handle: its access mode, its readahead state (`struct
//! file_ra_state`) and the position after its last read (`prev_pos`), over an inode shared
//! with every other handle of the same file. Clones of a `File` share the handle (like `dup`).
//!
//! # Invariants
//!
//! * The readahead state sits behind a mutex that only misses and Readahead marks take; a hit
//!   touches `prev_pos` (a relaxed store, only when the position changed) and nothing else of
//!   the handle.
//! * A hit of `read_at` / `try_read_at` copies straight from the frame without a pin, lock or
//!   allocation (`Inode::copy_if_cached`: an optimistic read validated by the frame's
//!   generation); anything else (a miss, a page being read, a readahead mark) takes the pinned
//!   path.
//! * A read copies out page by page and drops each pin before taking the next, so a request of
//!   any size works with a budget of four frames.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use uringcache_core::readahead::{self, Advice, Window};

use uringcache_core::errseq::ErrCursor;

use crate::cache::{Cache, CacheInner};
use crate::error::invalid;
use crate::inode::{Inode, ReadaheadSource};
use crate::options::{OpenMode, OpenOptions, VerifyFn};
use crate::page_ref::{PageMut, PageRef};
#[cfg(feature = "tokio")]
use async_io::{Reader, Writer};
use bytes::Bytes;

#[cfg(feature = "tokio")]
pub mod async_io;
mod blocking;
use crate::inode::SyncKind;
pub use blocking::BlockingFile;

/// An open file whose reads go through the cache. `Clone + Send + Sync`; clones share the
/// handle (its readahead state).
#[derive(Clone)]
pub struct File {
    handle: Arc<Handle>,
}

struct Handle {
    inode: Arc<Inode>,
    read: bool,
    write: bool,
    /// Opened with [`OpenOptions::append`]: writers made from it start at the end.
    append: bool,
    ra: Mutex<readahead::State>,
    /// Byte position just after this handle's previous read (`file_ra_state.prev_pos`).
    prev_pos: AtomicU64,
    /// This handle's position in the file's writeback error sequence (`f_wb_err`).
    wb_cursor: ErrCursor,
}

impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("File")
            .field("path", &self.handle.inode.path())
            .field("len", &self.len())
            .field("read", &self.handle.read)
            .field("write", &self.handle.write)
            .field("append", &self.handle.append)
            .finish()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inode.cache().file_closed(&self.inode);
        self.inode.cache().user_handle_dropped();
    }
}

impl ReadaheadSource for Handle {
    fn sync_window(&self, inode: &Inode, index: u64, req_pages: u64) -> Window {
        let ps = inode.cache().page_size() as u64;
        let prev = self.prev_pos.load(Ordering::Relaxed);
        self.ra
            .lock()
            .on_miss(index, req_pages, prev, ps, |i| inode.mapping().contains(i))
    }

    fn async_window(&self, inode: &Inode, index: u64, req_pages: u64) -> Option<Window> {
        self.ra
            .lock()
            .on_marker(index, req_pages, |i| inode.mapping().contains(i))
    }

    fn on_error(&self) {
        self.ra.lock().on_error();
    }
}

/// The part of one page a byte range covers.
struct PageSpan {
    /// The page.
    index: u64,
    /// Where the range starts within the page.
    in_page: usize,
    /// Bytes of the range in this page.
    len: usize,
    /// Where those bytes start within the range.
    out: usize,
}

/// Splits the byte range `offset..end` into its per-page parts, in order.
fn page_spans(offset: u64, end: u64, shift: u32) -> impl Iterator<Item = PageSpan> {
    let ps = 1u64 << shift;
    let mut pos = offset;
    std::iter::from_fn(move || {
        if pos >= end {
            return None;
        }
        let in_page = (pos & (ps - 1)) as usize;
        let len = (ps - in_page as u64).min(end - pos) as usize;
        let span = PageSpan {
            index: pos >> shift,
            in_page,
            len,
            out: (pos - offset) as usize,
        };
        pos += len as u64;
        Some(span)
    })
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    crate::error::os(e, path.display().to_string())
}

impl Cache {
    /// Opens `path` through the cache, with `std::fs::OpenOptions`-like `options`. Two opens of
    /// one file share its cached pages.
    pub async fn open(&self, path: impl AsRef<Path>, options: &OpenOptions) -> io::Result<File> {
        File::open(self.inner(), path.as_ref(), options).await
    }
}

impl File {
    pub(crate) async fn open(
        cache: &Arc<CacheInner>,
        path: &Path,
        options: &OpenOptions,
    ) -> io::Result<File> {
        cache.check_open()?;
        let OpenMode {
            read,
            write,
            append,
            create,
            create_new,
            truncate,
        } = options.mode();
        let write = write || append;
        if !read && !write {
            return Err(invalid(format!(
                "cannot open {}: OpenOptions needs read(true), write(true) or append(true)",
                path.display()
            )));
        }
        if (create || create_new || truncate) && !write {
            return Err(invalid(format!(
                "cannot open {}: create, create_new and truncate need write(true) or \
                 append(true)",
                path.display()
            )));
        }
        if truncate && append {
            return Err(invalid(format!(
                "cannot open {}: truncate and append cannot both be set",
                path.display()
            )));
        }
        if let Ok(meta) = std::fs::metadata(path) {
            if !meta.is_file() {
                return Err(invalid(format!(
                    "cannot open {}: not a regular file",
                    path.display()
                )));
            }
        }
        // O_TRUNC is done through the cache once every check has passed (see `attach`).
        let opened =
            uringcache_uring::open_direct_tracked(path, read, write, create, create_new, false)?;
        match Self::attach(cache, path, options, &opened.fd).await {
            Ok(file) => Ok(file),
            Err(e) => {
                // An open that fails changes nothing: not even the file it created.
                if opened.created {
                    uringcache_uring::remove_created(path, opened.fd.as_fd());
                }
                Err(e)
            }
        }
    }

    /// The part of an open after the descriptor `fd` of `path` is open: the checks, the inode,
    /// the handle, and the truncation.
    async fn attach(
        cache: &Arc<CacheInner>,
        path: &Path,
        options: &OpenOptions,
        fd: &OwnedFd,
    ) -> io::Result<File> {
        let OpenMode {
            read,
            write,
            append,
            truncate,
            ..
        } = options.mode();
        let verify = options.verify_hook();
        let write = write || append;
        let meta = std::fs::File::from(fd.try_clone()?).metadata()?;
        if !meta.file_type().is_file() {
            return Err(invalid(format!(
                "cannot open {}: not a regular file",
                path.display()
            )));
        }
        let align = uringcache_uring::dio_alignment(fd.as_fd()).map_err(|e| with_path(path, e))?;
        if !cache.page_size().is_multiple_of(align.max(1) as usize) {
            return Err(invalid(format!(
                "cannot open {}: its direct-I/O alignment is {align} bytes, which does not \
                 divide the cache's page size {}",
                path.display(),
                cache.page_size()
            )));
        }
        let key = (meta.dev(), meta.ino());
        let inode = cache
            .inodes()
            .attach(fd.as_fd(), key, cache.counters(), |id, size| {
                // The inode's own descriptor serves every handle: read-write when the file
                // allows it, whatever this first handle asked for.
                let (io_fd, writable) = if read && write {
                    (fd.try_clone()?, true)
                } else {
                    match uringcache_uring::open_direct(path, true, true, false, false) {
                        Ok(rw) => (rw, true),
                        Err(_) => (fd.try_clone()?, write),
                    }
                };
                Inode::new(
                    cache.clone(),
                    id,
                    key,
                    io_fd,
                    writable,
                    align.max(1) as usize,
                    size,
                    path.to_path_buf(),
                )
            })?;
        // From here on the inode counts this handle: a failure must close it again.
        let handle = Handle {
            read,
            write,
            append,
            ra: Mutex::new(readahead::State::new(cache.ra_max_pages())),
            prev_pos: AtomicU64::new(0),
            wb_cursor: inode.mapping().wb_err().sample(),
            inode,
        };
        // Counted as a user handle as long as it lives (its drop uncounts it, also on failure
        // below; the caller's `Cache` keeps the count above zero meanwhile).
        handle.inode.cache().user_handle_added();
        inode_checks(&handle, path, verify)?;
        let file = File {
            handle: Arc::new(handle),
        };
        if truncate {
            // O_TRUNC through the cache, under the size lock and the disk gate, after every
            // check: an open that fails cuts nothing.
            file.inode().set_len(0).await?;
        }
        Ok(file)
    }
}

/// The checks of an open that need the inode, and the verify hook it installs.
fn inode_checks(handle: &Handle, path: &Path, verify: Option<&VerifyFn>) -> io::Result<()> {
    let inode = &handle.inode;
    if handle.write && !inode.is_writable() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "cannot open {} for writing: the cache holds it through a read-only \
                 descriptor (its permissions changed since it was first opened); close \
                 every handle and reopen",
                path.display()
            ),
        ));
    }
    if let Some(hook) = verify {
        inode.set_verify(hook.clone());
    }
    Ok(())
}

impl File {
    pub(crate) fn inode(&self) -> &Arc<Inode> {
        &self.handle.inode
    }

    /// Whether this handle was opened with [`OpenOptions::append`] (read by the writers).
    #[cfg(feature = "tokio")]
    pub(crate) fn appends(&self) -> bool {
        self.handle.append
    }

    /// This handle's readahead state, for reads through the inode.
    pub(crate) fn ra_source(&self) -> &dyn ReadaheadSource {
        &*self.handle
    }

    /// Records that this handle's last read ended at byte `end` (`prev_pos`, for readahead).
    /// Written only when it changes: tasks sharing a handle that re-read one place write
    /// nothing.
    #[inline]
    pub(crate) fn note_read_end(&self, end: u64) {
        if self.handle.prev_pos.load(Ordering::Relaxed) != end {
            self.handle.prev_pos.store(end, Ordering::Relaxed);
        }
    }

    /// Whether the handle may read.
    pub(crate) fn can_read(&self) -> bool {
        self.handle.read
    }

    pub(crate) fn cache(&self) -> &CacheInner {
        self.handle.inode.cache()
    }

    /// The file's length in bytes, as the cache knows it (`i_size`).
    pub fn len(&self) -> u64 {
        self.inode().mapping().size()
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// This handle with blocking methods, for synchronous code and threads outside any
    /// runtime: the same handle (clones share readahead state and error reports), see
    /// [`BlockingFile`].
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("f");
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// # let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
    /// let file = cache
    ///     .open(&path, uringcache::OpenOptions::new().read(true).write(true).create(true))
    ///     .await?;
    /// let bf = file.blocking();
    /// let t = std::thread::spawn(move || bf.write_all_at(b"from a plain thread", 0));
    /// t.join().unwrap()?;
    /// let mut buf = [0u8; 19];
    /// file.read_exact_at(&mut buf, 0).await?; // seen by the async handle at once
    /// assert_eq!(&buf, b"from a plain thread");
    /// # Ok::<(), std::io::Error>(())
    /// # })
    /// # }
    /// ```
    pub fn blocking(&self) -> BlockingFile {
        BlockingFile::new(self.clone())
    }

    /// The path the file was opened with.
    pub fn path(&self) -> &Path {
        self.inode().path()
    }

    pub(crate) fn check_read(&self, len: usize, offset: u64) -> io::Result<()> {
        self.cache().check_open()?;
        if !self.handle.read {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} was opened without read access",
                    self.inode().path().display()
                ),
            ));
        }
        if offset.checked_add(len as u64).is_none() {
            return Err(invalid(format!(
                "a read of {len} bytes at offset {offset} overflows the largest file offset"
            )));
        }
        Ok(())
    }

    /// Checks a read of `len` bytes at `offset` ([`check_read`](Self::check_read)) and returns
    /// where it ends, clamped to the end of file; `None` if it reads nothing.
    fn read_end(&self, len: usize, offset: u64) -> io::Result<Option<u64>> {
        self.check_read(len, offset)?;
        let size = self.inode().mapping().size();
        if len == 0 || offset >= size {
            return Ok(None);
        }
        Ok(Some((offset + len as u64).min(size)))
    }

    /// Reads into `buf` from `offset`, returning the bytes read: 0 at or past end of file,
    /// fewer than `buf.len()` only when the file ends first. Cached pages are copied without a
    /// system call; missing ones are read from the device with readahead.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("f");
    /// # std::fs::write(&path, vec![7u8; 10_000])?;
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// # let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
    /// # let file = cache
    /// #     .open(&path, uringcache::OpenOptions::new().read(true).write(true))
    /// #     .await?;
    /// let mut buf = vec![0u8; 4096];
    /// assert_eq!(file.read_at(&mut buf, 8192).await?, 10_000 - 8192); // short: end of file
    /// assert_eq!(file.read_at(&mut buf, 20_000).await?, 0); // past the end
    /// # Ok::<(), std::io::Error>(())
    /// # })
    /// # }
    /// ```
    pub async fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let Some(end) = self.read_end(buf.len(), offset)? else {
            return Ok(0);
        };
        let inode = self.inode();
        let shift = self.cache().page_shift();
        let last = (end - 1) >> shift;
        let prev_pos = self.handle.prev_pos.load(Ordering::Relaxed);
        for span in page_spans(offset, end, shift) {
            // Repeated small reads within one page count as one access, as in filemap_read.
            let accessed = span.out != 0 || prev_pos == 0 || (prev_pos - 1) >> shift != span.index;
            let dst = &mut buf[span.out..span.out + span.len];
            if inode.copy_if_cached(span.index, span.in_page, dst, accessed) {
                continue;
            }
            let page = inode
                .get_page(span.index, last - span.index + 1, &*self.handle)
                .await?;
            dst.copy_from_slice(&page.bytes()[span.in_page..span.in_page + span.len]);
            if accessed {
                page.mark_accessed();
            }
        }
        self.note_read_end(end);
        Ok((end - offset) as usize)
    }

    /// Reads exactly `buf.len()` bytes from `offset`; `UnexpectedEof` if the file ends first.
    pub async fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let n = self.read_at(buf, offset).await?;
        if n < buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} ends at byte {}, before the {} bytes asked at offset {offset}",
                    self.inode().path().display(),
                    offset + n as u64,
                    buf.len()
                ),
            ));
        }
        Ok(())
    }

    /// Reads only what is cached and ready (`IOCB_NOWAIT`): returns the bytes copied from the
    /// start of the range, or `WouldBlock` if the first page is not cached. Never waits and
    /// never starts I/O. A range only partly cached is read up to the first page that is not
    /// (a short count, as at end of file); 0 at or past end of file, as [`read_at`](Self::read_at).
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("f");
    /// # std::fs::write(&path, vec![7u8; 10_000])?;
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// # let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
    /// # let file = cache
    /// #     .open(&path, uringcache::OpenOptions::new().read(true).write(true))
    /// #     .await?;
    /// let mut buf = vec![0u8; 8192];
    /// let err = file.try_read_at(&mut buf, 0).unwrap_err(); // nothing cached, no read started
    /// assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    /// file.advise(uringcache::Advice::Random); // read only what is asked: page 0
    /// file.read_exact_at(&mut buf[..100], 0).await?;
    /// assert_eq!(file.try_read_at(&mut buf, 0)?, 4096); // page 0 a hit; page 1 not cached
    /// # Ok::<(), std::io::Error>(())
    /// # })
    /// # }
    /// ```
    pub fn try_read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let Some(end) = self.read_end(buf.len(), offset)? else {
            return Ok(0);
        };
        let inode = self.inode();
        let shift = self.cache().page_shift();
        let mut pos = offset;
        for span in page_spans(offset, end, shift) {
            let dst = &mut buf[span.out..span.out + span.len];
            if !inode.copy_if_cached(span.index, span.in_page, dst, true) {
                let Some(page) = inode.try_get_page(span.index) else {
                    break;
                };
                dst.copy_from_slice(&page.bytes()[span.in_page..span.in_page + span.len]);
                page.mark_accessed();
            }
            pos += span.len as u64;
        }
        if pos == offset {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "page {} of {} is not cached",
                    offset >> shift,
                    self.inode().path().display()
                ),
            ));
        }
        Ok((pos - offset) as usize)
    }

    /// Reads `offset .. offset + len` into the cache (clamped to end of file) and completes
    /// when those reads have finished. Dropping the future does not cancel reads already
    /// started. With a budget smaller than the range, early pages may be evicted again by the
    /// time it completes.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("f");
    /// # std::fs::write(&path, vec![7u8; 10_000])?;
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// # let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
    /// # let file = cache
    /// #     .open(&path, uringcache::OpenOptions::new().read(true).write(true))
    /// #     .await?;
    /// file.readahead(0, 8192).await?; // pages 0 and 1 read, and waited for
    /// let mut buf = vec![0u8; 8192];
    /// assert_eq!(file.try_read_at(&mut buf, 0)?, 8192); // both cached now
    /// assert_eq!(cache.stats().misses, 0); // readahead is not a reader's miss
    /// # Ok::<(), std::io::Error>(())
    /// # })
    /// # }
    /// ```
    pub async fn readahead(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check_read(0, offset)?;
        let end_byte = offset.checked_add(len).ok_or_else(|| {
            invalid(format!(
                "readahead of {len} bytes at offset {offset} overflows the largest file offset"
            ))
        })?;
        let inode = self.inode();
        let shift = self.cache().page_shift();
        let end_byte = end_byte.min(inode.mapping().size());
        if offset >= end_byte {
            return Ok(());
        }
        let end = (end_byte - 1) >> shift;
        let end = end + 1;
        let mut pos = offset >> shift;
        let step = self.cache().ra_max_pages();
        while pos < end {
            let size = step.min(end - pos);
            let window = Window {
                start: pos,
                size,
                async_size: 0,
            };
            let stopped = inode.read_window(window, Some(pos)).await?;
            inode.wait_range(pos, pos + size).await?;
            pos = stopped.max(pos + 1);
        }
        Ok(())
    }

    /// Tells the cache how this handle will read (`posix_fadvise`): `Sequential` doubles the
    /// largest readahead window, `Random` turns readahead off (a miss reads only the pages
    /// asked for), `Normal` restores the default. The advice is this handle's (and its
    /// clones'): other handles of the file keep their own.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("f");
    /// # std::fs::write(&path, vec![7u8; 64 << 10])?;
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// # let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
    /// # let file = cache
    /// #     .open(&path, uringcache::OpenOptions::new().read(true).write(true))
    /// #     .await?;
    /// use uringcache::Advice;
    /// let mut buf = vec![0u8; 4096];
    /// file.advise(Advice::Random); // e.g. index lookups
    /// file.read_exact_at(&mut buf, 0).await?;
    /// assert_eq!(cache.stats().readahead_pages, 0); // page 0 alone was read
    /// file.advise(Advice::Sequential); // e.g. a scan
    /// file.read_exact_at(&mut buf, 4096).await?;
    /// assert!(cache.stats().readahead_pages > 0); // pages after page 1 read ahead
    /// # Ok::<(), std::io::Error>(())
    /// # })
    /// # }
    /// ```
    pub fn advise(&self, advice: Advice) {
        self.handle.ra.lock().set_advice(advice);
    }

    pub(crate) fn check_write(&self, len: usize, offset: u64) -> io::Result<u64> {
        self.cache().check_open()?;
        if !self.handle.write {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} was opened without write access",
                    self.inode().path().display()
                ),
            ));
        }
        offset.checked_add(len as u64).ok_or_else(|| {
            invalid(format!(
                "a write of {len} bytes at offset {offset} overflows the largest file offset"
            ))
        })
    }

    /// Writes all of `buf` at `offset` into the cache and returns its length. The bytes are
    /// visible to every handle's reads at once and reach the device later, by background
    /// writeback or a `sync_*` call. A partial page of existing data is read first; a whole
    /// page is not. Writing past the end extends the file; the gap reads as zeros.
    pub async fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.check_write(buf.len(), offset)?;
        self.inode().write_at(buf, offset).await?;
        Ok(buf.len())
    }

    /// Writes all of `buf` at `offset`; see [`write_at`](Self::write_at), which never writes
    /// less than asked without an error.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("f");
    /// # std::fs::write(&path, vec![7u8; 10_000])?;
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// # let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
    /// # let file = cache
    /// #     .open(&path, uringcache::OpenOptions::new().read(true).write(true))
    /// #     .await?;
    /// file.write_all_at(b"new bytes", 9_995).await?; // extends the file
    /// assert_eq!(file.len(), 10_004);
    /// let mut buf = [0u8; 9];
    /// file.read_exact_at(&mut buf, 9_995).await?; // read-your-writes, before any sync
    /// assert_eq!(&buf, b"new bytes");
    /// # Ok::<(), std::io::Error>(())
    /// # })
    /// # }
    /// ```
    pub async fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_at(buf, offset).await.map(|_| ())
    }

    /// Writes back the dirty pages of `offset .. offset + len` and waits for them
    /// (`sync_file_range` with wait, `filemap_write_and_wait_range`). Does not flush the
    /// device's cache: use [`sync_data`](Self::sync_data) for durability. Reports a writeback
    /// error of this file that this handle has not seen yet.
    pub async fn sync_range(&self, offset: u64, len: u64) -> io::Result<()> {
        self.cache().check_open()?;
        let end = offset.checked_add(len).ok_or_else(|| {
            invalid(format!(
                "sync_range of {len} bytes at offset {offset} overflows the largest file offset"
            ))
        })?;
        self.inode()
            .sync(SyncKind::Range(offset, end), &self.handle.wb_cursor)
            .await
    }

    /// Makes the file's data durable (`fdatasync`): writes back every dirty page, waits, cuts
    /// the on-disk length back to [`len`](Self::len) if the tail block overshot it, and
    /// flushes (a full flush when the length changed since the last one). Concurrent syncs
    /// share flushes. An error is returned once to every handle open when it happened; pages
    /// that failed stay dirty and the next sync writes them again.
    pub async fn sync_data(&self) -> io::Result<()> {
        self.cache().check_open()?;
        self.inode()
            .sync(SyncKind::Data, &self.handle.wb_cursor)
            .await
    }

    /// Makes the file's data and metadata durable (`fsync`); see [`sync_data`](Self::sync_data).
    /// After it returns `Ok`, the file on disk has exactly [`len`](Self::len) bytes.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("f");
    /// # std::fs::write(&path, vec![7u8; 10_000])?;
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// # let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
    /// # let file = cache
    /// #     .open(&path, uringcache::OpenOptions::new().read(true).write(true))
    /// #     .await?;
    /// file.write_all_at(b"tail", 10_000).await?;
    /// file.sync_all().await?;
    /// assert_eq!(std::fs::metadata(&path)?.len(), 10_004);
    /// # Ok::<(), std::io::Error>(())
    /// # })
    /// # }
    /// ```
    pub async fn sync_all(&self) -> io::Result<()> {
        self.cache().check_open()?;
        self.inode()
            .sync(SyncKind::All, &self.handle.wb_cursor)
            .await
    }

    /// Sets the file's length. Shrinking drops cached pages past the end (waiting for their
    /// writeback; their unsynced changes are discarded), zeroes the rest of the last page and
    /// cuts the file on disk; growing extends it with zeros.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("f");
    /// # std::fs::write(&path, vec![7u8; 10_000])?;
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// # let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
    /// # let file = cache
    /// #     .open(&path, uringcache::OpenOptions::new().read(true).write(true))
    /// #     .await?;
    /// let mut buf = vec![0u8; 2000];
    /// file.read_exact_at(&mut buf, 4000).await?; // pages 0 to 2 cached
    /// file.set_len(5000).await?; // page 2 dropped, page 1 zeroed from byte 5000 on
    /// assert_eq!(std::fs::metadata(&path)?.len(), 5000); // cut on disk at once
    /// file.set_len(6000).await?; // grow: the new bytes are zeros
    /// file.read_exact_at(&mut buf, 4000).await?;
    /// assert!(buf[..1000].iter().all(|&b| b == 7));
    /// assert!(buf[1000..].iter().all(|&b| b == 0));
    /// # Ok::<(), std::io::Error>(())
    /// # })
    /// # }
    /// ```
    pub async fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_write(0, len)?;
        self.inode().set_len(len).await
    }

    /// Drops the clean cached pages of `offset .. offset + len` (pages partly in the range
    /// included); dirty, pinned and locked pages stay. The next read of them goes to the
    /// device.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("f");
    /// # std::fs::write(&path, vec![7u8; 10_000])?;
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// # let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
    /// # let file = cache
    /// #     .open(&path, uringcache::OpenOptions::new().read(true).write(true))
    /// #     .await?;
    /// let mut buf = [0u8; 5];
    /// file.read_exact_at(&mut buf, 0).await?; // a miss: reads page 0, and 1 and 2 ahead
    /// file.write_all_at(b"dirty", 4096).await?; // page 1 is dirty now
    /// file.invalidate(0, file.len()).await?; // drops pages 0 and 2, keeps page 1
    /// let misses = cache.stats().misses;
    /// file.read_exact_at(&mut buf, 4096).await?; // still cached: a hit
    /// assert_eq!(&buf, b"dirty");
    /// file.read_exact_at(&mut buf, 0).await?; // dropped: read from the device again
    /// assert_eq!(cache.stats().misses, misses + 1);
    /// # Ok::<(), std::io::Error>(())
    /// # })
    /// # }
    /// ```
    pub async fn invalidate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.cache().check_open()?;
        let end = offset.checked_add(len).ok_or_else(|| {
            invalid(format!(
                "invalidate of {len} bytes at offset {offset} overflows the largest file offset"
            ))
        })?;
        let ps = self.cache().page_size() as u64;
        self.inode().invalidate(offset / ps, end.div_ceil(ps));
        Ok(())
    }
}

impl File {
    /// Reads into `buf` from `offset` straight from the device (`O_DIRECT` semantics,
    /// `IOCB_DIRECT`), bypassing the cache: returns the bytes read, 0 at or past end of file,
    /// fewer than asked only when the file ends first (like [`read_at`](Self::read_at)). Any
    /// offset and length work. Coherent with the cache: dirty cached pages of the range are
    /// written back (and waited for) first, so the read sees every earlier write through any
    /// handle. The bytes go through temporary frames of the cache's budget, at most one
    /// readahead window's worth per device request, and are not left cached.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("f");
    /// # std::fs::write(&path, vec![7u8; 10_000])?;
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// # let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
    /// # let file = cache
    /// #     .open(&path, uringcache::OpenOptions::new().read(true).write(true))
    /// #     .await?;
    /// file.write_all_at(b"cached", 100).await?; // dirty in the cache, not on the device yet
    /// let mut buf = [0u8; 6];
    /// assert_eq!(file.read_direct_at(&mut buf, 100).await?, 6); // written back first
    /// assert_eq!(&buf, b"cached");
    /// assert_eq!(&std::fs::read(&path)?[100..106], b"cached"); // the write-back reached it
    /// # Ok::<(), std::io::Error>(())
    /// # })
    /// # }
    /// ```
    pub async fn read_direct_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.check_read(buf.len(), offset)?;
        self.inode().read_direct(buf, offset).await
    }

    /// Writes all of `buf` at `offset` straight to the device (`IOCB_DIRECT`), bypassing the
    /// cache, and returns its length; extends [`len`](Self::len) if it writes past the end.
    /// Any offset and length work: a page only partly covered is read from the device first
    /// and written whole (read-modify-write). Coherent with the cache: dirty cached pages of
    /// the range are written back first, and afterwards the range's cached pages are dropped,
    /// or, if pinned by a [`PageRef`](crate::PageRef) or dirtied again meanwhile, updated in
    /// place, so every later read (buffered, pinned or direct) sees the new bytes.
    ///
    /// Like `O_DIRECT` without `O_SYNC`, the bytes are on the device when this returns but not
    /// necessarily durable: call [`sync_data`](Self::sync_data) (which also cuts a tail block
    /// written whole back to `len()`).
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("f");
    /// # std::fs::write(&path, vec![7u8; 10_000])?;
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// # let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
    /// # let file = cache
    /// #     .open(&path, uringcache::OpenOptions::new().read(true).write(true))
    /// #     .await?;
    /// let mut buf = [0u8; 6];
    /// file.read_exact_at(&mut buf, 100).await?; // page 0 cached
    /// let page = file.page(0).await?; // and pinned
    /// file.write_direct_at(b"direct", 100).await?; // to the device, not through the cache
    /// assert_eq!(&page[100..106], b"direct"); // the pinned page was updated in place
    /// file.read_exact_at(&mut buf, 100).await?; // and so are buffered reads
    /// assert_eq!(&buf, b"direct");
    /// assert_eq!(&std::fs::read(&path)?[100..106], b"direct"); // on the device already
    /// # Ok::<(), std::io::Error>(())
    /// # })
    /// # }
    /// ```
    pub async fn write_direct_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        let end = self.check_write(buf.len(), offset)?;
        if buf.is_empty() {
            return Ok(0);
        }
        self.inode().write_direct(buf, offset, end).await
    }
}

impl File {
    /// Checks that page `index` and the byte after it have file offsets.
    fn check_page_index(&self, index: u64) -> io::Result<u64> {
        let ps = self.cache().page_size() as u64;
        index
            .checked_add(1)
            .and_then(|i| i.checked_mul(ps))
            .map(|end| end - ps)
            .ok_or_else(|| {
                invalid(format!(
                    "page {index} (of {ps} bytes each) lies past the largest file offset"
                ))
            })
    }

    /// Page `index` of the file (bytes `index * page_size ..`), pinned and up to date
    /// (`read_cache_page`): read from the device on a miss (with this handle's readahead, and
    /// checked by the file's [verify hook](crate::OpenOptions::verify)), returned in place
    /// with no copy. The part of the page past end of file reads as zeros; a page wholly past
    /// end of file is a page of zeros (cached as a clean page: the file does not grow). See
    /// [`PageRef`] for what a pin guarantees.
    ///
    /// Errors: those of [`read_at`](Self::read_at); `OutOfMemory` when every frame of the
    /// cache is pinned by page handles.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("f");
    /// # std::fs::write(&path, vec![7u8; 10_000])?;
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// # let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
    /// # let file = cache
    /// #     .open(&path, uringcache::OpenOptions::new().read(true).write(true))
    /// #     .await?;
    /// let page = file.page(1).await?; // bytes 4096..8192, pinned, no copy
    /// assert_eq!(page.len(), 4096);
    /// assert!(page.iter().all(|&b| b == 7));
    /// # Ok::<(), std::io::Error>(())
    /// # })
    /// # }
    /// ```
    pub async fn page(&self, index: u64) -> io::Result<PageRef> {
        let start = self.check_page_index(index)?;
        self.check_read(0, start)?;
        let inode = self.inode();
        let page = inode.get_page(index, 1, self.ra_source()).await?;
        page.mark_accessed();
        self.note_read_end((index + 1) << self.cache().page_shift());
        Ok(PageRef::new(inode.clone(), page, index))
    }

    /// Page `index` of the file, pinned and locked for writing (`filemap_fault` +
    /// `page_mkwrite`): its current bytes (read from the device first if needed, or zeros past
    /// end of file), to change in place. Waits while another writer holds the page and while
    /// the page is being written back. Dropping the [`PageMut`] marks the page dirty and
    /// extends the file to cover it; [`PageMut::discard`] undoes the change instead. Writers
    /// are throttled at the dirty limit here, like [`write_at`](Self::write_at).
    ///
    /// Needs a handle opened for reading and writing.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("f");
    /// # std::fs::write(&path, vec![7u8; 10_000])?;
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// # let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
    /// # let file = cache
    /// #     .open(&path, uringcache::OpenOptions::new().read(true).write(true))
    /// #     .await?;
    /// {
    ///     let mut page = file.page_mut(0).await?; // locked against other writers
    ///     page[..4].copy_from_slice(b"HEAD");
    /// } // dropped: the page is dirty, written back later
    /// let mut buf = [0u8; 4];
    /// file.read_exact_at(&mut buf, 0).await?;
    /// assert_eq!(&buf, b"HEAD");
    /// # Ok::<(), std::io::Error>(())
    /// # })
    /// # }
    /// ```
    pub async fn page_mut(&self, index: u64) -> io::Result<PageMut> {
        let start = self.check_page_index(index)?;
        self.check_write(0, start)?;
        if !self.can_read() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} was opened without read access, which page_mut needs (it shows the \
                     page's bytes)",
                    self.path().display()
                ),
            ));
        }
        let inode = self.inode();
        // Releasing the handle dirty grows the file to the end of the page: it must fit.
        inode.check_fits(start + self.cache().page_size() as u64)?;
        let page = inode.lock_for_write(index, false, self.ra_source()).await?;
        page.desc().mark_accessed();
        Ok(PageMut::new(inode.clone(), page, index))
    }

    /// Reads `len` bytes from `offset` (clamped to end of file, like
    /// [`read_at`](Self::read_at): empty at or past the end) as [`Bytes`]. When the range lies
    /// within one page the `Bytes` is that cached page itself, pinned until the last clone of
    /// the `Bytes` is dropped: no copy. A range spanning pages is copied into a fresh buffer
    /// (one allocation), so that one request never pins more than one frame.
    pub async fn read_bytes(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        self.check_read(len, offset)?;
        let size = self.len();
        if len == 0 || offset >= size {
            return Ok(Bytes::new());
        }
        let end = (offset + len as u64).min(size);
        let shift = self.cache().page_shift();
        let index = offset >> shift;
        if (end - 1) >> shift == index {
            let page = self.page(index).await?;
            let from = (offset - (index << shift)) as usize;
            let n = (end - offset) as usize;
            return Ok(page.into_bytes().slice(from..from + n));
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        let n = self.read_at(&mut buf, offset).await?;
        buf.truncate(n);
        Ok(Bytes::from(buf))
    }
}

#[cfg(feature = "tokio")]
impl File {
    /// A buffered reader positioned at `offset`, implementing `tokio::io::AsyncRead`,
    /// `AsyncBufRead` and `AsyncSeek`, with a [`DEFAULT_BUF_SIZE`](async_io::DEFAULT_BUF_SIZE) buffer; see [`Reader`].
    ///
    /// ```
    /// use tokio::io::AsyncReadExt;
    ///
    /// # fn main() -> std::io::Result<()> {
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// # rt.block_on(async {
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("data");
    /// std::fs::write(&path, b"hello, page cache")?;
    /// let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
    /// let file = cache.open(&path, uringcache::OpenOptions::new().read(true)).await?;
    ///
    /// let mut text = String::new();
    /// file.reader(7).read_to_string(&mut text).await?;
    /// assert_eq!(text, "page cache");
    /// # Ok::<(), std::io::Error>(())
    /// # })
    /// # }
    /// ```
    pub fn reader(&self, offset: u64) -> Reader {
        Reader::new(self.clone(), offset)
    }

    /// A buffered writer positioned at `offset`, implementing `tokio::io::AsyncWrite`, with a
    /// [`DEFAULT_BUF_SIZE`](async_io::DEFAULT_BUF_SIZE) buffer; see [`Writer`]. On a handle opened with
    /// [`OpenOptions::append`](crate::OpenOptions::append) the writer starts at the end of the
    /// file instead (`len()` now; `offset` is ignored, as `O_APPEND` ignores the file position). `flush` and `shutdown` write the buffer
    /// into the cache but do not make it durable: call [`Writer::sync_all`] for that.
    ///
    /// ```
    /// use tokio::io::AsyncWriteExt;
    ///
    /// # fn main() -> std::io::Result<()> {
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// # rt.block_on(async {
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("out");
    /// let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
    /// let file = cache
    ///     .open(&path, uringcache::OpenOptions::new().write(true).create(true))
    ///     .await?;
    ///
    /// let mut writer = file.writer(0);
    /// writer.write_all(b"written through the cache").await?;
    /// writer.shutdown().await?; // now in the cache, visible to readers
    /// writer.sync_all().await?; // now on the device
    /// assert_eq!(std::fs::read(&path)?, b"written through the cache");
    /// # Ok::<(), std::io::Error>(())
    /// # })
    /// # }
    /// ```
    pub fn writer(&self, offset: u64) -> Writer {
        Writer::new(self.clone(), offset)
    }
}
