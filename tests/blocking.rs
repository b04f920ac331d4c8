//! `BlockingFile`, the blocking API: its methods on plain threads with no runtime, against a
//! model and against the disk; many threads at once; mixed with the async `File` of the same
//! file; generically through `std::os::unix::fs::FileExt`; its errors (those of the async
//! methods, kind and message); and from a tokio current-thread runtime.
//!
//! Every test runs on both backends (`common::backend_test!`: `name::io_uring`,
//! `name::threads`). No test sleeps or times anything.

mod common;

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{assert_bytes, cache_on, make_file, pattern, ro, rw, scratch_dir};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uringcache::{Backend, BlockingFile, OpenOptions};

/// Runs `body`, naming the backend when it fails.
fn on(backend: Backend, body: impl FnOnce() -> io::Result<()>) {
    if let Err(e) = body() {
        panic!("on {backend:?}: {e} ({:?})", e.kind());
    }
}

fn write_only() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.write(true);
    o
}

common::backend_test!(random_operations_agree_with_a_model_and_the_disk);
/// Random writes, reads, cuts, growths and syncs through a `BlockingFile` on this thread agree
/// with a `Vec<u8>` model at every read and `len()`; after each `sync_all` the file on disk is
/// the model, to the byte and the length; a fresh cache reads the same file back.
fn random_operations_agree_with_a_model_and_the_disk(backend: Backend) {
    const OPS: usize = 3000;
    const MAX_LEN: u64 = 300 << 10;
    on(backend, || {
        let seed = match backend {
            Backend::IoUring => 0xB10C_0001,
            _ => 0xB10C_0002,
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let dir = scratch_dir();
        let (path, mut model) = make_file(dir.path(), "model", 50_000, seed);
        // 32 frames (128 KiB) for a file of up to 300 KiB: pages are evicted and written back.
        let cache = cache_on(backend, 32);
        let f = cache.open_blocking(&path, &rw())?;
        let mut buf = vec![0u8; 40_000];
        for op in 0..OPS {
            let what = format!("seed {seed:#x}, op {op}");
            match rng.gen_range(0..100) {
                0..=44 => {
                    let off = rng.gen_range(0..MAX_LEN);
                    let len = rng.gen_range(1..=3 * 4096 + 100) as usize;
                    let data = pattern(len, rng.gen());
                    if rng.gen_bool(0.5) {
                        f.write_all_at(&data, off)?;
                    } else {
                        assert_eq!(f.write_at(&data, off)?, len, "{what}: write_at");
                    }
                    let end = off as usize + len;
                    if model.len() < end {
                        model.resize(end, 0);
                    }
                    model[off as usize..end].copy_from_slice(&data);
                }
                45..=84 => {
                    let off = rng.gen_range(0..model.len() as u64 + 5000);
                    let len = rng.gen_range(0..=buf.len());
                    let n = f.read_at(&mut buf[..len], off)?;
                    let want = model
                        .get(off as usize..(off as usize + len).min(model.len()))
                        .unwrap_or(&[]);
                    assert_bytes(&buf[..n], want, &format!("{what}: read_at({len}, {off})"));
                }
                85..=89 => {
                    // Shrink or grow, within the range writes use.
                    let len = if rng.gen_bool(0.5) {
                        rng.gen_range(0..=model.len() as u64)
                    } else {
                        rng.gen_range(model.len() as u64..=MAX_LEN.max(model.len() as u64))
                    };
                    f.set_len(len)?;
                    model.resize(len as usize, 0);
                }
                90..=93 => {
                    let off = rng.gen_range(0..=model.len() as u64);
                    let len = rng.gen_range(1..=buf.len());
                    let r = f.read_exact_at(&mut buf[..len], off);
                    if off as usize + len <= model.len() {
                        r?;
                        assert_bytes(
                            &buf[..len],
                            &model[off as usize..off as usize + len],
                            &format!("{what}: read_exact_at({len}, {off})"),
                        );
                    } else {
                        let e = r.expect_err("read_exact_at past the end");
                        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{what}: {e}");
                    }
                }
                94..=95 => f.sync_data()?,
                96..=97 => {
                    let off = rng.gen_range(0..=model.len() as u64);
                    f.sync_range(off, rng.gen_range(0..64 << 10))?;
                }
                _ => {
                    f.sync_all()?;
                    assert_bytes(&common::read_disk(&path)?, &model, &format!("{what}: disk"));
                }
            }
            assert_eq!(f.len(), model.len() as u64, "{what}: len");
        }
        f.sync_all()?;
        assert_bytes(&common::read_disk(&path)?, &model, "disk at the end");
        // Everything read back through another cache (nothing left only in the first).
        drop(f);
        drop(cache);
        let fresh = cache_on(backend, 32).open_blocking(&path, &ro())?;
        let mut all = vec![0u8; model.len() + 1];
        assert_eq!(fresh.read_at(&mut all, 0)?, model.len());
        assert_bytes(&all[..model.len()], &model, "a fresh cache");
        Ok(())
    });
}

common::backend_test!(eight_threads_write_disjoint_ranges_and_read_them_back);
/// Eight plain threads (no runtime anywhere) share one `BlockingFile`, each writing its own
/// range in uneven pieces (neighbouring ranges share a page at each boundary) and reading it
/// back; then the whole file is right in the cache and, after `sync_all`, on disk.
fn eight_threads_write_disjoint_ranges_and_read_them_back(backend: Backend) {
    const THREADS: usize = 8;
    const RANGE: usize = 50_001;
    on(backend, || {
        let dir = scratch_dir();
        let path = dir.path().join("threads");
        // 64 frames (256 KiB) for 400 KB: eviction and writeback while the threads run.
        let cache = cache_on(backend, 64);
        let f = cache.open_blocking(&path, &rw())?;
        let want: Vec<Vec<u8>> = (0..THREADS)
            .map(|t| pattern(RANGE, 100 + t as u64))
            .collect();
        std::thread::scope(|s| {
            let threads: Vec<_> = (0..THREADS)
                .map(|t| {
                    let f = f.clone();
                    let data = &want[t];
                    s.spawn(move || -> io::Result<()> {
                        let base = (t * RANGE) as u64;
                        let mut rng = StdRng::seed_from_u64(t as u64);
                        let mut pos = 0;
                        while pos < RANGE {
                            let n = rng.gen_range(1..=9000).min(RANGE - pos);
                            f.write_all_at(&data[pos..pos + n], base + pos as u64)?;
                            pos += n;
                        }
                        f.sync_range(base, RANGE as u64)?;
                        let mut back = vec![0u8; RANGE];
                        f.read_exact_at(&mut back, base)?;
                        assert_bytes(&back, data, &format!("thread {t}'s range"));
                        Ok(())
                    })
                })
                .collect();
            for (t, th) in threads.into_iter().enumerate() {
                th.join()
                    .unwrap_or_else(|_| panic!("thread {t} panicked"))
                    .unwrap_or_else(|e| panic!("thread {t}: {e}"));
            }
        });
        let whole = want.concat();
        assert_eq!(f.len(), whole.len() as u64);
        let mut back = vec![0u8; whole.len()];
        f.read_exact_at(&mut back, 0)?;
        assert_bytes(&back, &whole, "the whole file");
        f.sync_all()?;
        assert_bytes(&common::read_disk(&path)?, &whole, "disk");
        Ok(())
    });
}

common::backend_test!(blocking_and_async_handles_of_one_file_see_each_others_writes);
/// A `BlockingFile` and the async `File` of the same file — the same handle (`File::blocking`,
/// `BlockingFile::file`) and a second handle of the file (`Cache::open_blocking`) — see each
/// other's writes, lengths and syncs at once.
fn blocking_and_async_handles_of_one_file_see_each_others_writes(backend: Backend) {
    on(backend, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let dir = scratch_dir();
        let (path, mut model) = make_file(dir.path(), "mixed", 10_000, 9);
        let cache = cache_on(backend, 64);
        let file = rt.block_on(cache.open(&path, &rw()))?;
        let same = file.blocking();
        let other = cache.open_blocking(&path, &rw())?;

        // Blocking writes on another thread, seen by the async handle.
        let a = pattern(6000, 1);
        std::thread::scope(|s| s.spawn(|| same.write_all_at(&a, 7000)).join().unwrap())?;
        model.resize(13_000, 0);
        model[7000..].copy_from_slice(&a);
        assert_eq!(file.len(), 13_000);
        let mut buf = vec![0u8; 13_000];
        rt.block_on(file.read_exact_at(&mut buf, 0))?;
        assert_bytes(&buf, &model, "async read of a blocking write");

        // Async writes, seen by both blocking handles.
        let b = pattern(5000, 2);
        rt.block_on(file.write_all_at(&b, 100))?;
        model[100..5100].copy_from_slice(&b);
        for (name, bf) in [("same", &same), ("other", &other)] {
            std::thread::scope(|s| {
                s.spawn(|| -> io::Result<()> {
                    let mut buf = vec![0u8; 13_000];
                    bf.read_exact_at(&mut buf, 0)?;
                    assert_bytes(
                        &buf,
                        &model,
                        &format!("blocking read ({name}) of an async write"),
                    );
                    Ok(())
                })
                .join()
                .unwrap()
            })?;
        }

        // A cut through one, seen by the others; a sync through the async handle of the
        // blocking one's file.
        other.set_len(3000)?;
        model.truncate(3000);
        assert_eq!(
            (file.len(), same.len(), same.file().len()),
            (3000, 3000, 3000)
        );
        let mut tail = [0u8; 100];
        assert_eq!(rt.block_on(file.read_at(&mut tail, 2990))?, 10);
        rt.block_on(same.file().write_all_at(b"via file()", 3000))?;
        model.extend_from_slice(b"via file()");
        let mut got = [0u8; 10];
        other.read_exact_at(&mut got, 3000)?;
        assert_eq!(&got, b"via file()");
        rt.block_on(other.file().sync_all())?;
        assert_bytes(&common::read_disk(&path)?, &model, "disk");
        Ok(())
    });
}

common::backend_test!(file_ext_works_generically);
/// Code generic over `FileExt` gets the same answers from a `BlockingFile` as from a
/// `std::fs::File`, including end of file and `UnexpectedEof`.
fn file_ext_works_generically(backend: Backend) {
    /// Writes, reads back, reads at and past the end; returns what it saw.
    fn exercise<T: FileExt>(t: &T) -> io::Result<(Vec<u8>, usize, usize, io::ErrorKind)> {
        let data = pattern(10_000, 5);
        t.write_all_at(&data, 1000)?;
        assert_eq!(t.write_at(b"xyz", 50)?, 3);
        let mut buf = vec![0u8; 11_000];
        t.read_exact_at(&mut buf, 0)?;
        let mut tail = [0u8; 100];
        let at_end = t.read_at(&mut tail, 10_950)?;
        let past = t.read_at(&mut tail, 20_000)?;
        let eof = t.read_exact_at(&mut tail, 10_990).unwrap_err().kind();
        Ok((buf, at_end, past, eof))
    }

    on(backend, || {
        let dir = scratch_dir();
        let std_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("std"))?;
        let cached = cache_on(backend, 16).open_blocking(dir.path().join("cached"), &rw())?;
        let want = exercise(&std_file)?;
        let got = exercise(&cached)?;
        assert_bytes(&got.0, &want.0, "bytes");
        assert_eq!((got.1, got.2, got.3), (want.1, want.2, want.3));
        assert_eq!((got.1, got.2), (50, 0));
        assert_eq!(got.3, io::ErrorKind::UnexpectedEof);
        // Through the trait, the messages are the cache's, as from the inherent methods.
        let mut tail = [0u8; 100];
        let by_trait = FileExt::read_exact_at(&cached, &mut tail, 10_990).unwrap_err();
        let inherent = cached.read_exact_at(&mut tail, 10_990).unwrap_err();
        assert_eq!(by_trait.to_string(), inherent.to_string());
        Ok(())
    });
}

common::backend_test!(pages_from_a_thread);
/// `page()` and `page_mut()` work from a thread, and the pinned handle may move to another.
fn pages_from_a_thread(backend: Backend) {
    on(backend, || {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "pages", 3 * 4096 + 10, 7);
        let cache = cache_on(backend, 16);
        let f = cache.open_blocking(&path, &rw())?;
        let page = std::thread::scope(|s| s.spawn(|| f.page(1)).join().unwrap())?;
        assert_eq!(page.index(), 1);
        assert_bytes(&page, &data[4096..8192], "page 1 from a thread");
        std::thread::scope(|s| {
            s.spawn(|| -> io::Result<()> {
                let mut p = f.page_mut(1)?;
                p[..5].copy_from_slice(b"PAGE1");
                Ok(())
            })
            .join()
            .unwrap()
        })?;
        assert_eq!(
            &page[..5],
            b"PAGE1",
            "the pinned page is a view of the cached one"
        );
        let tail = std::thread::scope(|s| s.spawn(|| f.page(3)).join().unwrap())?;
        assert_bytes(&tail[..10], &data[3 * 4096..], "the tail page");
        assert!(tail[10..].iter().all(|&b| b == 0), "past the end: zeros");
        drop((page, tail));
        f.sync_all()?;
        let mut want = data.clone();
        want[4096..4101].copy_from_slice(b"PAGE1");
        assert_bytes(&common::read_disk(&path)?, &want, "disk");
        Ok(())
    });
}

common::backend_test!(errors_are_those_of_the_async_methods);
/// The errors are those of the async methods, kind and message: reading a write-only handle,
/// writing a read-only one, a missing file, `try_read_at` of an uncached page; a read past
/// the end is 0, not an error.
fn errors_are_those_of_the_async_methods(backend: Backend) {
    fn same(blocking: io::Error, asynch: io::Error, kind: io::ErrorKind, what: &str) {
        assert_eq!(blocking.kind(), kind, "{what}: {blocking}");
        assert_eq!(asynch.kind(), kind, "{what}: {asynch}");
        assert_eq!(blocking.to_string(), asynch.to_string(), "{what}");
    }

    on(backend, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let dir = scratch_dir();
        let (path, _) = make_file(dir.path(), "errs", 10_000, 3);
        let cache = cache_on(backend, 16);
        let mut buf = [0u8; 100];

        let wo = cache.open_blocking(&path, &write_only())?;
        same(
            wo.read_at(&mut buf, 0).unwrap_err(),
            rt.block_on(wo.file().read_at(&mut buf, 0)).unwrap_err(),
            io::ErrorKind::PermissionDenied,
            "read on a write-only handle",
        );
        assert!(wo
            .page(0)
            .is_err_and(|e| e.kind() == io::ErrorKind::PermissionDenied));
        assert!(wo
            .read_exact_at(&mut buf, 0)
            .is_err_and(|e| e.kind() == io::ErrorKind::PermissionDenied));

        let ro_file = cache.open_blocking(&path, &ro())?;
        same(
            ro_file.write_all_at(b"x", 0).unwrap_err(),
            rt.block_on(ro_file.file().write_all_at(b"x", 0))
                .unwrap_err(),
            io::ErrorKind::PermissionDenied,
            "write on a read-only handle",
        );
        same(
            ro_file.set_len(1).unwrap_err(),
            rt.block_on(ro_file.file().set_len(1)).unwrap_err(),
            io::ErrorKind::PermissionDenied,
            "set_len on a read-only handle",
        );
        same(
            ro_file.try_read_at(&mut buf, 0).unwrap_err(),
            ro_file.file().try_read_at(&mut buf, 0).unwrap_err(),
            io::ErrorKind::WouldBlock,
            "try_read_at of an uncached page",
        );
        same(
            ro_file.read_at(&mut buf, u64::MAX - 10).unwrap_err(),
            rt.block_on(ro_file.file().read_at(&mut buf, u64::MAX - 10))
                .unwrap_err(),
            io::ErrorKind::InvalidInput,
            "a read whose end overflows",
        );
        assert_eq!(ro_file.read_at(&mut buf, 10_000)?, 0, "read at the end");
        assert_eq!(ro_file.read_at(&mut buf, 1 << 40)?, 0, "read past the end");
        assert_eq!(ro_file.read_at(&mut buf, 9_990)?, 10, "read across the end");
        same(
            ro_file.read_exact_at(&mut buf, 9_990).unwrap_err(),
            rt.block_on(ro_file.file().read_exact_at(&mut buf, 9_990))
                .unwrap_err(),
            io::ErrorKind::UnexpectedEof,
            "read_exact_at across the end",
        );

        let missing = dir.path().join("missing");
        same(
            cache.open_blocking(&missing, &ro()).unwrap_err(),
            rt.block_on(cache.open(&missing, &ro())).unwrap_err(),
            io::ErrorKind::NotFound,
            "open of a missing file",
        );
        same(
            cache.open_blocking(dir.path(), &ro()).unwrap_err(),
            rt.block_on(cache.open(dir.path(), &ro())).unwrap_err(),
            io::ErrorKind::InvalidInput,
            "open of a directory",
        );
        Ok(())
    });
}

common::backend_test!(from_a_current_thread_runtime);
/// From a tokio current-thread runtime: calls under `spawn_blocking` work, and so does a
/// call made in the task itself (it blocks the worker, but the backend, not the runtime,
/// completes the I/O).
fn from_a_current_thread_runtime(backend: Backend) {
    on(backend, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "rt", 100_000, 11);
        let cache = cache_on(backend, 16);
        rt.block_on(async {
            let f: BlockingFile = {
                let (cache, path) = (cache.clone(), path.clone());
                tokio::task::spawn_blocking(move || cache.open_blocking(&path, &rw()))
                    .await
                    .expect("spawn_blocking")?
            };
            let g = f.clone();
            let back = tokio::task::spawn_blocking(move || -> io::Result<Vec<u8>> {
                g.write_all_at(b"blocking", 50_000)?;
                g.sync_data()?;
                let mut buf = vec![0u8; 100_000];
                g.read_exact_at(&mut buf, 0)?;
                Ok(buf)
            })
            .await
            .expect("spawn_blocking")?;
            let mut want = data.clone();
            want[50_000..50_008].copy_from_slice(b"blocking");
            assert_bytes(&back, &want, "read under spawn_blocking");
            // In the task itself, a miss (page 0 dropped first): the backend completes it.
            f.invalidate(0, 4096)?;
            let misses = cache.stats().misses;
            let mut head = [0u8; 16];
            f.read_exact_at(&mut head, 0)?;
            assert_eq!(head, want[..16]);
            assert_eq!(
                cache.stats().misses,
                misses + 1,
                "a miss, read from the device"
            );
            f.file().sync_all().await?;
            io::Result::Ok(())
        })?;
        assert_bytes(
            &common::read_disk(Path::new(&path))?,
            &{
                let mut want = data;
                want[50_000..50_008].copy_from_slice(b"blocking");
                want
            },
            "disk",
        );
        Ok(())
    });
}

common::backend_test!(shutdown_blocking_writes_back_and_stops_the_cache);
/// `Cache::shutdown_blocking` writes back what was not synced, a second call is `Ok`, and
/// later calls fail as after the async `shutdown`, with its message.
fn shutdown_blocking_writes_back_and_stops_the_cache(backend: Backend) {
    on(backend, || {
        let dir = scratch_dir();
        let path = dir.path().join("shut");
        let cache = cache_on(backend, 16);
        let f = cache.open_blocking(&path, &rw())?;
        let data = pattern(20_000, 4);
        f.write_all_at(&data, 0)?;
        cache.shutdown_blocking()?;
        assert_bytes(&common::read_disk(&path)?, &data, "disk after shutdown");
        cache.shutdown_blocking()?;
        let rt = tokio::runtime::Builder::new_current_thread().build()?;
        let mut buf = [0u8; 10];
        let blocking = f.read_at(&mut buf, 0).unwrap_err();
        let asynch = rt.block_on(f.file().read_at(&mut buf, 0)).unwrap_err();
        assert_eq!(blocking.to_string(), asynch.to_string());
        assert!(blocking.to_string().contains("shut down"), "{blocking}");
        assert!(cache.open_blocking(&path, &rw()).is_err());
        Ok(())
    });
}
