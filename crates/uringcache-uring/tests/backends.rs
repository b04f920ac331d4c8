//! Both backends against real files in /tmp opened with O_DIRECT. Every test is written once,
//! generic over the backend, and instantiated for io_uring (fixed buffers and files; plain
//! vectored I/O and descriptors; a tiny ring that forces requests to wait for room) and for
//! the thread pool. Completions report through channels: no test sleeps to wait for I/O.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use uringcache_core::backend::{Backend, FileId, Op, Request};
use uringcache_core::frames::FrameArena;
use uringcache_core::page::FrameId;
use uringcache_uring::{dio_alignment, open_direct, ThreadsBackend, UringBackend, UringConfig};

const PAGE: usize = 4096;
const FRAMES: usize = 64;
/// Generous bound on a wait for completions, so a bug fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(60);

/// The byte at file position `pos` of every test file.
fn pattern(pos: u64) -> u8 {
    (pos.wrapping_mul(31) ^ (pos / PAGE as u64).wrapping_mul(7)) as u8
}

fn pattern_bytes(start: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| pattern(start + i)).collect()
}

struct Harness {
    arena: Arc<FrameArena>,
    backend: Arc<dyn Backend>,
    dir: tempfile::TempDir,
}

fn arena() -> Arc<FrameArena> {
    Arc::new(FrameArena::new(FRAMES, PAGE).unwrap())
}

fn harness(
    backend: impl FnOnce(Arc<FrameArena>) -> io::Result<Arc<dyn Backend>>,
) -> Option<Harness> {
    let arena = arena();
    let backend = match backend(Arc::clone(&arena)) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("skipping: backend unavailable here: {e}");
            return None;
        }
    };
    Some(Harness {
        arena,
        backend,
        dir: tempfile::tempdir_in("/tmp").unwrap(),
    })
}

fn uring(config: UringConfig) -> Option<Harness> {
    if let Err(e) = UringBackend::probe() {
        eprintln!("skipping io_uring test: {e}");
        return None;
    }
    harness(|arena| Ok(Arc::new(UringBackend::new(arena, config)?) as Arc<dyn Backend>))
}

fn uring_fixed() -> Option<Harness> {
    uring(UringConfig::default())
}

fn uring_plain() -> Option<Harness> {
    uring(UringConfig {
        register_buffers: false,
        register_files: false,
        ..UringConfig::default()
    })
}

fn uring_tiny() -> Option<Harness> {
    uring(UringConfig {
        entries: 2,
        ..UringConfig::default()
    })
}

fn threads() -> Option<Harness> {
    harness(|arena| Ok(Arc::new(ThreadsBackend::new(arena, 3)?) as Arc<dyn Backend>))
}

/// A file in the harness's directory holding `len` pattern bytes, written by std::fs, opened
/// with O_DIRECT and registered.
struct TestFile {
    path: PathBuf,
    fd: OwnedFd,
    id: FileId,
}

impl Harness {
    fn file(&self, name: &str, len: usize) -> TestFile {
        let path = self.dir.path().join(name);
        std::fs::write(&path, pattern_bytes(0, len)).unwrap();
        self.open(&path)
    }

    fn open(&self, path: &Path) -> TestFile {
        let fd = open_direct(path, true, true, true, false).unwrap();
        let id = self.backend.register(fd.as_raw_fd()).unwrap();
        TestFile {
            path: path.to_owned(),
            fd,
            id,
        }
    }

    fn close(&self, file: TestFile) {
        self.backend.unregister(file.id);
        drop(file.fd);
    }

    /// Submits `ops` as one batch and waits for all their results, in order.
    fn run(&self, ops: Vec<(FileId, Op)>) -> Vec<io::Result<usize>> {
        run_on(&*self.backend, ops)
    }

    fn frame(&self, f: FrameId) -> Vec<u8> {
        // SAFETY: the test owns every frame; no I/O on `f` is in flight.
        unsafe { self.arena.frame(f).to_vec() }
    }

    fn fill(&self, f: FrameId, start: u64) {
        // SAFETY: as above.
        unsafe {
            self.arena
                .frame_mut(f)
                .copy_from_slice(&pattern_bytes(start, PAGE))
        }
    }

    fn clear(&self, frames: &[FrameId]) {
        for &f in frames {
            // SAFETY: as above.
            unsafe { self.arena.frame_mut(f).fill(0xAA) }
        }
    }
}

fn run_on(backend: &dyn Backend, ops: Vec<(FileId, Op)>) -> Vec<io::Result<usize>> {
    let (tx, rx) = mpsc::channel();
    let n = ops.len();
    let mut batch: Vec<Request> = ops
        .into_iter()
        .enumerate()
        .map(|(i, (file, op))| {
            let tx = tx.clone();
            Request {
                file,
                op,
                done: Box::new(move |r| {
                    let _ = tx.send((i, r));
                }),
            }
        })
        .collect();
    // SAFETY: the harness's frames are the test's; it looks at them only after the
    // completions arrive.
    unsafe { backend.submit(&mut batch) };
    assert!(batch.is_empty(), "submit must drain the batch");
    let mut out: Vec<Option<io::Result<usize>>> = (0..n).map(|_| None).collect();
    for _ in 0..n {
        let (i, r) = rx.recv_timeout(WAIT).expect("a completion never arrived");
        assert!(out[i].is_none(), "completion {i} called twice");
        out[i] = Some(r);
    }
    out.into_iter().map(Option::unwrap).collect()
}

fn read(file: FileId, offset: u64, frames: Vec<FrameId>, len: usize) -> (FileId, Op) {
    (
        file,
        Op::Read {
            offset,
            frames,
            len,
        },
    )
}

fn write(file: FileId, offset: u64, frames: Vec<FrameId>, len: usize) -> (FileId, Op) {
    (
        file,
        Op::Write {
            offset,
            frames,
            len,
            dsync: false,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// The tests, written once.

fn read_single_pages(h: Harness) {
    let f = h.file("single", 16 * PAGE);
    h.clear(&[3, 10, 63]);
    let res = h.run(vec![
        read(f.id, 0, vec![3], PAGE),
        read(f.id, 5 * PAGE as u64, vec![10], PAGE),
        read(f.id, 15 * PAGE as u64, vec![63], PAGE),
    ]);
    for r in &res {
        assert_eq!(*r.as_ref().unwrap(), PAGE);
    }
    assert_eq!(h.frame(3), pattern_bytes(0, PAGE));
    assert_eq!(h.frame(10), pattern_bytes(5 * PAGE as u64, PAGE));
    assert_eq!(h.frame(63), pattern_bytes(15 * PAGE as u64, PAGE));
    let s = h.backend.stats();
    assert_eq!(s.reads, 3);
    assert_eq!(s.read_bytes, 3 * PAGE as u64);
    assert_eq!(s.errors, 0);
    h.close(f);
}

fn read_consecutive_run(h: Harness) {
    let f = h.file("run", 16 * PAGE);
    let frames: Vec<FrameId> = (20..28).collect();
    h.clear(&frames);
    let res = h.run(vec![read(f.id, 4 * PAGE as u64, frames.clone(), 8 * PAGE)]);
    assert_eq!(*res[0].as_ref().unwrap(), 8 * PAGE);
    for (i, &fr) in frames.iter().enumerate() {
        assert_eq!(h.frame(fr), pattern_bytes(((4 + i) * PAGE) as u64, PAGE));
    }
    h.close(f);
}

fn read_vectored(h: Harness) {
    let f = h.file("vectored", 16 * PAGE);
    let frames: Vec<FrameId> = vec![7, 2, 40, 41, 9];
    h.clear(&frames);
    let res = h.run(vec![read(f.id, 3 * PAGE as u64, frames.clone(), 5 * PAGE)]);
    assert_eq!(*res[0].as_ref().unwrap(), 5 * PAGE);
    for (i, &fr) in frames.iter().enumerate() {
        assert_eq!(h.frame(fr), pattern_bytes(((3 + i) * PAGE) as u64, PAGE));
    }
    h.close(f);
}

fn read_at_end_of_file(h: Harness) {
    let size = 10 * PAGE + 1000;
    let f = h.file("eof", size);
    h.clear(&[0, 1, 2, 3, 30, 32, 34, 36, 50]);
    let res = h.run(vec![
        // Consecutive frames (the fixed path on io_uring), straddling the end.
        read(f.id, 8 * PAGE as u64, vec![0, 1, 2, 3], 4 * PAGE),
        // Scattered frames (vectored), straddling the end.
        read(f.id, 8 * PAGE as u64, vec![30, 32, 34, 36], 4 * PAGE),
        // Entirely past the end.
        read(f.id, 12 * PAGE as u64, vec![50], PAGE),
    ]);
    let to_eof = size - 8 * PAGE;
    assert_eq!(*res[0].as_ref().unwrap(), to_eof);
    assert_eq!(*res[1].as_ref().unwrap(), to_eof);
    assert_eq!(*res[2].as_ref().unwrap(), 0);
    let want = pattern_bytes(8 * PAGE as u64, to_eof);
    let got0: Vec<u8> = [0, 1, 2].iter().flat_map(|&fr| h.frame(fr)).collect();
    let got1: Vec<u8> = [30, 32, 34].iter().flat_map(|&fr| h.frame(fr)).collect();
    assert_eq!(&got0[..to_eof], &want[..]);
    assert_eq!(&got1[..to_eof], &want[..]);
    h.close(f);
}

fn write_then_read_back(h: Harness) {
    let f = h.file("write", 0);
    // Consecutive frames at 0..3 pages, scattered frames at 4..7 pages.
    for (i, fr) in [11u32, 12, 13].into_iter().enumerate() {
        h.fill(fr, (i * PAGE) as u64);
    }
    for (i, fr) in [44u32, 5, 60].into_iter().enumerate() {
        h.fill(fr, ((4 + i) * PAGE) as u64);
    }
    h.fill(33, 3 * PAGE as u64);
    let res = h.run(vec![
        write(f.id, 0, vec![11, 12, 13], 3 * PAGE),
        write(f.id, 4 * PAGE as u64, vec![44, 5, 60], 3 * PAGE),
        write(f.id, 3 * PAGE as u64, vec![33], PAGE),
    ]);
    assert_eq!(*res[0].as_ref().unwrap(), 3 * PAGE);
    assert_eq!(*res[1].as_ref().unwrap(), 3 * PAGE);
    assert_eq!(*res[2].as_ref().unwrap(), PAGE);
    let res = h.run(vec![(f.id, Op::Fsync { datasync: false })]);
    res[0].as_ref().unwrap();
    let on_disk = std::fs::read(&f.path).unwrap();
    assert_eq!(on_disk.len(), 7 * PAGE);
    assert!(
        on_disk == pattern_bytes(0, 7 * PAGE),
        "written bytes differ"
    );
    let s = h.backend.stats();
    assert_eq!(s.writes, 3);
    assert_eq!(s.write_bytes, 7 * PAGE as u64);
    h.close(f);
}

fn fsync_and_fdatasync(h: Harness) {
    let f = h.file("fsync", 4 * PAGE);
    h.fill(8, 0);
    let res = h.run(vec![write(f.id, 0, vec![8], PAGE)]);
    res[0].as_ref().unwrap();
    let res = h.run(vec![
        (f.id, Op::Fsync { datasync: true }),
        (f.id, Op::Fsync { datasync: false }),
    ]);
    for r in res {
        assert_eq!(r.unwrap(), 0);
    }
    let s = h.backend.stats();
    assert_eq!(s.fsyncs, 2);
    assert_eq!(s.errors, 0);
    h.close(f);
}

fn truncate(h: Harness) {
    let f = h.file("truncate", 8 * PAGE);
    let res = h.run(vec![(f.id, Op::Truncate { len: 5000 })]);
    assert_eq!(res[0].as_ref().unwrap(), &0);
    assert_eq!(std::fs::metadata(&f.path).unwrap().len(), 5000);
    let res = h.run(vec![(
        f.id,
        Op::Truncate {
            len: 3 * PAGE as u64,
        },
    )]);
    res[0].as_ref().unwrap();
    assert_eq!(std::fs::metadata(&f.path).unwrap().len(), 3 * PAGE as u64);
    // The grown part reads back as zeroes, the kept part as before.
    h.clear(&[0, 1, 2]);
    let res = h.run(vec![read(f.id, 0, vec![0, 1, 2], 3 * PAGE)]);
    assert_eq!(*res[0].as_ref().unwrap(), 3 * PAGE);
    assert_eq!(h.frame(0), pattern_bytes(0, PAGE));
    let f1 = h.frame(1);
    assert_eq!(
        &f1[..5000 - PAGE],
        &pattern_bytes(PAGE as u64, 5000 - PAGE)[..]
    );
    assert!(f1[5000 - PAGE..].iter().all(|&b| b == 0));
    assert!(h.frame(2).iter().all(|&b| b == 0));
    h.close(f);
}

fn many_concurrent_readers(h: Harness) {
    const THREADS: usize = 8;
    const READS: usize = 200;
    const PAGES: u64 = 48;
    let f = h.file("concurrent", PAGES as usize * PAGE);
    let h = Arc::new(h);
    let id = f.id;
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let h = Arc::clone(&h);
            std::thread::spawn(move || {
                // Each thread owns 8 frames and reads batches of up to 8 pages into them.
                let mine: Vec<FrameId> = (t as u32 * 8..t as u32 * 8 + 8).collect();
                let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ t as u64;
                let mut done = 0;
                while done < READS {
                    let n = (1 + (seed >> 60) as usize % 8).min(READS - done);
                    let mut ops = Vec::with_capacity(n);
                    let mut pages = Vec::with_capacity(n);
                    for &fr in &mine[..n] {
                        seed = seed
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let page = (seed >> 33) % PAGES;
                        pages.push(page);
                        ops.push(read(id, page * PAGE as u64, vec![fr], PAGE));
                    }
                    for r in h.run(ops) {
                        assert_eq!(r.unwrap(), PAGE);
                    }
                    for (fr, page) in mine.iter().zip(&pages) {
                        assert!(
                            h.frame(*fr) == pattern_bytes(page * PAGE as u64, PAGE),
                            "thread {t}: frame {fr} does not hold page {page}"
                        );
                    }
                    done += n;
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let s = h.backend.stats();
    assert_eq!(s.reads, (THREADS * READS) as u64);
    assert_eq!(s.errors, 0);
    h.backend.unregister(f.id);
}

fn large_batch(h: Harness) {
    // More requests in one batch than a tiny ring can hold in flight.
    let f = h.file("batch", FRAMES * PAGE);
    let frames: Vec<FrameId> = (0..FRAMES as u32).collect();
    h.clear(&frames);
    let ops = frames
        .iter()
        .map(|&fr| {
            read(
                f.id,
                (FRAMES as u64 - 1 - fr as u64) * PAGE as u64,
                vec![fr],
                PAGE,
            )
        })
        .collect();
    for r in h.run(ops) {
        assert_eq!(r.unwrap(), PAGE);
    }
    for &fr in &frames {
        assert_eq!(
            h.frame(fr),
            pattern_bytes((FRAMES as u64 - 1 - fr as u64) * PAGE as u64, PAGE)
        );
    }
    h.close(f);
}

fn bad_requests_fail_cleanly(h: Harness) {
    let f = h.file("bad", 4 * PAGE);
    let res = h.run(vec![
        read(FileId(999), 0, vec![0], PAGE),
        read(f.id, 0, vec![FRAMES as u32 + 5], PAGE),
        read(f.id, 0, vec![0], 2 * PAGE),
        read(f.id, 0, vec![0], 0),
        // Misaligned O_DIRECT offset: the kernel refuses it.
        read(f.id, 100, vec![1], PAGE),
    ]);
    let msg = res[0].as_ref().unwrap_err().to_string();
    assert!(msg.contains("not registered"), "{msg}");
    assert_eq!(
        res[1].as_ref().unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        res[2].as_ref().unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(*res[3].as_ref().unwrap(), 0);
    assert_eq!(
        res[4].as_ref().unwrap_err().raw_os_error(),
        Some(libc::EINVAL)
    );
    assert_eq!(h.backend.stats().errors, 4);
    h.close(f);
}

fn completion_submits_more(h: Harness) {
    // A completion that submits the next read (as the cache's readahead does).
    let f = h.file("chain", 8 * PAGE);
    let (tx, rx) = mpsc::channel();
    let backend = Arc::clone(&h.backend);
    let id = f.id;
    let mut batch = vec![Request {
        file: id,
        op: Op::Read {
            offset: 0,
            frames: vec![1],
            len: PAGE,
        },
        done: Box::new(move |r| {
            r.unwrap();
            let tx2 = tx.clone();
            let mut next = vec![Request {
                file: id,
                op: Op::Read {
                    offset: PAGE as u64,
                    frames: vec![2],
                    len: PAGE,
                },
                done: Box::new(move |r| {
                    let _ = tx2.send(r);
                }),
            }];
            // SAFETY: frame 2 is the test's, read only after this completion arrives.
            unsafe { backend.submit(&mut next) };
        }),
    }];
    // SAFETY: frames 1 and 2 are the test's, read only after the completions arrive.
    unsafe { h.backend.submit(&mut batch) };
    assert_eq!(rx.recv_timeout(WAIT).unwrap().unwrap(), PAGE);
    assert_eq!(h.frame(1), pattern_bytes(0, PAGE));
    assert_eq!(h.frame(2), pattern_bytes(PAGE as u64, PAGE));
    h.close(f);
}

fn submit_after_shutdown_errors(h: Harness) {
    let f = h.file("shutdown", 4 * PAGE);
    let res = h.run(vec![read(f.id, 0, vec![0], PAGE)]);
    res[0].as_ref().unwrap();
    h.backend.shutdown();
    h.backend.shutdown(); // idempotent
    let res = h.run(vec![
        read(f.id, 0, vec![0], PAGE),
        (f.id, Op::Fsync { datasync: false }),
    ]);
    for r in res {
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("shut down"), "{msg}");
    }
    let e = h.backend.register(f.fd.as_raw_fd()).unwrap_err();
    assert!(e.to_string().contains("shut down"), "{e}");
    h.close(f);
}

fn shutdown_waits_for_in_flight(h: Harness) {
    let f = h.file("drain", 32 * PAGE);
    let (tx, rx) = mpsc::channel();
    let mut batch: Vec<Request> = (0..32u32)
        .map(|i| {
            let tx = tx.clone();
            Request {
                file: f.id,
                op: Op::Read {
                    offset: i as u64 * PAGE as u64,
                    frames: vec![i],
                    len: PAGE,
                },
                done: Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            }
        })
        .collect();
    // SAFETY: the harness's frames, untouched until the completions arrive.
    unsafe { h.backend.submit(&mut batch) };
    h.backend.shutdown();
    drop(tx);
    // Every completion ran before shutdown returned.
    let results: Vec<_> = rx.try_iter().collect();
    assert_eq!(results.len(), 32);
    for r in results {
        assert_eq!(r.unwrap(), PAGE);
    }
    h.close(f);
}

fn alignment_is_sane(h: Harness) {
    let f = h.file("align", PAGE);
    let a = dio_alignment(f.fd.as_fd()).unwrap();
    assert!(a.is_power_of_two() && a >= 512 && a as usize <= PAGE, "{a}");
    h.close(f);
}

macro_rules! backend_tests {
    ($module:ident, $make:expr) => {
        mod $module {
            use super::*;

            fn with(test: fn(Harness)) {
                if let Some(h) = $make() {
                    test(h);
                }
            }

            #[test]
            fn read_single_pages() {
                with(super::read_single_pages)
            }
            #[test]
            fn read_consecutive_run() {
                with(super::read_consecutive_run)
            }
            #[test]
            fn read_vectored() {
                with(super::read_vectored)
            }
            #[test]
            fn read_at_end_of_file() {
                with(super::read_at_end_of_file)
            }
            #[test]
            fn write_then_read_back() {
                with(super::write_then_read_back)
            }
            #[test]
            fn fsync_and_fdatasync() {
                with(super::fsync_and_fdatasync)
            }
            #[test]
            fn truncate() {
                with(super::truncate)
            }
            #[test]
            fn many_concurrent_readers() {
                with(super::many_concurrent_readers)
            }
            #[test]
            fn large_batch() {
                with(super::large_batch)
            }
            #[test]
            fn bad_requests_fail_cleanly() {
                with(super::bad_requests_fail_cleanly)
            }
            #[test]
            fn completion_submits_more() {
                with(super::completion_submits_more)
            }
            #[test]
            fn submit_after_shutdown_errors() {
                with(super::submit_after_shutdown_errors)
            }
            #[test]
            fn shutdown_waits_for_in_flight() {
                with(super::shutdown_waits_for_in_flight)
            }
            #[test]
            fn alignment_is_sane() {
                with(super::alignment_is_sane)
            }
        }
    };
}

backend_tests!(uring_fixed_buffers, uring_fixed);
backend_tests!(uring_unregistered, uring_plain);
backend_tests!(uring_tiny_ring, uring_tiny);
backend_tests!(thread_pool, threads);

// ---------------------------------------------------------------------------------------------
// io_uring specifics.

#[test]
fn uring_batch_is_one_submit_call() {
    let Some(h) = uring_fixed() else { return };
    let f = h.file("one-enter", 16 * PAGE);
    let before = h.backend.stats().submit_calls;
    let ops = (0..16u32)
        .map(|i| read(f.id, i as u64 * PAGE as u64, vec![i], PAGE))
        .collect();
    for r in h.run(ops) {
        assert_eq!(r.unwrap(), PAGE);
    }
    assert_eq!(h.backend.stats().submit_calls - before, 1);
    h.close(f);
}

#[test]
fn uring_config_and_probe() {
    let c = UringConfig::default();
    assert_eq!(c.entries, 256);
    assert!(!c.sqpoll && c.register_buffers && c.register_files);
    if let Err(e) = UringBackend::probe() {
        eprintln!("skipping io_uring test: {e}");
        return;
    }
    let b = UringBackend::new(arena(), UringConfig::default()).unwrap();
    assert_eq!(b.name(), "io_uring");
    assert!(b.max_in_flight() >= 256);
    eprintln!(
        "fixed buffers: {}, fixed files: {}, ftruncate op: {}",
        b.uses_fixed_buffers(),
        b.uses_fixed_files(),
        b.uses_ftruncate_op()
    );
    let plain = UringBackend::new(
        arena(),
        UringConfig {
            register_buffers: false,
            register_files: false,
            ..UringConfig::default()
        },
    )
    .unwrap();
    assert!(!plain.uses_fixed_buffers() && !plain.uses_fixed_files());
    let e = UringBackend::new(
        arena(),
        UringConfig {
            entries: 0,
            ..UringConfig::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
}

/// Regions of the arena are registered as fixed buffers the first time a request touches
/// them (by the end of that `submit`), once each; runs inside one region, across two, and in
/// the last short region all move the right bytes, before and after their region is
/// registered.
#[test]
fn uring_registers_regions_on_first_use() {
    if let Err(e) = UringBackend::probe() {
        eprintln!("skipping io_uring test: {e}");
        return;
    }
    // Two and a half regions of 4 MiB.
    let frames = 2 * 1024 + 512;
    let arena = Arc::new(FrameArena::new(frames, PAGE).unwrap());
    let uring = Arc::new(UringBackend::new(Arc::clone(&arena), UringConfig::default()).unwrap());
    if !uring.uses_fixed_buffers() {
        eprintln!("skipping: no fixed-buffer table here");
        return;
    }
    let region = uring.fixed_buffer_region().unwrap();
    assert_eq!(region, 4 << 20);
    let per = (region / PAGE) as FrameId;
    let h = Harness {
        arena,
        backend: Arc::clone(&uring) as Arc<dyn Backend>,
        dir: tempfile::tempdir_in("/tmp").unwrap(),
    };
    let f = h.file("regions", 16 * PAGE);
    let registered = || {
        let bytes = uring.fixed_buffer_bytes();
        assert_eq!(h.backend.stats().fixed_buffer_bytes, bytes);
        bytes
    };
    assert_eq!(registered(), 0, "nothing is registered before any I/O");

    // Inside region 0: read (unregistered), and region 0 registered.
    let run: Vec<FrameId> = (5..9).collect();
    h.clear(&run);
    let res = h.run(vec![read(f.id, PAGE as u64, run.clone(), 4 * PAGE)]);
    assert_eq!(*res[0].as_ref().unwrap(), 4 * PAGE);
    for (i, &fr) in run.iter().enumerate() {
        assert_eq!(h.frame(fr), pattern_bytes(((1 + i) * PAGE) as u64, PAGE));
    }
    assert_eq!(registered(), region as u64);
    // Region 0 again (a fixed read now): nothing new.
    h.clear(&[0]);
    assert_eq!(
        *h.run(vec![read(f.id, 0, vec![0], PAGE)])[0]
            .as_ref()
            .unwrap(),
        PAGE
    );
    assert_eq!(h.frame(0), pattern_bytes(0, PAGE));
    assert_eq!(registered(), region as u64);

    // A run across the boundary of regions 0 and 1 (vectored I/O), which registers region 1.
    let across: Vec<FrameId> = (per - 2..per + 2).collect();
    h.clear(&across);
    let res = h.run(vec![read(f.id, 8 * PAGE as u64, across.clone(), 4 * PAGE)]);
    assert_eq!(*res[0].as_ref().unwrap(), 4 * PAGE);
    for (i, &fr) in across.iter().enumerate() {
        assert_eq!(h.frame(fr), pattern_bytes(((8 + i) * PAGE) as u64, PAGE));
    }
    assert_eq!(registered(), 2 * region as u64);

    // The last, short region: a write from it, read back into region 1 (fixed).
    let last = (frames - 1) as FrameId;
    h.fill(last, 3 * PAGE as u64);
    let res = h.run(vec![write(f.id, 12 * PAGE as u64, vec![last], PAGE)]);
    assert_eq!(*res[0].as_ref().unwrap(), PAGE);
    assert_eq!(registered(), (frames * PAGE) as u64, "the whole arena");
    h.clear(&[per + 7]);
    let res = h.run(vec![read(f.id, 12 * PAGE as u64, vec![per + 7], PAGE)]);
    assert_eq!(*res[0].as_ref().unwrap(), PAGE);
    assert_eq!(h.frame(per + 7), pattern_bytes(3 * PAGE as u64, PAGE));
    assert_eq!(h.backend.stats().errors, 0);
    h.close(f);

    // Without the table: nothing registered, ever.
    let plain = UringBackend::new(
        Arc::new(FrameArena::new(64, PAGE).unwrap()),
        UringConfig {
            register_buffers: false,
            ..UringConfig::default()
        },
    )
    .unwrap();
    assert_eq!(
        (plain.fixed_buffer_region(), plain.fixed_buffer_bytes()),
        (None, 0)
    );
}

#[test]
fn uring_sqpoll_reads() {
    let Some(h) = uring(UringConfig {
        sqpoll: true,
        ..UringConfig::default()
    }) else {
        return;
    };
    read_vectored(h);
}

#[test]
fn threads_backend_name() {
    let b = ThreadsBackend::new(arena(), 2).unwrap();
    assert_eq!(b.name(), "threads");
    b.shutdown();
    drop(b);
}
