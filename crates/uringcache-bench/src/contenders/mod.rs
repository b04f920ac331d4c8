//! The contenders. Each is one small type implementing [`Contender`]: one function per kind
//! of task (copying reads, zero-copy page reads, the scan trace, writes with syncs), with a
//! default that says why the task means nothing for it. A new workload of an existing kind
//! needs no code here; a new kind is one more trait method with an "n/a" default, implemented
//! by the contenders it applies to. A new contender is one more file and one line in [`all`].

use std::sync::Arc;

use crate::cgroup::MemCgroup;
use crate::measure::{Miss, Outcome};
use crate::workloads::{Job, MixedJob, ScanJob, Workload, WriteJob};

mod blocking;
mod budget;
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
        !matches!(w, Workload::Scan | Workload::HitPage | Workload::Mixed)
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

    /// Runs the mixed trace: reads (checked) and stamped updates, one at a time, a data sync
    /// every `job.sync_every` updates and one at the end; the clock covers all of it.
    fn mixed(&self, _job: &MixedJob) -> Outcome {
        Err(Miss::NotApplicable(
            "no mixed read / update path here".into(),
        ))
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
            reactor_rings: true,
        }),
        Arc::new(uringcache::UringCache {
            backend: ::uringcache::Backend::IoUring,
            reactor_rings: false,
        }),
        Arc::new(uringcache::UringCache {
            backend: ::uringcache::Backend::Threads,
            reactor_rings: true,
        }),
        Arc::new(blocking::Blocking),
        Arc::new(lru::LruModel),
    ]
}

/// The id of the baseline the ratios are taken against where the budget does not matter.
pub const BASELINE: &str = "kernel-pread";

/// The id of the baseline where it does: the kernel's `pread` held to the budget.
pub const BUDGET_BASELINE: &str = "kernel-pread@budget";

/// The kernel-cache contenders that also run at the same budget.
const AT_BUDGET: [&str; 5] = [
    "kernel-pread",
    "kernel-dontcache",
    "mmap",
    "tokio-fs",
    "tokio-uring",
];

/// `all` with, after the kernel baseline, each kernel-cache contender again at the same
/// budget (held there by `cgroup`, or saying why it cannot be).
pub fn with_budget(
    all: Vec<Arc<dyn Contender>>,
    cgroup: Arc<Result<MemCgroup, String>>,
) -> Vec<Arc<dyn Contender>> {
    let budgeted: Vec<Arc<dyn Contender>> = all
        .iter()
        .filter(|c| AT_BUDGET.contains(&c.id()))
        .map(|c| Arc::new(budget::AtBudget::new(c.clone(), cgroup.clone())) as Arc<dyn Contender>)
        .collect();
    let mut out = Vec::new();
    for c in all {
        let first = c.id() == BASELINE;
        out.push(c);
        if first {
            out.extend(budgeted.iter().cloned());
        }
    }
    out
}

pub use budget::run_child_turn;
pub use uringcache::SHARED_RING;

/// Threads a thread-per-core runtime (tokio-uring, glommio) uses for `tasks` reads in flight:
/// one per core at most, the tasks dealt out between them (thread `t` runs tasks `t`,
/// `t + threads`, …).
pub fn runtime_threads(tasks: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    tasks.clamp(1, cores)
}
