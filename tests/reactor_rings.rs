//! Rings reaped through a tokio runtime's reactor (`io_uring`, feature `tokio`): a task on a
//! multi-thread runtime submits on its worker thread's own ring, and a reaper task on the
//! runtime reaps it. Checked from outside, through `Stats` and the bytes:
//!
//! * misses, write-back and syncs from tasks complete on reactor rings, not through the
//!   driver thread; a current-thread runtime, a runtime without its I/O driver and
//!   `futures::executor::block_on` use the shared ring, and nothing fails;
//! * tasks migrating between 4 workers (more than the 2 cores) while their I/O is in flight,
//!   futures dropped mid-I/O, a budget that churns every frame, reads checked byte for byte
//!   against a model;
//! * a runtime shut down with I/O in flight loses nothing: the cache, used afterwards from
//!   plain threads, returns the right bytes and shuts down;
//! * a thread that entered the runtime and exits gives its ring back.
//!
//! Every test runs on both backends (`common::backend_test!`); on the thread pool there are
//! no rings and the rest must hold the same. No test sleeps to wait for I/O.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;

use common::{assert_bytes, builder, make_file, pattern, read_disk, ro, rw, scratch_dir};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uringcache::{Backend, Cache};

fn cache(backend: Backend, frames: usize) -> Cache {
    builder(backend)
        .memory_limit(frames * 4096)
        .page_size(4096)
        .build()
        .unwrap_or_else(|e| panic!("build on {backend:?}: {e}"))
}

fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

common::backend_test!(tasks_complete_on_reactor_rings);
/// Cold reads, writes and a sync from tasks on a multi-thread runtime complete on reactor
/// rings (io_uring); the bytes are right on both backends.
fn tasks_complete_on_reactor_rings(backend: Backend) {
    let dir = scratch_dir();
    let (path, data) = make_file(dir.path(), "f", 1 << 20, 11);
    let cache = cache(backend, 512);
    let rt = runtime(2);
    let before = cache.stats();
    rt.block_on(async {
        let f = Arc::new(cache.open(&path, &rw()).await.unwrap());
        let tasks: Vec<_> = (0..8u64)
            .map(|t| {
                let f = f.clone();
                let data = data.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    for i in 0..32u64 {
                        let off = ((t * 32 + i) * 4096) % (1 << 20);
                        f.read_exact_at(&mut buf, off).await.unwrap();
                        let off = off as usize;
                        assert_bytes(&buf, &data[off..off + 4096], "a cold page");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        f.write_all_at(b"reactor", 4096 * 3 + 5).await.unwrap();
        f.sync_data().await.unwrap();
    });
    let after = cache.stats();
    let mut want = data.clone();
    want[4096 * 3 + 5..4096 * 3 + 12].copy_from_slice(b"reactor");
    assert_bytes(
        &read_disk(&path).unwrap(),
        &want,
        "the file on disk after the sync",
    );
    match backend {
        Backend::IoUring => {
            assert!(after.reactor_rings >= 1, "{after:?}");
            assert!(
                after.reactor_rings <= 3,
                "one per thread at most: {after:?}"
            );
            // 256 misses (fewer requests with readahead), the write-back, the flush.
            assert!(
                after.reactor_completions >= before.reactor_completions + 3,
                "completions reaped through the reactor: {before:?} -> {after:?}"
            );
        }
        _ => {
            assert_eq!(after.reactor_rings, 0);
            assert_eq!(after.reactor_completions, 0);
        }
    }
    drop(rt);
    cache.shutdown_blocking().unwrap();
}

common::backend_test!(other_executors_use_the_shared_ring);
/// A current-thread runtime, a multi-thread runtime without its I/O driver, and
/// `futures::executor::block_on` get no reactor ring, and their I/O completes.
fn other_executors_use_the_shared_ring(backend: Backend) {
    let dir = scratch_dir();
    let (path, data) = make_file(dir.path(), "f", 256 << 10, 12);
    let cache = cache(backend, 16);
    let read_all = |f: &uringcache::File| {
        let f = f.clone();
        let data = data.clone();
        async move {
            let mut buf = vec![0u8; 4096];
            for i in 0..64usize {
                f.read_exact_at(&mut buf, (i * 4096) as u64).await.unwrap();
                assert_bytes(&buf, &data[i * 4096..(i + 1) * 4096], "a page");
            }
        }
    };
    let f = futures::executor::block_on(cache.open(&path, &ro())).unwrap();
    futures::executor::block_on(read_all(&f));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async { tokio::spawn(read_all(&f)).await.unwrap() });
    // No I/O driver: registering the ring panics inside tokio; the cache catches that
    // quietly and uses the shared ring.
    let no_io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    no_io.block_on(async { tokio::spawn(read_all(&f)).await.unwrap() });
    let s = cache.stats();
    assert_eq!(s.reactor_rings, 0, "{s:?}");
    assert_eq!(s.reactor_completions, 0, "{s:?}");
    // A real panic on this thread afterwards is still reported and caught as usual.
    let caught = std::panic::catch_unwind(|| panic!("an ordinary panic"));
    assert!(caught.is_err());
    drop(f);
    cache.shutdown_blocking().unwrap();
}

common::backend_test!(migrating_tasks_with_io_in_flight);
/// 48 tasks on 4 workers (over the 2 cores), yielding between operations so that they move
/// between workers while their I/O is in flight on another worker's ring; some read futures
/// are dropped mid-I/O; writes and syncs interleave; a budget of 24 frames churns every frame.
/// Every byte read is checked against the model, and the file on disk at the end.
fn migrating_tasks_with_io_in_flight(backend: Backend) {
    const PAGES: usize = 192;
    const TASKS: usize = 48;
    const OPS: usize = 120;
    let dir = scratch_dir();
    let path = dir.path().join("f");
    let init = pattern(PAGES * 4096, 13);
    std::fs::write(&path, &init).unwrap();
    let cache = cache(backend, 24);
    let rt = runtime(4);
    // Each task owns the pages `p % TASKS == t`: it writes only those (so the model of each
    // page is one task's alone) and reads every page whose bytes it knows (its own, or any
    // page never written: odd pages are never written).
    rt.block_on(async {
        let f = Arc::new(cache.open(&path, &rw()).await.unwrap());
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let f = f.clone();
                let init = init.clone();
                tokio::spawn(async move {
                    let mut rng = StdRng::seed_from_u64(t as u64);
                    let mut mine: Vec<Vec<u8>> = Vec::new();
                    let own: Vec<usize> = (0..PAGES)
                        .filter(|p| p % TASKS == t && p % 2 == 0)
                        .collect();
                    for &p in &own {
                        mine.push(init[p * 4096..(p + 1) * 4096].to_vec());
                    }
                    let mut buf = vec![0u8; 4096];
                    for op in 0..OPS {
                        match rng.gen_range(0..10) {
                            0..=4 => {
                                // Any odd page (never written) or one of our own.
                                let (p, want) = if rng.gen_bool(0.5) || own.is_empty() {
                                    let p = rng.gen_range(0..PAGES / 2) * 2 + 1;
                                    (p, &init[p * 4096..(p + 1) * 4096])
                                } else {
                                    let i = rng.gen_range(0..own.len());
                                    (own[i], &mine[i][..])
                                };
                                f.read_exact_at(&mut buf, (p * 4096) as u64).await.unwrap();
                                assert_bytes(&buf, want, &format!("task {t} op {op} page {p}"));
                            }
                            5 => {
                                // A read dropped mid-flight (polled once, then let go).
                                let p = rng.gen_range(0..PAGES);
                                let mut fut =
                                    std::pin::pin!(f.read_at(&mut buf, (p * 4096) as u64));
                                let _ = fut.as_mut().now_or_never();
                            }
                            6..=7 if !own.is_empty() => {
                                let i = rng.gen_range(0..own.len());
                                let at = rng.gen_range(0..4096 - 64);
                                let bytes: Vec<u8> = (0..64).map(|_| rng.gen()).collect();
                                f.write_all_at(&bytes, (own[i] * 4096 + at) as u64)
                                    .await
                                    .unwrap();
                                mine[i][at..at + 64].copy_from_slice(&bytes);
                            }
                            8 => f.sync_data().await.unwrap(),
                            _ => {}
                        }
                        tokio::task::yield_now().await;
                    }
                    (own, mine)
                })
            })
            .collect();
        let mut want = init.clone();
        for t in tasks {
            let (own, mine) = t.await.unwrap();
            for (p, bytes) in own.into_iter().zip(mine) {
                want[p * 4096..(p + 1) * 4096].copy_from_slice(&bytes);
            }
        }
        f.sync_all().await.unwrap();
        assert_bytes(&read_disk(&path).unwrap(), &want, "the file on disk");
        let mut all = vec![0u8; PAGES * 4096];
        f.read_exact_at(&mut all, 0).await.unwrap();
        assert_bytes(&all, &want, "the file through the cache");
    });
    let s = cache.stats();
    if backend == Backend::IoUring {
        assert!(s.reactor_completions > 0, "{s:?}");
    }
    drop(rt);
    cache.shutdown_blocking().unwrap();
}

common::backend_test!(a_runtime_shut_down_with_io_in_flight_loses_nothing);
/// Tasks reading and writing are dropped with the runtime while their I/O is in flight on
/// reactor rings; afterwards, from plain threads, every page reads right, the writes that
/// returned are in the file, and the cache shuts down. Ten rounds.
fn a_runtime_shut_down_with_io_in_flight_loses_nothing(backend: Backend) {
    let dir = scratch_dir();
    let (path, data) = make_file(dir.path(), "f", 2 << 20, 14);
    let cache = cache(backend, 64);
    let f = futures::executor::block_on(cache.open(&path, &rw())).unwrap();
    for round in 0..10u64 {
        let rt = runtime(2);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        for t in 0..16u64 {
            let f = f.clone();
            let tx = tx.clone();
            let data = data.clone();
            rt.spawn(async move {
                let mut rng = StdRng::seed_from_u64(round * 100 + t);
                let mut buf = vec![0u8; 16384];
                let _ = tx.send(());
                loop {
                    let off = rng.gen_range(0..(2 << 20) - 16384u64) & !4095;
                    f.read_exact_at(&mut buf, off).await.unwrap();
                    // Rewrites the bytes the page holds: the model does not change.
                    let off = off as usize;
                    assert_eq!(buf[..], data[off..off + 16384]);
                    f.write_all_at(&buf[..512], off as u64).await.unwrap();
                    tokio::task::yield_now().await;
                }
            });
        }
        // Every task has started; then the runtime goes with their I/O in flight.
        for _ in 0..16 {
            rx.recv().unwrap();
        }
        drop(rt);
    }
    let mut all = vec![0u8; 2 << 20];
    futures::executor::block_on(f.read_exact_at(&mut all, 0)).unwrap();
    assert_bytes(&all, &data, "the file after the runtimes are gone");
    futures::executor::block_on(f.sync_all()).unwrap();
    assert_bytes(&read_disk(&path).unwrap(), &data, "the file on disk");
    drop(f);
    cache.shutdown_blocking().unwrap();
}

common::backend_test!(a_thread_that_exits_gives_its_ring_back);
/// A plain thread that enters a multi-thread runtime's context and misses gets a reactor
/// ring; when it exits, the ring goes (its reaper ends once the ring is idle).
fn a_thread_that_exits_gives_its_ring_back(backend: Backend) {
    let dir = scratch_dir();
    let (path, data) = make_file(dir.path(), "f", 256 << 10, 15);
    let cache = cache(backend, 64);
    let rt = runtime(2);
    let f = rt.block_on(cache.open(&path, &ro())).unwrap();
    let base = cache.stats().reactor_rings;
    let handle = rt.handle().clone();
    let during = std::thread::scope(|s| {
        s.spawn(|| {
            let _in_runtime = handle.enter();
            let mut buf = vec![0u8; 4096];
            futures::executor::block_on(f.read_exact_at(&mut buf, 65536)).unwrap();
            assert_bytes(&buf, &data[65536..65536 + 4096], "a cold page");
            cache.stats().reactor_rings
        })
        .join()
        .unwrap()
    });
    if backend == Backend::IoUring {
        assert_eq!(during, base + 1, "the thread's ring");
        // The reaper runs on the runtime: wait (bounded) for it to let go of the ring.
        let deadline = Instant::now() + Duration::from_secs(10);
        while cache.stats().reactor_rings > base {
            assert!(Instant::now() < deadline, "the ring outlived its thread");
            std::thread::sleep(Duration::from_millis(1));
        }
    } else {
        assert_eq!(during, 0);
    }
    drop(f);
    drop(rt);
    cache.shutdown_blocking().unwrap();
}

common::backend_test!(a_shutdown_inside_the_runtime_drains_the_rings);
/// `Cache::shutdown` awaited in a task while other tasks' I/O is in flight on reactor rings:
/// it returns (draining the rings itself), and the other tasks see the shutdown error or
/// their bytes, never wrong bytes.
fn a_shutdown_inside_the_runtime_drains_the_rings(backend: Backend) {
    let dir = scratch_dir();
    let (path, data) = make_file(dir.path(), "f", 1 << 20, 16);
    let cache = cache(backend, 32);
    let rt = runtime(2);
    rt.block_on(async {
        let f = Arc::new(cache.open(&path, &ro()).await.unwrap());
        let data = Arc::new(data);
        let tasks: Vec<_> = (0..8u64)
            .map(|t| {
                let f = f.clone();
                let data = data.clone();
                tokio::spawn(async move {
                    let mut rng = StdRng::seed_from_u64(t);
                    let mut buf = vec![0u8; 8192];
                    for _ in 0..2000 {
                        let off = rng.gen_range(0..(1 << 20) - 8192u64) & !4095;
                        match f.read_exact_at(&mut buf, off).await {
                            Ok(()) => {
                                let off = off as usize;
                                assert_bytes(&buf, &data[off..off + 8192], "a page");
                            }
                            Err(_) => return,
                        }
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        tokio::task::yield_now().await;
        cache.shutdown().await.unwrap();
        for t in tasks {
            t.await.unwrap();
        }
    });
}
