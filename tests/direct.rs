//! Direct I/O through a cached handle (`read_direct_at`, `write_direct_at`): coherent with the
//! cached pages both ways, compared with a model and with `std::fs`.

mod common;

use std::io;

use common::{cache_on, make_file, on_runtimes, pattern, scratch_dir};
use rand::{Rng, SeedableRng};
use uringcache::Backend;

const PS: usize = 4096;

use common::rw;

common::backend_test!(direct_reads_see_buffered_writes);
fn direct_reads_see_buffered_writes(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, mut model) = make_file(dir.path(), "a", 10 * PS + 300, 1);
        let cache = cache_on(backend, 64);
        let file = cache.open(&path, &rw()).await?;
        // Dirty pages: a partial one, a whole one, one past the old end.
        for (off, len, seed) in [
            (100usize, 50usize, 2u64),
            (3 * PS, PS, 3),
            (10 * PS + 200, 2000, 4),
        ] {
            let data = pattern(len, seed);
            file.write_all_at(&data, off as u64).await?;
            if model.len() < off + len {
                model.resize(off + len, 0);
            }
            model[off..off + len].copy_from_slice(&data);
        }
        assert!(cache.stats().dirty_pages >= 3);
        let writes = cache.stats().device_writes;
        let mut buf = vec![0u8; model.len() + 5000];
        let n = file.read_direct_at(&mut buf, 0).await?;
        assert_eq!(n, model.len());
        common::assert_bytes(&buf[..n], &model, "direct read after buffered writes");
        assert!(cache.stats().device_writes > writes, "written back first");
        assert_eq!(cache.stats().dirty_pages, 0);
        // Unaligned pieces, and the end of file.
        for (off, len) in [
            (1usize, 10usize),
            (4095, 2),
            (PS * 3 - 7, PS + 14),
            (model.len() - 3, 100),
        ] {
            let mut buf = vec![0u8; len];
            let n = file.read_direct_at(&mut buf, off as u64).await?;
            let want = &model[off..(off + len).min(model.len())];
            assert_eq!(n, want.len());
            common::assert_bytes(&buf[..n], want, &format!("direct read at {off}"));
        }
        assert_eq!(file.read_direct_at(&mut buf, model.len() as u64).await?, 0);
        assert_eq!(file.read_direct_at(&mut [], 0).await?, 0);
        Ok(())
    });
}

common::backend_test!(buffered_reads_see_direct_writes);
fn buffered_reads_see_direct_writes(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, mut model) = make_file(dir.path(), "b", 8 * PS, 5);
        let cache = cache_on(backend, 64);
        let file = cache.open(&path, &rw()).await?;
        let other = cache.open(&path, &common::ro()).await?;
        // Everything cached, one page pinned, one page dirty.
        let mut buf = vec![0u8; model.len()];
        other.read_exact_at(&mut buf, 0).await?;
        let pinned = other.page(2).await?;
        file.write_all_at(b"dirty", 5 * PS as u64 + 10).await?;
        model[5 * PS + 10..5 * PS + 15].copy_from_slice(b"dirty");
        // Unaligned head and tail, across the pinned and the dirty page.
        let data = pattern(4 * PS, 6);
        let off = 2 * PS - 100;
        assert_eq!(file.write_direct_at(&data, off as u64).await?, data.len());
        model[off..off + data.len()].copy_from_slice(&data);
        other.read_exact_at(&mut buf, 0).await?;
        common::assert_bytes(&buf, &model, "buffered read after a direct write");
        common::assert_bytes(&pinned, &model[2 * PS..3 * PS], "a pinned page is updated");
        // The device has it too, without a sync (std::fs reads the same file).
        common::assert_bytes(
            &common::read_disk(&path)?,
            &model,
            "std::fs after a direct write",
        );
        // Aligned, and past the end: the file grows.
        let data = pattern(3 * PS, 7);
        file.write_direct_at(&data, 9 * PS as u64).await?;
        model.resize(12 * PS, 0);
        model[9 * PS..].copy_from_slice(&data);
        assert_eq!(other.len(), 12 * PS as u64);
        let mut buf = vec![0u8; model.len()];
        other.read_exact_at(&mut buf, 0).await?;
        common::assert_bytes(&buf, &model, "after a direct write past the end");
        for i in 0..12 {
            common::assert_bytes(
                &other.page(i).await?,
                &model[i as usize * PS..][..PS],
                "page",
            );
        }
        file.sync_all().await?;
        common::assert_bytes(&common::read_disk(&path)?, &model, "on disk after sync_all");
        Ok(())
    });
}

common::backend_test!(a_direct_write_of_a_partial_tail_block_is_cut_back_by_sync);
fn a_direct_write_of_a_partial_tail_block_is_cut_back_by_sync(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, mut model) = make_file(dir.path(), "t", 1000, 8);
        let cache = cache_on(backend, 16);
        let file = cache.open(&path, &rw()).await?;
        file.write_direct_at(b"hello", 998).await?;
        model.resize(1003, 0);
        model[998..].copy_from_slice(b"hello");
        assert_eq!(file.len(), 1003);
        let mut buf = vec![0u8; 2000];
        assert_eq!(file.read_at(&mut buf, 0).await?, 1003);
        common::assert_bytes(&buf[..1003], &model, "buffered");
        assert_eq!(file.read_direct_at(&mut buf, 0).await?, 1003);
        common::assert_bytes(&buf[..1003], &model, "direct");
        file.sync_data().await?;
        assert_eq!(std::fs::metadata(&path)?.len(), 1003);
        common::assert_bytes(&common::read_disk(&path)?, &model, "on disk");
        // A direct write into an empty file, in the middle of nowhere.
        let empty = dir.path().join("e");
        let f = cache.open(&empty, &rw()).await?;
        f.write_direct_at(b"xyz", 3 * PS as u64 + 1).await?;
        assert_eq!(f.len(), 3 * PS as u64 + 4);
        f.sync_all().await?;
        let disk = common::read_disk(&empty)?;
        assert_eq!(disk.len(), 3 * PS + 4);
        assert!(disk[..3 * PS + 1].iter().all(|&b| b == 0));
        assert_eq!(&disk[3 * PS + 1..], b"xyz");
        Ok(())
    });
}

common::backend_test!(direct_io_needs_the_access_and_works_on_the_smallest_budget);
fn direct_io_needs_the_access_and_works_on_the_smallest_budget(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "s", 300 * PS + 11, 9);
        let cache = cache_on(backend, 4);
        let ro = cache.open(&path, &common::ro()).await?;
        let err = ro.write_direct_at(b"x", 0).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        let err = ro
            .read_direct_at(&mut [0u8; 4], u64::MAX - 1)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        // A read much larger than the budget, through one frame at a time at worst.
        let pinned = [ro.page(0).await?, ro.page(1).await?, ro.page(2).await?];
        let mut buf = vec![0u8; data.len()];
        assert_eq!(ro.read_direct_at(&mut buf, 0).await?, data.len());
        common::assert_bytes(&buf, &data, "large direct read");
        drop(pinned);
        let file = cache.open(&path, &rw()).await?;
        let big = pattern(200 * PS + 17, 10);
        file.write_direct_at(&big, 33).await?;
        let mut model = data.clone();
        model[33..33 + big.len()].copy_from_slice(&big);
        assert_eq!(ro.read_direct_at(&mut buf, 0).await?, data.len());
        common::assert_bytes(&buf, &model, "large direct write");
        ro.read_exact_at(&mut buf, 0).await?;
        common::assert_bytes(&buf, &model, "buffered after a large direct write");
        // Nothing is left pinned or held by the direct path.
        let s = cache.stats();
        assert!(s.cached_pages <= s.frames);
        Ok(())
    });
}

common::backend_test!(random_direct_and_buffered_io_agree_with_a_model);
fn random_direct_and_buffered_io_agree_with_a_model(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, mut model) = make_file(dir.path(), "r", 40 * PS, 11);
        let cache = cache_on(backend, 24);
        let file = cache.open(&path, &rw()).await?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let mut pins = Vec::new();
        for step in 0..400 {
            let off = rng.gen_range(0..48 * PS);
            let len = rng.gen_range(1..3 * PS);
            match rng.gen_range(0..6) {
                0 => {
                    let data = pattern(len, step);
                    file.write_all_at(&data, off as u64).await?;
                    if model.len() < off + len {
                        model.resize(off + len, 0);
                    }
                    model[off..off + len].copy_from_slice(&data);
                }
                1 => {
                    let data = pattern(len, step + 1000);
                    file.write_direct_at(&data, off as u64).await?;
                    if model.len() < off + len {
                        model.resize(off + len, 0);
                    }
                    model[off..off + len].copy_from_slice(&data);
                }
                2 | 3 => {
                    let mut buf = vec![0u8; len];
                    let n = if step % 2 == 0 {
                        file.read_at(&mut buf, off as u64).await?
                    } else {
                        file.read_direct_at(&mut buf, off as u64).await?
                    };
                    let want = &model[off.min(model.len())..(off + len).min(model.len())];
                    assert_eq!(n, want.len(), "step {step}");
                    common::assert_bytes(&buf[..n], want, &format!("step {step}"));
                }
                4 => {
                    // Pinned pages must follow every write.
                    if pins.len() > 4 {
                        pins.clear();
                    }
                    let index = rng.gen_range(0..(model.len() / PS) as u64);
                    pins.push(file.page(index).await?);
                }
                _ => {
                    if rng.gen_bool(0.3) {
                        file.sync_data().await?;
                    }
                }
            }
            for p in &pins {
                let start = p.index() as usize * PS;
                let mut want = vec![0u8; PS];
                let end = (start + PS).min(model.len());
                if start < end {
                    want[..end - start].copy_from_slice(&model[start..end]);
                }
                common::assert_bytes(
                    p,
                    &want,
                    &format!("pinned page {} at step {step}", p.index()),
                );
            }
        }
        drop(pins);
        file.sync_all().await?;
        common::assert_bytes(&common::read_disk(&path)?, &model, "on disk at the end");
        Ok(())
    });
}
