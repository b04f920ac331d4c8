//! Micro-benchmarks of the paths a regression would hurt first: the cache hit (`read_at` of a
//! cached 4 KiB page, polled once: a hit never returns `Pending`; `page`, a pinned handle), the
//! mapping lookup with its pin (under the shard lock, and lock-free through the hints), the
//! optimistic look without a pin, readahead decisions, and eviction.
//!
//! `cargo bench --bench core` (criterion; reports land in target/criterion).

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use uringcache_core::evict::Verdict;
use uringcache_core::mapping::{Mapping, Speculative};
use uringcache_core::pool::FramePool;
use uringcache_core::readahead::State;

struct Noop;
impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

/// Polls a future that is expected to be ready at once (a cache hit).
fn ready<F: Future>(fut: F) -> F::Output {
    let waker = Waker::from(Arc::new(Noop));
    match pin!(fut).poll(&mut Context::from_waker(&waker)) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a cache hit must not wait"),
    }
}

fn hit_path(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let path = dir.path().join("hits");
    std::fs::write(&path, vec![7u8; 16 << 20]).unwrap();
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
    rt.block_on(file.readahead(0, 16 << 20)).unwrap();
    let mut buf = vec![0u8; 4096];
    let mut i = 0u64;
    c.bench_function("read_at 4 KiB hit", |b| {
        b.iter(|| {
            i = (i + 7919) % 4096;
            ready(file.read_at(&mut buf, i * 4096)).unwrap();
            black_box(&buf);
        })
    });
    c.bench_function("page hit (PageRef made and dropped)", |b| {
        b.iter(|| {
            i = (i + 7919) % 4096;
            let page = ready(file.page(i)).unwrap();
            black_box(page[0]);
        })
    });
    c.bench_function("try_read_at 4 KiB hit", |b| {
        b.iter(|| {
            i = (i + 7919) % 4096;
            file.try_read_at(&mut buf, i * 4096).unwrap();
            black_box(&buf);
        })
    });
}

fn lookup(c: &mut Criterion) {
    let pool = FramePool::new(4096);
    let m = Mapping::new(1, 0);
    for i in 0..4096u64 {
        let f = pool.alloc(|_| Verdict::Busy).unwrap();
        m.insert(i, f, pool.pages()).unwrap();
        assert!(!pool.pages().get(f).finish_read(Ok(())));
        pool.put(f);
    }
    let mut i = 0u64;
    c.bench_function("mapping lookup + pin + unpin", |b| {
        b.iter(|| {
            i = (i + 7919) % 4096;
            let f = m.lookup(black_box(i), pool.pages()).unwrap();
            pool.pages().get(f).mark_accessed();
            pool.put(f);
        })
    });
    // As the cache's read path: lock-free first, the locked lookup for the few pages whose
    // hint a full set pushed out (it publishes them again).
    c.bench_function("lock-free lookup + pin + unpin", |b| {
        b.iter(|| {
            i = (i + 7919) % 4096;
            let f = match m.lookup_speculative(black_box(i), pool.pages()) {
                Speculative::Pinned(f) => f,
                _ => m.lookup_and_hint(i, pool.pages()).unwrap(),
            };
            pool.pages().get(f).mark_accessed();
            pool.put(f);
        })
    });
    c.bench_function("optimistic peek + validate (no pin, no copy)", |b| {
        b.iter(|| {
            i = (i + 7919) % 4096;
            match m.peek(black_box(i), pool.pages()) {
                Some(p) => {
                    let d = pool.pages().get(p.frame);
                    assert!(p.flags.is_uptodate() && d.unchanged_since(p.generation));
                }
                None => {
                    pool.put(m.lookup_and_hint(i, pool.pages()).unwrap());
                }
            }
        })
    });
}

fn readahead(c: &mut Criterion) {
    c.bench_function("readahead: sequential stream decisions", |b| {
        b.iter_batched(
            || State::new(512),
            |mut ra| {
                let mut w = ra.on_miss(0, 1, 0, 4096, |_| false);
                for _ in 0..16 {
                    w = ra
                        .on_marker(w.mark().unwrap_or(w.start), 1, |_| true)
                        .unwrap();
                }
                black_box(w)
            },
            BatchSize::SmallInput,
        )
    });
}

fn eviction(c: &mut Criterion) {
    let frames = 1024;
    let pool = FramePool::new(frames);
    let m = Mapping::new(1, 0);
    let mut next = 0u64;
    let evict = |f| {
        let d = pool.pages().get(f);
        if m.remove_if(d.index(), f, pool.pages(), |d| d.freeze_if_reclaimable()) {
            Verdict::Evicted
        } else {
            Verdict::Busy
        }
    };
    c.bench_function("allocate with eviction (S3-FIFO)", |b| {
        b.iter(|| {
            let f = pool.alloc(evict).unwrap();
            m.insert(next, f, pool.pages()).unwrap();
            pool.lru_add(f, 1, next);
            assert!(!pool.pages().get(f).finish_read(Ok(())));
            pool.put(f);
            next += 1;
        })
    });
}

criterion_group!(benches, hit_path, lookup, readahead, eviction);
criterion_main!(benches);
