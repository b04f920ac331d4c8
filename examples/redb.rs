//! A small service on redb over uringcache: it loads records, serves random reads and range
//! scans, takes updates committed in batches, and prints each phase's throughput and the
//! cache's statistics. redb's own cache is kept small
//! ([`UringcacheBackend::REDB_CACHE_SIZE`]): the pages live in the cache's budget.
//!
//! ```text
//! cargo run --release --example redb -- [RECORDS [DIR]]   # default 20000 records, a scratch dir
//! ```
//!
//! The database is `DIR/service.redb` (created; refused if it exists). Every read is checked
//! against the value the record must have; the database's integrity is checked at the end.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use uringcache_redb::UringcacheBackend;

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
/// The cache's budget: a few MiB, so the working set is part cached, part read from the device.
const BUDGET: usize = 8 << 20;
/// Records per commit while loading.
const LOAD_BATCH: u64 = 1_000;
/// Updates per commit in the update phase.
const UPDATE_BATCH: u64 = 100;
const SCAN_LEN: usize = 100;

/// Record `key`'s value in its `version`: 64..1024 bytes that depend on both.
fn value(key: u64, version: u64) -> Vec<u8> {
    let mut x =
        key.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ version.wrapping_mul(0xD1B5_4A32_D192_ED03);
    let len = 64 + (x % 960) as usize;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || -> ! {
        eprintln!("usage: redb [RECORDS [DIR]]   (DIR/service.redb is created)");
        std::process::exit(2);
    };
    let records: u64 = match args.first() {
        Some(n) => n.parse().unwrap_or_else(|_| usage()),
        None => 20_000,
    };
    let scratch;
    let dir = match args.get(1) {
        Some(d) => PathBuf::from(d),
        None => {
            scratch = tempfile::tempdir().expect("scratch dir");
            scratch.path().to_path_buf()
        }
    };
    if args.len() > 2 || records == 0 {
        usage();
    }
    let path = dir.join("service.redb");
    if let Err(e) = run(&path, records) {
        eprintln!("redb: {}: {e}", path.display());
        std::process::exit(1);
    }
}

fn rate(n: u64, start: Instant) -> String {
    let s = start.elapsed().as_secs_f64();
    format!("{:>9.0}/s ({:.3} s)", n as f64 / s, s)
}

fn run(path: &Path, records: u64) -> Result<(), Box<dyn std::error::Error>> {
    if path.exists() {
        return Err(
            io::Error::new(io::ErrorKind::AlreadyExists, "exists; give a new directory").into(),
        );
    }
    let cache = UringcacheBackend::cache_builder(BUDGET).build()?;
    let backend = UringcacheBackend::with_cache(&cache, path)?;
    let mut db = Database::builder()
        .set_cache_size(UringcacheBackend::REDB_CACHE_SIZE)
        .create_with_backend(backend)?;
    // version[k]: the version record k has now.
    let mut version = vec![0u64; records as usize];
    let mut rng = StdRng::seed_from_u64(16);

    // Load, in commits of LOAD_BATCH records.
    let start = Instant::now();
    let mut commits = 0u64;
    for first in (0..records).step_by(LOAD_BATCH as usize) {
        let tx = db.begin_write()?;
        {
            let mut t = tx.open_table(RECORDS)?;
            for k in first..(first + LOAD_BATCH).min(records) {
                t.insert(k, value(k, 0).as_slice())?;
            }
        }
        tx.commit()?;
        commits += 1;
    }
    println!(
        "load    {records} records in {commits} commits: {}",
        rate(records, start)
    );

    // Random reads, each checked.
    let start = Instant::now();
    let rx = db.begin_read()?;
    let t = rx.open_table(RECORDS)?;
    for _ in 0..records {
        let k = rng.gen_range(0..records);
        let got = t.get(k)?.ok_or_else(|| format!("record {k} missing"))?;
        if got.value() != value(k, version[k as usize]).as_slice() {
            return Err(format!("record {k}: wrong value").into());
        }
    }
    println!("read    {records} random records: {}", rate(records, start));

    // Range scans of SCAN_LEN records from random keys.
    let scans = (records / 100).max(10);
    let start = Instant::now();
    let mut seen = 0u64;
    for _ in 0..scans {
        let from = rng.gen_range(0..records);
        for (i, kv) in t.range(from..)?.take(SCAN_LEN).enumerate() {
            let (k, v) = kv?;
            let k = k.value();
            if k != from + i as u64 || v.value() != value(k, version[k as usize]).as_slice() {
                return Err(format!("scan from {from}: wrong record {k}").into());
            }
            seen += 1;
        }
    }
    println!(
        "scan    {scans} ranges of up to {SCAN_LEN} ({seen} records): {}",
        rate(seen, start)
    );
    drop(t);
    drop(rx);

    // Updates of random records, committed in batches.
    let updates = records / 2;
    let start = Instant::now();
    let mut commits = 0u64;
    let mut done = 0u64;
    while done < updates {
        let tx = db.begin_write()?;
        {
            let mut t = tx.open_table(RECORDS)?;
            for _ in 0..UPDATE_BATCH.min(updates - done) {
                let k = rng.gen_range(0..records);
                version[k as usize] += 1;
                t.insert(k, value(k, version[k as usize]).as_slice())?;
                done += 1;
            }
        }
        tx.commit()?;
        commits += 1;
    }
    println!(
        "update  {updates} records in {commits} commits of {UPDATE_BATCH}: {} ({:.0} commits/s)",
        rate(updates, start),
        commits as f64 / start.elapsed().as_secs_f64()
    );

    // Every record, in order, once more; then redb's own check.
    let rx = db.begin_read()?;
    let t = rx.open_table(RECORDS)?;
    let mut n = 0u64;
    for kv in t.iter()? {
        let (k, v) = kv?;
        let k = k.value();
        if k != n || v.value() != value(k, version[k as usize]).as_slice() {
            return Err(format!("full scan: wrong record {k}").into());
        }
        n += 1;
    }
    drop(t);
    drop(rx);
    if n != records {
        return Err(format!("full scan: {n} records, expected {records}").into());
    }
    if !db.check_integrity()? {
        return Err("check_integrity repaired the database".into());
    }
    println!("verified {n} records, integrity ok");
    db.close()?;
    println!("{}", cache.stats());
    cache.shutdown_blocking()?;
    Ok(())
}
