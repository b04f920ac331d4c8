//! The cache's builder: every setting, checked before anything is mapped or started
//! ([`CacheBuilder::build`]), and the choice of the I/O layer ([`Backend`]).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use uringcache_core::backend::Backend as IoBackend;
use uringcache_core::frames::FrameArena;
use uringcache_core::page::NO_OWNER;
use uringcache_core::writeback::DirtyLimits;
use uringcache_uring::uring::{UringConfig, MAX_ENTRIES as MAX_URING_ENTRIES};

use crate::backend::{Backend, BackendRequest};
use crate::cache::{Cache, CacheParts};
use crate::error::invalid;
use crate::latency::Timed;

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
    max_request_size: usize,
    uring_entries: u32,
    sqpoll: bool,
    thread_rings: usize,
    reactor_rings: usize,
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
            .field("max_request_size", &self.max_request_size)
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
            max_request_size: 2 << 20,
            uring_entries: 256,
            sqpoll: false,
            thread_rings: UringConfig::default().thread_rings,
            reactor_rings: UringConfig::default().reactor_rings,
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

    /// Most rings of blocking threads (`io_uring` backend; default 64). A thread using
    /// [`BlockingFile`](crate::BlockingFile) gets a ring of its own on its first call (kept
    /// until the thread exits), on which it submits its I/O and waits for it, reaping its own
    /// completions: one `io_uring_enter` per miss or sync, and no other thread woken. Threads
    /// beyond this many, and every thread when it is 0, use the shared ring, whose driver
    /// thread reaps and wakes them. No effect on the thread pool.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let cache = uringcache::Cache::builder()
    ///     .memory_limit(16 << 20)
    ///     .thread_rings(8) // a pool of 8 blocking workers, say
    ///     .build()?;
    /// assert_eq!(cache.stats().thread_rings, 0); // made on first use
    /// # Ok(())
    /// # }
    /// ```
    pub fn thread_rings(&mut self, rings: usize) -> &mut Self {
        self.thread_rings = rings;
        self
    }

    /// Most rings reaped through tokio runtimes' reactors (`io_uring` backend, feature `tokio`;
    /// default 64). A worker thread of a multi-thread tokio runtime gets a ring of its own on
    /// its tasks' first I/O, registered with the runtime's reactor and reaped by a small task
    /// on the runtime: a completion wakes the worker directly, where the shared ring's driver
    /// thread would wake first and then wake it. One per (thread, runtime), kept until the
    /// thread exits. Threads beyond this many, and every thread when it is 0, use the shared
    /// ring; so do tasks on a current-thread runtime (which drives its reactor only inside
    /// `block_on`), on other executors, on a runtime without its I/O driver
    /// (`enable_io`), and every task in a build with `panic = "abort"`. No effect on the
    /// thread pool.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let cache = uringcache::Cache::builder()
    ///     .memory_limit(16 << 20)
    ///     .reactor_rings(0) // every completion through the driver thread
    ///     .build()?;
    /// assert_eq!(cache.stats().reactor_rings, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn reactor_rings(&mut self, rings: usize) -> &mut Self {
        self.reactor_rings = rings;
        self
    }

    /// The most bytes one device request of the cache carries (default 2 MiB): a run of
    /// consecutive pages read by readahead, written back, or moved by direct I/O is split at
    /// this size. Further capped to a quarter of the budget. At least one page. Independent of
    /// [`readahead_max`](Self::readahead_max), which sizes windows, not requests.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let cache = uringcache::Cache::builder()
    ///     .memory_limit(16 << 20)
    ///     .max_request_size(256 << 10) // 64 pages per request
    ///     .build()?;
    /// # drop(cache);
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_request_size(&mut self, bytes: usize) -> &mut Self {
        self.max_request_size = bytes;
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
        let (mut backend, backend_info) =
            crate::backend::start(&self.backend_request(), arena.clone())?;
        if let Some(layer) = &self.layer {
            backend = layer(backend);
        }
        let timed = Arc::new(Timed::new(backend));
        let backend: Arc<dyn IoBackend> = timed.clone();
        let ra_max_pages = ((self.readahead_max / ps).min(frames / 4)).max(1) as u64;
        let max_request_pages = (self.max_request_size / ps).min(frames / 4).max(1);
        Cache::start(CacheParts {
            arena,
            backend,
            timed,
            backend_info,
            frames,
            page_size: ps,
            ra_max_pages,
            max_request_pages,
            limits: DirtyLimits::new(frames, self.dirty_background_ratio, self.dirty_ratio),
            writeback_interval: self.writeback_interval,
            dirty_expire: self.dirty_expire,
        })
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
        if self.max_request_size < ps {
            return Err(invalid(format!(
                "max_request_size {} is invalid: it must be at least one page ({ps} bytes)",
                self.max_request_size
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

    /// What the backend is asked for (its choice and settings).
    fn backend_request(&self) -> BackendRequest {
        BackendRequest {
            choice: self.backend,
            uring: UringConfig {
                entries: self.uring_entries,
                sqpoll: self.sqpoll,
                max_transfer: self.max_transfer,
                thread_rings: self.thread_rings,
                reactor_rings: self.reactor_rings,
                ..UringConfig::default()
            },
            threads: self.threads,
        }
    }
}

impl Cache {
    /// A builder with the defaults: 256 MiB, 4 KiB pages, [`Backend::Auto`](crate::Backend::Auto).
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
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

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
        let cases: [(&str, Set); 15] = [
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
            ("max_request_size 4095", |b| {
                b.max_request_size(4095);
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
