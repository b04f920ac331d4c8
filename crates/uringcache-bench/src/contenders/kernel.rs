//! The kernel's page cache: `pread` / `pwrite` (the baseline every ratio is taken against) and
//! `preadv2` / `pwritev2` with `RWF_DONTCACHE`, buffered I/O whose pages leave the cache once
//! read or written back.
//!
//! One thread per read or writer in flight, each with its own descriptor (as a thread pool
//! would have). Writes are made durable with `fsync` (`File::sync_all`) once at the end or
//! `fdatasync` (`File::sync_data`) after each write.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use super::Contender;
use crate::data::{check, fadvise, stamp, write_buffer, PhaseCounts, Step, BLOCK};
use crate::measure::{run_gated, strided, Deadline, Latencies, Meter, Miss, Outcome, Sample};
use crate::workloads::{Access, Durability, Job, MixedJob, ScanJob, Workload, WriteJob};

/// `std::fs::File::read_at` (`pread`) through the kernel's page cache.
pub struct Pread;

/// `preadv2` with `RWF_DONTCACHE` (Linux 6.14+): the kernel's uncached buffered reads.
pub struct DontCache;

/// `RWF_DONTCACHE` (`include/uapi/linux/fs.h`); defined here too so the harness builds
/// against a libc that lacks it.
const RWF_DONTCACHE: libc::c_int = 0x80;

#[derive(Clone, Copy)]
enum How {
    Pread,
    DontCache,
}

fn preadv2_dontcache(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: one iovec over a live, exclusively borrowed buffer.
    let r = unsafe { libc::preadv2(f.as_raw_fd(), &iov, 1, off as libc::off_t, RWF_DONTCACHE) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

fn pwritev2_dontcache(f: &File, buf: &[u8], off: u64) -> io::Result<usize> {
    let iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: one iovec over a live buffer the kernel only reads.
    let r = unsafe { libc::pwritev2(f.as_raw_fd(), &iov, 1, off as libc::off_t, RWF_DONTCACHE) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Writes all of `buf` at `off` (looping over short writes).
fn write_full(f: &File, buf: &[u8], off: u64, how: How) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let pos = off + done as u64;
        let n = match how {
            How::Pread => f.write_at(&buf[done..], pos)?,
            How::DontCache => pwritev2_dontcache(f, &buf[done..], pos)?,
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("a write at {pos} wrote nothing"),
            ));
        }
        done += n;
    }
    Ok(())
}

/// Opens the file of a write job for writing (creating it if the job writes a new file).
pub(super) fn open_for_write(job: &WriteJob) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(job.new_file)
        .open(&job.path)
}

/// `job.tasks` threads, each with its own descriptor, writing its share of the offsets and
/// syncing as the job says.
fn thread_writes(job: &WriteJob, how: How) -> Outcome {
    let n = job.tasks;
    let lat = Latencies::new(job.latency);
    let (ops, m) = run_gated(n, |i, gate| {
        let f = open_for_write(job)?;
        let mut buf = write_buffer(job.size);
        let mut rec = lat.recorder();
        gate.ready();
        let mut ops = 0u64;
        for off in strided(&job.offsets, i, n) {
            stamp(&mut buf, off, job.stamp);
            let t = rec.start();
            write_full(&f, &buf, off, how)?;
            if job.sync == Durability::EachWrite {
                f.sync_data()?;
            }
            rec.stop(t);
            ops += 1;
        }
        if job.sync == Durability::AtEnd {
            f.sync_all()?;
        }
        gate.done();
        Ok(ops)
    })?;
    Ok(Sample::reads(ops.iter().sum(), job.size, m).with_latency(&lat))
}

/// What a write job's rows say about how a kernel contender syncs.
fn sync_note(job: &WriteJob, write: &str) -> String {
    match job.sync {
        Durability::AtEnd => format!("{write}, then fsync"),
        Durability::EachWrite => format!("{write} + fdatasync each, {} thread(s)", job.tasks),
    }
}

/// Reads `buf.len()` bytes at `off` (looping over short reads); an error at end of file.
fn read_full(f: &File, buf: &mut [u8], off: u64, how: How) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let pos = off + done as u64;
        let n = match how {
            How::Pread => f.read_at(&mut buf[done..], pos)?,
            How::DontCache => preadv2_dontcache(f, &mut buf[done..], pos)?,
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("end of file at {pos}"),
            ));
        }
        done += n;
    }
    Ok(())
}

/// `job.tasks` threads, each with its own descriptor, reading its share of the offsets.
fn thread_reads(job: &Job, how: How, warm_up: bool) -> Outcome {
    let n = job.tasks;
    let lat = Latencies::new(job.latency);
    let (ops, m) = run_gated(n, |i, gate| {
        let f = File::open(&job.path)?;
        let mut rec = lat.recorder();
        if job.access == Access::Random {
            fadvise(&f, libc::POSIX_FADV_RANDOM)?;
        }
        let mut buf = vec![0u8; job.size];
        if warm_up {
            for off in strided(&job.warmup, i, n) {
                read_full(&f, &mut buf, off, how)?;
            }
        }
        gate.ready();
        let deadline = Deadline::after(job.deadline);
        let mut ops = 0u64;
        for (k, off) in strided(&job.offsets, i, n).enumerate() {
            let t = rec.start();
            read_full(&f, &mut buf, off, how)?;
            rec.stop(t);
            check(&buf, off)?;
            ops += 1;
            if deadline.expired_at(k) {
                break;
            }
        }
        gate.done();
        Ok(ops)
    })?;
    Ok(Sample::reads(ops.iter().sum(), job.size, m).with_latency(&lat))
}

impl Contender for Pread {
    fn id(&self) -> &'static str {
        "kernel-pread"
    }

    fn name(&self) -> &'static str {
        "kernel pread"
    }

    fn name_in(&self, w: Workload) -> &'static str {
        if w.is_write() {
            "kernel pwrite"
        } else {
            self.name()
        }
    }

    fn applies_to(&self, _: Workload) -> bool {
        true
    }

    fn reads(&self, job: &Job) -> Outcome {
        thread_reads(job, How::Pread, true)
    }

    /// The kernel has no zero-copy page API for `pread` users: its copying read is the
    /// baseline of the zero-copy rows.
    fn page_reads(&self, job: &Job) -> Outcome {
        self.reads(job)
            .map(|s| s.with_note("copies: the baseline for zero-copy APIs"))
    }

    fn writes(&self, job: &WriteJob) -> Outcome {
        thread_writes(job, How::Pread).map(|s| s.with_note(sync_note(job, "pwrite")))
    }

    fn scan(&self, job: &ScanJob) -> Outcome {
        scan_mincore(job)
    }

    fn mixed(&self, job: &MixedJob) -> Outcome {
        mixed_pread(job)
    }
}

/// The scan trace through `pread`, each hot read's hit observed first with `mincore` on a
/// mapping of the hot file (never touched through the mapping, so it faults nothing in):
/// resident is a hit.
fn scan_mincore(job: &ScanJob) -> Outcome {
    let hot = File::open(&job.hot_path)?;
    // A hot read that misses reads its page only, as uringcache's `Advice::Random` does.
    fadvise(&hot, libc::POSIX_FADV_RANDOM)?;
    let scan = File::open(&job.scan_path)?;
    // SAFETY: the scratch file is not truncated or written while mapped; the mapping is only
    // passed to mincore, never read.
    let map = unsafe { memmap2::Mmap::map(&hot)? };
    let resident = |off: u64| -> io::Result<bool> {
        let mut vec = [0u8; 1];
        // SAFETY: one page inside a live mapping; `vec` has room for its one entry.
        let r = unsafe {
            libc::mincore(
                map.as_ptr().add(off as usize) as *mut libc::c_void,
                BLOCK,
                vec.as_mut_ptr(),
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(vec[0] & 1 == 1)
    };
    let meter = Meter::start();
    let mut counts = PhaseCounts::default();
    let mut small = vec![0u8; BLOCK];
    let mut big = vec![0u8; job.scan_read];
    let (mut ops, mut bytes) = (0u64, 0u64);
    for step in job.trace.iter() {
        match *step {
            Step::Hot { block, phase } => {
                let off = block * BLOCK as u64;
                let hit = resident(off)?;
                read_full(&hot, &mut small, off, How::Pread)?;
                check(&small, off)?;
                counts.record(phase, hit);
                bytes += BLOCK as u64;
            }
            Step::Scan { offset } => {
                read_full(&scan, &mut big, offset, How::Pread)?;
                check(&big, offset)?;
                bytes += job.scan_read as u64;
            }
        }
        ops += 1;
    }
    let m = meter.stop();
    Ok(Sample {
        ops,
        bytes,
        secs: m.secs,
        cpu_secs: m.cpu_secs,
        phases: Some(counts.ratios()),
        note: Some("hot hits observed with mincore on a mapping of the hot file".into()),
        ..Sample::default()
    })
}

/// The mixed trace through `pread` / `pwrite` + `fdatasync`, one thread.
fn mixed_pread(job: &MixedJob) -> Outcome {
    let f = OpenOptions::new().read(true).write(true).open(&job.path)?;
    fadvise(&f, libc::POSIX_FADV_RANDOM)?;
    let (ops, m) = run_gated(1, |_, gate| {
        let mut buf = vec![0u8; BLOCK];
        for &off in job.warmup.iter() {
            read_full(&f, &mut buf, off, How::Pread)?;
        }
        let mut wbuf = write_buffer(BLOCK);
        gate.ready();
        let mut since_sync = 0;
        for (&off, &update) in job.offsets.iter().zip(job.updates.iter()) {
            if update {
                stamp(&mut wbuf, off, job.stamp);
                write_full(&f, &wbuf, off, How::Pread)?;
                since_sync += 1;
                if since_sync == job.sync_every {
                    f.sync_data()?;
                    since_sync = 0;
                }
            } else {
                read_full(&f, &mut buf, off, How::Pread)?;
                check(&buf, off)?;
            }
        }
        f.sync_data()?;
        gate.done();
        Ok(job.offsets.len() as u64)
    })?;
    Ok(Sample::reads(ops.iter().sum(), BLOCK, m).with_note(format!(
        "pread / pwrite, fdatasync every {} updates",
        job.sync_every
    )))
}

impl Contender for DontCache {
    fn id(&self) -> &'static str {
        "kernel-dontcache"
    }

    fn name(&self) -> &'static str {
        "kernel preadv2 RWF_DONTCACHE"
    }

    fn name_in(&self, w: Workload) -> &'static str {
        if w.is_write() {
            "kernel pwritev2 RWF_DONTCACHE"
        } else {
            self.name()
        }
    }

    fn reads(&self, job: &Job) -> Outcome {
        // Probe once: a kernel or filesystem without it answers EOPNOTSUPP (or EINVAL on
        // kernels that do not know the flag).
        let f = File::open(&job.path)?;
        let mut probe = vec![0u8; 4096];
        if let Err(e) = preadv2_dontcache(&f, &mut probe, 0) {
            return match e.raw_os_error() {
                Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => Err(Miss::Unsupported(format!(
                    "unsupported by this kernel: preadv2(RWF_DONTCACHE) fails with {e}"
                ))),
                _ => Err(e.into()),
            };
        }
        drop(f);
        thread_reads(job, How::DontCache, false)
            .map(|s| s.with_note("pages this read brings in leave the cache after it"))
    }

    fn writes(&self, job: &WriteJob) -> Outcome {
        // Probe with the job's first write (rewritten in the timed section): a kernel or
        // filesystem without the flag answers EOPNOTSUPP (or EINVAL).
        let Some(&first) = job.offsets.first() else {
            return Err(Miss::Failed("no writes to make".into()));
        };
        let f = open_for_write(job)?;
        let mut buf = write_buffer(job.size);
        stamp(&mut buf, first, job.stamp);
        if let Err(e) = pwritev2_dontcache(&f, &buf, first) {
            return match e.raw_os_error() {
                Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => Err(Miss::Unsupported(format!(
                    "unsupported by this kernel: pwritev2(RWF_DONTCACHE) fails with {e}"
                ))),
                _ => Err(e.into()),
            };
        }
        if job.new_file {
            // The file is new again: the timed writes extend it from nothing.
            f.set_len(0)?;
        }
        f.sync_all()?;
        drop(f);
        thread_writes(job, How::DontCache).map(|s| {
            s.with_note(sync_note(
                job,
                "pwritev2(RWF_DONTCACHE): pages leave the cache once written back",
            ))
        })
    }
}
