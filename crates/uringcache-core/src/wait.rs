//! The page wait table and a plain event: how tasks wait without a lock or a queue per page.
//!
//! Like the kernel's `page_wait_table` (`mm/filemap.c`: `folio_wait_bit`, `folio_wake_bit`),
//! waiters on a page's `LOCKED` or `WRITEBACK` bit sit in one of a fixed number of hashed
//! buckets, keyed by frame. A page with waiters carries the `WAITERS` bit, so that the common
//! unlock — nobody waiting — costs one atomic and never touches the table.
//!
//! Waiting: [`WaitTable::wait_locked`] (`folio_wait_locked`), [`WaitTable::wait_writeback`]
//! (`folio_wait_writeback`). Waking: the page transitions that clear `LOCKED` or `WRITEBACK`
//! report whether the page has waiters, and the table's [`unlock`](WaitTable::unlock)
//! (`folio_unlock`), [`end_read`](WaitTable::end_read) (`folio_end_read`) and
//! [`end_writeback`](WaitTable::end_writeback) (`folio_end_writeback`) make the transition and
//! the wake-up in one call.
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

use crate::page::{FrameId, PageDesc, PageFlags};

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

    fn wait_on<'a>(&'a self, desc: &'a PageDesc, frame: FrameId, on: WaitOn) -> PageWait<'a> {
        PageWait {
            table: self,
            desc,
            frame,
            on,
            slot: None,
        }
    }

    /// A future that completes once the page in `frame` is seen unlocked (`folio_wait_locked`).
    /// The caller holds a pin, so the frame is not reused meanwhile; the page may be locked
    /// again by the time the caller acts, so a caller that needs the lock tries it again.
    pub fn wait_locked<'a>(&'a self, desc: &'a PageDesc, frame: FrameId) -> PageWait<'a> {
        self.wait_on(desc, frame, WaitOn::Locked)
    }

    /// A future that completes once the page in `frame` is seen not under writeback
    /// (`folio_wait_writeback`). The caller holds a pin. Writeback starts only under the page
    /// lock, so a caller holding `LOCKED` knows it stays over (stable pages: `folio_wait_stable`).
    pub fn wait_writeback<'a>(&'a self, desc: &'a PageDesc, frame: FrameId) -> PageWait<'a> {
        self.wait_on(desc, frame, WaitOn::Writeback)
    }

    /// Unlocks the page and wakes its waiters (`folio_unlock`): [`PageDesc::unlock`] and, if it
    /// reports waiters, [`wake`](Self::wake).
    #[inline]
    pub fn unlock(&self, desc: &PageDesc, frame: FrameId) {
        if desc.unlock() {
            self.wake(desc, frame);
        }
    }

    /// Ends the read that filled the page and wakes its waiters (`folio_end_read`): see
    /// [`PageDesc::finish_read`].
    #[inline]
    pub fn end_read(&self, desc: &PageDesc, frame: FrameId, result: Result<(), i32>) {
        if desc.finish_read(result) {
            self.wake(desc, frame);
        }
    }

    /// Ends the page's writeback and wakes its waiters (`folio_end_writeback`): see
    /// [`PageDesc::end_writeback`], including when `account` runs.
    #[inline]
    pub fn end_writeback(
        &self,
        desc: &PageDesc,
        frame: FrameId,
        errno: Option<i32>,
        account: impl FnOnce(bool),
    ) {
        if desc.end_writeback(errno, account) {
            self.wake(desc, frame);
        }
    }

    /// Wakes every waiter of `frame` (`folio_wake_bit`), clearing `WAITERS` when none is left.
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
        desc.clear_waiters();
    }

    /// Number of registered waiters (for tests and statistics).
    pub fn waiters(&self) -> usize {
        self.buckets
            .iter()
            .map(|b| b.lock().entries.iter().flatten().count())
            .sum()
    }
}

/// The bit a [`PageWait`] waits to see clear.
#[derive(Clone, Copy, Debug)]
enum WaitOn {
    Locked,
    Writeback,
}

impl WaitOn {
    #[inline]
    fn is_set(self, flags: PageFlags) -> bool {
        match self {
            WaitOn::Locked => flags.is_locked(),
            WaitOn::Writeback => flags.is_writeback(),
        }
    }
}

/// Waits until a page is unlocked or out of writeback; see [`WaitTable::wait_locked`] and
/// [`WaitTable::wait_writeback`]. Dropping it cancels the wait.
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct PageWait<'a> {
    table: &'a WaitTable,
    desc: &'a PageDesc,
    frame: FrameId,
    on: WaitOn,
    slot: Option<usize>,
}

impl Future for PageWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if !this.on.is_set(this.desc.flags()) {
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
        let seen = this.desc.set_waiters();
        if !this.on.is_set(seen) {
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

    /// A waker that counts its wake-ups.
    struct CountWaker(AtomicUsize);
    impl Wake for CountWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl CountWaker {
        fn new() -> Arc<Self> {
            Arc::new(CountWaker(AtomicUsize::new(0)))
        }

        /// Wake-ups so far.
        fn wakes(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn poll<F: Future + Unpin>(f: &mut F, w: &Arc<CountWaker>) -> Poll<F::Output> {
        let waker = Waker::from(w.clone());
        Pin::new(f).poll(&mut Context::from_waker(&waker))
    }

    /// Locks `desc` (frame `frame`) and starts two waiters for its unlock, each polled once
    /// (pending) with the returned waker.
    fn lock_with_two_waiters<'a>(
        table: &'a WaitTable,
        desc: &'a PageDesc,
        frame: FrameId,
    ) -> (Arc<CountWaker>, PageWait<'a>, PageWait<'a>) {
        assert!(desc.try_lock());
        let w = CountWaker::new();
        let mut a = table.wait_locked(desc, frame);
        let mut b = table.wait_locked(desc, frame);
        assert!(poll(&mut a, &w).is_pending());
        assert!(poll(&mut b, &w).is_pending());
        (w, a, b)
    }

    #[test]
    fn unlocked_page_is_ready_at_once() {
        let table = WaitTable::new();
        let desc = PageDesc::default();
        let w = CountWaker::new();
        assert!(poll(&mut table.wait_locked(&desc, 1), &w).is_ready());
        assert_eq!(table.waiters(), 0);
    }

    #[test]
    fn unlock_wakes_every_waiter_once() {
        let table = WaitTable::new();
        let desc = PageDesc::default();
        let (w, mut a, mut b) = lock_with_two_waiters(&table, &desc, 5);
        assert!(desc.flags().has_waiters());
        assert_eq!(table.waiters(), 2);
        table.unlock(&desc, 5);
        assert_eq!(w.wakes(), 2);
        assert!(!desc.flags().has_waiters());
        assert!(poll(&mut a, &w).is_ready());
        assert!(poll(&mut b, &w).is_ready());
        assert_eq!(table.waiters(), 0);
    }

    #[test]
    fn dropped_waiter_leaves_and_others_still_wake() {
        let table = WaitTable::new();
        let desc = PageDesc::default();
        let (w, a, mut b) = lock_with_two_waiters(&table, &desc, 5);
        drop(a);
        assert_eq!(table.waiters(), 1);
        table.unlock(&desc, 5);
        assert_eq!(w.wakes(), 1);
        assert!(poll(&mut b, &w).is_ready());
    }

    #[test]
    fn unlock_without_waiters_skips_the_table() {
        let desc = PageDesc::default();
        assert!(desc.try_lock());
        // No WAITERS bit: nothing to wake, no bucket lock needed.
        assert!(!desc.unlock());
    }

    #[test]
    fn waiters_of_other_frames_in_the_bucket_stay_asleep() {
        let table = WaitTable::new();
        let d1 = PageDesc::default();
        let d2 = PageDesc::default();
        assert!(d1.try_lock());
        assert!(d2.try_lock());
        let w1 = CountWaker::new();
        let w2 = CountWaker::new();
        // Frames 0 and 256 * k may share a bucket; use many frames to be sure some collide.
        let mut a = table.wait_locked(&d1, 0);
        let mut b = table.wait_locked(&d2, 1);
        assert!(poll(&mut a, &w1).is_pending());
        assert!(poll(&mut b, &w2).is_pending());
        table.unlock(&d1, 0);
        assert_eq!(w1.wakes(), 1);
        assert_eq!(w2.wakes(), 0);
        assert!(poll(&mut b, &w2).is_pending());
        table.unlock(&d2, 1);
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
                let mut f = t.wait_locked(&d, 9);
                while Pin::new(&mut f)
                    .poll(&mut Context::from_waker(&waker))
                    .is_pending()
                {
                    std::thread::park();
                }
            });
            table.unlock(&desc, 9);
            h.join().unwrap();
        }
    }

    #[test]
    fn end_read_and_end_writeback_wake_their_waiters() {
        let table = WaitTable::new();
        let desc = PageDesc::default();
        desc.set_identity(1, 0);
        desc.pin();
        desc.init_locked();
        let w = CountWaker::new();
        let mut reader = table.wait_locked(&desc, 3);
        assert!(poll(&mut reader, &w).is_pending());
        table.end_read(&desc, 3, Ok(()));
        assert_eq!(w.wakes(), 1);
        assert!(poll(&mut reader, &w).is_ready());
        assert!(desc.flags().is_uptodate() && !desc.flags().has_waiters());

        assert!(desc.try_lock());
        assert!(desc.mark_dirty());
        assert!(desc.start_writeback());
        table.unlock(&desc, 3);
        let mut stable = table.wait_writeback(&desc, 3);
        assert!(poll(&mut stable, &w).is_pending());
        // A locked page is no reason to wait for writeback, and the reverse.
        assert!(poll(&mut table.wait_locked(&desc, 3), &w).is_ready());
        let mut redirtied = false;
        table.end_writeback(&desc, 3, Some(libc::EIO), |r| redirtied = r);
        assert!(redirtied);
        assert_eq!(w.wakes(), 2);
        assert!(poll(&mut stable, &w).is_ready());
        assert_eq!(table.waiters(), 0);
    }

    #[test]
    fn event_ticket_sees_notify_after_listen() {
        let ev = Event::new();
        let w = CountWaker::new();
        let mut t = ev.listen();
        assert!(poll(&mut t, &w).is_pending());
        assert!(ev.has_listeners());
        ev.notify_all();
        assert_eq!(w.wakes(), 1);
        assert!(poll(&mut t, &w).is_ready());
        // A ticket taken before a notify that it never polled through still completes.
        let mut t2 = ev.listen();
        ev.notify_all();
        assert!(poll(&mut t2, &w).is_ready());
    }
}
