//! A fault-injecting backend for tests: wraps any [`Backend`] and fails, or holds back,
//! chosen requests.
//!
//! Rules are matched in the order they were added against each submitted request's kind (and
//! optionally file); the first rule with uses left applies:
//!
//! * [`Fault::Fail`] completes the request at once with an OS error (`EIO`, `ENOSPC`, …)
//!   without running it — for writes this is exactly what a failing device looks like to the
//!   cache: nothing written, an error back;
//! * [`Fault::Hold`] keeps the request out of the device until [`FaultBackend::release`], which
//!   forwards held requests (in submission order or reversed) — for delayed and reordered
//!   completions, and for completions that arrive after their future was dropped.
//!
//! The backend keeps every contract of [`Backend`]: each completion runs exactly once.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use uringcache_core::backend::{Backend, FileId, Layer, Request};

/// Which requests a rule applies to (the core's operation kind, re-exported).
pub use uringcache_core::backend::OpKind;

/// What a rule does to a matching request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Complete it with this OS error number, without running it.
    Fail(i32),
    /// Hold it until [`FaultBackend::release`].
    Hold,
}

#[derive(Debug)]
struct Rule {
    kind: OpKind,
    file: Option<FileId>,
    fault: Fault,
    /// Uses left; `None` for a rule that never runs out.
    uses: Option<u32>,
}

/// A [`Backend`] that injects faults into another; see the module docs.
pub struct FaultBackend {
    inner: Arc<dyn Backend>,
    rules: Mutex<Vec<Rule>>,
    held: Mutex<VecDeque<Request>>,
    injected: Mutex<u64>,
}

impl std::fmt::Debug for FaultBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultBackend")
            .field("inner", &self.inner.name())
            .field("rules", &*self.rules.lock())
            .field("held", &self.held.lock().len())
            .finish()
    }
}

impl FaultBackend {
    /// Wraps `inner`, with no rule yet (every request passes through).
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        FaultBackend {
            inner,
            rules: Mutex::new(Vec::new()),
            held: Mutex::new(VecDeque::new()),
            injected: Mutex::new(0),
        }
    }

    /// Applies `fault` to the next `times` requests of `kind` (`None`: to all of them, until
    /// [`clear`](Self::clear)).
    pub fn inject(&self, kind: OpKind, fault: Fault, times: Option<u32>) {
        self.rules.lock().push(Rule {
            kind,
            file: None,
            fault,
            uses: times,
        });
    }

    /// Like [`inject`](Self::inject), for requests on one file only.
    pub fn inject_file(&self, file: FileId, kind: OpKind, fault: Fault, times: Option<u32>) {
        self.rules.lock().push(Rule {
            kind,
            file: Some(file),
            fault,
            uses: times,
        });
    }

    /// Removes every rule (held requests stay held until released).
    pub fn clear(&self) {
        self.rules.lock().clear();
    }

    /// Requests currently held.
    pub fn held(&self) -> usize {
        self.held.lock().len()
    }

    /// Faults injected so far (failed or held requests).
    pub fn injected(&self) -> u64 {
        *self.injected.lock()
    }

    /// Forwards every held request to the inner backend (through the remaining `Fail` rules),
    /// oldest first, or newest first with `reverse` (completions then arrive out of order).
    pub fn release(&self, reverse: bool) {
        let mut held: Vec<Request> = self.held.lock().drain(..).collect();
        if reverse {
            held.reverse();
        }
        let mut pass = Vec::new();
        for req in held {
            match self.rule_for(&req, false) {
                Some(Fault::Fail(errno)) => (req.done)(Err(io::Error::from_raw_os_error(errno))),
                _ => pass.push(req),
            }
        }
        if !pass.is_empty() {
            // SAFETY: the requests are the caller's, passed on unchanged: its guarantees for
            // their frames hold for the inner backend.
            unsafe { self.inner.submit(&mut pass) };
        }
    }

    /// The fault for `req`, consuming one use of the rule; `Hold` rules only when `holds`.
    fn rule_for(&self, req: &Request, holds: bool) -> Option<Fault> {
        let mut rules = self.rules.lock();
        let rule = rules.iter_mut().find(|r| {
            r.kind == req.op.kind()
                && r.file.is_none_or(|f| f == req.file)
                && r.uses != Some(0)
                && (holds || r.fault != Fault::Hold)
        })?;
        if let Some(n) = &mut rule.uses {
            *n -= 1;
        }
        *self.injected.lock() += 1;
        Some(rule.fault)
    }
}

/// Where a [`FaultBackend`] made by a cache's build is found: give [`layer`](Self::layer) to
/// `CacheBuilder::wrap_backend`, build, then [`get`](Self::get) the fault backend to inject
/// with.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use std::sync::Arc;
/// use uringcache_uring::fault::{FaultSlot, OpKind, Fault};
/// use uringcache_uring::ThreadsBackend;
/// use uringcache_core::backend::Backend;
/// use uringcache_core::frames::FrameArena;
///
/// let faults = FaultSlot::new();
/// let layer = faults.layer();
/// // What a cache's build does with the layer:
/// let inner: Arc<dyn Backend> = Arc::new(ThreadsBackend::new(Arc::new(FrameArena::new(4, 4096)?), 1)?);
/// let _backend = layer(inner);
/// faults.get().inject(OpKind::Read, Fault::Fail(libc::EIO), Some(1));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct FaultSlot(Arc<OnceLock<Arc<FaultBackend>>>);

impl FaultSlot {
    /// An empty slot.
    pub fn new() -> Self {
        FaultSlot::default()
    }

    /// The layer for `CacheBuilder::wrap_backend`: wraps the cache's backend in a
    /// [`FaultBackend`] and keeps it here (the first one, if the layer runs again).
    pub fn layer(&self) -> impl Fn(Arc<dyn Backend>) -> Arc<dyn Backend> + Send + Sync + 'static {
        let slot = self.0.clone();
        move |inner| {
            let fault = Arc::new(FaultBackend::new(inner));
            let _ = slot.set(fault.clone());
            fault
        }
    }

    /// The fault backend the layer made. Panics if the layer has not run (the cache was not
    /// built with it).
    pub fn get(&self) -> Arc<FaultBackend> {
        self.0
            .get()
            .expect("FaultSlot::get before a cache was built with its layer")
            .clone()
    }
}

impl Layer for FaultBackend {
    fn inner(&self) -> &dyn Backend {
        &*self.inner
    }

    unsafe fn submit_layered(&self, batch: &mut Vec<Request>) {
        let mut pass = Vec::with_capacity(batch.len());
        for req in batch.drain(..) {
            match self.rule_for(&req, true) {
                None => pass.push(req),
                Some(Fault::Fail(errno)) => (req.done)(Err(io::Error::from_raw_os_error(errno))),
                Some(Fault::Hold) => self.held.lock().push_back(req),
            }
        }
        if !pass.is_empty() {
            // SAFETY: the requests are the caller's, passed on unchanged: its guarantees for
            // their frames hold for the inner backend.
            unsafe { self.inner.submit(&mut pass) };
        }
    }

    fn shutdown_layered(&self) {
        self.release(false);
        self.inner.shutdown();
    }
}
