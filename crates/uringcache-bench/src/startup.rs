//! `--startup`: what building a cache costs, for each budget on each backend.
//!
//! Every round of every budget and backend runs in a fresh child process (this binary again,
//! with [`CHILD_ENV`] saying what to measure), so that neither an earlier cache's freed memory
//! (which the allocator keeps and hands out again) nor anything else the harness did hides what
//! a build costs a process that starts. The child reads its resident set
//! (`/proc/self/statm`), times `Cache::build`, reads the resident set again, reads one 4 KiB
//! page of a scratch file through the cache (the first miss, timed: on `io_uring` it may
//! register the region of the arena it lands in), and times `shutdown` and the drop. The table
//! gives the medians with the min–max of the rounds, and the largest resident growth a build
//! left.

use std::io;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use uringcache::{Backend, Cache, OpenOptions};

use crate::data::BLOCK;
use crate::workloads::human;

/// Bytes resident in this process now (`/proc/self/statm`, second field, in pages).
pub fn resident_bytes() -> io::Result<u64> {
    let text = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("unreadable /proc/self/statm: {text:?}")))?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Ok(pages * page.max(1) as u64)
}

/// Set in a child process to `BACKEND BUDGET FILE`: measure one round and print it.
pub const CHILD_ENV: &str = "URINGCACHE_BENCH_STARTUP_CHILD";

/// One round's figures.
struct Round {
    build_ms: f64,
    grown: u64,
    first_read_ms: f64,
    drop_ms: f64,
    fixed_buffers: bool,
}

fn one_round(
    rt: &tokio::runtime::Runtime,
    backend: Backend,
    budget: u64,
    file: &Path,
) -> io::Result<Round> {
    let before = resident_bytes()?;
    let t = Instant::now();
    let cache = Cache::builder()
        .memory_limit(budget as usize)
        .page_size(BLOCK)
        .backend(backend)
        .build()?;
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    let grown = resident_bytes()?.saturating_sub(before);
    let first_read_ms = rt.block_on(async {
        let f = cache.open(file, OpenOptions::new().read(true)).await?;
        let mut buf = vec![0u8; BLOCK];
        let t = Instant::now();
        f.read_exact_at(&mut buf, 0).await?;
        io::Result::Ok(t.elapsed().as_secs_f64() * 1e3)
    })?;
    let fixed_buffers = cache.stats().fixed_buffers;
    let t = Instant::now();
    rt.block_on(cache.shutdown())?;
    drop(cache);
    let drop_ms = t.elapsed().as_secs_f64() * 1e3;
    Ok(Round {
        build_ms,
        grown,
        first_read_ms,
        drop_ms,
        fixed_buffers,
    })
}

fn median_and_range(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    let med = v[v.len() / 2];
    if v.len() == 1 {
        format!("{med:.1}")
    } else {
        format!("{med:.1} ({:.1}–{:.1})", v[0], v[v.len() - 1])
    }
}

/// The child's side: measures the round [`CHILD_ENV`] names and prints its figures on one
/// line.
pub fn child(spec: &str) -> io::Result<()> {
    let bad = || io::Error::other(format!("{CHILD_ENV}={spec:?} is not BACKEND BUDGET FILE"));
    let mut parts = spec.splitn(3, ' ');
    let backend = match parts.next() {
        Some("io_uring") => Backend::IoUring,
        Some("threads") => Backend::Threads,
        _ => return Err(bad()),
    };
    let budget: u64 = parts.next().and_then(|b| b.parse().ok()).ok_or_else(bad)?;
    let file = parts.next().ok_or_else(bad)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let r = one_round(&rt, backend, budget, Path::new(file))?;
    println!(
        "{} {} {} {} {}",
        r.build_ms, r.grown, r.first_read_ms, r.drop_ms, r.fixed_buffers
    );
    Ok(())
}

/// Runs one round in a child process.
fn round_in_child(backend: &str, budget: u64, file: &Path) -> io::Result<Round> {
    let out = Command::new(std::env::current_exe()?)
        .env(CHILD_ENV, format!("{backend} {budget} {}", file.display()))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let bad = || {
        io::Error::other(format!(
            "start-up child ({backend}, {budget} B) failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    };
    if !out.status.success() {
        return Err(bad());
    }
    let f: Vec<&str> = text.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).ok_or_else(bad);
    Ok(Round {
        build_ms: num(0)?,
        grown: num(1)? as u64,
        first_read_ms: num(2)?,
        drop_ms: num(3)?,
        fixed_buffers: f.get(4) == Some(&"true"),
    })
}

/// Runs the start-up measurement and returns its markdown report. `file` is a scratch file of
/// at least one page.
pub fn run(budgets: &[u64], rounds: usize, file: &Path) -> io::Result<String> {
    let mut text = String::from(
        "| backend | budget | build ms | RSS growth after build | first 4 KiB miss ms | shutdown + drop ms | fixed buffers |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for &budget in budgets {
        for name in ["io_uring", "threads"] {
            eprintln!("start-up: {name}, budget {} …", human(budget));
            let mut all = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                all.push(round_in_child(name, budget, file)?);
            }
            let grown = all.iter().map(|r| r.grown).max().unwrap_or(0);
            text.push_str(&format!(
                "| {name} | {} | {} | {:.1} MiB | {} | {} | {} |\n",
                human(budget),
                median_and_range(all.iter().map(|r| r.build_ms).collect()),
                grown as f64 / (1 << 20) as f64,
                median_and_range(all.iter().map(|r| r.first_read_ms).collect()),
                median_and_range(all.iter().map(|r| r.drop_ms).collect()),
                if all.iter().all(|r| r.fixed_buffers) {
                    "yes"
                } else {
                    "no"
                },
            ));
        }
    }
    Ok(text)
}
