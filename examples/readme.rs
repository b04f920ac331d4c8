//! The README's "Twenty lines", as they stand there: a 256 MiB cache, one file `data.db` in
//! the current directory (created; run it in a scratch directory), a write, a hit, a sync, a
//! pinned page, the statistics.
//!
//! ```text
//! cd "$(mktemp -d)" && /usr/bin/time -f '%M KiB max RSS' \
//!     cargo run --release --manifest-path <repo>/Cargo.toml --example readme
//! ```
//!
//! BENCHMARKS.md ("Start-up cost") quotes its resident memory on each backend.

use uringcache::{Cache, OpenOptions};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let cache = Cache::builder()
        .memory_limit(256 << 20) // the whole budget of page frames
        .page_size(4096)
        .build()?; // io_uring, or a thread pool where io_uring is refused
    let file = cache
        .open(
            "data.db",
            OpenOptions::new().read(true).write(true).create(true),
        )
        .await?;
    file.write_all_at(b"hello, page cache", 0).await?; // lands in the cache
    let mut buf = [0u8; 17];
    file.read_exact_at(&mut buf, 0).await?; // a hit: a lookup and a copy, no system call
    file.sync_data().await?; // written back, flushed; errors reported, never lost
    let page = file.page(0).await?; // pinned, zero-copy
    assert_eq!(&page[..5], b"hello");
    println!("{}", cache.stats());
    cache.shutdown().await
}
