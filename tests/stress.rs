//! Stress: many tasks on many files sharing a budget of a few dozen pages, mixing reads,
//! writes, syncs, truncation and invalidation, with every read checked against a model.
//! Each test runs on both backends (`common::backend_test!`).

mod common;

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use uringcache::{Backend, OpenOptions};

common::backend_test!(many_tasks_many_files_tiny_budget);
/// One writer task per file owns that file's model, so each read has one right answer; all
/// files compete for the same 40 frames. Extra readers hammer a shared read-only file.
fn many_tasks_many_files_tiny_budget(backend: Backend) {
    common::multi_thread().block_on(async {
        let dir = Arc::new(common::scratch_dir());
        let cache = common::builder(backend)
            .memory_limit(40 * 4096)
            .dirty_ratio(0.5)
            .dirty_background_ratio(0.2)
            .build()
            .unwrap();
        let (shared_path, shared) = common::make_file(dir.path(), "shared", 300_000, 99);
        let shared = Arc::new(shared);
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let (cache, dir) = (cache.clone(), dir.clone());
            tasks.push(tokio::spawn(async move {
                let path = dir.path().join(format!("f{t}"));
                let file = cache
                    .open(
                        &path,
                        OpenOptions::new().read(true).write(true).create(true),
                    )
                    .await
                    .unwrap();
                let mut model: Vec<u8> = Vec::new();
                let mut rng = rand::rngs::StdRng::seed_from_u64(t);
                for step in 0..300 {
                    match rng.gen_range(0..100) {
                        0..=44 => {
                            let off = rng.gen_range(0..200_000u64);
                            let data = common::pattern(rng.gen_range(1..12_000), rng.gen());
                            file.write_all_at(&data, off).await.unwrap();
                            let end = off as usize + data.len();
                            if model.len() < end {
                                model.resize(end, 0);
                            }
                            model[off as usize..end].copy_from_slice(&data);
                        }
                        45..=84 => {
                            let off = rng.gen_range(0..210_000u64);
                            let mut buf = vec![0u8; rng.gen_range(1..16_000)];
                            let n = file.read_at(&mut buf, off).await.unwrap();
                            let want = (model.len() as u64).saturating_sub(off) as usize;
                            assert_eq!(n, want.min(buf.len()), "file {t} step {step}");
                            if n > 0 {
                                common::assert_bytes(
                                    &buf[..n],
                                    &model[off as usize..off as usize + n],
                                    &format!("file {t} step {step} at {off}"),
                                );
                            }
                        }
                        85..=89 => file.sync_data().await.unwrap(),
                        90..=93 => {
                            let len = rng.gen_range(0..200_000u64);
                            file.set_len(len).await.unwrap();
                            model.resize(len as usize, 0);
                        }
                        94..=97 => {
                            let off = rng.gen_range(0..200_000u64);
                            file.invalidate(off, 50_000).await.unwrap();
                        }
                        _ => file.sync_all().await.unwrap(),
                    }
                }
                file.sync_all().await.unwrap();
                common::assert_bytes(&common::read_disk(&path).unwrap(), &model, "on disk");
            }));
        }
        for r in 0..4u64 {
            let (cache, path, shared) = (cache.clone(), shared_path.clone(), shared.clone());
            tasks.push(tokio::spawn(async move {
                let file = cache.open(&path, &common::ro()).await.unwrap();
                let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + r);
                let mut buf = vec![0u8; 9000];
                for _ in 0..300 {
                    let off = rng.gen_range(0..shared.len() as u64);
                    let n = file.read_at(&mut buf, off).await.unwrap();
                    common::assert_bytes(
                        &buf[..n],
                        &shared[off as usize..off as usize + n],
                        "shared file",
                    );
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let s = cache.stats();
        assert!(s.cached_pages <= 40);
        assert!(s.evictions > 100, "the budget was under pressure: {s}");
        cache.shutdown().await.unwrap();
    });
}

common::backend_test!(readers_never_see_a_fresh_page_before_its_overwrite_is_copied_in);
/// A whole-page overwrite of a page that is not cached takes a fresh frame. Readers racing it
/// must wait for the copy, never seeing the frame's old bytes or zeros in place of file data:
/// every version of every page here is a run of one non-zero byte, so a reader sees one
/// version or (racing the copy itself, as the kernel allows) parts of two, but never a zero.
fn readers_never_see_a_fresh_page_before_its_overwrite_is_copied_in(backend: Backend) {
    common::multi_thread().block_on(async {
        let dir = common::scratch_dir();
        let path = dir.path().join("fresh");
        let pages = 64u64;
        std::fs::write(&path, vec![0xAAu8; pages as usize * 4096]).unwrap();
        // Eight frames for 64 pages: most overwrites find their page evicted.
        let cache = common::builder(backend)
            .memory_limit(8 * 4096)
            .dirty_ratio(0.5)
            .build()
            .unwrap();
        let file = cache
            .open(&path, OpenOptions::new().read(true).write(true))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for t in 0..4u64 {
            let file = file.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(t);
                let mut buf = vec![0u8; 4096];
                for _ in 0..3000 {
                    let page = rng.gen_range(0..pages);
                    if t < 2 {
                        let v = rng.gen_range(1..=255u8);
                        file.write_all_at(&[v; 4096], page * 4096).await.unwrap();
                    } else {
                        file.read_exact_at(&mut buf, page * 4096).await.unwrap();
                        assert!(!buf.contains(&0), "page {page} showed zeros, not file data");
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

common::backend_test!(readers_copy_while_a_tiny_budget_churns_every_frame);
/// The lock-free hit path against frame reuse: two files of 96 pages each through a budget of
/// 16 frames, so that nearly every read evicts a page and its frame comes back holding another
/// page — often the same index of the other file (the case a lookup that checked only the
/// index would get wrong). Four reader tasks mix `read_at` (spanning pages), `try_read_at`,
/// `page` and `read_bytes`, a fifth invalidates ranges, and every byte each returns is checked
/// against the page it asked for. `STRESS_CHURN_OPS` sets the operations per reader (default
/// 1500).
fn readers_copy_while_a_tiny_budget_churns_every_frame(backend: Backend) {
    let ops: usize = std::env::var("STRESS_CHURN_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    common::multi_thread().block_on(async {
        let dir = common::scratch_dir();
        let cache = common::cache_on(backend, 16);
        let len = 96 * 4096;
        let mut files = Vec::new();
        for (name, seed) in [("a", 11), ("b", 12)] {
            let (path, data) = common::make_file(dir.path(), name, len, seed);
            let file = cache.open(&path, &common::ro()).await.unwrap();
            files.push((file, Arc::new(data)));
        }
        let files = Arc::new(files);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let invalidator = {
            let (files, stop) = (files.clone(), stop.clone());
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(99);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (file, _) = &files[rng.gen_range(0..2)];
                    let off = rng.gen_range(0..len as u64);
                    file.invalidate(off, rng.gen_range(1..40_000))
                        .await
                        .unwrap();
                    tokio::task::yield_now().await;
                }
            })
        };
        let readers: Vec<_> = (0..4u64)
            .map(|t| {
                let files = files.clone();
                tokio::spawn(async move {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(t);
                    let mut buf = vec![0u8; 12_000];
                    for step in 0..ops {
                        let f = rng.gen_range(0..2);
                        let (file, data) = &files[f];
                        let what = format!("reader {t} step {step} file {f}");
                        match rng.gen_range(0..4) {
                            0 => {
                                let off = rng.gen_range(0..len as u64 + 100);
                                let n = rng.gen_range(1..buf.len());
                                let got = file.read_at(&mut buf[..n], off).await.unwrap();
                                let o = (off as usize).min(len);
                                let want = &data[o..(o + n).min(len)];
                                assert_eq!(got, want.len(), "{what}");
                                common::assert_bytes(&buf[..got], want, &what);
                            }
                            1 => {
                                let off = rng.gen_range(0..len as u64);
                                let n = rng.gen_range(1..buf.len());
                                match file.try_read_at(&mut buf[..n], off) {
                                    Ok(got) => {
                                        let o = off as usize;
                                        assert!(got >= 1 && o + got <= len, "{what}");
                                        common::assert_bytes(&buf[..got], &data[o..o + got], &what);
                                    }
                                    Err(e) => {
                                        assert_eq!(
                                            e.kind(),
                                            std::io::ErrorKind::WouldBlock,
                                            "{what}"
                                        )
                                    }
                                }
                            }
                            2 => {
                                let index = rng.gen_range(0..96u64);
                                let page = file.page(index).await.unwrap();
                                let o = index as usize * 4096;
                                common::assert_bytes(&page, &data[o..o + 4096], &what);
                            }
                            _ => {
                                let off = rng.gen_range(0..len as u64);
                                let n = rng.gen_range(1..6000);
                                let got = file.read_bytes(off, n).await.unwrap();
                                let o = off as usize;
                                common::assert_bytes(&got, &data[o..(o + n).min(len)], &what);
                            }
                        }
                        if step % 16 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        for r in readers {
            r.await.unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        invalidator.await.unwrap();
        let stats = cache.stats();
        // Every one of the 16 frames reused dozens of times (964 evictions were seen in a
        // release run on a loaded machine, where readahead hits more; 1000 was too tight).
        assert!(stats.evictions > 400, "the budget churned: {stats}");
        cache.shutdown().await.unwrap();
    });
}
