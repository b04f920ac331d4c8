//! A storage server on hyper: byte ranges of files over HTTP/1.1, sent from the uringcache as
//! zero-copy `Bytes` of the cached pages.
//!
//! ```text
//! cargo run --release --example serve -- [ROOT] [ADDR]
//! curl -r 4096-8191 http://127.0.0.1:8080/some/file
//! curl -r 0-99,4096-4195 http://127.0.0.1:8080/some/file   # multipart/byteranges
//! ```
//!
//! Serves the files under `ROOT` (default `.`) on `ADDR` (default `127.0.0.1:8080`), through a
//! cache of 256 MiB; errors are logged on stderr (`RUST_LOG`-style filtering is not wired: every
//! event at `info` and above). The server itself is in `server.rs` (also used by
//! `tests/serve.rs` and the bench's `serve` workload).

mod server;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

fn main() -> io::Result<()> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(io::stderr)
        .init();
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
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("serve: bind {addr}: {e}")))?;
        println!(
            "serving {} on http://{} (cache: 256 MiB, {} backend)",
            root.display(),
            listener.local_addr()?,
            cache.stats().backend
        );
        let server = Arc::new(server::Server::new(cache, &root)?);
        server.serve(listener).await
    })
}
