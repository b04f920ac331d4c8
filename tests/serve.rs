//! The storage server of `examples/serve` (hyper), started in-process on an ephemeral port and
//! queried with hyper's HTTP/1.1 client over real sockets: every byte it returns is checked
//! against the file on disk, on both backends.

#[path = "../examples/serve/server.rs"]
mod server;

mod common;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{make_file, scratch_dir};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rand::{Rng, SeedableRng};
use server::{parse_ranges, Ranges};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use uringcache::Backend;
use uringcache_uring::fault::{Fault, FaultSlot, OpKind};

/// A response, its body read whole.
struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.headers))
            .to_str()
            .unwrap()
    }
}

/// One client connection (keep-alive: requests go one after another on it).
struct Client {
    send: SendRequest<Empty<Bytes>>,
}

async fn connect(addr: SocketAddr) -> io::Result<Client> {
    client_on(TcpStream::connect(addr).await?).await
}

/// A client whose socket has a small receive buffer (16 KiB), so that one that stops reading
/// stalls the server's body soon.
async fn small_buffer_client(addr: SocketAddr) -> io::Result<Client> {
    let sock = TcpSocket::new_v4()?;
    sock.set_recv_buffer_size(16 << 10)?;
    client_on(sock.connect(addr).await?).await
}

async fn client_on(sock: TcpStream) -> io::Result<Client> {
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(sock))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(conn);
    Ok(Client { send })
}

impl Client {
    /// Sends `method path` with `headers`, returns the response with its body unread.
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> io::Result<hyper::Response<hyper::body::Incoming>> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "test");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Empty::new()).map_err(io::Error::other)?;
        self.send.ready().await.map_err(io::Error::other)?;
        self.send.send_request(req).await.map_err(io::Error::other)
    }

    /// Sends a request and reads the whole response.
    async fn req(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> io::Result<Resp> {
        let r = self.send(method, path, headers).await?;
        let (parts, body) = r.into_parts();
        let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            body: body.to_vec(),
        })
    }

    async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> io::Result<Resp> {
        self.req("GET", path, headers).await
    }
}

/// Starts a server of `root` on a cache of `cache` on an ephemeral port.
async fn start_with(
    cache: uringcache::Cache,
    root: &std::path::Path,
    pages_ahead: usize,
) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let srv = Arc::new(server::Server::new(cache, root)?.pages_ahead(pages_ahead));
    tokio::spawn(srv.serve(listener));
    Ok(addr)
}

async fn start(
    backend: Backend,
    frames: usize,
    root: &std::path::Path,
) -> io::Result<(SocketAddr, uringcache::Cache)> {
    let cache = common::cache_on(backend, frames);
    let addr = start_with(cache.clone(), root, server::DEFAULT_PAGES_AHEAD).await?;
    Ok((addr, cache))
}

/// The parts of a `multipart/byteranges` body: each part's `Content-Range` and bytes.
fn multipart(r: &Resp) -> Vec<(String, Vec<u8>)> {
    let ct = r.header("content-type");
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("content type {ct}"));
    let delim = format!("--{boundary}");
    let body = &r.body[..];
    let find = |from: usize, what: &[u8]| {
        body[from..]
            .windows(what.len())
            .position(|w| w == what)
            .map(|p| p + from)
    };
    let mut parts = Vec::new();
    let mut at = find(0, delim.as_bytes()).expect("a first boundary");
    assert_eq!(at, 0, "the body starts with the boundary");
    loop {
        at += delim.len();
        if body[at..].starts_with(b"--\r\n") {
            assert_eq!(at + 4, body.len(), "nothing after the closing boundary");
            return parts;
        }
        assert!(body[at..].starts_with(b"\r\n"));
        let head_end = find(at, b"\r\n\r\n").expect("part headers") + 4;
        let head = std::str::from_utf8(&body[at + 2..head_end]).unwrap();
        let range = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Range: "))
            .expect("a Content-Range in each part")
            .to_string();
        // The part's length comes from its Content-Range: data may contain anything.
        let (a, b) = range
            .strip_prefix("bytes ")
            .and_then(|r| r.split('/').next())
            .and_then(|r| r.split_once('-'))
            .unwrap();
        let n = b.parse::<usize>().unwrap() + 1 - a.parse::<usize>().unwrap();
        parts.push((range, body[head_end..head_end + n].to_vec()));
        at = head_end + n;
        assert!(
            body[at..].starts_with(b"\r\n"),
            "CRLF before the next boundary"
        );
        at += 2;
        assert!(body[at..].starts_with(delim.as_bytes()));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    common::multi_thread()
}

common::backend_test!(ranges_match_std_fs);
fn ranges_match_std_fs(backend: Backend) {
    runtime()
        .block_on(async {
            let dir = scratch_dir();
            let (path, _) = make_file(dir.path(), "data.bin", 300_000 + 17, 1);
            std::fs::create_dir(dir.path().join("sub"))?;
            make_file(&dir.path().join("sub"), "small", 10, 2);
            make_file(&dir.path().join("sub"), "a b%.txt", 5000, 3);
            let (addr, cache) = start(backend, 256, dir.path()).await?;
            let disk = common::read_disk(&path)?;
            let len = disk.len();
            let mut c = connect(addr).await?;
            // The whole file, with its validators.
            let r = c.get("/data.bin", &[]).await?;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.header("accept-ranges"), "bytes");
            assert_eq!(r.header("content-length"), len.to_string());
            assert!(r.header("etag").starts_with('"'));
            let mtime = std::fs::metadata(&path)?.modified()?;
            assert_eq!(
                httpdate::parse_http_date(r.header("last-modified")).unwrap(),
                httpdate::parse_http_date(&httpdate::fmt_http_date(mtime)).unwrap()
            );
            common::assert_bytes(&r.body, &disk, "whole file");
            // Single ranges of every shape, on one keep-alive connection.
            for (range, a, b) in [
                ("bytes=0-0", 0, 1),
                ("bytes=0-4095", 0, 4096),
                ("bytes=4095-4096", 4095, 4097),
                ("bytes=1000-99999", 1000, 100_000),
                ("bytes=299990-", 299_990, len),
                ("bytes=-100", len - 100, len),
                ("bytes=-99999999", 0, len),
                ("bytes=300000-999999999", 300_000, len),
                ("bytes=0-9, 999999-", 0, 10), // the unsatisfiable one is left out
                ("BYTES=5-5", 5, 6),
            ] {
                let r = c.get("/data.bin", &[("range", range)]).await?;
                assert_eq!(r.status, StatusCode::PARTIAL_CONTENT, "{range}");
                assert_eq!(
                    r.header("content-range"),
                    format!("bytes {a}-{}/{len}", b - 1),
                    "{range}"
                );
                assert_eq!(r.header("content-length"), (b - a).to_string());
                common::assert_bytes(&r.body, &disk[a..b], range);
            }
            // Several ranges: multipart/byteranges, in the order asked.
            let r = c
                .get("/data.bin", &[("range", "bytes=0-9,4090-8200,-5,100-100")])
                .await?;
            assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
            assert_eq!(r.header("content-length"), r.body.len().to_string());
            let parts = multipart(&r);
            let want = [(0, 10), (4090, 8201), (len - 5, len), (100, 101)];
            assert_eq!(parts.len(), want.len());
            for ((range, bytes), (a, b)) in parts.iter().zip(want) {
                assert_eq!(range, &format!("bytes {a}-{}/{len}", b - 1));
                common::assert_bytes(bytes, &disk[a..b], range);
            }
            // Ranges that are ignored: the whole file.
            for range in [
                "bytes=5-1",
                "items=0-1",
                "bytes=x-1",
                "bytes=",
                "bytes=0-,0-", // more than the file in all
            ] {
                let r = c.get("/data.bin", &[("range", range)]).await?;
                assert_eq!(r.status, StatusCode::OK, "{range}");
                common::assert_bytes(&r.body, &disk, range);
            }
            // Nothing in range: 416.
            for range in [
                format!("bytes={len}-"),
                "bytes=-0".into(),
                format!("bytes={len}-,{}-", len + 5),
            ] {
                let r = c.get("/data.bin", &[("range", &range)]).await?;
                assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
                assert_eq!(r.header("content-range"), format!("bytes */{len}"));
            }
            // HEAD: the headers only.
            let r = c
                .req("HEAD", "/data.bin", &[("range", "bytes=10-19")])
                .await?;
            assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
            assert_eq!(r.header("content-length"), "10");
            assert_eq!(r.header("content-range"), format!("bytes 10-19/{len}"));
            assert!(r.body.is_empty());
            let r = c.req("HEAD", "/data.bin", &[]).await?;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.header("content-length"), len.to_string());
            assert!(r.body.is_empty());
            // Percent-encoded names, a nested file.
            let r = c.get("/sub/a%20b%25.txt", &[]).await?;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.body, common::read_disk(dir.path().join("sub/a b%.txt"))?);
            let r = c.get("/sub/small", &[]).await?;
            assert_eq!(r.body, common::read_disk(dir.path().join("sub/small"))?);
            // An empty file: 200 with no bytes, and no range is satisfiable.
            make_file(dir.path(), "empty", 0, 0);
            let r = c.get("/empty", &[]).await?;
            assert_eq!(
                (r.status, r.header("content-length")),
                (StatusCode::OK, "0")
            );
            assert!(r.body.is_empty());
            let r = c.get("/empty", &[("range", "bytes=0-")]).await?;
            assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
            assert_eq!(r.header("content-range"), "bytes */0");
            // Not found, a directory, a bad method.
            for p in ["/nope", "/sub", "/sub/", "/", "/data.bin/x"] {
                assert_eq!(c.get(p, &[]).await?.status, StatusCode::NOT_FOUND, "{p}");
            }
            let r = c.req("DELETE", "/data.bin", &[]).await?;
            assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
            assert_eq!(r.header("allow"), "GET, HEAD");
            // Served from the cache: the file was read from the device about once.
            let s = cache.stats();
            let pages = (len as u64).div_ceil(4096);
            assert!(s.pages_read <= pages + 4 + 2, "{s}");
            assert!(s.hits > 0);
            assert_eq!(
                settled_pins(&cache).await,
                0,
                "every body's pages were released"
            );
            io::Result::Ok(())
        })
        .unwrap();
}

#[test]
fn paths_out_of_the_root_are_refused() {
    runtime()
        .block_on(async {
            let outside = scratch_dir();
            let (secret, _) = make_file(outside.path(), "secret", 100, 4);
            let dir = scratch_dir();
            let root = dir.path().join("root");
            std::fs::create_dir(&root)?;
            let (inside, data) = make_file(&root, "in", 100, 5);
            std::os::unix::fs::symlink(&secret, root.join("out-link"))?;
            std::os::unix::fs::symlink(outside.path(), root.join("out-dir"))?;
            std::os::unix::fs::symlink(&inside, root.join("in-link"))?;
            let cache = common::cache_on(Backend::Threads, 64);
            let addr = start_with(cache, &root, 4).await?;
            let mut c = connect(addr).await?;
            for p in [
                "/../secret",
                "/%2e%2e/secret",
                "/%2E%2E%2Fsecret",
                "/sub/../../secret",
                "//etc/passwd",
                "/%2Fetc%2Fpasswd",
                "/out-link",
                "/out-dir/secret",
            ] {
                let r = c.get(p, &[]).await?;
                assert_eq!(r.status, StatusCode::FORBIDDEN, "{p}");
                assert!(r.body.is_empty(), "{p}");
            }
            assert_eq!(c.get("/%ff", &[]).await?.status, StatusCode::BAD_REQUEST);
            assert_eq!(c.get("/a%00b", &[]).await?.status, StatusCode::BAD_REQUEST);
            // A link that stays inside the root is served.
            let r = c.get("/in-link", &[]).await?;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.body, data);
            io::Result::Ok(())
        })
        .unwrap();
}

common::backend_test!(conditional_requests);
fn conditional_requests(backend: Backend) {
    runtime()
        .block_on(async {
            let dir = scratch_dir();
            let (path, _) = make_file(dir.path(), "f", 20_000, 6);
            let disk = common::read_disk(&path)?;
            let (addr, _cache) = start(backend, 64, dir.path()).await?;
            let mut c = connect(addr).await?;
            let r = c.get("/f", &[]).await?;
            let etag = r.header("etag").to_string();
            let modified = r.header("last-modified").to_string();
            let t = httpdate::parse_http_date(&modified).unwrap();
            let day = Duration::from_secs(86_400);
            let before = httpdate::fmt_http_date(t - day);
            let after = httpdate::fmt_http_date(t + day);
            let weak = format!("W/{etag}");
            let list = format!("\"nope\", {etag}");
            let check = |r: &Resp, want: StatusCode, what: &str| {
                assert_eq!(r.status, want, "{what}");
                if want != StatusCode::OK && want != StatusCode::PARTIAL_CONTENT {
                    assert!(r.body.is_empty(), "{what}");
                }
                if want == StatusCode::NOT_MODIFIED {
                    assert_eq!(r.header("etag"), etag, "{what}");
                    assert_eq!(r.header("last-modified"), modified, "{what}");
                }
            };
            use StatusCode as S;
            let cases: Vec<(Vec<(&str, &str)>, StatusCode)> = vec![
                (vec![("if-none-match", &etag)], S::NOT_MODIFIED),
                (vec![("if-none-match", &weak)], S::NOT_MODIFIED),
                (vec![("if-none-match", &list)], S::NOT_MODIFIED),
                (vec![("if-none-match", "*")], S::NOT_MODIFIED),
                (vec![("if-none-match", "\"nope\"")], S::OK),
                (vec![("if-modified-since", &modified)], S::NOT_MODIFIED),
                (vec![("if-modified-since", &after)], S::NOT_MODIFIED),
                (vec![("if-modified-since", &before)], S::OK),
                (vec![("if-modified-since", "not a date")], S::OK),
                // If-None-Match wins over If-Modified-Since.
                (
                    vec![
                        ("if-none-match", "\"nope\""),
                        ("if-modified-since", &modified),
                    ],
                    S::OK,
                ),
                (vec![("if-match", &etag)], S::OK),
                (vec![("if-match", "*")], S::OK),
                (vec![("if-match", &list)], S::OK),
                (vec![("if-match", "\"nope\"")], S::PRECONDITION_FAILED),
                (vec![("if-match", &weak)], S::PRECONDITION_FAILED), // strong comparison
                (
                    vec![("if-unmodified-since", &before)],
                    S::PRECONDITION_FAILED,
                ),
                (vec![("if-unmodified-since", &modified)], S::OK),
                // If-Match wins over If-Unmodified-Since.
                (
                    vec![("if-match", &etag), ("if-unmodified-since", &before)],
                    S::OK,
                ),
                // A failed If-Match beats a Range.
                (
                    vec![("if-match", "\"nope\""), ("range", "bytes=0-9")],
                    S::PRECONDITION_FAILED,
                ),
            ];
            for (headers, want) in &cases {
                let r = c.get("/f", headers).await?;
                check(&r, *want, &format!("{headers:?}"));
                if *want == S::OK {
                    common::assert_bytes(&r.body, &disk, &format!("{headers:?}"));
                }
            }
            // If-Range: the ranges if the validator matches, else the whole file.
            for (if_range, partial) in [
                (etag.as_str(), true),
                (modified.as_str(), true),
                ("\"nope\"", false),
                (weak.as_str(), false),
                (before.as_str(), false),
                ("garbage", false),
            ] {
                let r = c
                    .get("/f", &[("range", "bytes=100-199"), ("if-range", if_range)])
                    .await?;
                if partial {
                    assert_eq!(r.status, S::PARTIAL_CONTENT, "If-Range {if_range}");
                    common::assert_bytes(&r.body, &disk[100..200], if_range);
                } else {
                    assert_eq!(r.status, S::OK, "If-Range {if_range}");
                    common::assert_bytes(&r.body, &disk, if_range);
                }
            }
            // The validators do not change between requests, and differ between files.
            assert_eq!(c.get("/f", &[]).await?.header("etag"), etag);
            make_file(dir.path(), "g", 20_001, 7);
            assert_ne!(c.get("/g", &[]).await?.header("etag"), etag);
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
            // 24 frames for 8 clients fetching up to 256 KiB each, several ranges at times:
            // bodies must give frames back when the cache runs out, and take turns.
            let (addr, cache) = start(backend, 24, dir.path()).await?;
            let files = Arc::new(files);
            let clients: Vec<_> = (0..8)
                .map(|c| {
                    let files = files.clone();
                    tokio::spawn(async move {
                        let mut rng = rand::rngs::StdRng::seed_from_u64(c);
                        let mut conn = connect(addr).await?;
                        for _ in 0..12 {
                            let (name, data) = &files[rng.gen_range(0..files.len())];
                            let a = rng.gen_range(0..data.len());
                            let b = (a + rng.gen_range(1..256 << 10)).min(data.len());
                            if rng.gen_bool(0.2) && b - a > 2 {
                                let m = (a + b) / 2;
                                let range = format!("bytes={a}-{},{m}-{}", m - 1, b - 1);
                                let r = conn.get(name, &[("range", &range)]).await?;
                                assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
                                let parts = multipart(&r);
                                assert_eq!(parts.len(), 2);
                                common::assert_bytes(&parts[0].1, &data[a..m], &range);
                                common::assert_bytes(&parts[1].1, &data[m..b], &range);
                                continue;
                            }
                            let range = format!("bytes={a}-{}", b - 1);
                            let r = conn.get(name, &[("range", &range)]).await?;
                            assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
                            common::assert_bytes(&r.body, &data[a..b], &format!("{name} {range}"));
                        }
                        io::Result::Ok(())
                    })
                })
                .collect();
            for c in clients {
                c.await.unwrap()?;
            }
            assert_eq!(settled_pins(&cache).await, 0);
            io::Result::Ok(())
        })
        .unwrap();
}

/// Polls `cache.stats().pinned_pages` until it has not changed for 200 ms; returns it.
async fn settled_pins(cache: &uringcache::Cache) -> usize {
    let mut last = usize::MAX;
    let mut since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = cache.stats().pinned_pages;
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() > Duration::from_millis(200) || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

common::backend_test!(a_client_that_stops_reading_pins_a_bounded_number_of_pages);
fn a_client_that_stops_reading_pins_a_bounded_number_of_pages(backend: Backend) {
    runtime()
        .block_on(async {
            let dir = scratch_dir();
            // Larger than what loopback socket buffers hold, so that the server blocks.
            let (path, _) = make_file(dir.path(), "big", 16 << 20, 8);
            let disk = common::read_disk(&path)?;
            let cache = common::cache_on(backend, 512);
            // The gauge itself: pages held by handles.
            {
                let f = cache.open(&path, &common::ro()).await?;
                let pages = [f.page(0).await?, f.page(1).await?, f.page(7).await?];
                assert_eq!(cache.stats().pinned_pages, 3);
                let b = pages[0].len();
                drop(pages);
                assert_eq!((b, cache.stats().pinned_pages), (4096, 0));
            }
            const AHEAD: usize = 8;
            let addr = start_with(cache.clone(), dir.path(), AHEAD).await?;
            // A client with a small receive buffer that reads the head and then nothing.
            let mut slow = small_buffer_client(addr).await?;
            let r = slow.send("GET", "/big", &[]).await?;
            assert_eq!(r.status(), StatusCode::OK);
            let pinned = settled_pins(&cache).await;
            // The body's pages ahead, the frames hyper queues (at most 16), and one in hand.
            assert!(
                (1..=AHEAD + 16 + 1).contains(&pinned),
                "a stalled client holds {pinned} pages"
            );
            // The rest of the cache still serves others, every byte right.
            let mut fast = connect(addr).await?;
            let r2 = fast.get("/big", &[]).await?;
            assert_eq!(r2.status, StatusCode::OK);
            common::assert_bytes(&r2.body, &disk, "the other client's copy");
            assert!(cache.stats().pinned_pages <= AHEAD + 16 + 1);
            // The slow client reads on and gets the whole file.
            let body = r
                .into_body()
                .collect()
                .await
                .map_err(io::Error::other)?
                .to_bytes();
            common::assert_bytes(&body, &disk, "the slow client's copy");
            assert_eq!(settled_pins(&cache).await, 0);
            // A client that goes away mid-body releases its pages too.
            let mut gone = small_buffer_client(addr).await?;
            let r = gone.send("GET", "/big", &[]).await?;
            assert!(settled_pins(&cache).await > 0);
            drop((r, gone));
            assert_eq!(settled_pins(&cache).await, 0);
            io::Result::Ok(())
        })
        .unwrap();
}

common::backend_test!(a_stalled_client_on_a_small_cache_leaves_room_for_others);
fn a_stalled_client_on_a_small_cache_leaves_room_for_others(backend: Backend) {
    runtime()
        .block_on(async {
            let dir = scratch_dir();
            let (path, _) = make_file(dir.path(), "big", 8 << 20, 12);
            let disk = common::read_disk(&path)?;
            // 40 frames: a stalled client holds at most 8 + 16 + 1 of them; another client's
            // body (8 ahead, and what its connection queues) makes do with the rest.
            let cache = common::cache_on(backend, 40);
            let addr = start_with(cache.clone(), dir.path(), 8).await?;
            let mut slow = small_buffer_client(addr).await?;
            let r = slow.send("GET", "/big", &[]).await?;
            let held = settled_pins(&cache).await;
            assert!((1..=25).contains(&held), "the stalled client holds {held}");
            let others = async {
                let mut c = connect(addr).await?;
                for (a, b) in [(100_000, 400_000), (6 << 20, (6 << 20) + 65_536)] {
                    let range = format!("bytes={a}-{}", b - 1);
                    let r = c.get("/big", &[("range", &range)]).await?;
                    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
                    common::assert_bytes(&r.body, &disk[a..b], &range);
                }
                io::Result::Ok(())
            };
            tokio::time::timeout(Duration::from_secs(20), others)
                .await
                .expect("the other client was served in time")?;
            let body = r
                .into_body()
                .collect()
                .await
                .map_err(io::Error::other)?
                .to_bytes();
            common::assert_bytes(&body, &disk, "the stalled client's copy");
            assert_eq!(settled_pins(&cache).await, 0);
            io::Result::Ok(())
        })
        .unwrap();
}

common::backend_test!(a_device_error_mid_body_aborts_the_response_and_the_server_goes_on);
fn a_device_error_mid_body_aborts_the_response_and_the_server_goes_on(backend: Backend) {
    runtime()
        .block_on(async {
            let dir = scratch_dir();
            let (path, _) = make_file(dir.path(), "f", 1 << 20, 9);
            let disk = common::read_disk(&path)?;
            let faults = FaultSlot::new();
            let cache = common::builder(backend)
                .memory_limit(64 * 4096)
                .wrap_backend(faults.layer())
                .build()?;
            let fault = faults.get();
            let addr = start_with(cache.clone(), dir.path(), 4).await?;
            let mut c = connect(addr).await?;
            let r = c.get("/f", &[("range", "bytes=0-99")]).await?;
            assert_eq!(r.body, &disk[..100]);
            fault.inject(OpKind::Read, Fault::Fail(libc::EIO), None);
            // The first page cannot be read: 500 (the cause is logged, not sent).
            let r = c.get("/f", &[("range", "bytes=500000-")]).await?;
            assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(r.body, b"internal server error\n");
            // The first page is cached, a later one fails: the head went out, the body ends
            // in an error (the connection is closed before the promised length).
            // (hyper may not have flushed the head before the error: then the connection
            // closes with no response at all.) Never a whole body.
            match c.send("GET", "/f", &[]).await {
                Ok(r) => {
                    assert_eq!(r.status(), StatusCode::OK);
                    assert!(r.into_body().collect().await.is_err());
                }
                Err(e) => assert!(
                    e.to_string().contains("closed before message completed"),
                    "{e}"
                ),
            }
            fault.clear();
            let mut c = connect(addr).await?;
            let r = c.get("/f", &[]).await?;
            common::assert_bytes(&r.body, &disk, "after the fault");
            assert_eq!(settled_pins(&cache).await, 0);
            io::Result::Ok(())
        })
        .unwrap();
}

#[test]
fn range_headers_parse_like_rfc_9110() {
    use Ranges::*;
    let one = |a, b| Satisfiable(vec![(a, b)]);
    assert_eq!(parse_ranges("bytes=0-9", 100), one(0, 10));
    assert_eq!(parse_ranges("bytes=90-", 100), one(90, 100));
    assert_eq!(parse_ranges("bytes=90-1000", 100), one(90, 100));
    assert_eq!(parse_ranges("bytes=-10", 100), one(90, 100));
    assert_eq!(parse_ranges("bytes=-1000", 100), one(0, 100));
    assert_eq!(parse_ranges(" Bytes = 1-2", 100), Ignore); // no spaces around `=`
    assert_eq!(
        parse_ranges("bytes= 1-2 ,, 5-6 ", 100),
        Satisfiable(vec![(1, 3), (5, 7)])
    );
    assert_eq!(
        parse_ranges("bytes=0-1,5-6", 100),
        Satisfiable(vec![(0, 2), (5, 7)])
    );
    assert_eq!(parse_ranges("bytes=0-1,200-300", 100), one(0, 2));
    assert_eq!(parse_ranges("bytes=100-", 100), Unsatisfiable);
    assert_eq!(parse_ranges("bytes=100-,200-", 100), Unsatisfiable);
    assert_eq!(parse_ranges("bytes=-0", 100), Unsatisfiable);
    assert_eq!(parse_ranges("bytes=-5", 0), Unsatisfiable);
    assert_eq!(parse_ranges("bytes=0-", 0), Unsatisfiable);
    assert_eq!(parse_ranges("bytes=5-1", 100), Ignore);
    assert_eq!(parse_ranges("bytes=0-1,5-1", 100), Ignore);
    assert_eq!(parse_ranges("items=0-1", 100), Ignore);
    assert_eq!(parse_ranges("bytes=x-1", 100), Ignore);
    assert_eq!(parse_ranges("bytes=+1-2", 100), Ignore);
    assert_eq!(parse_ranges("bytes=1", 100), Ignore);
    assert_eq!(parse_ranges("bytes=", 100), Ignore);
    assert_eq!(parse_ranges("bytes=99999999999999999999-", 100), Ignore);
    assert_eq!(parse_ranges("bytes=0-60,40-99", 100), Ignore); // more bytes than the file
    let many = format!("bytes={}", vec!["0-0"; server::MAX_RANGES + 1].join(","));
    assert_eq!(parse_ranges(&many, 1000), Ignore);
    let max = format!("bytes={}", vec!["0-0"; server::MAX_RANGES].join(","));
    assert!(matches!(parse_ranges(&max, 1000), Satisfiable(v) if v.len() == server::MAX_RANGES));
}
