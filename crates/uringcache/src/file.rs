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
//!   touches `prev_pos` (one relaxed store per call) and nothing else of the handle.
//! * A read copies out page by page and drops each pin before taking the next, so a request of
//!   any size works with a budget of four frames.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use uringcache_core::readahead::{self, Advice, Window};

use crate::cache::{invalid, CacheInner};
use crate::inode::{Inode, ReadaheadSource};

/// How to open a file; mirrors `std::fs::OpenOptions`.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    read: bool,
    write: bool,
    create: bool,
    truncate: bool,
}

impl OpenOptions {
    /// No access; set at least one of [`read`](Self::read) and [`write`](Self::write).
    pub fn new() -> Self {
        Self::default()
    }

    /// Open for reading.
    pub fn read(&mut self, read: bool) -> &mut Self {
        self.read = read;
        self
    }

    /// Open for writing.
    pub fn write(&mut self, write: bool) -> &mut Self {
        self.write = write;
        self
    }

    /// Create the file if it does not exist (needs `write`).
    pub fn create(&mut self, create: bool) -> &mut Self {
        self.create = create;
        self
    }

    /// Cut the file to length 0 on open (needs `write`).
    pub fn truncate(&mut self, truncate: bool) -> &mut Self {
        self.truncate = truncate;
        self
    }
}

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
    ra: Mutex<readahead::State>,
    /// Byte position just after this handle's previous read (`file_ra_state.prev_pos`).
    prev_pos: AtomicU64,
}

impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("File")
            .field("path", &self.handle.inode.path)
            .field("len", &self.len())
            .field("read", &self.handle.read)
            .field("write", &self.handle.write)
            .finish()
    }
}

impl ReadaheadSource for Handle {
    fn sync_window(&self, inode: &Inode, index: u64, req_pages: u64) -> Window {
        let ps = inode.cache.page_size as u64;
        let prev = self.prev_pos.load(Ordering::Relaxed);
        self.ra
            .lock()
            .on_miss(index, req_pages, prev, ps, |i| inode.mapping.contains(i))
    }

    fn async_window(&self, inode: &Inode, index: u64, req_pages: u64) -> Option<Window> {
        let ps = inode.cache.page_size as u64;
        let prev = self.prev_pos.load(Ordering::Relaxed);
        self.ra
            .lock()
            .on_marker(index, req_pages, prev, ps, |i| inode.mapping.contains(i))
    }

    fn on_error(&self) {
        self.ra.lock().on_error();
    }
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

impl File {
    pub(crate) fn open(
        cache: &Arc<CacheInner>,
        path: &Path,
        options: &OpenOptions,
    ) -> io::Result<File> {
        cache.check_open()?;
        let OpenOptions {
            read,
            write,
            create,
            truncate,
        } = *options;
        if !read && !write {
            return Err(invalid(format!(
                "cannot open {}: OpenOptions needs read(true) or write(true)",
                path.display()
            )));
        }
        if (create || truncate) && !write {
            return Err(invalid(format!(
                "cannot open {}: create and truncate need write(true)",
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
        let fd = uringcache_uring::open_direct(path, read, write, create, truncate)?;
        let meta = std::fs::File::from(fd.try_clone()?).metadata()?;
        if !meta.file_type().is_file() {
            return Err(invalid(format!(
                "cannot open {}: not a regular file",
                path.display()
            )));
        }
        let align = uringcache_uring::dio_alignment(fd.as_fd()).map_err(|e| with_path(path, e))?;
        if !cache.page_size.is_multiple_of(align.max(1) as usize) {
            return Err(invalid(format!(
                "cannot open {}: its direct-I/O alignment is {align} bytes, which does not \
                 divide the cache's page size {}",
                path.display(),
                cache.page_size
            )));
        }
        let key = (meta.dev(), meta.ino());
        let inode = match cache.find_inode(key) {
            Some(inode) => inode,
            None => cache.add_inode(key, |id| {
                // The inode's own descriptor serves every handle: read-write when the file
                // allows it, whatever this first handle asked for.
                let io_fd = if read && write {
                    fd.try_clone()?
                } else {
                    uringcache_uring::open_direct(path, true, true, false, false)
                        .or_else(|_| fd.try_clone())?
                };
                Inode::new(
                    cache.clone(),
                    id,
                    key,
                    io_fd,
                    meta.len(),
                    path.to_path_buf(),
                )
            })?,
        };
        if truncate {
            inode.drop_all_pages();
            inode.mapping.set_size(0);
        }
        let ra = readahead::State::new(cache.ra_max_pages);
        Ok(File {
            handle: Arc::new(Handle {
                inode,
                read,
                write,
                ra: Mutex::new(ra),
                prev_pos: AtomicU64::new(0),
            }),
        })
    }

    fn inode(&self) -> &Arc<Inode> {
        &self.handle.inode
    }

    fn cache(&self) -> &CacheInner {
        &self.handle.inode.cache
    }

    /// The file's length in bytes, as the cache knows it (`i_size`).
    pub fn len(&self) -> u64 {
        self.inode().mapping.size()
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The path the file was opened with.
    pub fn path(&self) -> &Path {
        &self.inode().path
    }

    fn check_read(&self, len: usize, offset: u64) -> io::Result<()> {
        self.cache().check_open()?;
        if !self.handle.read {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} was opened without read access",
                    self.inode().path.display()
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

    /// Reads into `buf` from `offset`, returning the bytes read: 0 at or past end of file,
    /// fewer than `buf.len()` only when the file ends first. Cached pages are copied without a
    /// system call; missing ones are read from the device with readahead.
    pub async fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.check_read(buf.len(), offset)?;
        let inode = self.inode();
        let size = inode.mapping.size();
        if buf.is_empty() || offset >= size {
            return Ok(0);
        }
        let end = (offset + buf.len() as u64).min(size);
        let shift = self.cache().page_shift;
        let ps = self.cache().page_size as u64;
        let last = (end - 1) >> shift;
        let prev_pos = self.handle.prev_pos.load(Ordering::Relaxed);
        let mut pos = offset;
        while pos < end {
            let index = pos >> shift;
            let page = inode
                .get_page(index, last - index + 1, &*self.handle)
                .await?;
            let in_page = (pos & (ps - 1)) as usize;
            let n = ((ps - in_page as u64).min(end - pos)) as usize;
            let out = (pos - offset) as usize;
            buf[out..out + n].copy_from_slice(&page.bytes()[in_page..in_page + n]);
            // Repeated small reads within one page count as one access, as in filemap_read.
            if pos != offset || prev_pos == 0 || (prev_pos - 1) >> shift != index {
                page.mark_accessed();
            }
            pos += n as u64;
        }
        self.handle.prev_pos.store(end, Ordering::Relaxed);
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
                    self.inode().path.display(),
                    offset + n as u64,
                    buf.len()
                ),
            ));
        }
        Ok(())
    }

    /// Reads only what is cached and ready (`IOCB_NOWAIT`): returns the bytes copied from the
    /// start of the range, or `WouldBlock` if the first page is not cached. Never waits and
    /// never starts I/O.
    pub fn try_read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.check_read(buf.len(), offset)?;
        let inode = self.inode();
        let size = inode.mapping.size();
        if buf.is_empty() || offset >= size {
            return Ok(0);
        }
        let end = (offset + buf.len() as u64).min(size);
        let shift = self.cache().page_shift;
        let ps = self.cache().page_size as u64;
        let mut pos = offset;
        while pos < end {
            let index = pos >> shift;
            let Some(page) = inode.try_get_page(index) else {
                break;
            };
            let in_page = (pos & (ps - 1)) as usize;
            let n = ((ps - in_page as u64).min(end - pos)) as usize;
            let out = (pos - offset) as usize;
            buf[out..out + n].copy_from_slice(&page.bytes()[in_page..in_page + n]);
            page.mark_accessed();
            pos += n as u64;
        }
        if pos == offset {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "page {} of {} is not cached",
                    offset >> shift,
                    self.inode().path.display()
                ),
            ));
        }
        Ok((pos - offset) as usize)
    }

    /// Reads `offset .. offset + len` into the cache (clamped to end of file) and completes
    /// when those reads have finished. Dropping the future does not cancel reads already
    /// started. With a budget smaller than the range, early pages may be evicted again by the
    /// time it completes.
    pub async fn readahead(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check_read(0, offset)?;
        let end_byte = offset.checked_add(len).ok_or_else(|| {
            invalid(format!(
                "readahead of {len} bytes at offset {offset} overflows the largest file offset"
            ))
        })?;
        let inode = self.inode();
        let shift = self.cache().page_shift;
        let end_byte = end_byte.min(inode.mapping.size());
        if offset >= end_byte {
            return Ok(());
        }
        let end = (end_byte - 1) >> shift;
        let end = end + 1;
        let mut pos = offset >> shift;
        let step = self.cache().ra_max_pages;
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
    /// readahead window, `Random` turns readahead off, `Normal` restores the default.
    pub fn advise(&self, advice: Advice) {
        self.handle.ra.lock().set_advice(advice);
    }
}
