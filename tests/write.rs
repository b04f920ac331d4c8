//! The buffered write path, writeback, sync and truncation through the public API, compared
//! with a model and with the bytes on disk.

mod common;

use std::io;
use std::sync::Arc;

use common::{cache_on, make_file, on_runtimes, pattern, scratch_dir};
use rand::{Rng, SeedableRng};
use uringcache::{Backend, OpenOptions};

use common::rw;

fn on_disk(path: &std::path::Path) -> Vec<u8> {
    common::read_disk(path).unwrap()
}

common::backend_test!(writes_are_read_back_by_every_handle_and_reach_the_disk);
fn writes_are_read_back_by_every_handle_and_reach_the_disk(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, mut model) = make_file(dir.path(), "w", 20_000, 1);
        let cache = cache_on(backend, 64);
        let a = cache.open(&path, &rw()).await?;
        let b = cache.open(&path, &common::ro()).await?;
        // Partial page (read-modify-write), whole page, a run across pages, past the end.
        for (off, len, seed) in [
            (100u64, 10usize, 2u64),
            (4096, 4096, 3),
            (5000, 9000, 4),
            (30_000, 5000, 5),
        ] {
            let data = pattern(len, seed);
            a.write_all_at(&data, off).await?;
            let end = off as usize + len;
            if model.len() < end {
                model.resize(end, 0);
            }
            model[off as usize..end].copy_from_slice(&data);
            let mut buf = vec![0u8; model.len() + 100];
            let n = b.read_at(&mut buf, 0).await?;
            assert_eq!(n, model.len());
            common::assert_bytes(
                &buf[..n],
                &model,
                &format!("read-your-writes after write at {off}"),
            );
        }
        assert_eq!(a.len(), 35_000);
        assert_eq!(b.len(), 35_000);
        let mut gap = vec![1u8; 100];
        b.read_exact_at(&mut gap, 25_000).await?;
        assert!(gap.iter().all(|&x| x == 0), "the gap reads as zeros");
        a.sync_all().await?;
        assert_eq!(std::fs::metadata(&path)?.len(), 35_000);
        common::assert_bytes(&on_disk(&path), &model, "on disk");
        let s = cache.stats();
        assert_eq!(s.dirty_pages, 0, "{s}");
        assert!(s.pages_written > 0 && s.flushes >= 1, "{s}");
        Ok(())
    });
}

common::backend_test!(the_tail_block_is_cut_back_to_the_length);
fn the_tail_block_is_cut_back_to_the_length(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let path = dir.path().join("tail");
        let cache = cache_on(backend, 16);
        let f = cache
            .open(
                &path,
                OpenOptions::new().write(true).read(true).create(true),
            )
            .await?;
        f.write_all_at(b"hello", 0).await?;
        f.sync_data().await?;
        assert_eq!(on_disk(&path), b"hello");
        f.write_all_at(b" world", 5).await?;
        f.sync_all().await?;
        assert_eq!(on_disk(&path), b"hello world");
        Ok(())
    });
}

common::backend_test!(set_len_shrinks_and_grows_with_cached_dirty_pages);
fn set_len_shrinks_and_grows_with_cached_dirty_pages(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, mut model) = make_file(dir.path(), "t", 50_000, 7);
        let cache = cache_on(backend, 64);
        let f = cache.open(&path, &rw()).await?;
        let data = pattern(30_000, 8);
        f.write_all_at(&data, 10_000).await?; // dirty pages on both sides of the cut
        model[10_000..40_000].copy_from_slice(&data);
        f.set_len(12_345).await?;
        model.truncate(12_345);
        assert_eq!(f.len(), 12_345);
        assert_eq!(std::fs::metadata(&path)?.len(), 12_345);
        f.set_len(20_000).await?;
        model.resize(20_000, 0);
        let mut buf = vec![0u8; 30_000];
        let n = f.read_at(&mut buf, 0).await?;
        common::assert_bytes(&buf[..n], &model, "the tail past the cut reads as zeros");
        f.sync_all().await?;
        common::assert_bytes(&on_disk(&path), &model, "on disk");
        assert_eq!(cache.stats().dirty_pages, 0);
        Ok(())
    });
}

common::backend_test!(invalidate_drops_clean_pages_and_keeps_dirty_ones);
fn invalidate_drops_clean_pages_and_keeps_dirty_ones(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, _) = make_file(dir.path(), "inv", 64 << 10, 9);
        let cache = cache_on(backend, 64);
        let f = cache.open(&path, &rw()).await?;
        let mut buf = vec![0u8; 64 << 10];
        f.read_exact_at(&mut buf, 0).await?;
        f.write_all_at(&[7u8; 10], 8192).await?;
        let before = cache.stats().cached_pages;
        f.invalidate(0, 64 << 10).await?;
        let after = cache.stats();
        assert_eq!(
            after.cached_pages, 1,
            "only the dirty page stays: {before} -> {after}"
        );
        let mut b = [0u8; 10];
        f.read_exact_at(&mut b, 8192).await?;
        assert_eq!(b, [7u8; 10]);
        Ok(())
    });
}

common::backend_test!(a_tiny_budget_of_dirty_pages_neither_deadlocks_nor_loses_bytes);
fn a_tiny_budget_of_dirty_pages_neither_deadlocks_nor_loses_bytes(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let path = dir.path().join("tiny");
        let cache = common::builder(backend)
            .memory_limit(16 * 4096)
            .dirty_ratio(1.0)
            .dirty_background_ratio(0.9)
            .build()?;
        let f = cache.open(&path, &rw()).await?;
        let data = pattern(1 << 20, 10);
        for chunk in 0..16 {
            let off = chunk * (64 << 10);
            f.write_all_at(&data[off..off + (64 << 10)], off as u64)
                .await?;
        }
        let mut buf = vec![0u8; 1 << 20];
        f.read_exact_at(&mut buf, 0).await?;
        common::assert_bytes(&buf, &data, "read back");
        f.sync_all().await?;
        common::assert_bytes(&on_disk(&path), &data, "on disk");
        let s = cache.stats();
        assert!(s.evictions > 0 && s.pages_written >= 256, "{s}");
        Ok(())
    });
}

common::backend_test!(shutdown_writes_everything_back);
fn shutdown_writes_everything_back(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let path = dir.path().join("sd");
        let cache = cache_on(backend, 256);
        let f = cache.open(&path, &rw()).await?;
        let data = pattern(300_001, 11);
        f.write_all_at(&data, 0).await?;
        cache.shutdown().await?;
        common::assert_bytes(&on_disk(&path), &data, "on disk");
        assert!(
            f.write_all_at(b"x", 0).await.is_err(),
            "the cache is shut down"
        );
        Ok(())
    });
}

common::backend_test!(bad_writes_are_refused_before_anything_changes);
fn bad_writes_are_refused_before_anything_changes(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "ro", 5000, 12);
        let cache = cache_on(backend, 16);
        let ro = cache.open(&path, &common::ro()).await?;
        let err = ro.write_all_at(b"abc", 0).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("without write access"), "{err}");
        let err = ro.set_len(0).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        let w = cache.open(&path, &rw()).await?;
        let err = w.write_all_at(b"abc", u64::MAX - 1).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("overflows"), "{err}");
        assert_eq!(w.len(), 5000);
        w.sync_all().await?;
        common::assert_bytes(&on_disk(&path), &data, "nothing changed");
        Ok(())
    });
}

common::backend_test!(append_implies_write_and_its_writer_starts_at_the_end);
/// `OpenOptions::append` as in std: it grants write access and refuses truncate; positional
/// writes go where they are told; a writer from an append handle starts at the end.
fn append_implies_write_and_its_writer_starts_at_the_end(backend: Backend) {
    on_runtimes(move || async move {
        use tokio::io::AsyncWriteExt;
        let dir = scratch_dir();
        let (path, mut model) = make_file(dir.path(), "log", 5000, 21);
        let cache = cache_on(backend, 16);
        let mut append = OpenOptions::new();
        append.append(true);
        let log = cache.open(&path, &append).await?;
        // Write access without write(true); no read access.
        let mut buf = [0u8; 10];
        let err = log.read_at(&mut buf, 0).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        // A positional write goes where it is told.
        log.write_all_at(b"XY", 10).await?;
        model[10..12].copy_from_slice(b"XY");
        // The writer starts at the end, whatever offset is passed.
        let mut w = log.writer(0);
        assert_eq!(w.position(), 5000);
        w.write_all(b"appended").await?;
        w.shutdown().await?;
        model.extend_from_slice(b"appended");
        // Another handle extends the file: a writer made after starts at the new end.
        let other = cache.open(&path, &rw()).await?;
        other.write_all_at(b"more", other.len()).await?;
        model.extend_from_slice(b"more");
        let mut w = log.writer(0);
        assert_eq!(w.position(), model.len() as u64);
        w.write_all(b"!").await?;
        w.sync_all().await?;
        model.push(b'!');
        common::assert_bytes(&on_disk(&path), &model, "appended on disk");
        // A plain read-write handle's writer still starts where it is told.
        assert_eq!(other.writer(3).position(), 3);
        // Truncate with append is refused, as std refuses it.
        let mut both = OpenOptions::new();
        both.append(true).truncate(true);
        let err = cache.open(&path, &both).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("truncate and append"), "{err}");
        // Append alone may create the file, as in std.
        let mut create = OpenOptions::new();
        create.append(true).create(true);
        let new = cache.open(dir.path().join("new-log"), &create).await?;
        let mut w = new.writer(0);
        w.write_all(b"x").await?;
        w.shutdown().await?;
        assert_eq!(new.len(), 1);
        Ok(())
    });
}

common::backend_test!(opening_with_truncate_drops_cached_and_dirty_pages);
fn opening_with_truncate_drops_cached_and_dirty_pages(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, _) = make_file(dir.path(), "tr", 40_000, 13);
        let cache = cache_on(backend, 64);
        let a = cache.open(&path, &rw()).await?;
        a.write_all_at(&[1u8; 9000], 0).await?;
        let b = cache
            .open(&path, OpenOptions::new().write(true).truncate(true))
            .await?;
        assert_eq!(a.len(), 0);
        assert_eq!(b.len(), 0);
        assert_eq!(cache.stats().dirty_pages, 0);
        let mut buf = [0u8; 10];
        assert_eq!(a.read_at(&mut buf, 0).await?, 0);
        a.sync_all().await?;
        assert_eq!(std::fs::metadata(&path)?.len(), 0);
        Ok(())
    });
}

common::backend_test!(random_operations_match_a_model);
/// Thousands of random operations against an in-memory model, with reopen in between,
/// compared read by read and on disk at the end.
fn random_operations_match_a_model(backend: Backend) {
    let seeds: u64 = std::env::var("URINGCACHE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    // Each seed on the next of the four executors.
    for seed in 0..seeds {
        common::on_executor(seed, move || differential(backend, seed));
    }
}

async fn differential(backend: Backend, seed: u64) -> io::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = scratch_dir();
    let path = dir.path().join("model");
    let frames = [16usize, 48, 4096][seed as usize % 3];
    let mut cache = common::cache_on(backend, frames);
    let mut file = cache.open(&path, &rw()).await?;
    let mut model: Vec<u8> = Vec::new();
    let max_len = 600_000u64;
    for step in 0..1500 {
        match rng.gen_range(0..100) {
            0..=39 => {
                let off = rng.gen_range(0..max_len);
                let len = rng.gen_range(1..20_000usize);
                let data = pattern(len, rng.gen());
                file.write_all_at(&data, off).await?;
                let end = off as usize + len;
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[off as usize..end].copy_from_slice(&data);
            }
            40..=79 => {
                let off = rng.gen_range(0..max_len + 10_000);
                let mut buf = vec![0u8; rng.gen_range(0..30_000usize)];
                let n = file.read_at(&mut buf, off).await?;
                let expect = (model.len() as u64)
                    .saturating_sub(off)
                    .min(buf.len() as u64);
                assert_eq!(n as u64, expect, "seed {seed} step {step}: length at {off}");
                if n > 0 {
                    common::assert_bytes(
                        &buf[..n],
                        &model[off as usize..off as usize + n],
                        &format!("seed {seed} step {step}: bytes at {off}"),
                    );
                }
            }
            80..=85 => {
                let len = rng.gen_range(0..max_len);
                file.set_len(len).await?;
                model.resize(len as usize, 0);
            }
            86..=90 => file.sync_data().await?,
            91..=94 => file.sync_all().await?,
            95..=96 => {
                let off = rng.gen_range(0..max_len);
                file.sync_range(off, rng.gen_range(0..100_000)).await?;
            }
            97 => {
                let off = rng.gen_range(0..max_len);
                file.invalidate(off, rng.gen_range(0..100_000)).await?;
            }
            _ => {
                cache.shutdown().await?;
                common::assert_bytes(
                    &on_disk(&path),
                    &model,
                    &format!("seed {seed} step {step}: after shutdown"),
                );
                cache = common::cache_on(backend, frames);
                file = cache.open(&path, &rw()).await?;
            }
        }
        assert_eq!(
            file.len(),
            model.len() as u64,
            "seed {seed} step {step}: len"
        );
    }
    file.sync_all().await?;
    common::assert_bytes(
        &on_disk(&path),
        &model,
        &format!("seed {seed}: on disk at the end"),
    );
    cache.shutdown().await
}

common::backend_test!(concurrent_writers_readers_and_syncs);
fn concurrent_writers_readers_and_syncs(backend: Backend) {
    common::multi_thread().block_on(async {
        let dir = scratch_dir();
        let path = dir.path().join("conc");
        let cache = common::cache_on(backend, 128);
        let file = cache.open(&path, &rw()).await.unwrap();
        // Each writer owns a disjoint 64 KiB region and writes known versions of it; writers
        // also race on one shared page. Readers check that what they see in a region was
        // written by its writer (a read racing a write may see parts of two versions).
        let region = 64 << 10;
        let writers: Vec<_> = (0..8u64)
            .map(|w| {
                let file = file.clone();
                tokio::spawn(async move {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(w);
                    for round in 0..30u8 {
                        let page = rng.gen_range(0..16u64);
                        let off = w * region + page * 4096;
                        file.write_all_at(&[round; 4096], off).await.unwrap();
                        file.write_all_at(&[w as u8; 100], 16 * 4096 * 8 + w * 10)
                            .await
                            .unwrap();
                        if round % 10 == 0 {
                            file.sync_data().await.unwrap();
                        }
                    }
                })
            })
            .collect();
        let readers: Vec<_> = (0..4u64)
            .map(|r| {
                let file = file.clone();
                tokio::spawn(async move {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(100 + r);
                    let mut buf = vec![0u8; 4096];
                    for _ in 0..200 {
                        let page = rng.gen_range(0..128u64);
                        let n = file.read_at(&mut buf, page * 4096).await.unwrap();
                        if n == 4096 {
                            // A read racing a write of the same page may see part of each
                            // version (the kernel's buffered I/O makes the same promise: the
                            // writer holds the page lock, readers of an up-to-date page do
                            // not take it). What it must never see is a byte no writer of
                            // the page wrote.
                            assert!(
                                buf.iter().all(|&b| b < 30),
                                "page {page} holds bytes no writer wrote: {:?}",
                                &buf[..16]
                            );
                        }
                    }
                })
            })
            .collect();
        for t in writers.into_iter().chain(readers) {
            t.await.unwrap();
        }
        file.sync_all().await.unwrap();
        let disk = on_disk(&path);
        assert_eq!(disk.len() as u64, file.len());
        let mut buf = vec![0u8; disk.len()];
        file.read_exact_at(&mut buf, 0).await.unwrap();
        common::assert_bytes(&buf, &disk, "cache and disk agree after sync_all");
        let _ = Arc::new(());
    });
}

common::backend_test!(concurrent_syncs_share_flushes);
fn concurrent_syncs_share_flushes(backend: Backend) {
    common::multi_thread().block_on(async {
        let dir = scratch_dir();
        let path = dir.path().join("gc");
        let cache = common::cache_on(backend, 1024);
        let file = cache.open(&path, &rw()).await.unwrap();
        file.write_all_at(&[0u8; 16 * 4096], 0).await.unwrap();
        file.sync_all().await.unwrap();
        let before = cache.stats();
        let tasks: Vec<_> = (0..16u64)
            .map(|t| {
                let file = file.clone();
                tokio::spawn(async move {
                    for round in 0..20u8 {
                        file.write_all_at(&[round; 4096], t * 4096).await.unwrap();
                        file.sync_data().await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let s = cache.stats();
        let syncs = s.syncs - before.syncs;
        let flushes = s.flushes - before.flushes;
        assert_eq!(syncs, 320);
        // Sixteen tasks keep overlapping, so most syncs find company and share a flush (a
        // sync alone may need none at all: RWF_DSYNC).
        assert!(
            flushes >= 1 && flushes * 2 <= syncs,
            "group commit: {flushes} flushes for {syncs} syncs"
        );
        let disk = on_disk(&path);
        for t in 0..16 {
            assert!(disk[t * 4096..(t + 1) * 4096].iter().all(|&b| b == 19));
        }
    });
}

common::backend_test!(a_lone_small_data_sync_needs_no_flush_but_anything_unflushed_gets_one);
fn a_lone_small_data_sync_needs_no_flush_but_anything_unflushed_gets_one(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let path = dir.path().join("dsync");
        let cache = common::cache_on(backend, 1024);
        let file = cache.open(&path, &rw()).await?;
        file.write_all_at(&[1u8; 64 * 4096], 0).await?;
        file.sync_all().await?;
        let flushes = || cache.stats().flushes;
        let base = flushes();
        // Few pages, nobody else syncing, everything before already flushed: the pages are
        // written with RWF_DSYNC and durable when their writes complete.
        for (k, page) in [3u64, 17, 40, 3].into_iter().enumerate() {
            file.write_all_at(&[10 + k as u8; 4096], page * 4096)
                .await?;
            file.sync_data().await?;
            assert_eq!(flushes(), base, "sync {k} flushed");
            assert!(on_disk(&path)[page as usize * 4096..][..4096]
                .iter()
                .all(|&b| b == 10 + k as u8));
        }
        // A direct write is on the device but not durable: the next sync flushes.
        file.write_direct_at(&[7u8; 4096], 8 * 4096).await?;
        file.sync_data().await?;
        assert_eq!(flushes(), base + 1, "a direct write was not flushed");
        // Too many pages for data-synchronous writes: plain writes and one flush.
        file.write_all_at(&[9u8; 32 * 4096], 0).await?;
        file.sync_data().await?;
        assert_eq!(flushes(), base + 2);
        // Nothing written since: a data sync has nothing to make durable.
        file.sync_data().await?;
        assert_eq!(flushes(), base + 2);
        // sync_all always flushes (metadata).
        file.sync_all().await?;
        assert_eq!(flushes(), base + 3);
        Ok(())
    });
}

common::backend_test!(writers_are_throttled_at_the_dirty_limit);
fn writers_are_throttled_at_the_dirty_limit(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let path = dir.path().join("throttle");
        let cache = common::builder(backend)
            .memory_limit(256 * 4096)
            .dirty_ratio(0.05)
            .dirty_background_ratio(0.02)
            .build()?;
        let f = cache.open(&path, &rw()).await?;
        let data = pattern(4 << 20, 21);
        for off in (0..data.len()).step_by(64 << 10) {
            f.write_all_at(&data[off..off + (64 << 10)], off as u64)
                .await?;
            assert!(cache.stats().dirty_pages <= 12 + 16, "the limit holds");
        }
        let s = cache.stats();
        assert!(s.throttle_waits > 0, "{s}");
        f.sync_all().await?;
        common::assert_bytes(&on_disk(&path), &data, "throttled writes");
        Ok(())
    });
}

common::backend_test!(dropping_a_cache_without_shutdown_keeps_synced_data_and_does_not_hang);
fn dropping_a_cache_without_shutdown_keeps_synced_data_and_does_not_hang(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let path = dir.path().join("drop");
        let synced = pattern(50_000, 31);
        {
            let cache = common::builder(backend)
                .memory_limit(64 * 4096)
                .dirty_expire(std::time::Duration::from_millis(1))
                .writeback_interval(std::time::Duration::from_millis(10))
                .build()?;
            let f = cache.open(&path, &rw()).await?;
            f.write_all_at(&synced, 0).await?;
            f.sync_data().await?;
            f.write_all_at(&[9u8; 1000], 60_000).await?; // dirty, never synced
            drop(f);
            drop(cache);
        }
        let disk = on_disk(&path);
        common::assert_bytes(&disk[..synced.len()], &synced, "synced bytes after drop");
        Ok(())
    });
}

common::backend_test!(shut_down_caches_give_their_memory_back);
/// Shut-down caches give their memory back. A file held for writeback holds its cache, so a
/// reference kept after the last write would keep every frame of every cache ever built (16 MiB
/// per cache here, 4 MiB of them touched).
fn shut_down_caches_give_their_memory_back(backend: Backend) {
    fn rss() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        statm
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 4096
    }
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let path = dir.path().join("mem");
        let data = vec![1u8; 4 << 20];
        let before = rss();
        for _ in 0..40 {
            let cache = common::builder(backend).memory_limit(16 << 20).build()?;
            let f = cache.open(&path, &rw()).await?;
            f.write_all_at(&data, 0).await?;
            cache.shutdown().await?;
        }
        let grown = rss().saturating_sub(before);
        assert!(
            grown < 64 << 20,
            "{} MiB still resident after 40 caches were shut down",
            grown >> 20
        );
        Ok(())
    });
}
