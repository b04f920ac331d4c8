//! The per-cache writeback thread (the kernel's flusher, `wb_workfn`): asleep on a condition
//! variable, woken every `writeback_interval` for a timed pass or at once by a kick (the dirty
//! count passed the background threshold, eviction found only dirty pages, the last handle
//! went). What a pass does is the cache's (`super::writeback_pass`); this module owns only the
//! thread and its command word.
//!
//! # Lock order
//!
//! The command mutex is a leaf: held for a few instructions, never while a pass runs.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// The per-cache writeback thread (the kernel's flusher, `wb_workfn`).
pub(crate) struct WritebackThread {
    shared: Arc<ThreadShared>,
}

struct ThreadShared {
    cmd: Mutex<ThreadCommand>,
    wake: Condvar,
    interval: Duration,
}

#[derive(Default)]
struct ThreadCommand {
    kicked: bool,
    all: bool,
    stop: bool,
}

impl WritebackThread {
    pub(crate) fn new(interval: Duration) -> Self {
        WritebackThread {
            shared: Arc::new(ThreadShared {
                cmd: Mutex::new(ThreadCommand::default()),
                wake: Condvar::new(),
                interval,
            }),
        }
    }

    /// Starts the thread. Each pass calls `pass(all)` (`all`: write every dirty page, not only
    /// expired ones); the thread exits when `pass` returns `false` (the cache is gone) or
    /// [`stop`](Self::stop) is called.
    pub(crate) fn spawn(&self, pass: impl FnMut(bool) -> bool + Send + 'static) -> io::Result<()> {
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("uringcache-wb".into())
            .spawn(move || thread_main(&shared, pass))
            .map(|_| ())
            .map_err(|e| crate::error::os(e, "cannot start the writeback thread"))
    }

    /// Wakes the thread for a pass now; `all` writes every dirty page, not only expired ones.
    pub(crate) fn kick(&self, all: bool) {
        let mut cmd = self.shared.cmd.lock();
        if cmd.kicked && (cmd.all || !all) {
            return;
        }
        cmd.kicked = true;
        cmd.all |= all;
        self.shared.wake.notify_one();
    }

    /// Makes the next timed pass write every dirty page, without waking the thread now.
    pub(crate) fn kick_later(&self) {
        self.shared.cmd.lock().all = true;
    }

    /// Stops the thread after its current pass.
    pub(crate) fn stop(&self) {
        self.shared.cmd.lock().stop = true;
        self.shared.wake.notify_one();
    }
}

fn thread_main(shared: &ThreadShared, mut pass: impl FnMut(bool) -> bool) {
    loop {
        let all = {
            let mut cmd = shared.cmd.lock();
            if !cmd.kicked && !cmd.stop {
                shared.wake.wait_for(&mut cmd, shared.interval);
            }
            if cmd.stop {
                return;
            }
            cmd.kicked = false;
            std::mem::take(&mut cmd.all)
        };
        if !pass(all) {
            return;
        }
    }
}
