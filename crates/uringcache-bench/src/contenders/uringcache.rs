//! uringcache, on each backend: a fresh [`Cache`] per turn (so every cold turn starts cold),
//! one handle per task on a tokio multi-thread runtime with 2 workers.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use uringcache::{Advice, Backend, Cache, File, OpenOptions, Stats};

use super::Contender;
use crate::data::{check, PhaseCounts, Step, BLOCK};
use crate::measure::{strided, Deadline, Meter, Miss, Outcome, Sample};
use crate::workloads::{Access, Job, ScanJob, Workload};

/// uringcache on one backend.
pub struct UringCache {
    /// The backend every cache of this contender is built with.
    pub backend: Backend,
}

impl UringCache {
    fn runtime() -> io::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    }

    fn cache(&self, budget: usize) -> io::Result<Cache> {
        Cache::builder()
            .memory_limit(budget)
            .page_size(BLOCK)
            .backend(self.backend)
            .build()
    }
}

/// Hits over hits + misses between two snapshots.
fn hit_ratio(before: &Stats, after: &Stats) -> Option<f64> {
    let hits = after.hits.saturating_sub(before.hits);
    let misses = after.misses.saturating_sub(before.misses);
    (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64)
}

/// One task's reads.
async fn task(
    f: File,
    offsets: Arc<Vec<u64>>,
    i: usize,
    n: usize,
    size: usize,
    deadline: Option<Duration>,
) -> io::Result<u64> {
    let mut buf = vec![0u8; size];
    let deadline = Deadline::after(deadline);
    let mut ops = 0;
    for (k, off) in strided(&offsets, i, n).enumerate() {
        f.read_exact_at(&mut buf, off).await?;
        check(&buf, off)?;
        ops += 1;
        if deadline.expired_at(k) {
            break;
        }
    }
    Ok(ops)
}

impl Contender for UringCache {
    fn id(&self) -> &'static str {
        match self.backend {
            Backend::Threads => "uringcache-threads",
            _ => "uringcache-uring",
        }
    }

    fn name(&self) -> &'static str {
        match self.backend {
            Backend::Threads => "uringcache (threads)",
            _ => "uringcache (io_uring)",
        }
    }

    fn kernel_cached(&self) -> bool {
        false
    }

    fn applies_to(&self, _: Workload) -> bool {
        true
    }

    fn reads(&self, job: &Job) -> Outcome {
        let rt = Self::runtime()?;
        let cache = self.cache(job.budget)?;
        let mut notes = Vec::new();
        let files = rt.block_on(async {
            let mut files = Vec::new();
            for _ in 0..job.tasks {
                let f = cache.open(&job.path, OpenOptions::new().read(true)).await?;
                if job.access == Access::Random {
                    f.advise(Advice::Random);
                }
                files.push(f);
            }
            if job.warm {
                files[0].readahead(0, job.file_len).await?;
                let pages = job.file_len.div_ceil(BLOCK as u64) as usize;
                let cached = cache.stats().cached_pages;
                if cached < pages {
                    notes.push(format!(
                        "only {:.1} % of the file cached after warm-up",
                        cached as f64 * 100.0 / pages as f64
                    ));
                }
            }
            let mut buf = vec![0u8; job.size];
            for &off in job.warmup.iter() {
                files[0].read_exact_at(&mut buf, off).await?;
            }
            io::Result::Ok(files)
        })?;
        let n = job.tasks;
        let before = cache.stats();
        let meter = Meter::start();
        let ops = rt.block_on(async {
            let handles: Vec<_> = files
                .into_iter()
                .enumerate()
                .map(|(i, f)| {
                    tokio::spawn(task(f, job.offsets.clone(), i, n, job.size, job.deadline))
                })
                .collect();
            let mut ops = 0;
            for h in handles {
                ops += h.await.map_err(io::Error::other)??;
            }
            io::Result::Ok(ops)
        });
        let m = meter.stop();
        let after = cache.stats();
        rt.block_on(cache.shutdown())?;
        let ops = ops?;
        let mut s = Sample::reads(ops, job.size, m);
        s.hit_ratio = hit_ratio(&before, &after);
        notes.push(format!("backend {}", after.backend));
        Ok(s.with_note(notes.join("; ")))
    }

    fn page_reads(&self, _: &Job) -> Outcome {
        Err(Miss::NotYet(
            "not available yet: File::page() is not in the API yet".into(),
        ))
    }

    fn scan(&self, job: &ScanJob) -> Outcome {
        let rt = Self::runtime()?;
        let cache = self.cache(job.budget)?;
        let (hot, scan) = rt.block_on(async {
            let hot = cache
                .open(&job.hot_path, OpenOptions::new().read(true))
                .await?;
            // A hot read that misses reads its page only: no neighbours ride along.
            hot.advise(Advice::Random);
            let scan = cache
                .open(&job.scan_path, OpenOptions::new().read(true))
                .await?;
            io::Result::Ok((hot, scan))
        })?;
        let meter = Meter::start();
        let counts = rt.block_on(async {
            let mut counts = PhaseCounts::default();
            let mut small = vec![0u8; BLOCK];
            let mut big = vec![0u8; job.scan_read];
            let (mut ops, mut bytes) = (0u64, 0u64);
            for step in job.trace.iter() {
                match *step {
                    Step::Hot { block, phase } => {
                        let off = block * BLOCK as u64;
                        // try_read_at serves cached pages only: Ok is a hit, WouldBlock a
                        // miss (then read it, as a reader would).
                        let hit = match hot.try_read_at(&mut small, off) {
                            Ok(n) if n == BLOCK => true,
                            Ok(_) => {
                                hot.read_exact_at(&mut small, off).await?;
                                false
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                hot.read_exact_at(&mut small, off).await?;
                                false
                            }
                            Err(e) => return Err(e),
                        };
                        check(&small, off)?;
                        counts.record(phase, hit);
                        bytes += BLOCK as u64;
                    }
                    Step::Scan { offset } => {
                        scan.read_exact_at(&mut big, offset).await?;
                        check(&big, offset)?;
                        bytes += job.scan_read as u64;
                    }
                }
                ops += 1;
            }
            io::Result::Ok((counts, ops, bytes))
        });
        let m = meter.stop();
        rt.block_on(cache.shutdown())?;
        let (counts, ops, bytes) = counts?;
        Ok(Sample {
            ops,
            bytes,
            secs: m.secs,
            cpu_secs: m.cpu_secs,
            phases: Some(counts.ratios()),
            note: Some("hot hits observed with try_read_at".into()),
            ..Sample::default()
        })
    }
}
