//! uringcache, on each backend: a fresh [`Cache`] per turn (so every cold turn starts cold),
//! one handle per task on a tokio multi-thread runtime with 2 workers. Zero-copy page reads
//! pin each page with [`File::page`] and check it in place; writes are
//! [`File::write_all_at`] with [`File::sync_all`] at the end or [`File::sync_data`] after
//! each (concurrent syncs of one cache share flushes: group commit).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use uringcache::{Advice, Backend, Cache, File, OpenOptions, Stats};

use super::Contender;
use crate::data::{check, stamp, write_buffer, PhaseCounts, Step, BLOCK};
use crate::measure::{peak_rss, reset_peak_rss, ProcessUse};
use crate::measure::{
    strided, Deadline, Latencies, Meter, Miss, Outcome, Recorder, Sample, WriteCounts,
};
use crate::workloads::{Access, Durability, Job, MixedJob, ScanJob, Workload, WriteJob};

/// The id of uringcache on `io_uring` with every completion reaped by the driver thread (no
/// reactor rings): run only in `--full` or when asked for by `--contender`.
pub const SHARED_RING: &str = "uringcache-shared-ring";

/// uringcache on one backend.
pub struct UringCache {
    /// The backend every cache of this contender is built with.
    pub backend: Backend,
    /// Whether tasks get rings reaped by the runtime's reactor
    /// ([`CacheBuilder::reactor_rings`](uringcache::CacheBuilder::reactor_rings)); `false`:
    /// every completion through the driver thread (the `io_uring` backend before them).
    pub reactor_rings: bool,
}

impl UringCache {
    fn runtime() -> io::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    }

    /// A fresh cache of `budget` bytes, and the seconds its build took and whether the
    /// process's peak RSS was reset just before it (see [`process_use`]).
    fn cache(&self, budget: usize) -> io::Result<(Cache, (f64, bool))> {
        let reset = reset_peak_rss();
        let t = std::time::Instant::now();
        let cache = Cache::builder()
            .memory_limit(budget)
            .page_size(BLOCK)
            .backend(self.backend)
            .reactor_rings(if self.reactor_rings { 64 } else { 0 })
            .build()
            .map_err(|e| io::Error::new(e.kind(), format!("Cache::build ({budget} bytes): {e}")))?;
        Ok((cache, (t.elapsed().as_secs_f64(), reset)))
    }
}

/// The process figures of a uringcache row, taken after the turn: `build` is the build's
/// seconds and whether the peak RSS was reset before it.
fn process_use(build: (f64, bool)) -> Option<ProcessUse> {
    Some(ProcessUse {
        peak_rss: peak_rss(),
        rss_reset: build.1,
        build_secs: build.0,
    })
}

impl UringCache {
    /// The mixed trace on one task: `read_exact_at` (checked) or a stamped `write_all_at`,
    /// `sync_data` every `sync_every` updates and at the end.
    fn mixed_job(&self, job: &MixedJob) -> Outcome {
        let rt = Self::runtime()?;
        let (cache, build) = self.cache(job.budget)?;
        let f = rt.block_on(async {
            let f = cache
                .open(&job.path, OpenOptions::new().read(true).write(true))
                .await?;
            f.advise(Advice::Random);
            let mut buf = vec![0u8; BLOCK];
            for &off in job.warmup.iter() {
                f.read_exact_at(&mut buf, off).await?;
            }
            io::Result::Ok(f)
        })?;
        let before = cache.stats();
        let meter = Meter::start();
        let r = rt.block_on(async {
            let mut buf = vec![0u8; BLOCK];
            let mut wbuf = write_buffer(BLOCK);
            let mut since_sync = 0;
            for (&off, &update) in job.offsets.iter().zip(job.updates.iter()) {
                if update {
                    stamp(&mut wbuf, off, job.stamp);
                    f.write_all_at(&wbuf, off).await?;
                    since_sync += 1;
                    if since_sync == job.sync_every {
                        f.sync_data().await?;
                        since_sync = 0;
                    }
                } else {
                    f.read_exact_at(&mut buf, off).await?;
                    check(&buf, off)?;
                }
            }
            f.sync_data().await
        });
        let m = meter.stop();
        let after = cache.stats();
        rt.block_on(cache.shutdown())?;
        r?;
        let mut s = Sample::reads(job.offsets.len() as u64, BLOCK, m);
        s.hit_ratio = hit_ratio(&before, &after);
        s.writes = Some(write_counts(&before, &after));
        s.process = process_use(build);
        Ok(s.with_note(format!("backend {}", after.backend)))
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
    mut rec: Recorder,
) -> io::Result<u64> {
    let mut buf = vec![0u8; size];
    let deadline = Deadline::after(deadline);
    let mut ops = 0;
    for (k, off) in strided(&offsets, i, n).enumerate() {
        let t = rec.start();
        f.read_exact_at(&mut buf, off).await?;
        rec.stop(t);
        check(&buf, off)?;
        ops += 1;
        if deadline.expired_at(k) {
            break;
        }
    }
    Ok(ops)
}

/// One task's zero-copy reads: each page pinned with `File::page` and its tag checked in
/// place (no copy into a buffer); the pin is dropped before the next read.
async fn page_task(
    f: File,
    offsets: Arc<Vec<u64>>,
    i: usize,
    n: usize,
    deadline: Option<Duration>,
) -> io::Result<u64> {
    let shift = BLOCK.trailing_zeros();
    let deadline = Deadline::after(deadline);
    let mut ops = 0;
    for (k, off) in strided(&offsets, i, n).enumerate() {
        let page = f.page(off >> shift).await?;
        check(&page, off)?;
        drop(page);
        ops += 1;
        if deadline.expired_at(k) {
            break;
        }
    }
    Ok(ops)
}

/// One writer's share of a write job.
async fn write_task(
    f: File,
    job: Arc<WriteJob>,
    i: usize,
    n: usize,
    mut rec: Recorder,
) -> io::Result<u64> {
    let mut buf = write_buffer(job.size);
    let mut ops = 0;
    for off in strided(&job.offsets, i, n) {
        stamp(&mut buf, off, job.stamp);
        let t = rec.start();
        f.write_all_at(&buf, off).await?;
        if job.sync == Durability::EachWrite {
            f.sync_data().await?;
        }
        rec.stop(t);
        ops += 1;
    }
    if job.sync == Durability::AtEnd {
        f.sync_all().await?;
    }
    Ok(ops)
}

/// The write and sync counters between two snapshots.
fn write_counts(before: &Stats, after: &Stats) -> WriteCounts {
    WriteCounts {
        syncs: after.syncs.saturating_sub(before.syncs),
        flushes: after.flushes.saturating_sub(before.flushes),
        pages_written: after.pages_written.saturating_sub(before.pages_written),
        write_requests: after.write_requests.saturating_sub(before.write_requests),
        throttle_waits: after.throttle_waits.saturating_sub(before.throttle_waits),
    }
}

impl UringCache {
    /// Copying reads (`read_exact_at`) or, with `pages`, zero-copy ones (`page`).
    fn read_job(&self, job: &Job, pages: bool) -> Outcome {
        if pages && job.size != BLOCK {
            return Err(Miss::Failed(format!(
                "page reads of {} bytes: the cache's pages are {BLOCK}",
                job.size
            )));
        }
        let rt = Self::runtime()?;
        let (cache, build) = self.cache(job.budget)?;
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
            // The warm-up at the job's depth too (untimed), each task its share.
            let n = files.len();
            let warm: Vec<_> = files
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let (f, warmup, size) = (f.clone(), job.warmup.clone(), job.size);
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; size];
                        for off in strided(&warmup, i, n) {
                            f.read_exact_at(&mut buf, off).await?;
                        }
                        io::Result::Ok(())
                    })
                })
                .collect();
            for h in warm {
                h.await.map_err(io::Error::other)??;
            }
            io::Result::Ok(files)
        })?;
        let n = job.tasks;
        let lat = Latencies::new(job.latency);
        let before = cache.stats();
        let meter = Meter::start();
        let ops = rt.block_on(async {
            let handles: Vec<_> = files
                .into_iter()
                .enumerate()
                .map(|(i, f)| {
                    let offsets = job.offsets.clone();
                    if pages {
                        tokio::spawn(page_task(f, offsets, i, n, job.deadline))
                    } else {
                        tokio::spawn(task(
                            f,
                            offsets,
                            i,
                            n,
                            job.size,
                            job.deadline,
                            lat.recorder(),
                        ))
                    }
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
        let mut s = Sample::reads(ops, job.size, m).with_latency(&lat);
        s.hit_ratio = hit_ratio(&before, &after);
        s.process = process_use(build);
        if pages {
            notes.push("File::page: pinned, checked in place, no copy".into());
        }
        notes.push(format!("backend {}", after.backend));
        Ok(s.with_note(notes.join("; ")))
    }
}

impl Contender for UringCache {
    fn id(&self) -> &'static str {
        match self.backend {
            Backend::Threads => "uringcache-threads",
            _ if !self.reactor_rings => SHARED_RING,
            _ => "uringcache-uring",
        }
    }

    fn name(&self) -> &'static str {
        match self.backend {
            Backend::Threads => "uringcache (threads)",
            _ if !self.reactor_rings => "uringcache (io_uring, driver thread)",
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
        self.read_job(job, false)
    }

    fn page_reads(&self, job: &Job) -> Outcome {
        self.read_job(job, true)
    }

    fn mixed(&self, job: &MixedJob) -> Outcome {
        self.mixed_job(job)
    }

    fn writes(&self, job: &WriteJob) -> Outcome {
        let rt = Self::runtime()?;
        let (cache, build) = self.cache(job.budget)?;
        let files = rt.block_on(async {
            let mut opts = OpenOptions::new();
            opts.read(true).write(true).create(job.new_file);
            let mut files = Vec::new();
            for _ in 0..job.tasks {
                files.push(cache.open(&job.path, &opts).await?);
            }
            io::Result::Ok(files)
        })?;
        let job = Arc::new(job.clone());
        let n = job.tasks;
        let lat = Latencies::new(job.latency);
        let before = cache.stats();
        let meter = Meter::start();
        let ops = rt.block_on(async {
            let handles: Vec<_> = files
                .into_iter()
                .enumerate()
                .map(|(i, f)| tokio::spawn(write_task(f, job.clone(), i, n, lat.recorder())))
                .collect();
            let mut ops = 0;
            for h in handles {
                ops += h.await.map_err(io::Error::other)??;
            }
            io::Result::Ok(ops)
        });
        let m = meter.stop();
        let after = cache.stats();
        // The length on disk right after the syncs, before shutdown could mend anything.
        let on_disk = std::fs::metadata(&job.path).map(|md| md.len());
        let shutdown = rt.block_on(cache.shutdown());
        let ops = ops?;
        let on_disk = on_disk?;
        if on_disk != job.file_len {
            return Err(Miss::Failed(format!(
                "after {} the file on disk has {on_disk} bytes, not {}",
                match job.sync {
                    Durability::AtEnd => "sync_all",
                    Durability::EachWrite => "the last sync_data",
                },
                job.file_len
            )));
        }
        shutdown?;
        let mut s = Sample::reads(ops, job.size, m).with_latency(&lat);
        s.writes = Some(write_counts(&before, &after));
        s.process = process_use(build);
        Ok(s.with_note(format!("backend {}", after.backend)))
    }

    fn scan(&self, job: &ScanJob) -> Outcome {
        let rt = Self::runtime()?;
        let (cache, build) = self.cache(job.budget)?;
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
            process: process_use(build),
            note: Some("hot hits observed with try_read_at".into()),
            ..Sample::default()
        })
    }
}
