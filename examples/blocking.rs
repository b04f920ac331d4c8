//! The blocking API, with no async runtime anywhere: four plain threads append fixed-size
//! records to one file through a shared [`uringcache::BlockingFile`], the file is made durable
//! with `sync_data`, every record is read back and checked (through the cache and, after
//! `shutdown_blocking`, on disk), and the cache's statistics are printed.
//!
//! ```text
//! cargo run --example blocking -- FILE   # FILE must not exist yet: it is created
//! cargo run --example blocking           # no arguments: a scratch file
//! ```

use std::io;
use std::path::PathBuf;
use std::time::Instant;

use uringcache::{BlockingFile, Cache, OpenOptions};

const THREADS: u64 = 4;
const RECORDS_PER_THREAD: u64 = 2_000;
/// Bytes per record: not a divisor of the page size, so records straddle pages.
const RECORD: usize = 100;

/// Record `n`'s bytes: its number, then a pattern that depends on it.
fn record(n: u64) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[..8].copy_from_slice(&n.to_le_bytes());
    for (i, b) in r[8..].iter_mut().enumerate() {
        *b = (n as usize).wrapping_mul(31).wrapping_add(i) as u8;
    }
    r
}

fn main() -> io::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let scratch;
    let path = match args.as_slice() {
        [path] => path.clone(),
        [] => {
            scratch = tempfile::tempdir()?;
            scratch.path().join("records")
        }
        _ => {
            eprintln!("usage: blocking [FILE]   (FILE is created; without it, a scratch file)");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&path) {
        eprintln!("blocking: {}: {e}", path.display());
        std::process::exit(1);
    }
    Ok(())
}

fn run(path: &std::path::Path) -> io::Result<()> {
    let cache = Cache::builder().memory_limit(4 << 20).build()?;
    let file: BlockingFile = cache.open_blocking(
        path,
        OpenOptions::new().read(true).write(true).create_new(true),
    )?;

    // Write: thread t owns records t, t + THREADS, t + 2 * THREADS, ...
    let start = Instant::now();
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..THREADS)
            .map(|t| {
                let file = file.clone();
                s.spawn(move || -> io::Result<()> {
                    for i in 0..RECORDS_PER_THREAD {
                        let n = i * THREADS + t;
                        file.write_all_at(&record(n), n * RECORD as u64)?;
                    }
                    Ok(())
                })
            })
            .collect();
        writers
            .into_iter()
            .try_for_each(|w| w.join().expect("writer thread panicked"))
    })?;
    let records = THREADS * RECORDS_PER_THREAD;
    println!(
        "wrote {records} records of {RECORD} bytes from {THREADS} threads in {:.1?}",
        start.elapsed()
    );

    let start = Instant::now();
    file.sync_data()?;
    println!(
        "sync_data: {} bytes durable in {:.1?}",
        file.len(),
        start.elapsed()
    );

    // Read back: hits, copied out of the cache with no system call.
    let mut buf = [0u8; RECORD];
    for n in 0..records {
        file.read_exact_at(&mut buf, n * RECORD as u64)?;
        if buf != record(n) {
            return Err(io::Error::other(format!("record {n} differs")));
        }
    }
    // Or without a copy: the first page, pinned.
    let page = file.page(0)?;
    let first = u64::from_le_bytes(page[..8].try_into().expect("8 bytes"));
    drop(page);
    println!("verified {records} records through the cache (page 0 starts with record {first})");
    println!("{}", cache.stats());

    cache.shutdown_blocking()?;
    let disk = std::fs::read(path)?;
    let ok = disk.len() == records as usize * RECORD
        && disk
            .chunks(RECORD)
            .enumerate()
            .all(|(n, r)| r == record(n as u64));
    if !ok {
        return Err(io::Error::other("the file on disk differs"));
    }
    println!("verified {} bytes on disk", disk.len());
    Ok(())
}
