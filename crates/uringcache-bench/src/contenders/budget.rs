//! "At the same budget": a kernel-cache contender run in a child process placed in a memory
//! cgroup whose limit is uringcache's budget ([`crate::cgroup`]), so that its page cache is
//! held to the memory uringcache may use. One wrapper, [`AtBudget`], around any contender;
//! its rows show the limit and the peak usage the cgroup measured, and where no cgroup can be
//! made they say why.
//!
//! Before and after every turn the file's kernel cache is dropped (`POSIX_FADV_DONTNEED`):
//! page cache already charged to another cgroup would not be moved into this one, and what
//! the turn leaves charged here would start the next turn warm.

use std::sync::Arc;

use super::Contender;
use crate::cgroup::MemCgroup;
use crate::data::drop_kernel_cache;
use crate::measure::{MemUse, Miss, Outcome};
use crate::workloads::{Job, MixedJob, ScanJob, Workload, WriteJob};

/// What the child process runs: one turn of the contender with that id.
#[derive(serde::Serialize, serde::Deserialize)]
pub enum ChildTurn {
    /// [`Contender::reads`].
    Reads(String, Job),
    /// [`Contender::scan`].
    Scan(String, ScanJob),
    /// [`Contender::writes`].
    Writes(String, WriteJob),
    /// [`Contender::mixed`].
    Mixed(String, MixedJob),
}

/// The child's side: runs the turn it was sent (see [`crate::cgroup::serve_child`]).
pub fn run_child_turn(turn: ChildTurn) -> Outcome {
    let find = |id: &str| {
        super::all()
            .into_iter()
            .find(|c| c.id() == id)
            .ok_or_else(|| Miss::Failed(format!("no contender {id:?} in the cgroup child")))
    };
    match turn {
        ChildTurn::Reads(id, job) => find(&id)?.reads(&job),
        ChildTurn::Scan(id, job) => find(&id)?.scan(&job),
        ChildTurn::Writes(id, job) => find(&id)?.writes(&job),
        ChildTurn::Mixed(id, job) => find(&id)?.mixed(&job),
    }
}

/// A kernel-cache contender held to the budget by a memory cgroup.
pub struct AtBudget {
    inner: Arc<dyn Contender>,
    id: &'static str,
    name: &'static str,
    /// The run's cgroup, or why there is none.
    cgroup: Arc<Result<MemCgroup, String>>,
}

impl AtBudget {
    /// `inner` at the budget of `cgroup` (shared by every such contender of the run).
    pub fn new(inner: Arc<dyn Contender>, cgroup: Arc<Result<MemCgroup, String>>) -> AtBudget {
        // A handful per run: leaking the names keeps the trait's `&'static str`.
        let id = Box::leak(format!("{}@budget", inner.id()).into_boxed_str());
        let name = Box::leak(format!("{} @ budget", inner.name()).into_boxed_str());
        AtBudget {
            inner,
            id,
            name,
            cgroup,
        }
    }

    /// Runs `turn` in the cgroup's child, `files` dropped from the kernel cache around it, and
    /// attaches the limit and peak.
    fn run(&self, budget: usize, files: &[&std::path::Path], turn: ChildTurn) -> Outcome {
        let cg = match &*self.cgroup {
            Ok(cg) => cg,
            Err(why) => return Err(Miss::Unsupported(format!("no memory cgroup: {why}"))),
        };
        if cg.limit() != budget as u64 {
            return Err(Miss::Failed(format!(
                "the cgroup's limit is {} bytes, the job's budget {budget}",
                cg.limit()
            )));
        }
        for f in files {
            drop_kernel_cache(f)?;
        }
        cg.reset_peak()?;
        let out: Outcome = cg.run_in_child(&[], &turn)?;
        let peak = cg.peak()?;
        for f in files {
            drop_kernel_cache(f)?;
        }
        out.map(|mut s| {
            s.memory = Some(MemUse {
                limit: cg.limit(),
                peak,
            });
            s
        })
    }
}

impl Contender for AtBudget {
    fn id(&self) -> &'static str {
        self.id
    }

    fn name(&self) -> &'static str {
        self.name
    }

    fn name_in(&self, w: Workload) -> &'static str {
        let _ = w;
        self.name
    }

    fn applies_to(&self, w: Workload) -> bool {
        w.budget_matters() && self.inner.applies_to(w)
    }

    fn reads(&self, job: &Job) -> Outcome {
        let turn = ChildTurn::Reads(self.inner.id().into(), job.clone());
        self.run(job.budget, &[&job.path], turn)
    }

    fn scan(&self, job: &ScanJob) -> Outcome {
        let turn = ChildTurn::Scan(self.inner.id().into(), job.clone());
        self.run(job.budget, &[&job.hot_path, &job.scan_path], turn)
    }

    fn writes(&self, job: &WriteJob) -> Outcome {
        let turn = ChildTurn::Writes(self.inner.id().into(), job.clone());
        self.run(job.budget, &[&job.path], turn)
    }

    fn mixed(&self, job: &MixedJob) -> Outcome {
        let turn = ChildTurn::Mixed(self.inner.id().into(), job.clone());
        self.run(job.budget, &[&job.path], turn)
    }
}
