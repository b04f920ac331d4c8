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
//!   mapping. It also orders opens against closes: an inode's handle count, its stamp (the file
//!   as the disk had it when the cache let go of it) and its place in the idle list change
//!   only under it, and an open `fstat`s the file under it. Taken by `open`, by the last close
//!   of a file, by the flusher letting go of a closed file, and by an inode's drop.
//! * `idle` (mutex): closed files kept with their pages. Taken under `by_key` or alone; an
//!   inode pushed out of it is dropped only after both are released (its drop takes
//!   `by_key`).
//! * Lock order: `by_key` → `idle`, `by_key` → `inodes`; nothing is taken under `idle` or
//!   `inodes`. `dirty_inodes` (the flusher's list) is taken alone.
//! * The hit path takes none of them: a `File` holds its inode directly.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use uringcache_core::backend::Backend as IoBackend;
use uringcache_core::evict::Verdict;
use uringcache_core::frames::FrameArena;
use uringcache_core::page::{FrameId, PageState, NO_OWNER};
use uringcache_core::pool::FramePool;
use uringcache_core::wait::{Event, WaitTable};
use uringcache_core::writeback::DirtyLimits;
use uringcache_uring::uring::MAX_ENTRIES as MAX_URING_ENTRIES;

use crate::backend::BackendInfo;
use crate::file::{File, OpenOptions};
use crate::inode::{FileStamp, Inode};
use crate::latency::Timed;
use crate::stats::{Counter, Counters, Stats};
use crate::util::block_on;
use crate::writeback::Flusher;

/// Which I/O layer moves the bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// `io_uring` when the kernel allows it, else the thread pool (logged through `tracing`,
    /// and the reason kept in [`Stats::backend_fallback`](crate::Stats::backend_fallback)).
    /// The environment variable [`URINGCACHE_BACKEND`](crate::BACKEND_ENV)`=uring|threads`
    /// picks one instead; it steers only `Auto`, never an explicit choice below.
    #[default]
    Auto,
    /// `io_uring` only: building the cache fails with the reason if it is unavailable.
    IoUring,
    /// A small pool of threads doing `pread` / `pwrite` on `O_DIRECT` files.
    Threads,
}

/// A function that wraps the backend the cache would use (see
/// [`CacheBuilder::wrap_backend`]).
pub type BackendLayer = Arc<dyn Fn(Arc<dyn IoBackend>) -> Arc<dyn IoBackend> + Send + Sync>;

/// Configures and builds a [`Cache`]; see [`Cache::builder`].
#[derive(Clone)]
pub struct CacheBuilder {
    memory_limit: usize,
    page_size: usize,
    backend: Backend,
    readahead_max: usize,
    uring_entries: u32,
    sqpoll: bool,
    threads: usize,
    max_transfer: usize,
    dirty_ratio: f64,
    dirty_background_ratio: f64,
    dirty_expire: Duration,
    writeback_interval: Duration,
    layer: Option<BackendLayer>,
}

impl std::fmt::Debug for CacheBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("memory_limit", &self.memory_limit)
            .field("page_size", &self.page_size)
            .field("backend", &self.backend)
            .field("readahead_max", &self.readahead_max)
            .field("dirty_ratio", &self.dirty_ratio)
            .field("dirty_background_ratio", &self.dirty_background_ratio)
            .field("dirty_expire", &self.dirty_expire)
            .field("writeback_interval", &self.writeback_interval)
            .field("wrapped", &self.layer.is_some())
            .finish_non_exhaustive()
    }
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
            threads: 32,
            max_transfer: 1 << 30,
            dirty_ratio: 0.20,
            dirty_background_ratio: 0.10,
            dirty_expire: Duration::from_secs(30),
            writeback_interval: Duration::from_secs(5),
            layer: None,
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
    /// default is 128 KiB). Windows are further capped to a quarter of the budget. At least one
    /// page; to read only what is asked, advise [`Advice::Random`](crate::Advice::Random).
    pub fn readahead_max(&mut self, bytes: usize) -> &mut Self {
        self.readahead_max = bytes;
        self
    }

    /// Submission queue entries of the `io_uring` backend (default 256): from 1 to 32768 (the
    /// kernel's `IORING_MAX_ENTRIES`), rounded up to a power of two by the kernel. Checked
    /// whichever backend is chosen.
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

    /// Threads of the thread-pool backend (default 32: each runs one blocking request, so this
    /// is the backend's queue depth; idle threads sleep). At least 1.
    pub fn threads(&mut self, threads: usize) -> &mut Self {
        self.threads = threads;
        self
    }

    /// Most bytes one device transfer (one SQE, one `pread`) asks for (default 1 GiB, the
    /// kernel's own cap); larger requests go out in pieces that continue like short transfers.
    /// A multiple of 512. Small values exercise the short-transfer path in tests.
    pub fn max_transfer(&mut self, bytes: usize) -> &mut Self {
        self.max_transfer = bytes;
        self
    }

    /// Fraction of the budget that may be dirty before writers wait for writeback
    /// (`vm.dirty_ratio`; default 0.20).
    pub fn dirty_ratio(&mut self, ratio: f64) -> &mut Self {
        self.dirty_ratio = ratio;
        self
    }

    /// Fraction of the budget dirty above which background writeback starts
    /// (`vm.dirty_background_ratio`; default 0.10).
    pub fn dirty_background_ratio(&mut self, ratio: f64) -> &mut Self {
        self.dirty_background_ratio = ratio;
        self
    }

    /// Age after which a dirty page is written back even below the thresholds
    /// (`vm.dirty_expire_centisecs`; default 30 s).
    pub fn dirty_expire(&mut self, age: Duration) -> &mut Self {
        self.dirty_expire = age;
        self
    }

    /// How often the writeback thread wakes to look for expired dirty pages
    /// (`vm.dirty_writeback_centisecs`; default 5 s).
    pub fn writeback_interval(&mut self, interval: Duration) -> &mut Self {
        self.writeback_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Wraps the backend in another layer, e.g. `uringcache_uring::FaultBackend` (feature
    /// `fault-injection` of `uringcache-uring`) to inject failures in tests, or an
    /// instrumenting backend. The layer sees every request. The trait is
    /// [`io_backend::Backend`](crate::io_backend::Backend); its `submit` is an `unsafe fn`
    /// whose contract (the frames of a request belong to the I/O until its completion) a
    /// layer keeps by passing the cache's requests on, and must keep itself for any request
    /// it makes up.
    pub fn wrap_backend(
        &mut self,
        layer: impl Fn(Arc<dyn IoBackend>) -> Arc<dyn IoBackend> + Send + Sync + 'static,
    ) -> &mut Self {
        self.layer = Some(Arc::new(layer));
        self
    }

    /// Builds the cache: checks every setting (an `InvalidInput` error names the first one
    /// that is out of range and says what is allowed), then maps the frame arena and starts
    /// the backend.
    pub fn build(&self) -> io::Result<Cache> {
        let frames = self.validate()?;
        let ps = self.page_size;
        let arena = Arc::new(FrameArena::new(frames, ps)?);
        let (mut backend, backend_info) = crate::backend::start(self, arena.clone())?;
        if let Some(layer) = &self.layer {
            backend = layer(backend);
        }
        let timed = Arc::new(Timed::new(backend));
        let backend: Arc<dyn IoBackend> = timed.clone();
        let ra_max_pages = ((self.readahead_max / ps).min(frames / 4)).max(1) as u64;
        let inner = Arc::new(CacheInner {
            arena,
            pool: FramePool::new(frames),
            waits: WaitTable::new(),
            backend,
            timed,
            backend_info,
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
            user_handles: AtomicUsize::new(0),
            user_pin_counts: (0..frames).map(|_| AtomicU32::new(0)).collect(),
            shut_down: AtomicBool::new(false),
            shutdown_started: AtomicBool::new(false),
            shutdown_done: Event::new(),
            idle: Mutex::new(VecDeque::new()),
            limits: DirtyLimits::new(frames, self.dirty_background_ratio, self.dirty_ratio),
            nr_dirty: AtomicUsize::new(0),
            nr_writeback: AtomicUsize::new(0),
            dirty_event: Event::new(),
            dirty_inodes: Mutex::new(HashMap::new()),
            flusher: Flusher::new(self.writeback_interval),
            wb_passes: AtomicU64::new(0),
            wb_last_pass_pages: AtomicUsize::new(0),
            orphan_failed_passes: AtomicU32::new(0),
            clock: Instant::now(),
            dirty_expire_ms: self.dirty_expire.as_millis() as u64,
        });
        inner.flusher.spawn(Arc::downgrade(&inner))?;
        inner.user_handle_added();
        Ok(Cache { inner })
    }

    /// Checks every setting before anything is mapped or started; returns the number of
    /// frames the budget holds. Each error is `InvalidInput` and names the setting.
    fn validate(&self) -> io::Result<usize> {
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
        if self.max_transfer < 512 || !self.max_transfer.is_multiple_of(512) {
            return Err(invalid(format!(
                "max_transfer {} is invalid: it must be a non-zero multiple of 512 bytes",
                self.max_transfer
            )));
        }
        for (name, r) in [
            ("dirty_ratio", self.dirty_ratio),
            ("dirty_background_ratio", self.dirty_background_ratio),
        ] {
            if !(0.0..=1.0).contains(&r) {
                return Err(invalid(format!(
                    "{name} {r} is not a fraction between 0 and 1"
                )));
            }
        }
        if self.readahead_max < ps {
            return Err(invalid(format!(
                "readahead_max {} is invalid: it must be at least one page ({ps} bytes); to \
                 read only what is asked, use `File::advise(Advice::Random)`",
                self.readahead_max
            )));
        }
        if self.uring_entries == 0 || self.uring_entries > MAX_URING_ENTRIES {
            return Err(invalid(format!(
                "uring_entries {} is invalid: it must be at least 1 and at most \
                 {MAX_URING_ENTRIES} (the kernel's IORING_MAX_ENTRIES)",
                self.uring_entries
            )));
        }
        if self.threads == 0 {
            return Err(invalid(
                "threads 0 is invalid: the thread pool needs at least 1 thread",
            ));
        }
        Ok(frames)
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

    pub(crate) fn transfer_cap(&self) -> usize {
        self.max_transfer
    }
}

pub(crate) fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

/// A user-space page cache: a budget of page frames shared by every file opened through it.
///
/// Cheap to clone (`Arc` inside), `Send + Sync`. See the crate docs for the model.
pub struct Cache {
    pub(crate) inner: Arc<CacheInner>,
}

impl Clone for Cache {
    fn clone(&self) -> Self {
        self.inner.user_handle_added();
        Cache {
            inner: self.inner.clone(),
        }
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.inner.user_handle_dropped();
    }
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
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let cache = uringcache::Cache::builder()
    ///     .memory_limit(8 << 20)
    ///     .page_size(4096)
    ///     .readahead_max(1 << 20)
    ///     .dirty_ratio(0.3)
    ///     .build()?;
    /// assert_eq!(cache.stats().frames, 2048);
    /// // Bad input gets an error that names the cause.
    /// let err = uringcache::Cache::builder().page_size(3000).build().unwrap_err();
    /// assert!(err.to_string().contains("power of two"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    /// Opens `path` through the cache, with `std::fs::OpenOptions`-like `options`. Two opens of
    /// one file share its cached pages.
    pub async fn open(&self, path: impl AsRef<Path>, options: &OpenOptions) -> io::Result<File> {
        File::open(&self.inner, path.as_ref(), options).await
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// The page size in bytes.
    pub fn page_size(&self) -> usize {
        self.inner.page_size
    }

    /// Writes back every dirty page of every open file (and of every closed file the cache
    /// still holds), waits for it, truncates each file on disk to its length and flushes it
    /// (`sync_all`), then stops the cache: further operations
    /// fail, and the backend stops once every submitted I/O has completed. Returns the first
    /// error met; pages that failed stay dirty and the error names the file.
    pub async fn shutdown(&self) -> io::Result<()> {
        let inner = &self.inner;
        if inner.shutdown_started.swap(true, Ordering::AcqRel) {
            // Another call did (or is doing) the work: nothing is left to do but wait for it.
            loop {
                let ticket = inner.shutdown_done.listen();
                if inner.shut_down.load(Ordering::Acquire) {
                    return Ok(());
                }
                ticket.await;
            }
        }
        let mut first_err = None;
        for inode in inner.open_inodes() {
            // Errors from now on: a writeback error recorded earlier left its pages dirty, so
            // this sync writes them again and reports a failure only if that fails too. An
            // error some handle was told of, and whose pages were written since, is not
            // reported again as if the shutdown had failed.
            let cursor = inode.mapping.wb_err().sample();
            if let Err(e) = inode.sync(crate::writeback::SyncKind::All, &cursor).await {
                tracing::error!(path = %inode.path.display(), error = %e, "shutdown: sync failed");
                first_err.get_or_insert(e);
            }
        }
        inner.shut_down.store(true, Ordering::Release);
        inner.shutdown_done.notify_all();
        inner.flusher.stop();
        inner.backend.shutdown();
        // Nothing will be written any more: the references to files held for writeback or
        // kept closed (each holding the cache) go, so that the cache is freed with its last
        // handle.
        let held: Vec<_> = inner.dirty_inodes.lock().drain().collect();
        drop(held);
        inner.clear_idle();
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Closed files kept with their clean pages at most (each holds its descriptors open).
pub(crate) const MAX_IDLE_FILES: usize = 64;

/// (device, inode number): what makes two opens the same file.
type InodeKey = (u64, u64);

impl Drop for CacheInner {
    fn drop(&mut self) {
        self.flusher.stop();
    }
}

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
    /// What was learnt while starting the backend (fixed buffers, a fallback's reason).
    backend_info: BackendInfo,
    /// The timing layer around `backend` (the same object), for latency statistics.
    timed: Arc<Timed>,
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
    /// `Cache` and `File` handles alive. When the last goes, the flusher writes everything
    /// back and lets go of the files it holds for writeback, which is what keeps the cache
    /// alive (an inode holds its cache), so that the cache is freed.
    pub(crate) user_handles: AtomicUsize,
    /// Per frame, the live page handles pinning it (`user_pins` counts the frames with one).
    pub(crate) user_pin_counts: Box<[AtomicU32]>,
    shut_down: AtomicBool,
    /// `shutdown` was called (a second call waits for the first, then returns `Ok`).
    shutdown_started: AtomicBool,
    /// Notified when `shut_down` is set.
    shutdown_done: Event,
    /// Closed files whose clean pages are kept, oldest first (see [`CacheInner::park_idle`]).
    idle: Mutex<VecDeque<Arc<Inode>>>,
    /// Background threshold and hard limit on dirty pages.
    pub(crate) limits: DirtyLimits,
    /// Dirty pages in the whole cache.
    pub(crate) nr_dirty: AtomicUsize,
    /// Pages under writeback in the whole cache.
    pub(crate) nr_writeback: AtomicUsize,
    /// Notified when writeback completes (dirty count may have dropped, syncs may proceed).
    pub(crate) dirty_event: Event,
    /// Inodes with dirty or writeback pages, held strongly so that their pages are written
    /// even after the last handle is dropped (`bdi->wb.b_dirty`).
    pub(crate) dirty_inodes: Mutex<HashMap<u32, Arc<Inode>>>,
    /// The writeback thread.
    pub(crate) flusher: Flusher,
    /// Flusher passes completed, and pages the last one submitted: a throttled writer that
    /// sees a pass end having submitted nothing (every dirty page locked, say by its own
    /// `PageMut`s) goes on past the limit instead of waiting for writeback that cannot come.
    pub(crate) wb_passes: AtomicU64,
    pub(crate) wb_last_pass_pages: AtomicUsize,
    /// Writeback passes in a row, with no user handle left, that ended with pages still dirty.
    pub(crate) orphan_failed_passes: AtomicU32,
    clock: Instant,
    pub(crate) dirty_expire_ms: u64,
}

impl CacheInner {
    /// Milliseconds since the cache was built (the clock of `dirtied_at`).
    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    pub(crate) fn user_handle_added(&self) {
        self.user_handles.fetch_add(1, Ordering::AcqRel);
    }

    /// The last user handle gone: nothing will sync any more, so write everything back now
    /// rather than when it expires, and free the cache once that is done.
    pub(crate) fn user_handle_dropped(&self) {
        if self.user_handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.flusher.kick(true);
        }
    }

    /// Every inode currently open or holding dirty pages.
    pub(crate) fn open_inodes(&self) -> Vec<Arc<Inode>> {
        self.inodes
            .read()
            .values()
            .filter_map(|w| w.upgrade())
            .collect()
    }

    pub(crate) fn check_open(&self) -> io::Result<()> {
        if self.shut_down.load(Ordering::Acquire) {
            Err(io::Error::other("the cache has been shut down"))
        } else {
            Ok(())
        }
    }

    /// The inode for the file just opened on `fd` (device and inode number `key`), with one
    /// more handle: the one already open, or kept closed and unchanged on disk since; else a
    /// new one from `make(id, size on disk)`. A closed inode whose file changed on disk (see
    /// [`FileStamp`]) is forgotten with its pages, so that no stale page is ever served.
    ///
    /// The file is `fstat`ed under `by_key`, where a closed inode's stamp is taken too: the
    /// flusher's cut of a closed file (before its stamp) can then never fall between the two
    /// looks at the disk and pass for another writer's change.
    pub(crate) fn attach_inode(
        self: &Arc<Self>,
        fd: std::os::fd::BorrowedFd<'_>,
        key: (u64, u64),
        make: impl FnOnce(u32, u64) -> io::Result<Inode>,
    ) -> io::Result<Arc<Inode>> {
        let mut stale = None;
        let mut by_key = self.by_key.lock();
        let seen = FileStamp::of_fd(fd)?;
        if let Some(existing) = by_key.get(&key).and_then(|(_, w)| w.upgrade()) {
            if existing.handles.load(Ordering::Acquire) > 0 || existing.matches_disk(&seen) {
                if existing.handles.fetch_add(1, Ordering::AcqRel) == 0 {
                    *existing.stamp.lock() = None;
                    // A new open after every handle closed: an earlier failed flush was the
                    // closed handles' to hear of (they did); this one starts afresh, as a
                    // reopen of a file the cache had let go of always did.
                    existing.wb.clear_poison();
                    self.counters.add(Counter::Reopens, 1);
                }
                let id = existing.mapping.id();
                // Out of the idle list before `by_key` goes: a close in between must not find
                // it there and leave it parked while open.
                let parked = self.unpark_idle(id);
                drop(by_key);
                drop(parked);
                return Ok(existing);
            }
            tracing::debug!(
                path = %existing.path.display(),
                "the file changed on disk since it was closed; its cached pages are dropped"
            );
            self.counters.add(Counter::StaleReopens, 1);
            by_key.remove(&key);
            stale = Some(existing);
        }
        let id = loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != NO_OWNER && !self.inodes.read().contains_key(&id) {
                break id;
            }
        };
        let made = make(id, seen.size()).map(Arc::new);
        if let Ok(inode) = &made {
            inode.handles.store(1, Ordering::Release);
            by_key.insert(key, (id, Arc::downgrade(inode)));
            self.inodes.write().insert(id, Arc::downgrade(inode));
        }
        drop(by_key);
        if let Some(stale) = stale {
            drop(self.unpark_idle(stale.mapping.id()));
            // Pages pinned by page handles stay with their holders; the rest go now.
            stale.drop_all_pages();
        }
        made
    }

    /// A handle of `inode` closed. At the last one, the cache lets go of the file once it has
    /// no work left on it: at once if every page is clean and the length on disk is right,
    /// else after writeback (see `prune_dirty_inodes`). The file then stays in the cache,
    /// closed, until memory or the idle list's bound pushes it out.
    pub(crate) fn file_closed(&self, inode: &Arc<Inode>) {
        let by_key = self.by_key.lock();
        if inode.handles.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        if inode.is_clean() && inode.disk_len_right() {
            inode.take_stamp();
            let evicted = self.park_idle(inode.clone());
            drop(by_key);
            drop(evicted);
        } else {
            *inode.stamp.lock() = None;
            drop(by_key);
            // Written back as usual; once clean, the flusher cuts the length on disk back and
            // lets go of it.
            inode.hold_for_writeback();
            self.flusher.kick(false);
        }
    }

    /// Called by the flusher for a file without handles whose pages are all clean: cuts the
    /// file on disk back to `len()` if the tail block overshot it, records it as it is on
    /// disk, and keeps it closed with its pages.
    pub(crate) fn let_go(&self, inode: Arc<Inode>) {
        if inode.writable && !inode.disk_len_right() {
            if let Err(e) = block_on(inode.cut_disk(None)) {
                tracing::warn!(path = %inode.path.display(), error = %e,
                    "letting go of a closed file: cannot cut it back to its length");
            }
        }
        let by_key = self.by_key.lock();
        if inode.handles.load(Ordering::Acquire) > 0 || !inode.is_clean() {
            return; // reopened or dirtied again meanwhile: not ours to let go of yet
        }
        inode.take_stamp();
        let evicted = self.park_idle(inode);
        drop(by_key);
        drop(evicted);
    }

    /// Keeps a closed, clean file with its pages (as the kernel keeps an inode's pages after
    /// the last close), at most [`MAX_IDLE_FILES`] of them: the oldest goes, and is returned,
    /// to be dropped once the caller has let go of `by_key` (it may be the last reference,
    /// and an inode's drop takes `by_key`). Called under `by_key`, so that an open cannot
    /// take the file between the decision and the parking.
    #[must_use = "the evicted inode must be dropped outside by_key"]
    fn park_idle(&self, inode: Arc<Inode>) -> Option<Arc<Inode>> {
        if self.shut_down.load(Ordering::Acquire) {
            // Nothing more will be read: keeping it would only keep the cache alive.
            return Some(inode);
        }
        let mut idle = self.idle.lock();
        if idle.iter().any(|i| Arc::ptr_eq(i, &inode)) {
            return None;
        }
        idle.push_back(inode);
        if idle.len() > MAX_IDLE_FILES {
            idle.pop_front()
        } else {
            None
        }
    }

    /// Takes a file out of the idle list (it was reopened or is being dropped).
    fn unpark_idle(&self, id: u32) -> Option<Arc<Inode>> {
        let mut idle = self.idle.lock();
        let at = idle.iter().position(|i| i.mapping.id() == id)?;
        idle.remove(at)
    }

    /// Drops the idle files that no longer earn their descriptor: deleted ones (their space is
    /// freed only when the descriptor closes) and ones whose pages were all evicted.
    pub(crate) fn prune_idle(&self) {
        let gone: VecDeque<Arc<Inode>> = {
            let mut idle = self.idle.lock();
            let (gone, keep) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|i| i.mapping.nr_pages() == 0 || i.unlinked());
            *idle = keep;
            gone
        };
        drop(gone);
    }

    /// Lets go of every idle file (the cache is going away).
    pub(crate) fn clear_idle(&self) {
        let gone = std::mem::take(&mut *self.idle.lock());
        drop(gone);
    }

    /// Files kept closed with their pages.
    fn idle_files(&self) -> usize {
        self.idle.lock().len()
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

    /// Allocates a frame, evicting if needed. `None` when every frame is busy right now; if
    /// dirty pages stood in the way, background writeback is started so that they become
    /// evictable.
    pub(crate) fn try_alloc(&self) -> Option<FrameId> {
        // A pass that only aged hot pages (hits racing with it) made progress: try again at
        // once. Waiting instead would wait for a release that nothing may ever make.
        for _ in 0..4 {
            match self.pool.alloc(|f| self.try_evict(f)) {
                Ok(f) => return Some(f),
                Err(scan) => {
                    if scan.dirty > 0 {
                        self.flusher.kick(true);
                    }
                    if scan.aged == 0 {
                        return None;
                    }
                }
            }
        }
        None
    }

    /// Whether allocations wait for frames (writeback completions then notify them).
    pub(crate) fn has_alloc_waiters(&self) -> bool {
        self.alloc_waiters.load(Ordering::SeqCst) > 0
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
            tracing::debug!(
                frames = self.pool.frames(),
                dirty = self.nr_dirty.load(Ordering::Relaxed),
                writeback = self.nr_writeback.load(Ordering::Relaxed),
                "eviction pressure: waiting for a frame"
            );
            let _waiting = WaiterGuard(&self.alloc_waiters);
            ticket.await;
        }
    }

    /// Drops one pin of `frame` (`put_page`): frees the frame when it was the last, and tells
    /// waiting allocations when the page has just become evictable.
    #[inline]
    pub(crate) fn put(&self, frame: FrameId) {
        match self.pool.pages().get(frame).unpin() {
            0 => {
                self.pool.free_frame(frame);
                if self.alloc_waiters.load(Ordering::SeqCst) > 0 {
                    self.frame_event.notify_all();
                }
            }
            1 if self.alloc_waiters.load(Ordering::SeqCst) > 0 => self.frame_event.notify_all(),
            _ => {}
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        let b = self.backend.stats();
        let lat = self.timed.summaries();
        let c = &self.counters;
        Stats {
            backend: self.backend.name(),
            fixed_buffers: self.backend_info.fixed_buffers,
            backend_fallback: self.backend_info.fallback.clone(),
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
            dirty_pages: self.nr_dirty.load(Ordering::Relaxed),
            writeback_pages: self.nr_writeback.load(Ordering::Relaxed),
            pages_written: c.get(Counter::PagesWritten),
            write_requests: c.get(Counter::WriteRequests),
            write_errors: c.get(Counter::WriteErrors),
            flushes: c.get(Counter::Flushes),
            flush_errors: c.get(Counter::FlushErrors),
            syncs: c.get(Counter::Syncs),
            throttle_waits: c.get(Counter::ThrottleWaits),
            open_files: self
                .open_inodes()
                .iter()
                .filter(|i| i.handles.load(Ordering::Acquire) > 0)
                .count(),
            idle_files: self.idle_files(),
            reopens: c.get(Counter::Reopens),
            stale_reopens: c.get(Counter::StaleReopens),
            dirty_pages_dropped: c.get(Counter::DirtyPagesDropped),
            read_latency: lat[0],
            write_latency: lat[1],
            flush_latency: lat[2],
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The message of the `InvalidInput` error `validate` returns for `builder`.
    fn refusal(builder: &CacheBuilder) -> String {
        let e = builder.validate().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        e.to_string()
    }

    #[test]
    fn validate_accepts_the_defaults() {
        let b = CacheBuilder::default();
        assert_eq!(b.validate().unwrap(), (256 << 20) / 4096);
    }

    #[test]
    fn validate_names_each_setting_out_of_range() {
        type Set = fn(&mut CacheBuilder);
        let cases: [(&str, Set); 14] = [
            ("page size 0", |b| {
                b.page_size(0);
            }),
            ("page size 3000", |b| {
                b.page_size(3000);
            }),
            ("page size 256", |b| {
                b.page_size(256);
            }),
            ("at least 4 pages", |b| {
                b.memory_limit(3 * 4096);
            }),
            ("max_transfer 0", |b| {
                b.max_transfer(0);
            }),
            ("max_transfer 1000", |b| {
                b.max_transfer(1000);
            }),
            ("dirty_ratio 1.5", |b| {
                b.dirty_ratio(1.5);
            }),
            ("dirty_ratio NaN", |b| {
                b.dirty_ratio(f64::NAN);
            }),
            ("dirty_background_ratio -0.1", |b| {
                b.dirty_background_ratio(-0.1);
            }),
            ("readahead_max 0", |b| {
                b.readahead_max(0);
            }),
            ("readahead_max 4095", |b| {
                b.readahead_max(4095);
            }),
            ("uring_entries 0 is invalid: it must be at least 1", |b| {
                b.uring_entries(0);
            }),
            ("uring_entries 32769", |b| {
                b.uring_entries(32769);
            }),
            ("threads 0", |b| {
                b.threads(0);
            }),
        ];
        for (expected, set) in cases {
            let mut b = CacheBuilder::default();
            set(&mut b);
            let msg = refusal(&b);
            assert!(msg.contains(expected), "{expected:?} not in {msg:?}");
        }
    }

    #[test]
    fn validate_accepts_the_edges() {
        let mut b = CacheBuilder::default();
        b.page_size(512)
            .memory_limit(4 * 512)
            .max_transfer(512)
            .dirty_ratio(1.0)
            .dirty_background_ratio(0.0)
            .readahead_max(512)
            .threads(1)
            .uring_entries(1);
        assert_eq!(b.validate().unwrap(), 4);
        b.uring_entries(32768);
        assert_eq!(b.validate().unwrap(), 4);
    }

    #[test]
    fn bad_settings_fail_before_a_backend_is_started() {
        // The layer runs on the backend just started: a bad setting must be refused before.
        let started = Arc::new(AtomicBool::new(false));
        let seen = started.clone();
        let mut b = CacheBuilder::default();
        b.backend(Backend::Threads)
            .memory_limit(1 << 20)
            .max_transfer(1000)
            .wrap_backend(move |inner| {
                seen.store(true, Ordering::SeqCst);
                inner
            });
        let e = b.build().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("max_transfer"), "{e}");
        assert!(
            !started.load(Ordering::SeqCst),
            "a backend was started first"
        );
    }

    #[test]
    fn zero_uring_entries_is_refused_not_a_fallback() {
        // Before, `Auto` took the ring's refusal of 0 entries for "io_uring unavailable" and
        // quietly used the thread pool.
        let e = Cache::builder().uring_entries(0).build().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("uring_entries"), "{e}");
    }

    #[test]
    fn stats_tell_fixed_buffers_and_fallback() {
        let cache = Cache::builder()
            .memory_limit(64 * 4096)
            .backend(Backend::Threads)
            .build()
            .unwrap();
        let s = cache.stats();
        assert_eq!(s.backend, "threads");
        assert!(!s.fixed_buffers);
        assert_eq!(
            s.backend_fallback, None,
            "Threads was asked for, not fallen back to"
        );
        drop(cache);
        // Auto here: either io_uring started (no fallback) or the reason is kept.
        let s = Cache::builder()
            .memory_limit(64 * 4096)
            .build()
            .unwrap()
            .stats();
        match s.backend {
            "io_uring" => assert_eq!(s.backend_fallback, None),
            _ => assert!(!s.fixed_buffers),
        }
    }
}
