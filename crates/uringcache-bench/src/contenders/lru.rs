//! A plain LRU of the budget's size replayed over the scan trace: the floor a scan-resistant
//! policy must beat. Scan reads count as one access per 4 KiB page they cover; no readahead.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use super::Contender;
use crate::data::{PhaseCounts, Step, BLOCK};
use crate::measure::{Miss, Outcome, Sample};
use crate::workloads::{Job, ScanJob, Workload};

/// The LRU model (a simulation, not a reader).
pub struct LruModel;

/// An LRU set of page keys: key → last-use stamp, and stamp → key in order.
struct Lru {
    capacity: usize,
    stamp: u64,
    by_key: HashMap<u64, u64>,
    by_age: BTreeMap<u64, u64>,
}

impl Lru {
    fn new(capacity: usize) -> Lru {
        Lru {
            capacity: capacity.max(1),
            stamp: 0,
            by_key: HashMap::new(),
            by_age: BTreeMap::new(),
        }
    }

    /// Touches `key`; returns whether it was cached.
    fn access(&mut self, key: u64) -> bool {
        self.stamp += 1;
        let hit = match self.by_key.insert(key, self.stamp) {
            Some(old) => {
                self.by_age.remove(&old);
                true
            }
            None => false,
        };
        self.by_age.insert(self.stamp, key);
        if self.by_key.len() > self.capacity {
            if let Some((_, victim)) = self.by_age.pop_first() {
                self.by_key.remove(&victim);
            }
        }
        hit
    }
}

/// Keys of the scan file's pages, apart from the hot file's.
const SCAN_KEY: u64 = 1 << 63;

/// Replays `trace` through an LRU of `capacity` pages.
pub fn simulate(trace: &[Step], capacity: usize, scan_read: usize) -> PhaseCounts {
    let mut lru = Lru::new(capacity);
    let mut counts = PhaseCounts::default();
    for step in trace {
        match *step {
            Step::Hot { block, phase } => counts.record(phase, lru.access(block)),
            Step::Scan { offset } => {
                let first = offset / BLOCK as u64;
                for p in first..first + (scan_read / BLOCK) as u64 {
                    lru.access(SCAN_KEY | p);
                }
            }
        }
    }
    counts
}

impl Contender for LruModel {
    fn id(&self) -> &'static str {
        "lru-model"
    }

    fn name(&self) -> &'static str {
        "LRU model (floor)"
    }

    fn kernel_cached(&self) -> bool {
        false
    }

    fn applies_to(&self, w: Workload) -> bool {
        w == Workload::Scan
    }

    fn reads(&self, _: &Job) -> Outcome {
        Err(Miss::NotApplicable("a model, not a reader".into()))
    }

    fn scan(&self, job: &ScanJob) -> Outcome {
        let t = Instant::now();
        let counts = simulate(&job.trace, job.budget / BLOCK, job.scan_read);
        Ok(Sample {
            ops: job.trace.len() as u64,
            secs: t.elapsed().as_secs_f64(),
            phases: Some(counts.ratios()),
            note: Some(format!("simulated, {} pages", job.budget / BLOCK)),
            ..Sample::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_the_least_recent() {
        let mut l = Lru::new(2);
        assert!(!l.access(1));
        assert!(!l.access(2));
        assert!(l.access(1));
        assert!(!l.access(3)); // evicts 2
        assert!(l.access(1));
        assert!(!l.access(2));
    }

    #[test]
    fn a_big_scan_flushes_an_lru() {
        let trace = crate::data::scan_trace(3, 100, 16 << 20, 8192);
        let r = simulate(&trace, 1000, 8192).ratios();
        assert!(r[0] > 0.99, "before: {r:?}");
        assert!(r[2] < 0.5, "after: {r:?}");
    }
}
