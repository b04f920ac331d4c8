//! The buffered read path through the public API, compared with `std::fs` byte for byte.

mod common;

use std::io;
use std::sync::Arc;

use common::{cache_on, make_file, on_runtimes, on_tokio_runtimes, ro, scratch_dir};
use rand::{Rng, SeedableRng};
use uringcache::{Advice, Backend, OpenOptions};

const SIZES: &[usize] = &[0, 1, 4095, 4096, 4097, 3 << 20, (5 << 20) + 123];

/// Reads the whole file with `chunk`-sized reads and checks every byte and the end.
async fn read_all_in_chunks(file: &uringcache::File, data: &[u8], chunk: usize) -> io::Result<()> {
    let mut buf = vec![0u8; chunk];
    let mut pos = 0usize;
    loop {
        let n = file.read_at(&mut buf, pos as u64).await?;
        if n == 0 {
            break;
        }
        assert_eq!(
            &buf[..n],
            &data[pos..pos + n],
            "bytes at {pos}, chunk {chunk}"
        );
        assert!(
            n == chunk || pos + n == data.len(),
            "short read before end of file"
        );
        pos += n;
    }
    assert_eq!(pos, data.len());
    Ok(())
}

common::backend_test!(whole_files_of_every_size_match_std_fs);
fn whole_files_of_every_size_match_std_fs(backend: Backend) {
    // A long body: on the two tokio runtimes only (the other executors run the shorter ones).
    on_tokio_runtimes(move || async move {
        let dir = scratch_dir();
        for (i, &len) in SIZES.iter().enumerate() {
            let (path, data) = make_file(dir.path(), &format!("f{i}"), len, i as u64);
            for frames in [4usize, 64, 4096] {
                let cache = cache_on(backend, frames);
                let file = cache.open(&path, &ro()).await?;
                assert_eq!(file.len(), len as u64);
                for chunk in [1usize, 512, 4096, 10_000, 1 << 20] {
                    if len > (1 << 20) && chunk < 512 {
                        continue; // byte-by-byte over MiBs adds time, not coverage
                    }
                    read_all_in_chunks(&file, &data, chunk).await?;
                }
            }
        }
        Ok(())
    });
}

common::backend_test!(random_ranges_match_std_fs);
fn random_ranges_match_std_fs(backend: Backend) {
    // A long body: on the two tokio runtimes only (the other executors run the shorter ones).
    on_tokio_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "r", (4 << 20) + 77, 9);
        for frames in [4usize, 16, 300, 4096] {
            let cache = cache_on(backend, frames);
            let file = cache.open(&path, &ro()).await?;
            let mut rng = rand::rngs::StdRng::seed_from_u64(frames as u64);
            let mut buf = vec![0u8; 64 << 10];
            for _ in 0..400 {
                let off = rng.gen_range(0..data.len() as u64 + 10_000);
                let len = rng.gen_range(0..buf.len());
                let n = file.read_at(&mut buf[..len], off).await?;
                let expect = if off >= data.len() as u64 {
                    0
                } else {
                    len.min(data.len() - off as usize)
                };
                assert_eq!(n, expect, "length at {off}+{len}");
                if n > 0 {
                    assert_eq!(&buf[..n], &data[off as usize..off as usize + n]);
                }
            }
        }
        Ok(())
    });
}

common::backend_test!(concurrent_tasks_read_the_right_bytes);
fn concurrent_tasks_read_the_right_bytes(backend: Backend) {
    common::multi_thread().block_on(async {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "c", 2 << 20, 3);
        let data = Arc::new(data);
        for frames in [4usize, 32, 1024] {
            let cache = cache_on(backend, frames);
            let file = cache.open(&path, &ro()).await.unwrap();
            let tasks: Vec<_> = (0..16)
                .map(|t| {
                    let (file, data) = (file.clone(), data.clone());
                    tokio::spawn(async move {
                        let mut rng = rand::rngs::StdRng::seed_from_u64(t);
                        let mut buf = vec![0u8; 20_000];
                        for _ in 0..200 {
                            let off = rng.gen_range(0..data.len() as u64);
                            let len = rng.gen_range(1..buf.len());
                            let n = file.read_at(&mut buf[..len], off).await.unwrap();
                            assert_eq!(n, len.min(data.len() - off as usize));
                            assert_eq!(&buf[..n], &data[off as usize..off as usize + n]);
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            let s = cache.stats();
            assert!(s.cached_pages <= frames);
            if frames == 4 {
                assert!(s.evictions > 0, "a 4-page budget must evict: {s}");
            }
        }
    });
}

common::backend_test!(many_threads_with_their_own_runtimes_share_one_cache);
fn many_threads_with_their_own_runtimes_share_one_cache(backend: Backend) {
    let dir = scratch_dir();
    let (path, data) = make_file(dir.path(), "t", 1 << 20, 5);
    let data = Arc::new(data);
    let cache = cache_on(backend, 64);
    let file = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(cache.open(&path, &ro()))
        .unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (file, data) = (file.clone(), data.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(100 + t);
                    let mut buf = vec![0u8; 8192];
                    for _ in 0..300 {
                        let off = rng.gen_range(0..data.len() as u64);
                        let n = file.read_at(&mut buf, off).await.unwrap();
                        assert_eq!(&buf[..n], &data[off as usize..off as usize + n]);
                    }
                });
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

common::backend_test!(sixteen_tasks_missing_one_page_cause_one_device_read);
fn sixteen_tasks_missing_one_page_cause_one_device_read(backend: Backend) {
    common::multi_thread().block_on(async {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "one", 1 << 20, 11);
        let cache = cache_on(backend, 256);
        let file = cache.open(&path, &ro()).await.unwrap();
        file.advise(Advice::Random);
        let barrier = Arc::new(tokio::sync::Barrier::new(16));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (file, barrier) = (file.clone(), barrier.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 100];
                    barrier.wait().await;
                    file.read_at(&mut buf, 8192 + 50).await.unwrap();
                    buf
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(&t.await.unwrap()[..], &data[8192 + 50..8192 + 150]);
        }
        let s = cache.stats();
        assert_eq!(s.device_reads, 1, "{s}");
        assert_eq!(s.pages_read, 1, "{s}");
        // Several tasks may find the page absent before the first inserts it (each counts a
        // miss); all but one lose the insertion race and wait on the winner's read.
        assert!(s.misses >= 1, "{s}");
        assert_eq!(s.hits + s.misses + s.waits, 16, "{s}");
    });
}

common::backend_test!(a_four_page_budget_serves_a_one_mib_read);
fn a_four_page_budget_serves_a_one_mib_read(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "big", (1 << 20) + 4096, 2);
        let cache = cache_on(backend, 4);
        let file = cache.open(&path, &ro()).await?;
        let mut buf = vec![0u8; 1 << 20];
        assert_eq!(file.read_at(&mut buf, 100).await?, 1 << 20);
        assert_eq!(&buf[..], &data[100..100 + (1 << 20)]);
        let s = cache.stats();
        assert!(s.cached_pages <= 4);
        assert!(s.evictions >= 250, "{s}");
        Ok(())
    });
}

common::backend_test!(reads_at_and_past_the_end);
fn reads_at_and_past_the_end(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "end", 10_000, 4);
        let cache = cache_on(backend, 16);
        let file = cache.open(&path, &ro()).await?;
        let mut buf = vec![0u8; 4096];
        assert_eq!(file.read_at(&mut buf, 10_000).await?, 0);
        assert_eq!(file.read_at(&mut buf, 1 << 40).await?, 0);
        assert_eq!(file.read_at(&mut buf, u64::MAX - 4096).await?, 0);
        assert_eq!(file.read_at(&mut buf, 9_000).await?, 1_000);
        assert_eq!(&buf[..1000], &data[9000..]);
        assert_eq!(file.read_at(&mut [], 5).await?, 0);
        let err = file.read_exact_at(&mut buf, 8_000).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        file.read_exact_at(&mut buf[..2000], 8_000).await?;
        assert_eq!(&buf[..2000], &data[8000..]);
        Ok(())
    });
}

common::backend_test!(try_read_at_serves_only_cached_pages);
fn try_read_at_serves_only_cached_pages(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "nowait", 64 << 10, 6);
        let cache = cache_on(backend, 64);
        let file = cache.open(&path, &ro()).await?;
        file.advise(Advice::Random);
        let mut buf = vec![0u8; 8192];
        let err = file.try_read_at(&mut buf, 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(
            cache.stats().device_reads,
            0,
            "try_read_at never starts I/O"
        );
        file.read_at(&mut buf[..10], 0).await?;
        // Page 0 is cached, page 1 is not: the copy stops at the first missing page.
        assert_eq!(file.try_read_at(&mut buf, 0)?, 4096);
        assert_eq!(&buf[..4096], &data[..4096]);
        Ok(())
    });
}

common::backend_test!(readahead_caches_the_range_and_another_handle_sees_it);
fn readahead_caches_the_range_and_another_handle_sees_it(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "ra", (3 << 20) + 5, 8);
        let cache = cache_on(backend, 2048);
        let a = cache.open(&path, &ro()).await?;
        let b = cache.open(&path, &ro()).await?;
        a.readahead(0, data.len() as u64 + 4096).await?;
        let reads = cache.stats().device_reads;
        assert!(reads >= 1);
        let mut buf = vec![0u8; 1 << 20];
        let mut pos = 0;
        while pos < data.len() {
            let n = b.try_read_at(&mut buf, pos as u64)?;
            assert_eq!(&buf[..n], &data[pos..pos + n]);
            pos += n;
        }
        assert_eq!(cache.stats().device_reads, reads, "no more device reads");
        Ok(())
    });
}

common::backend_test!(a_sequential_scan_reads_few_large_requests);
fn a_sequential_scan_reads_few_large_requests(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "scan", 8 << 20, 12);
        let cache = cache_on(backend, 4096);
        let file = cache.open(&path, &ro()).await?;
        let mut buf = vec![0u8; 4096];
        for pos in (0..data.len()).step_by(4096) {
            file.read_exact_at(&mut buf, pos as u64).await?;
        }
        let s = cache.stats();
        assert_eq!(s.pages_read, 2048, "{s}");
        assert!(s.device_reads <= 12, "readahead must batch the scan: {s}");
        assert_eq!(s.misses, 1, "only the first page misses: {s}");
        assert_eq!(s.readahead_hits, 2047, "{s}");
        Ok(())
    });
}

common::backend_test!(bad_input_gets_a_clear_error);
fn bad_input_gets_a_clear_error(backend: Backend) {
    on_runtimes(move || async move {
        for ps in [0usize, 3000, 256] {
            let err = common::builder(backend).page_size(ps).build().unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            assert!(err.to_string().contains("page size"), "{err}");
        }
        for limit in [0usize, 3 * 4096] {
            let err = common::builder(backend)
                .memory_limit(limit)
                .build()
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            assert!(err.to_string().contains("at least 4 pages"), "{err}");
        }
        let dir = scratch_dir();
        let cache = cache_on(backend, 16);
        let missing = dir.path().join("missing");
        let err = cache.open(&missing, &ro()).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("missing"), "names the path: {err}");
        let err = cache.open(dir.path(), &ro()).await.unwrap_err();
        assert!(
            err.to_string().contains("regular file") || err.to_string().contains("directory"),
            "{err}"
        );
        let err = cache.open(&missing, &OpenOptions::new()).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);

        let (path, _) = make_file(dir.path(), "wo", 100, 1);
        let wo = cache.open(&path, OpenOptions::new().write(true)).await?;
        let err = wo.read_at(&mut [0u8; 10], 0).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("without read access"), "{err}");

        let f = cache.open(&path, &ro()).await?;
        let err = f.read_at(&mut [0u8; 10], u64::MAX - 5).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("overflows"), "{err}");
        let err = f.readahead(u64::MAX, 2).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        Ok(())
    });
}

common::backend_test!(shutdown_stops_the_cache);
fn shutdown_stops_the_cache(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, _) = make_file(dir.path(), "s", 8192, 1);
        let cache = cache_on(backend, 16);
        let f = cache.open(&path, &ro()).await?;
        f.read_at(&mut [0u8; 10], 0).await?;
        cache.shutdown().await?;
        assert!(f.read_at(&mut [0u8; 10], 0).await.is_err());
        assert!(cache.open(&path, &ro()).await.is_err());
        Ok(())
    });
}

common::backend_test!(a_sequential_scan_ramps_its_window_as_the_kernel_does);
fn a_sequential_scan_ramps_its_window_as_the_kernel_does(backend: Backend) {
    // A long body: on the two tokio runtimes only (the other executors run the shorter ones).
    on_tokio_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, _) = make_file(dir.path(), "ramp", 8 << 20, 13);
        let cache = cache_on(backend, 4096); // room for 2 MiB windows (max 512 pages)
        let file = cache.open(&path, &ro()).await?;
        let mut buf = vec![0u8; 4096];
        let mut seen = 0;
        let mut steps = Vec::new();
        for page in 0..2048u64 {
            file.read_exact_at(&mut buf, page * 4096).await?;
            let ra = cache.stats().readahead_pages;
            if ra != seen {
                steps.push((page, ra - seen));
                seen = ra;
            }
        }
        // Initial window 4 pages (the demanded one plus 3), the mark one page in; then each
        // mark starts the next window: x4 while small, x2, then the 512-page maximum, the
        // last one cut at end of file.
        assert_eq!(
            steps,
            vec![
                (0, 3),
                (1, 16),
                (4, 64),
                (20, 128),
                (84, 256),
                (212, 512),
                (468, 512),
                (980, 512),
                (1492, 44)
            ]
        );
        Ok(())
    });
}
