//! The contenders. Each is one small type implementing [`Contender`]: one function per kind
//! of task (copying reads, zero-copy page reads, the scan trace, writes with syncs), with a
//! default that says why the task means nothing for it. A new workload of an existing kind
//! needs no code here; a new kind is one more trait method with an "n/a" default, implemented
//! by the contenders it applies to. A new contender is one more file and one line in [`all`].

use std::sync::Arc;

use crate::measure::{Miss, Outcome};
use crate::workloads::{Job, ScanJob, Workload, WriteJob};

mod blocking;
mod glommio;
mod kernel;
mod lru;
mod mmap;
mod tokio_fs;
mod tokio_uring;
mod uringcache;

/// One way of reading files.
pub trait Contender: Send + Sync {
    /// A short stable id (command line, JSON).
    fn id(&self) -> &'static str;

    /// The name in the table.
    fn name(&self) -> &'static str;

    /// The name in `w`'s rows (the kernel baseline reads `pread` but writes `pwrite`).
    fn name_in(&self, _w: Workload) -> &'static str {
        self.name()
    }

    /// Whether it reads through the kernel's page cache: the harness fills that cache before
    /// its turns of a warm case (and drops it before every turn of a cold case, for everyone).
    fn kernel_cached(&self) -> bool {
        true
    }

    /// Whether it has a row in `w`'s table (a "n/a" row still counts as a row).
    fn applies_to(&self, w: Workload) -> bool {
        !matches!(w, Workload::Scan | Workload::HitPage)
    }

    /// Whether it has a row in a case of `w` with `depth` reads (or writers) in flight; by
    /// default every case of a workload it [`applies_to`](Contender::applies_to).
    fn applies_to_depth(&self, w: Workload, _depth: usize) -> bool {
        self.applies_to(w)
    }

    /// Reads `job.offsets` into its own buffers, `job.tasks` at a time.
    fn reads(&self, job: &Job) -> Outcome;

    /// Reads `job.offsets` through a zero-copy page API, touching each page in place.
    fn page_reads(&self, _job: &Job) -> Outcome {
        Err(Miss::NotApplicable("no zero-copy page API".into()))
    }

    /// Makes `job.offsets` writes of `job.size` bytes, `job.tasks` at a time, each block
    /// stamped with [`crate::data::stamp`], made durable as `job.sync` says; the clock covers
    /// the writes and the syncs.
    fn writes(&self, _job: &WriteJob) -> Outcome {
        Err(Miss::NotApplicable("no write path".into()))
    }

    /// Replays the scan-resistance trace and reports hot-set hit ratios.
    fn scan(&self, _job: &ScanJob) -> Outcome {
        Err(Miss::NotApplicable(
            "no cache whose hit ratio can be observed".into(),
        ))
    }
}

/// Every contender, the kernel `pread` baseline first.
pub fn all() -> Vec<Arc<dyn Contender>> {
    vec![
        Arc::new(kernel::Pread),
        Arc::new(kernel::DontCache),
        Arc::new(mmap::Mmap),
        Arc::new(tokio_fs::TokioFs),
        Arc::new(tokio_uring::TokioUring { direct: false }),
        Arc::new(tokio_uring::TokioUring { direct: true }),
        Arc::new(glommio::Glommio),
        Arc::new(uringcache::UringCache {
            backend: ::uringcache::Backend::IoUring,
        }),
        Arc::new(uringcache::UringCache {
            backend: ::uringcache::Backend::Threads,
        }),
        Arc::new(blocking::Blocking),
        Arc::new(lru::LruModel),
    ]
}

/// The id of the baseline every ratio is taken against.
pub const BASELINE: &str = "kernel-pread";

/// Threads a thread-per-core runtime (tokio-uring, glommio) uses for `tasks` reads in flight:
/// one per core at most, the tasks dealt out between them (thread `t` runs tasks `t`,
/// `t + threads`, …).
pub fn runtime_threads(tasks: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    tasks.clamp(1, cores)
}
