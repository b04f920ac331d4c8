//! redb over uringcache against redb over its own file backend (the kernel's page cache), on
//! the phases of redb's own benchmark (`benches/lmdb_benchmark.rs`): bulk load, individual
//! writes, batch writes, cold and warm random reads, 4-thread random reads, range reads,
//! removals. Contenders run A B A B, each run on a fresh database; redb's own cache is the
//! same on both sides (`--redb-cache`, default 4 MiB).
//!
//! ```text
//! cargo run --release -p uringcache-redb --example redb_bench -- [--records N] [--budget MIB]
//!     [--redb-cache MIB] [--rounds R] [--dirty BACKGROUND,RATIO] [--quick]
//! ```
//!
//! Keys are random `u64`, values 150 bytes (redb's benchmark: 24-byte keys, 150-byte values).
//! "Cold" reads: uringcache reopens the database on a fresh cache of the same budget; the file
//! backend reopens it after `posix_fadvise(DONTNEED)` on the file (the kernel then reads it
//! again; it is *not* held to the budget: what the kernel caches after that is unbounded).
//! The backend of the cache: `URINGCACHE_BACKEND=uring|threads` (default: io_uring if it can).
//! `REDB_BENCH_STATS=1` prints the cache's whole `Stats` after each uringcache run (of the
//! cache opened for the read phases).

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use redb::{Database, ReadableDatabase, TableDefinition};
use uringcache::Cache;
use uringcache_redb::UringcacheBackend;

const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("bench");
const VALUE: usize = 150;

struct Config {
    records: u64,
    budget: usize,
    redb_cache: usize,
    rounds: usize,
    individual: u64,
    batches: u64,
    batch: u64,
    reads: u64,
    ranges: u64,
    dir: PathBuf,
    /// The cache's (dirty_background_ratio, dirty_ratio); `None`: `cache_builder`'s.
    dirty: Option<(f64, f64)>,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Contender {
    Uringcache,
    File,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Uringcache => "uringcache",
            Contender::File => "redb file",
        }
    }
}

/// A xorshift generator: the keys of a run, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn key(i: u64) -> u64 {
    Rng(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1).next()
}

fn value(i: u64) -> [u8; VALUE] {
    let mut v = [0u8; VALUE];
    v[..8].copy_from_slice(&i.to_le_bytes());
    v
}

struct Db {
    db: Database,
    cache: Option<Cache>,
}

fn open(c: Contender, cfg: &Config, path: &Path) -> Db {
    let mut b = Database::builder();
    b.set_cache_size(cfg.redb_cache);
    match c {
        Contender::Uringcache => {
            let mut cb = UringcacheBackend::cache_builder(cfg.budget);
            if let Some((background, ratio)) = cfg.dirty {
                cb.dirty_background_ratio(background).dirty_ratio(ratio);
            }
            let cache = cb.build().expect("cache");
            let backend = UringcacheBackend::with_cache(&cache, path).expect("backend");
            Db {
                db: b.create_with_backend(backend).expect("open"),
                cache: Some(cache),
            }
        }
        Contender::File => Db {
            db: b.create(path).expect("open"),
            cache: None,
        },
    }
}

/// Drops the kernel's cached pages of `path` (for the file backend's cold reads).
fn drop_kernel_cache(path: &Path) {
    let f = fs::File::open(path).expect("open for fadvise");
    // SAFETY: fadvise on a descriptor we own.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

/// One phase of one run: its name, operations, seconds.
type Phase = (&'static str, u64, f64);

/// One run of every phase.
fn run(c: Contender, cfg: &Config, round: usize) -> Vec<Phase> {
    let path = cfg
        .dir
        .join(format!("bench-{}-{round}.redb", c.name().replace(' ', "-")));
    let _ = fs::remove_file(&path);
    let mut out = Vec::new();
    let mut phase = |name, ops, start: Instant| {
        let s = start.elapsed().as_secs_f64();
        out.push((name, ops, s));
    };
    let mut d = open(c, cfg, &path);

    // Bulk load: one transaction.
    let start = Instant::now();
    let tx = d.db.begin_write().unwrap();
    {
        let mut t = tx.open_table(TABLE).unwrap();
        for i in 0..cfg.records {
            t.insert(key(i), value(i).as_slice()).unwrap();
        }
    }
    tx.commit().unwrap();
    phase("bulk load", cfg.records, start);

    // Individual writes: one insert per durable commit.
    let start = Instant::now();
    for i in 0..cfg.individual {
        let n = cfg.records + i;
        let tx = d.db.begin_write().unwrap();
        tx.open_table(TABLE)
            .unwrap()
            .insert(key(n), value(n).as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    phase("individual writes", cfg.individual, start);

    // Batch writes.
    let start = Instant::now();
    let base = cfg.records + cfg.individual;
    for b in 0..cfg.batches {
        let tx = d.db.begin_write().unwrap();
        {
            let mut t = tx.open_table(TABLE).unwrap();
            for i in 0..cfg.batch {
                let n = base + b * cfg.batch + i;
                t.insert(key(n), value(n).as_slice()).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    phase("batch writes", cfg.batches * cfg.batch, start);
    let total = base + cfg.batches * cfg.batch;

    // Cold reads: reopen with nothing cached below redb.
    if let Some(cache) = d.cache.take() {
        drop(d.db);
        cache.shutdown_blocking().unwrap();
    } else {
        drop(d.db);
    }
    if c == Contender::File {
        drop_kernel_cache(&path);
    }
    d = open(c, cfg, &path);
    if let (Some(cache), Some(_)) = (&d.cache, std::env::var_os("REDB_BENCH_STATS")) {
        eprintln!("after the reopen:\n{}", cache.stats());
    }
    let reads = |d: &Db, seed: u64, n: u64| {
        let rx = d.db.begin_read().unwrap();
        let t = rx.open_table(TABLE).unwrap();
        let mut rng = Rng(seed | 1);
        let mut sum = 0u64;
        for _ in 0..n {
            let i = rng.next() % total;
            let v = t.get(key(i)).unwrap().expect("present");
            sum += u64::from(v.value()[0]);
        }
        sum
    };
    let start = Instant::now();
    std::hint::black_box(reads(&d, 1, cfg.reads));
    phase("random reads (cold)", cfg.reads, start);
    let start = Instant::now();
    std::hint::black_box(reads(&d, 2, cfg.reads));
    phase("random reads (warm)", cfg.reads, start);

    // 4 threads of random reads.
    let start = Instant::now();
    let shared = Arc::new(d);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let d = Arc::clone(&shared);
            s.spawn(move || std::hint::black_box(reads(&d, 10 + t, cfg.reads / 4)));
        }
    });
    phase("random reads (4 threads)", cfg.reads / 4 * 4, start);
    let mut d = Arc::into_inner(shared).unwrap();

    // Range reads: 10 entries from a random key.
    let start = Instant::now();
    {
        let rx = d.db.begin_read().unwrap();
        let t = rx.open_table(TABLE).unwrap();
        let mut rng = Rng(7);
        let mut n = 0u64;
        for _ in 0..cfg.ranges {
            for kv in t.range(rng.next()..).unwrap().take(10) {
                let (_, v) = kv.unwrap();
                n += u64::from(v.value()[0]) + 1;
            }
        }
        std::hint::black_box(n);
    }
    phase("range reads (10 each)", cfg.ranges, start);

    // Removals: half the records, one transaction.
    if let (Some(cache), Some(_)) = (&d.cache, std::env::var_os("REDB_BENCH_STATS")) {
        let s = cache.stats();
        eprintln!(
            "before the removals: pages written {}, write requests {}",
            s.pages_written, s.write_requests
        );
    }
    let start = Instant::now();
    let tx = d.db.begin_write().unwrap();
    {
        let mut t = tx.open_table(TABLE).unwrap();
        for i in (0..total).step_by(2) {
            t.remove(key(i)).unwrap();
        }
    }
    if let (Some(cache), Some(_)) = (&d.cache, std::env::var_os("REDB_BENCH_STATS")) {
        let s = cache.stats();
        eprintln!(
            "before the removals' commit: pages written {}, write requests {}, syncs {}, dirty {}",
            s.pages_written, s.write_requests, s.syncs, s.dirty_pages
        );
    }
    tx.commit().unwrap();
    phase("removals", total.div_ceil(2), start);

    let file_len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if let Some(cache) = d.cache.take() {
        let s = cache.stats();
        eprintln!(
            "  [{} round {round}: file {:.1} MiB; cache hits {} misses {} evictions {}, syncs {} flushes {}]",
            c.name(),
            file_len as f64 / (1 << 20) as f64,
            s.hits,
            s.misses,
            s.evictions,
            s.syncs,
            s.flushes
        );
        if std::env::var_os("REDB_BENCH_STATS").is_some() {
            eprintln!("{s}");
        }
        drop(d.db);
        cache.shutdown_blocking().unwrap();
    } else {
        eprintln!(
            "  [{} round {round}: file {:.1} MiB]",
            c.name(),
            file_len as f64 / (1 << 20) as f64
        );
        drop(d.db);
    }
    let _ = fs::remove_file(&path);
    out
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut cfg = Config {
        records: 200_000,
        budget: 64 << 20,
        redb_cache: UringcacheBackend::REDB_CACHE_SIZE,
        rounds: 2,
        individual: 500,
        batches: 50,
        batch: 1_000,
        reads: 200_000,
        ranges: 50_000,
        dir: std::env::temp_dir(),
        dirty: None,
    };
    while let Some(a) = args.next() {
        let mut num = || -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{a} needs a number"))
        };
        match a.as_str() {
            "--records" => cfg.records = num(),
            "--budget" => cfg.budget = (num() as usize) << 20,
            "--redb-cache" => cfg.redb_cache = (num() as usize) << 20,
            "--rounds" => cfg.rounds = num() as usize,
            "--reads" => cfg.reads = num(),
            "--individual" => cfg.individual = num(),
            "--dirty" => {
                let v = args.next().expect("--dirty needs BACKGROUND,RATIO");
                let (a, b) = v.split_once(',').expect("--dirty BACKGROUND,RATIO");
                cfg.dirty = Some((a.parse().expect("ratio"), b.parse().expect("ratio")));
            }
            "--dir" => cfg.dir = PathBuf::from(args.next().expect("--dir needs a path")),
            "--quick" => {
                cfg.records = 20_000;
                cfg.individual = 100;
                cfg.batches = 10;
                cfg.reads = 20_000;
                cfg.ranges = 5_000;
                cfg.rounds = 1;
            }
            other => panic!("unknown argument {other}"),
        }
    }
    println!(
        "redb {} records of 8 + {VALUE} B, budget {} MiB, redb cache {} MiB (both sides), {} rounds A B",
        cfg.records,
        cfg.budget >> 20,
        cfg.redb_cache >> 20,
        cfg.rounds
    );
    let mut results: Vec<(Contender, Vec<Phase>)> = Vec::new();
    for round in 0..cfg.rounds {
        for c in [Contender::Uringcache, Contender::File] {
            results.push((c, run(c, &cfg, round)));
        }
    }
    // Per phase: each contender's best run (ops/s), and the ratio.
    let phases: Vec<&str> = results[0].1.iter().map(|p| p.0).collect();
    println!(
        "{:<26} {:>16} {:>16} {:>8}",
        "phase", "uringcache", "redb file", "ratio"
    );
    for (i, phase) in phases.iter().enumerate() {
        let best = |c: Contender| {
            results
                .iter()
                .filter(|r| r.0 == c)
                .map(|r| r.1[i].1 as f64 / r.1[i].2)
                .fold(0.0f64, f64::max)
        };
        let (u, f) = (best(Contender::Uringcache), best(Contender::File));
        let all = |c: Contender| {
            results
                .iter()
                .filter(|r| r.0 == c)
                .map(|r| format!("{:.0}", r.1[i].1 as f64 / r.1[i].2))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "{phase:<26} {u:>14.0}/s {f:>14.0}/s {:>7.2}×   (runs: {} | {})",
            u / f,
            all(Contender::Uringcache),
            all(Contender::File)
        );
    }
}
