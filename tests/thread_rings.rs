//! Rings per blocking thread (`io_uring`): a thread using `BlockingFile` submits and reaps its
//! own I/O on a ring of its own. Checked from outside, through `Stats` and the bytes: a
//! blocking miss completes on its thread's ring and the ring goes when the thread does; many
//! threads (some short-lived, more than the rings allowed) read and write one file through a
//! tiny budget that churns every frame, waiting on each other's pages across rings, and every
//! byte is checked against a model; async tasks and blocking threads mixed; a shutdown while
//! blocking threads are busy.
//!
//! Every test runs on both backends (`common::backend_test!`); on the thread pool there are
//! no rings, but a blocked thread runs its lone requests itself, and the rest must hold the
//! same. No test sleeps or times anything.

mod common;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{assert_bytes, builder, make_file, pattern, ro, rw, scratch_dir};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uringcache::{Backend, BlockingFile, Cache};

fn cache(backend: Backend, frames: usize, rings: usize) -> Cache {
    builder(backend)
        .memory_limit(frames * 4096)
        .page_size(4096)
        .thread_rings(rings)
        .build()
        .unwrap_or_else(|e| panic!("build on {backend:?}: {e}"))
}

common::backend_test!(a_blocking_miss_is_reaped_on_its_own_threads_ring);
/// A cold read and a sync from a plain thread complete on that thread: on its own ring
/// (io_uring), which exists while the thread lives and is gone once it has exited; run by the
/// thread itself (the thread pool).
fn a_blocking_miss_is_reaped_on_its_own_threads_ring(backend: Backend) {
    let dir = scratch_dir();
    let (path, data) = make_file(dir.path(), "f", 64 << 10, 7);
    let cache = cache(backend, 64, 64);
    let f = cache.open_blocking(&path, &rw()).unwrap();
    let before = cache.stats();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let worker = {
        let f = f.clone();
        let data = data.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            f.read_exact_at(&mut buf, 8192).unwrap();
            assert_bytes(&buf, &data[8192..12288], "a cold page");
            f.write_all_at(b"synced", 100).unwrap();
            f.sync_data().unwrap();
            ready_tx.send(()).unwrap();
            rx.recv().unwrap(); // stay alive until the main thread has looked
        })
    };
    ready_rx.recv().unwrap();
    let during = cache.stats();
    tx.send(()).unwrap();
    worker.join().unwrap();
    let after = cache.stats();
    match backend {
        Backend::IoUring => {
            // The main thread's own ring (made by `open_blocking`), then the worker's too.
            assert_eq!(before.thread_rings, 1, "{before:?}");
            assert_eq!(during.thread_rings, 2, "the worker's ring: {during:?}");
            // The read, the write-back of page 0 and the flush, at least.
            assert!(
                during.caller_completions >= before.caller_completions + 3,
                "completions reaped by the worker itself: {before:?} -> {during:?}"
            );
            assert_eq!(
                after.thread_rings, 1,
                "the ring goes with its thread: {after:?}"
            );
        }
        _ => {
            assert_eq!(during.thread_rings, 0);
            // The miss and the flush were lone requests, run by the worker itself.
            assert!(
                during.caller_completions >= before.caller_completions + 2,
                "requests the worker ran itself: {before:?} -> {during:?}"
            );
        }
    }
    let disk = common::read_disk(&path).unwrap();
    assert_eq!(&disk[100..106], b"synced");
    cache.shutdown_blocking().unwrap();
}

common::backend_test!(many_threads_churn_a_tiny_budget_across_rings);
/// Ten threads at once — four long-lived readers of the whole file, four writers each owning a
/// range of it (and reading everything), and a stream of short-lived threads that do a few
/// reads each and exit — over a budget of 16 frames, with only 3 thread rings allowed (the
/// other threads use the shared ring). Readers wait on pages other threads' rings are reading,
/// every frame is reused again and again, and every byte read is checked: against the file
/// for the read-only part, against the writer's own model for its range. At the end the
/// cache and the disk hold exactly the model.
fn many_threads_churn_a_tiny_budget_across_rings(backend: Backend) {
    const LEN: usize = 1 << 20;
    const WRITERS: usize = 4;
    const OPS: usize = 600;
    let dir = scratch_dir();
    let (path, base) = make_file(dir.path(), "f", LEN, 11);
    let cache = cache(backend, 16, 3);
    let f = cache.open_blocking(&path, &rw()).unwrap();
    // Writers own the upper half, a quarter of it each; the lower half stays as made.
    let half = LEN / 2;
    let span = half / WRITERS;
    let writers_done = Arc::new(AtomicBool::new(false));
    let models: Vec<Vec<u8>> = std::thread::scope(|s| {
        let mut readers = Vec::new();
        for t in 0..4u64 {
            let f = f.clone();
            let base = &base;
            readers.push(s.spawn(move || read_lower_half(&f, base, t, OPS)));
        }
        let short_lived = {
            let f = f.clone();
            let base = &base;
            let done = writers_done.clone();
            s.spawn(move || {
                let mut n = 0u64;
                while !done.load(Ordering::Acquire) || n < 8 {
                    let f = f.clone();
                    let base = base.clone();
                    std::thread::spawn(move || read_lower_half(&f, &base, 100 + n, 20))
                        .join()
                        .expect("a short-lived reader panicked")
                        .unwrap();
                    n += 1;
                }
                n
            })
        };
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let f = f.clone();
                let mut model = base[half + w * span..half + (w + 1) * span].to_vec();
                s.spawn(move || -> io::Result<Vec<u8>> {
                    let start = half + w * span;
                    let mut rng = StdRng::seed_from_u64(w as u64);
                    for op in 0..OPS {
                        let at = rng.gen_range(0..span);
                        let n = rng.gen_range(1..=6000).min(span - at);
                        if rng.gen_bool(0.5) {
                            let bytes = pattern(n, (w * OPS + op) as u64);
                            f.write_all_at(&bytes, (start + at) as u64)?;
                            model[at..at + n].copy_from_slice(&bytes);
                        } else {
                            let mut buf = vec![0u8; n];
                            f.read_exact_at(&mut buf, (start + at) as u64)?;
                            assert_bytes(&buf, &model[at..at + n], &format!("writer {w} op {op}"));
                        }
                        if op % 97 == 0 {
                            f.sync_data()?;
                        }
                    }
                    Ok(model)
                })
            })
            .collect();
        let models: Vec<Vec<u8>> = writers
            .into_iter()
            .map(|w| w.join().expect("a writer panicked").unwrap())
            .collect();
        writers_done.store(true, Ordering::Release);
        for r in readers {
            r.join().expect("a reader panicked").unwrap();
        }
        let n = short_lived.join().expect("the spawner panicked");
        assert!(n >= 8, "{n} short-lived readers");
        models
    });
    let mut want = base[..half].to_vec();
    for m in &models {
        want.extend_from_slice(m);
    }
    let mut back = vec![0u8; LEN];
    f.read_exact_at(&mut back, 0).unwrap();
    assert_bytes(&back, &want, "the whole file after the threads");
    f.sync_all().unwrap();
    assert_bytes(&common::read_disk(&path).unwrap(), &want, "disk");
    let stats = cache.stats();
    if backend == Backend::IoUring {
        assert!(stats.thread_rings <= 3, "bounded: {stats:?}");
    }
    assert!(stats.caller_completions > 0, "{stats:?}");
    cache.shutdown_blocking().unwrap();
}

/// `ops` random reads of pieces of up to `max` bytes of the file's first `data.len()` bytes,
/// each checked against `data`.
fn read_checked(
    f: &BlockingFile,
    data: &[u8],
    max: usize,
    seed: u64,
    ops: usize,
) -> io::Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    for op in 0..ops {
        let at = rng.gen_range(0..data.len());
        let n = rng.gen_range(1..=max).min(data.len() - at);
        let mut buf = vec![0u8; n];
        f.read_exact_at(&mut buf, at as u64)?;
        assert_bytes(&buf, &data[at..at + n], &format!("reader {seed} op {op}"));
    }
    Ok(())
}

/// `ops` random reads of the lower half of the file (which nobody writes), each checked.
fn read_lower_half(f: &BlockingFile, base: &[u8], seed: u64, ops: usize) -> io::Result<()> {
    read_checked(f, &base[..base.len() / 2], 20_000, seed, ops)
}

common::backend_test!(async_tasks_and_blocking_threads_share_pages);
/// Tokio tasks (multi-thread runtime) and plain blocking threads read the same small file
/// through a budget smaller than it: the async side's I/O goes on the shared ring, the
/// blocking side's on the threads' rings, and each waits on pages the other is reading.
fn async_tasks_and_blocking_threads_share_pages(backend: Backend) {
    const LEN: usize = 512 << 10;
    let dir = scratch_dir();
    let (path, data) = make_file(dir.path(), "f", LEN, 5);
    let cache = cache(backend, 24, 64);
    let bf = cache.open_blocking(&path, &ro()).unwrap();
    let data = Arc::new(data);
    let rt = common::multi_thread();
    std::thread::scope(|s| {
        let blocking: Vec<_> = (0..3u64)
            .map(|t| {
                let bf = bf.clone();
                let data = data.clone();
                s.spawn(move || read_checked(&bf, &data, 12_000, t, 300))
            })
            .collect();
        rt.block_on(async {
            let tasks: Vec<_> = (0..4u64)
                .map(|t| {
                    let file = bf.file().clone();
                    let data = data.clone();
                    tokio::spawn(async move {
                        let mut rng = StdRng::seed_from_u64(50 + t);
                        for op in 0..300 {
                            let at = rng.gen_range(0..LEN);
                            let n = rng.gen_range(1..=12_000).min(LEN - at);
                            let mut buf = vec![0u8; n];
                            file.read_exact_at(&mut buf, at as u64).await?;
                            assert_bytes(&buf, &data[at..at + n], &format!("task {t} op {op}"));
                        }
                        io::Result::Ok(())
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("a task panicked").unwrap();
            }
        });
        for b in blocking {
            b.join().expect("a blocking thread panicked").unwrap();
        }
    });
    cache.shutdown_blocking().unwrap();
}

common::backend_test!(shutdown_while_blocking_threads_are_busy);
/// `shutdown_blocking` on the main thread while four threads read and write through their own
/// rings: it returns (every ring drained), each thread's calls either succeed — and what
/// succeeded is right — or fail with the shutdown error, and the threads end.
fn shutdown_while_blocking_threads_are_busy(backend: Backend) {
    const LEN: usize = 256 << 10;
    let dir = scratch_dir();
    let (path, data) = make_file(dir.path(), "f", LEN, 9);
    let cache = cache(backend, 16, 64);
    let f = cache.open_blocking(&path, &rw()).unwrap();
    let started = Arc::new(std::sync::Barrier::new(5));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let f = f.clone();
            let data = data.clone();
            let started = started.clone();
            std::thread::spawn(move || {
                started.wait();
                let mut rng = StdRng::seed_from_u64(t);
                let mut failed = 0;
                for _ in 0..400 {
                    let at = rng.gen_range(0..LEN / 2);
                    let mut buf = vec![0u8; 4096.min(LEN / 2 - at)];
                    match f.read_exact_at(&mut buf, at as u64) {
                        Ok(()) => assert_bytes(&buf, &data[at..at + buf.len()], "a read"),
                        Err(_) => failed += 1,
                    }
                    let w = LEN / 2 + (t as usize) * 4096;
                    if f.write_all_at(&[t as u8; 100], w as u64).is_err() {
                        failed += 1;
                    }
                }
                failed
            })
        })
        .collect();
    started.wait();
    cache.shutdown_blocking().unwrap();
    for t in threads {
        t.join().expect("a thread panicked");
    }
    assert!(
        f.write_all_at(b"late", 0).is_err(),
        "the cache is shut down"
    );
}

/// Set in the child process of [`a_thread_whose_ring_cannot_be_made_uses_the_shared_ring`].
const NOFILE_CHILD_ENV: &str = "URINGCACHE_THREAD_RING_NOFILE_CHILD";

common::backend_test!(a_thread_whose_ring_cannot_be_made_uses_the_shared_ring);
/// A thread that cannot get a ring (here: no file descriptor left for it, `RLIMIT_NOFILE`
/// lowered to the descriptors already open, the free ones below it taken) still does all its blocking calls right, through
/// the shared ring; nothing fails, and no ring is counted for it. In a child process, since
/// the limit is process-wide.
fn a_thread_whose_ring_cannot_be_made_uses_the_shared_ring(backend: Backend) {
    let name = match backend {
        Backend::IoUring => "io_uring",
        _ => "threads",
    };
    common::in_child(
        NOFILE_CHILD_ENV,
        &format!("a_thread_whose_ring_cannot_be_made_uses_the_shared_ring::{name}"),
        name,
        || {
            let dir = scratch_dir();
            let (path, data) = make_file(dir.path(), "f", 128 << 10, 21);
            let cache = cache(backend, 8, 64);
            let f = cache.open_blocking(&path, &rw()).unwrap();
            let before = cache.stats();
            // The highest descriptor open now, plus one, as the soft limit: no new one.
            let highest = std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
                .max()
                .unwrap();
            let mut old = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: plain system calls on this process's own limit.
            unsafe {
                assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut old), 0);
                let low = libc::rlimit {
                    rlim_cur: highest + 1,
                    rlim_max: old.rlim_max,
                };
                assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &low), 0);
            }
            // Fill the free descriptors below the limit, so that none is left.
            let mut fillers = Vec::new();
            while let Ok(f) = std::fs::File::open("/dev/null") {
                fillers.push(f);
            }
            let worker = {
                let f = f.clone();
                let data = data.clone();
                std::thread::spawn(move || -> io::Result<()> {
                    read_checked(&f, &data, 20_000, 3, 200)?;
                    f.write_all_at(b"still durable", 5000)?;
                    f.sync_data()
                })
            };
            let result = worker.join().expect("the worker panicked");
            drop(fillers);
            // SAFETY: restores the limit read above.
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) };
            result.unwrap();
            let after = cache.stats();
            assert_eq!(after.thread_rings, before.thread_rings, "{after:?}");
            match backend {
                // Its requests went through the shared ring: none completed on a thread ring.
                Backend::IoUring => assert_eq!(
                    after.caller_completions, before.caller_completions,
                    "the worker had no ring of its own: {before:?} -> {after:?}"
                ),
                // The pool needs no descriptor: the worker ran its lone requests itself.
                _ => assert!(after.caller_completions > before.caller_completions),
            }
            let disk = common::read_disk(&path).unwrap();
            assert_eq!(&disk[5000..5013], b"still durable");
            cache.shutdown_blocking().unwrap();
        },
    );
}
