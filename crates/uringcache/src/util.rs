//! Small synchronisation helpers that need no async runtime: a one-shot completion cell that
//! turns a backend [`Completion`] into a future, and `block_on` for the writeback thread.

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use parking_lot::Mutex;
use uringcache_core::backend::Completion;

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

/// Runs a future to completion on the current (non-async) thread, parking between polls.
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
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
}
