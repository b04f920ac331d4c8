//! A tiny storage server: byte ranges of files over HTTP/1.1, sent from the uringcache as
//! zero-copy `Bytes` of the cached pages.
//!
//! ```text
//! cargo run --release --example serve -- [ROOT] [ADDR]
//! curl -r 4096-8191 http://127.0.0.1:8080/some/file
//! ```
//!
//! Serves the files under `ROOT` (default `.`) on `ADDR` (default `127.0.0.1:8080`). The
//! server itself is in `server.rs` (also used by `tests/serve.rs`).

mod server;

use std::io;
use std::path::PathBuf;

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let root = PathBuf::from(args.next().unwrap_or_else(|| ".".into()));
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let cache = uringcache::Cache::builder()
            .memory_limit(256 << 20)
            .build()?;
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!(
            "serving {} on http://{} (cache: 256 MiB, {} backend)",
            root.display(),
            listener.local_addr()?,
            cache.stats().backend
        );
        server::Server::new(cache, root).serve(listener).await
    })
}
