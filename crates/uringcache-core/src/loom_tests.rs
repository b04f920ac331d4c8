//! Model checks of the core's concurrency protocols with loom: every interleaving of a few
//! threads, on the real code (built with `RUSTFLAGS="--cfg loom"`, the core's atomics and locks
//! are loom's). Run with
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" cargo test -p uringcache-core --release --lib loom
//! ```

use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use crate::errseq::ErrSeq;
use crate::mapping::{Mapping, Speculative};
use crate::page::{PageDesc, PageTable, NO_OWNER};
use crate::wait::{Event, WaitTable};

/// A page (frame 0) locked here, and a thread racing to unlock it through the wait table.
fn locked_page_and_unlocker() -> (Arc<WaitTable>, Arc<PageDesc>, thread::JoinHandle<()>) {
    let table = Arc::new(WaitTable::new());
    let desc = Arc::new(PageDesc::default());
    assert!(desc.try_lock());
    let (t2, d2) = (table.clone(), desc.clone());
    let unlocker = thread::spawn(move || t2.unlock(&d2, 0));
    (table, desc, unlocker)
}

/// An unlock racing with a waiter never loses the wake-up (`WAITERS` protocol): if it did, the
/// waiter would block forever and loom would report a deadlock.
#[test]
fn loom_unlock_wakes_a_racing_waiter() {
    loom::model(|| {
        let (table, desc, unlocker) = locked_page_and_unlocker();
        loom::future::block_on(table.wait_locked(&desc, 0));
        assert!(!desc.flags().is_locked());
        unlocker.join().unwrap();
    });
}

/// Two waiters on one page, one dropped half way: the other still wakes.
#[test]
fn loom_dropped_waiter_does_not_steal_the_wakeup() {
    loom::model(|| {
        let (table, desc, unlocker) = locked_page_and_unlocker();
        {
            // Register, then give up without waiting.
            let mut quitter = Box::pin(table.wait_locked(&desc, 0));
            let waker = futures_noop_waker();
            let _ = quitter
                .as_mut()
                .poll(&mut std::task::Context::from_waker(&waker));
        }
        loom::future::block_on(table.wait_locked(&desc, 0));
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

/// One frame, inserted by mapping 1 at index 0 (its identity set, pinned by the mapping).
fn mapped_page() -> (Arc<PageTable>, Arc<Mapping>) {
    let pages = Arc::new(PageTable::new(1));
    let mapping = Arc::new(Mapping::new(1, 0));
    mapping.insert(0, 0, &pages).unwrap();
    (pages, mapping)
}

/// A lookup that pins a page and an eviction that removes it can never both succeed: the
/// reader never sees its page's frame released under it.
#[test]
fn loom_pin_and_evict_exclude_each_other() {
    loom::model(|| {
        let (pages, mapping) = mapped_page();
        let (p2, m2) = (pages.clone(), mapping.clone());
        let reader = thread::spawn(move || {
            if let Some(f) = m2.lookup(0, &p2) {
                let d = p2.get(f);
                assert_eq!(d.owner(), 1, "a pinned page keeps its identity");
                assert_eq!(d.index(), 0);
                d.unpin();
            }
        });
        if mapping.remove_if(0, 0, &pages, |d| d.freeze_if_reclaimable()) {
            assert_eq!(pages.get(0).pins(), 0, "nobody else pins an evicted page");
            pages.get(0).release();
            assert_eq!(pages.get(0).owner(), NO_OWNER);
        }
        reader.join().unwrap();
    });
}

/// A read completing (`finish_read`, through `WaitTable::end_read`) while a reader checks the
/// page and goes to wait: the waiter never misses the wake-up (`WAITERS`), and once woken it
/// sees the outcome: up to date, or the error with its errno.
#[test]
fn loom_finish_read_wakes_a_racing_waiter() {
    for result in [Ok(()), Err(libc::ENOSPC)] {
        loom::model(move || {
            let table = Arc::new(WaitTable::new());
            let desc = Arc::new(PageDesc::default());
            desc.init_locked(); // a fresh frame, locked for its read
            let (t2, d2) = (table.clone(), desc.clone());
            let read = thread::spawn(move || t2.end_read(&d2, 0, result));
            loom::future::block_on(table.wait_locked(&desc, 0));
            let f = desc.flags();
            assert!(!f.is_locked());
            match result {
                Ok(()) => assert!(f.is_uptodate() && !f.is_error()),
                Err(errno) => {
                    assert!(f.is_read_failed());
                    assert_eq!(desc.errno(), errno, "the errno is published with the bit");
                }
            }
            read.join().unwrap();
        });
    }
}

/// A page cached up to date in mapping 1 at index 0 (pinned by the mapping), counted dirty
/// when `dirty`.
fn cached_page(dirty: bool) -> PageDesc {
    let d = PageDesc::default();
    d.set_identity(1, 0);
    d.pin();
    d.fill_for_test(dirty);
    d
}

/// Drops one from a dirty count, which must not go below zero.
fn uncount(count: &AtomicUsize) {
    let before = count.fetch_sub(1, Ordering::SeqCst);
    assert!(before >= 1, "dirty count went below zero");
}

/// Writeback (`start_writeback` under the lock, then `end_writeback`, failing or not) racing
/// a second dirtier (`mark_dirty`, here without the page lock: the strongest case, as the
/// kernel's `folio_mark_dirty` from a path that does not lock). Whatever the order, a page
/// dirtied during its writeback stays dirty, a failed writeback leaves it dirty, and each
/// clean → dirty is reported once: the count kept from the reports equals the page's state.
#[test]
fn loom_redirty_during_writeback_is_counted_once() {
    for errno in [None, Some(libc::EIO)] {
        loom::model(move || {
            let desc = Arc::new(cached_page(true));
            let dirty = Arc::new(AtomicUsize::new(1));
            let (d2, c2) = (desc.clone(), dirty.clone());
            let writer = thread::spawn(move || {
                if d2.mark_dirty() {
                    c2.fetch_add(1, Ordering::SeqCst);
                }
            });
            assert!(desc.try_lock());
            if desc.start_writeback() {
                uncount(&dirty);
            }
            assert!(!desc.unlock());
            let _wake = desc.end_writeback(errno, |redirtied| {
                if redirtied {
                    dirty.fetch_add(1, Ordering::SeqCst);
                }
            });
            writer.join().unwrap();
            let f = desc.flags();
            assert!(!f.is_writeback());
            assert_eq!(dirty.load(Ordering::SeqCst), f.is_dirty() as usize);
            if errno.is_some() {
                assert!(f.is_dirty(), "a failed writeback keeps the page dirty");
            }
        });
    }
}

/// A failed writeback's completion re-dirtying the page while a truncation, holding the page
/// lock, waits out the writeback and then forgets the page's dirtiness: the truncation never
/// finds the page dirty before the completion has counted and tagged it (`account` runs
/// before `WRITEBACK` clears), so the count never goes below zero and ends right.
#[test]
fn loom_end_writeback_accounts_before_waiters_see_it() {
    loom::model(|| {
        let table = Arc::new(WaitTable::new());
        let desc = Arc::new(cached_page(true));
        let dirty = Arc::new(AtomicUsize::new(1));
        let tagged = Arc::new(AtomicBool::new(true));
        assert!(desc.try_lock());
        assert!(desc.start_writeback());
        uncount(&dirty);
        tagged.store(false, Ordering::SeqCst);
        table.unlock(&desc, 0);
        let (t2, d2, c2, g2) = (table.clone(), desc.clone(), dirty.clone(), tagged.clone());
        let completion = thread::spawn(move || {
            t2.end_writeback(&d2, 0, Some(libc::EIO), |redirtied| {
                assert!(redirtied, "the truncation cannot run before writeback ends");
                c2.fetch_add(1, Ordering::SeqCst);
                g2.store(true, Ordering::SeqCst);
            });
        });
        // The truncation: lock, wait out writeback, forget the dirtiness.
        assert!(desc.try_lock());
        loom::future::block_on(table.wait_writeback(&desc, 0));
        if desc.clear_dirty_for_io() {
            assert!(
                tagged.load(Ordering::SeqCst),
                "untagging a page not tagged yet"
            );
            uncount(&dirty);
        }
        table.unlock(&desc, 0);
        completion.join().unwrap();
        assert!(!desc.flags().is_dirty());
        assert_eq!(dirty.load(Ordering::SeqCst), 0);
    });
}

/// Eviction's test (`freeze_if_reclaimable`, under the shard's write lock) racing a writer that
/// pins the page by lookup, locks it and dirties it: if the page is evicted, the writer never
/// had it, so no dirty page (nor one a task holds) is ever reclaimed.
#[test]
fn loom_reclaim_test_races_a_pin() {
    loom::model(|| {
        let (pages, mapping) = mapped_page();
        pages.get(0).fill_for_test(false);
        let (p2, m2) = (pages.clone(), mapping.clone());
        let writer = thread::spawn(move || {
            let Some(f) = m2.lookup(0, &p2) else {
                return false;
            };
            let d = p2.get(f);
            assert!(d.try_lock(), "nobody else locks the page");
            assert!(d.mark_dirty());
            let _wake = d.unlock();
            d.unpin();
            true
        });
        let evicted = mapping.remove_if(0, 0, &pages, |d| d.freeze_if_reclaimable());
        if evicted {
            assert!(!pages.get(0).flags().is_dirty());
            assert_eq!(pages.get(0).pins(), 0, "nobody else pins an evicted page");
        }
        let wrote = writer.join().unwrap();
        assert!(!(evicted && wrote), "a page a writer held was evicted");
        assert_eq!(mapping.contains(0), !evicted);
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

/// One round of a thread that waits in its ring (`ring_wake`): a waker makes the future ready
/// and notifies, racing the thread's poll and its wait. `armed_before`: the ring's futex wait
/// has been pending since an earlier round, so the thread sleeps whenever it enters; otherwise
/// it is armed as the thread enters and sleeps only if the word is then `IN_RING` alone. A
/// thread that sleeps must be futex-woken.
fn ring_wake_round(armed_before: bool) {
    use crate::ring_wake::RingWake;
    let word = Arc::new(RingWake::new());
    let ready = Arc::new(AtomicBool::new(false));
    let futex_woken = Arc::new(AtomicBool::new(false));
    let waker = {
        let (word, ready, woken) = (word.clone(), ready.clone(), futex_woken.clone());
        thread::spawn(move || {
            ready.store(true, Ordering::Release);
            if word.notify() {
                woken.store(true, Ordering::Release);
            }
        })
    };
    word.take_notified();
    let mut slept = false;
    if !ready.load(Ordering::Acquire) && word.enter() {
        slept = armed_before || word.futex_would_sleep();
    }
    if slept {
        // Asleep in the kernel: the word stays `IN_RING` until the thread is woken, so the
        // waker must have woken the futex by the time it is done.
        waker.join().unwrap();
        assert!(
            futex_woken.load(Ordering::Acquire),
            "the thread slept in its ring and nobody woke its futex"
        );
        word.leave();
    } else {
        word.leave();
        waker.join().unwrap();
    }
}

/// A wake racing a thread that arms its futex wait as it enters its ring is never lost.
#[test]
fn loom_ring_wake_arming_on_entry_loses_no_wake() {
    loom::model(|| ring_wake_round(false));
}

/// A wake racing a thread whose futex wait was armed in an earlier round is never lost.
#[test]
fn loom_ring_wake_armed_earlier_loses_no_wake() {
    loom::model(|| ring_wake_round(true));
}

// ---- The lock-free read protocol (core `mapping`: hints, speculative pins, optimistic
// copies). The frame's bytes are modelled by one atomic word per frame (`content`), written
// with relaxed stores as plain memory would be, so that loom checks the generation's ordering
// rather than the atomic's.

/// Frame 0 holding page 0 of mapping 1, up to date, with bytes `PAGE_A`; a second mapping (2)
/// to reuse the frame in.
fn cached_page_and_reuse_target() -> (Arc<PageTable>, Arc<Mapping>, Arc<Mapping>, Arc<AtomicU64>) {
    let pages = Arc::new(PageTable::new(1));
    let mapping = Arc::new(Mapping::new(1, 0));
    let content = Arc::new(AtomicU64::new(PAGE_A));
    mapping.insert(0, 0, &pages).unwrap();
    pages.get(0).fill_for_test(false);
    (pages, mapping, Arc::new(Mapping::new(2, 0)), content)
}

/// The bytes of page 0 of mapping 1, and of the page that reuses its frame.
const PAGE_A: u64 = 0xA;
const PAGE_B: u64 = 0xB;

/// Reuses frame 0 (out of its mapping, unpinned) for page 0 of mapping `other`, as the pool and
/// a read would: release (new generation), allocation's pin and lock, insertion, new bytes,
/// read completed.
fn reuse_frame(pages: &PageTable, other: &Mapping, content: &AtomicU64) {
    let d = pages.get(0);
    d.release();
    d.pin();
    d.init_locked();
    other.insert(0, 0, pages).unwrap();
    content.store(PAGE_B, Ordering::Relaxed);
    assert!(!d.finish_read(Ok(())));
}

/// How the page leaves its mapping in [`loom_optimistic_read_never_keeps_a_reused_frame`].
#[derive(Clone, Copy, Debug)]
enum Removal {
    /// Eviction or `invalidate`: frozen under the shard lock, the frame owned outright.
    Freeze,
    /// Truncation (and `drop_all_pages`): removed whatever the pins, the mapping's pin dropped;
    /// the frame is reused only if that was the last.
    Truncate,
}

/// A thread reading page 0 of `mapping` optimistically (`Mapping::peek`, the copy — here a load
/// of `content` — then `unchanged_since`): a copy it keeps must be `PAGE_A`, else it fails
/// with `what`.
fn optimistic_reader(
    pages: &Arc<PageTable>,
    mapping: &Arc<Mapping>,
    content: &Arc<AtomicU64>,
    what: &'static str,
) -> thread::JoinHandle<()> {
    let (pages, mapping, content) = (pages.clone(), mapping.clone(), content.clone());
    thread::spawn(move || {
        let Some(peek) = mapping.peek(0, &pages) else {
            return;
        };
        if !peek.flags.is_uptodate() {
            return;
        }
        let copied = content.load(Ordering::Relaxed);
        if pages.get(peek.frame).unchanged_since(peek.generation) {
            assert_eq!(copied, PAGE_A, "{what}");
        }
    })
}

/// A reader copying optimistically (`Mapping::peek`, copy, `unchanged_since`) while the page
/// is evicted, invalidated or truncated and its frame reused for another page with other
/// bytes: a copy the reader keeps is always the bytes of the page it asked for.
#[test]
fn loom_optimistic_read_never_keeps_a_reused_frame() {
    for removal in [Removal::Freeze, Removal::Truncate] {
        loom::model(move || {
            let (pages, mapping, other, content) = cached_page_and_reuse_target();
            let reader =
                optimistic_reader(&pages, &mapping, &content, "kept bytes of a reused frame");
            let freed = match removal {
                Removal::Freeze => mapping.remove_if(0, 0, &pages, |d| d.freeze_if_reclaimable()),
                Removal::Truncate => {
                    let d = pages.get(0);
                    assert!(d.try_lock());
                    assert!(mapping.remove_if(0, 0, &pages, |_| true));
                    let _ = d.unlock();
                    d.unpin() == 0
                }
            };
            if freed {
                reuse_frame(&pages, &other, &content);
            }
            reader.join().unwrap();
        });
    }
}

/// A lock-free lookup (`Mapping::lookup_speculative`) racing eviction and reuse of the frame:
/// a page it returns pinned is page 0 of mapping 1 with its bytes, and stays so while pinned
/// (the eviction's freeze fails); a stray pin on the reused frame is dropped and may be the
/// last.
#[test]
fn loom_speculative_pin_races_eviction_and_reuse() {
    loom::model(|| {
        let (pages, mapping, other, content) = cached_page_and_reuse_target();
        let (p2, m2, c2) = (pages.clone(), mapping.clone(), content.clone());
        let reader = thread::spawn(move || match m2.lookup_speculative(0, &p2) {
            Speculative::Pinned(f) => {
                let d = p2.get(f);
                assert!(d.is_mapped_at(1, 0));
                assert_eq!(c2.load(Ordering::Relaxed), PAGE_A);
                assert!(d.unpin() >= 1, "the mapping's pin outlives ours");
                true
            }
            Speculative::Stray(f) => {
                p2.get(f).unpin();
                false
            }
            Speculative::Miss => false,
        });
        let evicted = mapping.remove_if(0, 0, &pages, |d| d.freeze_if_reclaimable());
        if evicted {
            reuse_frame(&pages, &other, &content);
        }
        let pinned = reader.join().unwrap();
        assert!(evicted || mapping.contains(0));
        if !evicted {
            assert_eq!(
                pages.get(0).pins(),
                1,
                "every pin but the mapping's dropped"
            );
        }
        let _ = pinned;
    });
}

/// An optimistic reader racing the read that fills a fresh page: it keeps a copy only of an
/// up-to-date page, and then the copy has the bytes the read stored before `finish_read`.
#[test]
fn loom_optimistic_read_races_a_fill() {
    loom::model(|| {
        let pages = Arc::new(PageTable::new(1));
        let mapping = Arc::new(Mapping::new(1, 0));
        let content = Arc::new(AtomicU64::new(0));
        let d = pages.get(0);
        d.pin(); // the allocation's
        d.init_locked();
        mapping.insert(0, 0, &pages).unwrap();
        let reader = optimistic_reader(
            &pages,
            &mapping,
            &content,
            "an up-to-date page without its bytes",
        );
        content.store(PAGE_A, Ordering::Relaxed);
        assert!(!d.finish_read(Ok(())));
        reader.join().unwrap();
    });
}

/// A lock-free lookup racing truncation of the page: a reader that gets the page pinned sees it
/// either still mapped or orphaned, never reused; the frame is freed by whoever drops the last
/// pin, exactly once.
#[test]
fn loom_speculative_pin_races_truncation() {
    loom::model(|| {
        let (pages, mapping, _other, _content) = cached_page_and_reuse_target();
        let freed = Arc::new(AtomicUsize::new(0));
        let (p2, m2, f2) = (pages.clone(), mapping.clone(), freed.clone());
        let reader = thread::spawn(move || {
            let f = match m2.lookup_speculative(0, &p2) {
                Speculative::Pinned(f) | Speculative::Stray(f) => f,
                Speculative::Miss => return,
            };
            let d = p2.get(f);
            assert_eq!(
                (d.owner(), d.index()),
                (1, 0),
                "a pinned frame is not reused"
            );
            if d.unpin() == 0 {
                f2.fetch_add(1, Ordering::SeqCst);
            }
        });
        let d = pages.get(0);
        assert!(d.try_lock());
        assert!(mapping.remove_if(0, 0, &pages, |_| true));
        assert!(d.flags().is_orphan());
        let _ = d.unlock();
        if d.unpin() == 0 {
            freed.fetch_add(1, Ordering::SeqCst);
        }
        reader.join().unwrap();
        assert_eq!(freed.load(Ordering::SeqCst), 1, "freed exactly once");
        assert!(!mapping.contains(0));
    });
}
