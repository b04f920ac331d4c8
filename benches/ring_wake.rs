//! How fast can one thread wake another that is blocked in `io_uring_enter` on its own ring?
//! The choice behind the rings of blocking threads (`uringcache-uring`'s `thread_ring`): a
//! thread waiting in its ring for its own completions must also be woken by other threads (a
//! page another thread reads, a group commit another leads). Four ways, measured as ping-pong
//! round trips between two threads, each blocked in turn, contenders alternated (A B C D, three
//! rounds), medians printed:
//!
//! * `futex`: the waiter's ring has an `IORING_OP_FUTEX_WAIT` armed on a word; the waker
//!   stores to the word and calls `futex_wake` (what `thread_ring` does);
//! * `msg_ring`: the waker sends `IORING_OP_MSG_RING` from its own ring to the waiter's and
//!   waits there for the reply (the waker needs a ring: fine here, but a waker in general is
//!   any thread, often one without; each send also posts a CQE on the sender's ring);
//! * `eventfd`: the waiter's ring has a `READ` of an eventfd armed; the waker `write`s to it;
//! * `park`: no ring, `std::thread::park` / `unpark` (the floor: a plain futex hand-off).
//!
//! Run: `cargo bench --bench ring_wake` (about 10 s; `RING_WAKE_ONLY=futex` runs one way).
//! Results in BENCHMARKS.md.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use io_uring::{opcode, types, IoUring};

const TRIPS: usize = 20_000;
const ROUNDS: usize = 3;

/// A way of waking, by name, and its ping-pong.
type Way = (&'static str, fn() -> Duration);

fn ring() -> IoUring {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(16)
        .expect("io_uring with SINGLE_ISSUER | DEFER_TASKRUN (Linux 6.1)")
}

/// Pushes `sqe` and waits in the kernel for one completion, which it consumes.
fn submit_wait(ring: &mut IoUring, sqe: Option<io_uring::squeue::Entry>) -> u64 {
    if let Some(sqe) = sqe {
        // SAFETY: every buffer the entries name (futex words, eventfd buffers) lives on the
        // stack frame of the ping-pong that waits for them to complete.
        unsafe { ring.submission().push(&sqe).expect("room in the SQ") };
    }
    loop {
        ring.submit_and_wait(1).expect("io_uring_enter");
        if let Some(cqe) = ring.completion().next() {
            return cqe.user_data();
        }
    }
}

/// `TRIPS` round trips of one side: the first side wakes, then waits; the other waits, then
/// wakes.
fn ping_pong(first: bool, wake: impl Fn(), wait: &mut dyn FnMut()) {
    for _ in 0..TRIPS {
        if first {
            wake();
            wait();
        } else {
            wait();
            wake();
        }
    }
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: a plain system call on a live atomic's address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}

fn futex_wait_sqe(word: &AtomicU32) -> io_uring::squeue::Entry {
    // futex2 flags: 32-bit, private.
    opcode::FutexWait::new(word.as_ptr().cast_const(), 0, u32::MAX as u64, 0x02 | 128)
        .build()
        .user_data(1)
}

/// Round trips with futex waits armed in each side's ring.
fn futex_trips() -> Duration {
    let words = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
    let go = Arc::new(Barrier::new(2));
    let side = |me: usize, words: Arc<[AtomicU32; 2]>, go: Arc<Barrier>, first: bool| {
        move || {
            let mut ring = ring();
            go.wait();
            let start = Instant::now();
            let wake = || {
                words[1 - me].store(1, Ordering::Release);
                futex_wake(&words[1 - me]);
            };
            let mut wait = || loop {
                // Armed expecting 0: completes at once if the word is already 1.
                submit_wait(&mut ring, Some(futex_wait_sqe(&words[me])));
                if words[me].swap(0, Ordering::AcqRel) == 1 {
                    break;
                }
            };
            ping_pong(first, wake, &mut wait);
            start.elapsed()
        }
    };
    let b = std::thread::spawn(side(1, words.clone(), go.clone(), false));
    let a = side(0, words, go, true)();
    b.join().unwrap();
    a
}

/// Round trips with `MSG_RING` from one side's ring to the other's.
fn msg_ring_trips() -> Duration {
    let (fd_tx, fd_rx) = std::sync::mpsc::channel();
    let (back_tx, back_rx) = std::sync::mpsc::channel();
    let b = std::thread::spawn(move || {
        let mut ring = ring();
        fd_tx.send(ring.as_raw_fd()).unwrap();
        let a_fd: i32 = back_rx.recv().unwrap();
        for _ in 0..TRIPS {
            // The message from A (skipping the CQEs of this side's own sends).
            while submit_wait(&mut ring, None) != 1 {}
            let reply = opcode::MsgRingData::new(types::Fd(a_fd), 0, 2, None)
                .build()
                .user_data(9);
            // SAFETY: the entry names no buffer.
            unsafe { ring.submission().push(&reply).unwrap() };
            ring.submit().unwrap();
        }
    });
    let mut ring = ring();
    let b_fd = fd_rx.recv().unwrap();
    back_tx.send(ring.as_raw_fd()).unwrap();
    let start = Instant::now();
    for _ in 0..TRIPS {
        let ping = opcode::MsgRingData::new(types::Fd(b_fd), 0, 1, None)
            .build()
            .user_data(9);
        // Send, and wait for the reply (the send's own CQE comes first).
        let mut got = submit_wait(&mut ring, Some(ping));
        while got != 2 {
            got = submit_wait(&mut ring, None);
        }
    }
    let took = start.elapsed();
    b.join().unwrap();
    took
}

/// Round trips with an eventfd read armed in each side's ring, woken by `write`.
fn eventfd_trips() -> Duration {
    // SAFETY: plain system calls creating two eventfds, closed at the end.
    let fds: Arc<[i32; 2]> = Arc::new(unsafe { [libc::eventfd(0, 0), libc::eventfd(0, 0)] });
    let go = Arc::new(Barrier::new(2));
    let side = |me: usize, fds: Arc<[i32; 2]>, go: Arc<Barrier>, first: bool| {
        move || {
            let mut ring = ring();
            let mut buf = [0u8; 8];
            go.wait();
            let start = Instant::now();
            let wake = || {
                let one = 1u64.to_ne_bytes();
                // SAFETY: an 8-byte write to an eventfd this process owns.
                unsafe { libc::write(fds[1 - me], one.as_ptr().cast(), 8) };
            };
            let mut wait = || {
                let read = opcode::Read::new(types::Fd(fds[me]), buf.as_mut_ptr(), 8)
                    .build()
                    .user_data(3);
                submit_wait(&mut ring, Some(read));
            };
            ping_pong(first, wake, &mut wait);
            start.elapsed()
        }
    };
    let b = std::thread::spawn(side(1, fds.clone(), go.clone(), false));
    let a = side(0, fds.clone(), go, true)();
    b.join().unwrap();
    // SAFETY: closing the two eventfds made above, no longer used.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    a
}

/// Round trips with `park` / `unpark` (no ring).
fn park_trips() -> Duration {
    let flags = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
    let main = std::thread::current();
    let f2 = flags.clone();
    let b = std::thread::spawn(move || {
        for _ in 0..TRIPS {
            while f2[1].swap(0, Ordering::AcqRel) == 0 {
                std::thread::park();
            }
            f2[0].store(1, Ordering::Release);
            main.unpark();
        }
    });
    let bt = b.thread().clone();
    let start = Instant::now();
    for _ in 0..TRIPS {
        flags[1].store(1, Ordering::Release);
        bt.unpark();
        while flags[0].swap(0, Ordering::AcqRel) == 0 {
            std::thread::park();
        }
    }
    let took = start.elapsed();
    b.join().unwrap();
    took
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list of tests
    }
    let ways: [Way; 4] = [
        ("futex (FUTEX_WAIT armed in the ring)", futex_trips),
        ("msg_ring (MSG_RING from the waker's ring)", msg_ring_trips),
        ("eventfd (READ armed in the ring, write(2))", eventfd_trips),
        ("park/unpark (no ring)", park_trips),
    ];
    let only = std::env::var("RING_WAKE_ONLY").ok();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); ways.len()];
    for _ in 0..ROUNDS {
        for (i, (name, f)) in ways.iter().enumerate() {
            if only.as_deref().is_some_and(|o| !name.starts_with(o)) {
                times[i].push(f64::NAN);
                continue;
            }
            times[i].push(f().as_secs_f64() / TRIPS as f64 * 1e6);
        }
    }
    println!("one-way wake of a thread blocked in io_uring_enter (half a round trip), median of {ROUNDS} rounds of {TRIPS} round trips:");
    for (i, (name, _)) in ways.iter().enumerate() {
        let mut t = times[i].clone();
        t.sort_by(f64::total_cmp);
        println!(
            "  {name:<45} {:>6.2} µs   (rounds: {})",
            t[t.len() / 2] / 2.0,
            times[i]
                .iter()
                .map(|x| format!("{:.2}", x / 2.0))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}
