//! `cat` through the cache: streams each file named on the command line to stdout through
//! [`uringcache::File::reader`] (a tokio `AsyncRead + AsyncBufRead`) and `tokio::io::copy`.
//!
//! ```text
//! cargo run --example cat -- FILE...
//! cargo run --example cat            # no arguments: cats a small scratch file
//! ```
//!
//! Reads go through the cache's readahead: the reader asks for 64 KiB at a time, and the cache
//! reads whole windows (up to 2 MiB) ahead of it with `io_uring`.

use std::io;
use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;
use uringcache::{Cache, OpenOptions};

#[tokio::main]
async fn main() -> io::Result<()> {
    let mut paths: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    // With no arguments, make something to show.
    let _scratch = if paths.is_empty() {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("hello.txt");
        let text: String = (1..=20)
            .map(|i| format!("line {i}: read through uringcache\n"))
            .collect();
        std::fs::write(&path, text)?;
        paths.push(path);
        Some(dir)
    } else {
        None
    };

    let cache = Cache::builder().memory_limit(32 << 20).build()?;
    let mut stdout = tokio::io::stdout();
    for path in &paths {
        match cat(&cache, path, &mut stdout).await {
            Ok(()) => {}
            // `cat FILE | head` closes the pipe early: not an error.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break,
            Err(e) => {
                eprintln!("cat: {}: {e}", path.display());
                std::process::exit(1);
            }
        }
    }
    cache.shutdown().await
}

async fn cat(cache: &Cache, path: &Path, out: &mut tokio::io::Stdout) -> io::Result<()> {
    let file = cache.open(path, OpenOptions::new().read(true)).await?;
    // The reader is also `AsyncBufRead`: `tokio::io::copy_buf` would skip one copy.
    tokio::io::copy(&mut file.reader(0), out).await?;
    out.flush().await
}
