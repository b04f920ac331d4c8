//! # uringcache: a user-space page cache over `io_uring` and `O_DIRECT`
//!
//! uringcache does for a Rust program what Linux `mm/filemap.c` does for buffered I/O — a
//! per-file index of cached pages, readahead, eviction, dirty pages, writeback, `fsync` and
//! error reporting — but inside the process, over files opened with `O_DIRECT` and driven
//! through `io_uring`. A cached read is a lookup and a copy: no system call. A miss reads a
//! whole readahead window straight into the cache's own page frames, many reads per system
//! call. Memory is one fixed budget of frames.
//!
//! ```
//! # fn main() -> std::io::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("data.db");
//! # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
//! let cache = uringcache::Cache::builder()
//!     .memory_limit(16 << 20) // the whole budget of page frames
//!     .page_size(4096)
//!     .build()?;
//! let file = cache
//!     .open(&path, uringcache::OpenOptions::new().read(true).write(true).create(true))
//!     .await?;
//! file.write_all_at(b"hello", 0).await?; // into the cache; written back later
//! let mut buf = [0u8; 5];
//! file.read_exact_at(&mut buf, 0).await?; // a hit: no system call
//! assert_eq!(&buf, b"hello");
//! file.sync_all().await?; // on the device, length cut to len(), errors reported
//! assert_eq!(std::fs::read(&path)?, b"hello");
//! cache.shutdown().await
//! # })
//! # }
//! ```
//!
//! ## The model
//!
//! | kernel | here |
//! | --- | --- |
//! | `struct address_space` | one mapping per open file (shared by every handle of it), with `len()` |
//! | `struct page` flags, `page_count` | frames with atomic state bits (Uptodate, Locked, Dirty, Writeback, Error, Readahead) and pin counts |
//! | `generic_file_buffered_read` | [`File::read_at`]: per page, hit → copy; miss → sync readahead; Readahead mark → async readahead; locked → wait; failed → retry once |
//! | `file_ra_state`, `posix_fadvise` | per-handle readahead state, windows ramping to 2 MiB; [`File::advise`] |
//! | active / inactive lists, shadow entries | S3-FIFO: a probationary queue, a main queue, a ghost set of evicted pages |
//! | page wait table | hashed waiter lists: one device read however many tasks miss a page |
//! | `generic_perform_write` | [`File::write_at`]: a whole page needs no read, a partial one is read first; writers wait for writeback of the page (stable pages) |
//! | `balance_dirty_pages`, flusher threads | writers wait above the dirty limit; a writeback thread per cache writes expired pages, or all above the background threshold, coalesced into large writes |
//! | `filemap_write_and_wait_range`, `vfs_fsync` | [`File::sync_range`], [`File::sync_data`], [`File::sync_all`]; concurrent syncs share flushes |
//! | `errseq_t` | every writeback error reaches the next sync of every handle open at the time, once |
//! | `read_cache_page` + `ext2_check_page`, `filemap_fault` | [`File::page`], [`File::page_mut`], [`OpenOptions::verify`] |
//! | `truncate_inode_pages_range`, `invalidate_mapping_pages` | [`File::set_len`], [`File::invalidate`] |
//! | `IOCB_NOWAIT`, `IOCB_DIRECT` | [`File::try_read_at`]; [`File::read_direct_at`], [`File::write_direct_at`] |
//!
//! ## Durability and errors
//!
//! After [`File::sync_data`] or [`File::sync_all`] returns `Ok`, every byte written before the
//! call is on the device and the file on disk is exactly [`File::len`] bytes long (`O_DIRECT`
//! writes whole blocks: the tail block is written whole and the file cut back). A write that
//! fails at the device keeps its pages dirty — never clean — and the next sync of every handle
//! open when it happened reports it, once; later syncs write the pages again. A failed flush is
//! never turned into success: every later sync of the file fails until it is reopened.
//! [`Cache::shutdown`] writes everything back and returns the first error. Dropping a cache
//! without it loses no synced data and does not block: once the last `Cache` and `File` handle
//! is gone, the writeback thread writes the unsynced dirty pages back at once (errors are only
//! logged, nobody is left to tell) and then frees the cache's memory and threads.
//!
//! ## After a failed sync
//!
//! An `Err` from [`File::sync_data`], [`File::sync_all`] or [`Cache::shutdown`] means some
//! bytes written before the call may not be on the device. Two things can have failed:
//!
//! * **Writing pages back** (a full disk, a transient `EIO`): the pages stay dirty in the
//!   cache, nothing is lost, and the next sync writes them again. Remove the cause and sync
//!   again; an `Ok` then means everything is on the device.
//! * **The flush** (`fdatasync` / `fsync`): the device may have lost writes it had already
//!   acknowledged, which the cache cannot redo (those pages are clean). So every later
//!   `sync_data` / `sync_all` of the file fails too, saying an earlier flush failed, until
//!   every handle of the file is closed and the file reopened. Then check the file's contents
//!   (your own checksums or log) and write again what is missing.
//!
//! The error does not always say which of the two it was, so a simple rule is: sync once more;
//! if that fails too, close the file's handles, reopen and check. The error's
//! [`kind()`](std::io::Error::kind) is that of the OS error (`StorageFull` for `ENOSPC`); the
//! errno itself is the error's `raw_os_error()` or, as the cache adds context (the file, the
//! step), that of its `source()`:
//!
//! ```
//! use std::error::Error as _;
//! use std::io;
//! use uringcache::OpenOptions;
//!
//! /// The errno under an error of the cache.
//! fn errno(e: &io::Error) -> Option<i32> {
//!     e.raw_os_error()
//!         .or_else(|| e.source()?.downcast_ref::<io::Error>()?.raw_os_error())
//! }
//!
//! async fn sync(file: &uringcache::File) -> io::Result<()> {
//!     let Err(e) = file.sync_data().await else {
//!         return Ok(());
//!     };
//!     eprintln!("sync failed ({:?}, errno {:?}): {e}; again", e.kind(), errno(&e));
//!     file.sync_data().await // failed writes are still dirty: written again here
//! }
//! # fn main() -> io::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! # let (path, missing) = (dir.path().join("f"), dir.path().join("missing"));
//! # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
//! # let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
//! let file = cache.open(&path, OpenOptions::new().write(true).create(true)).await?;
//! file.write_all_at(b"data", 0).await?;
//! sync(&file).await?;
//! let e = cache.open(&missing, OpenOptions::new().read(true)).await.unwrap_err();
//! assert_eq!((e.kind(), errno(&e)), (io::ErrorKind::NotFound, Some(2))); // ENOENT
//! # Ok(())
//! # })
//! # }
//! ```
//!
//! ## Other executors
//!
//! Futures are `Send` and run under any executor (tokio multi-thread or current-thread,
//! `tokio_uring::start`, others): the backend's own thread completes I/O and wakes wakers, so
//! the cache does not need the caller's runtime. On a multi-thread tokio runtime (with its I/O
//! driver), the `io_uring` backend does better: each worker thread gets a ring of its own,
//! reaped by a task on the runtime when the runtime's reactor says it is ready, so a miss's
//! completion wakes the worker directly
//! ([`CacheBuilder::reactor_rings`](crate::CacheBuilder::reactor_rings)). Handles are `Clone + Send + Sync`. Only
//! [`File::reader`] and [`File::writer`] (feature `tokio`, on by default) use tokio's traits.
//!
//! ## Blocking callers
//!
//! Synchronous code (a storage trait that is not async, a thread outside any runtime) uses a
//! [`BlockingFile`]: [`Cache::open_blocking`] or [`File::blocking`] give one, its methods
//! (`read_at`, `write_all_at`, `sync_data`, `page`, …, and [`std::os::unix::fs::FileExt`])
//! block the calling thread until done, as `std::fs` does, and need no runtime
//! ([`Cache::shutdown_blocking`] too). Inside an async task they block the worker: use the
//! async [`File`] there.
//!
//! ```
//! # fn main() -> std::io::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("data.db");
//! # std::fs::write(&path, b"hello")?;
//! let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
//! let file = cache.open_blocking(&path, uringcache::OpenOptions::new().read(true))?;
//! let mut buf = [0u8; 5];
//! file.read_exact_at(&mut buf, 0)?; // this thread waits; no runtime anywhere
//! assert_eq!(&buf, b"hello");
//! cache.shutdown_blocking()
//! # }
//! ```
//!
//! ## What it does not do
//!
//! The cache owns the files it opens. Another process writing the same file at the same time is
//! not made coherent, exactly as with a database's buffer pool: a page cached here does not see
//! a write made elsewhere.
//!
//! ## Closing and reopening
//!
//! Closing the last handle of a file does not drop its cached pages, as in the kernel: once
//! every page is clean (background writeback or a sync) the cache cuts the file on disk back to
//! [`File::len`] if the tail block overshot it, records the file's device, inode number, size,
//! modification and change times, and keeps it closed with its pages (at most 64 files, each
//! holding its descriptor; see [`Stats::idle_files`]). An open that finds such a file compares
//! the file on disk with that record: unchanged, its pages are hits again
//! ([`Stats::reopens`]); changed in any of those fields — another process wrote it, cut it, or
//! replaced it — the cached pages are dropped and the file is read afresh
//! ([`Stats::stale_reopens`]).
//!
//! What is not detected: a change made while a handle is open (no coherence, as above); a
//! change made after the last close but before the cache let go of the file (its own writeback
//! or cut still to come: the reopen takes the cache's file as it is); and, on a filesystem
//! whose timestamps are coarser than its writes, a change that keeps the size and lands in the
//! same timestamp tick as the cache's own last write (ext4, xfs and btrfs on Linux 6.13+ give
//! such a change a fine-grained time once the old one has been read, which the cache does).
//! Holding a [`PageMut`] while syncing, truncating or doing direct I/O on the same page from the
//! same task never finishes (the page stays locked): drop it first.

#![deny(missing_docs)]

mod backend;
mod builder;
mod cache;
mod error;
mod file;
mod inode;
mod latency;
mod options;
mod page_ref;
mod stats;
mod util;

pub use backend::{Backend, BACKEND_ENV};
pub use builder::{BackendLayer, CacheBuilder};
pub use cache::Cache;
#[cfg(feature = "tokio")]
pub use file::async_io as io;
pub use file::{BlockingFile, File};
#[cfg(feature = "tokio")]
pub use io::{Reader, Writer};
pub use options::{OpenOptions, VerifyFn};
pub use page_ref::{PageMut, PageRef};
pub use stats::{Latency, Stats};
pub use uringcache_core::readahead::Advice;

/// The I/O layer's trait and request types, for [`CacheBuilder::wrap_backend`] layers.
pub mod io_backend {
    pub use uringcache_core::backend::{
        Backend, BackendStats, Completion, FileId, Layer, Op, OpKind, Request,
    };
}
