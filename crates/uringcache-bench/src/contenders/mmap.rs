//! `mmap` (crate memmap2): reads copy out of a shared read-only mapping; the zero-copy variant
//! reads the page in place. One mapping, one thread per read in flight.

use std::fs::File;

use super::Contender;
use crate::data::{check, BLOCK};
use crate::measure::{run_gated, strided, Deadline, Latencies, Miss, Outcome, Sample};
use crate::workloads::{Access, Job, Workload};

/// Reads through a memory mapping of the file.
pub struct Mmap;

fn map_reads(job: &Job, copy: bool) -> Outcome {
    let f = File::open(&job.path)?;
    // SAFETY: the scratch file is not truncated or written while mapped.
    let map = unsafe { memmap2::Mmap::map(&f)? };
    if map.len() as u64 != job.file_len {
        return Err(Miss::Failed(format!(
            "mapped {} bytes of a {}-byte file",
            map.len(),
            job.file_len
        )));
    }
    if job.access == Access::Random {
        map.advise(memmap2::Advice::Random)?;
    }
    if job.warm {
        // Map every page (the kernel cache is warm already): a hit is then a plain load.
        let mut sum = 0u64;
        for i in (0..map.len()).step_by(BLOCK) {
            sum = sum.wrapping_add(map[i] as u64);
        }
        std::hint::black_box(sum);
    }
    let map = &map;
    let n = job.tasks;
    let read = |off: u64, buf: &mut [u8]| -> std::io::Result<()> {
        let start = off as usize;
        let page = &map[start..start + job.size];
        if copy {
            buf.copy_from_slice(page);
            check(buf, off)
        } else {
            check(std::hint::black_box(page), off)
        }
    };
    let lat = Latencies::new(job.latency);
    let (ops, m) = run_gated(n, |i, gate| {
        let mut buf = vec![0u8; job.size];
        let mut rec = lat.recorder();
        for off in strided(&job.warmup, i, n) {
            read(off, &mut buf)?;
        }
        gate.ready();
        let deadline = Deadline::after(job.deadline);
        let mut ops = 0u64;
        for (k, off) in strided(&job.offsets, i, n).enumerate() {
            let t = rec.start();
            read(off, &mut buf)?;
            rec.stop(t);
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

impl Contender for Mmap {
    fn id(&self) -> &'static str {
        "mmap"
    }

    fn name(&self) -> &'static str {
        "mmap (memmap2)"
    }

    fn applies_to(&self, w: Workload) -> bool {
        !matches!(w, Workload::Scan | Workload::Mixed) && !w.is_write()
    }

    fn reads(&self, job: &Job) -> Outcome {
        map_reads(job, true)
    }

    fn page_reads(&self, job: &Job) -> Outcome {
        map_reads(job, false).map(|s| s.with_note("in place, no copy"))
    }
}
