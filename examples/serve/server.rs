//! A tiny HTTP/1.1 file server that sends byte ranges of files straight from the uringcache:
//! every page of a response is a zero-copy [`Bytes`] of the cached page (`File::read_bytes`
//! within one page), pinned only until the socket has taken it.
//!
//! What it speaks: `GET` and `HEAD` of `/path` (relative to the served root; no `..`, no
//! percent-decoding), an optional single `Range: bytes=a-b` / `bytes=a-` / `bytes=-n` header
//! (answered `206 Partial Content`, or `416 Range Not Satisfiable`; several ranges are ignored
//! and the whole file sent, as the RFC allows), keep-alive (`Connection: close` ends it).
//! Anything else gets a short error status.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Pages gathered (and pinned) before one vectored write to the socket.
const BATCH_PAGES: usize = 16;
/// The longest request head accepted.
const MAX_HEAD: usize = 16 << 10;

/// What the server needs: the cache, the directory it serves, and the files it has opened.
///
/// A file stays open (in `files`) once served: a file's cached pages live as long as a handle
/// of it is open. The cache owns the files it serves, as with any buffer pool: a file changed
/// on disk by another program meanwhile is not seen.
pub struct Server {
    cache: uringcache::Cache,
    root: PathBuf,
    files: Mutex<HashMap<PathBuf, uringcache::File>>,
}

impl Server {
    /// A server of the files under `root`, through `cache`.
    pub fn new(cache: uringcache::Cache, root: impl Into<PathBuf>) -> Arc<Server> {
        Arc::new(Server {
            cache,
            root: root.into(),
            files: Mutex::new(HashMap::new()),
        })
    }

    /// Accepts connections on `listener` forever, one task each.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> io::Result<()> {
        loop {
            let (sock, peer) = listener.accept().await?;
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.connection(sock).await {
                    if e.kind() != io::ErrorKind::ConnectionReset
                        && e.kind() != io::ErrorKind::BrokenPipe
                    {
                        eprintln!("serve: {peer}: {e}");
                    }
                }
            });
        }
    }

    /// Serves requests on one connection until it closes.
    async fn connection(&self, sock: TcpStream) -> io::Result<()> {
        sock.set_nodelay(true)?;
        let (rd, mut wr) = sock.into_split();
        let mut rd = BufReader::new(rd);
        loop {
            let Some(req) = read_request(&mut rd).await? else {
                return Ok(());
            };
            let close = req.close;
            match req.error {
                Some(status) => {
                    respond_empty(&mut wr, status, &[]).await?;
                    return Ok(());
                }
                None => self.respond(&mut wr, &req).await?,
            }
            if close {
                return Ok(());
            }
        }
    }

    /// The file for a request path, if it is a plain relative path under the root.
    fn resolve(&self, target: &str) -> Option<PathBuf> {
        let rel = Path::new(target.trim_start_matches('/'));
        if rel.as_os_str().is_empty()
            || !rel.components().all(|c| matches!(c, Component::Normal(_)))
        {
            return None;
        }
        Some(self.root.join(rel))
    }

    /// The open handle of `path`, opening it on first use.
    async fn open(&self, path: &Path) -> io::Result<uringcache::File> {
        if let Some(f) = self.files.lock().unwrap().get(path) {
            return Ok(f.clone());
        }
        let mut opts = uringcache::OpenOptions::new();
        opts.read(true);
        let file = self.cache.open(path, &opts).await?;
        Ok(self
            .files
            .lock()
            .unwrap()
            .entry(path.to_path_buf())
            .or_insert(file)
            .clone())
    }

    async fn respond<W: AsyncWriteExt + Unpin>(&self, wr: &mut W, req: &Request) -> io::Result<()> {
        let Some(path) = self.resolve(&req.target) else {
            return respond_empty(wr, "400 Bad Request", &[]).await;
        };
        let file = match self.open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return respond_empty(wr, "404 Not Found", &[]).await
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                return respond_empty(wr, "404 Not Found", &[]).await; // a directory, a device
            }
            Err(e) => {
                eprintln!("serve: {}: {e}", path.display());
                return respond_empty(wr, "500 Internal Server Error", &[]).await;
            }
        };
        let len = file.len();
        let (status, start, end) = match req.range.as_deref().map(|r| parse_range(r, len)) {
            None | Some(RangeReq::Ignore) => ("200 OK", 0, len),
            Some(RangeReq::Unsatisfiable) => {
                let cr = format!("Content-Range: bytes */{len}");
                return respond_empty(wr, "416 Range Not Satisfiable", &[&cr]).await;
            }
            Some(RangeReq::Range(a, b)) => ("206 Partial Content", a, b),
        };
        let mut head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nContent-Type: application/octet-stream\r\n",
            end - start
        );
        if status.starts_with("206") {
            head.push_str(&format!(
                "Content-Range: bytes {start}-{}/{len}\r\n",
                end - 1
            ));
        }
        head.push_str("\r\n");
        wr.write_all(head.as_bytes()).await?;
        if !req.head_only {
            send_range(wr, &file, start, end, self.cache.page_size() as u64).await?;
        }
        wr.flush().await
    }
}

/// Sends bytes `start..end` of `file`: one zero-copy `Bytes` per page, a batch of pages per
/// vectored write. If the cache has no frame left to pin (other connections hold them), the
/// batch gathered so far is sent first, which unpins it; with nothing gathered, it waits a
/// moment for other connections to send theirs.
async fn send_range<W: AsyncWriteExt + Unpin>(
    wr: &mut W,
    file: &uringcache::File,
    start: u64,
    end: u64,
    ps: u64,
) -> io::Result<()> {
    let mut pos = start;
    let mut batch: VecDeque<Bytes> = VecDeque::with_capacity(BATCH_PAGES);
    let mut waits = 0;
    while pos < end {
        let n = (ps - pos % ps).min(end - pos);
        match file.read_bytes(pos, n as usize).await {
            Ok(b) if b.is_empty() => {
                // The file shrank under us: the promised length cannot be sent.
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while being sent",
                ));
            }
            Ok(b) => {
                pos += b.len() as u64;
                batch.push_back(b);
                waits = 0;
                if batch.len() == BATCH_PAGES {
                    write_all_bytes(wr, &mut batch).await?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::OutOfMemory => {
                if !batch.is_empty() {
                    write_all_bytes(wr, &mut batch).await?;
                } else if waits < 5000 {
                    waits += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                } else {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
    write_all_bytes(wr, &mut batch).await
}

/// Writes every buffer of `bufs` with vectored writes, dropping (unpinning) each as it goes.
async fn write_all_bytes<W: AsyncWriteExt + Unpin>(
    wr: &mut W,
    bufs: &mut VecDeque<Bytes>,
) -> io::Result<()> {
    while !bufs.is_empty() {
        let slices: Vec<io::IoSlice<'_>> = bufs.iter().map(|b| io::IoSlice::new(b)).collect();
        let mut n = wr.write_vectored(&slices).await?;
        drop(slices);
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let front = bufs.front_mut().expect("wrote more than was queued");
            if n >= front.len() {
                n -= front.len();
                bufs.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
    Ok(())
}

async fn respond_empty<W: AsyncWriteExt + Unpin>(
    wr: &mut W,
    status: &str,
    extra: &[&str],
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n");
    for h in extra {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    wr.write_all(head.as_bytes()).await?;
    wr.flush().await
}

/// One parsed request.
#[derive(Debug, Default)]
pub struct Request {
    /// The request target (path).
    pub target: String,
    /// The `Range` header's value, if any.
    pub range: Option<String>,
    /// `HEAD` rather than `GET`.
    pub head_only: bool,
    /// The connection ends after this response.
    pub close: bool,
    /// A status to answer with instead (bad request, method not allowed).
    pub error: Option<&'static str>,
}

/// Reads one request head; `None` when the peer closed the connection between requests.
async fn read_request<R: AsyncBufReadExt + Unpin>(rd: &mut R) -> io::Result<Option<Request>> {
    let mut line = String::new();
    let mut total = 0;
    // Skip empty lines before a request (RFC 9112 §2.2).
    loop {
        line.clear();
        let n = rd.read_line(&mut line).await?;
        if n == 0 {
            return Ok(None);
        }
        total += n;
        if total > MAX_HEAD {
            return Ok(Some(Request {
                error: Some("431 Request Header Fields Too Large"),
                close: true,
                ..Default::default()
            }));
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut req = Request::default();
    let mut parts = line.split_whitespace();
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    match (method, target, version) {
        (Some(m), Some(t), Some(v)) if v.starts_with("HTTP/1.") => {
            req.target = t.to_string();
            req.close = v == "HTTP/1.0";
            match m {
                "GET" => {}
                "HEAD" => req.head_only = true,
                _ => req.error = Some("405 Method Not Allowed"),
            }
        }
        _ => {
            req.error = Some("400 Bad Request");
            req.close = true;
        }
    }
    loop {
        line.clear();
        let n = rd.read_line(&mut line).await?;
        total += n;
        if n == 0 {
            return Ok(None); // closed in the middle of a head
        }
        if total > MAX_HEAD {
            return Ok(Some(Request {
                error: Some("431 Request Header Fields Too Large"),
                close: true,
                ..Default::default()
            }));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((name, value)) = l.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("range") {
                req.range = Some(value.to_string());
            } else if name.eq_ignore_ascii_case("connection") {
                if value.eq_ignore_ascii_case("close") {
                    req.close = true;
                } else if value.eq_ignore_ascii_case("keep-alive") {
                    req.close = false;
                }
            }
        }
    }
    Ok(Some(req))
}

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeReq {
    /// Bytes `start..end` (end exclusive, clamped to the file).
    Range(u64, u64),
    /// No byte of the file is in the range.
    Unsatisfiable,
    /// Not a single byte range we serve: send the whole file.
    Ignore,
}

/// Parses a `Range` header value (`bytes=a-b`, `bytes=a-`, `bytes=-n`).
pub fn parse_range(value: &str, len: u64) -> RangeReq {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeReq::Ignore;
    };
    if spec.contains(',') {
        return RangeReq::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeReq::Ignore;
    };
    let (a, b) = (a.trim(), b.trim());
    match (a.is_empty(), b.is_empty()) {
        (true, true) => RangeReq::Ignore,
        (true, false) => match b.parse::<u64>() {
            Ok(0) => RangeReq::Unsatisfiable,
            Ok(n) if len > 0 => RangeReq::Range(len - n.min(len), len),
            Ok(_) => RangeReq::Unsatisfiable,
            Err(_) => RangeReq::Ignore,
        },
        (false, _) => {
            let Ok(start) = a.parse::<u64>() else {
                return RangeReq::Ignore;
            };
            let last = if b.is_empty() {
                u64::MAX
            } else {
                match b.parse::<u64>() {
                    Ok(l) if l >= start => l,
                    _ => return RangeReq::Ignore,
                }
            };
            if start >= len {
                RangeReq::Unsatisfiable
            } else {
                RangeReq::Range(start, last.saturating_add(1).min(len))
            }
        }
    }
}
