//! Fixed-count hit loops, for `perf stat`: cycles, instructions and cache misses per hit.
//!
//! ```sh
//! cargo bench --bench hit_counts --no-run
//! B=$(ls -t target/release/deps/hit_counts-* | grep -v '\.d$' | head -1)
//! perf stat -e cycles,instructions,cache-misses $B read_at 2000000   # then the same with 0
//! ```
//!
//! Modes: `read_at`, `try_read_at` (4 KiB copies), `page` (a `PageRef` made and dropped, its
//! first word read), `lookup` (the locked mapping lookup with pin and unpin), `lookup-free`
//! (the lock-free one), `peek` (the optimistic look and its validation, no copy). Every mode
//! sets up the same cache (a 16 MiB file wholly cached) before its loop, so a run with count 0
//! measures the setup, to subtract. Prints the loop's ns per operation.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use uringcache_core::evict::Verdict;
use uringcache_core::mapping::{Mapping, Speculative};
use uringcache_core::pool::FramePool;

struct Noop;
impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

/// Polls a future that is expected to be ready at once (a cache hit).
fn ready<F: Future>(waker: &Waker, fut: F) -> F::Output {
    match pin!(fut).poll(&mut Context::from_waker(waker)) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a cache hit must not wait"),
    }
}

const PAGES: u64 = 4096;

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let mode = args.next().unwrap_or_else(|| "read_at".into());
    let n: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let path = dir.path().join("hits");
    std::fs::write(&path, vec![7u8; (PAGES * 4096) as usize]).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let cache = uringcache::Cache::builder()
        .memory_limit(32 << 20)
        .build()
        .unwrap();
    let file = rt
        .block_on(cache.open(&path, uringcache::OpenOptions::new().read(true)))
        .unwrap();
    rt.block_on(file.readahead(0, PAGES * 4096)).unwrap();
    let pool = FramePool::new(PAGES as usize);
    let m = Mapping::new(1, 0);
    for i in 0..PAGES {
        let f = pool.alloc(|_| Verdict::Busy).unwrap();
        m.insert(i, f, pool.pages()).unwrap();
        assert!(!pool.pages().get(f).finish_read(Ok(())));
        pool.put(f);
    }
    let waker = Waker::from(Arc::new(Noop));
    let mut buf = vec![0u8; 4096];
    let mut sum = 0u64;
    let mut i = 0u64;
    let start = Instant::now();
    for _ in 0..n {
        i = (i + 7919) % PAGES;
        match mode.as_str() {
            "read_at" => {
                ready(&waker, file.read_at(&mut buf, i * 4096)).unwrap();
                sum += buf[0] as u64;
            }
            "try_read_at" => {
                file.try_read_at(&mut buf, i * 4096).unwrap();
                sum += buf[0] as u64;
            }
            "page" => sum += ready(&waker, file.page(i)).unwrap()[0] as u64,
            "lookup" => {
                let f = m.lookup(i, pool.pages()).unwrap();
                pool.pages().get(f).mark_accessed();
                pool.put(f);
            }
            "lookup-free" => {
                let f = match m.lookup_speculative(i, pool.pages()) {
                    Speculative::Pinned(f) => f,
                    _ => m.lookup_and_hint(i, pool.pages()).unwrap(),
                };
                pool.pages().get(f).mark_accessed();
                pool.put(f);
            }
            "peek" => match m.peek(i, pool.pages()) {
                Some(p) => {
                    sum += pool.pages().get(p.frame).unchanged_since(p.generation) as u64;
                }
                None => {
                    pool.put(m.lookup_and_hint(i, pool.pages()).unwrap());
                }
            },
            other => panic!("unknown mode {other}"),
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / n.max(1) as f64;
    println!("{mode}: {n} ops, {ns:.1} ns/op (checksum {sum})");
}
