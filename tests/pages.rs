//! Pinned pages (`File::page`, `File::page_mut`, `PageRef`, `PageMut`), the verify hook and
//! zero-copy `Bytes`, through the public API, compared with `std::fs`.

mod common;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{cache_on, make_file, on_runtimes, on_tokio_runtimes, pattern, scratch_dir};
use uringcache::{Advice, Backend, Cache, OpenOptions, PageRef};
use uringcache_uring::fault::{Fault, FaultSlot, OpKind};
use uringcache_uring::FaultBackend;

const PS: usize = 4096;

use common::rw;

fn faulty_cache(backend: Backend, frames: usize) -> (Cache, Arc<FaultBackend>) {
    let faults = FaultSlot::new();
    let cache = common::builder(backend)
        .memory_limit(frames * PS)
        .wrap_backend(faults.layer())
        .build()
        .unwrap();
    let fault = faults.get();
    (cache, fault)
}

/// The expected page `index` of `data`: the file's bytes, zeros past its end.
fn page_of(data: &[u8], index: usize) -> Vec<u8> {
    let mut p = vec![0u8; PS];
    let start = (index * PS).min(data.len());
    let end = ((index + 1) * PS).min(data.len());
    p[..end - start].copy_from_slice(&data[start..end]);
    p
}

fn assert_send_sync_static<T: Send + Sync + 'static>() {}

#[test]
fn handles_are_send_sync_and_static() {
    assert_send_sync_static::<uringcache::PageRef>();
    assert_send_sync_static::<uringcache::PageMut>();
    assert_send_sync_static::<OpenOptions>();
}

common::backend_test!(page_contents_match_std_fs);
fn page_contents_match_std_fs(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let len = 10 * PS + 1234;
        let (path, data) = make_file(dir.path(), "p", len, 1);
        let cache = cache_on(backend, 64);
        let file = cache.open(&path, &common::ro()).await?;
        for index in (0..14u64).rev() {
            let page = file.page(index).await?;
            assert_eq!(page.index(), index);
            assert_eq!(page.len(), PS);
            common::assert_bytes(&page, &page_of(&data, index as usize), "page");
        }
        // Pages past the end read as zeros and do not grow the file.
        assert_eq!(file.len(), len as u64);
        let mut buf = vec![0u8; 100];
        assert_eq!(file.read_at(&mut buf, len as u64).await?, 0);
        // Pinned twice, read through both.
        let a = file.page(3).await?;
        let b = file.page(3).await?;
        assert_eq!(&a[..], &b[..]);
        assert_eq!(a.as_ptr(), b.as_ptr(), "one cached page, no copy");
        Ok(())
    });
}

common::backend_test!(page_mut_is_seen_by_read_at_at_once_and_on_disk_after_sync_all);
fn page_mut_is_seen_by_read_at_at_once_and_on_disk_after_sync_all(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let len = 5 * PS + 100;
        let (path, mut model) = make_file(dir.path(), "m", len, 2);
        let cache = cache_on(backend, 32);
        let file = cache.open(&path, &rw()).await?;
        let reader = cache.open(&path, &common::ro()).await?;
        // A page of file data: read-modify-write in place.
        {
            let mut page = file.page_mut(2).await?;
            assert_eq!(page.index(), 2);
            common::assert_bytes(&page, &page_of(&model, 2), "page_mut shows the bytes");
            page[10..20].copy_from_slice(b"0123456789");
        }
        model[2 * PS + 10..2 * PS + 20].copy_from_slice(b"0123456789");
        let mut buf = vec![0u8; model.len()];
        assert_eq!(reader.read_at(&mut buf, 0).await?, model.len());
        common::assert_bytes(&buf, &model, "read_at after page_mut");
        assert!(cache.stats().dirty_pages >= 1);
        // The last, partial page: the file grows to cover the whole page.
        {
            let mut page = file.page_mut(5).await?;
            page[PS - 1] = 0xAB;
        }
        model.resize(6 * PS, 0);
        model[6 * PS - 1] = 0xAB;
        assert_eq!(file.len(), 6 * PS as u64);
        // A page past the end: zeros, and the file grows over the gap.
        {
            let mut page = file.page_mut(8).await?;
            assert!(page.iter().all(|&b| b == 0));
            page[..4].copy_from_slice(b"tail");
        }
        model.resize(9 * PS, 0);
        model[8 * PS..8 * PS + 4].copy_from_slice(b"tail");
        assert_eq!(reader.len(), 9 * PS as u64);
        let mut buf = vec![0u8; model.len() + 10];
        assert_eq!(reader.read_at(&mut buf, 0).await?, model.len());
        common::assert_bytes(&buf[..model.len()], &model, "read_at after growth");
        file.sync_all().await?;
        assert_eq!(cache.stats().dirty_pages, 0);
        common::assert_bytes(&common::read_disk(&path)?, &model, "on disk after sync_all");
        Ok(())
    });
}

common::backend_test!(sixteen_tasks_pinning_one_page_cause_one_device_read);
fn sixteen_tasks_pinning_one_page_cause_one_device_read(backend: Backend) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "s", 8 * PS, 3);
        let (cache, fault) = faulty_cache(backend, 64);
        let file = cache.open(&path, &common::ro()).await.unwrap();
        file.advise(Advice::Random);
        // Hold the first read so that every task finds it in flight.
        fault.inject(OpKind::Read, Fault::Hold, Some(1));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let file = file.clone();
                tokio::spawn(async move { file.page(5).await })
            })
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // Each task counts once, as a wait or (if it looked before the first one inserted the
        // page, and then lost the race to insert it) as a miss; either way it then waits.
        let queued = |s: uringcache::Stats| s.waits + s.misses;
        while fault.held() < 1 || queued(cache.stats()) < 16 {
            assert!(
                std::time::Instant::now() < deadline,
                "tasks did not queue up"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        fault.release(false);
        let mut pages = Vec::new();
        for t in tasks {
            pages.push(t.await.unwrap().unwrap());
        }
        let want = page_of(&data, 5);
        for p in &pages {
            assert_eq!(&p[..], &want[..]);
            assert_eq!(p.as_ptr(), pages[0].as_ptr());
        }
        let s = cache.stats();
        assert_eq!(s.device_reads, 1, "{s}");
        assert_eq!(s.pages_read, 1, "{s}");
    });
}

common::backend_test!(pins_survive_memory_pressure);
fn pins_survive_memory_pressure(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (a_path, a_data) = make_file(dir.path(), "a", 8 * PS, 4);
        let (b_path, b_data) = make_file(dir.path(), "b", 300 * PS, 5);
        let cache = cache_on(backend, 16);
        let a = cache.open(&a_path, &common::ro()).await?;
        let b = cache.open(&b_path, &common::ro()).await?;
        let pinned: Vec<PageRef> = {
            let mut v = Vec::new();
            for i in [0u64, 2, 5, 7] {
                v.push(a.page(i).await?);
            }
            v
        };
        let ptrs: Vec<usize> = pinned.iter().map(|p| p.as_ptr() as usize).collect();
        let before = cache.stats().evictions;
        let mut buf = vec![0u8; 64 << 10];
        for _ in 0..2 {
            let mut off = 0;
            while off < b_data.len() {
                let n = b.read_at(&mut buf, off as u64).await?;
                common::assert_bytes(&buf[..n], &b_data[off..off + n], "scan under pins");
                off += n;
            }
        }
        assert!(cache.stats().evictions > before + 100, "the scan evicted");
        for (p, ptr) in pinned.iter().zip(&ptrs) {
            common::assert_bytes(p, &page_of(&a_data, p.index() as usize), "pinned page");
            assert_eq!(p.as_ptr() as usize, *ptr);
            // Still cached: a no-wait read finds it.
            let mut one = [0u8; 16];
            a.try_read_at(&mut one, p.index() * PS as u64)
                .expect("a pinned page stays cached");
        }
        Ok(())
    });
}

common::backend_test!(every_frame_pinned_is_an_error_and_one_unpin_fixes_it);
fn every_frame_pinned_is_an_error_and_one_unpin_fixes_it(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "f", 16 * PS, 6);
        let cache = cache_on(backend, 4);
        let file = cache.open(&path, &common::ro()).await?;
        file.advise(Advice::Random);
        // Many handles of one page hold one frame, not many.
        let same: Vec<PageRef> = {
            let mut v = Vec::new();
            for _ in 0..10 {
                v.push(file.page(0).await?);
            }
            v
        };
        let mut held = vec![file.page(1).await?, file.page(2).await?];
        held.push(file.page(3).await?);
        let err = file.page(9).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::OutOfMemory, "{err}");
        let mut buf = vec![0u8; 10];
        let err = file.read_at(&mut buf, 12 * PS as u64).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::OutOfMemory, "{err}");
        held.pop();
        let p = file.page(9).await?;
        common::assert_bytes(&p, &page_of(&data, 9), "after an unpin");
        drop(same);
        Ok(())
    });
}

common::backend_test!(a_pin_across_truncation_keeps_its_frame_until_the_last_unpin);
fn a_pin_across_truncation_keeps_its_frame_until_the_last_unpin(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "t", 8 * PS, 7);
        let (other_path, other) = make_file(dir.path(), "o", 64 * PS, 8);
        let cache = cache_on(backend, 8);
        let file = cache.open(&path, &rw()).await?;
        let big = cache.open(&other_path, &common::ro()).await?;
        let pinned = file.page(5).await?;
        let bytes = file.page(6).await?.into_bytes();
        file.set_len(PS as u64).await?;
        assert_eq!(file.len(), PS as u64);
        // The handles still read the old bytes, the file reads zeros there.
        common::assert_bytes(&pinned, &page_of(&data, 5), "pinned across set_len");
        common::assert_bytes(&bytes, &page_of(&data, 6), "bytes across set_len");
        let fresh = file.page(5).await?;
        assert!(fresh.iter().all(|&b| b == 0));
        assert_ne!(fresh.as_ptr(), pinned.as_ptr());
        drop(fresh);
        // Fill the cache many times over: the orphaned frames are not reused while pinned.
        let mut buf = vec![0u8; 8 * PS];
        for off in (0..other.len()).step_by(buf.len()) {
            let n = big.read_at(&mut buf, off as u64).await?;
            common::assert_bytes(&buf[..n], &other[off..off + n], "fill");
        }
        common::assert_bytes(&pinned, &page_of(&data, 5), "pinned after the fill");
        common::assert_bytes(&bytes, &page_of(&data, 6), "bytes after the fill");
        // The last unpin frees the frame; later reads reuse it and are right.
        let full = cache.stats().cached_pages;
        drop(pinned);
        assert_eq!(
            cache.stats().cached_pages,
            full - 1,
            "the orphan's frame is freed"
        );
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(
            cache.stats().cached_pages,
            full - 1,
            "a slice keeps the pin"
        );
        assert_eq!(&slice[..], &page_of(&data, 6)[10..20]);
        drop(slice);
        assert_eq!(cache.stats().cached_pages, full - 2);
        for off in (0..other.len()).step_by(buf.len()).rev() {
            let n = big.read_at(&mut buf, off as u64).await?;
            common::assert_bytes(&buf[..n], &other[off..off + n], "refill");
        }
        let mut head = vec![0u8; 2 * PS];
        assert_eq!(file.read_at(&mut head, 0).await?, PS);
        common::assert_bytes(&head[..PS], &data[..PS], "the kept page");
        Ok(())
    });
}

common::backend_test!(a_pin_across_invalidate_keeps_the_page);
fn a_pin_across_invalidate_keeps_the_page(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "i", 4 * PS, 9);
        let cache = cache_on(backend, 16);
        let file = cache.open(&path, &rw()).await?;
        let p1 = file.page(1).await?;
        drop(file.page(2).await?);
        file.invalidate(0, 4 * PS as u64).await?;
        let mut one = [0u8; 8];
        file.try_read_at(&mut one, PS as u64)
            .expect("the pinned page stays");
        let err = file.try_read_at(&mut one, 2 * PS as u64).unwrap_err();
        assert_eq!(
            err.kind(),
            io::ErrorKind::WouldBlock,
            "the unpinned one went"
        );
        common::assert_bytes(&p1, &page_of(&data, 1), "pinned across invalidate");
        // A locked page is not invalidated either.
        let m = file.page_mut(3).await?;
        file.invalidate(0, 4 * PS as u64).await?;
        drop(m);
        file.try_read_at(&mut one, 3 * PS as u64)
            .expect("the dirtied page stays");
        Ok(())
    });
}

common::backend_test!(page_mut_excludes_other_writers_until_dropped);
fn page_mut_excludes_other_writers_until_dropped(backend: Backend) {
    on_tokio_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, _) = make_file(dir.path(), "x", 4 * PS, 10);
        let cache = cache_on(backend, 16);
        let file = cache.open(&path, &rw()).await?;
        let mut first = file.page_mut(1).await?;
        first[0] = 1;
        let f2 = file.clone();
        let second = tokio::spawn(async move {
            let mut p = f2.page_mut(1).await?;
            let seen = p[0];
            p[0] = 2;
            io::Result::Ok(seen)
        });
        let f3 = file.clone();
        let writer = tokio::spawn(async move { f3.write_all_at(&[3], PS as u64 + 1).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "page_mut waits for the page lock");
        assert!(!writer.is_finished(), "write_at waits for the page lock");
        // Readers are not locked out.
        let r = file.page(1).await?;
        assert_eq!(r[0], 1);
        drop(r);
        drop(first);
        assert_eq!(
            second.await.unwrap()?,
            1,
            "the second writer saw the first's change"
        );
        writer.await.unwrap()?;
        let mut two = [0u8; 2];
        file.read_exact_at(&mut two, PS as u64).await?;
        assert_eq!(two, [2, 3]);
        Ok(())
    });
}

common::backend_test!(discard_puts_the_bytes_back_and_dirties_nothing);
fn discard_puts_the_bytes_back_and_dirties_nothing(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "d", 3 * PS, 11);
        let cache = cache_on(backend, 16);
        let file = cache.open(&path, &rw()).await?;
        let mut p = file.page_mut(1).await?;
        p.fill(0xEE);
        p.discard();
        let mut buf = vec![0u8; data.len()];
        file.read_exact_at(&mut buf, 0).await?;
        common::assert_bytes(&buf, &data, "after discard");
        assert_eq!(cache.stats().dirty_pages, 0);
        // Past the end: the file does not grow.
        let mut p = file.page_mut(7).await?;
        p[0] = 1;
        p.discard();
        assert_eq!(file.len(), data.len() as u64);
        assert!(file.page(7).await?.iter().all(|&b| b == 0));
        // Untouched and discarded: nothing to put back.
        file.page_mut(0).await?.discard();
        file.sync_all().await?;
        common::assert_bytes(&common::read_disk(&path)?, &data, "disk after discard");
        assert_eq!(cache.stats().device_writes, 0);
        Ok(())
    });
}

common::backend_test!(page_mut_needs_read_and_write_access);
fn page_mut_needs_read_and_write_access(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, _) = make_file(dir.path(), "a", PS, 12);
        let cache = cache_on(backend, 8);
        let ro = cache.open(&path, &common::ro()).await?;
        let err = ro.page_mut(0).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        let mut wo = OpenOptions::new();
        wo.write(true);
        let wo = cache.open(&path, &wo).await?;
        let err = wo.page_mut(0).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        let err = wo.page(0).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        let err = ro.page(u64::MAX).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        Ok(())
    });
}

common::backend_test!(read_bytes_is_zero_copy_within_a_page_and_clamped);
fn read_bytes_is_zero_copy_within_a_page_and_clamped(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let len = 3 * PS + 500;
        let (path, data) = make_file(dir.path(), "b", len, 13);
        let cache = cache_on(backend, 16);
        let file = cache.open(&path, &common::ro()).await?;
        let b = file.read_bytes(PS as u64 + 100, 200).await?;
        assert_eq!(&b[..], &data[PS + 100..PS + 300]);
        let page = file.page(1).await?;
        assert_eq!(
            b.as_ptr(),
            page[100..].as_ptr(),
            "the Bytes is the cached page"
        );
        // Spanning pages: a copy with the right bytes.
        let b = file.read_bytes(100, 2 * PS).await?;
        assert_eq!(&b[..], &data[100..100 + 2 * PS]);
        // Clamped to end of file, empty past it.
        let b = file.read_bytes(3 * PS as u64 + 400, 1000).await?;
        assert_eq!(&b[..], &data[3 * PS + 400..]);
        let b = file.read_bytes(PS as u64, 1 << 20).await?;
        assert_eq!(&b[..], &data[PS..]);
        assert!(file.read_bytes(len as u64, 10).await?.is_empty());
        assert!(file.read_bytes(0, 0).await?.is_empty());
        // The Bytes outlives the file and the cache handle.
        let keep = file.page(2).await?.into_bytes();
        drop(page);
        drop(file);
        drop(cache);
        assert_eq!(&keep[..], &page_of(&data, 2)[..]);
        Ok(())
    });
}

/// A hook that counts its calls and rejects page `bad` while `failing` is set.
fn counting_hook(
    calls: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
    bad: u64,
) -> impl Fn(u64, &[u8]) -> Result<(), String> + Send + Sync + 'static {
    move |index, bytes| {
        assert_eq!(bytes.len(), PS);
        calls.fetch_add(1, Ordering::SeqCst);
        if index == bad && failing.load(Ordering::SeqCst) {
            Err(format!("bad checksum {:#x}", bytes[0]))
        } else {
            Ok(())
        }
    }
}

common::backend_test!(the_verify_hook_runs_once_per_fill);
fn the_verify_hook_runs_once_per_fill(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "v", 20 * PS + 7, 14);
        let cache = cache_on(backend, 64);
        let calls = Arc::new(AtomicUsize::new(0));
        let mut opts = common::ro();
        opts.verify(counting_hook(
            calls.clone(),
            Arc::new(AtomicBool::new(false)),
            0,
        ));
        let file = cache.open(&path, &opts).await?;
        let mut buf = vec![0u8; data.len()];
        for _ in 0..3 {
            file.read_exact_at(&mut buf, 0).await?;
            for i in 0..21 {
                drop(file.page(i).await?);
            }
        }
        common::assert_bytes(&buf, &data, "verified read");
        let s = cache.stats();
        assert_eq!(s.pages_read, 21);
        assert_eq!(calls.load(Ordering::SeqCst), 21, "once per page read");
        // Evicted and read again: verified again.
        file.invalidate(0, u64::MAX / 2).await?;
        drop(file.page(4).await?);
        assert_eq!(
            calls.load(Ordering::SeqCst) as u64,
            cache.stats().pages_read
        );
        Ok(())
    });
}

common::backend_test!(a_verify_failure_is_invalid_data_and_the_page_is_never_served);
fn a_verify_failure_is_invalid_data_and_the_page_is_never_served(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "bad", 8 * PS, 15);
        let cache = cache_on(backend, 32);
        let calls = Arc::new(AtomicUsize::new(0));
        let failing = Arc::new(AtomicBool::new(true));
        let mut opts = rw();
        opts.verify(counting_hook(calls.clone(), failing.clone(), 3));
        let file = cache.open(&path, &opts).await?;
        file.advise(Advice::Random);
        let err = file.page(3).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        let msg = err.to_string();
        assert!(msg.contains("page 3"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("bad checksum"), "{msg}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Not served from the cache: not by a no-wait read, not by read_at, not by page_mut.
        let mut one = [0u8; 8];
        assert_eq!(
            file.try_read_at(&mut one, 3 * PS as u64)
                .unwrap_err()
                .kind(),
            io::ErrorKind::WouldBlock
        );
        let reads = cache.stats().device_reads;
        let err = file.read_at(&mut one, 3 * PS as u64 + 5).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert_eq!(cache.stats().device_reads, reads + 1, "read again");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "and verified again");
        let err = file.page_mut(3).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        let err = file.read_bytes(3 * PS as u64, 10).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        // The neighbours are fine.
        common::assert_bytes(&file.page(2).await?, &page_of(&data, 2), "page 2");
        // Once the page verifies, it is served.
        failing.store(false, Ordering::SeqCst);
        let before = calls.load(Ordering::SeqCst);
        common::assert_bytes(&file.page(3).await?, &page_of(&data, 3), "page 3");
        assert_eq!(calls.load(Ordering::SeqCst), before + 1);
        drop(file.page(3).await?);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            before + 1,
            "a hit is not verified"
        );
        Ok(())
    });
}

common::backend_test!(pages_not_read_from_the_device_are_not_verified);
fn pages_not_read_from_the_device_are_not_verified(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, _) = make_file(dir.path(), "nv", 4 * PS, 16);
        let cache = cache_on(backend, 32);
        let calls = Arc::new(AtomicUsize::new(0));
        let mut opts = rw();
        opts.verify(counting_hook(
            calls.clone(),
            Arc::new(AtomicBool::new(true)),
            u64::MAX,
        ));
        let file = cache.open(&path, &opts).await?;
        file.write_all_at(&pattern(PS, 1), PS as u64).await?; // whole page: no read
        drop(file.page(1).await?);
        drop(file.page(9).await?); // past the end
        drop(file.page_mut(12).await?); // past the end, for writing
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert_eq!(cache.stats().device_reads, 0);
        file.write_all_at(b"x", 2 * PS as u64 + 3).await?; // partial: read, verified
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        Ok(())
    });
}

common::backend_test!(the_verify_hook_belongs_to_the_file);
fn the_verify_hook_belongs_to_the_file(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, _) = make_file(dir.path(), "h", 8 * PS, 17);
        let cache = cache_on(backend, 32);
        let first = Arc::new(AtomicUsize::new(0));
        let second = Arc::new(AtomicUsize::new(0));
        let never = Arc::new(AtomicBool::new(false));
        let mut opts = common::ro();
        opts.verify(counting_hook(first.clone(), never.clone(), 0));
        let a = cache.open(&path, &opts).await?;
        a.advise(Advice::Random);
        // A handle opened without a hook shares the file's hook.
        let b = cache.open(&path, &common::ro()).await?;
        b.advise(Advice::Random);
        drop(b.page(0).await?);
        assert_eq!(first.load(Ordering::SeqCst), 1);
        // A later hook replaces it for every handle.
        let mut opts2 = common::ro();
        opts2.verify(counting_hook(second.clone(), never, 0));
        let c = cache.open(&path, &opts2).await?;
        c.advise(Advice::Random);
        drop(a.page(1).await?);
        drop(c.page(2).await?);
        assert_eq!(first.load(Ordering::SeqCst), 1);
        assert_eq!(second.load(Ordering::SeqCst), 2);
        assert!(format!("{opts2:?}").contains("verify"));
        Ok(())
    });
}

common::backend_test!(a_panicking_hook_rejects_the_page);
fn a_panicking_hook_rejects_the_page(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "pan", 2 * PS, 18);
        let cache = cache_on(backend, 16);
        let armed = Arc::new(AtomicBool::new(true));
        let a2 = armed.clone();
        let mut opts = common::ro();
        opts.verify(move |_, _| {
            if a2.load(Ordering::SeqCst) {
                panic!("hook exploded");
            }
            Ok(())
        });
        let file = cache.open(&path, &opts).await?;
        let err = file.page(0).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        armed.store(false, Ordering::SeqCst);
        common::assert_bytes(&file.page(0).await?, &page_of(&data, 0), "after the panic");
        Ok(())
    });
}

common::backend_test!(pinned_page_handles_work_across_tasks_and_threads);
fn pinned_page_handles_work_across_tasks_and_threads(backend: Backend) {
    on_tokio_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "th", 4 * PS, 19);
        let cache = cache_on(backend, 16);
        let file = cache.open(&path, &common::ro()).await?;
        let page = file.page(2).await?;
        let want = page_of(&data, 2);
        let t = std::thread::spawn(move || page.to_vec());
        assert_eq!(t.join().unwrap(), want);
        let b = file.page(3).await?.into_bytes();
        let got = tokio::spawn(async move { b.slice(1..5).to_vec() })
            .await
            .unwrap();
        assert_eq!(got, &data[3 * PS + 1..3 * PS + 5]);
        Ok(())
    });
}

common::backend_test!(page_muts_held_on_dirty_pages_do_not_block_the_next_page_mut);
fn page_muts_held_on_dirty_pages_do_not_block_the_next_page_mut(backend: Backend) {
    on_tokio_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, _) = make_file(dir.path(), "dl", 8 * PS, 20);
        // 16 frames: writers wait at 3 dirty pages.
        let cache = cache_on(backend, 16);
        let file = cache.open(&path, &rw()).await?;
        file.advise(Advice::Random);
        file.write_all_at(&[1], 0).await?;
        file.write_all_at(&[1], PS as u64).await?;
        let work = async {
            // Two dirty pages locked by this task: they cannot be written back.
            let mut a = file.page_mut(0).await?;
            let mut b = file.page_mut(1).await?;
            file.write_all_at(&[1], 2 * PS as u64).await?; // at the limit now
            let mut c = file.page_mut(3).await?; // writeback of page 2 lets it through
            a[1] = 2;
            b[1] = 3;
            c[1] = 4;
            io::Result::Ok(())
        };
        tokio::time::timeout(Duration::from_secs(20), work)
            .await
            .expect("page_mut waited for pages this task holds")?;
        file.sync_all().await?;
        let disk = common::read_disk(&path)?;
        assert_eq!(&disk[..2], &[1, 2]);
        assert_eq!(&disk[PS..PS + 2], &[1, 3]);
        assert_eq!(disk[3 * PS + 1], 4);
        Ok(())
    });
}

common::backend_test!(a_hole_the_cache_grew_the_file_over_is_zeros_without_a_read);
fn a_hole_the_cache_grew_the_file_over_is_zeros_without_a_read(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let path = dir.path().join("hole");
        let cache = cache_on(backend, 32);
        let file = cache.open(&path, &rw()).await?;
        file.write_all_at(b"end", 20 * PS as u64).await?;
        assert_eq!(file.len(), 20 * PS as u64 + 3);
        for i in [3u64, 0, 19] {
            assert!(file.page(i).await?.iter().all(|&b| b == 0));
        }
        let mut buf = vec![1u8; 5 * PS];
        file.read_exact_at(&mut buf, 7 * PS as u64).await?;
        assert!(buf.iter().all(|&b| b == 0));
        assert_eq!(cache.stats().device_reads, 0);
        // After writeback the device holds the file, and evicted pages are read again.
        file.sync_all().await?;
        file.invalidate(0, u64::MAX / 2).await?;
        let mut end = [0u8; 3];
        file.read_exact_at(&mut end, 20 * PS as u64).await?;
        assert_eq!(&end, b"end");
        assert!(cache.stats().device_reads > 0);
        Ok(())
    });
}

common::backend_test!(a_sync_stuck_behind_a_held_page_mut_is_reported);
/// A `PageMut` held by the task that then syncs the same page never lets the sync finish (the
/// page stays locked). The wait is not silent: after a few seconds the flusher reports it
/// (`Stats::stuck_waits`, and a `tracing` warning naming the file and page); dropping the
/// handle lets everything go on.
fn a_sync_stuck_behind_a_held_page_mut_is_reported(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let path = dir.path().join("stuck");
        let cache = common::builder(backend)
            .memory_limit(64 * 4096)
            .writeback_interval(Duration::from_millis(20))
            .build()?;
        let f = cache.open(&path, &rw()).await?;
        f.write_all_at(&[1u8; 4096], 0).await?;
        let mut page = f.page_mut(0).await?;
        page[0] = 2;
        {
            let mut sync = std::pin::pin!(f.sync_all());
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            assert!(
                std::future::Future::poll(sync.as_mut(), &mut cx).is_pending(),
                "the page is locked"
            );
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while cache.stats().stuck_waits == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the stuck sync was never reported"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(cache.stats().stuck_waits, 1, "reported once");
        } // the stuck sync is dropped
        drop(page);
        f.sync_all().await?;
        let mut want = vec![1u8; 4096];
        want[0] = 2;
        assert_eq!(common::read_disk(&path)?, want);
        Ok(())
    });
}
