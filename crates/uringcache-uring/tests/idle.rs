//! The backends' threads sleep when idle (foyer#1311: a completion thread spinning at 100 %).
//! Its own test binary, so that no other test's threads share the names looked at here.

use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use uringcache_core::backend::{Backend, Op, Request};
use uringcache_core::frames::FrameArena;
use uringcache_uring::{open_direct, ThreadsBackend, UringBackend, UringConfig};

/// CPU ticks (user + system) used so far by this process's threads whose name starts with
/// `prefix`, and how many such threads exist.
fn cpu_ticks(prefix: &str) -> (u64, usize) {
    let mut ticks = 0;
    let mut threads = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        ticks += fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        threads += 1;
    }
    (ticks, threads)
}

/// Does one read, then checks that the backend's threads use (almost) no CPU for a while.
fn assert_idle(backend: &dyn Backend, arena: &FrameArena, prefix: &str) {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let path = dir.path().join("idle");
    std::fs::write(&path, vec![5u8; 4096]).unwrap();
    let fd = open_direct(&path, true, false, false, false).unwrap();
    let id = backend.register(fd.as_raw_fd()).unwrap();
    let (tx, rx) = mpsc::channel();
    let mut batch = vec![Request {
        file: id,
        op: Op::Read {
            offset: 0,
            frames: vec![0],
            len: 4096,
        },
        done: Box::new(move |r| {
            let _ = tx.send(r);
        }),
    }];
    // SAFETY: frame 0 is this test's alone and untouched until the completion is received.
    unsafe { backend.submit(&mut batch) };
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(60)).unwrap().unwrap(),
        4096
    );
    // SAFETY: the read completed; nothing else touches frame 0.
    assert!(unsafe { arena.frame(0) }.iter().all(|&b| b == 5));

    let (before, threads) = cpu_ticks(prefix);
    assert!(threads > 0, "no thread named {prefix}*");
    // Not waiting for I/O: measuring that an idle backend stays idle.
    std::thread::sleep(Duration::from_millis(500));
    let (after, _) = cpu_ticks(prefix);
    // A spinning thread would use ~50 ticks (at 100 Hz) in that time.
    assert!(
        after - before <= 3,
        "{prefix} threads used {} ticks while idle",
        after - before
    );
    backend.unregister(id);
}

#[test]
fn idle_backends_sleep() {
    let arena = Arc::new(FrameArena::new(4, 4096).unwrap());
    let threads = ThreadsBackend::new(Arc::clone(&arena), 2).unwrap();
    assert_idle(&threads, &arena, "uringcache-io-");
    drop(threads);

    if let Err(e) = UringBackend::probe() {
        eprintln!("skipping the io_uring part: {e}");
        return;
    }
    let uring = UringBackend::new(Arc::clone(&arena), UringConfig::default()).unwrap();
    assert_idle(&uring, &arena, "uringcache-urin");
}
