//! Model checks of the core's concurrency protocols with loom: every interleaving of a few
//! threads, on the real code (built with `RUSTFLAGS="--cfg loom"`, the core's atomics and locks
//! are loom's). Run with
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" cargo test -p uringcache-core --release --lib loom
//! ```

use loom::sync::Arc;
use loom::thread;

use crate::errseq::ErrSeq;
use crate::mapping::Mapping;
use crate::page::{PageDesc, PageState, PageTable, NO_OWNER};
use crate::wait::{Event, WaitTable};

/// An unlock racing with a waiter never loses the wake-up (`WAITERS` protocol): if it did, the
/// waiter would block forever and loom would report a deadlock.
#[test]
fn loom_unlock_wakes_a_racing_waiter() {
    loom::model(|| {
        let table = Arc::new(WaitTable::new());
        let desc = Arc::new(PageDesc::default());
        assert!(desc.try_lock());
        let (t2, d2) = (table.clone(), desc.clone());
        let unlocker = thread::spawn(move || t2.clear_and_wake(&d2, 0, PageState::LOCKED));
        loom::future::block_on(table.wait(&desc, 0, PageState::LOCKED));
        assert!(!desc.state().has(PageState::LOCKED));
        unlocker.join().unwrap();
    });
}

/// Two waiters on one page, one dropped half way: the other still wakes.
#[test]
fn loom_dropped_waiter_does_not_steal_the_wakeup() {
    loom::model(|| {
        let table = Arc::new(WaitTable::new());
        let desc = Arc::new(PageDesc::default());
        assert!(desc.try_lock());
        let (t2, d2) = (table.clone(), desc.clone());
        let unlocker = thread::spawn(move || t2.clear_and_wake(&d2, 0, PageState::LOCKED));
        {
            // Register, then give up without waiting.
            let mut quitter = Box::pin(table.wait(&desc, 0, PageState::LOCKED));
            let waker = futures_noop_waker();
            let _ = quitter
                .as_mut()
                .poll(&mut std::task::Context::from_waker(&waker));
        }
        loom::future::block_on(table.wait(&desc, 0, PageState::LOCKED));
        unlocker.join().unwrap();
    });
}

fn futures_noop_waker() -> std::task::Waker {
    struct Noop;
    impl std::task::Wake for Noop {
        fn wake(self: std::sync::Arc<Self>) {}
    }
    std::task::Waker::from(std::sync::Arc::new(Noop))
}

use std::future::Future;

/// A lookup that pins a page and an eviction that removes it can never both succeed: the
/// reader never sees its page's frame released under it.
#[test]
fn loom_pin_and_evict_exclude_each_other() {
    loom::model(|| {
        let pages = Arc::new(PageTable::new(1));
        let mapping = Arc::new(Mapping::new(1, 0));
        mapping.insert(0, 0, &pages).unwrap();
        let (p2, m2) = (pages.clone(), mapping.clone());
        let reader = thread::spawn(move || {
            if let Some(f) = m2.lookup(0, &p2) {
                let d = p2.get(f);
                assert_eq!(d.owner(), 1, "a pinned page keeps its identity");
                assert_eq!(d.index(), 0);
                d.unpin();
            }
        });
        if mapping.remove_if(0, 0, &pages, |d| d.pins() == 1) {
            assert_eq!(pages.get(0).unpin(), 0, "nobody else pins an evicted page");
            pages.get(0).release();
            assert_eq!(pages.get(0).owner(), NO_OWNER);
        }
        reader.join().unwrap();
    });
}

/// Two syncs of one handle racing on a new error: exactly one reports it.
#[test]
fn loom_errseq_reports_once_per_cursor() {
    loom::model(|| {
        let seq = Arc::new(ErrSeq::new());
        let cursor = Arc::new(seq.sample());
        seq.set(5);
        let (s2, c2) = (seq.clone(), cursor.clone());
        let other = thread::spawn(move || s2.check_and_advance(&c2).is_some());
        let mine = seq.check_and_advance(&cursor).is_some();
        let theirs = other.join().unwrap();
        assert!(mine ^ theirs, "reported exactly once");
    });
}

/// A notify after a ticket was taken always completes the ticket.
#[test]
fn loom_event_notify_is_not_lost() {
    loom::model(|| {
        let ev = Arc::new(Event::new());
        let ticket_taken = ev.listen();
        let e2 = ev.clone();
        let notifier = thread::spawn(move || e2.notify_all());
        loom::future::block_on(ticket_taken);
        notifier.join().unwrap();
    });
}
