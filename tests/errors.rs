//! Failures at the device, injected with `FaultBackend`: nothing cached wrong, nothing lost,
//! every error reported — once to every handle open when it happened.

mod common;

use std::io;
use std::sync::Arc;

use common::{make_file, on_runtimes, on_tokio_runtimes, pattern, scratch_dir};
use uringcache::{Advice, Backend, Cache};
use uringcache_uring::fault::{Fault, FaultSlot, OpKind};
use uringcache_uring::FaultBackend;

fn faulty_cache(backend: Backend, frames: usize) -> (Cache, Arc<FaultBackend>) {
    let faults = FaultSlot::new();
    let cache = common::builder(backend)
        .memory_limit(frames * 4096)
        .wrap_backend(faults.layer())
        .build()
        .unwrap();
    let fault = faults.get();
    (cache, fault)
}

use common::rw;

common::backend_test!(a_read_error_is_returned_and_the_next_read_retries);
fn a_read_error_is_returned_and_the_next_read_retries(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "r", 64 << 10, 1);
        let (cache, fault) = faulty_cache(backend, 64);
        let f = cache.open(&path, &common::ro()).await?;
        fault.inject(OpKind::Read, Fault::Fail(libc::EIO), Some(1));
        let mut buf = vec![0u8; 4096];
        let err = f.read_at(&mut buf, 8192).await.unwrap_err();
        assert_eq!(err.raw_os_error(), None, "wrapped with context: {err}");
        assert!(err.to_string().contains("page 2"), "names the page: {err}");
        assert!(err.to_string().contains("Input/output error"), "{err}");
        assert!(cache.stats().read_errors >= 1);
        // The fault is used up: the next read goes to the device again and is right.
        f.read_exact_at(&mut buf, 8192).await?;
        common::assert_bytes(&buf, &data[8192..12288], "after the retry");
        Ok(())
    });
}

common::backend_test!(every_waiter_of_a_failed_read_gets_the_error);
fn every_waiter_of_a_failed_read_gets_the_error(backend: Backend) {
    common::multi_thread().block_on(async {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "w", 64 << 10, 2);
        let (cache, fault) = faulty_cache(backend, 64);
        let f = cache.open(&path, &common::ro()).await.unwrap();
        f.advise(Advice::Random);
        fault.inject(OpKind::Read, Fault::Hold, Some(1));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let f = f.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 100];
                    f.read_at(&mut buf, 4096).await.map(|_| buf)
                })
            })
            .collect();
        // Wait (by yielding, not sleeping) until all 16 are on the page.
        while {
            let s = cache.stats();
            s.misses + s.waits < 16
        } {
            tokio::task::yield_now().await;
        }
        assert_eq!(fault.held(), 1, "one device read for sixteen readers");
        fault.inject(OpKind::Read, Fault::Fail(libc::EIO), Some(1));
        fault.release(false);
        for t in tasks {
            let err = t.await.unwrap().unwrap_err();
            assert!(err.to_string().contains("Input/output error"), "{err}");
        }
        let mut buf = vec![0u8; 100];
        f.read_exact_at(&mut buf, 4096).await.unwrap();
        common::assert_bytes(&buf, &data[4096..4196], "retried read");
    });
}

common::backend_test!(a_write_error_keeps_pages_dirty_and_reaches_every_handle_once);
fn a_write_error_keeps_pages_dirty_and_reaches_every_handle_once(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let path = dir.path().join("w");
        let (cache, fault) = faulty_cache(backend, 64);
        let a = cache.open(&path, &rw()).await?;
        let b = cache.open(&path, &rw()).await?;
        let data = pattern(10_000, 3);
        a.write_all_at(&data, 0).await?;
        fault.inject(OpKind::Write, Fault::Fail(libc::EIO), None);
        let err = a.sync_data().await.unwrap_err();
        assert!(err.to_string().contains("Input/output error"), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        let s = cache.stats();
        assert!(s.dirty_pages >= 3, "failed pages stay dirty: {s}");
        assert!(s.write_errors >= 1, "{s}");
        // The bytes are still readable from the cache, never lost or cleaned.
        let mut buf = vec![0u8; 10_000];
        a.read_exact_at(&mut buf, 0).await?;
        common::assert_bytes(&buf, &data, "cached after the failure");
        fault.clear();
        // b was open when the error happened: it hears of it once.
        let c = cache.open(&path, &rw()).await?; // opened after: does not
        let err = b.sync_data().await.unwrap_err();
        assert!(err.to_string().contains("Input/output error"), "{err}");
        b.sync_data().await?;
        c.sync_data().await?;
        // a already heard; its next sync writes the pages again and succeeds.
        a.sync_all().await?;
        common::assert_bytes(&common::read_disk(&path)?, &data, "on disk after the retry");
        assert_eq!(cache.stats().dirty_pages, 0);
        Ok(())
    });
}

common::backend_test!(enospc_is_reported_as_storage_full);
fn enospc_is_reported_as_storage_full(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let path = dir.path().join("full");
        let (cache, fault) = faulty_cache(backend, 64);
        let f = cache.open(&path, &rw()).await?;
        f.write_all_at(&[1u8; 8192], 0).await?;
        fault.inject(OpKind::Write, Fault::Fail(libc::ENOSPC), Some(1));
        let err = f.sync_all().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
        f.sync_all().await?;
        assert_eq!(common::read_disk(&path)?, vec![1u8; 8192]);
        Ok(())
    });
}

common::backend_test!(a_failed_flush_is_never_turned_into_success);
fn a_failed_flush_is_never_turned_into_success(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let path = dir.path().join("fs");
        let (cache, fault) = faulty_cache(backend, 64);
        let a = cache.open(&path, &rw()).await?;
        let b = cache.open(&path, &rw()).await?;
        a.write_all_at(&[2u8; 5000], 0).await?;
        fault.inject(OpKind::Fsync, Fault::Fail(libc::EIO), Some(1));
        assert!(a.sync_data().await.is_err());
        assert!(cache.stats().flush_errors == 1);
        // The device may have lost what it acknowledged before the failed flush: no sync of
        // this file reports success any more, on any handle.
        for _ in 0..2 {
            let err = a.sync_all().await.unwrap_err();
            assert!(err.to_string().contains("earlier flush failed"), "{err}");
            assert!(b.sync_data().await.is_err());
        }
        // Closed by every handle and reopened (the cache keeps the file's pages across the
        // close): the new handle starts afresh, as the message says.
        drop((a, b));
        let c = cache.open(&path, &rw()).await?;
        c.write_all_at(&[3u8; 100], 0).await?;
        c.sync_all().await?;
        Ok(())
    });
}

common::backend_test!(
    a_sync_waits_for_its_write_before_the_flush_and_a_dropped_sync_leaves_nothing_stuck
);
fn a_sync_waits_for_its_write_before_the_flush_and_a_dropped_sync_leaves_nothing_stuck(
    backend: Backend,
) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let path = dir.path().join("gc");
        let (cache, fault) = faulty_cache(backend, 64);
        let f = cache.open(&path, &rw()).await?;
        f.write_all_at(&[1u8; 8192], 0).await?;
        f.sync_all().await?;
        // The write of the next sync is held: no flush may start before it completes.
        f.write_all_at(&[2u8; 4096], 0).await?;
        let flushes = cache.stats().flushes;
        fault.inject(OpKind::Write, Fault::Hold, Some(1));
        {
            // sync_all: a lone data sync of one page would need no flush at all (RWF_DSYNC).
            let mut sync = std::pin::pin!(f.sync_all());
            assert!(
                poll_once(sync.as_mut()).await.is_none(),
                "the write is held"
            );
            assert_eq!(fault.held(), 1);
            assert_eq!(
                cache.stats().flushes,
                flushes,
                "a flush ran before the write ended"
            );
            fault.release(false);
            sync.await?;
        }
        assert_eq!(cache.stats().flushes, flushes + 1);
        // A sync dropped while its flush is held; later syncs still get theirs.
        f.write_all_at(&[3u8; 4096], 4096).await?;
        f.sync_range(0, 8192).await?; // written, so the next sync flushes at once
        fault.inject(OpKind::Fsync, Fault::Hold, Some(1));
        assert!(futures_poll_once(f.sync_data()).await.is_none());
        assert_eq!(
            fault.held(),
            1,
            "the flush was submitted when the sync joined"
        );
        fault.release(false);
        f.write_all_at(&[4u8; 4096], 4096).await?;
        f.sync_data().await?;
        let on_disk = common::read_disk(&path)?;
        assert_eq!(&on_disk[..4096], &[2u8; 4096][..]);
        assert_eq!(&on_disk[4096..], &[4u8; 4096][..]);
        Ok(())
    });
}

/// Polls a pinned future once; `Some` if it finished.
async fn poll_once<F: std::future::Future>(mut fut: std::pin::Pin<&mut F>) -> Option<F::Output> {
    std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
        std::task::Poll::Ready(out) => std::task::Poll::Ready(Some(out)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

common::backend_test!(a_write_of_an_extension_waits_for_a_cut_in_progress_and_lands_after_it);
fn a_write_of_an_extension_waits_for_a_cut_in_progress_and_lands_after_it(backend: Backend) {
    on_tokio_runtimes(move || async move {
        let dir = scratch_dir();
        let path = dir.path().join("cut");
        let (cache, fault) = faulty_cache(backend, 64);
        let f = cache.open(&path, &rw()).await?;
        // An unaligned length: sync_all writes the tail block whole, then cuts the file back
        // to 5000 bytes on disk. That ftruncate is held.
        f.write_all_at(&[1u8; 5000], 0).await?;
        fault.inject(OpKind::Truncate, Fault::Hold, Some(1));
        let a = tokio::spawn({
            let f = f.clone();
            async move { f.sync_all().await }
        });
        while fault.held() == 0 {
            tokio::task::yield_now().await;
        }
        let writes_before_extension = cache.stats().device_writes;
        // Meanwhile the file grows and a sync writes the new page back: its write is held
        // behind the cut (the disk gate), never in flight with it, and lands after it.
        f.write_all_at(&[7u8; 4096], 8192).await?;
        let b = tokio::spawn({
            let f = f.clone();
            async move { f.sync_range(8192, 4096).await }
        });
        for _ in 0..200 {
            tokio::task::yield_now().await;
        }
        assert_eq!(fault.held(), 1, "only the cut reached the backend");
        assert_eq!(
            cache.stats().device_writes,
            writes_before_extension,
            "no write goes out while the file is being cut"
        );
        fault.release(false);
        a.await.expect("sync_all task")?;
        b.await.expect("sync_range task")?;
        f.sync_all().await?;
        let mut want = vec![1u8; 5000];
        want.resize(8192, 0);
        want.extend_from_slice(&[7u8; 4096]);
        common::assert_bytes(&common::read_disk(&path)?, &want, "on disk after the cut");
        Ok(())
    });
}

common::backend_test!(a_completion_after_its_future_was_dropped_is_harmless);
fn a_completion_after_its_future_was_dropped_is_harmless(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "drop", 64 << 10, 4);
        let (cache, fault) = faulty_cache(backend, 16);
        let f = cache.open(&path, &common::ro()).await?;
        fault.inject(OpKind::Read, Fault::Hold, None);
        {
            let mut buf = vec![0u8; 4096];
            let read = f.read_at(&mut buf, 0);
            // Poll it once (it submits and waits), then drop it.
            let r = futures_poll_once(read).await;
            assert!(r.is_none(), "the read is held");
        }
        assert!(fault.held() >= 1);
        fault.clear();
        fault.release(true); // completes into frames the cache still owns
        let mut buf = vec![0u8; 64 << 10];
        f.read_exact_at(&mut buf, 0).await?;
        common::assert_bytes(&buf, &data, "after the orphaned completion");
        Ok(())
    });
}

/// Polls a future once; `Some` if it finished.
async fn futures_poll_once<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
        std::task::Poll::Ready(out) => std::task::Poll::Ready(Some(out)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

common::backend_test!(enospc_when_extending_the_file_is_reported_and_changes_nothing);
fn enospc_when_extending_the_file_is_reported_and_changes_nothing(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "grow", 5000, 5);
        let (cache, fault) = faulty_cache(backend, 64);
        let f = cache.open(&path, &rw()).await?;
        fault.inject(OpKind::Truncate, Fault::Fail(libc::ENOSPC), Some(1));
        let err = f.set_len(1 << 30).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
        assert!(err.to_string().contains("cannot set the length"), "{err}");
        assert_eq!(f.len(), 5000, "the length did not change");
        f.sync_all().await?;
        assert_eq!(common::read_disk(&path)?, data);
        Ok(())
    });
}

common::backend_test!(short_transfers_are_continued_not_taken_for_end_of_file);
/// Transfers cut short at every 512 bytes (each system call or SQE asks for at most that)
/// are continued, never mistaken for end of file.
fn short_transfers_are_continued_not_taken_for_end_of_file(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, mut data) = make_file(dir.path(), "short", (1 << 20) + 777, 6);
        let cache = common::builder(backend)
            .memory_limit(64 * 4096)
            .max_transfer(512)
            .build()?;
        let f = cache.open(&path, &rw()).await?;
        let mut buf = vec![0u8; data.len() + 100];
        assert_eq!(f.read_at(&mut buf, 0).await?, data.len());
        common::assert_bytes(&buf[..data.len()], &data, "read in 512-byte pieces");
        let new = pattern(300_000, 7);
        f.write_all_at(&new, 5000).await?;
        data[5000..305_000].copy_from_slice(&new);
        f.sync_all().await?;
        common::assert_bytes(
            &common::read_disk(&path)?,
            &data,
            "written in 512-byte pieces",
        );
        let s = cache.stats();
        assert!(
            s.submit_calls > s.device_reads + s.device_writes,
            "requests were split: {s}"
        );
        Ok(())
    });
    let err = common::builder(backend)
        .max_transfer(1000)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("multiple of 512"), "{err}");
}
