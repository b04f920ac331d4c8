//! Device latency: a backend layer that times every request from submission to completion,
//! into one histogram per kind (read, write, flush), and traces each batch.
//!
//! The layer wraps whatever backend the cache runs on. It costs one clock read at submission
//! and one at completion, and one lock of the kind's histogram in the completion — per device
//! request, never per cache hit. Histograms are `hdrhistogram`s (3 significant digits, up to
//! 60 s), summarised in [`Stats`](crate::Stats) as [`Latency`].

use std::io;
use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use uringcache_core::backend::{Backend, Layer, Op, OpKind, Request};

/// A latency summary in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Latency {
    /// Requests timed.
    pub count: u64,
    /// Median, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// Slowest, µs.
    pub max_us: u64,
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.count == 0 {
            return write!(f, "-");
        }
        write!(
            f,
            "{} × p50 {} µs p99 {} µs max {} µs",
            self.count, self.p50_us, self.p99_us, self.max_us
        )
    }
}

/// The histogram of an operation kind (`None`: not timed).
fn histogram_of(kind: OpKind) -> Option<usize> {
    match kind {
        OpKind::Read => Some(0),
        OpKind::Write => Some(1),
        OpKind::Fsync => Some(2),
        OpKind::Truncate => None,
    }
}

/// The timing layer.
pub(crate) struct Timed {
    inner: Arc<dyn Backend>,
    hist: Arc<[Mutex<Histogram<u64>>; 3]>,
}

impl Timed {
    pub(crate) fn new(inner: Arc<dyn Backend>) -> Self {
        let h = || Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"));
        Timed {
            inner,
            hist: Arc::new([h(), h(), h()]),
        }
    }

    /// Summaries of read, write and flush latency.
    pub(crate) fn summaries(&self) -> [Latency; 3] {
        let s = |k: usize| {
            let h = self.hist[k].lock();
            Latency {
                count: h.len(),
                p50_us: h.value_at_quantile(0.5),
                p99_us: h.value_at_quantile(0.99),
                max_us: h.max(),
            }
        };
        [s(0), s(1), s(2)]
    }
}

impl Layer for Timed {
    fn inner(&self) -> &dyn Backend {
        &*self.inner
    }

    unsafe fn submit_layered(&self, batch: &mut Vec<Request>) {
        let bytes: usize = batch
            .iter()
            .map(|r| match r.op {
                Op::Read { len, .. } | Op::Write { len, .. } => len,
                _ => 0,
            })
            .sum();
        let _span = tracing::debug_span!(
            "io_batch",
            backend = self.inner.name(),
            requests = batch.len(),
            bytes
        )
        .entered();
        let start = Instant::now();
        for req in batch.iter_mut() {
            let kind = req.op.kind();
            let Some(slot) = histogram_of(kind) else {
                continue;
            };
            let hist = self.hist.clone();
            let done = std::mem::replace(&mut req.done, Box::new(|_| {}));
            req.done = Box::new(move |res: io::Result<usize>| {
                let us = start.elapsed().as_micros().max(1) as u64;
                let _ = hist[slot].lock().record(us.min(60_000_000));
                tracing::trace!(?kind, us, ok = res.is_ok(), "io complete");
                done(res);
            });
        }
        // SAFETY: the caller's requests, passed on with only their completions wrapped.
        unsafe { self.inner.submit(batch) };
    }
}
