//! A storage server on `hyper` 1.x that sends byte ranges of files straight from the uringcache:
//! every data frame of a response body is a zero-copy [`Bytes`] of a pinned cached page
//! ([`PageRef::into_bytes`]), produced lazily by [`PagesBody`], which pins at most a bounded
//! number of pages ahead of what the connection has taken.
//!
//! What it speaks (RFC 9110):
//!
//! * `GET` and `HEAD` of `/path`, percent-decoded, relative to the served root. `..`, an
//!   absolute path (`//etc/passwd`) and a symbolic link that leads out of the root get
//!   `403 Forbidden`; a missing file or a directory `404 Not Found`; other methods `405`.
//! * `Range: bytes=…` with one range (`206 Partial Content` with `Content-Range`) or several
//!   (`206` with a `multipart/byteranges` body, one part per range, in the order asked); no
//!   satisfiable range gets `416 Range Not Satisfiable` with `Content-Range: bytes */LEN`. A
//!   `Range` that does not parse, asks for more than [`MAX_RANGES`] ranges or for more bytes
//!   than the file has in all is ignored and the whole file sent (`200`), as the RFC allows.
//!   Every response says `Accept-Ranges: bytes`.
//! * Validators: a strong `ETag` made of the file's length and modification time, and
//!   `Last-Modified`. Conditional requests in the RFC's order (§13.2.2): `If-Match` (strong
//!   comparison) or else `If-Unmodified-Since` failing gets `412 Precondition Failed`;
//!   `If-None-Match` (weak comparison) or else `If-Modified-Since` matching gets
//!   `304 Not Modified`; `If-Range` that does not match (a different or weak tag, or a date
//!   other than `Last-Modified`) turns a range request into a `200` of the whole file.
//! * Bodies: [`PagesBody`] pins at most `pages_ahead` pages (default [`DEFAULT_PAGES_AHEAD`])
//!   ahead of what hyper has taken, and reads each range ahead exactly, in [`READ_AHEAD`]
//!   requests that never go past the range's end.
//! * Errors of the cache or the file system are logged through `tracing` (with the path) and
//!   answered `500 Internal Server Error`; an error in the middle of a body (a failed device
//!   read) is logged and aborts the connection, as the status line has gone out already.
//!
//! The cache owns the files it serves, as any buffer pool does: a file is opened on first use
//! and kept open (with its validators, taken then) for the server's life, and a change made
//! to it on disk by another program meanwhile is not seen.

#![allow(dead_code)] // tests/serve.rs and the bench's `serve` workload use parts of it each

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use uringcache::PageRef;

/// Pages a response body pins ahead of what the connection has taken, by default.
pub const DEFAULT_PAGES_AHEAD: usize = 8;
/// The most ranges one request may ask for; a `Range` with more is ignored (whole file sent).
pub const MAX_RANGES: usize = 64;
/// hyper's write buffer per connection. Data frames are queued in it without a copy (at most
/// 16 of them, hyper's own limit) until the socket takes them, so this and hyper's limit bound
/// the pages a connection holds besides those [`PagesBody`] pins ahead.
const CONN_BUF: usize = 64 << 10;
/// How far a body reads a range ahead of the pages it fetches, in one device request: the
/// range's own bytes only, never past its end (pages read ahead are cached, not pinned).
pub const READ_AHEAD: u64 = 128 << 10;
/// How long a body waits for its next page, in 1 ms steps, while every frame of the cache is
/// pinned.
const PIN_WAITS: u32 = 5000;

/// The server: the cache, the directory it serves, and the files it has opened.
pub struct Server {
    cache: uringcache::Cache,
    root: PathBuf,
    files: Mutex<HashMap<String, Arc<Entry>>>,
    pages_ahead: usize,
}

/// A served file: its cache handle and validators, taken when it was opened.
struct Entry {
    file: uringcache::File,
    /// The strong entity tag, quotes included.
    etag: String,
    /// The modification time, whole seconds (what `Last-Modified` can say).
    modified: SystemTime,
    etag_value: HeaderValue,
    modified_value: HeaderValue,
}

/// Why a request path gets no file.
enum Refusal {
    /// Not a path we can read (bad percent-encoding, a NUL).
    BadRequest,
    /// Outside the root: `..`, absolute, or a symbolic link leading out.
    Forbidden,
    /// No such file, or not a regular file.
    NotFound,
    /// Something failed: logged and answered 500.
    Failed(io::Error),
}

impl Server {
    /// A server of the files under `root` through `cache`; fails if `root` cannot be resolved
    /// (it is canonicalized once, so that symbolic links can be checked against it).
    pub fn new(cache: uringcache::Cache, root: impl AsRef<Path>) -> io::Result<Server> {
        let root = root.as_ref();
        let root = std::fs::canonicalize(root).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("serve: resolve the root {}: {e}", root.display()),
            )
        })?;
        Ok(Server {
            cache,
            root,
            files: Mutex::new(HashMap::new()),
            pages_ahead: DEFAULT_PAGES_AHEAD,
        })
    }

    /// Sets how many pages a response body pins ahead of the connection (at least 1; default
    /// [`DEFAULT_PAGES_AHEAD`]): more keeps more device reads in flight for a cold file, and
    /// costs a slow client's share of the budget.
    pub fn pages_ahead(mut self, n: usize) -> Server {
        self.pages_ahead = n.max(1);
        self
    }

    /// The cache it serves from.
    pub fn cache(&self) -> &uringcache::Cache {
        &self.cache
    }

    /// Accepts connections on `listener` forever, each served by hyper's HTTP/1.1 on a task of
    /// its own (keep-alive, pipelining). A failed accept (out of descriptors) is logged and
    /// retried after a moment.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> io::Result<()> {
        loop {
            let (sock, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "serve: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = sock.set_nodelay(true);
            let this = self.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let this = this.clone();
                    async move { Ok::<_, Infallible>(this.handle(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .max_buf_size(CONN_BUF)
                    .serve_connection(TokioIo::new(sock), svc);
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "serve: connection ended");
                }
            });
        }
    }

    /// Answers one request (the request's body, if any, is not read).
    pub async fn handle<B>(&self, req: Request<B>) -> Response<PagesBody> {
        let head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => {
                let mut r = empty(StatusCode::METHOD_NOT_ALLOWED);
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                return r;
            }
        };
        let entry = match self.lookup(req.uri().path()).await {
            Ok(e) => e,
            Err(Refusal::BadRequest) => return empty(StatusCode::BAD_REQUEST),
            Err(Refusal::Forbidden) => return empty(StatusCode::FORBIDDEN),
            Err(Refusal::NotFound) => return empty(StatusCode::NOT_FOUND),
            Err(Refusal::Failed(e)) => {
                tracing::error!(path = req.uri().path(), error = %e, "serve: cannot open");
                return internal_error();
            }
        };
        self.respond(&entry, req.headers(), head).await
    }

    /// The response for `entry` once found: preconditions, then ranges.
    async fn respond(&self, entry: &Entry, h: &HeaderMap, head: bool) -> Response<PagesBody> {
        let validators = |mut r: Response<PagesBody>| {
            let hs = r.headers_mut();
            hs.insert(header::ETAG, entry.etag_value.clone());
            hs.insert(header::LAST_MODIFIED, entry.modified_value.clone());
            hs.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            r
        };
        if let Some(v) = h.get(header::IF_MATCH) {
            if !etag_matches(v, &entry.etag, true) {
                return validators(empty(StatusCode::PRECONDITION_FAILED));
            }
        } else if let Some(t) = date(h.get(header::IF_UNMODIFIED_SINCE)) {
            if entry.modified > t {
                return validators(empty(StatusCode::PRECONDITION_FAILED));
            }
        }
        if let Some(v) = h.get(header::IF_NONE_MATCH) {
            if etag_matches(v, &entry.etag, false) {
                return validators(empty(StatusCode::NOT_MODIFIED));
            }
        } else if let Some(t) = date(h.get(header::IF_MODIFIED_SINCE)) {
            if entry.modified <= t {
                return validators(empty(StatusCode::NOT_MODIFIED));
            }
        }
        let len = entry.file.len();
        let ranges = match h.get(header::RANGE) {
            Some(v) if if_range_holds(h.get(header::IF_RANGE), entry) => match v.to_str() {
                Ok(v) => parse_ranges(v, len),
                Err(_) => Ranges::Ignore,
            },
            _ => Ranges::Ignore,
        };
        let octets = HeaderValue::from_static("application/octet-stream");
        let (status, parts, content_type, content_range) = match ranges {
            Ranges::Unsatisfiable => {
                let mut r = validators(empty(StatusCode::RANGE_NOT_SATISFIABLE));
                r.headers_mut().insert(
                    header::CONTENT_RANGE,
                    header_value(format!("bytes */{len}")),
                );
                return r;
            }
            Ranges::Ignore => (StatusCode::OK, vec![Part::Range(0, len)], octets, None),
            Ranges::Satisfiable(rs) if rs.len() == 1 => {
                let (a, b) = rs[0];
                (
                    StatusCode::PARTIAL_CONTENT,
                    vec![Part::Range(a, b)],
                    octets,
                    Some(header_value(format!("bytes {a}-{}/{len}", b - 1))),
                )
            }
            Ranges::Satisfiable(rs) => {
                let boundary = boundary();
                let mut parts = Vec::with_capacity(rs.len() * 2 + 1);
                for (i, &(a, b)) in rs.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "\r\n" };
                    parts.push(Part::Bytes(Bytes::from(format!(
                        "{sep}--{boundary}\r\nContent-Type: application/octet-stream\r\n\
                         Content-Range: bytes {a}-{}/{len}\r\n\r\n",
                        b - 1
                    ))));
                    parts.push(Part::Range(a, b));
                }
                parts.push(Part::Bytes(Bytes::from(format!("\r\n--{boundary}--\r\n"))));
                (
                    StatusCode::PARTIAL_CONTENT,
                    parts,
                    header_value(format!("multipart/byteranges; boundary={boundary}")),
                    None,
                )
            }
        };
        let mut body = PagesBody::new(
            entry.file.clone(),
            self.cache.page_size(),
            parts,
            self.pages_ahead,
        );
        let length = body.remaining;
        let body = if head {
            PagesBody::empty()
        } else {
            // The first page before the status line: a file that cannot be read gets a 500,
            // not a 200 cut short.
            if let Err(e) = body.first_page().await {
                tracing::error!(path = %entry.file.path().display(), error = %e, "serve: read failed");
                return internal_error();
            }
            body
        };
        let mut r = validators(Response::new(body));
        *r.status_mut() = status;
        let hs = r.headers_mut();
        hs.insert(header::CONTENT_TYPE, content_type);
        hs.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        if let Some(cr) = content_range {
            hs.insert(header::CONTENT_RANGE, cr);
        }
        r
    }

    /// The file a request path names, opened (and remembered) on first use.
    async fn lookup(&self, raw: &str) -> Result<Arc<Entry>, Refusal> {
        let decoded = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| Refusal::BadRequest)?;
        if decoded.contains('\0') {
            return Err(Refusal::BadRequest);
        }
        let rel = decoded.strip_prefix('/').ok_or(Refusal::BadRequest)?;
        if rel.is_empty() {
            return Err(Refusal::NotFound); // no directory listings
        }
        if !Path::new(rel)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(Refusal::Forbidden); // `..`, or absolute (`//etc/passwd`)
        }
        if let Some(e) = self.files.lock().unwrap().get(rel) {
            return Ok(e.clone());
        }
        let joined = self.root.join(rel);
        let path = match tokio::fs::canonicalize(&joined).await {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Refusal::NotFound),
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => return Err(Refusal::NotFound),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(Refusal::Forbidden)
            }
            Err(e) => return Err(Refusal::Failed(context(e, "resolve", &joined))),
        };
        if !path.starts_with(&self.root) {
            return Err(Refusal::Forbidden); // a symbolic link out of the root
        }
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| Refusal::Failed(context(e, "stat", &path)))?;
        if !meta.is_file() {
            return Err(Refusal::NotFound);
        }
        let mut opts = uringcache::OpenOptions::new();
        opts.read(true);
        let file = match self.cache.open(&path, &opts).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Refusal::NotFound),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(Refusal::Forbidden)
            }
            Err(e) => return Err(Refusal::Failed(e)),
        };
        // Bodies read their ranges ahead themselves, exactly: no guessing past a range's end
        // (the handle's readahead state would be shared by every connection anyway).
        file.advise(uringcache::Advice::Random);
        let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
        let since = mtime.duration_since(UNIX_EPOCH).unwrap_or_default();
        let modified = UNIX_EPOCH + Duration::from_secs(since.as_secs());
        let etag = format!("\"{:x}-{:x}\"", file.len(), since.as_nanos());
        let entry = Arc::new(Entry {
            etag_value: header_value(etag.clone()),
            modified_value: header_value(httpdate::fmt_http_date(modified)),
            file,
            etag,
            modified,
        });
        Ok(self
            .files
            .lock()
            .unwrap()
            .entry(rel.to_string())
            .or_insert(entry)
            .clone())
    }
}

fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("serve: {what} {}: {e}", path.display()))
}

/// A response of `status` with no body.
fn empty(status: StatusCode) -> Response<PagesBody> {
    let mut r = Response::new(PagesBody::empty());
    *r.status_mut() = status;
    r
}

/// A `500 Internal Server Error` (the cause is logged, not sent).
fn internal_error() -> Response<PagesBody> {
    let mut r = Response::new(PagesBody::bytes(Bytes::from_static(
        b"internal server error\n",
    )));
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r
}

/// A header value from text this module made (ASCII, no control characters).
fn header_value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).expect("a header value made of visible ASCII")
}

/// A fresh `multipart/byteranges` boundary (unique in the process; a part's bytes containing
/// it by chance is as unlikely as for any server's random boundary).
fn boundary() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    format!(
        "uringcache-{:016x}",
        (t ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)).rotate_left(17)
    )
}

/// An HTTP date header's value; `None` when absent or not a date (the condition is then
/// ignored, as the RFC says).
fn date(v: Option<&HeaderValue>) -> Option<SystemTime> {
    httpdate::parse_http_date(v?.to_str().ok()?).ok()
}

/// Whether the entity-tag list `v` (`*`, or tags separated by commas) matches `ours` (a strong
/// tag): by the strong comparison (`If-Match`, a weak tag never matches) or the weak one
/// (`If-None-Match`, `W/` ignored).
pub fn etag_matches(v: &HeaderValue, ours: &str, strong: bool) -> bool {
    let Ok(v) = v.to_str() else {
        return false;
    };
    if v.trim() == "*" {
        return true;
    }
    v.split(',')
        .map(str::trim)
        .any(|tag| match tag.strip_prefix("W/") {
            Some(weak) => !strong && weak == ours,
            None => tag == ours,
        })
}

/// Whether a range request's `If-Range` (if any) lets the ranges be served: an entity tag
/// equal by the strong comparison, or a date equal to `Last-Modified`.
fn if_range_holds(v: Option<&HeaderValue>, entry: &Entry) -> bool {
    let Some(v) = v else {
        return true;
    };
    let Ok(s) = v.to_str() else {
        return false;
    };
    let s = s.trim();
    if s.starts_with('"') || s.starts_with("W/") {
        s == entry.etag
    } else {
        httpdate::parse_http_date(s).is_ok_and(|t| t == entry.modified)
    }
}

/// What a `Range` header asks of a file.
#[derive(Debug, PartialEq, Eq)]
pub enum Ranges {
    /// The satisfiable ranges, `start..end` (end exclusive, clamped to the file), in the
    /// order asked.
    Satisfiable(Vec<(u64, u64)>),
    /// A well-formed header none of whose ranges overlaps the file: 416.
    Unsatisfiable,
    /// Not a header we serve ranges for: send the whole file.
    Ignore,
}

/// Parses a `Range` header value (`bytes=a-b`, `bytes=a-`, `bytes=-n`, several separated by
/// commas) against a file of `len` bytes. A malformed header, more than [`MAX_RANGES`]
/// ranges, or satisfiable ranges adding up to more than the file is [`Ranges::Ignore`].
pub fn parse_ranges(value: &str, len: u64) -> Ranges {
    let v = value.trim();
    let Some(spec) = v
        .get(..6)
        .filter(|u| u.eq_ignore_ascii_case("bytes="))
        .map(|_| &v[6..])
    else {
        return Ranges::Ignore;
    };
    let mut out = Vec::new();
    let mut count = 0;
    for one in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        count += 1;
        if count > MAX_RANGES {
            return Ranges::Ignore;
        }
        let Some((a, b)) = one.split_once('-') else {
            return Ranges::Ignore;
        };
        let (a, b) = (a.trim(), b.trim());
        let num = |s: &str| {
            (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
                .then(|| s.parse::<u64>().ok())
                .flatten()
        };
        let range = if a.is_empty() {
            // A suffix: the last n bytes.
            let Some(n) = num(b) else {
                return Ranges::Ignore;
            };
            (n > 0 && len > 0).then(|| (len - n.min(len), len))
        } else {
            let Some(start) = num(a) else {
                return Ranges::Ignore;
            };
            let last = if b.is_empty() {
                u64::MAX
            } else {
                match num(b) {
                    Some(l) if l >= start => l,
                    _ => return Ranges::Ignore,
                }
            };
            (start < len).then(|| (start, last.saturating_add(1).min(len)))
        };
        out.extend(range);
    }
    if count == 0 {
        return Ranges::Ignore;
    }
    if out.is_empty() {
        return Ranges::Unsatisfiable;
    }
    if out.iter().map(|(a, b)| b - a).sum::<u64>() > len {
        return Ranges::Ignore;
    }
    Ranges::Satisfiable(out)
}

/// One piece of a response body.
enum Part {
    /// Bytes of the server's own (a multipart boundary and part headers).
    Bytes(Bytes),
    /// Bytes `start..end` of the file, sent page by page.
    Range(u64, u64),
}

type PageFuture = Pin<Box<dyn Future<Output = io::Result<PageRef>> + Send>>;
type ReadAhead = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

/// A page being fetched ahead, and which of its bytes go out.
struct Fetch {
    state: FetchState,
    /// The page's index in the file.
    index: u64,
    /// The part it belongs to, counted from the body's first part.
    part: usize,
    /// Its bytes in range, within the page.
    from: usize,
    to: usize,
}

enum FetchState {
    Waiting(PageFuture),
    Done(io::Result<PageRef>),
    Taken,
}

/// A response body of file ranges (and the server's own bytes between them), produced lazily:
/// each data frame is a zero-copy [`Bytes`] of one cached page (or the part of it in range),
/// holding the page pinned until hyper has written it to the socket and dropped it.
///
/// Backpressure: the body fetches (and so pins) at most `pages_ahead` pages ahead of the frame
/// hyper asks for next, all of them in flight at once (so that a cold range keeps that many
/// device reads going), and hyper asks for the next frame only when its write buffer has room.
/// A client that stops reading therefore holds at most `pages_ahead` pages plus the few frames
/// queued in its connection's buffer, however long the range.
///
/// Device reads: the body also reads its range ahead with
/// [`File::readahead`](uringcache::File::readahead) in requests of [`READ_AHEAD`] bytes, one at a time, at
/// most that far ahead of the pages it fetches and never past the range's end (the served
/// handles are advised `Random`, so the cache itself guesses nothing); those pages are cached,
/// not pinned, so a stalled client holds none of them.
///
/// When the cache has no frame left to pin (every frame held by bodies of other connections),
/// the body gives back the pages it fetched ahead of the one it needs next, narrows its window
/// to that one page, and retries it every millisecond (up to 5 s, then the body fails); the
/// window grows back by one page per frame sent. So bodies that together want more pages than
/// the budget holds take turns instead of holding each other's frames forever.
pub struct PagesBody {
    file: Option<uringcache::File>,
    parts: VecDeque<Part>,
    /// Parts sent and dropped from `parts` so far.
    popped: usize,
    /// Pages being fetched, in the order they go out; they belong to the `Range` parts from
    /// the front on.
    fetches: VecDeque<Fetch>,
    /// The next page to start fetching: its part (counted from the body's first part) and
    /// offset (`None`: the part's start).
    issue_part: usize,
    issue_pos: Option<u64>,
    /// Pages it may fetch ahead now (1..=pages_ahead).
    window: usize,
    /// The device read of the range ahead of the pages fetched (`File::readahead` of
    /// [`READ_AHEAD`] bytes), if one is in flight; the part it is for (counted from the
    /// body's first part), the next byte to read ahead and the end of that range.
    ra: Option<ReadAhead>,
    ra_part: usize,
    ra_next: u64,
    ra_end: u64,
    pages_ahead: usize,
    /// Retries of the front page while the cache had no frame to pin.
    oom_waits: u32,
    /// log2 of the cache's page size.
    page_shift: u32,
    remaining: u64,
}

impl PagesBody {
    /// A body of `parts`, pages of `file` (of `page_size` bytes), at most `pages_ahead`
    /// pinned ahead.
    fn new(
        file: uringcache::File,
        page_size: usize,
        parts: Vec<Part>,
        pages_ahead: usize,
    ) -> PagesBody {
        let remaining = parts
            .iter()
            .map(|p| match p {
                Part::Bytes(b) => b.len() as u64,
                Part::Range(a, b) => b - a,
            })
            .sum();
        let mut body = PagesBody::empty();
        body.file = Some(file);
        body.parts = parts.into();
        body.pages_ahead = pages_ahead.max(1);
        body.window = body.pages_ahead;
        body.page_shift = page_size.trailing_zeros();
        body.remaining = remaining;
        body
    }

    /// An empty body.
    pub fn empty() -> PagesBody {
        PagesBody {
            file: None,
            parts: VecDeque::new(),
            popped: 0,
            fetches: VecDeque::new(),
            issue_part: 0,
            issue_pos: None,
            window: 1,
            ra: None,
            ra_part: usize::MAX,
            ra_next: 0,
            ra_end: 0,
            pages_ahead: 1,
            oom_waits: 0,
            page_shift: 12,
            remaining: 0,
        }
    }

    /// A body of `bytes`.
    fn bytes(bytes: Bytes) -> PagesBody {
        let mut b = PagesBody::empty();
        b.remaining = bytes.len() as u64;
        b.parts.push_back(Part::Bytes(bytes));
        b
    }

    /// Starts fetching pages until `window` are in flight or every page is.
    fn fill(&mut self) {
        let Some(file) = &self.file else {
            return;
        };
        let shift = self.page_shift;
        while self.fetches.len() < self.window {
            let Some(part) = self.parts.get(self.issue_part - self.popped) else {
                return;
            };
            let Part::Range(start, end) = *part else {
                self.issue_part += 1;
                continue;
            };
            let pos = self.issue_pos.unwrap_or(start).max(start);
            if pos >= end {
                self.issue_part += 1;
                self.issue_pos = None;
                continue;
            }
            // The range's bytes a little ahead are read in large requests (the handle reads
            // no further than asked: `Advice::Random`), and the page fetches find them in
            // flight.
            if self.ra_part != self.issue_part {
                (self.ra_part, self.ra_next, self.ra_end) = (self.issue_part, pos, end);
                self.ra = None; // its reads go on
            }
            self.ra_next = self.ra_next.max(pos);
            if self.ra.is_none() && self.ra_next < self.ra_end && self.ra_next < pos + READ_AHEAD {
                let (f, at) = (file.clone(), self.ra_next);
                let len = READ_AHEAD.min(self.ra_end - at);
                self.ra = Some(Box::pin(async move { f.readahead(at, len).await }));
                self.ra_next += len;
            }
            let index = pos >> shift;
            let base = index << shift;
            let stop = ((index + 1) << shift).min(end);
            let f = file.clone();
            self.fetches.push_back(Fetch {
                state: FetchState::Waiting(Box::pin(async move { f.page(index).await })),
                index,
                part: self.issue_part,
                from: (pos - base) as usize,
                to: (stop - base) as usize,
            });
            self.issue_pos = Some(stop);
        }
    }

    /// Starts fetching and waits for the first page of the body (if it has one): its error,
    /// other than finding no frame to pin (retried later like any other page), is returned.
    async fn first_page(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| {
            self.fill();
            self.poll_read_ahead(cx);
            let Some(front) = self.fetches.front_mut() else {
                return Poll::Ready(Ok(()));
            };
            let FetchState::Waiting(fut) = &mut front.state else {
                return Poll::Ready(Ok(()));
            };
            match fut.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::OutOfMemory => {
                    let (file, index) = (self.file.clone().expect("a body of a file"), front.index);
                    front.state = FetchState::Waiting(retry(file, index));
                    Poll::Ready(Ok(()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Ready(Ok(p)) => {
                    front.state = FetchState::Done(Ok(p));
                    Poll::Ready(Ok(()))
                }
            }
        })
        .await
    }

    /// Polls the read ahead in flight (its errors are left to the page fetches to meet).
    fn poll_read_ahead(&mut self, cx: &mut Context<'_>) -> bool {
        match &mut self.ra {
            Some(ra) => match ra.as_mut().poll(cx) {
                Poll::Ready(r) => {
                    if r.is_err() {
                        self.ra_next = self.ra_end; // not again for this range
                    }
                    self.ra = None;
                    true
                }
                Poll::Pending => false,
            },
            None => false,
        }
    }

    /// Gives back the fetches from `at` on (unpinning what they hold) and narrows the window
    /// to what is left, at least one page: the cache had no frame for the fetch at `at`.
    fn shrink_to(&mut self, at: usize) {
        if let Some(f) = self.fetches.get(at) {
            let base = f.index << self.page_shift;
            self.issue_part = f.part;
            self.issue_pos = Some(base + f.from as u64);
            self.fetches.truncate(at);
        }
        self.window = at.max(1);
    }

    /// Drops the front part (sent whole).
    fn pop_part(&mut self) {
        self.parts.pop_front();
        self.popped += 1;
        if self.issue_part < self.popped {
            self.issue_part = self.popped;
            self.issue_pos = None;
        }
    }

    /// Ends the body after an error: nothing more is sent, what was fetched is unpinned.
    fn fail(&mut self, e: io::Error, offset: u64) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let path = self.file.as_ref().map(|f| f.path().display().to_string());
        tracing::error!(path, offset, error = %e, "serve: read failed in a response body");
        self.fetches.clear();
        self.parts.clear();
        self.remaining = 0;
        Poll::Ready(Some(Err(e)))
    }
}

/// Page `index` of `file` again in a millisecond (the cache had no frame to pin).
fn retry(file: uringcache::File, index: u64) -> PageFuture {
    Box::pin(async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        file.page(index).await
    })
}

impl Body for PagesBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            this.fill();
            if this.poll_read_ahead(cx) {
                continue; // the next one may start
            }
            // Every fetch in flight makes progress (submits its read), not only the front one.
            let mut no_frame = None;
            for (i, f) in this.fetches.iter_mut().enumerate() {
                if let FetchState::Waiting(fut) = &mut f.state {
                    match fut.as_mut().poll(cx) {
                        Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::OutOfMemory => {
                            no_frame = Some(i);
                            f.state = FetchState::Done(Err(e));
                            break;
                        }
                        Poll::Ready(r) => f.state = FetchState::Done(r),
                        Poll::Pending => {}
                    }
                }
            }
            match no_frame {
                Some(0) => {
                    // Not even the page needed next: give back the rest, retry it soon.
                    this.shrink_to(1);
                    this.oom_waits += 1;
                    let f = &mut this.fetches[0];
                    if this.oom_waits > PIN_WAITS {
                        let FetchState::Done(Err(e)) =
                            std::mem::replace(&mut f.state, FetchState::Taken)
                        else {
                            unreachable!("the front fetch failed")
                        };
                        let offset = f.index << this.page_shift;
                        return this.fail(e, offset);
                    }
                    let (file, index) = (this.file.clone().expect("a body of a file"), f.index);
                    f.state = FetchState::Waiting(retry(file, index));
                    continue;
                }
                Some(i) => {
                    this.shrink_to(i);
                    continue;
                }
                None => {}
            }
            let (start, end) = match this.parts.front_mut() {
                None => return Poll::Ready(None),
                Some(Part::Bytes(b)) => {
                    let b = std::mem::take(b);
                    this.pop_part();
                    this.remaining -= b.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                Some(Part::Range(a, b)) => (*a, *b),
            };
            if start >= end {
                this.pop_part();
                continue;
            }
            let front = this
                .fetches
                .front_mut()
                .expect("the front range's next page is being fetched");
            let page = match std::mem::replace(&mut front.state, FetchState::Taken) {
                FetchState::Waiting(fut) => {
                    front.state = FetchState::Waiting(fut);
                    return Poll::Pending;
                }
                FetchState::Done(r) => r,
                FetchState::Taken => unreachable!("a fetch is taken once, then removed"),
            };
            let (from, to) = (front.from, front.to);
            this.fetches.pop_front();
            let page = match page {
                Ok(p) => p,
                Err(e) => return this.fail(e, start),
            };
            this.oom_waits = 0;
            this.window = (this.window + 1).min(this.pages_ahead);
            let n = (to - from) as u64;
            if let Some(Part::Range(a, _)) = this.parts.front_mut() {
                *a += n;
            }
            this.remaining -= n;
            return Poll::Ready(Some(Ok(Frame::data(page.into_bytes().slice(from..to)))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
