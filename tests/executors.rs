//! "Any executor": the async API needs no particular runtime, because the backend (its driver
//! thread, its pool) and not the executor completes I/O. The same workload — concurrent
//! readers and writers of one file against a model, pages, a sync, a check of the disk, a
//! reopen — runs under tokio's current-thread and multi-thread runtimes,
//! `futures::executor::block_on` (no reactor at all), and smol (its own reactor and a
//! multi-threaded executor), on both backends.
//!
//! Every test runs on both backends (`common::backend_test!`). No test sleeps or times
//! anything.

mod common;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use common::{assert_bytes, cache_on, make_file, pattern, rw, scratch_dir};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uringcache::{Backend, Cache, File};

const LEN: usize = 256 << 10;
const TASKS: usize = 4;
const OPS: usize = 150;

type Task = Pin<Box<dyn Future<Output = io::Result<Vec<u8>>> + Send>>;
/// The whole workload, as one future for the executor under test.
type Main = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;
/// Drives a [`Main`] to completion on the executor under test.
type Run<'a> = &'a dyn Fn(Main) -> io::Result<()>;
/// Spawns a [`Task`] on the executor under test, giving a future of its result.
type Spawn = Arc<dyn Fn(Task) -> Task + Send + Sync>;

/// One task: owns a quarter of the file, and writes, reads and pins random pieces of it,
/// checking each read and page against its model. Returns its quarter's final bytes.
fn task(file: File, t: usize, base: Vec<u8>) -> Task {
    Box::pin(async move {
        let span = LEN / TASKS;
        let start = t * span;
        let mut model = base[start..start + span].to_vec();
        let mut rng = StdRng::seed_from_u64(t as u64 + 7);
        for op in 0..OPS {
            let at = rng.gen_range(0..span);
            let n = rng.gen_range(1..=9000).min(span - at);
            match rng.gen_range(0..3) {
                0 => {
                    let bytes = pattern(n, (t * OPS + op) as u64);
                    file.write_all_at(&bytes, (start + at) as u64).await?;
                    model[at..at + n].copy_from_slice(&bytes);
                }
                1 => {
                    let mut buf = vec![0u8; n];
                    file.read_exact_at(&mut buf, (start + at) as u64).await?;
                    assert_bytes(&buf, &model[at..at + n], &format!("task {t} op {op}"));
                }
                _ => {
                    // Quarters are whole pages, so the page lies in this task's quarter.
                    let index = (start + at) as u64 / 4096;
                    let from = index as usize * 4096 - start;
                    let page = file.page(index).await?;
                    assert_bytes(
                        &page[..],
                        &model[from..from + 4096],
                        &format!("task {t} page {index}"),
                    );
                }
            }
            if op % 50 == 49 {
                file.sync_data().await?;
            }
        }
        Ok(model)
    })
}

/// The workload: `TASKS` tasks spawned with `spawn` (or run together when `spawn` is `None`),
/// then the whole file checked in the cache and, after `sync_all`, on disk; then the file is
/// reopened in a fresh cache and read back. `run` drives a future to completion on the
/// executor under test.
fn workload(backend: Backend, run: Run<'_>, spawn: Option<Spawn>) {
    let dir = scratch_dir();
    let (path, base) = make_file(dir.path(), "f", LEN, 3);
    // 24 frames (96 KiB) for 256 KiB: eviction and writeback while the tasks run.
    let cache: Cache = cache_on(backend, 24);
    let path2 = path.clone();
    let cache2 = cache.clone();
    run(Box::pin(async move {
        let file = cache2.open(&path2, &rw()).await?;
        let tasks: Vec<Task> = (0..TASKS)
            .map(|t| {
                let t_fut = task(file.clone(), t, base.clone());
                match &spawn {
                    Some(spawn) => spawn(t_fut),
                    None => t_fut,
                }
            })
            .collect();
        let mut want = Vec::new();
        for r in futures::future::join_all(tasks).await {
            want.extend_from_slice(&r?);
        }
        let mut back = vec![0u8; LEN];
        file.read_exact_at(&mut back, 0).await?;
        assert_bytes(&back, &want, "the whole file");
        file.sync_all().await?;
        assert_bytes(&common::read_disk(&path2)?, &want, "disk");
        drop(file);
        cache2.shutdown().await?;
        let fresh = cache_on(backend, 24);
        let again = fresh.open(&path2, &rw()).await?;
        let mut back = vec![0u8; LEN];
        again.read_exact_at(&mut back, 0).await?;
        assert_bytes(&back, &want, "after a reopen in a fresh cache");
        drop(again);
        fresh.shutdown().await
    }))
    .unwrap_or_else(|e| panic!("on {backend:?}: {e}"));
    drop(cache);
}

common::backend_test!(under_tokio_current_thread);
/// tokio's current-thread runtime, the tasks spawned on it.
fn under_tokio_current_thread(backend: Backend) {
    let rt = Arc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    );
    let handle = rt.handle().clone();
    let spawn: Spawn = Arc::new(move |t: Task| {
        let h = handle.spawn(t);
        Box::pin(async move { h.await.expect("task panicked") }) as Task
    });
    workload(backend, &|f| rt.block_on(f), Some(spawn));
}

common::backend_test!(under_tokio_multi_thread);
/// tokio's multi-thread runtime (4 workers), the tasks spawned on it.
fn under_tokio_multi_thread(backend: Backend) {
    let rt = common::multi_thread();
    let handle = rt.handle().clone();
    let spawn: Spawn = Arc::new(move |t: Task| {
        let h = handle.spawn(t);
        Box::pin(async move { h.await.expect("task panicked") }) as Task
    });
    workload(backend, &|f| rt.block_on(f), Some(spawn));
}

common::backend_test!(under_futures_block_on);
/// `futures::executor::block_on`: one thread, no reactor; the tasks run together in one
/// `join_all`.
fn under_futures_block_on(backend: Backend) {
    workload(backend, &futures::executor::block_on, None);
}

common::backend_test!(under_smol);
/// smol: a multi-threaded `smol::Executor` (two threads running it), the tasks spawned on it.
fn under_smol(backend: Backend) {
    let ex = Arc::new(smol::Executor::<'static>::new());
    let (stop, stopped) = smol::channel::unbounded::<()>();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let ex = ex.clone();
            let stopped = stopped.clone();
            std::thread::spawn(move || smol::block_on(ex.run(stopped.recv())))
        })
        .collect();
    let spawner = ex.clone();
    let spawn: Spawn = Arc::new(move |t: Task| {
        let h = spawner.spawn(t);
        Box::pin(h) as Task
    });
    workload(backend, &|f| smol::block_on(ex.run(f)), Some(spawn));
    drop(stop);
    for t in threads {
        let _ = t.join().expect("an executor thread panicked");
    }
}
