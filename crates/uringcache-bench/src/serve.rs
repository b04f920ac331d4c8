//! The `serve` workload (`--workload serve`, not in the default run): HTTP range reads on
//! loopback against two storage servers at the same memory.
//!
//! * **uringcache** — `examples/serve`'s hyper server (included from there), bodies of pinned
//!   cache pages, on a cache whose budget is `--budget`; in this process.
//! * **tower-http `ServeDir`** — `tokio::fs` reads through the kernel's page cache, on hyper
//!   too, in a child process (this program again) placed in a memory cgroup whose limit is
//!   the same budget (`cgroup.rs`), so that the kernel keeps no more of the files than
//!   uringcache may. Where no cgroup can be made it runs unbounded, and the table says so.
//!
//! Both servers run on a tokio runtime of 2 workers; the load loop runs in this process on
//! another runtime of 2 workers: 64 keep-alive connections (hyper's HTTP/1.1 client), each
//! sending `GET` with a `Range` of a seeded random length (4 KiB to 1 MiB, whole blocks) at a
//! seeded random block of one of two files each twice the budget, one request after another.
//! Every body is checked as it streams in (the block number every 4 KiB block of a scratch
//! file starts with, `data.rs`) and its length must be the range's. A warm-up (1 s; quick
//! 0.3 s) fills the caches, then the timed section runs for a fixed time (5 s; quick 1.5 s)
//! or a fixed count of requests, whichever ends first; requests/s, MB/s and the latency of
//! each request (send to last byte; p50, p99 from an HDR histogram) are taken over it.
//! Before each turn the kernel's copy of the files is dropped and uringcache starts from a
//! fresh cache; the contenders alternate A B A B for `--rounds` rounds.

#[path = "../../../examples/serve/server.rs"]
mod server;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Either, Empty};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};

use crate::args::Config;
use crate::cgroup::MemCgroup;
use crate::data::{self, BLOCK};
use crate::workloads::human;

/// The argument that makes a cgroup child serve `ServeDir` (see [`is_child`]).
pub const CHILD_ARG: &str = "--serve-child";
/// The path that tells the child's server to stop (answered `204`).
const STOP_PATH: &str = "/.uringcache-bench-stop";
/// Connections of the load loop.
const CONNECTIONS: usize = 64;
/// The cgroup's room beyond the budget during the warm-up, for the server's own memory.
const WARMUP_HEADROOM: u64 = 256 << 20;
/// Room left for the server's own memory to grow after the warm-up.
const ANON_SLACK: u64 = 4 << 20;
/// The largest range, in blocks (1 MiB).
const MAX_BLOCKS: u64 = 256;

/// The load to run: which files, for how long.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Load {
    /// The request paths (`/name`) and lengths of the files.
    pub files: Vec<(String, u64)>,
    /// Connections, one request at a time each.
    pub connections: usize,
    /// Seed of every connection's offsets and lengths.
    pub seed: u64,
    /// Untimed warm-up.
    pub warmup: Duration,
    /// The timed section's length, at most.
    pub time: Duration,
    /// The timed section's requests, at most.
    pub max_requests: u64,
}

/// What one turn measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// Requests completed in the timed section.
    pub requests: u64,
    /// Body bytes received in it.
    pub bytes: u64,
    /// Its length in seconds.
    pub secs: f64,
    /// Latency percentiles of a request, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.secs
    }
}

/// The cgroup child's request: serve `dir` with `ServeDir` on `port` until told to stop.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChildRequest {
    /// The directory served.
    pub dir: PathBuf,
    /// The loopback port to listen on.
    pub port: u16,
}

/// Whether this process is the `serve` workload's cgroup child (started with [`CHILD_ARG`]).
pub fn is_child() -> bool {
    std::env::args().any(|a| a == CHILD_ARG)
}

/// The cgroup child's turn: `ServeDir` of the request's directory on its port, until a request
/// of [`STOP_PATH`] arrives; answers the number of requests served.
pub fn child_turn(req: ChildRequest) -> Result<u64, String> {
    let rt = runtime().map_err(|e| e.to_string())?;
    rt.block_on(serve_dir(
        req.dir,
        SocketAddr::from(([127, 0, 0, 1], req.port)),
    ))
    .map_err(|e| e.to_string())
}

/// A tokio runtime of 2 workers (one per core of the machine the figures come from).
fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// Serves `dir` with tower-http's `ServeDir` on hyper at `addr` until a request of
/// [`STOP_PATH`]; returns the requests served.
async fn serve_dir(dir: PathBuf, addr: SocketAddr) -> io::Result<u64> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("ServeDir: bind {addr}: {e}")))?;
    let served = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(tokio::sync::Notify::new());
    let serve_dir = tower_http::services::ServeDir::new(dir);
    loop {
        let (sock, _) = tokio::select! {
            r = listener.accept() => r?,
            () = stop.notified() => return Ok(served.load(Ordering::Relaxed)),
        };
        let _ = sock.set_nodelay(true);
        let (sd, served, stop) = (serve_dir.clone(), served.clone(), stop.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (mut sd, served, stop) = (sd.clone(), served.clone(), stop.clone());
                async move {
                    if req.uri().path() == STOP_PATH {
                        stop.notify_one();
                        let mut r = Response::new(Either::Right(Empty::<Bytes>::new()));
                        *r.status_mut() = StatusCode::NO_CONTENT;
                        return Ok::<_, Infallible>(r);
                    }
                    served.fetch_add(1, Ordering::Relaxed);
                    Ok(match sd.try_call(req).await {
                        Ok(r) => r.map(Either::Left),
                        Err(e) => {
                            tracing::error!(error = %e, "ServeDir failed");
                            let mut r = Response::new(Either::Right(Empty::new()));
                            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                            r
                        }
                    })
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(sock), svc)
                .await;
        });
    }
}

/// Checks the block tags of a body as it streams in, frame by frame (a tag may be split
/// between frames).
struct TagCheck {
    /// The file offset of the next byte.
    pos: u64,
    tag: [u8; 8],
}

impl TagCheck {
    fn new(offset: u64) -> TagCheck {
        TagCheck {
            pos: offset,
            tag: [0; 8],
        }
    }

    fn feed(&mut self, mut d: &[u8]) -> io::Result<()> {
        let block = BLOCK as u64;
        while !d.is_empty() {
            let within = (self.pos % block) as usize;
            if within < 8 {
                let n = (8 - within).min(d.len());
                self.tag[within..within + n].copy_from_slice(&d[..n]);
                if within + n == 8 {
                    let at = self.pos - within as u64;
                    data::check(&self.tag, at)?;
                }
                d = &d[n..];
                self.pos += n as u64;
            } else {
                let n = (BLOCK - within).min(d.len());
                d = &d[n..];
                self.pos += n as u64;
            }
        }
        Ok(())
    }
}

/// Runs `load` against the server at `addr`: the warm-up, then the timed section.
fn run_load(load: &Load, addr: SocketAddr) -> io::Result<Outcome> {
    let rt = runtime()?;
    rt.block_on(async {
        let started = Instant::now();
        let timed_from = started + load.warmup;
        let end = timed_from + load.time;
        let count = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let files = Arc::new(load.files.clone());
        let tasks: Vec<_> = (0..load.connections)
            .map(|c| {
                let (files, count, bytes) = (files.clone(), count.clone(), bytes.clone());
                let (seed, max) = (load.seed, load.max_requests);
                tokio::spawn(async move {
                    connection(
                        addr,
                        &files,
                        seed ^ (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                        timed_from,
                        end,
                        max,
                        &count,
                        &bytes,
                    )
                    .await
                })
            })
            .collect();
        let mut hist =
            Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).map_err(io::Error::other)?;
        let mut first_err = None;
        for t in tasks {
            match t.await.map_err(io::Error::other)? {
                Ok(h) => hist.add(&h).map_err(io::Error::other)?,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        let secs = (Instant::now().min(end) - timed_from)
            .as_secs_f64()
            .max(1e-9);
        let requests = count.load(Ordering::Relaxed).min(load.max_requests);
        Ok(Outcome {
            requests,
            bytes: bytes.load(Ordering::Relaxed),
            secs,
            p50_us: hist.value_at_quantile(0.50),
            p99_us: hist.value_at_quantile(0.99),
        })
    })
}

/// One connection's loop: requests until `end` (or `max` timed requests in all), recorded
/// once `timed_from` has passed.
#[allow(clippy::too_many_arguments)]
async fn connection(
    addr: SocketAddr,
    files: &[(String, u64)],
    seed: u64,
    timed_from: Instant,
    end: Instant,
    max: u64,
    count: &AtomicU64,
    bytes: &AtomicU64,
) -> io::Result<Histogram<u64>> {
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).map_err(io::Error::other)?;
    let sock = connect_retrying(addr).await?;
    let _ = sock.set_nodelay(true);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(sock))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(conn);
    let mut rng = StdRng::seed_from_u64(seed);
    let block = BLOCK as u64;
    loop {
        let now = Instant::now();
        if now >= end {
            return Ok(hist);
        }
        let timed = now >= timed_from;
        if timed && count.load(Ordering::Relaxed) >= max {
            return Ok(hist);
        }
        let (path, len) = &files[rng.gen_range(0..files.len())];
        let n = rng.gen_range(1..=MAX_BLOCKS).min(len / block);
        let offset = rng.gen_range(0..=len / block - n) * block;
        let range = format!("bytes={offset}-{}", offset + n * block - 1);
        let req = Request::get(path.as_str())
            .header(hyper::header::HOST, "bench")
            .header(hyper::header::RANGE, &range)
            .body(Empty::<Bytes>::new())
            .map_err(io::Error::other)?;
        let t = Instant::now();
        send.ready().await.map_err(io::Error::other)?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| io::Error::other(format!("GET {path} {range}: {e}")))?;
        if resp.status() != StatusCode::PARTIAL_CONTENT {
            return Err(io::Error::other(format!(
                "GET {path} {range}: status {}",
                resp.status()
            )));
        }
        let mut body = resp.into_body();
        let mut check = TagCheck::new(offset);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| io::Error::other(format!("GET {path} {range}: {e}")))?;
            if let Some(d) = frame.data_ref() {
                check
                    .feed(d)
                    .map_err(|e| io::Error::new(e.kind(), format!("GET {path} {range}: {e}")))?;
            }
        }
        let got = check.pos - offset;
        if got != n * block {
            return Err(io::Error::other(format!(
                "GET {path} {range}: {got} bytes, not {}",
                n * block
            )));
        }
        let done = Instant::now();
        if timed && done <= end {
            hist.record(done.duration_since(t).as_micros().max(1) as u64)
                .map_err(io::Error::other)?;
            count.fetch_add(1, Ordering::Relaxed);
            bytes.fetch_add(got, Ordering::Relaxed);
        }
    }
}

/// Connects to `addr`, retrying for 10 s while the server is starting.
async fn connect_retrying(addr: SocketAddr) -> io::Result<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() < deadline && e.kind() == io::ErrorKind::ConnectionRefused => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("connect to {addr}: {e}"))),
        }
    }
}

/// A free loopback port (bound and released: the child binds it next).
fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Asks the `ServeDir` server at `addr` to stop.
fn stop_server(addr: SocketAddr) -> io::Result<()> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(
        s,
        "GET {STOP_PATH} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )?;
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    Ok(())
}

/// A turn of uringcache's server: a fresh cache of `budget`, in this process.
fn uringcache_turn(dir: &Path, budget: u64, load: &Load) -> io::Result<(Outcome, String)> {
    let rt = runtime()?;
    let cache = uringcache::Cache::builder()
        .memory_limit(budget as usize)
        .build()?;
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let srv = Arc::new(server::Server::new(cache.clone(), dir)?);
    let task = rt.spawn(srv.serve(listener));
    let out = run_load(load, addr);
    task.abort();
    let s = cache.stats();
    // (`Stats::hits` counts the pages the bodies' own read-ahead brought in, so the device
    // figures say more.)
    let note = format!(
        "{} device reads of {} KiB on average ({} in all, warm-up included), {} backend",
        s.device_reads,
        s.device_read_bytes / s.device_reads.max(1) / 1024,
        human(s.device_read_bytes),
        s.backend
    );
    drop(rt);
    Ok((out?, note))
}

/// A turn of `ServeDir`: in a child process in `cg` (or in this process when there is none).
fn serve_dir_turn(
    dir: &Path,
    cg: Option<&MemCgroup>,
    budget: u64,
    load: &Load,
) -> io::Result<(Outcome, String)> {
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let req = ChildRequest {
        dir: dir.to_path_buf(),
        port,
    };
    match cg {
        Some(cg) => {
            // The server's own memory (runtime, threads, sockets' buffers) is not page cache:
            // room for it during the warm-up, then the budget plus what it took.
            cg.set_limit(budget + WARMUP_HEADROOM)?;
            let (out, limit) = std::thread::scope(|s| {
                let child =
                    s.spawn(|| cg.run_in_child::<_, Result<u64, String>>(&[CHILD_ARG], &req));
                let limiter = s.spawn(|| {
                    std::thread::sleep(load.warmup.mul_f64(0.7));
                    let (anon, _) = cg.charged()?;
                    let limit = budget + anon + ANON_SLACK;
                    cg.set_limit(limit)?;
                    cg.reset_peak()?;
                    io::Result::Ok((anon, limit))
                });
                let out = run_load(load, addr);
                let stopped = stop_server(addr);
                let served = child
                    .join()
                    .map_err(|_| io::Error::other("the child's thread panicked"))
                    .and_then(|r| r)
                    .and_then(|r| r.map_err(io::Error::other));
                let limit = limiter
                    .join()
                    .map_err(|_| io::Error::other("the limiter thread panicked"))
                    .and_then(|r| r);
                let out = match (out, served) {
                    (Ok(o), Ok(_)) => stopped.map(|()| o).map_err(|e| {
                        io::Error::new(e.kind(), format!("stop the ServeDir child: {e}"))
                    }),
                    (Err(e), served) => Err(io::Error::new(
                        e.kind(),
                        format!("the load against ServeDir: {e} (the child: {served:?})"),
                    )),
                    (Ok(_), Err(e)) => {
                        Err(io::Error::new(e.kind(), format!("the ServeDir child: {e}")))
                    }
                };
                io::Result::Ok((out?, limit?))
            })?;
            let ((anon, limit), peak) = (limit, cg.peak().unwrap_or(0));
            let cache = cg.charged().map(|(_, c)| c).unwrap_or(0);
            Ok((
                out,
                format!(
                    "cgroup limit {} = budget + the server's {} of anonymous memory + {} slack; peak {}; page cache at the end {}",
                    human(limit),
                    human(anon),
                    human(ANON_SLACK),
                    human(peak),
                    human(cache)
                ),
            ))
        }
        None => {
            let server = std::thread::spawn(move || child_turn(req));
            let out = run_load(load, addr);
            stop_server(addr)?;
            let _ = server.join();
            Ok((out?, "unbounded (no cgroup)".into()))
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The `serve` workload: makes its files, runs the rounds, prints the table.
pub fn run(cfg: &Config) -> io::Result<()> {
    let mut scratch = data::Scratch::new(cfg.dir.as_deref())?;
    let file_len = 2 * cfg.budget;
    let mut files = Vec::new();
    let mut paths = Vec::new();
    for name in ["serve-a.dat", "serve-b.dat"] {
        eprintln!("writing {name} ({}) …", human(file_len));
        let (p, _) = scratch.create(name, file_len)?;
        data::read_direct(&p)?;
        data::drop_kernel_cache(&p)?;
        files.push((format!("/{name}"), file_len));
        paths.push(p);
    }
    let load = Load {
        files,
        connections: CONNECTIONS,
        seed: cfg.seed,
        warmup: Duration::from_millis(if cfg.quick { 300 } else { 1000 }),
        time: Duration::from_millis(if cfg.quick { 1500 } else { 5000 }),
        max_requests: if cfg.quick { 50_000 } else { 500_000 },
    };
    let cg = match MemCgroup::create("serve", cfg.budget) {
        Ok(cg) => Some(cg),
        Err(e) => {
            eprintln!("serve: no memory cgroup, ServeDir runs unbounded: {e}");
            None
        }
    };
    let names = [
        "uringcache (examples/serve, hyper, pinned pages)",
        "tower-http ServeDir (tokio::fs, kernel cache)",
    ];
    let mut rows: [Vec<(Outcome, String)>; 2] = [Vec::new(), Vec::new()];
    for round in 0..cfg.rounds {
        // B A B A … would favour nobody either; A (the kernel) first, as the other workloads.
        for which in [1, 0] {
            for p in &paths {
                data::drop_kernel_cache(p)?;
            }
            let mut load = load.clone();
            load.seed = cfg.seed.wrapping_add(round as u64);
            eprintln!(
                "serve · round {}/{} · {}",
                round + 1,
                cfg.rounds,
                names[which]
            );
            let r = if which == 0 {
                uringcache_turn(&scratch.dir, cfg.budget, &load)?
            } else {
                serve_dir_turn(&scratch.dir, cg.as_ref(), cfg.budget, &load)?
            };
            eprintln!(
                "  {:.0} req/s, {:.0} MB/s, p50 {} µs, p99 {} µs ({})",
                r.0.rate(),
                r.0.bytes as f64 / r.0.secs / 1e6,
                r.0.p50_us,
                r.0.p99_us,
                r.1
            );
            rows[which].push(r);
        }
    }
    println!(
        "\n## serve: {CONNECTIONS} connections, random 4 KiB–1 MiB ranges over 2 files of {} (budget {}), {} round(s), median (min–max)\n",
        human(file_len),
        human(cfg.budget),
        cfg.rounds
    );
    println!("| server | requests/s | MB/s | p50 ms | p99 ms | notes |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut medians = [0.0; 2];
    for (i, r) in rows.iter().enumerate() {
        let mut rate: Vec<f64> = r.iter().map(|(o, _)| o.rate()).collect();
        let mut mbs: Vec<f64> = r
            .iter()
            .map(|(o, _)| o.bytes as f64 / o.secs / 1e6)
            .collect();
        let mut p50: Vec<f64> = r.iter().map(|(o, _)| o.p50_us as f64 / 1e3).collect();
        let mut p99: Vec<f64> = r.iter().map(|(o, _)| o.p99_us as f64 / 1e3).collect();
        let (lo, hi) = rate
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        medians[i] = median(&mut rate);
        println!(
            "| {} | {:.0} ({lo:.0}–{hi:.0}) | {:.0} | {:.1} | {:.1} | {} |",
            names[i],
            medians[i],
            median(&mut mbs),
            median(&mut p50),
            median(&mut p99),
            r.last().map_or("", |(_, n)| n.as_str())
        );
    }
    println!(
        "\nuringcache / ServeDir requests/s: {:.2}x (target 1.5x)",
        medians[0] / medians[1]
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_checked_across_frames() {
        let mut buf = vec![0u8; 3 * BLOCK];
        for b in 0..3u64 {
            buf[b as usize * BLOCK..][..8].copy_from_slice(&(b + 10).to_le_bytes());
        }
        let at = 10 * BLOCK as u64;
        for split in [1, 3, 7, 8, 4095, 4096, 4100, 8195] {
            let mut c = TagCheck::new(at);
            c.feed(&buf[..split]).unwrap();
            c.feed(&buf[split..]).unwrap();
            assert_eq!(c.pos, at + buf.len() as u64);
        }
        let mut bad = buf.clone();
        bad[BLOCK + 3] ^= 1;
        let mut c = TagCheck::new(at);
        assert!(c.feed(&bad[..BLOCK + 2]).is_ok());
        assert!(c.feed(&bad[BLOCK + 2..]).is_err());
    }

    /// Both servers under a short load, in this process: every body checked.
    #[test]
    fn both_servers_serve_checked_ranges() {
        let dir = tempfile_dir();
        let len = 4 << 20;
        let mut scratch = crate::data::Scratch::new(Some(&dir)).unwrap();
        scratch.create("f.dat", len).unwrap();
        let load = Load {
            files: vec![("/f.dat".into(), len)],
            connections: 4,
            seed: 1,
            warmup: Duration::from_millis(50),
            time: Duration::from_millis(300),
            max_requests: 200,
        };
        let (u, _) = uringcache_turn(&dir, 2 << 20, &load).unwrap();
        assert!(u.requests > 0 && u.bytes > 0, "{u:?}");
        let (k, note) = serve_dir_turn(&dir, None, 2 << 20, &load).unwrap();
        assert!(k.requests > 0 && k.bytes > 0, "{k:?}");
        assert!(note.contains("unbounded"));
        drop(scratch);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "uringcache-bench-serve-test-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
