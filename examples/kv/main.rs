//! A persistent key-value store built on pinned pages, and its throughput against the same
//! store on `std::fs` `pread` / `pwrite`.
//!
//! ```text
//! cargo run --release --example kv -- [N] [DIR]
//! ```
//!
//! Loads `N` keys (default 1,000,000) into a fresh store in `DIR` (default: the system's
//! temporary directory), commits (`sync_data`), looks every key up in random order, reopens the
//! store after a restart (a new cache) and checks the count and a sample; then does the same
//! with the store on `std::fs`. The store itself is in `store.rs` (also used by `tests/kv.rs`).

mod store;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use store::{Pager, StdPager, Store, UringPager};

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:012}").into_bytes()
}

fn value(i: u64) -> [u8; 32] {
    let mut v = [0u8; 32];
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in v.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    v
}

/// A permutation of `0..n` (an LCG over the next power of two, skipping what is past `n`).
fn shuffled(n: u64) -> impl Iterator<Item = u64> {
    let m = n.next_power_of_two().max(2);
    let mut x = 12345u64 % m;
    (0..m).filter_map(move |_| {
        x = (x.wrapping_mul(5).wrapping_add(0x9E37_79B9)) & (m - 1);
        (x < n).then_some(x)
    })
}

struct Figures {
    load: Duration,
    lookup: Duration,
    reopen: Duration,
    pages: u64,
}

fn rate(n: u64, d: Duration) -> String {
    format!(
        "{:>9.0} ops/s ({:>6.2} µs/op)",
        n as f64 / d.as_secs_f64(),
        d.as_secs_f64() * 1e6 / n as f64
    )
}

/// Buckets for `n` records of about 52 bytes in 4 KiB pages, about 70 % full.
fn buckets_for(n: u64) -> u64 {
    (n * 56 / (4076 * 7 / 10)).max(1)
}

async fn run<P: Pager>(mut store: Store<P>, n: u64) -> io::Result<(Store<P>, Duration, Duration)> {
    let t = Instant::now();
    for i in 0..n {
        store.put(&key(i), &value(i)).await?;
    }
    store.commit().await?;
    let load = t.elapsed();
    let t = Instant::now();
    let mut found = 0u64;
    for i in shuffled(n) {
        let want = value(i);
        let ok = store
            .get_with(&key(i), |v| v == want)
            .await?
            .unwrap_or(false);
        found += ok as u64;
    }
    let lookup = t.elapsed();
    assert_eq!(found, n, "every key found with its value");
    assert_eq!(store.len(), n);
    Ok((store, load, lookup))
}

async fn check_sample<P: Pager>(store: &Store<P>, n: u64) -> io::Result<()> {
    assert_eq!(store.len(), n, "key count after reopen");
    for i in (0..n).step_by((n / 1000).max(1) as usize) {
        assert_eq!(store.get(&key(i)).await?.as_deref(), Some(&value(i)[..]));
    }
    assert_eq!(store.get(b"missing").await?, None);
    Ok(())
}

/// A cache tuned like a database's buffer pool: the table fits, and dirty pages are written at
/// commit rather than continuously (background writeback only past half the budget).
fn new_cache(budget: usize) -> io::Result<uringcache::Cache> {
    uringcache::Cache::builder()
        .memory_limit(budget)
        .dirty_background_ratio(0.6)
        .dirty_ratio(0.8)
        .build()
}

async fn uringcache_run(path: &Path, n: u64, budget: usize) -> io::Result<Figures> {
    let _ = std::fs::remove_file(path);
    let cache = new_cache(budget)?;
    let store = Store::open(UringPager::open(&cache, path).await?, buckets_for(n)).await?;
    let (store, load, lookup) = run(store, n).await?;
    let pages = store.pages();
    let stats = cache.stats();
    drop(store);
    cache.shutdown().await?;
    drop(cache);
    // Restart: a new cache reads the committed store from the device, verifying every page.
    let t = Instant::now();
    let cache = new_cache(budget)?;
    let store = Store::open(UringPager::open(&cache, path).await?, 0).await?;
    check_sample(&store, n).await?;
    let reopen = t.elapsed();
    println!(
        "  cache: {}",
        stats.to_string().replace('\n', "\n         ")
    );
    cache.shutdown().await?;
    Ok(Figures {
        load,
        lookup,
        reopen,
        pages,
    })
}

async fn std_run(path: &Path, n: u64) -> io::Result<Figures> {
    let _ = std::fs::remove_file(path);
    let store = Store::open(StdPager::open(path)?, buckets_for(n)).await?;
    let (store, load, lookup) = run(store, n).await?;
    let pages = store.pages();
    drop(store);
    let t = Instant::now();
    let store = Store::open(StdPager::open(path)?, 0).await?;
    check_sample(&store, n).await?;
    let reopen = t.elapsed();
    Ok(Figures {
        load,
        lookup,
        reopen,
        pages,
    })
}

fn print(name: &str, n: u64, f: &Figures, reopen_note: &str) {
    println!("{name}");
    println!("  load   {n} keys + commit: {}", rate(n, f.load));
    println!("  lookup {n} keys, random:  {}", rate(n, f.lookup));
    println!(
        "  reopen + {} sample lookups: {:.1} ms ({reopen_note}); {} pages ({:.1} MiB)",
        n.div_ceil((n / 1000).max(1)),
        f.reopen.as_secs_f64() * 1e3,
        f.pages,
        (f.pages * 4096) as f64 / (1 << 20) as f64
    );
}

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: u64 = match args.next() {
        Some(a) => a.replace('_', "").parse().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("N must be a number: {a}: {e}"),
            )
        })?,
        None => 1_000_000,
    };
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "N must be at least 1",
        ));
    }
    let dir: PathBuf = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("uringcache-kv-")
        .tempdir_in(dir)?;
    // Enough for the whole table: a page cache sized for its working set, as the kernel's is.
    let budget = ((buckets_for(n) * 2 + 64) as usize * 4096).max(16 << 20);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!(
        "kv: {n} keys of 16 bytes with 32-byte values, 4 KiB pages, {} buckets, cache budget {} MiB, in {}",
        buckets_for(n),
        budget >> 20,
        dir.path().display()
    );
    let u = rt.block_on(uringcache_run(
        &dir.path().join("kv-uringcache.db"),
        n,
        budget,
    ))?;
    print(
        "uringcache (pinned pages: page / page_mut, verify hook)",
        n,
        &u,
        "cold: a new cache reads and verifies from the device",
    );
    let s = rt.block_on(std_run(&dir.path().join("kv-std.db"), n))?;
    print(
        "std::fs (pread / pwrite through the kernel page cache)",
        n,
        &s,
        "warm: the kernel's cache still holds the file",
    );
    println!(
        "uringcache / std::fs: load {:.2}x, lookup {:.2}x",
        s.load.as_secs_f64() / u.load.as_secs_f64(),
        s.lookup.as_secs_f64() / u.lookup.as_secs_f64()
    );
    Ok(())
}
