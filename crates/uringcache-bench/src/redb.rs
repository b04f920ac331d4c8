//! The `redb` workload: a real database on the cache, against the same database on the
//! kernel's page cache held to the same memory.
//!
//! [redb](https://www.redb.org) runs the phases of its own benchmark (`benches/lmdb_benchmark.rs`
//! in redb's repository) once per side in each round, A B A B: over uringcache
//! ([`uringcache_redb::UringcacheBackend`], a cache of `budget` bytes) and over redb's own file
//! backend (`Database::create`, the kernel's page cache), each run on a fresh database file.
//!
//! * **Same memory.** The file backend's runs are made in a child process (this program again,
//!   started with [`CHILD_ARG`]) placed in a memory cgroup whose limit is uringcache's budget
//!   ([`crate::cgroup`]): the page cache its reads and writes bring in is charged there and
//!   reclaimed at the limit. The limit also covers the child's own memory (redb's cache, its
//!   heap and stacks), which on uringcache's side lies outside the budget: the kernel gets a
//!   few MiB less than uringcache, the output says so and shows the peak the cgroup measured,
//!   and uringcache's row shows the process's peak RSS. Where no cgroup can be made the
//!   workload says why and runs the file backend unbounded, in this process.
//! * **Same redb.** redb's own cache ([`redb::Builder::set_cache_size`]) is the same, and
//!   small, on both sides, so its reads reach the backend (the output says how much).
//! * **Two sizes**: records whose database fits the budget (about half of it), and records
//!   whose database is about eight times the budget (most of its reads then miss).
//! * **The phases** (keys: random `u64`s, values 150 bytes, as redb's benchmark): bulk load
//!   (one transaction), individual writes (one insert per durable commit: commit latency),
//!   batch writes (transactions of `batch` inserts), random reads cold (the database reopened
//!   with nothing cached below redb: a fresh cache for uringcache, the file's kernel cache
//!   dropped with `POSIX_FADV_DONTNEED` for the file backend) and warm (the same again), random
//!   reads from 4 threads, range reads (10 entries from a random key), and removals (half the
//!   records, one transaction). Every read is checked (a value carries its record number), so a
//!   wrong answer fails the run instead of giving a fast figure.
//! * **The figures**: each phase's operations per second, per run; the summary gives each
//!   side's median over the rounds, the ratio of the medians (uringcache / file: above 1.0
//!   uringcache is faster), each round's own ratio, and the target of issue 16 (≥ 1.0x on every
//!   phase, ≥ 1.2x on individual writes).
//!
//! Runs on request only (`--workload redb`): see [`budget`] and [`plan`] for the sizes of a
//! `--quick`, main and `--full` run.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use redb::{Database, ReadableDatabase, ReadableTableMetadata, TableDefinition};
use uringcache::Cache;
use uringcache_redb::UringcacheBackend;

use crate::args::Config;
use crate::cgroup::MemCgroup;
use crate::data::{self, Scratch};
use crate::measure;
use crate::report::{fmt_value, median};
use crate::workloads::{human, Unit};

/// The first argument of the cgroup child that runs the file backend's turns (see
/// [`run_child`]).
pub const CHILD_ARG: &str = "--redb-child";

/// The table every phase uses.
const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("bench");

/// Bytes of a value (redb's benchmark: 150).
const VALUE: usize = 150;

/// Threads of the multi-threaded read phase.
const READ_THREADS: u64 = 4;

/// The phases, in the order they run, and the target of each (uringcache / file).
pub const PHASES: [(&str, f64); 8] = [
    ("bulk load", 1.0),
    ("individual writes", 1.2),
    ("batch writes", 1.0),
    ("random reads (cold)", 1.0),
    ("random reads (warm)", 1.0),
    ("random reads (4 threads)", 1.0),
    ("range reads (10 each)", 1.0),
    ("removals", 1.0),
];

/// One size of the workload: what a run does.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Params {
    /// What the size is called ("fits", "8x budget").
    pub label: String,
    /// Records of the bulk load.
    pub records: u64,
    /// Durable commits of one insert each.
    pub individual: u64,
    /// Transactions of the batch phase.
    pub batches: u64,
    /// Inserts per batch transaction.
    pub batch: u64,
    /// Random reads of each single-threaded read phase (and in all of the 4-thread phase).
    pub reads: u64,
    /// Range reads.
    pub ranges: u64,
    /// uringcache's budget, bytes; the cgroup's limit on the file backend's side.
    pub budget: u64,
    /// redb's own cache, bytes, on both sides.
    pub redb_cache: usize,
}

impl Params {
    /// Records in the table after the write phases.
    fn total(&self) -> u64 {
        self.records + self.individual + self.batches * self.batch
    }
}

/// Records per MiB of database file, roughly (a 4 KiB leaf holds about 20 records of 158
/// bytes, random inserts leave leaves part full, and the copy-on-write commits leave free
/// pages in the file): the sizes below aim at a database of about half the budget ("fits")
/// and of eight times it ("8x budget"). Measured: 19 000 records made an 8.5 MiB file and
/// 193 000 a 133.2 MiB one (the main run's 16 MiB budget), 36 300 and 384 300 made 17 and
/// 265.6 MiB (`--full`, 32 MiB).
const RECORDS_PER_MIB: u64 = 1_500;

/// The budget of this run's size: smaller than the other workloads' (`--budget` does not
/// apply), so that the database of eight times the budget loads in seconds (its bulk load
/// is random inserts into a tree that no longer fits: most of them wait for a device read).
///
/// | run | budget | redb cache (both sides) |
/// | --- | --- | --- |
/// | `--quick` | 8 MiB | 1 MiB |
/// | main | 16 MiB | 1 MiB |
/// | `--full` | 32 MiB | 1 MiB |
pub fn budget(cfg: &Config) -> u64 {
    if cfg.quick {
        8 << 20
    } else if cfg.full {
        32 << 20
    } else {
        16 << 20
    }
}

/// The two sizes of this run (`--rounds` rounds each): a database of about half the budget
/// and one of about eight times it, two thirds of its records from the bulk load and the
/// rest from batch writes of 1000; fewer reads on the large one (they miss).
pub fn plan(cfg: &Config) -> Vec<Params> {
    let budget = budget(cfg);
    let mib = budget >> 20;
    let size = |label: &str, total: u64, reads: u64, ranges: u64| {
        let batch = 1_000;
        let batches = (total / 3 / batch).max(1);
        Params {
            label: label.to_string(),
            records: total - batches * batch,
            // Enough commits that a stall of a few ms (other processes on the CPUs) does not
            // decide the phase.
            individual: if cfg.quick { 200 } else { 1_000 },
            batches,
            batch,
            reads,
            ranges,
            budget,
            redb_cache: 1 << 20,
        }
    };
    let scale = |n: u64| if cfg.quick { n / 4 } else { n };
    vec![
        size(
            "fits",
            mib * 3 / 4 * RECORDS_PER_MIB,
            scale(100_000),
            scale(20_000),
        ),
        size(
            "8x budget",
            mib * 8 * RECORDS_PER_MIB,
            scale(10_000),
            scale(4_000),
        ),
    ]
}

/// Which redb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// Over [`UringcacheBackend`].
    Uringcache,
    /// Over redb's file backend, in the cgroup child.
    File,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Uringcache => "uringcache",
            Side::File => "file",
        }
    }
}

/// One phase of one run.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PhaseTime {
    /// Its name (one of [`PHASES`]).
    pub name: String,
    /// Operations it made.
    pub ops: u64,
    /// Seconds it took.
    pub secs: f64,
}

impl PhaseTime {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.secs.max(1e-9)
    }
}

/// What one run of every phase gives.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RunOut {
    /// Each phase, in order.
    pub phases: Vec<PhaseTime>,
    /// The database file's length at the end, bytes.
    pub file_len: u64,
    /// What else the run saw (uringcache's counters; the cgroup's peak).
    pub note: String,
}

/// The request the cgroup child gets: one run of the file backend.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ChildRun {
    /// The database file to create (removed first if it exists).
    pub path: PathBuf,
    /// The size.
    pub params: Params,
}

/// The child's side: one run of redb on its file backend (see [`crate::cgroup::serve_child`]).
pub fn run_child(req: ChildRun) -> Result<RunOut, String> {
    run_phases(Side::File, &req.params, &req.path).map_err(|e| e.to_string())
}

/// An `io::Error` naming what failed, for redb's errors.
fn db_err<E: std::fmt::Display>(what: impl std::fmt::Display) -> impl FnOnce(E) -> io::Error {
    move |e| io::Error::other(format!("redb: {what}: {e}"))
}

/// The key of record `i`: a fixed pseudo-random `u64` (xorshift of a multiple of `i`).
fn key(i: u64) -> u64 {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// The value of record `i`: its number, then zeros.
fn value(i: u64) -> [u8; VALUE] {
    let mut v = [0u8; VALUE];
    v[..8].copy_from_slice(&i.to_le_bytes());
    v
}

/// The record number a value carries.
fn record_of(v: &[u8]) -> u64 {
    u64::from_le_bytes(v[..8].try_into().expect("a value of 150 bytes"))
}

/// A xorshift generator: the read keys of a run, the same for both sides.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// An open database, and uringcache's cache under it if it is on that side.
struct Db {
    db: Database,
    cache: Option<Cache>,
}

impl Db {
    fn open(side: Side, p: &Params, path: &Path) -> io::Result<Db> {
        let mut b = Database::builder();
        b.set_cache_size(p.redb_cache);
        match side {
            Side::Uringcache => {
                let cache = UringcacheBackend::cache_builder(p.budget as usize).build()?;
                let backend = UringcacheBackend::with_cache(&cache, path)?;
                let db = b.create_with_backend(backend).map_err(db_err(format_args!(
                    "open {} over uringcache",
                    path.display()
                )))?;
                Ok(Db {
                    db,
                    cache: Some(cache),
                })
            }
            Side::File => Ok(Db {
                db: b
                    .create(path)
                    .map_err(db_err(format_args!("open {}", path.display())))?,
                cache: None,
            }),
        }
    }

    /// Closes the database (and shuts its cache down: everything on the device).
    fn close(self) -> io::Result<()> {
        drop(self.db);
        match self.cache {
            Some(cache) => cache.shutdown_blocking(),
            None => Ok(()),
        }
    }
}

/// Inserts records `from..to`, one transaction.
fn insert(db: &Database, from: u64, to: u64) -> io::Result<()> {
    let tx = db.begin_write().map_err(db_err("begin_write"))?;
    {
        let mut t = tx.open_table(TABLE).map_err(db_err("open_table"))?;
        for i in from..to {
            t.insert(key(i), value(i).as_slice())
                .map_err(db_err(format_args!("insert record {i}")))?;
        }
    }
    tx.commit().map_err(db_err("commit"))
}

/// `n` random reads of records `0..total`, each checked; one read transaction.
fn reads(db: &Database, seed: u64, n: u64, total: u64) -> io::Result<()> {
    let rx = db.begin_read().map_err(db_err("begin_read"))?;
    let t = rx.open_table(TABLE).map_err(db_err("open_table"))?;
    let mut rng = Rng::new(seed);
    for _ in 0..n {
        let i = rng.next() % total;
        let got = t
            .get(key(i))
            .map_err(db_err(format_args!("get record {i}")))?;
        let got = got.map(|v| record_of(v.value()));
        if got != Some(i) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("redb: record {i} read back as {got:?}"),
            ));
        }
    }
    Ok(())
}

/// One run of every phase on a fresh database at `path` (removed first, and at the end).
fn run_phases(side: Side, p: &Params, path: &Path) -> io::Result<RunOut> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("remove {}: {e}", path.display()),
            ))
        }
    }
    let mut phases = Vec::new();
    let mut phase = |name: &str, ops: u64, start: Instant| {
        phases.push(PhaseTime {
            name: name.to_string(),
            ops,
            secs: start.elapsed().as_secs_f64(),
        });
    };
    let d = Db::open(side, p, path)?;

    let start = Instant::now();
    insert(&d.db, 0, p.records)?;
    phase(PHASES[0].0, p.records, start);

    let start = Instant::now();
    for i in p.records..p.records + p.individual {
        insert(&d.db, i, i + 1)?;
    }
    phase(PHASES[1].0, p.individual, start);

    let start = Instant::now();
    let base = p.records + p.individual;
    for b in 0..p.batches {
        insert(&d.db, base + b * p.batch, base + (b + 1) * p.batch)?;
    }
    phase(PHASES[2].0, p.batches * p.batch, start);
    let total = p.total();

    // Cold: reopened with nothing cached below redb.
    d.close()?;
    if side == Side::File {
        data::drop_kernel_cache(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("drop the kernel cache of {}: {e}", path.display()),
            )
        })?;
    }
    let d = Db::open(side, p, path)?;
    let start = Instant::now();
    reads(&d.db, 1, p.reads, total)?;
    phase(PHASES[3].0, p.reads, start);
    let start = Instant::now();
    reads(&d.db, 2, p.reads, total)?;
    phase(PHASES[4].0, p.reads, start);

    let start = Instant::now();
    let per_thread = p.reads / READ_THREADS;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..READ_THREADS)
            .map(|t| {
                let db = &d.db;
                s.spawn(move || reads(db, 10 + t, per_thread, total))
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .map_err(|p| io::Error::other(measure::panic_message(&*p)))?
        })
    })?;
    phase(PHASES[5].0, per_thread * READ_THREADS, start);

    let start = Instant::now();
    {
        let rx = d.db.begin_read().map_err(db_err("begin_read"))?;
        let t = rx.open_table(TABLE).map_err(db_err("open_table"))?;
        let mut rng = Rng::new(7);
        for _ in 0..p.ranges {
            let from = rng.next();
            let mut last = None;
            for kv in t.range(from..).map_err(db_err("range"))?.take(10) {
                let (k, v) = kv.map_err(db_err("range entry"))?;
                let (k, i) = (k.value(), record_of(v.value()));
                // In order, from the start, and each value the one of its key.
                if k < from || last.is_some_and(|l| l >= k) || key(i) != k {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("redb: range from {from}: key {k} out of order or with record {i}"),
                    ));
                }
                last = Some(k);
            }
        }
    }
    phase(PHASES[6].0, p.ranges, start);

    let start = Instant::now();
    let removed = {
        let tx = d.db.begin_write().map_err(db_err("begin_write"))?;
        let mut n = 0;
        {
            let mut t = tx.open_table(TABLE).map_err(db_err("open_table"))?;
            for i in (0..total).step_by(2) {
                if t.remove(key(i))
                    .map_err(db_err(format_args!("remove record {i}")))?
                    .is_none()
                {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("redb: record {i} was missing at its removal"),
                    ));
                }
                n += 1;
            }
        }
        tx.commit().map_err(db_err("commit"))?;
        n
    };
    phase(PHASES[7].0, removed, start);

    // What is left is the other half (untimed).
    let left = {
        let rx = d.db.begin_read().map_err(db_err("begin_read"))?;
        let t = rx.open_table(TABLE).map_err(db_err("open_table"))?;
        t.len().map_err(db_err("len"))?
    };
    if left != total - removed {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("redb: {left} records left after removing {removed} of {total}"),
        ));
    }
    let note = match &d.cache {
        Some(c) => {
            let s = c.stats();
            format!(
                "{} backend; read-phase cache: hits {}, misses {}, evictions {}, syncs {}, flushes {}, pages written {} in {} requests",
                s.backend, s.hits, s.misses, s.evictions, s.syncs, s.flushes, s.pages_written, s.write_requests
            )
        }
        None => String::new(),
    };
    d.close()?;
    let file_len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let _ = fs::remove_file(path);
    Ok(RunOut {
        phases,
        file_len,
        note,
    })
}

/// The workload's results: its section of the report (markdown) and of the JSON.
pub struct Report {
    /// The summary tables, one per size, with a line on the setup.
    pub markdown: String,
    /// Every run's phases.
    pub json: serde_json::Value,
}

/// Runs the workload: every size, `rounds` rounds, uringcache then the file backend in each.
/// `log` gets a line per run (progress, on stderr).
pub fn run(cfg: &Config, scratch: &mut Scratch, log: &dyn Fn(&str)) -> io::Result<Report> {
    let (rounds, sizes) = (cfg.rounds, plan(cfg));
    let budget = budget(cfg);
    let cgroup = MemCgroup::create("redb", budget);
    let mut md = String::from("\n## redb on the cache\n\n");
    md.push_str(&format!(
        "redb 4 over uringcache (`UringcacheBackend`, io_uring or the thread pool as `Backend::Auto` chose, a {} budget) against redb on its file backend (the kernel's page cache) {}; redb's own cache {} on both sides; {rounds} round(s), A B A B, a fresh database each run; keys random `u64`, values {VALUE} B.\n\n",
        human(budget),
        match &cgroup {
            Ok(cg) => format!(
                "in a child process in memory cgroup {} ({:?}, limit {}, the same as the budget: it also holds the child's own memory, redb's cache included, so the kernel gets a little less than uringcache)",
                cg.path().display(),
                cg.version(),
                human(cg.limit())
            ),
            Err(e) => format!("NOT held to the budget (no memory cgroup: {e}), in this process"),
        },
        human(sizes.first().map_or(0, |s| s.redb_cache as u64)),
    ));
    let mut json = Vec::new();
    for p in &sizes {
        let mut runs: Vec<(Side, RunOut)> = Vec::new();
        // A failed run (an error, a wrong answer, a child that died) ends its size, not the
        // report: the section says what failed and the next size runs.
        let mut failed = None;
        'rounds: for round in 0..rounds {
            for side in [Side::Uringcache, Side::File] {
                let path = scratch.reserve(&format!(
                    "redb-{}-{}-{round}.redb",
                    side.name(),
                    if p.label == "fits" { "fits" } else { "large" }
                ));
                // The last run's blocks freed now, not in this run's timed phases.
                data::sync_filesystem(&scratch.dir).map_err(|e| {
                    io::Error::new(e.kind(), format!("syncfs {}: {e}", scratch.dir.display()))
                })?;
                let out = match side {
                    Side::Uringcache => {
                        measure::reset_peak_rss();
                        run_phases(side, p, &path).map(|mut o| {
                            o.note = format!("{}; peak RSS {}", o.note, human(measure::peak_rss()));
                            o
                        })
                    }
                    Side::File => run_file(&cgroup, p, &path),
                };
                let out = match out {
                    Ok(out) => out,
                    Err(e) => {
                        let msg = format!(
                            "redb workload, {} ({}), round {}: {e}",
                            side.name(),
                            p.label,
                            round + 1
                        );
                        log(&msg);
                        failed = Some(msg);
                        break 'rounds;
                    }
                };
                log(&format!(
                    "redb {} round {}/{rounds} {}: {}; file {}; {}",
                    p.label,
                    round + 1,
                    side.name(),
                    out.phases
                        .iter()
                        .map(|ph| format!("{} {:.0}/s", ph.name, ph.rate()))
                        .collect::<Vec<_>>()
                        .join(", "),
                    human(out.file_len),
                    out.note
                ));
                runs.push((side, out));
            }
        }
        match &failed {
            Some(msg) => md.push_str(&format!("### {}: FAILED\n\n{msg}\n\n", p.label)),
            None => md.push_str(&summary(p, &runs)),
        }
        json.push(serde_json::json!({
            "size": p,
            "failed": failed,
            "runs": runs.iter().map(|(s, o)| serde_json::json!({"side": s.name(), "run": o})).collect::<Vec<_>>(),
        }));
    }
    Ok(Report {
        markdown: md,
        json: serde_json::json!({ "rounds": rounds, "budget": budget, "sizes": json }),
    })
}

/// One run of the file backend, in the cgroup's child (or, with no cgroup, in this process,
/// unbounded).
fn run_file(cgroup: &io::Result<MemCgroup>, p: &Params, path: &Path) -> io::Result<RunOut> {
    let req = ChildRun {
        path: path.to_path_buf(),
        params: p.clone(),
    };
    match cgroup {
        Ok(cg) => {
            cg.reset_peak()?;
            let out: Result<RunOut, String> = cg.run_in_child(&[CHILD_ARG], &req)?;
            let peak = cg.peak()?;
            out.map_err(io::Error::other).map(|mut o| {
                o.note = format!("cgroup limit {}, peak {}", human(cg.limit()), human(peak));
                o
            })
        }
        Err(_) => run_phases(Side::File, p, path).map(|mut o| {
            o.note = "unbounded (no cgroup)".into();
            o
        }),
    }
}

/// The summary of one size: a row per phase.
fn summary(p: &Params, runs: &[(Side, RunOut)]) -> String {
    let len = |side: Side| {
        median(
            runs.iter()
                .filter(|r| r.0 == side)
                .map(|r| r.1.file_len as f64)
                .collect(),
        )
        .unwrap_or(0.0) as u64
    };
    let mut out = format!(
        "### {}: {} records ({} bulk load + {} individual + {} × {} batch), database file {} (uringcache) / {} (file) at the end, budget {}\n\n",
        p.label,
        p.total(),
        p.records,
        p.individual,
        p.batches,
        p.batch,
        human(len(Side::Uringcache)),
        human(len(Side::File)),
        human(p.budget),
    );
    out.push_str("| phase | uringcache | redb file @ budget | uringcache / file | per round | target |\n| --- | --- | --- | --- | --- | --- |\n");
    for (i, (name, target)) in PHASES.iter().enumerate() {
        let rates = |side: Side| -> Vec<f64> {
            runs.iter()
                .filter(|r| r.0 == side)
                .filter_map(|r| r.1.phases.get(i).map(PhaseTime::rate))
                .collect()
        };
        let (u, f) = (rates(Side::Uringcache), rates(Side::File));
        let rounds: Vec<String> = u
            .iter()
            .zip(&f)
            .map(|(u, f)| format!("{:.2}x", u / f))
            .collect();
        let (mu, mf) = (median(u), median(f));
        let cell = |v: Option<f64>| v.map_or("—".into(), |v| fmt_value(Unit::OpsPerSec, v));
        let (ratio, met) = match (mu, mf) {
            (Some(u), Some(f)) if f > 0.0 => (
                format!("{:.2}x", u / f),
                if u / f >= *target { "met" } else { "missed" },
            ),
            _ => ("—".into(), ""),
        };
        out.push_str(&format!(
            "| {name} | {} | {} | {ratio} | {} | >= {target:.1}x {met} |\n",
            cell(mu),
            cell(mf),
            rounds.join(" "),
        ));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(budget: u64) -> Params {
        Params {
            label: "tiny".into(),
            records: 2_000,
            individual: 20,
            batches: 3,
            batch: 100,
            reads: 2_000,
            ranges: 200,
            budget,
            redb_cache: 64 << 10,
        }
    }

    #[test]
    fn every_phase_runs_and_checks_on_both_sides() {
        let dir =
            std::env::temp_dir().join(format!("uringcache-bench-redb-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        // A budget the database fits in, and one a tenth of it.
        for budget in [8 << 20, 256 << 10] {
            for side in [Side::Uringcache, Side::File] {
                let path = dir.join(format!("{}.redb", side.name()));
                let out = run_phases(side, &tiny(budget), &path).unwrap();
                let names: Vec<&str> = out.phases.iter().map(|p| p.name.as_str()).collect();
                assert_eq!(names, PHASES.map(|p| p.0));
                assert_eq!(out.phases[0].ops, 2_000);
                assert_eq!(out.phases[7].ops, 2_320 / 2);
                assert!(out.file_len > 0);
                assert!(!path.exists(), "the run removes its database");
                assert_eq!(
                    side == Side::Uringcache,
                    out.note.contains("misses"),
                    "{}",
                    out.note
                );
            }
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn it_runs_only_on_request() {
        use crate::workloads::Workload;
        let parse = |args: &[&str]| crate::args::parse(args.iter().map(|s| s.to_string())).unwrap();
        assert_eq!(
            parse(&["--workload", "redb"]).workloads,
            vec![Workload::Redb]
        );
        assert_eq!(
            parse(&["--workload", "redb,hit"]).workloads,
            vec![Workload::Hit, Workload::Redb]
        );
        for run in [&[][..], &["--quick"], &["--full"], &["--workload", "all"]] {
            assert!(!parse(run).workloads.contains(&Workload::Redb), "{run:?}");
        }
    }

    #[test]
    fn the_sizes_fit_and_exceed_the_budget() {
        let mut cfg = crate::args::parse(["--quick".to_string()]).unwrap();
        for (quick, full, budget) in [
            (true, false, 8u64 << 20),
            (false, false, 16 << 20),
            (false, true, 32 << 20),
        ] {
            (cfg.quick, cfg.full) = (quick, full);
            let sizes = plan(&cfg);
            assert_eq!(sizes.len(), 2);
            let mib = budget >> 20;
            assert!(sizes[0].total() < mib * RECORDS_PER_MIB, "{:?}", sizes[0]);
            assert!(
                sizes[1].total() >= 8 * mib * RECORDS_PER_MIB,
                "{:?}",
                sizes[1]
            );
            for s in &sizes {
                assert_eq!(s.budget, budget);
                assert!(s.redb_cache as u64 <= budget / 8);
                assert!(s.reads >= READ_THREADS);
            }
        }
    }
}
