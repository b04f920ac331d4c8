//! `tokio::fs::File`: every read (and seek) is a closure on tokio's blocking thread pool doing
//! `read` through the kernel's page cache. One task per read in flight, each with its own
//! file (a tokio `File` has one cursor), on a multi-thread runtime with 2 workers. Writes are
//! `write_all` (seek first where the writes are not sequential) and `sync_all` at the end or
//! `sync_data` after each, the same way.

use std::io::{self, SeekFrom};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::Contender;
use crate::data::{check, fadvise, stamp, write_buffer};
use crate::measure::{strided, Deadline, Latencies, Meter, Outcome, Recorder, Sample};
use crate::workloads::{Access, Durability, Job, WriteJob};

/// `tokio::fs::File`: seek + read on the blocking pool.
pub struct TokioFs;

/// One task's reads: seek + read each (a sequential job just reads on from the cursor).
#[allow(clippy::too_many_arguments)] // one task's whole setup, passed once at spawn
async fn task(
    mut f: tokio::fs::File,
    offsets: Arc<Vec<u64>>,
    i: usize,
    n: usize,
    size: usize,
    seek: bool,
    deadline: Option<Duration>,
    mut rec: Recorder,
) -> io::Result<u64> {
    let mut buf = vec![0u8; size];
    let deadline = Deadline::after(deadline);
    let mut ops = 0;
    for (k, off) in strided(&offsets, i, n).enumerate() {
        let t = rec.start();
        if seek {
            f.seek(SeekFrom::Start(off)).await?;
        }
        f.read_exact(&mut buf).await?;
        rec.stop(t);
        check(&buf, off)?;
        ops += 1;
        if deadline.expired_at(k) {
            break;
        }
    }
    Ok(ops)
}

/// One writer's share of a write job.
async fn write_task(
    mut f: tokio::fs::File,
    job: Arc<WriteJob>,
    i: usize,
    n: usize,
    mut rec: Recorder,
) -> io::Result<u64> {
    let mut buf = write_buffer(job.size);
    let sequential = job.access == Access::Sequential && job.tasks == 1;
    let mut ops = 0;
    for off in strided(&job.offsets, i, n) {
        stamp(&mut buf, off, job.stamp);
        let t = rec.start();
        if !sequential {
            f.seek(SeekFrom::Start(off)).await?;
        }
        f.write_all(&buf).await?;
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

impl Contender for TokioFs {
    fn id(&self) -> &'static str {
        "tokio-fs"
    }

    fn name(&self) -> &'static str {
        "tokio::fs"
    }

    fn reads(&self, job: &Job) -> Outcome {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let seek = job.access == Access::Random;
        let mut files = rt.block_on(async {
            let mut files = Vec::new();
            for _ in 0..job.tasks {
                let f = tokio::fs::File::open(&job.path).await?;
                if seek {
                    fadvise(&f, libc::POSIX_FADV_RANDOM)?;
                }
                files.push(f);
            }
            io::Result::Ok(files)
        })?;
        rt.block_on(async {
            let mut buf = vec![0u8; job.size];
            for off in job.warmup.iter() {
                files[0].seek(SeekFrom::Start(*off)).await?;
                files[0].read_exact(&mut buf).await?;
            }
            if !seek {
                files[0].seek(SeekFrom::Start(0)).await?;
            }
            io::Result::Ok(())
        })?;
        let n = job.tasks;
        let lat = Latencies::new(job.latency);
        let meter = Meter::start();
        let ops = rt.block_on(async {
            let handles: Vec<_> = files
                .into_iter()
                .enumerate()
                .map(|(i, f)| {
                    tokio::spawn(task(
                        f,
                        job.offsets.clone(),
                        i,
                        n,
                        job.size,
                        seek,
                        job.deadline,
                        lat.recorder(),
                    ))
                })
                .collect();
            let mut ops = 0;
            for h in handles {
                ops += h.await.map_err(io::Error::other)??;
            }
            io::Result::Ok(ops)
        });
        let m = meter.stop();
        let ops = ops?;
        let note = if seek {
            "seek + read on the blocking pool"
        } else {
            "read on the blocking pool"
        };
        Ok(Sample::reads(ops, job.size, m)
            .with_note(note)
            .with_latency(&lat))
    }

    fn writes(&self, job: &WriteJob) -> Outcome {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let files = rt.block_on(async {
            let mut files = Vec::new();
            for _ in 0..job.tasks {
                let f = tokio::fs::OpenOptions::new()
                    .write(true)
                    .create(job.new_file)
                    .open(&job.path)
                    .await?;
                files.push(f);
            }
            io::Result::Ok(files)
        })?;
        let job = Arc::new(job.clone());
        let n = job.tasks;
        let lat = Latencies::new(job.latency);
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
        let ops = ops?;
        let note = match job.sync {
            Durability::AtEnd => "write_all on the blocking pool, then sync_all".to_string(),
            Durability::EachWrite => {
                format!("seek + write_all + sync_data each on the blocking pool, {n} task(s)")
            }
        };
        Ok(Sample::reads(ops, job.size, m)
            .with_note(note)
            .with_latency(&lat))
    }
}
