//! # uringcache-redb: redb on the user-space page cache
//!
//! [`UringcacheBackend`] implements [`redb::StorageBackend`] over a
//! [`uringcache::BlockingFile`], so a [`redb::Database`] keeps its file in a uringcache
//! [`Cache`]: its page reads are hits (a lookup and a copy, no system call)
//! while its pages fit the budget, misses go out through `io_uring` (on the calling thread's own
//! ring) or the thread pool, and its commits are the cache's syncs.
//!
//! ```
//! use redb::{Database, ReadableDatabase, TableDefinition};
//! use uringcache_redb::UringcacheBackend;
//!
//! const TABLE: TableDefinition<u64, &str> = TableDefinition::new("greetings");
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("my.redb");
//! // A cache of 64 MiB of its own; redb's cache kept small, since the pages are ours to cache.
//! let backend = UringcacheBackend::new(&path, 64 << 20)?;
//! let cache = backend.cache().clone(); // for its stats later
//! let db = Database::builder()
//!     .set_cache_size(UringcacheBackend::REDB_CACHE_SIZE)
//!     .create_with_backend(backend)?;
//!
//! let tx = db.begin_write()?;
//! tx.open_table(TABLE)?.insert(1, "hello")?;
//! tx.commit()?; // durable: the cache's sync_data
//!
//! let rx = db.begin_read()?;
//! assert_eq!(rx.open_table(TABLE)?.get(1)?.unwrap().value(), "hello");
//! drop(rx);
//! drop(db); // closes the backend: synced, lock released
//! assert!(cache.stats().hits > 0);
//! # Ok(())
//! # }
//! ```
//!
//! ## Sizing redb's cache against the budget
//!
//! redb keeps a cache of its own ([`redb::Builder::set_cache_size`], 1 GiB by default): a read
//! cache of pages copied out of the backend and a write buffer of the open transaction's
//! pages (at most half of it). Over this backend every page redb reads is already in the
//! uringcache budget, so a large redb cache holds the same pages twice and the process uses up
//! to budget + redb's cache. **Set redb's cache small**: [`UringcacheBackend::REDB_CACHE_SIZE`]
//! (4 MiB) is enough for the write buffer of ordinary transactions and a few hot pages (the
//! roots of the B-trees); 0 also works (every page read is then a copy out of our cache,
//! every page written goes to our cache at once). Give the memory to the uringcache budget
//! instead: it is bounded, scan resistant, shared by every database on the same
//! [`Cache`] ([`UringcacheBackend::with_cache`]), and its pages survive
//! redb's cache invalidations. The process then holds about the budget, plus
//! `REDB_CACHE_SIZE` per open database, and the kernel's page cache holds none of it
//! (`O_DIRECT`).
//!
//! A cache you build yourself for redb should start from
//! [`UringcacheBackend::cache_builder`]: it raises the dirty limits (background writeback at
//! half the budget dirty, writers wait at 0.8), because redb syncs at every durable commit and
//! a large transaction rewrites its pages many times; at the cache's default limits each
//! rewrite would go to the device.
//!
//! ## Locking and sharing
//!
//! A backend holds an exclusive `flock` on its file from its construction to
//! [`close`](redb::StorageBackend::close) (or its drop), as redb's own
//! [`FileBackend`](redb::backends::FileBackend) does for a writer, so it conflicts with
//! another `UringcacheBackend` of the same file (in this process or another, on this cache or
//! another) and with redb's file backend (which takes the same `flock` beside its byte-range
//! locks). A conflict fails the constructor with an [`io::Error`] of kind
//! [`WouldBlock`](io::ErrorKind::WouldBlock) that names the file and the cause, with the OS
//! error (`EWOULDBLOCK`) as its source. It supports redb's whole-storage locks only (level 2 of
//! the trait's documentation), so only [`redb::ConcurrencyMode::ExclusiveWriter`] (the default)
//! works: the cache must be the only writer of the file, since it does not see another
//! process's writes while it has the file open.
//!
//! ## Commits
//!
//! A durable redb commit writes its pages (the changed leaves and branches, the allocator's
//! state, the header: about 8 pages for one insert into a small tree) through
//! [`write`](redb::StorageBackend::write), then calls
//! [`sync_data`](redb::StorageBackend::sync_data) once. The cache's own
//! [`BlockingFile::sync_data`] writes a sync of up to 8 pages with `RWF_DSYNC`, each write
//! then making the device flush its cache; for redb's commits that costs more than plain
//! writes and one flush. So this backend's `sync_data` first writes every dirty page back
//! with [`BlockingFile::sync_range`] (plain writes, all submitted at once, in parallel on the
//! thread pool) and waits for them, then calls `sync_data`, which has nothing left to write
//! and makes one flush (shared with any concurrent sync of the file). Measured with one insert
//! per commit into a 12 000-record database on a 16 MiB cache (8 pages a commit, in 7
//! requests), 1000 commits a run, runs alternated: on `io_uring` 1589–1769 commits/s with the
//! `RWF_DSYNC` writes (461–511 µs in `sync_data`) against 2012–2774 this way (283–396 µs),
//! 4 runs each; on the thread pool 1309–1538 against 1721–2094, 3 runs each. redb on its own
//! file backend (the kernel's page cache, unbounded) made 2330–3139 (237–314 µs) in the same
//! runs (BENCHMARKS.md, "redb on the cache", says where the rest goes).
//!
//! ## Invariants
//!
//! * Every method is the [`BlockingFile`] method of the same name, on the calling thread:
//!   `read` is `read_exact_at` (an `UnexpectedEof` error past [`len`](BlockingFile::len), as
//!   the trait asks), `write` is `write_all_at` (into the cache; the device gets it at the next
//!   sync or writeback), `set_len` is `set_len` (new bytes read as zeros), `sync_data` is
//!   `sync_range` over the whole file then `sync_data` (every byte written before it on the
//!   device, and the file on disk exactly `len()` long; see "Commits"), `len` is the cache's
//!   `len()`. No state of its own besides the lock.
//! * Errors are the cache's [`io::Error`]s, passed through unchanged: their kind, their
//!   message (operation, path) and the OS errno (as the error itself or its `source()`, see
//!   [`uringcache_uring::error::raw_os_error_of`]). redb reports them as
//!   `StorageError::Io`.
//! * The lock is taken before the backend is returned and released only by `close` or drop,
//!   after `close` has synced the file: once another handle can lock the file, everything this
//!   one wrote is on the device and the file has its length on disk.
//! * `close` runs once (redb calls it exactly once; a second call does nothing and is `Ok`).

#![warn(missing_docs)]

use std::fmt;
use std::fs;
use std::io;
use std::ops::Bound;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{BackendError, StorageBackend};
use uringcache::{BlockingFile, Cache, OpenOptions};

/// [`redb::StorageBackend`] over a [`BlockingFile`] of a uringcache [`Cache`]: redb's pages live
/// in the cache's budget. See the [crate docs](crate) for sizing and locking.
///
/// Made by [`new`](Self::new) (a cache of its own, of `budget` bytes) or
/// [`with_cache`](Self::with_cache) (a cache shared with other databases and files), then
/// handed to [`redb::Builder::create_with_backend`] (or `open_read_only_with_backend`).
pub struct UringcacheBackend {
    file: BlockingFile,
    cache: Cache,
    /// A second descriptor of the file, holding the exclusive `flock` (the cache's own
    /// descriptor is private to it). Closed at drop.
    lock: fs::File,
    closed: AtomicBool,
}

impl fmt::Debug for UringcacheBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringcacheBackend")
            .field("path", &self.file.path())
            .field("len", &self.file.len())
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl UringcacheBackend {
    /// The redb cache size to use over this backend (4 MiB): room for the write buffer of an
    /// ordinary transaction and the hot upper pages of the B-trees, small beside any useful
    /// budget. See the crate docs, "Sizing redb's cache against the budget".
    pub const REDB_CACHE_SIZE: usize = 4 << 20;

    /// The fraction of the budget dirty above which the cache of
    /// [`cache_builder`](Self::cache_builder) starts background writeback (0.5; the cache's
    /// default is 0.10).
    pub const DIRTY_BACKGROUND_RATIO: f64 = 0.5;

    /// The fraction of the budget dirty above which writers wait for writeback, in the cache of
    /// [`cache_builder`](Self::cache_builder) (0.8; the cache's default is 0.20).
    pub const DIRTY_RATIO: f64 = 0.8;

    /// Opens (creating it if missing) the database file `path` in a cache of its own of
    /// `budget` bytes of page frames ([`cache_builder`](Self::cache_builder): 4 KiB pages,
    /// dirty limits suited to redb, [`uringcache::Backend::Auto`], every other setting the
    /// default), and locks it.
    ///
    /// Errors: the cache's build errors (a budget under four pages is `InvalidInput`), its
    /// open errors (`NotFound` for a missing directory, `Unsupported` where the filesystem
    /// refuses `O_DIRECT`, each with the path and the errno), and `WouldBlock` if the file is
    /// locked (see [`with_cache`](Self::with_cache)).
    pub fn new(path: impl AsRef<Path>, budget: usize) -> io::Result<UringcacheBackend> {
        let cache = UringcacheBackend::cache_builder(budget).build()?;
        UringcacheBackend::with_cache(&cache, path)
    }

    /// The settings of the cache [`new`](Self::new) makes, to build one yourself (another
    /// backend, more settings) or to share: `budget` bytes of 4 KiB pages, and dirty limits
    /// suited to redb, [`DIRTY_BACKGROUND_RATIO`](Self::DIRTY_BACKGROUND_RATIO) and
    /// [`DIRTY_RATIO`](Self::DIRTY_RATIO).
    ///
    /// Why: a large redb transaction over a small redb cache writes the same pages to the
    /// backend many times (redb's write buffer is half its cache; a page it evicts is written
    /// to the backend and read back when changed again). With the cache's default background
    /// threshold (a tenth of the budget dirty), the writeback thread writes those pages to the
    /// device each time they are dirtied, and each rewrite then waits for the write in flight
    /// (stable pages): a bulk load of 200 000 records in one transaction wrote 78 000 pages for
    /// 28 000 changed, a removal of half of them 71 000 for 11 000. redb syncs at every durable
    /// commit anyway, so a higher background threshold loses nothing: the same two
    /// transactions then wrote 28 000 and 17 000 pages, in half the time.
    pub fn cache_builder(budget: usize) -> uringcache::CacheBuilder {
        let mut b = Cache::builder();
        b.memory_limit(budget)
            .page_size(4096)
            .dirty_background_ratio(UringcacheBackend::DIRTY_BACKGROUND_RATIO)
            .dirty_ratio(UringcacheBackend::DIRTY_RATIO);
        b
    }

    /// Opens (creating it if missing) the database file `path` in `cache`, and locks it.
    /// Several databases (and other files) on one cache share its budget: the pages of the
    /// busiest stay.
    ///
    /// If another handle has the file locked (another `UringcacheBackend`, or redb's file
    /// backend, in this process or another), fails with an [`io::Error`] of kind
    /// [`WouldBlock`](io::ErrorKind::WouldBlock) naming the path and the cause, whose source is
    /// the OS error (`EWOULDBLOCK`). The database is then left as it was.
    ///
    /// ```
    /// use uringcache_redb::UringcacheBackend;
    ///
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// let cache = uringcache::Cache::builder().memory_limit(32 << 20).build()?;
    /// let a = UringcacheBackend::with_cache(&cache, dir.path().join("a.redb"))?;
    /// let b = UringcacheBackend::with_cache(&cache, dir.path().join("b.redb"))?; // one budget
    ///
    /// let again = UringcacheBackend::with_cache(&cache, dir.path().join("a.redb"));
    /// let e = again.unwrap_err();
    /// assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
    /// assert!(e.to_string().contains("a.redb"), "{e}");
    /// assert_eq!(
    ///     uringcache_uring::error::raw_os_error_of(&e),
    ///     Some(libc::EWOULDBLOCK)
    /// );
    /// # drop((a, b));
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_cache(cache: &Cache, path: impl AsRef<Path>) -> io::Result<UringcacheBackend> {
        let path = path.as_ref();
        let file =
            cache.open_blocking(path, OpenOptions::new().read(true).write(true).create(true))?;
        // The file exists now (the cache made it, or it was there): lock it through a
        // descriptor of our own. `flock` locks belong to the open file description, so this
        // conflicts with every other open of the file, in this process too.
        let lock = fs::File::open(path).map_err(|e| {
            uringcache_uring::error::os(
                e,
                format!("{}: open for the database lock", path.display()),
            )
        })?;
        // SAFETY: flock on a descriptor we own, with constant flags.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            let msg = if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                format!(
                    "{}: the database is locked by another handle (an exclusive flock held by \
                     another redb Database, in this process or another); redb allows one \
                     writer at a time",
                    path.display()
                )
            } else {
                format!("{}: cannot lock the database (flock)", path.display())
            };
            return Err(uringcache_uring::error::os(e, msg));
        }
        Ok(UringcacheBackend {
            file,
            cache: cache.clone(),
            lock,
            closed: AtomicBool::new(false),
        })
    }

    /// The cache the database lives in (a handle to it: clone it to read
    /// [`stats`](Cache::stats) after the backend went to redb).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The cached file itself.
    pub fn file(&self) -> &BlockingFile {
        &self.file
    }
}

/// Whether a lock range is one of the two spellings of the whole storage redb uses.
fn is_whole_storage(start: Bound<u64>, end: Bound<u64>) -> bool {
    matches!(start, Bound::Unbounded | Bound::Included(0)) && end == Bound::Unbounded
}

/// The answer to a lock request: the whole storage is this backend's since its
/// construction; byte ranges are not supported (redb then falls back to the whole storage).
fn whole_storage_only(start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
    if is_whole_storage(start, end) {
        Ok(())
    } else {
        Err(BackendError::Unsupported)
    }
}

/// Every method is the [`BlockingFile`] method of the same name (see the crate docs'
/// invariants). The lock methods grant whole-storage locks, which the backend has held since
/// its construction, and refuse byte ranges with [`BackendError::Unsupported`], so redb takes
/// the whole storage (only [`redb::ConcurrencyMode::ExclusiveWriter`] works).
impl StorageBackend for UringcacheBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(out, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    /// A commit: the dirty pages go out together as plain writes (`sync_range` over the
    /// whole file: one submission, waited for), then one flush (`sync_data`, which finds
    /// nothing left to write). See the crate docs, "Commits".
    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_range(0, self.file.len())?;
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    /// Syncs the file (`sync_all`: data and length on the device), then releases the lock.
    /// Once: a second call is `Ok` and does nothing. The lock is released even if the sync
    /// fails (the error is returned; redb reports it from `Database::close`).
    fn close(&self) -> io::Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let synced = self.file.sync_all();
        // SAFETY: flock on a descriptor we own.
        let unlocked = if unsafe { libc::flock(self.lock.as_raw_fd(), libc::LOCK_UN) } == 0 {
            Ok(())
        } else {
            Err(uringcache_uring::error::os(
                io::Error::last_os_error(),
                format!(
                    "{}: unlock the database (flock)",
                    self.file.path().display()
                ),
            ))
        };
        synced.and(unlocked)
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        whole_storage_only(start, end).map(|()| true)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        whole_storage_only(start, end).map(|()| true)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        whole_storage_only(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        whole_storage_only(start, end)
    }

    /// The whole-storage lock stays held until `close`, which releases it.
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        whole_storage_only(start, end)
    }
}
