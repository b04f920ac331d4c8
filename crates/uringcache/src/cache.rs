//! The cache: its builder, the shared state every file handle points to, and the glue between
//! frame allocation and eviction.
//!
//! [`CacheInner`] owns the frame arena, the frame pool (descriptors, free list, policy), the
//! page wait table, the backend and the table of open inodes. It is shared by every [`Cache`]
//! clone and every [`File`](crate::File).
//!
//! # Locks
//!
//! * `inodes` (reader-writer): mapping id → inode, read by the evictor to find a victim's
//!   mapping, written when an inode is created or dropped. Never held while calling into an
//!   inode (an `Arc` is cloned out first), so dropping an inode from the evictor cannot
//!   deadlock on it.
//! * `by_key` (mutex): (device, inode number) → inode, so that two opens of one file share one
//!   mapping. Taken only by `open` and by an inode's drop.
//! * The hit path takes neither: a `File` holds its inode directly.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use uringcache_core::backend::Backend as IoBackend;
use uringcache_core::evict::Verdict;
use uringcache_core::frames::FrameArena;
use uringcache_core::page::{FrameId, PageState, NO_OWNER};
use uringcache_core::pool::FramePool;
use uringcache_core::wait::{Event, WaitTable};

use crate::file::{File, OpenOptions};
use crate::inode::Inode;
use crate::stats::{Counter, Counters, Stats};

/// Which I/O layer moves the bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// `io_uring` when the kernel allows it, else the thread pool (logged through `tracing`).
    /// The environment variable `URINGCACHE_BACKEND=uring|threads` overrides the choice.
    #[default]
    Auto,
    /// `io_uring` only: building the cache fails with the reason if it is unavailable.
    IoUring,
    /// A small pool of threads doing `pread` / `pwrite` on `O_DIRECT` files.
    Threads,
}

/// Configures and builds a [`Cache`]; see [`Cache::builder`].
#[derive(Clone, Debug)]
pub struct CacheBuilder {
    memory_limit: usize,
    page_size: usize,
    backend: Backend,
    readahead_max: usize,
    uring_entries: u32,
    sqpoll: bool,
    threads: usize,
}

impl Default for CacheBuilder {
    fn default() -> Self {
        CacheBuilder {
            memory_limit: 256 << 20,
            page_size: 4096,
            backend: Backend::Auto,
            readahead_max: 2 << 20,
            uring_entries: 256,
            sqpoll: false,
            threads: 4,
        }
    }
}

impl CacheBuilder {
    /// Bytes of page frames: the whole budget (default 256 MiB). At least four pages.
    pub fn memory_limit(&mut self, bytes: usize) -> &mut Self {
        self.memory_limit = bytes;
        self
    }

    /// Page size in bytes (default 4096): a power of two, at least 512, and a multiple of the
    /// direct-I/O alignment of every file opened.
    pub fn page_size(&mut self, bytes: usize) -> &mut Self {
        self.page_size = bytes;
        self
    }

    /// The I/O layer (default [`Backend::Auto`]).
    pub fn backend(&mut self, backend: Backend) -> &mut Self {
        self.backend = backend;
        self
    }

    /// The largest readahead window in bytes (default 2 MiB, sized for SSDs; the kernel's
    /// default is 128 KiB). Windows are further capped to a quarter of the budget.
    pub fn readahead_max(&mut self, bytes: usize) -> &mut Self {
        self.readahead_max = bytes;
        self
    }

    /// Submission queue entries of the `io_uring` backend (default 256).
    pub fn uring_entries(&mut self, entries: u32) -> &mut Self {
        self.uring_entries = entries;
        self
    }

    /// Use a kernel submission-polling thread (`IORING_SETUP_SQPOLL`; default off: it costs a
    /// core).
    pub fn sqpoll(&mut self, on: bool) -> &mut Self {
        self.sqpoll = on;
        self
    }

    /// Threads of the thread-pool backend (default 4).
    pub fn threads(&mut self, threads: usize) -> &mut Self {
        self.threads = threads.max(1);
        self
    }

    /// Builds the cache: maps the frame arena and starts the backend.
    pub fn build(&self) -> io::Result<Cache> {
        let ps = self.page_size;
        if ps == 0 || !ps.is_power_of_two() || ps < 512 {
            return Err(invalid(format!(
                "page size {ps} is invalid: it must be a power of two of at least 512 bytes"
            )));
        }
        let frames = self.memory_limit / ps;
        if frames < 4 {
            return Err(invalid(format!(
                "memory limit of {} bytes holds {frames} pages of {ps} bytes; at least 4 pages \
                 ({} bytes) are needed",
                self.memory_limit,
                4 * ps
            )));
        }
        if frames >= NO_OWNER as usize {
            return Err(invalid(format!(
                "memory limit of {} bytes is more than 2^32 pages of {ps} bytes; use a larger \
                 page size",
                self.memory_limit
            )));
        }
        let arena = Arc::new(FrameArena::new(frames, ps)?);
        let backend = crate::backend::start(self, arena.clone())?;
        let ra_max_pages = ((self.readahead_max / ps).min(frames / 4)).max(1) as u64;
        Ok(Cache {
            inner: Arc::new(CacheInner {
                arena,
                pool: FramePool::new(frames),
                waits: WaitTable::new(),
                backend,
                inodes: RwLock::new(HashMap::new()),
                by_key: Mutex::new(HashMap::new()),
                next_id: AtomicU32::new(0),
                page_size: ps,
                page_shift: ps.trailing_zeros(),
                ra_max_pages,
                counters: Counters::default(),
                frame_event: Event::new(),
                alloc_waiters: AtomicUsize::new(0),
                user_pins: AtomicUsize::new(0),
                shut_down: AtomicBool::new(false),
            }),
        })
    }

    pub(crate) fn backend_choice(&self) -> Backend {
        self.backend
    }

    pub(crate) fn uring_settings(&self) -> (u32, bool) {
        (self.uring_entries, self.sqpoll)
    }

    pub(crate) fn thread_count(&self) -> usize {
        self.threads
    }
}

pub(crate) fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

/// A user-space page cache: a budget of page frames shared by every file opened through it.
///
/// Cheap to clone (`Arc` inside), `Send + Sync`. See the crate docs for the model.
#[derive(Clone)]
pub struct Cache {
    pub(crate) inner: Arc<CacheInner>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("backend", &self.inner.backend.name())
            .field("page_size", &self.inner.page_size)
            .field("frames", &self.inner.pool.frames())
            .finish()
    }
}

impl Cache {
    /// A builder with the defaults: 256 MiB, 4 KiB pages, [`Backend::Auto`].
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    /// Opens `path` through the cache, with `std::fs::OpenOptions`-like `options`. Two opens of
    /// one file share its cached pages.
    pub async fn open(&self, path: impl AsRef<Path>, options: &OpenOptions) -> io::Result<File> {
        File::open(&self.inner, path.as_ref(), options)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// The page size in bytes.
    pub fn page_size(&self) -> usize {
        self.inner.page_size
    }

    /// Stops the cache: further operations fail, and the backend stops once every submitted
    /// I/O has completed.
    pub async fn shutdown(&self) -> io::Result<()> {
        self.inner.shut_down.store(true, Ordering::Release);
        self.inner.backend.shutdown();
        Ok(())
    }
}

/// (device, inode number): what makes two opens the same file.
type InodeKey = (u64, u64);

/// Decrements a waiter count when the waiting future completes or is dropped.
struct WaiterGuard<'a>(&'a AtomicUsize);

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The state shared by a cache and its files.
pub(crate) struct CacheInner {
    pub(crate) arena: Arc<FrameArena>,
    pub(crate) pool: FramePool,
    pub(crate) waits: WaitTable,
    pub(crate) backend: Arc<dyn IoBackend>,
    inodes: RwLock<HashMap<u32, Weak<Inode>>>,
    by_key: Mutex<HashMap<InodeKey, (u32, Weak<Inode>)>>,
    next_id: AtomicU32,
    pub(crate) page_size: usize,
    pub(crate) page_shift: u32,
    pub(crate) ra_max_pages: u64,
    pub(crate) counters: Counters,
    /// Notified when a frame may have become free or evictable (an unpin, an I/O completion)
    /// while an allocation waits for one.
    pub(crate) frame_event: Event,
    /// Allocations waiting on `frame_event`.
    alloc_waiters: AtomicUsize,
    /// Frames pinned by long-lived page handles (they do not unpin by themselves).
    pub(crate) user_pins: AtomicUsize,
    shut_down: AtomicBool,
}

impl CacheInner {
    pub(crate) fn check_open(&self) -> io::Result<()> {
        if self.shut_down.load(Ordering::Acquire) {
            Err(io::Error::other("the cache has been shut down"))
        } else {
            Ok(())
        }
    }

    /// The inode already open for (device, inode number), if any.
    pub(crate) fn find_inode(&self, key: (u64, u64)) -> Option<Arc<Inode>> {
        self.by_key.lock().get(&key).and_then(|(_, w)| w.upgrade())
    }

    /// Registers a new inode, or returns the one another open registered first.
    pub(crate) fn add_inode(
        self: &Arc<Self>,
        key: (u64, u64),
        make: impl FnOnce(u32) -> io::Result<Inode>,
    ) -> io::Result<Arc<Inode>> {
        let mut by_key = self.by_key.lock();
        if let Some(existing) = by_key.get(&key).and_then(|(_, w)| w.upgrade()) {
            return Ok(existing);
        }
        let id = loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != NO_OWNER && !self.inodes.read().contains_key(&id) {
                break id;
            }
        };
        let inode = Arc::new(make(id)?);
        by_key.insert(key, (id, Arc::downgrade(&inode)));
        self.inodes.write().insert(id, Arc::downgrade(&inode));
        Ok(inode)
    }

    /// Forgets a dropped inode.
    pub(crate) fn remove_inode(&self, id: u32, key: (u64, u64)) {
        self.inodes.write().remove(&id);
        let mut by_key = self.by_key.lock();
        if by_key.get(&key).map(|(i, _)| *i) == Some(id) {
            by_key.remove(&key);
        }
    }

    fn inode_by_id(&self, id: u32) -> Option<Arc<Inode>> {
        self.inodes.read().get(&id).and_then(|w| w.upgrade())
    }

    /// The eviction callback (`shrink_page_list` for one candidate): removes the page in
    /// `frame` from its mapping if only the mapping pins it and it is clean, unlocked and not
    /// under writeback.
    fn try_evict(&self, frame: FrameId) -> Verdict {
        let pages = self.pool.pages();
        let desc = pages.get(frame);
        let owner = desc.owner();
        if owner == NO_OWNER {
            return Verdict::Gone;
        }
        let Some(inode) = self.inode_by_id(owner) else {
            // The inode is being dropped; its drop frees the frame.
            return Verdict::Busy;
        };
        let mut dirty = false;
        let removed = inode.mapping.remove_if(desc.index(), frame, pages, |d| {
            let s = d.state();
            dirty = s.has(PageState::DIRTY);
            d.pins() == 1 && !s.any(PageState::LOCKED | PageState::DIRTY | PageState::WRITEBACK)
        });
        drop(inode);
        if removed {
            let left = desc.unpin();
            debug_assert_eq!(left, 0);
            self.counters.add(Counter::Evictions, 1);
            Verdict::Evicted
        } else if dirty {
            Verdict::Dirty
        } else {
            Verdict::Busy
        }
    }

    /// Allocates a frame, evicting if needed. `None` when every frame is busy right now.
    pub(crate) fn try_alloc(&self) -> Option<FrameId> {
        self.pool.alloc(|f| self.try_evict(f)).ok()
    }

    /// Allocates a frame, waiting while every frame is busy (`__alloc_pages` with reclaim).
    /// A frame that is locked for I/O, pinned for a moment by a reader or waiting for
    /// writeback becomes evictable by itself, and every such change notifies `frame_event`; so
    /// the wait ends without polling. Only when every frame is held by long-lived user pins can
    /// nothing change: that is an error, not a hang.
    pub(crate) async fn alloc(&self) -> io::Result<FrameId> {
        loop {
            let ticket = self.frame_event.listen();
            self.alloc_waiters.fetch_add(1, Ordering::SeqCst);
            let got = self.try_alloc();
            if let Some(f) = got {
                self.alloc_waiters.fetch_sub(1, Ordering::SeqCst);
                return Ok(f);
            }
            if self.user_pins.load(Ordering::Acquire) >= self.pool.frames() {
                self.alloc_waiters.fetch_sub(1, Ordering::SeqCst);
                return Err(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    format!(
                        "every one of the cache's {} frames is pinned by a page handle; raise \
                         memory_limit or hold fewer pages at once",
                        self.pool.frames()
                    ),
                ));
            }
            self.counters.add(Counter::AllocWaits, 1);
            let _waiting = WaiterGuard(&self.alloc_waiters);
            ticket.await;
        }
    }

    /// Drops one pin of `frame` (`put_page`): frees the frame when it was the last, and tells
    /// waiting allocations when the page has just become evictable.
    #[inline]
    pub(crate) fn put(&self, frame: FrameId) {
        match self.pool.pages().get(frame).unpin() {
            0 => self.pool.free_frame(frame),
            1 if self.alloc_waiters.load(Ordering::SeqCst) > 0 => self.frame_event.notify_all(),
            _ => {}
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        let b = self.backend.stats();
        let c = &self.counters;
        Stats {
            backend: self.backend.name(),
            page_size: self.page_size,
            frames: self.pool.frames(),
            cached_pages: self.pool.frames() - self.pool.nr_free(),
            hits: c.get(Counter::Hits),
            misses: c.get(Counter::Misses),
            waits: c.get(Counter::Waits),
            pages_read: c.get(Counter::PagesRead),
            readahead_pages: c.get(Counter::ReadaheadPages),
            readahead_hits: c.get(Counter::ReadaheadHits),
            evictions: c.get(Counter::Evictions),
            read_errors: c.get(Counter::ReadErrors),
            alloc_waits: c.get(Counter::AllocWaits),
            device_reads: b.reads,
            device_read_bytes: b.read_bytes,
            device_writes: b.writes,
            device_write_bytes: b.write_bytes,
            fsyncs: b.fsyncs,
            submit_calls: b.submit_calls,
            io_errors: b.errors,
        }
    }
}
