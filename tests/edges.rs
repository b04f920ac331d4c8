//! Edge cases of closing, reopening, shutting down, file-size limits and errors, each the
//! regression test of one item of the issue the disk gate fixed (closed files let go of at their
//! length, sync_all racing writeback and set_len, a second shutdown, writes past the
//! filesystem's limit, offsets near `u64::MAX`, a cache whose pages can never be written,
//! errno kept through the API, stale pages after a reopen, a refused open that created a file).
//!
//! Every public-API test runs on both backends (`common::backend_test!`) under tokio. Where a
//! test must wait for the cache's background writeback thread, it polls an observable (the
//! cache's stats, the file's length on disk) every millisecond, with a deadline of 10 s.

mod common;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{assert_bytes, make_file, on_runtimes, pattern, ro, rw, scratch_dir};
use uringcache::{Backend, Cache, CacheBuilder};
use uringcache_core::backend::{Backend as IoBackend, Layer, Request};
use uringcache_uring::fault::{Fault, FaultSlot, OpKind};
use uringcache_uring::FaultBackend;

/// A builder of a 1 MiB cache of 4 KiB pages on `backend`.
fn builder(backend: Backend) -> CacheBuilder {
    let mut b = common::builder(backend);
    b.memory_limit(256 * 4096).page_size(4096);
    b
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Polls `check` every millisecond until it returns `Ok`; panics after 10 s with `what` and the
/// last state `check` described. Only for waiting on the cache's own background thread.
#[track_caller]
fn wait_until(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match check() {
            Ok(()) => return,
            Err(state) if Instant::now() >= deadline => {
                panic!("timed out after 10 s waiting until {what}; last seen: {state}")
            }
            Err(_) => std::thread::sleep(ms(1)),
        }
    }
}

/// The errno of `e`: its own `raw_os_error()`, else the first one found down the chain of its
/// payload and `source()`s (an `io::Error` met on the way is searched the same way).
fn errno_of(e: &io::Error) -> Option<i32> {
    if let Some(n) = e.raw_os_error() {
        return Some(n);
    }
    // `io::Error::source()` is its payload's `source()`: start at the payload itself, so that a
    // payload that is an `io::Error` is not skipped.
    let mut next = e.get_ref().map(|p| p as &(dyn std::error::Error + 'static));
    while let Some(err) = next {
        if let Some(inner) = err.downcast_ref::<io::Error>() {
            return errno_of(inner);
        }
        next = err.source();
    }
    None
}

/// The length of the file at `path` on disk.
fn disk_len(path: &Path) -> io::Result<u64> {
    std::fs::metadata(path).map(|m| m.len())
}

common::backend_test!(a_file_closed_without_a_sync_is_cut_to_its_length_and_reopens_with_its_pages);
/// Closing a written file without a sync, after background writeback wrote its tail block
/// whole (512 or 4096 bytes on disk for a 100- or 700-byte file): the cache lets go of the
/// clean file only once the length on disk is cut back to `len()`, keeps its pages, and a
/// reopen finds them (a reopen, not a fresh open) with the right length and bytes. Guards
/// against a closed file left longer on disk than its length (the tail block's padding), and
/// against a reopen that loses or misreads the kept pages.
fn a_file_closed_without_a_sync_is_cut_to_its_length_and_reopens_with_its_pages(backend: Backend) {
    for end in [100usize, 700] {
        on_runtimes(move || async move {
            let dir = scratch_dir();
            let path = dir.path().join("closed");
            let cache = builder(backend)
                .dirty_expire(ms(1))
                .writeback_interval(ms(2))
                .build()?;
            let data = pattern(end, 11);
            let f = cache.open(&path, &rw()).await?;
            f.write_all_at(&data, 0).await?;
            wait_until("background writeback has written the file", || {
                let s = cache.stats();
                if s.dirty_pages == 0 && s.writeback_pages == 0 {
                    Ok(())
                } else {
                    Err(format!(
                        "dirty {} writeback {}",
                        s.dirty_pages, s.writeback_pages
                    ))
                }
            });
            drop(f); // no sync
            wait_until(
                &format!("{backend:?}: the closed file is idle and {end} bytes on disk"),
                || {
                    let idle = cache.stats().idle_files;
                    let on_disk = disk_len(&path);
                    match on_disk {
                        Ok(n) if idle == 1 && n == end as u64 => Ok(()),
                        other => Err(format!("idle files {idle}, length on disk {other:?}")),
                    }
                },
            );
            let reopens = cache.stats().reopens;
            let f = cache.open(&path, &rw()).await?;
            assert_eq!(f.len(), end as u64, "{backend:?}: len() after the reopen");
            let mut buf = vec![0u8; end + 100];
            let n = f.read_at(&mut buf, 0).await?;
            assert_eq!(n, end, "{backend:?}: bytes read after the reopen");
            assert_bytes(&buf[..n], &data, "read after the reopen");
            assert_eq!(
                cache.stats().reopens,
                reopens + 1,
                "{backend:?}: the reopen found the closed file with its pages"
            );
            cache.shutdown().await?;
            assert_eq!(
                disk_len(&path)?,
                end as u64,
                "{backend:?}: length on disk after shutdown"
            );
            assert_bytes(&common::read_disk(&path)?, &data, "on disk after shutdown");
            Ok(())
        });
    }
}

/// How many tries the racing tests make: `EDGES_TRIES`, else 300.
fn tries() -> usize {
    match std::env::var("EDGES_TRIES") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("EDGES_TRIES={v} is not a number")),
        Err(_) => 300,
    }
}

common::backend_test!(
    sync_all_never_returns_ok_with_the_disk_longer_than_len_when_set_len_races_writeback
);
/// `sync_all` never returns `Ok` while the file on disk is longer than `len()`: page 0 of a
/// 4096-byte file is dirtied, and `set_len(700)` runs while the background flusher (every
/// page expired at once, a pass every millisecond) may be writing that page whole; after the
/// `sync_all` the file on disk must be exactly 700 bytes, the first 700 of them the ones
/// written. Guards against a writeback write of the old tail landing after the cut (the disk
/// left at 4096 bytes after an `Ok` sync), and against a false `EIO` from an `ftruncate`
/// overlapping an `O_DIRECT` write of the same block.
fn sync_all_never_returns_ok_with_the_disk_longer_than_len_when_set_len_races_writeback(
    backend: Backend,
) {
    let tries = tries();
    let outcome = current_thread().block_on(async move {
        let dir = scratch_dir();
        let path = dir.path().join("race");
        let cache = builder(backend)
            .dirty_expire(Duration::ZERO)
            .writeback_interval(ms(1))
            .build()?;
        let f = cache.open(&path, &rw()).await?;
        let mut failures = Vec::new();
        let mut raced = 0; // tries where a background write was in flight at the set_len
        for t in 0..tries {
            f.set_len(4096).await?;
            let data = pattern(4096, t as u64 + 100);
            f.write_all_at(&data, 0).await?;
            // Sweep the moment of the cut across the flusher's 1 ms period (a busy wait of
            // 0 to 980 µs, the same in debug and release builds).
            let cut_at = Instant::now() + Duration::from_micros((t % 50) as u64 * 20);
            while Instant::now() < cut_at {
                std::hint::spin_loop();
            }
            if cache.stats().writeback_pages > 0 {
                raced += 1;
            }
            f.set_len(700).await?;
            let synced = f.sync_all().await;
            let on_disk = common::read_disk(&path)?;
            let problem = match synced {
                Err(e) => Some(format!("sync_all failed: {e}")),
                Ok(()) if on_disk.len() != 700 => Some(format!(
                    "sync_all returned Ok with {} bytes on disk, len() {}",
                    on_disk.len(),
                    f.len()
                )),
                Ok(()) if on_disk[..] != data[..700] => {
                    let at = on_disk.iter().zip(&data).position(|(a, b)| a != b);
                    Some(format!("wrong bytes on disk, first at {at:?}"))
                }
                Ok(()) => None,
            };
            if let Some(p) = problem {
                failures.push(format!("try {t}: {p}"));
            }
        }
        cache.shutdown().await?;
        Ok::<_, io::Error>((failures, raced))
    });
    let (failures, raced) = outcome.expect("the racing loop ran");
    println!(
        "{backend:?}: {tries} tries, {} failures, {raced} with a background write in flight \
         just before the set_len",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{backend:?}: {} of {tries} tries failed; the first ones: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
}

common::backend_test!(a_second_shutdown_is_ok_and_operations_after_shutdown_fail);
/// A second `shutdown` is `Ok` (also through a clone, with a `File` still open), the data is on
/// disk at its length after the first, and every operation after it fails instead of touching
/// a stopped backend. Guards against the second call failing, hanging or writing again.
fn a_second_shutdown_is_ok_and_operations_after_shutdown_fail(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let path = dir.path().join("twice");
        let cache = builder(backend).build()?;
        let f = cache.open(&path, &rw()).await?;
        let data = pattern(10_000, 31);
        f.write_all_at(&data, 0).await?;
        cache.shutdown().await?;
        cache.clone().shutdown().await?;
        assert_bytes(&common::read_disk(&path)?, &data, "on disk after shutdown");
        let mut buf = vec![0u8; 100];
        assert!(f.read_at(&mut buf, 0).await.is_err(), "read after shutdown");
        assert!(
            f.write_all_at(b"x", 0).await.is_err(),
            "write after shutdown"
        );
        assert!(f.sync_all().await.is_err(), "sync_all after shutdown");
        assert!(f.set_len(5).await.is_err(), "set_len after shutdown");
        let other = dir.path().join("after");
        assert!(
            cache.open(&other, &rw()).await.is_err(),
            "open after shutdown"
        );
        assert!(!other.exists(), "an open after shutdown created a file");
        drop(f);
        assert_bytes(
            &common::read_disk(&path)?,
            &data,
            "on disk after the last close",
        );
        Ok(())
    });
}

/// Asserts `e` is `FileTooLarge` with errno `EFBIG`.
#[track_caller]
fn assert_efbig(e: &io::Error, what: &str) {
    assert_eq!(e.kind(), io::ErrorKind::FileTooLarge, "{what}: {e}");
    assert_eq!(errno_of(e), Some(libc::EFBIG), "{what}: errno of {e}");
}

common::backend_test!(a_write_past_what_the_filesystem_can_hold_is_refused_at_the_write);
/// A write (buffered or direct) or `set_len` to 2^50 bytes, past what ext4 can hold, is refused
/// at the call with `FileTooLarge` / `EFBIG`, as `pwrite` and `ftruncate` refuse it, and changes
/// nothing: `len()` and the disk stay, and the next sync and the shutdown are `Ok`. Guards
/// against the write being accepted into the cache and then failing every later sync (a page
/// that can never be written back).
fn a_write_past_what_the_filesystem_can_hold_is_refused_at_the_write(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "big", 5000, 41);
        let cache = builder(backend).build()?;
        let f = cache.open(&path, &rw()).await?;
        let far = 1u64 << 50;
        let e = f.write_all_at(b"x", far).await.unwrap_err();
        assert_efbig(&e, "write_all_at at 2^50");
        assert_eq!(f.len(), 5000, "len() after the refused write");
        let e = f.write_direct_at(b"x", far).await.unwrap_err();
        assert_efbig(&e, "write_direct_at at 2^50");
        assert_eq!(f.len(), 5000, "len() after the refused direct write");
        let e = f.set_len(far).await.unwrap_err();
        assert_efbig(&e, "set_len(2^50)");
        assert_eq!(f.len(), 5000, "len() after the refused set_len");
        assert_eq!(cache.stats().dirty_pages, 0, "nothing was dirtied");
        f.sync_all().await?;
        assert_bytes(&common::read_disk(&path)?, &data, "on disk after the sync");
        cache.shutdown().await?;
        assert_bytes(&common::read_disk(&path)?, &data, "on disk after shutdown");
        Ok(())
    });
}

common::backend_test!(lengths_and_offsets_near_u64_max_are_errors_never_panics);
/// Lengths and write ends at or near `u64::MAX` (an end of exactly `u64::MAX`, and ends that
/// overflow) get an error, `FileTooLarge` or `InvalidInput`, and never a panic (the test runs in
/// debug builds, where arithmetic overflow panics); nothing changes and a sync afterwards is
/// `Ok`. Guards against rounding the tail block up past `u64::MAX`.
fn lengths_and_offsets_near_u64_max_are_errors_never_panics(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "max", 3000, 51);
        let cache = builder(backend).build()?;
        let f = cache.open(&path, &rw()).await?;
        let max = u64::MAX;
        let outcomes: Vec<(String, io::Result<()>)> = vec![
            ("set_len(u64::MAX)".into(), f.set_len(max).await),
            ("set_len(u64::MAX - 100)".into(), f.set_len(max - 100).await),
            (
                "write_all_at(abc, u64::MAX - 3)".into(),
                f.write_all_at(b"abc", max - 3).await,
            ),
            (
                "write_all_at(abc, u64::MAX - 1)".into(),
                f.write_all_at(b"abc", max - 1).await,
            ),
            (
                "write_direct_at(abc, u64::MAX - 3)".into(),
                f.write_direct_at(b"abc", max - 3).await.map(drop),
            ),
            (
                "write_direct_at(abc, u64::MAX - 1)".into(),
                f.write_direct_at(b"abc", max - 1).await.map(drop),
            ),
        ];
        for (what, r) in outcomes {
            let e = r.expect_err(&what);
            assert!(
                matches!(
                    e.kind(),
                    io::ErrorKind::FileTooLarge | io::ErrorKind::InvalidInput
                ),
                "{backend:?}: {what}: {:?}: {e}",
                e.kind()
            );
            assert_eq!(f.len(), 3000, "{backend:?}: len() after {what}");
        }
        assert_eq!(cache.stats().dirty_pages, 0, "nothing was dirtied");
        f.sync_all().await?;
        assert_bytes(&common::read_disk(&path)?, &data, "on disk after the sync");
        cache.shutdown().await?;
        Ok(())
    });
}

/// A backend layer that only delegates, holding a marker: the marker is dropped when the
/// backend is, that is when the cache that owns it is freed.
struct Marked {
    inner: Arc<dyn IoBackend>,
    _marker: Arc<()>,
}

impl Layer for Marked {
    fn inner(&self) -> &dyn IoBackend {
        &*self.inner
    }

    unsafe fn submit_layered(&self, batch: &mut Vec<Request>) {
        // SAFETY: the caller's requests, passed on unchanged.
        unsafe { self.inner.submit(batch) }
    }
}

common::backend_test!(a_cache_that_can_never_write_a_page_still_frees_itself_when_dropped);
/// A cache whose device refuses every write (`EIO` forever), dropped with dirty pages and
/// without a sync or shutdown, still frees itself (its backend, which it owns, is dropped)
/// once its writeback has given up on the pages nobody is left to hear about. Guards against
/// the flusher retrying forever and keeping the cache, its memory and its threads alive.
fn a_cache_that_can_never_write_a_page_still_frees_itself_when_dropped(backend: Backend) {
    let marker = Arc::new(());
    let freed = Arc::downgrade(&marker);
    let fault_slot = Arc::new(OnceLock::new());
    let cache = {
        let mut b = builder(backend);
        b.writeback_interval(ms(5));
        let slot = fault_slot.clone();
        let marker = Mutex::new(Some(marker));
        b.wrap_backend(move |inner| {
            let fault = Arc::new(FaultBackend::new(inner));
            let _ = slot.set(fault.clone());
            let marker = marker
                .lock()
                .unwrap()
                .take()
                .expect("one backend per build");
            Arc::new(Marked {
                inner: fault,
                _marker: marker,
            })
        });
        b.build().expect("build the cache")
        // The builder (and its layer closure) is dropped here.
    };
    assert!(freed.upgrade().is_some(), "the backend holds the marker");
    let fault = fault_slot.get().expect("the layer ran").clone();
    drop(fault_slot);
    fault.inject(OpKind::Write, Fault::Fail(libc::EIO), None);
    let dir = scratch_dir();
    let path = dir.path().join("never");
    current_thread().block_on(async {
        let f = cache.open(&path, &rw()).await.expect("open");
        f.write_all_at(&pattern(10_000, 61), 0)
            .await
            .expect("buffered write");
        assert!(cache.stats().dirty_pages >= 3, "{}", cache.stats());
        drop(f); // no sync
    });
    drop(cache); // no shutdown
    drop(fault); // ours; the cache's backend holds its own reference
    wait_until(
        &format!("{backend:?}: the dropped cache is freed (its backend dropped)"),
        || match freed.upgrade() {
            None => Ok(()),
            Some(_) => Err("the backend is still alive".into()),
        },
    );
}

/// A cache on `backend` whose backend is wrapped in a `FaultBackend`, and that `FaultBackend`.
fn faulty_cache(backend: Backend) -> (Cache, Arc<FaultBackend>) {
    let faults = FaultSlot::new();
    let cache = builder(backend)
        .wrap_backend(faults.layer())
        .build()
        .expect("build the cache");
    (cache, faults.get())
}

common::backend_test!(errors_from_the_os_keep_their_errno);
/// Errors from the OS keep their errno through the API (`raw_os_error()` or the `source()`
/// chain): a missing file is `NotFound` / `ENOENT`; a sync after a write that failed at the
/// device with `EIO` reports `EIO`; a `set_len` whose `ftruncate` fails with `ENOSPC` is
/// `StorageFull` / `ENOSPC`. Every mismatch is collected and reported together. Guards
/// against errors rebuilt from their text (`io::Error::new(kind, format!("... {e}"))`), which
/// keeps the message but drops the errno callers match on.
fn errors_from_the_os_keep_their_errno(backend: Backend) {
    let found = current_thread().block_on(async move {
        let mut found = Vec::new();
        let mut check = |what: &str, e: &io::Error, kind: Option<io::ErrorKind>, errno: i32| {
            let kind_ok = kind.is_none_or(|k| e.kind() == k);
            if !kind_ok || errno_of(e) != Some(errno) {
                let want = kind.map_or("any".to_string(), |k| format!("{k:?}"));
                found.push(format!(
                    "{backend:?}: {what}: want kind {want} errno {errno}, got kind {:?} \
                     errno {:?}: {e}",
                    e.kind(),
                    errno_of(e)
                ));
            }
        };
        let dir = scratch_dir();
        let (cache, fault) = faulty_cache(backend);

        let missing = dir.path().join("missing");
        let e = cache.open(&missing, &ro()).await.unwrap_err();
        check(
            "opening a missing file read-only",
            &e,
            Some(io::ErrorKind::NotFound),
            libc::ENOENT,
        );
        let mut rw_no_create = uringcache::OpenOptions::new();
        rw_no_create.read(true).write(true);
        let e = cache.open(&missing, &rw_no_create).await.unwrap_err();
        check(
            "opening a missing file read-write",
            &e,
            Some(io::ErrorKind::NotFound),
            libc::ENOENT,
        );

        let path = dir.path().join("eio");
        let f = cache.open(&path, &rw()).await?;
        f.write_all_at(&pattern(10_000, 71), 0).await?;
        fault.inject(OpKind::Write, Fault::Fail(libc::EIO), None);
        let e = f.sync_all().await.unwrap_err();
        check(
            "sync_all after a write failed with EIO",
            &e,
            None,
            libc::EIO,
        );
        fault.clear();
        f.sync_all().await?; // the pages stayed dirty and are written now

        fault.inject(OpKind::Truncate, Fault::Fail(libc::ENOSPC), Some(1));
        let e = f.set_len(1 << 30).await.unwrap_err();
        check(
            "set_len whose ftruncate failed with ENOSPC",
            &e,
            Some(io::ErrorKind::StorageFull),
            libc::ENOSPC,
        );
        assert_eq!(f.len(), 10_000, "len() after the failed set_len");
        f.sync_all().await?;
        // Every error was reported to the handle and its pages written since: shutdown has
        // nothing left to fail on, and must not report the old error as its own.
        cache.shutdown().await?;
        Ok::<_, io::Error>(found)
    });
    let problems = found.expect("the checks ran");
    assert!(
        problems.is_empty(),
        "{} errors lost their errno:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Reads all of `f` (its `len()` plus some, to see that nothing lies past it).
async fn read_all(f: &uringcache::File) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; f.len() as usize + 4096];
    let n = f.read_at(&mut buf, 0).await?;
    buf.truncate(n);
    Ok(buf)
}

/// Waits until `cache` keeps exactly `n` closed files.
#[track_caller]
fn wait_idle(cache: &Cache, n: usize) {
    wait_until(&format!("{n} closed files are kept idle"), || {
        let idle = cache.stats().idle_files;
        if idle == n {
            Ok(())
        } else {
            Err(format!("idle files {idle}"))
        }
    });
}

common::backend_test!(a_reopen_after_a_close_serves_what_is_on_disk_never_stale_pages);
/// A file closed in the cache and changed on disk by someone else (new bytes and a new length;
/// then new bytes at the same length) is served as it is on disk when reopened, its cached
/// pages dropped (`stale_reopens`); and an unchanged file's pages are still cached after a
/// close and reopen (all hits, no miss). Guards against a reopen serving stale cached pages or
/// a stale length, and against the check throwing away pages that are still right.
fn a_reopen_after_a_close_serves_what_is_on_disk_never_stale_pages(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let cache = builder(backend).build()?;
        let path = dir.path().join("changed");

        let first = pattern(10_000, 81);
        let f = cache.open(&path, &rw()).await?;
        f.write_all_at(&first, 0).await?;
        f.sync_all().await?;
        drop(f);
        wait_idle(&cache, 1);

        // Different bytes, different length.
        let second = pattern(7_000, 82);
        std::fs::write(&path, &second)?;
        let stale = cache.stats().stale_reopens;
        let f = cache.open(&path, &rw()).await?;
        assert_eq!(f.len(), 7_000, "{backend:?}: len() of the rewritten file");
        assert_bytes(&read_all(&f).await?, &second, "the rewritten file");
        assert_eq!(
            cache.stats().stale_reopens,
            stale + 1,
            "{backend:?}: the rewritten file was seen as changed"
        );
        drop(f);
        wait_idle(&cache, 1);

        // Different bytes, the same length.
        let third = pattern(7_000, 83);
        {
            use std::os::unix::fs::FileExt;
            let w = std::fs::OpenOptions::new().write(true).open(&path)?;
            w.write_all_at(&third, 0)?;
        }
        let stale = cache.stats().stale_reopens;
        let f = cache.open(&path, &rw()).await?;
        assert_eq!(f.len(), 7_000, "{backend:?}: len() of the overwritten file");
        assert_bytes(&read_all(&f).await?, &third, "the overwritten file");
        assert_eq!(
            cache.stats().stale_reopens,
            stale + 1,
            "{backend:?}: the overwritten file was seen as changed"
        );
        drop(f);
        wait_idle(&cache, 1);

        // Unchanged: the pages are still cached after the close.
        let (kept, data) = make_file(dir.path(), "kept", 64 << 10, 84);
        let f = cache.open(&kept, &ro()).await?;
        assert_bytes(&read_all(&f).await?, &data, "the first read");
        drop(f);
        wait_idle(&cache, 2);
        let before = cache.stats();
        let f = cache.open(&kept, &ro()).await?;
        assert_bytes(&read_all(&f).await?, &data, "the read after the reopen");
        let after = cache.stats();
        assert_eq!(
            after.misses, before.misses,
            "{backend:?}: the unchanged file's pages were kept: {after}"
        );
        assert!(after.hits > before.hits, "{backend:?}: {after}");
        assert_eq!(after.reopens, before.reopens + 1, "{backend:?}: {after}");
        assert_eq!(after.stale_reopens, before.stale_reopens, "{backend:?}");
        cache.shutdown().await?;
        Ok(())
    });
}

/// A ramfs mounted on a temporary directory (ramfs refuses `O_DIRECT`), unmounted (lazily)
/// when dropped.
struct Ramfs {
    dir: tempfile::TempDir,
}

impl Ramfs {
    /// `None`, with the reason printed, where mounting is not allowed.
    fn mount() -> Option<Ramfs> {
        use std::os::unix::ffi::OsStrExt;
        let dir = scratch_dir();
        let target = std::ffi::CString::new(dir.path().as_os_str().as_bytes()).unwrap();
        // SAFETY: NUL-terminated strings that outlive the call, no data; the result is checked.
        let rc = unsafe {
            libc::mount(
                c"none".as_ptr(),
                target.as_ptr(),
                c"ramfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            eprintln!(
                "skipped: cannot mount a ramfs on {} ({}); this test needs root",
                dir.path().display(),
                io::Error::last_os_error()
            );
            return None;
        }
        Some(Ramfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Ramfs {
    fn drop(&mut self) {
        let target = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(
            self.dir.path().as_os_str(),
        ))
        .unwrap();
        // SAFETY: a NUL-terminated path; a failure only leaves a mount behind.
        if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
            eprintln!(
                "cannot unmount the ramfs on {}: {}",
                self.dir.path().display(),
                io::Error::last_os_error()
            );
        }
    }
}

common::backend_test!(an_open_that_fails_creates_nothing);
/// An open with `create(true)` in a directory whose filesystem refuses `O_DIRECT` (ramfs)
/// fails with `Unsupported` and leaves no file behind. Guards against the kernel's `O_CREAT`
/// creating the file before refusing `O_DIRECT`, leaving an empty file the caller never got a
/// handle to.
fn an_open_that_fails_creates_nothing(backend: Backend) {
    let Some(fs) = Ramfs::mount() else {
        return;
    };
    let root: PathBuf = fs.path().to_path_buf();
    on_runtimes(move || {
        let root = root.clone();
        async move {
            let cache = builder(backend).build()?;
            let path = root.join(format!("new-{backend:?}"));
            for _ in 0..2 {
                let e = cache.open(&path, &rw()).await.unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{backend:?}: {e}");
                assert!(
                    std::fs::symlink_metadata(&path).is_err(),
                    "{backend:?}: the refused open left {} behind",
                    path.display()
                );
            }
            assert_eq!(
                std::fs::read_dir(&root)?.count(),
                0,
                "{backend:?}: the ramfs is empty"
            );
            Ok(())
        }
    });
    drop(fs);
}
