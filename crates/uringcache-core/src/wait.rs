//! The page wait table and a plain event: how tasks wait without a lock or a queue per page.
//!
//! Like the kernel's `page_wait_table` (`mm/filemap.c`: `wait_on_page_bit`, `wake_up_page_bit`),
//! waiters on a page's `LOCKED` or `WRITEBACK` bit sit in one of a fixed number of hashed
//! buckets, keyed by frame. A page with waiters carries the `WAITERS` bit, so that the common
//! unlock — nobody waiting — costs one atomic and never touches the table.
//!
//! # No lost wake-up
//!
//! A waiter, under its bucket's lock, first sets `WAITERS` and then re-reads the page state; the
//! waker first clears its bit (learning from the same atomic whether `WAITERS` was set) and only
//! then takes the bucket lock. Both are read-modify-writes of one atomic word, so either the
//! waiter sees the bit already clear, or the waker sees `WAITERS` and wakes the bucket.
//!
//! # Cancellation
//!
//! Wake-ups are broadcast to every waiter of the frame (no hand-off to one waiter), so a
//! [`PageWait`] future may be dropped at any time (`lock_page_killable`): it removes its entry and
//! no other waiter loses anything.
//!
//! # Invariants
//!
//! Each bucket's mutex protects its entries. An entry lives from the first `Pending` poll of its
//! future until the future completes or is dropped. `WAITERS` may stay set with no waiter left
//! (a spurious wake costs one bucket lock); it is never clear while an un-woken waiter exists.

use crate::sync::atomic::{AtomicU64, Ordering};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::sync::Mutex;

use crate::page::{FrameId, PageDesc, PageState};

/// Number of hashed buckets (the kernel uses 256; the model checker uses 2, so that waiters of
/// different frames share a bucket).
#[cfg(not(loom))]
const BUCKETS: usize = 256;
#[cfg(loom)]
const BUCKETS: usize = 2;

#[derive(Debug)]
struct Entry {
    frame: FrameId,
    waker: Option<Waker>,
}

/// Entries of one bucket, with a free list so that steady state does not allocate.
#[derive(Debug, Default)]
struct Bucket {
    entries: Vec<Option<Entry>>,
    free: Vec<usize>,
}

impl Bucket {
    fn insert(&mut self, entry: Entry) -> usize {
        match self.free.pop() {
            Some(slot) => {
                self.entries[slot] = Some(entry);
                slot
            }
            None => {
                self.entries.push(Some(entry));
                self.entries.len() - 1
            }
        }
    }

    fn remove(&mut self, slot: usize) {
        if self.entries[slot].take().is_some() {
            self.free.push(slot);
        }
    }
}

/// The hashed table of page waiters.
#[derive(Debug)]
pub struct WaitTable {
    buckets: Box<[crossbeam_utils::CachePadded<Mutex<Bucket>>]>,
}

impl Default for WaitTable {
    fn default() -> Self {
        Self::new()
    }
}

impl WaitTable {
    /// An empty table.
    pub fn new() -> Self {
        WaitTable {
            buckets: (0..BUCKETS).map(|_| Default::default()).collect(),
        }
    }

    #[inline]
    fn bucket(&self, frame: FrameId) -> &Mutex<Bucket> {
        // Fibonacci hashing spreads neighbouring frames over the buckets.
        let h = (frame as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56;
        &self.buckets[h as usize % BUCKETS]
    }

    /// A future that completes once `bit` (`LOCKED` or `WRITEBACK`) of the page in `frame` is
    /// clear (`wait_on_page_bit`). The caller holds a pin, so the frame is not reused meanwhile.
    pub fn wait<'a>(&'a self, desc: &'a PageDesc, frame: FrameId, bit: u32) -> PageWait<'a> {
        PageWait {
            table: self,
            desc,
            frame,
            bit,
            slot: None,
        }
    }

    /// Clears `bit` of the page and wakes its waiters (`unlock_page`, `end_page_writeback`).
    pub fn clear_and_wake(&self, desc: &PageDesc, frame: FrameId, bit: u32) {
        if desc.clear_and_test_waiters(bit) {
            self.wake(desc, frame);
        }
    }

    /// Wakes every waiter of `frame` (`wake_up_page_bit`), clearing `WAITERS` when none is left.
    pub fn wake(&self, desc: &PageDesc, frame: FrameId) {
        let mut bucket = self.bucket(frame).lock();
        for entry in bucket.entries.iter_mut().flatten() {
            if entry.frame == frame {
                if let Some(w) = entry.waker.take() {
                    w.wake();
                }
            }
        }
        // Every waiter of this frame has been woken; those that must wait again set the bit
        // again under this lock.
        desc.clear(PageState::WAITERS);
    }

    /// Number of registered waiters (for tests and statistics).
    pub fn waiters(&self) -> usize {
        self.buckets
            .iter()
            .map(|b| b.lock().entries.iter().flatten().count())
            .sum()
    }
}

/// Waits until a page bit is clear; see [`WaitTable::wait`]. Dropping it cancels the wait.
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct PageWait<'a> {
    table: &'a WaitTable,
    desc: &'a PageDesc,
    frame: FrameId,
    bit: u32,
    slot: Option<usize>,
}

impl Future for PageWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if !this.desc.state().any(this.bit) {
            if let Some(slot) = this.slot.take() {
                this.table.bucket(this.frame).lock().remove(slot);
            }
            return Poll::Ready(());
        }
        let mut bucket = this.table.bucket(this.frame).lock();
        match this.slot {
            Some(slot) => {
                let entry = bucket.entries[slot].as_mut().expect("wait entry vanished");
                match &mut entry.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    w => *w = Some(cx.waker().clone()),
                }
            }
            None => {
                this.slot = Some(bucket.insert(Entry {
                    frame: this.frame,
                    waker: Some(cx.waker().clone()),
                }));
            }
        }
        let seen = this.desc.set(PageState::WAITERS);
        if !seen.any(this.bit) {
            if let Some(slot) = this.slot.take() {
                bucket.remove(slot);
            }
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for PageWait<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.table.bucket(self.frame).lock().remove(slot);
        }
    }
}

/// A broadcast event for conditions that are not page bits: "a frame was freed", "dirty pages
/// drained". Listeners take a ticket, check their condition, then await the ticket; any
/// `notify_all` after the ticket was taken completes it.
#[derive(Debug, Default)]
pub struct Event {
    seq: AtomicU64,
    waiters: Mutex<Bucket>,
}

impl Event {
    /// A new event.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes a ticket: the returned future completes at the first `notify_all` after this call.
    /// Take the ticket *before* checking the condition, so that a change between the check and
    /// the wait is not missed.
    pub fn listen(&self) -> EventWait<'_> {
        EventWait {
            event: self,
            seen: self.seq.load(Ordering::SeqCst),
            slot: None,
        }
    }

    /// Wakes every listener.
    pub fn notify_all(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        let mut waiters = self.waiters.lock();
        for entry in waiters.entries.iter_mut().flatten() {
            if let Some(w) = entry.waker.take() {
                w.wake();
            }
        }
    }

    /// Whether anybody is listening (cheap check before notifying on a hot path).
    pub fn has_listeners(&self) -> bool {
        self.waiters
            .lock()
            .entries
            .iter()
            .flatten()
            .any(|e| e.waker.is_some())
    }
}

/// Waits for the next [`Event::notify_all`]; see [`Event::listen`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct EventWait<'a> {
    event: &'a Event,
    seen: u64,
    slot: Option<usize>,
}

impl Future for EventWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut waiters = this.event.waiters.lock();
        if this.event.seq.load(Ordering::SeqCst) != this.seen {
            if let Some(slot) = this.slot.take() {
                waiters.remove(slot);
            }
            return Poll::Ready(());
        }
        match this.slot {
            Some(slot) => {
                let entry = waiters.entries[slot]
                    .as_mut()
                    .expect("event entry vanished");
                entry.waker = Some(cx.waker().clone());
            }
            None => {
                this.slot = Some(waiters.insert(Entry {
                    frame: 0,
                    waker: Some(cx.waker().clone()),
                }));
            }
        }
        Poll::Pending
    }
}

impl Drop for EventWait<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.event.waiters.lock().remove(slot);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    struct CountWaker(AtomicUsize);
    impl Wake for CountWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll<F: Future + Unpin>(f: &mut F, w: &Arc<CountWaker>) -> Poll<F::Output> {
        let waker = Waker::from(w.clone());
        Pin::new(f).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn unlocked_page_is_ready_at_once() {
        let table = WaitTable::new();
        let desc = PageDesc::default();
        let w = Arc::new(CountWaker(AtomicUsize::new(0)));
        assert!(poll(&mut table.wait(&desc, 1, PageState::LOCKED), &w).is_ready());
        assert_eq!(table.waiters(), 0);
    }

    #[test]
    fn unlock_wakes_every_waiter_once() {
        let table = WaitTable::new();
        let desc = PageDesc::default();
        assert!(desc.try_lock());
        let w = Arc::new(CountWaker(AtomicUsize::new(0)));
        let mut a = table.wait(&desc, 5, PageState::LOCKED);
        let mut b = table.wait(&desc, 5, PageState::LOCKED);
        assert!(poll(&mut a, &w).is_pending());
        assert!(poll(&mut b, &w).is_pending());
        assert!(desc.state().has(PageState::WAITERS));
        assert_eq!(table.waiters(), 2);
        table.clear_and_wake(&desc, 5, PageState::LOCKED);
        assert_eq!(w.0.load(Ordering::SeqCst), 2);
        assert!(!desc.state().has(PageState::WAITERS));
        assert!(poll(&mut a, &w).is_ready());
        assert!(poll(&mut b, &w).is_ready());
        assert_eq!(table.waiters(), 0);
    }

    #[test]
    fn dropped_waiter_leaves_and_others_still_wake() {
        let table = WaitTable::new();
        let desc = PageDesc::default();
        assert!(desc.try_lock());
        let w = Arc::new(CountWaker(AtomicUsize::new(0)));
        let mut a = table.wait(&desc, 5, PageState::LOCKED);
        let mut b = table.wait(&desc, 5, PageState::LOCKED);
        assert!(poll(&mut a, &w).is_pending());
        assert!(poll(&mut b, &w).is_pending());
        drop(a);
        assert_eq!(table.waiters(), 1);
        table.clear_and_wake(&desc, 5, PageState::LOCKED);
        assert_eq!(w.0.load(Ordering::SeqCst), 1);
        assert!(poll(&mut b, &w).is_ready());
    }

    #[test]
    fn unlock_without_waiters_skips_the_table() {
        let desc = PageDesc::default();
        assert!(desc.try_lock());
        // No WAITERS bit: nothing to wake, no bucket lock needed.
        assert!(!desc.clear_and_test_waiters(PageState::LOCKED));
    }

    #[test]
    fn waiters_of_other_frames_in_the_bucket_stay_asleep() {
        let table = WaitTable::new();
        let d1 = PageDesc::default();
        let d2 = PageDesc::default();
        assert!(d1.try_lock());
        assert!(d2.try_lock());
        let w1 = Arc::new(CountWaker(AtomicUsize::new(0)));
        let w2 = Arc::new(CountWaker(AtomicUsize::new(0)));
        // Frames 0 and 256 * k may share a bucket; use many frames to be sure some collide.
        let mut a = table.wait(&d1, 0, PageState::LOCKED);
        let mut b = table.wait(&d2, 1, PageState::LOCKED);
        assert!(poll(&mut a, &w1).is_pending());
        assert!(poll(&mut b, &w2).is_pending());
        table.clear_and_wake(&d1, 0, PageState::LOCKED);
        assert_eq!(w1.0.load(Ordering::SeqCst), 1);
        assert_eq!(w2.0.load(Ordering::SeqCst), 0);
        assert!(poll(&mut b, &w2).is_pending());
        table.clear_and_wake(&d2, 1, PageState::LOCKED);
        assert!(poll(&mut b, &w2).is_ready());
    }

    #[test]
    fn threads_racing_lock_and_wait_never_hang() {
        // Many rounds of lock / wait / unlock across threads; a lost wake-up hangs the test.
        let table = Arc::new(WaitTable::new());
        let desc = Arc::new(PageDesc::default());
        for _ in 0..2000 {
            assert!(desc.try_lock());
            let t = table.clone();
            let d = desc.clone();
            let h = std::thread::spawn(move || {
                let thread = std::thread::current();
                struct Unpark(std::thread::Thread);
                impl Wake for Unpark {
                    fn wake(self: Arc<Self>) {
                        self.0.unpark();
                    }
                }
                let waker = Waker::from(Arc::new(Unpark(thread)));
                let mut f = t.wait(&d, 9, PageState::LOCKED);
                while Pin::new(&mut f)
                    .poll(&mut Context::from_waker(&waker))
                    .is_pending()
                {
                    std::thread::park();
                }
            });
            table.clear_and_wake(&desc, 9, PageState::LOCKED);
            h.join().unwrap();
        }
    }

    #[test]
    fn event_ticket_sees_notify_after_listen() {
        let ev = Event::new();
        let w = Arc::new(CountWaker(AtomicUsize::new(0)));
        let mut t = ev.listen();
        assert!(poll(&mut t, &w).is_pending());
        assert!(ev.has_listeners());
        ev.notify_all();
        assert_eq!(w.0.load(Ordering::SeqCst), 1);
        assert!(poll(&mut t, &w).is_ready());
        // A ticket taken before a notify that it never polled through still completes.
        let mut t2 = ev.listen();
        ev.notify_all();
        assert!(poll(&mut t2, &w).is_ready());
    }
}
