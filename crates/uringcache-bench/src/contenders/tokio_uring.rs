//! `tokio-uring` 0.5: `File::read_at` through `io_uring`, either through the kernel's page
//! cache (buffered) or with `O_DIRECT` (4 KiB-aligned buffers, no cache at all); writes are
//! `File::write_all_at`, one at a time per task, with `sync_all` at the end or `sync_data`
//! after each.
//!
//! tokio-uring is thread-per-core: each runtime (`tokio_uring::start`) runs on its own thread.
//! Reads in flight are tasks; with more tasks than cores, one runtime per core and the tasks
//! dealt out between them.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::{runtime_threads, Contender};
use crate::data::{check, fadvise, open_direct, stamp, write_buffer, AlignedBuf};
use crate::measure::{run_gated, strided, Deadline, Latencies, Outcome, Recorder, Sample};
use crate::workloads::{Access, Durability, Job, WriteJob};

/// tokio-uring reads, buffered or `O_DIRECT`.
pub struct TokioUring {
    /// `O_DIRECT` (no cache) rather than buffered.
    pub direct: bool,
}

/// One read of `buf.len()` bytes at `off`; the buffer comes back either way.
async fn read_one(
    file: &tokio_uring::fs::File,
    buf: AlignedBuf,
    off: u64,
) -> (io::Result<()>, AlignedBuf) {
    let size = buf.len();
    let (res, buf) = file.read_at(buf, off).await;
    let res = match res {
        Ok(n) if n == size => check(&buf, off),
        Ok(n) => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("short read: {n} of {size} bytes at {off}"),
        )),
        Err(e) => Err(e),
    };
    (res, buf)
}

/// One task's share of the offsets.
async fn task(
    file: Rc<tokio_uring::fs::File>,
    offsets: Arc<Vec<u64>>,
    g: usize,
    n: usize,
    size: usize,
    deadline: Option<Duration>,
    mut rec: Recorder,
) -> io::Result<u64> {
    let mut buf = AlignedBuf::new(size);
    let deadline = Deadline::after(deadline);
    let mut ops = 0;
    for (k, off) in strided(&offsets, g, n).enumerate() {
        let t = rec.start();
        let (res, b) = read_one(&file, buf, off).await;
        rec.stop(t);
        buf = b;
        res?;
        ops += 1;
        if deadline.expired_at(k) {
            break;
        }
    }
    Ok(ops)
}

/// One writer's share of a write job (its final `sync_all`, if any, is the runtime's).
async fn write_task(
    file: Rc<tokio_uring::fs::File>,
    job: Arc<WriteJob>,
    g: usize,
    n: usize,
    mut rec: Recorder,
) -> io::Result<u64> {
    let mut buf = AlignedBuf::new(job.size);
    buf.copy_from_slice(&write_buffer(job.size));
    let mut ops = 0;
    for off in strided(&job.offsets, g, n) {
        stamp(&mut buf, off, job.stamp);
        let t = rec.start();
        let (res, b) = file.write_all_at(buf, off).await;
        buf = b;
        res?;
        if job.sync == Durability::EachWrite {
            file.sync_data().await?;
        }
        rec.stop(t);
        ops += 1;
    }
    Ok(ops)
}

impl Contender for TokioUring {
    fn id(&self) -> &'static str {
        if self.direct {
            "tokio-uring-direct"
        } else {
            "tokio-uring"
        }
    }

    fn name(&self) -> &'static str {
        if self.direct {
            "tokio-uring (O_DIRECT)"
        } else {
            "tokio-uring (buffered)"
        }
    }

    fn kernel_cached(&self) -> bool {
        !self.direct
    }

    fn reads(&self, job: &Job) -> Outcome {
        let threads = runtime_threads(job.tasks);
        let n = job.tasks;
        let direct = self.direct;
        let lat = Latencies::new(job.latency);
        let (ops, m) = run_gated(threads, |t, gate| {
            tokio_uring::start(async {
                let std_file = if direct {
                    open_direct(&job.path)?
                } else {
                    let f = File::open(&job.path)?;
                    if job.access == Access::Random {
                        fadvise(&f, libc::POSIX_FADV_RANDOM)?;
                    }
                    f
                };
                let file = Rc::new(tokio_uring::fs::File::from_std(std_file));
                if !direct {
                    let mut buf = AlignedBuf::new(job.size);
                    for off in strided(&job.warmup, t, threads) {
                        let (res, b) = read_one(&file, buf, off).await;
                        buf = b;
                        res?;
                    }
                }
                gate.ready();
                let handles: Vec<_> = (t..n)
                    .step_by(threads)
                    .map(|g| {
                        tokio_uring::spawn(task(
                            file.clone(),
                            job.offsets.clone(),
                            g,
                            n,
                            job.size,
                            job.deadline,
                            lat.recorder(),
                        ))
                    })
                    .collect();
                let mut ops = 0;
                let mut first_err = None;
                for h in handles {
                    match h.await {
                        Ok(Ok(k)) => ops += k,
                        Ok(Err(e)) => {
                            first_err.get_or_insert(e);
                        }
                        Err(e) => {
                            first_err.get_or_insert(io::Error::other(e));
                        }
                    }
                }
                gate.done();
                if let Ok(f) = Rc::try_unwrap(file) {
                    f.close().await?;
                }
                match first_err {
                    Some(e) => Err(e),
                    None => Ok(ops),
                }
            })
        })?;
        let per = n.div_ceil(threads);
        let note = if direct {
            format!("no cache; {threads} runtime(s) x {per} task(s)")
        } else {
            format!("{threads} runtime(s) x {per} task(s)")
        };
        Ok(Sample::reads(ops.iter().sum(), job.size, m)
            .with_note(note)
            .with_latency(&lat))
    }

    fn writes(&self, job: &WriteJob) -> Outcome {
        let threads = runtime_threads(job.tasks);
        let n = job.tasks;
        let direct = self.direct;
        let job = Arc::new(job.clone());
        let lat = Latencies::new(job.latency);
        let (ops, m) = run_gated(threads, |t, gate| {
            tokio_uring::start(async {
                let mut opts = OpenOptions::new();
                opts.write(true).create(job.new_file);
                if direct {
                    opts.custom_flags(libc::O_DIRECT);
                }
                let file = Rc::new(tokio_uring::fs::File::from_std(opts.open(&job.path)?));
                gate.ready();
                let handles: Vec<_> = (t..n)
                    .step_by(threads)
                    .map(|g| {
                        tokio_uring::spawn(write_task(
                            file.clone(),
                            job.clone(),
                            g,
                            n,
                            lat.recorder(),
                        ))
                    })
                    .collect();
                let mut ops = 0;
                let mut first_err = None;
                for h in handles {
                    match h.await {
                        Ok(Ok(k)) => ops += k,
                        Ok(Err(e)) => {
                            first_err.get_or_insert(e);
                        }
                        Err(e) => {
                            first_err.get_or_insert(io::Error::other(e));
                        }
                    }
                }
                if first_err.is_none() && job.sync == Durability::AtEnd {
                    if let Err(e) = file.sync_all().await {
                        first_err = Some(e);
                    }
                }
                gate.done();
                if let Ok(f) = Rc::try_unwrap(file) {
                    f.close().await?;
                }
                match first_err {
                    Some(e) => Err(e),
                    None => Ok(ops),
                }
            })
        })?;
        let per = n.div_ceil(threads);
        let how = match job.sync {
            Durability::AtEnd => "write_all_at, then sync_all".to_string(),
            Durability::EachWrite => {
                format!("write_all_at + sync_data each, {threads} runtime(s) x {per} task(s)")
            }
        };
        let note = if direct {
            format!("no cache; {how}")
        } else {
            how
        };
        Ok(Sample::reads(ops.iter().sum(), job.size, m)
            .with_note(note)
            .with_latency(&lat))
    }
}
