//! # uringcache: a user-space page cache over `io_uring` and `O_DIRECT`
//!
//! uringcache does for a Rust program what Linux `mm/filemap.c` does for buffered I/O — a
//! per-file index of cached pages, readahead, eviction — but inside the process, over files
//! opened with `O_DIRECT` and driven through `io_uring`. A cached read is a lookup and a copy:
//! no system call. A miss reads a whole readahead window straight into the cache's own page
//! frames, many reads per system call. Memory is one fixed budget of frames.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let cache = uringcache::Cache::builder()
//!     .memory_limit(64 << 20)
//!     .page_size(4096)
//!     .build()?;
//! let file = cache
//!     .open("data.db", uringcache::OpenOptions::new().read(true))
//!     .await?;
//! let mut buf = vec![0u8; 4096];
//! let n = file.read_at(&mut buf, 0).await?; // a miss: reads a readahead window
//! let n = file.read_at(&mut buf, 4096).await?; // a hit: no system call
//! println!("{}", cache.stats());
//! # let _ = n; Ok(()) }
//! ```
//!
//! ## The model
//!
//! | kernel | here |
//! | --- | --- |
//! | `struct address_space` | one mapping per open file (shared by every handle of it) |
//! | `find_get_page`, page flags | pinned page frames with atomic state bits |
//! | `generic_file_buffered_read` | [`File::read_at`]: per page, hit → copy; miss → sync readahead; Readahead mark → async readahead; locked → wait |
//! | `file_ra_state` | per-handle readahead state; [`File::advise`] |
//! | active / inactive lists | S3-FIFO: a probationary queue, a main queue, remembered evictions |
//! | page wait table | hashed waiter lists: one device read however many tasks miss a page |
//!
//! Futures are `Send` and run under any executor: the backend's own thread completes I/O and
//! wakes wakers, so the cache does not need the caller's runtime.
//!
//! ## What it does not do
//!
//! The cache owns the files it opens. Another process writing the same file at the same time is
//! not made coherent, exactly as with a database's buffer pool: a page cached here does not see
//! a write made elsewhere.

#![deny(missing_docs)]

mod backend;
mod cache;
mod direct;
mod file;
mod inode;
#[cfg(feature = "tokio")]
pub mod io;
mod latency;
mod page_ref;
mod stats;
mod util;
mod write;
mod writeback;

pub use backend::BACKEND_ENV;
pub use cache::{Backend, BackendLayer, Cache, CacheBuilder};
pub use file::{File, OpenOptions, VerifyFn};
#[cfg(feature = "tokio")]
pub use io::{Reader, Writer};
pub use page_ref::{PageMut, PageRef};
pub use stats::{Latency, Stats};
pub use uringcache_core::readahead::Advice;
