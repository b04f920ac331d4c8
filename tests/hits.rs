//! The hit path's promises that a benchmark cannot check: a `read_at`, `try_read_at` or `page`
//! hit allocates nothing (a counting global allocator, per thread, around polls of the hit
//! futures), and the hits are counted. Both backends (`common::backend_test!`).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use uringcache::Backend;

/// Counts the allocations of the threads that turned counting on.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call goes to `System` unchanged; the counters are thread-local cells with
// constant initialisers, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.with(|a| a.set(a.get() + 1));
        }
        // SAFETY: the caller's obligations are `System::alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by this thread while running `f`.
fn allocations_in(f: impl FnOnce()) -> u64 {
    ALLOCS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCS.with(Cell::get)
}

/// Polls a future that must be ready at once (a hit), with a waker that does nothing.
fn ready<F: Future>(fut: F) -> F::Output {
    match pin!(fut).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a hit waited"),
    }
}

common::backend_test!(hits_allocate_nothing);
fn hits_allocate_nothing(backend: Backend) {
    let dir = common::scratch_dir();
    let (path, data) = common::make_file(dir.path(), "f", 16 * 4096, 5);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = common::cache_on(backend, 64);
    let file = rt.block_on(cache.open(&path, &common::ro())).unwrap();
    rt.block_on(file.readahead(0, data.len() as u64)).unwrap();
    let mut buf = vec![0u8; 6000];
    // First uses take the readahead marks (the pinned path); the hits below are plain.
    for i in 0..16u64 {
        ready(file.read_at(&mut buf[..10], i * 4096)).unwrap();
    }
    let counted = allocations_in(|| drop(std::hint::black_box(Vec::<u8>::with_capacity(8))));
    assert_eq!(counted, 1, "the counting allocator counts");
    let before = cache.stats().hits;
    let n = allocations_in(|| {
        for k in 0..300u64 {
            let off = (k * 7919) % (data.len() as u64 - 6000);
            assert_eq!(ready(file.read_at(&mut buf, off)).unwrap(), 6000);
            assert_eq!(&buf[..], &data[off as usize..off as usize + 6000]);
            let got = file.try_read_at(&mut buf[..100], off).unwrap();
            assert_eq!(&buf[..got], &data[off as usize..off as usize + got]);
            let page = ready(file.page(k % 16)).unwrap();
            assert_eq!(page[7], data[(k % 16) as usize * 4096 + 7]);
        }
    });
    assert_eq!(n, 0, "hits allocated {n} times");
    let hits = cache.stats().hits - before;
    // Each read_at of 6000 bytes spans two pages; try_read_at of 100 one or two; page one.
    assert!(hits >= 300 * 4, "{hits} hits counted");
    rt.block_on(cache.shutdown()).unwrap();
}
