//! The table of inodes (the kernel's inode hash and `sb->s_inodes`, with the closed files it
//! keeps): which file each mapping id and each (device, inode number) belongs to, and the
//! closed files kept with their clean pages.
//!
//! # Locks
//!
//! * `inodes` (reader-writer): mapping id → inode, read by the evictor to find a victim's
//!   mapping, written when an inode is created or dropped. Never held while calling into an
//!   inode (an `Arc` is cloned out first), so dropping an inode from the evictor cannot
//!   deadlock on it.
//! * `by_key` (mutex): (device, inode number) → inode, so that two opens of one file share one
//!   mapping. It also orders opens against closes: an inode's handle count, its stamp (the file
//!   as the disk had it when the cache let go of it) and its place in the idle list change
//!   only under it, and an open `fstat`s the file under it.
//! * `idle` (mutex): closed files kept with their pages. Taken under `by_key` or alone; an
//!   inode pushed out of it is dropped only after both are released (its drop takes
//!   `by_key`).
//! * Lock order: `by_key` → `idle`, `by_key` → `inodes`; nothing is taken under `idle` or
//!   `inodes`.
//!
//! # Closed files
//!
//! At the last close of a file the cache lets go of it once it has no work left on it: every
//! page clean and the length on disk right (cut back by the flusher if writeback overshot
//! it). It then records the file as the disk has it ([`FileStamp`]) and keeps it with its
//! pages, at most [`MAX_IDLE_FILES`] files. An open that finds it compares the disk with the
//! stamp: unchanged, the pages are hits again; changed, the inode is forgotten with its pages.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use uringcache_core::page::NO_OWNER;

use crate::inode::{FileStamp, Inode};
use crate::stats::{Counter, Counters};

/// Closed files kept with their clean pages at most (each holds its descriptors open).
pub(crate) const MAX_IDLE_FILES: usize = 64;

/// (device, inode number): what makes two opens the same file.
pub(crate) type InodeKey = (u64, u64);

/// See the module docs.
#[derive(Default)]
pub(crate) struct InodeTable {
    inodes: RwLock<HashMap<u32, Weak<Inode>>>,
    by_key: Mutex<HashMap<InodeKey, (u32, Weak<Inode>)>>,
    next_id: AtomicU32,
    /// Closed files kept with their pages, oldest first.
    idle: Mutex<VecDeque<Arc<Inode>>>,
    /// When `prune_idle` last looked for deleted idle files (cache clock, ms).
    unlinked_checked_ms: AtomicU64,
}

impl InodeTable {
    /// Every inode alive: open, held for writeback, or kept closed.
    pub(crate) fn all(&self) -> Vec<Arc<Inode>> {
        self.inodes
            .read()
            .values()
            .filter_map(|w| w.upgrade())
            .collect()
    }

    /// The inode for the file just opened on `fd` (device and inode number `key`), with one
    /// more handle: the one already open, or kept closed and unchanged on disk since; else a
    /// new one from `make(id, size on disk)`. A closed inode whose file changed on disk (see
    /// [`FileStamp`]) is forgotten with its pages, so that no stale page is ever served.
    ///
    /// The file is `fstat`ed under `by_key`, where a closed inode's stamp is taken too: the
    /// flusher's cut of a closed file (before its stamp) can then never fall between the two
    /// looks at the disk and pass for another writer's change.
    pub(crate) fn attach(
        &self,
        fd: BorrowedFd<'_>,
        key: InodeKey,
        counters: &Counters,
        make: impl FnOnce(u32, u64) -> io::Result<Inode>,
    ) -> io::Result<Arc<Inode>> {
        let mut stale = None;
        let mut by_key = self.by_key.lock();
        let seen = FileStamp::of_fd(fd)?;
        if let Some(existing) = by_key.get(&key).and_then(|(_, w)| w.upgrade()) {
            if existing.has_handles() || existing.matches_disk(&seen) {
                if existing.handle_opened() {
                    existing.clear_stamp();
                    // A new open after every handle closed: an earlier failed flush was the
                    // closed handles' to hear of (they did); this one starts afresh, as a
                    // reopen of a file the cache had let go of always did.
                    existing.clear_poison();
                    counters.add(Counter::Reopens, 1);
                }
                let id = existing.mapping().id();
                // Out of the idle list before `by_key` goes: a close in between must not find
                // it there and leave it parked while open.
                let parked = self.unpark(id);
                drop(by_key);
                drop(parked);
                return Ok(existing);
            }
            tracing::debug!(
                path = %existing.path().display(),
                "the file changed on disk since it was closed; its cached pages are dropped"
            );
            counters.add(Counter::StaleReopens, 1);
            by_key.remove(&key);
            stale = Some(existing);
        }
        let id = loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != NO_OWNER && !self.inodes.read().contains_key(&id) {
                break id;
            }
        };
        let made = make(id, seen.size()).map(Arc::new);
        if let Ok(inode) = &made {
            inode.handle_opened();
            by_key.insert(key, (id, Arc::downgrade(inode)));
            self.inodes.write().insert(id, Arc::downgrade(inode));
        }
        drop(by_key);
        if let Some(stale) = stale {
            drop(self.unpark(stale.mapping().id()));
            // Pages pinned by page handles stay with their holders; the rest go now.
            stale.drop_all_pages();
        }
        made
    }

    /// A handle of `inode` closed. At the last one, the cache lets go of the file once it has
    /// no work left on it: at once if every page is clean and the length on disk is right
    /// (stamped and parked idle, unless `keep` is false: the cache is shut down), else the
    /// caller is told to hand it to writeback (`true`), after which the flusher calls
    /// [`let_go`](Self::let_go).
    pub(crate) fn closed(&self, inode: &Arc<Inode>, keep: bool) -> bool {
        let by_key = self.by_key.lock();
        if !inode.handle_closed() {
            return false;
        }
        if inode.is_clean() && inode.disk_len_right() {
            inode.take_stamp();
            let evicted = self.park(inode.clone(), keep);
            drop(by_key);
            drop(evicted);
            false
        } else {
            inode.clear_stamp();
            true
        }
    }

    /// The flusher is done with a closed file (clean, its length on disk cut back): stamped
    /// and parked idle, unless it was reopened or dirtied again meanwhile.
    pub(crate) fn let_go(&self, inode: Arc<Inode>, keep: bool) {
        let by_key = self.by_key.lock();
        if inode.has_handles() || !inode.is_clean() {
            return; // reopened or dirtied again meanwhile: not ours to let go of yet
        }
        inode.take_stamp();
        let evicted = self.park(inode, keep);
        drop(by_key);
        drop(evicted);
    }

    /// Keeps a closed, clean file with its pages (as the kernel keeps an inode's pages after
    /// the last close), at most [`MAX_IDLE_FILES`] of them: the oldest goes, and is returned,
    /// to be dropped once the caller has let go of `by_key` (it may be the last reference,
    /// and an inode's drop takes `by_key`). Called under `by_key`, so that an open cannot
    /// take the file between the decision and the parking.
    #[must_use = "the evicted inode must be dropped outside by_key"]
    fn park(&self, inode: Arc<Inode>, keep: bool) -> Option<Arc<Inode>> {
        if !keep {
            // Nothing more will be read: keeping it would only keep the cache alive.
            return Some(inode);
        }
        let mut idle = self.idle.lock();
        if idle.iter().any(|i| Arc::ptr_eq(i, &inode)) {
            return None;
        }
        idle.push_back(inode);
        if idle.len() > MAX_IDLE_FILES {
            idle.pop_front()
        } else {
            None
        }
    }

    /// Takes a file out of the idle list (it was reopened or is being dropped).
    fn unpark(&self, id: u32) -> Option<Arc<Inode>> {
        let mut idle = self.idle.lock();
        let at = idle.iter().position(|i| i.mapping().id() == id)?;
        idle.remove(at)
    }

    /// Drops the idle files that no longer earn their descriptor: ones whose pages were all
    /// evicted, and, at most once a second (an `fstat` each), deleted ones (their space is
    /// freed only when the descriptor closes). `now_ms` is the cache's clock.
    pub(crate) fn prune_idle(&self, now_ms: u64) {
        let last = self.unlinked_checked_ms.load(Ordering::Relaxed);
        let check_unlinked = now_ms >= last.saturating_add(1000)
            && self
                .unlinked_checked_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        let gone: VecDeque<Arc<Inode>> = {
            let mut idle = self.idle.lock();
            let (gone, keep) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|i| i.mapping().nr_pages() == 0 || (check_unlinked && i.unlinked()));
            *idle = keep;
            gone
        };
        drop(gone);
    }

    /// Lets go of every idle file (the cache is going away).
    pub(crate) fn clear_idle(&self) {
        let gone = std::mem::take(&mut *self.idle.lock());
        drop(gone);
    }

    /// Files kept closed with their pages.
    pub(crate) fn idle_len(&self) -> usize {
        self.idle.lock().len()
    }

    /// Forgets a dropped inode.
    pub(crate) fn remove(&self, id: u32, key: InodeKey) {
        self.inodes.write().remove(&id);
        let mut by_key = self.by_key.lock();
        if by_key.get(&key).map(|(i, _)| *i) == Some(id) {
            by_key.remove(&key);
        }
    }

    /// The inode of mapping `id`, if alive (the evictor finding a victim's mapping).
    pub(crate) fn by_id(&self, id: u32) -> Option<Arc<Inode>> {
        self.inodes.read().get(&id).and_then(|w| w.upgrade())
    }
}
