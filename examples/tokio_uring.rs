//! The cache inside `tokio_uring::start`: uringcache's futures are `Send` and are completed by
//! the cache's own backend, so they run on any executor, tokio-uring's included. This reads a
//! file through the cache (both with `read_at` and through the tokio `AsyncRead` reader) and
//! through tokio-uring's own `File`, and checks that the bytes agree. It holds the whole file
//! in memory, three times: give it a small one.
//!
//! ```text
//! cargo run --example tokio_uring -- FILE
//! cargo run --example tokio_uring    # no arguments: reads a small scratch file
//! ```

use std::io;
use std::path::PathBuf;

use tokio::io::AsyncReadExt;
use uringcache::{Cache, OpenOptions};

fn main() -> io::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let scratch;
    let path = match args.as_slice() {
        [path] => path.clone(),
        [] => {
            scratch = tempfile::tempdir()?;
            let path = scratch.path().join("data");
            let data: Vec<u8> = (0..(1usize << 20) + 4321)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
                .collect();
            std::fs::write(&path, data)?;
            path
        }
        _ => {
            eprintln!("usage: tokio_uring FILE   (or no arguments for a scratch file)");
            std::process::exit(2);
        }
    };

    tokio_uring::start(async move {
        let cache = Cache::builder().memory_limit(16 << 20).build()?;
        let file = cache.open(&path, OpenOptions::new().read(true)).await?;

        // Through the cache, with positional reads.
        let mut cached = vec![0u8; file.len() as usize];
        file.read_exact_at(&mut cached, 0).await?;

        // Through the cache again, as a tokio AsyncRead (all hits now), on a spawned task.
        let reader = file.reader(0);
        let streamed = tokio_uring::spawn(async move {
            let mut reader = reader;
            let mut out = Vec::new();
            reader.read_to_end(&mut out).await.map(|_| out)
        })
        .await
        .expect("reader task")?;

        // Through tokio-uring's own File (the kernel's page cache).
        let direct = read_with_tokio_uring(&path).await?;

        println!(
            "{}: {} bytes through uringcache, {} streamed, {} through tokio-uring",
            path.display(),
            cached.len(),
            streamed.len(),
            direct.len()
        );
        println!("{}", cache.stats());
        cache.shutdown().await?;
        if cached != direct || streamed != direct {
            eprintln!("tokio_uring: the bytes differ");
            std::process::exit(1);
        }
        println!("identical: uringcache and tokio-uring read the same bytes");
        Ok(())
    })
}

async fn read_with_tokio_uring(path: &std::path::Path) -> io::Result<Vec<u8>> {
    let file = tokio_uring::fs::File::open(path).await?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let (res, b) = file.read_at(buf, out.len() as u64).await;
        buf = b;
        let n = res?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    file.close().await?;
    Ok(out)
}
