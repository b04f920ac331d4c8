//! glommio 0.9: `DmaFile` (`O_DIRECT` through glommio's own `io_uring` rings; no cache).
//! Sequential jobs use `DmaStreamReader` (read-ahead of a few buffers); random jobs use
//! `DmaFile::read_at`. Thread-per-core like tokio-uring: one executor per core at most, the
//! tasks dealt out between them. Every buffer glommio returns is copied into the caller's
//! buffer, as the other contenders deliver their bytes.
//!
//! Writes go through `DmaFile::write_at` (`O_DIRECT`, one `DmaBuffer` per write) and
//! `DmaFile::fdatasync`. A sequential job keeps [`WRITE_BEHIND`] writes in flight and syncs
//! once at the end: what `DmaStreamWriter` does (its default write-behind is 4 buffers, and
//! its `close` is `fdatasync`), done by hand because its `AsyncWrite` trait (futures-io) is
//! not a dependency of this crate. A random job's tasks write and `fdatasync` one at a time.

use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use glommio::io::{DmaFile, DmaStreamReaderBuilder, OpenOptions};
use glommio::{LocalExecutorBuilder, Placement};

use super::{runtime_threads, Contender};
use crate::data::{check, stamp, write_buffer};
use crate::measure::{run_gated, strided, Deadline, Gate, Latencies, Outcome, Recorder, Sample};
use crate::workloads::{Access, Durability, Job, WriteJob};

/// glommio's `DmaFile` and `DmaStreamReader`.
pub struct Glommio;

/// Read-ahead buffers of the stream reader.
const STREAM_READ_AHEAD: usize = 4;
/// Writes in flight of a sequential write job (`DmaStreamWriter`'s default write-behind).
pub const WRITE_BEHIND: usize = 4;

fn gerr<T>(e: glommio::GlommioError<T>) -> io::Error {
    io::Error::from(e)
}

fn short(got: usize, want: usize, off: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("short read: {got} of {want} bytes at {off}"),
    )
}

/// One task's random reads.
async fn task(
    file: Rc<DmaFile>,
    offsets: Arc<Vec<u64>>,
    g: usize,
    n: usize,
    size: usize,
    deadline: Option<Duration>,
    mut rec: Recorder,
) -> io::Result<u64> {
    let mut buf = vec![0u8; size];
    let deadline = Deadline::after(deadline);
    let mut ops = 0;
    for (k, off) in strided(&offsets, g, n).enumerate() {
        let t = rec.start();
        let r = file.read_at(off, size).await.map_err(gerr)?;
        rec.stop(t);
        if r.len() < size {
            return Err(short(r.len(), size, off));
        }
        buf.copy_from_slice(&r[..size]);
        check(&buf, off)?;
        ops += 1;
        if deadline.expired_at(k) {
            break;
        }
    }
    Ok(ops)
}

/// The whole file through a stream reader, one buffer of `job.size` at a time.
async fn stream(job: &Job, gate: &mut Gate<'_>) -> io::Result<u64> {
    let file = DmaFile::open(&job.path).await.map_err(gerr)?;
    let mut buf = vec![0u8; job.size];
    gate.ready();
    let mut reader = DmaStreamReaderBuilder::new(file)
        .with_buffer_size(job.size)
        .with_read_ahead(STREAM_READ_AHEAD)
        .build();
    let mut ops = 0;
    for &off in job.offsets.iter() {
        let r = reader
            .get_buffer_aligned(job.size as u64)
            .await
            .map_err(gerr)?;
        if r.len() < job.size {
            return Err(short(r.len(), job.size, off));
        }
        buf.copy_from_slice(&r[..job.size]);
        check(&buf, off)?;
        ops += 1;
    }
    gate.done();
    reader.close().await.map_err(gerr)?;
    Ok(ops)
}

/// Executor `t` of `threads`: its tasks' random reads.
async fn random(
    job: &Job,
    t: usize,
    threads: usize,
    gate: &mut Gate<'_>,
    lat: &Latencies,
) -> io::Result<u64> {
    let file = Rc::new(DmaFile::open(&job.path).await.map_err(gerr)?);
    gate.ready();
    let n = job.tasks;
    let handles: Vec<_> = (t..n)
        .step_by(threads)
        .map(|g| {
            glommio::spawn_local(task(
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
            Ok(k) => ops += k,
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    gate.done();
    if let Ok(f) = Rc::try_unwrap(file) {
        f.close().await.map_err(gerr)?;
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(ops),
    }
}

/// Writes `pattern`, stamped for `off`, at `off` from a fresh DMA buffer.
async fn write_one(file: Rc<DmaFile>, pattern: Rc<Vec<u8>>, off: u64, st: u64) -> io::Result<()> {
    let mut dma = file.alloc_dma_buffer(pattern.len());
    let bytes = dma.as_bytes_mut();
    bytes.copy_from_slice(&pattern);
    stamp(bytes, off, st);
    let n = file.write_at(dma, off).await.map_err(gerr)?;
    if n != pattern.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write: {n} of {} bytes at {off}", pattern.len()),
        ));
    }
    Ok(())
}

/// Opens (or creates) the file of a write job with `O_DIRECT`.
async fn open_for_write(job: &WriteJob) -> io::Result<DmaFile> {
    let f = if job.new_file {
        DmaFile::create(&job.path).await
    } else {
        OpenOptions::new().write(true).dma_open(&job.path).await
    };
    f.map_err(gerr)
}

/// A sequential write job: [`WRITE_BEHIND`] writes in flight, then one `fdatasync`.
async fn stream_writes(job: &WriteJob, gate: &mut Gate<'_>) -> io::Result<u64> {
    let file = Rc::new(open_for_write(job).await?);
    let pattern = Rc::new(write_buffer(job.size));
    gate.ready();
    let mut in_flight = VecDeque::new();
    let mut ops = 0;
    for &off in job.offsets.iter() {
        if in_flight.len() == WRITE_BEHIND {
            let t: glommio::Task<io::Result<()>> = in_flight.pop_front().expect("a write");
            t.await?;
        }
        in_flight.push_back(glommio::spawn_local(write_one(
            file.clone(),
            pattern.clone(),
            off,
            job.stamp,
        )));
        ops += 1;
    }
    for t in in_flight {
        t.await?;
    }
    file.fdatasync().await.map_err(gerr)?;
    gate.done();
    if let Ok(f) = Rc::try_unwrap(file) {
        f.close().await.map_err(gerr)?;
    }
    Ok(ops)
}

/// Executor `t` of `threads`: its tasks' writes, each followed by `fdatasync` (or one
/// `fdatasync` at the end).
async fn sync_writes(
    job: &WriteJob,
    t: usize,
    threads: usize,
    gate: &mut Gate<'_>,
    lat: &Latencies,
) -> io::Result<u64> {
    let file = Rc::new(open_for_write(job).await?);
    let pattern = Rc::new(write_buffer(job.size));
    gate.ready();
    let n = job.tasks;
    let handles: Vec<_> = (t..n)
        .step_by(threads)
        .map(|g| {
            let (file, pattern, offsets) = (file.clone(), pattern.clone(), job.offsets.clone());
            let (st, each) = (job.stamp, job.sync == Durability::EachWrite);
            let mut rec = lat.recorder();
            glommio::spawn_local(async move {
                let mut ops = 0u64;
                for off in strided(&offsets, g, n) {
                    let t = rec.start();
                    write_one(file.clone(), pattern.clone(), off, st).await?;
                    if each {
                        file.fdatasync().await.map_err(gerr)?;
                    }
                    rec.stop(t);
                    ops += 1;
                }
                io::Result::Ok(ops)
            })
        })
        .collect();
    let mut ops = 0;
    let mut first_err = None;
    for h in handles {
        match h.await {
            Ok(k) => ops += k,
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if first_err.is_none() && job.sync == Durability::AtEnd {
        if let Err(e) = file.fdatasync().await {
            first_err = Some(gerr(e));
        }
    }
    gate.done();
    if let Ok(f) = Rc::try_unwrap(file) {
        f.close().await.map_err(gerr)?;
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(ops),
    }
}

impl Contender for Glommio {
    fn id(&self) -> &'static str {
        "glommio"
    }

    fn name(&self) -> &'static str {
        "glommio (DMA, O_DIRECT)"
    }

    fn kernel_cached(&self) -> bool {
        false
    }

    fn reads(&self, job: &Job) -> Outcome {
        let sequential = job.access == Access::Sequential && job.tasks == 1;
        let threads = if sequential {
            1
        } else {
            runtime_threads(job.tasks)
        };
        let lat = Latencies::new(job.latency);
        let (ops, m) = run_gated(threads, |t, gate| {
            let ex = LocalExecutorBuilder::new(Placement::Unbound)
                .name("bench-glommio")
                .make()
                .map_err(|e| io::Error::other(format!("glommio executor: {e}")))?;
            ex.run(async {
                if sequential {
                    stream(job, gate).await
                } else {
                    random(job, t, threads, gate, &lat).await
                }
            })
        })?;
        let note = if sequential {
            format!("no cache; DmaStreamReader, {STREAM_READ_AHEAD} buffers read ahead")
        } else {
            let per = job.tasks.div_ceil(threads);
            format!("no cache; DmaFile::read_at, {threads} executor(s) x {per} task(s)")
        };
        Ok(Sample::reads(ops.iter().sum(), job.size, m)
            .with_note(note)
            .with_latency(&lat))
    }

    fn writes(&self, job: &WriteJob) -> Outcome {
        let sequential =
            job.access == Access::Sequential && job.tasks == 1 && job.sync == Durability::AtEnd;
        let threads = if sequential {
            1
        } else {
            runtime_threads(job.tasks)
        };
        let lat = Latencies::new(job.latency);
        let (ops, m) = run_gated(threads, |t, gate| {
            let ex = LocalExecutorBuilder::new(Placement::Unbound)
                .name("bench-glommio")
                .make()
                .map_err(|e| io::Error::other(format!("glommio executor: {e}")))?;
            ex.run(async {
                if sequential {
                    stream_writes(job, gate).await
                } else {
                    sync_writes(job, t, threads, gate, &lat).await
                }
            })
        })?;
        let note = if sequential {
            format!(
                "no cache; DmaFile::write_at, {WRITE_BEHIND} in flight (DmaStreamWriter's write-behind), then fdatasync"
            )
        } else {
            let per = job.tasks.div_ceil(threads);
            format!(
                "no cache; DmaFile::write_at + fdatasync each, {threads} executor(s) x {per} task(s)"
            )
        };
        Ok(Sample::reads(ops.iter().sum(), job.size, m)
            .with_note(note)
            .with_latency(&lat))
    }
}
