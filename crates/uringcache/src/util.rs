//! Small synchronisation helpers that need no async runtime: a one-shot completion cell that
//! turns a backend [`Completion`] into a future, `block_on` for the flusher thread and
//! `block_on_io` for `BlockingFile`.

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use uringcache_core::backend::{Backend as IoBackend, Completion};
use uringcache_core::wait::Event;

/// The result of one backend request, awaited as a future.
pub(crate) struct OneShot {
    slot: Mutex<(Option<io::Result<usize>>, Option<Waker>)>,
}

impl OneShot {
    /// A cell and the completion that fills it.
    pub(crate) fn new() -> (Arc<OneShot>, Completion) {
        let cell = Arc::new(OneShot {
            slot: Mutex::new((None, None)),
        });
        let filler = cell.clone();
        let done: Completion = Box::new(move |res| {
            let waker = {
                let mut slot = filler.slot.lock();
                slot.0 = Some(res);
                slot.1.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        });
        (cell, done)
    }

    /// Waits for the result.
    pub(crate) fn wait(self: Arc<Self>) -> impl Future<Output = io::Result<usize>> {
        struct Wait(Arc<OneShot>);
        impl Future for Wait {
            type Output = io::Result<usize>;
            fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
                let mut slot = self.0.slot.lock();
                match slot.0.take() {
                    Some(res) => Poll::Ready(res),
                    None => {
                        slot.1 = Some(cx.waker().clone());
                        Poll::Pending
                    }
                }
            }
        }
        Wait(self)
    }
}

/// Runs a future to completion on the current (non-async) thread, parking between polls: for
/// the flusher thread, whose waits are not for I/O it submitted itself.
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut out = None;
    uringcache_core::backend::park_until_ready(&mut |cx| poll_into(fut.as_mut(), cx, &mut out));
    out.expect("park_until_ready returns once the future is ready")
}

/// Runs a future to completion on the current (non-async) thread through
/// [`IoBackend::block_on`]: with `io_uring`, the I/O the future submits goes to this thread's
/// own ring and the thread reaps its completions itself. For the blocking API.
pub(crate) fn block_on_io<F: Future>(backend: &dyn IoBackend, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut out = None;
    backend.block_on(&mut |cx| poll_into(fut.as_mut(), cx, &mut out));
    out.expect("Backend::block_on returns once the future is ready")
}

/// Polls `fut` once, storing its output in `out` when it is ready.
fn poll_into<F: Future>(
    fut: Pin<&mut F>,
    cx: &mut Context<'_>,
    out: &mut Option<F::Output>,
) -> Poll<()> {
    match fut.poll(cx) {
        Poll::Ready(v) => {
            *out = Some(v);
            Poll::Ready(())
        }
        Poll::Pending => Poll::Pending,
    }
}

/// The file-size lock (the kernel's `i_rwsem` as `setattr` and buffered writes take it): many
/// writers at once, or one size change (`set_len`, truncation on open) alone. A size change
/// that is waiting holds back new writers, so a stream of writes cannot starve it.
///
/// State word: bit 63 = a size change holds the lock, bits 32..63 = size changes waiting,
/// bits 0..32 = writers holding it. Waiters sleep on `event`, notified at every release that
/// may let one in.
#[derive(Debug, Default)]
pub(crate) struct SizeLock {
    state: AtomicU64,
    event: Event,
}

const EXCLUSIVE: u64 = 1 << 63;
const WAITING_ONE: u64 = 1 << 32;
const WAITING_MASK: u64 = ((1 << 31) - 1) << 32;
const SHARED_MASK: u64 = (1 << 32) - 1;

impl SizeLock {
    /// Takes the lock shared (a write that may extend the file).
    pub(crate) async fn shared(&self) -> SizeGuard<'_> {
        loop {
            let ticket = self.event.listen();
            let mut s = self.state.load(Ordering::Acquire);
            while s & (EXCLUSIVE | WAITING_MASK) == 0 {
                match self.state.compare_exchange_weak(
                    s,
                    s + 1,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        return SizeGuard {
                            lock: self,
                            exclusive: false,
                        }
                    }
                    Err(now) => s = now,
                }
            }
            ticket.await;
        }
    }

    /// Takes the lock exclusive (a change of the file's size), waiting for the writers in.
    pub(crate) async fn exclusive(&self) -> SizeGuard<'_> {
        self.state.fetch_add(WAITING_ONE, Ordering::AcqRel);
        // Counted as waiting until it holds the lock, also if the future is dropped.
        struct Waiting<'a>(&'a SizeLock, bool);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                if !self.1 {
                    self.0.state.fetch_sub(WAITING_ONE, Ordering::AcqRel);
                    self.0.event.notify_all();
                }
            }
        }
        let mut waiting = Waiting(self, false);
        loop {
            let ticket = self.event.listen();
            let mut s = self.state.load(Ordering::Acquire);
            while s & (EXCLUSIVE | SHARED_MASK) == 0 {
                match self.state.compare_exchange_weak(
                    s,
                    (s - WAITING_ONE) | EXCLUSIVE,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        waiting.1 = true;
                        return SizeGuard {
                            lock: self,
                            exclusive: true,
                        };
                    }
                    Err(now) => s = now,
                }
            }
            ticket.await;
        }
    }
}

/// A hold on a [`SizeLock`]; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct SizeGuard<'a> {
    lock: &'a SizeLock,
    exclusive: bool,
}

impl Drop for SizeGuard<'_> {
    fn drop(&mut self) {
        let lock = self.lock;
        if self.exclusive {
            lock.state.fetch_and(!EXCLUSIVE, Ordering::AcqRel);
            lock.event.notify_all();
        } else {
            let before = lock.state.fetch_sub(1, Ordering::AcqRel);
            if before & SHARED_MASK == 1 && before & WAITING_MASK != 0 {
                lock.event.notify_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oneshot_delivers_across_threads() {
        let (cell, done) = OneShot::new();
        let t = std::thread::spawn(move || done(Ok(7)));
        assert_eq!(block_on(cell.wait()).unwrap(), 7);
        t.join().unwrap();
    }

    #[test]
    fn oneshot_filled_before_waiting() {
        let (cell, done) = OneShot::new();
        done(Err(io::Error::from_raw_os_error(libc::EIO)));
        let err = block_on(cell.wait()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
    }

    #[test]
    fn the_size_lock_excludes_writers_from_a_size_change_and_lets_it_in_first() {
        let lock = SizeLock::default();
        let w1 = block_on(lock.shared());
        let w2 = block_on(lock.shared());
        let lock = &lock;
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::channel();
            let changer = s.spawn(move || {
                let g = block_on(lock.exclusive());
                tx.send(()).unwrap();
                drop(g);
            });
            while lock.state.load(Ordering::Acquire) & WAITING_MASK == 0 {
                std::thread::yield_now();
            }
            // A waiting size change holds back new writers.
            let mut late = std::pin::pin!(lock.shared());
            let waker = std::task::Waker::noop();
            let mut cx = Context::from_waker(waker);
            assert!(late.as_mut().poll(&mut cx).is_pending());
            assert!(rx.try_recv().is_err(), "writers still hold the lock");
            drop(w1);
            drop(w2);
            rx.recv().unwrap();
            changer.join().unwrap();
            assert!(late.as_mut().poll(&mut cx).is_ready());
        });
        assert_eq!(lock.state.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_dropped_size_change_does_not_block_writers() {
        let lock = SizeLock::default();
        let w = block_on(lock.shared());
        {
            let mut change = std::pin::pin!(lock.exclusive());
            let mut cx = Context::from_waker(std::task::Waker::noop());
            assert!(change.as_mut().poll(&mut cx).is_pending());
        }
        drop(block_on(lock.shared()));
        drop(w);
        assert_eq!(lock.state.load(Ordering::Acquire), 0);
    }
}
