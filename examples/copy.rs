//! `copy` through the cache: reads SRC with sequential readahead, writes DST into the cache
//! (written back by the cache in large coalesced writes), makes DST durable with `sync_all`,
//! and prints the throughput and the cache's statistics.
//!
//! Like `cp`, it refuses to copy a file onto itself (exit code 1): opening DST with truncation
//! would empty SRC before a byte of it was read.
//!
//! ```text
//! cargo run --release --example copy -- SRC DST
//! cargo run --example copy           # no arguments: copies an 8 MiB scratch file and checks it
//! ```

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use uringcache::{Advice, Cache, OpenOptions};

/// Bytes per read / write call.
const CHUNK: usize = 1 << 20;

#[tokio::main]
async fn main() -> io::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let scratch;
    let (src, dst, check) = match args.as_slice() {
        [src, dst] => (src.clone(), dst.clone(), false),
        [] => {
            scratch = tempfile::tempdir()?;
            let src = scratch.path().join("src");
            // 8 MiB and a bit, so the tail page is partial.
            let data: Vec<u8> = (0..(8usize << 20) + 1234)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect();
            std::fs::write(&src, data)?;
            (src, scratch.path().join("dst"), true)
        }
        _ => {
            eprintln!("usage: copy SRC DST   (or no arguments for a demo on a scratch file)");
            std::process::exit(2);
        }
    };

    // Before DST is opened with truncation: if it is SRC, that would destroy SRC.
    if same_file(&src, &dst) {
        eprintln!(
            "copy: '{}' and '{}' are the same file",
            src.display(),
            dst.display()
        );
        std::process::exit(1);
    }

    let cache = Cache::builder().memory_limit(64 << 20).build()?;
    let input = cache
        .open(&src, OpenOptions::new().read(true))
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", src.display())))?;
    let output = cache
        .open(
            &dst,
            OpenOptions::new().write(true).create(true).truncate(true),
        )
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dst.display())))?;
    // Sequential: the cache doubles its readahead window for this handle.
    input.advise(Advice::Sequential);

    let start = Instant::now();
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    loop {
        let n = input.read_at(&mut buf, pos).await?;
        if n == 0 {
            break;
        }
        // Lands in the cache; writeback sends it to the device in the background.
        output.write_all_at(&buf[..n], pos).await?;
        pos += n as u64;
    }
    let copied = start.elapsed();
    // Durable: every dirty page written back, the length cut to `len()`, then fsync.
    output.sync_all().await?;
    let total = start.elapsed();

    let mib = pos as f64 / (1 << 20) as f64;
    println!(
        "copied {} -> {}: {pos} bytes in {:.3} s ({:.1} MiB/s into the cache, {:.1} MiB/s \
         including sync_all)",
        src.display(),
        dst.display(),
        total.as_secs_f64(),
        mib / copied.as_secs_f64().max(1e-9),
        mib / total.as_secs_f64().max(1e-9),
    );
    println!("{}", cache.stats());
    cache.shutdown().await?;

    if check {
        if std::fs::read(&src)? != std::fs::read(&dst)? {
            eprintln!("copy: {} and {} differ", src.display(), dst.display());
            std::process::exit(1);
        }
        println!("verified: the copy matches the source byte for byte");
    }
    Ok(())
}

/// Whether `src` and an existing `dst` are the same file: the same device and inode
/// (`st_dev`, `st_ino`), which also catches a hard link, a symbolic link to it and another
/// spelling of the same path. A missing `dst` (or `src`: its open reports that) is not.
fn same_file(src: &Path, dst: &Path) -> bool {
    match (std::fs::metadata(src), std::fs::metadata(dst)) {
        (Ok(s), Ok(d)) => (s.dev(), s.ino()) == (d.dev(), d.ino()),
        _ => false,
    }
}
