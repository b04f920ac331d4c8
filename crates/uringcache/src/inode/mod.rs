//! One file's cached state, the counterpart of the kernel's `struct inode` with its
//! `address_space`: the mapping of page indices to frames, the descriptor at the backend, the
//! per-file writeback state, and the size lock.
//!
//! An [`Inode`] is shared by every [`File`](crate::File) handle of the same file (same device
//! and inode number) and by every I/O in flight on it, so that the descriptor stays open and the
//! mapping alive until the last of them is gone. The cache's [`InodeTable`](crate::cache) finds
//! it by (device, inode number) and by mapping id; the inode holds its cache (the kernel's
//! `inode->i_sb`), the one back-pointer of the module graph.
//!
//! The inode's work is split by path, each an `impl Inode` in its own file:
//!
//! | module | job |
//! | --- | --- |
//! | `read` | filling pages from the device: lookups, readahead windows, read completions, verify |
//! | `write` | buffered writes: locking pages, dirtying, throttling, truncation, invalidation |
//! | `direct` | `O_DIRECT` reads and writes that bypass the cache but stay coherent with it |
//! | `writeback` | per-file writeback state; starting writeback of dirty runs and its completions |
//! | `sync` | syncs, group-commit flushes and cuts of the file on disk |
//!
//! # Page guards
//!
//! A pin a lookup took is owned by a [`Pinned`] (dropping it unpins). [`Pinned::lock`] moves it
//! into a [`LockedPage`], which also owns the page lock (dropping it unlocks, wakes, unpins).
//! A page handle takes either over with `hand_over` (`PageRef::new`, `PageMut::new`); every
//! other holder keeps its guard until the pin or lock is released. Completions own the pins of
//! their I/O (a read keeps the allocation's, a write the lookup's) as plain frame ids, released
//! in the completion.
//!
//! # Lock order
//!
//! `by_key` (the inode table, outside) → `size_lock` (shared by writes, exclusive by
//! `set_len`) → a page lock (`LOCKED`, held across `await`s by writers and page handles) →
//! the flush mutex of [`InodeWriteback`] (a leaf: a few instructions, never while submitting
//! to the backend) → the mapping's shard locks (leaves, inside `uringcache_core::mapping`).
//! `verify` and `verify_errors` are leaves, and `stamp` is taken alone.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use uringcache_core::backend::FileId;
use uringcache_core::mapping::Mapping;
use uringcache_core::page::{FrameId, PageDesc};
use uringcache_core::readahead::Window;

use crate::cache::CacheInner;
use crate::options::VerifyFn;
use crate::util::SizeLock;

mod direct;
mod read;
mod sync;
mod write;
mod writeback;

pub(crate) use sync::SyncKind;
pub(crate) use write::LockedPage;
use writeback::InodeWriteback;

/// The cached state of one open file (`struct inode` + its `address_space`).
pub(crate) struct Inode {
    cache: Arc<CacheInner>,
    mapping: Mapping,
    file_id: FileId,
    path: PathBuf,
    key: (u64, u64),
    fd: OwnedFd,
    /// Direct-I/O alignment of the file (offsets and lengths of device I/O).
    dio_align: usize,
    /// Whether the descriptor was opened for writing.
    writable: bool,
    /// Writeback state: on-disk size, group-commit flushes, poisoning.
    wb: InodeWriteback,
    /// Whether the inode is in the cache's list of inodes with dirty pages.
    in_dirty_list: AtomicBool,
    /// The verify hook run on every page filled from the device (see the module docs).
    verify: RwLock<Option<VerifyFn>>,
    /// The hook's message for each page it rejected, until the page is filled again.
    verify_errors: Mutex<HashMap<u64, String>>,
    /// Held shared by writes (buffered and direct), exclusive by size changes (`i_rwsem`).
    size_lock: SizeLock,
    /// A file length known to fit in the filesystem: the open size, then the filesystem's
    /// limit once learnt (see [`Inode::check_fits`]).
    fits_up_to: AtomicU64,
    /// Open [`File`](crate::File) handles of this inode (changed under the cache's `by_key`
    /// lock, so that an open and the last close never cross).
    handles: AtomicUsize,
    /// The file as it was on disk when the cache let go of it (last handle closed, every page
    /// clean, the length on disk cut to `len()`); `None` while open or while the cache still has
    /// work on it. An open that finds the inode without handles compares it with the disk.
    stamp: Mutex<Option<FileStamp>>,
}

/// What an open compares to tell whether a closed file changed on disk since the cache let go
/// of it: device and inode number, size, and modification and change times to the nanosecond
/// (`fstat`). Any write, truncation, `chmod` or rename onto the path changes one of them (the
/// change time cannot be set by `utimes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    /// The size on disk the stamp recorded.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The stamp of the file open on `fd`.
    pub(crate) fn of_fd(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<FileStamp> {
        let st = fstat(fd)?;
        Ok(FileStamp {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        })
    }

    /// Whether the file is linked nowhere any more (deleted while the cache held it).
    fn unlinked(fd: std::os::fd::BorrowedFd<'_>) -> bool {
        fstat(fd).is_ok_and(|st| st.st_nlink == 0)
    }
}

/// `fstat` of the file open on `fd`.
fn fstat(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: `stat` is a plain C struct for which all-zero bytes are valid, and `fstat` writes
    // it whole on success.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a pointer to a live `stat`.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// A pinned page of an inode; dropping it drops the pin (`folio_put`). Made from the pin a
/// lookup took (`Mapping::lookup`); it moves into a [`LockedPage`] when the
/// page is locked ([`Pinned::lock`]), and into a [`PageRef`](crate::PageRef) through
/// [`hand_over`](Self::hand_over).
pub(crate) struct Pinned<'a> {
    inode: &'a Inode,
    frame: FrameId,
}

impl Pinned<'_> {
    /// The page's bytes. The page is pinned and up to date.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: the pin keeps the frame from being reused, and `Pinned` is only handed out
        // for up-to-date pages, whose bytes nobody but a writer holding LOCKED changes.
        unsafe { self.inode.cache.arena().frame(self.frame) }
    }

    fn desc(&self) -> &PageDesc {
        self.inode.cache.pool().pages().get(self.frame)
    }

    /// Hands the pin over to a page handle: the returned frame carries it, and its new owner
    /// ([`PageRef`](crate::PageRef), whose drop unpins) must drop it. Called only by
    /// `PageRef::new`.
    pub(crate) fn hand_over(self) -> FrameId {
        // This guard's unpin does not run: the pin now belongs to the handle.
        let this = std::mem::ManuallyDrop::new(self);
        this.frame
    }

    /// Records a use of the page for the eviction policy (`mark_page_accessed`).
    pub(crate) fn mark_accessed(&self) {
        self.desc().mark_accessed();
    }
}

impl Drop for Pinned<'_> {
    fn drop(&mut self) {
        self.inode.cache.put(self.frame);
    }
}

/// What a reader asks of [`Inode::get_page`] besides the index.
pub(crate) trait ReadaheadSource: Sync {
    /// The window to read after a miss at `index` (`page_cache_sync_readahead`).
    fn sync_window(&self, inode: &Inode, index: u64, req_pages: u64) -> Window;
    /// The window to start on reaching a Readahead mark at `index`
    /// (`page_cache_async_readahead`).
    fn async_window(&self, inode: &Inode, index: u64, req_pages: u64) -> Option<Window>;
    /// A read failed: shrink the windows (`shrink_readahead_size_eio`).
    fn on_error(&self);
}

impl Inode {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cache: Arc<CacheInner>,
        id: u32,
        key: (u64, u64),
        fd: OwnedFd,
        writable: bool,
        dio_align: usize,
        size: u64,
        path: PathBuf,
    ) -> io::Result<Inode> {
        let file_id = cache.backend().register(fd.as_raw_fd()).map_err(|e| {
            crate::error::os(
                e,
                format!("cannot register {} with the backend", path.display()),
            )
        })?;
        let mapping = Mapping::new(id, size);
        let wb = InodeWriteback::new(size);
        Ok(Inode {
            cache,
            mapping,
            file_id,
            path,
            key,
            fd,
            dio_align,
            writable,
            wb,
            in_dirty_list: AtomicBool::new(false),
            verify: RwLock::new(None),
            verify_errors: Mutex::new(HashMap::new()),
            size_lock: SizeLock::default(),
            fits_up_to: AtomicU64::new(size),
            handles: AtomicUsize::new(0),
            stamp: Mutex::new(None),
        })
    }

    /// The cache this inode belongs to.
    #[inline]
    pub(crate) fn cache(&self) -> &Arc<CacheInner> {
        &self.cache
    }

    /// The page index of the file (`i_mapping`).
    #[inline]
    pub(crate) fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// The path the file was opened by (for messages).
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Whether the descriptor was opened for writing.
    pub(crate) fn is_writable(&self) -> bool {
        self.writable
    }

    /// Counts a new [`File`](crate::File) handle (under the table's `by_key` lock); `true` if
    /// it is the first since the inode had none.
    pub(crate) fn handle_opened(&self) -> bool {
        self.handles.fetch_add(1, Ordering::AcqRel) == 0
    }

    /// Counts a closed handle (under the table's `by_key` lock); `true` if it was the last.
    pub(crate) fn handle_closed(&self) -> bool {
        self.handles.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// Whether any [`File`](crate::File) handle is open.
    pub(crate) fn has_handles(&self) -> bool {
        self.handles.load(Ordering::Acquire) > 0
    }

    /// Forgets the stamp taken when the cache let go of the file (it is open again).
    pub(crate) fn clear_stamp(&self) {
        *self.stamp.lock() = None;
    }

    /// Forgets a failed flush (a reopen after every handle that could hear of it closed).
    pub(crate) fn clear_poison(&self) {
        self.wb.clear_poison();
    }

    /// Installs the verify hook run on every page filled from the device.
    pub(crate) fn set_verify(&self, hook: VerifyFn) {
        *self.verify.write() = Some(hook);
    }

    /// Marks whether the inode is in the flusher's list of inodes with dirty pages.
    pub(crate) fn set_in_dirty_list(&self, listed: bool) {
        self.in_dirty_list.store(listed, Ordering::Release);
    }

    /// Refuses a write or `set_len` that would make the file longer than its filesystem can
    /// hold (`FileTooLarge`, `EFBIG`), as `pwrite` and `ftruncate` do, before anything changes:
    /// otherwise the page could never be written back and every later sync would fail. The
    /// filesystem's limit is learnt once per file, the first time a length passes the size
    /// the file was opened with (`max_file_size`: side-effect-free `lseek`s, some 30 µs);
    /// after that the check is one load.
    pub(crate) fn check_fits(&self, len: u64) -> io::Result<()> {
        if len <= self.fits_up_to.load(Ordering::Relaxed) {
            return Ok(());
        }
        let align = self.dio_align as u64;
        // The tail block is written whole: the rounded-up length must fit too.
        let on_disk = len.checked_next_multiple_of(align);
        let fits = match (on_disk, uringcache_uring::max_file_size(self.fd.as_fd())) {
            (None, _) => false,
            (Some(l), Ok(limit)) => {
                // Every length whose rounded-up end fits is at most the limit rounded down.
                self.fits_up_to
                    .fetch_max(limit - limit % align, Ordering::Relaxed);
                l <= limit
            }
            // The limit cannot be learnt: ask about this length alone.
            (Some(l), Err(_)) => uringcache_uring::fits_in_file(self.fd.as_fd(), l)?,
        };
        if !fits {
            let os = io::Error::from_raw_os_error(libc::EFBIG);
            return Err(crate::error::os(
                os,
                format!(
                    "{} cannot grow to {len} bytes: that is past the largest file its filesystem \
                     can hold",
                    self.path.display()
                ),
            ));
        }
        self.fits_up_to.fetch_max(len, Ordering::Relaxed);
        Ok(())
    }

    /// Whether no page of the file is dirty or under writeback.
    pub(crate) fn is_clean(&self) -> bool {
        self.mapping.nr_dirty() == 0 && self.mapping.nr_writeback() == 0
    }

    /// Whether the file on disk is exactly `len()` long, as far as the cache knows.
    pub(crate) fn disk_len_right(&self) -> bool {
        self.wb.disk_size.load(Ordering::Acquire) == self.mapping.size()
    }

    /// Records the file as the disk has it now, for a later open to compare; the caller holds
    /// the cache's `by_key` lock and has seen the inode without handles and clean.
    pub(crate) fn take_stamp(&self) {
        *self.stamp.lock() = FileStamp::of_fd(self.fd.as_fd()).ok();
    }

    /// Whether the file on disk is the one the cache let go of (see [`FileStamp`]). An inode
    /// without a stamp is one the cache has not let go of yet (its own writeback or cut is
    /// still to come): it is the cache's file, taken as it is.
    pub(crate) fn matches_disk(&self, seen: &FileStamp) -> bool {
        match *self.stamp.lock() {
            Some(stamp) => stamp == *seen,
            None => true,
        }
    }

    /// Whether the file was deleted while the cache held it closed.
    pub(crate) fn unlinked(&self) -> bool {
        FileStamp::unlinked(self.fd.as_fd())
    }

    #[inline]
    fn desc(&self, frame: FrameId) -> &PageDesc {
        self.cache.pool().pages().get(frame)
    }

    /// Drops every cached page: for a closed file found changed on disk (its pages are stale)
    /// and when the inode is dropped. A page pinned by a handle leaves the mapping, orphaned,
    /// and is freed at its last unpin; a page locked by a read in flight stays until the read
    /// has ended.
    pub(crate) fn drop_all_pages(&self) {
        let pages = self.cache.pool().pages();
        for (index, frame) in self.mapping.range(0, u64::MAX) {
            // A page locked by a read in flight stays until the read ends (its reader relies
            // on the mapping's pin; see `end_read_io`); the inode's drop takes it then.
            if self
                .mapping
                .remove_if(index, frame, pages, |d| !d.flags().is_locked())
            {
                self.desc(frame).mark_orphan();
                self.cache.put(frame);
            }
        }
    }
}

impl Drop for Inode {
    fn drop(&mut self) {
        // No handle and no I/O refers to the inode any more: every page is pinned only by the
        // mapping (PageRefs hold the inode too).
        self.drop_all_pages();
        self.cache.backend().unregister(self.file_id);
        self.cache.inodes().remove(self.mapping.id(), self.key);
        let _ = &self.fd; // closed after the backend forgot it
    }
}
