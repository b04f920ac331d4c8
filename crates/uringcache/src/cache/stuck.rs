//! Waits that may never end, said out loud: a task waiting for a page that a
//! [`PageMut`](crate::PageMut) holds locked. If the task waiting is the one holding the
//! `PageMut` (it syncs, truncates or writes that page while it still holds the handle), the wait
//! can never end; nothing can tell which task holds a page lock, so instead every wait on a
//! page locked while a page handle pins it is registered here, and the flusher warns once
//! about each one still waiting after [`STUCK_AFTER`] (`tracing::warn`, and
//! [`Stats::stuck_waits`](crate::Stats::stuck_waits)).
//!
//! Only waits that start on a page with a user pin are registered, so the common waits (for a
//! read in flight, a writer's short lock) cost nothing extra. The registry's mutex is a leaf.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use uringcache_core::page::{FrameId, PageDesc};

use crate::cache::CacheInner;
use crate::stats::Counter;

/// How long a wait on a page locked by a page handle goes before it is reported.
pub(crate) const STUCK_AFTER: Duration = Duration::from_secs(3);

/// Waits registered because they started on a page locked while a page handle pinned it.
#[derive(Debug, Default)]
pub(crate) struct StuckWaits {
    waits: Mutex<Vec<Waiting>>,
    next_id: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Waiting {
    id: u64,
    since: Instant,
    what: &'static str,
    path: PathBuf,
    index: u64,
    reported: bool,
}

/// Unregisters a wait when it ends or its future is dropped.
pub(crate) struct Registered<'a> {
    table: &'a StuckWaits,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.table.waits.lock().retain(|w| w.id != self.id);
    }
}

impl StuckWaits {
    fn register(&self, what: &'static str, path: PathBuf, index: u64) -> Registered<'_> {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.waits.lock().push(Waiting {
            id,
            since: Instant::now(),
            what,
            path,
            index,
            reported: false,
        });
        Registered { table: self, id }
    }

    /// Reports (once each) the waits older than [`STUCK_AFTER`]; returns how many it reported.
    pub(crate) fn report(&self) -> usize {
        let mut reported = 0;
        for w in self.waits.lock().iter_mut() {
            if !w.reported && w.since.elapsed() >= STUCK_AFTER {
                w.reported = true;
                reported += 1;
                tracing::warn!(
                    path = %w.path.display(),
                    page = w.index,
                    waiting_s = w.since.elapsed().as_secs(),
                    "{} has waited {} s for page {} of {}, locked by a PageMut that is still \
                     held; if the task holding it is the one waiting, this never finishes: drop \
                     the PageMut first",
                    w.what,
                    w.since.elapsed().as_secs(),
                    w.index,
                    w.path.display()
                );
            }
        }
        reported
    }
}

impl CacheInner {
    /// Waits until the page in `frame` (page `index` of `path`) is seen unlocked, as
    /// `WaitTable::wait_locked` does; a wait that starts on a page a page handle pins is registered, so
    /// that the flusher can report it if it lasts (see the module docs).
    pub(crate) async fn wait_unlocked(
        &self,
        desc: &PageDesc,
        frame: FrameId,
        what: &'static str,
        path: &std::path::Path,
        index: u64,
    ) {
        let held_by_handle = desc.flags().is_locked() && desc.user_pins() > 0;
        let _registered =
            held_by_handle.then(|| self.stuck().register(what, path.to_path_buf(), index));
        self.waits.wait_locked(desc, frame).await;
    }

    /// The flusher's check: reports waits stuck behind a held `PageMut`.
    pub(crate) fn report_stuck_waits(&self) {
        let n = self.stuck().report();
        if n > 0 {
            self.counters.add(Counter::StuckWaits, n as u64);
        }
    }
}
