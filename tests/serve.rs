//! The storage server of `examples/serve`, started in-process on an ephemeral port: every byte
//! range it returns is checked against `std::fs`.

#[path = "../examples/serve/server.rs"]
mod server;

mod common;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;

use common::{make_file, scratch_dir};
use rand::{Rng, SeedableRng};
use server::{parse_range, RangeReq};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use uringcache::Backend;

struct Response {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// Sends `head` (a request without the final blank line) and reads the response.
async fn request(
    conn: &mut BufReader<TcpStream>,
    head: &str,
    is_head: bool,
) -> io::Result<Response> {
    conn.get_mut()
        .write_all(format!("{head}\r\n\r\n").as_bytes())
        .await?;
    let mut line = String::new();
    conn.read_line(&mut line).await?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = HashMap::new();
    loop {
        line.clear();
        conn.read_line(&mut line).await?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').expect("header");
        headers.insert(k.to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers["content-length"].parse().unwrap();
    let mut body = vec![0u8; if is_head { 0 } else { len }];
    conn.read_exact(&mut body).await?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

async fn start(
    backend: Backend,
    frames: usize,
    root: &std::path::Path,
) -> io::Result<(SocketAddr, uringcache::Cache)> {
    let cache = common::builder(backend)
        .memory_limit(frames * 4096)
        .build()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let srv = server::Server::new(cache.clone(), root);
    tokio::spawn(srv.serve(listener));
    Ok((addr, cache))
}

async fn connect(addr: SocketAddr) -> io::Result<BufReader<TcpStream>> {
    Ok(BufReader::new(TcpStream::connect(addr).await?))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

common::backend_test!(ranges_match_std_fs);
fn ranges_match_std_fs(backend: Backend) {
    runtime()
        .block_on(async {
            let dir = scratch_dir();
            let (path, _) = make_file(dir.path(), "data.bin", 300_000 + 17, 1);
            std::fs::create_dir(dir.path().join("sub"))?;
            make_file(&dir.path().join("sub"), "small", 10, 2);
            let (addr, cache) = start(backend, 256, dir.path()).await?;
            let disk = common::read_disk(&path)?;
            let len = disk.len();
            let mut conn = connect(addr).await?;
            // The whole file.
            let r = request(&mut conn, "GET /data.bin HTTP/1.1\r\nHost: x", false).await?;
            assert_eq!(r.status, 200);
            common::assert_bytes(&r.body, &disk, "whole file");
            // Ranges of every shape, on one keep-alive connection.
            for (range, a, b) in [
                ("bytes=0-0", 0, 1),
                ("bytes=0-4095", 0, 4096),
                ("bytes=4095-4096", 4095, 4097),
                ("bytes=1000-99999", 1000, 100_000),
                ("bytes=299990-", 299_990, len),
                ("bytes=-100", len - 100, len),
                ("bytes=-99999999", 0, len),
                ("bytes=300000-999999999", 300_000, len),
            ] {
                let r = request(
                    &mut conn,
                    &format!("GET /data.bin HTTP/1.1\r\nRange: {range}"),
                    false,
                )
                .await?;
                assert_eq!(r.status, 206, "{range}");
                assert_eq!(
                    r.headers["content-range"],
                    format!("bytes {a}-{}/{len}", b - 1),
                    "{range}"
                );
                common::assert_bytes(&r.body, &disk[a..b], range);
            }
            // HEAD: the headers only.
            let r = request(
                &mut conn,
                "HEAD /data.bin HTTP/1.1\r\nRange: bytes=10-19",
                true,
            )
            .await?;
            assert_eq!(r.status, 206);
            assert_eq!(r.headers["content-length"], "10");
            // Nothing in range, no such file, outside the root, a directory, a bad method.
            let r = request(
                &mut conn,
                &format!("GET /data.bin HTTP/1.1\r\nRange: bytes={len}-"),
                false,
            )
            .await?;
            assert_eq!(r.status, 416);
            assert_eq!(r.headers["content-range"], format!("bytes */{len}"));
            let r = request(&mut conn, "GET /nope HTTP/1.1", false).await?;
            assert_eq!(r.status, 404);
            let r = request(&mut conn, "GET /../etc/passwd HTTP/1.1", false).await?;
            assert_eq!(r.status, 400);
            let r = request(&mut conn, "GET /sub HTTP/1.1", false).await?;
            assert_eq!(r.status, 404);
            let r = request(
                &mut conn,
                "GET /sub/small HTTP/1.1\r\nConnection: close",
                false,
            )
            .await?;
            assert_eq!(r.status, 200);
            assert_eq!(r.body, common::read_disk(dir.path().join("sub/small"))?);
            // The server closed that connection.
            let mut rest = Vec::new();
            assert_eq!(conn.read_to_end(&mut rest).await?, 0);
            let mut conn = connect(addr).await?;
            let r = request(&mut conn, "DELETE /data.bin HTTP/1.1", false).await?;
            assert_eq!(r.status, 405);
            // Served from the cache: the file was read from the device about once.
            let s = cache.stats();
            assert!(s.pages_read <= (len as u64).div_ceil(4096) + 4, "{s}");
            assert!(s.hits > 0);
            io::Result::Ok(())
        })
        .unwrap();
}

common::backend_test!(concurrent_clients_on_a_small_cache_get_the_right_bytes);
fn concurrent_clients_on_a_small_cache_get_the_right_bytes(backend: Backend) {
    runtime()
        .block_on(async {
            let dir = scratch_dir();
            let mut files = Vec::new();
            for i in 0..3 {
                let (path, _) = make_file(dir.path(), &format!("f{i}"), 1 << 20, 10 + i as u64);
                files.push((format!("/f{i}"), common::read_disk(&path)?));
            }
            // 24 frames for 8 clients fetching up to 256 KiB each: pins must be released as the
            // socket takes the bytes, and a client that finds no frame free waits its turn.
            let (addr, _cache) = start(backend, 24, dir.path()).await?;
            let files = std::sync::Arc::new(files);
            let clients: Vec<_> = (0..8)
                .map(|c| {
                    let files = files.clone();
                    tokio::spawn(async move {
                        let mut rng = rand::rngs::StdRng::seed_from_u64(c);
                        let mut conn = connect(addr).await?;
                        for _ in 0..20 {
                            let (name, data) = &files[rng.gen_range(0..files.len())];
                            let a = rng.gen_range(0..data.len());
                            let b = (a + rng.gen_range(1..256 << 10)).min(data.len());
                            let r = request(
                                &mut conn,
                                &format!("GET {name} HTTP/1.1\r\nRange: bytes={a}-{}", b - 1),
                                false,
                            )
                            .await?;
                            assert_eq!(r.status, 206);
                            common::assert_bytes(&r.body, &data[a..b], &format!("{name} {a}-{b}"));
                        }
                        io::Result::Ok(())
                    })
                })
                .collect();
            for c in clients {
                c.await.unwrap()?;
            }
            io::Result::Ok(())
        })
        .unwrap();
}

#[test]
fn range_headers_parse_like_rfc_9110() {
    assert_eq!(parse_range("bytes=0-9", 100), RangeReq::Range(0, 10));
    assert_eq!(parse_range("bytes=90-", 100), RangeReq::Range(90, 100));
    assert_eq!(parse_range("bytes=90-1000", 100), RangeReq::Range(90, 100));
    assert_eq!(parse_range("bytes=-10", 100), RangeReq::Range(90, 100));
    assert_eq!(parse_range("bytes=-1000", 100), RangeReq::Range(0, 100));
    assert_eq!(parse_range("bytes=100-", 100), RangeReq::Unsatisfiable);
    assert_eq!(parse_range("bytes=-0", 100), RangeReq::Unsatisfiable);
    assert_eq!(parse_range("bytes=-5", 0), RangeReq::Unsatisfiable);
    assert_eq!(parse_range("bytes=5-1", 100), RangeReq::Ignore);
    assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeReq::Ignore);
    assert_eq!(parse_range("items=0-1", 100), RangeReq::Ignore);
    assert_eq!(parse_range("bytes=x-1", 100), RangeReq::Ignore);
}
