//! uringcache through its blocking API: [`BlockingFile`] (made by [`Cache::open_blocking`]),
//! I/O from plain std threads, no async runtime anywhere. The synchronous caller's view
//! (a database's storage trait, a `pread`-style file): each call submits its request and parks
//! the calling thread until the backend completes it. A fresh [`Cache`] every turn, one
//! thread per read in flight or writer, all sharing one handle (a `BlockingFile` is
//! `Clone + Sync`). It runs on the queue-depth-1 rows only (see
//! [`applies_to_depth`](Contender::applies_to_depth)): one thread waiting on one request at a
//! time is what the blocking API is for.

use std::io;

use uringcache::{Advice, Backend, BlockingFile, Cache, OpenOptions};

use super::Contender;
use crate::data::{check, stamp, write_buffer, BLOCK};
use crate::measure::{run_gated, strided, Deadline, Latencies, Miss, Outcome, Sample};
use crate::workloads::{Access, Durability, Job, Workload, WriteJob};

/// uringcache's [`BlockingFile`] from std threads (`Backend::Auto`: `io_uring` where the
/// kernel has it).
pub struct Blocking;

fn cache(budget: usize) -> io::Result<Cache> {
    Cache::builder()
        .memory_limit(budget)
        .page_size(BLOCK)
        .backend(Backend::Auto)
        .build()
}

fn open(cache: &Cache, opts: &OpenOptions, path: &std::path::Path) -> io::Result<BlockingFile> {
    cache.open_blocking(path, opts).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("Cache::open_blocking({}): {e}", path.display()),
        )
    })
}

impl Contender for Blocking {
    fn id(&self) -> &'static str {
        "uringcache-blocking"
    }

    fn name(&self) -> &'static str {
        "uringcache blocking"
    }

    fn kernel_cached(&self) -> bool {
        false
    }

    fn applies_to(&self, w: Workload) -> bool {
        matches!(w, Workload::RandCold | Workload::RandWriteSync)
    }

    fn applies_to_depth(&self, w: Workload, depth: usize) -> bool {
        self.applies_to(w) && depth == 1
    }

    fn reads(&self, job: &Job) -> Outcome {
        let cache = cache(job.budget)?;
        let file = open(&cache, OpenOptions::new().read(true), &job.path)?;
        if job.access == Access::Random {
            file.advise(Advice::Random);
        }
        let mut buf = vec![0u8; job.size];
        for &off in job.warmup.iter() {
            file.read_exact_at(&mut buf, off)?;
        }
        let n = job.tasks;
        let lat = Latencies::new(job.latency);
        let result = run_gated(n, |i, gate| {
            let file = file.clone();
            let mut buf = vec![0u8; job.size];
            let mut rec = lat.recorder();
            gate.ready();
            let deadline = Deadline::after(job.deadline);
            let mut ops = 0u64;
            for (k, off) in strided(&job.offsets, i, n).enumerate() {
                let t = rec.start();
                file.read_exact_at(&mut buf, off)?;
                rec.stop(t);
                check(&buf, off)?;
                ops += 1;
                if deadline.expired_at(k) {
                    break;
                }
            }
            gate.done();
            Ok(ops)
        });
        let backend = cache.stats().backend;
        cache.shutdown_blocking()?;
        let (ops, m) = result?;
        Ok(Sample::reads(ops.iter().sum(), job.size, m)
            .with_latency(&lat)
            .with_note(format!(
                "BlockingFile::read_exact_at from {n} std thread(s), no runtime; backend {backend}"
            )))
    }

    fn writes(&self, job: &WriteJob) -> Outcome {
        let cache = cache(job.budget)?;
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(job.new_file);
        let file = open(&cache, &opts, &job.path)?;
        let n = job.tasks;
        let lat = Latencies::new(job.latency);
        let result = run_gated(n, |i, gate| {
            let file = file.clone();
            let mut buf = write_buffer(job.size);
            let mut rec = lat.recorder();
            gate.ready();
            let mut ops = 0u64;
            for off in strided(&job.offsets, i, n) {
                stamp(&mut buf, off, job.stamp);
                let t = rec.start();
                file.write_all_at(&buf, off)?;
                if job.sync == Durability::EachWrite {
                    file.sync_data()?;
                }
                rec.stop(t);
                ops += 1;
            }
            if job.sync == Durability::AtEnd {
                file.sync_all()?;
            }
            gate.done();
            Ok(ops)
        });
        // The length on disk right after the syncs, before shutdown could mend anything.
        let on_disk = std::fs::metadata(&job.path).map(|md| md.len());
        let backend = cache.stats().backend;
        let shutdown = cache.shutdown_blocking();
        let (ops, m) = result?;
        let on_disk = on_disk?;
        if on_disk != job.file_len {
            return Err(Miss::Failed(format!(
                "after the syncs the file on disk has {on_disk} bytes, not {}",
                job.file_len
            )));
        }
        shutdown?;
        let how = match job.sync {
            Durability::AtEnd => "write_all_at, then sync_all",
            Durability::EachWrite => "write_all_at + sync_data each",
        };
        Ok(Sample::reads(ops.iter().sum(), job.size, m)
            .with_latency(&lat)
            .with_note(format!(
                "BlockingFile::{how}, {n} std thread(s), no runtime; backend {backend}"
            )))
    }
}
