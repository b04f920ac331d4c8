//! Statistics: sharded counters on the hot paths, summed into a [`Stats`] snapshot on demand.
//!
//! Every counter lives in [`SHARDS`] cache-line-padded copies; a thread always bumps the copy
//! chosen by its thread index, with a relaxed atomic add. A hit therefore pays one uncontended
//! atomic on a line no other core writes, and [`Cache::stats`](crate::Cache::stats) sums the
//! shards without stopping anybody. A snapshot is not atomic across counters.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

pub use crate::latency::Latency;

/// Number of counter shards (rounded up from a typical core count; more only costs memory).
const SHARDS: usize = 16;

/// Names of the hot-path counters, indices into a shard.
#[derive(Clone, Copy, Debug)]
#[repr(usize)]
pub(crate) enum Counter {
    Hits,
    Misses,
    Waits,
    PagesRead,
    ReadaheadPages,
    ReadaheadHits,
    Evictions,
    ReadErrors,
    AllocWaits,
    PagesWritten,
    WriteRequests,
    WriteErrors,
    Flushes,
    FlushErrors,
    Syncs,
    ThrottleWaits,
    Reopens,
    StaleReopens,
    DirtyPagesDropped,
    StuckWaits,
}

const COUNTERS: usize = Counter::StuckWaits as usize + 1;

#[derive(Default)]
struct Shard([AtomicU64; COUNTERS]);

/// The cache's sharded counters.
pub(crate) struct Counters {
    shards: Box<[CachePadded<Shard>]>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            shards: (0..SHARDS).map(|_| Default::default()).collect(),
        }
    }
}

fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

impl Counters {
    /// Adds `n` to `counter` on this thread's shard.
    #[inline]
    pub(crate) fn add(&self, counter: Counter, n: u64) {
        self.shards[shard_index()].0[counter as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// The sum over shards.
    pub(crate) fn get(&self, counter: Counter) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0[counter as usize].load(Ordering::Relaxed))
            .sum()
    }
}

/// A snapshot of the cache's counters ([`Cache::stats`](crate::Cache::stats)).
///
/// Counters (`u64`) only grow from the cache's start; gauges (`usize`: `cached_pages`,
/// `dirty_pages`, ...) are the state at the time of the snapshot. `Display` prints them all
/// in a few lines, for logs.
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
/// let mut buf = [0u8; 100];
/// file.read_exact_at(&mut buf, 0).await?; // a miss
/// file.read_exact_at(&mut buf, 0).await?; // a hit
/// file.write_all_at(b"x", 0).await?;
/// let stats = cache.stats();
/// assert_eq!((stats.hits, stats.misses), (1, 1));
/// assert_eq!(stats.hit_ratio(), 0.5);
/// assert_eq!(stats.dirty_pages, 1);
/// assert!(stats.pages_read >= 1); // page 0, and maybe pages read ahead
/// println!("{stats}");
/// # Ok::<(), std::io::Error>(())
/// # })
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Which backend moves the bytes (`"io_uring"` or `"threads"`).
    pub backend: &'static str,
    /// Whether the `io_uring` backend uses fixed buffers for the frame arena: it has a sparse
    /// fixed-buffer table, and registers each region of the arena (4 MiB, more for arenas
    /// above 64 GiB) the first time an I/O touches it, so that building costs nothing and
    /// pinned memory grows with use ([`fixed_buffer_bytes`](Self::fixed_buffer_bytes) says
    /// how much is registered). `false` on the thread pool and where the kernel refuses the
    /// table (before Linux 5.13). Where registering a region fails — typically by
    /// `RLIMIT_MEMLOCK` (`ulimit -l`) — a warning is logged, what was registered stays in use,
    /// and the rest of the frames are used unregistered, a little slower.
    pub fixed_buffers: bool,
    /// Bytes of the frame arena registered as `io_uring` fixed buffers so far (pinned in
    /// memory by the kernel): whole regions, those I/O has touched. 0 on the thread pool.
    pub fixed_buffer_bytes: u64,
    /// Rings of blocking threads the `io_uring` backend has now: a thread using
    /// [`BlockingFile`](crate::BlockingFile) gets a ring of its own on its first call, on which
    /// it submits and reaps its own I/O. 0 on the thread pool.
    pub thread_rings: u64,
    /// Requests completed on the thread that submitted them and waits for them, with no
    /// hand-off to another thread: the blocking API's misses and syncs (reaped from the
    /// thread's own ring on `io_uring`; run by the thread itself on the thread pool, for a
    /// lone request).
    pub caller_completions: u64,
    /// Rings the `io_uring` backend has now that a tokio runtime's reactor reaps: a worker
    /// thread of a multi-thread runtime gets one on its tasks' first miss, write-back or sync,
    /// and its completions wake it directly (see
    /// [`CacheBuilder::reactor_rings`](crate::CacheBuilder::reactor_rings)). 0 on the thread
    /// pool, on other executors and without the feature `tokio`.
    pub reactor_rings: u64,
    /// Requests completed on a reactor ring, reaped by the runtime that submitted them.
    pub reactor_completions: u64,
    /// Why [`Backend::Auto`](crate::Backend::Auto) fell back to the thread pool (the
    /// `io_uring` error, which says what to change); `None` when it did not fall back or
    /// another backend was asked for.
    pub backend_fallback: Option<String>,
    /// Page size in bytes.
    pub page_size: usize,
    /// Frames in the budget.
    pub frames: usize,
    /// Pages currently cached (frames in use).
    pub cached_pages: usize,
    /// Pages held now by page handles ([`PageRef`](crate::PageRef), [`PageMut`](crate::PageMut),
    /// and the [`Bytes`](bytes::Bytes) made from them): frames that cannot be evicted until the
    /// program drops its handles. Counted by a walk of the page table when the snapshot is
    /// taken (one load per frame), not kept as a counter on the hit path.
    pub pinned_pages: usize,
    /// Pages served from the cache without waiting for the device.
    pub hits: u64,
    /// Pages a reader needed that were not cached, or whose earlier read had failed (each
    /// started a synchronous read).
    pub misses: u64,
    /// Pages a reader found cached but still being read (by readahead or another reader) and
    /// waited for.
    pub waits: u64,
    /// Pages filled from the device (demanded and read ahead).
    pub pages_read: u64,
    /// Pages read ahead of demand.
    pub readahead_pages: u64,
    /// Read-ahead pages that a reader later used.
    pub readahead_hits: u64,
    /// Pages evicted to reuse their frames.
    pub evictions: u64,
    /// Reads of pages that failed at the device.
    pub read_errors: u64,
    /// Times an allocation had to wait because every frame was busy.
    pub alloc_waits: u64,
    /// Pages dirty now.
    pub dirty_pages: usize,
    /// Pages under writeback now.
    pub writeback_pages: usize,
    /// Pages written back to the device.
    pub pages_written: u64,
    /// Write requests those pages took (adjacent dirty pages share one request).
    pub write_requests: u64,
    /// Write requests that failed (their pages stayed dirty).
    pub write_errors: u64,
    /// Flushes (`fsync` / `fdatasync`) issued; concurrent syncs share them.
    pub flushes: u64,
    /// Flushes that failed.
    pub flush_errors: u64,
    /// `sync_*` calls.
    pub syncs: u64,
    /// Times a writer waited because too many pages were dirty.
    pub throttle_waits: u64,
    /// Files open through the cache (with at least one [`File`](crate::File) handle).
    pub open_files: usize,
    /// Files closed but kept with their clean pages (reopening one unchanged on disk finds
    /// its pages cached); at most 64, each holding its descriptor.
    pub idle_files: usize,
    /// Opens that found the file closed but still cached, unchanged on disk: its pages kept.
    pub reopens: u64,
    /// Opens that found the file closed but changed on disk since: its cached pages dropped.
    pub stale_reopens: u64,
    /// Dirty pages given up on: pages that kept failing to be written after the last handle of
    /// the cache was gone (nobody is left to report the error to); each is logged with its
    /// file, byte range and error.
    pub dirty_pages_dropped: u64,
    /// Waits reported as possibly stuck: a task waited more than 3 s for a page locked by a
    /// [`PageMut`](crate::PageMut) still held (logged once each through `tracing`). A task
    /// that syncs, truncates or writes a page while it holds that page's `PageMut` never
    /// finishes: drop the `PageMut` first.
    pub stuck_waits: u64,
    /// Device read latency, submission to completion.
    pub read_latency: Latency,
    /// Device write latency.
    pub write_latency: Latency,
    /// Flush (`fsync` / `fdatasync`) latency.
    pub flush_latency: Latency,
    /// Read requests completed by the device (one request may fill many pages).
    pub device_reads: u64,
    /// Bytes read from the device.
    pub device_read_bytes: u64,
    /// Write requests completed by the device.
    pub device_writes: u64,
    /// Bytes written to the device.
    pub device_write_bytes: u64,
    /// Device flushes completed.
    pub fsyncs: u64,
    /// System calls that submitted I/O.
    pub submit_calls: u64,
    /// I/O requests that failed.
    pub io_errors: u64,
}

impl Stats {
    /// Hits over hits plus misses, or 0 with no accesses.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let buffers = match (self.backend, self.fixed_buffers) {
            (_, true) => format!(
                " (fixed buffers, {:.1} MiB registered)",
                self.fixed_buffer_bytes as f64 / (1 << 20) as f64
            ),
            ("io_uring", false) => " (no fixed buffers)".to_string(),
            _ => String::new(),
        };
        writeln!(
            f,
            "backend {}{buffers}, {} frames of {} B, {} cached, {} pinned by handles",
            self.backend, self.frames, self.page_size, self.cached_pages, self.pinned_pages
        )?;
        if let Some(why) = &self.backend_fallback {
            writeln!(f, "fell back to the thread pool: {why}")?;
        }
        writeln!(
            f,
            "hits {} misses {} waits {} (hit ratio {:.1} %), evictions {}",
            self.hits,
            self.misses,
            self.waits,
            self.hit_ratio() * 100.0,
            self.evictions
        )?;
        writeln!(
            f,
            "pages read {} (readahead {}, used {}), read errors {}",
            self.pages_read, self.readahead_pages, self.readahead_hits, self.read_errors
        )?;
        writeln!(
            f,
            "dirty {} writeback {}, pages written {} in {} requests, write errors {}, throttled {}",
            self.dirty_pages,
            self.writeback_pages,
            self.pages_written,
            self.write_requests,
            self.write_errors,
            self.throttle_waits
        )?;
        writeln!(
            f,
            "syncs {} sharing {} flushes, flush errors {}; files open {} idle {} (reopened {}, stale {})",
            self.syncs,
            self.flushes,
            self.flush_errors,
            self.open_files,
            self.idle_files,
            self.reopens,
            self.stale_reopens
        )?;
        write!(
            f,
            "latency: read {}; write {}; flush {}\n\
             device: {} reads / {} B, {} writes / {} B, {} fsyncs, {} submit calls, {} errors",
            self.read_latency,
            self.write_latency,
            self.flush_latency,
            self.device_reads,
            self.device_read_bytes,
            self.device_writes,
            self.device_write_bytes,
            self.fsyncs,
            self.submit_calls,
            self.io_errors
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_across_threads() {
        let c = std::sync::Arc::new(Counters::default());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.add(Counter::Hits, 1);
                    }
                    c.add(Counter::Misses, 2);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(c.get(Counter::Hits), 8000);
        assert_eq!(c.get(Counter::Misses), 16);
        assert_eq!(c.get(Counter::Evictions), 0);
    }

    #[test]
    fn display_names_the_figures() {
        let s = Stats {
            backend: "io_uring",
            hits: 3,
            misses: 1,
            ..Default::default()
        };
        let text = s.to_string();
        assert!(text.contains("hit ratio 75.0 %"), "{text}");
        assert!(text.contains("io_uring"));
        assert!(text.contains("(no fixed buffers)"), "{text}");
        assert!(!text.contains("fell back"), "{text}");
        let s = Stats {
            backend: "io_uring",
            fixed_buffers: true,
            fixed_buffer_bytes: 12 << 20,
            ..Default::default()
        };
        assert!(
            s.to_string()
                .contains("backend io_uring (fixed buffers, 12.0 MiB registered)"),
            "{s}"
        );
        let s = Stats {
            backend: "threads",
            backend_fallback: Some("io_uring is refused".into()),
            ..Default::default()
        };
        let text = s.to_string();
        assert!(text.starts_with("backend threads, "), "{text}");
        assert!(
            text.contains("fell back to the thread pool: io_uring is refused"),
            "{text}"
        );
    }
}
