//! Measuring one turn: wall time and CPU time (`getrusage(RUSAGE_SELF)`) around the timed
//! section only, a start/finish gate so that worker threads set up before the clock starts, and
//! the result types a contender returns.

use std::io;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// A cache's write and sync counters over a timed section (uringcache's `Stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WriteCounts {
    /// `sync_*` calls.
    pub syncs: u64,
    /// Device flushes (`fsync` / `fdatasync`) issued for them.
    pub flushes: u64,
    /// Pages written back.
    pub pages_written: u64,
    /// Write requests they took.
    pub write_requests: u64,
    /// Times a writer waited at the dirty limit.
    pub throttle_waits: u64,
}

/// What one timed turn of one contender produced.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// Reads (or writes) completed in the timed section.
    pub ops: u64,
    /// Bytes delivered to the caller (or written) in the timed section.
    pub bytes: u64,
    /// Wall seconds of the timed section.
    pub secs: f64,
    /// CPU seconds (user + system, every thread of the process) of the timed section.
    pub cpu_secs: f64,
    /// The cache's own hit ratio over the timed section, where the contender can tell.
    pub hit_ratio: Option<f64>,
    /// Hot-set hit ratios before, during and after a scan (`scan` only).
    pub phases: Option<[f64; 3]>,
    /// The cache's write and sync counters, where the contender can tell (writes only).
    pub writes: Option<WriteCounts>,
    /// Per-operation latency quantiles, on the rows that record them (queue depth 1).
    pub latency: Option<Latency>,
    /// The memory cgroup's limit and peak usage, on the rows run at the same budget.
    pub memory: Option<MemUse>,
    /// The process's peak resident memory (`VmHWM`) and the cache's build time, on the
    /// uringcache rows.
    pub process: Option<ProcessUse>,
    /// Anything a reader of the table should know about this turn.
    pub note: Option<String>,
}

impl Sample {
    /// A throughput sample from a count of reads (or writes) of `size` bytes and a meter
    /// reading.
    pub fn reads(ops: u64, size: usize, m: Measured) -> Sample {
        Sample {
            ops,
            bytes: ops * size as u64,
            secs: m.secs,
            cpu_secs: m.cpu_secs,
            ..Sample::default()
        }
    }

    /// Attaches a note.
    pub fn with_note(mut self, note: impl Into<String>) -> Sample {
        self.note = Some(note.into());
        self
    }

    /// Attaches the latency quantiles `lat` recorded (none if it recorded nothing).
    pub fn with_latency(mut self, lat: &Latencies) -> Sample {
        self.latency = lat.summary();
        self
    }
}

/// What a memory cgroup measured over one turn.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MemUse {
    /// Its limit, bytes.
    pub limit: u64,
    /// The most bytes charged at once during the turn.
    pub peak: u64,
}

/// A uringcache turn's process figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProcessUse {
    /// The process's peak resident set (`VmHWM` of `/proc/self/status`) over the turn,
    /// from the cache's build to its shutdown, bytes: the harness's own memory (the offsets
    /// of every workload, a few MiB) and everything the cache and its runtime touched,
    /// including the frames of the budget.
    pub peak_rss: u64,
    /// Whether the peak could be reset before the turn; if not, `peak_rss` is the run's
    /// high-water mark so far (which an earlier `mmap` turn may have set).
    pub rss_reset: bool,
    /// Seconds `Cache::build` took.
    pub build_secs: f64,
}

/// Starts the process's peak resident set over from its resident set now (writes `5` to
/// `/proc/self/clear_refs`), so that the next [`peak_rss`] is this turn's; `false` if the
/// kernel refused (then `peak_rss` is the run's high-water mark so far).
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The process's peak resident set (`VmHWM`) since the last [`reset_peak_rss`] (or the
/// start), bytes; 0 if it cannot be read.
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Latency quantiles of one turn's operations (a read, or a write with its sync), in
/// microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Operations recorded.
    pub count: u64,
}

/// Highest latency a histogram records (longer ones are clamped to it): 60 s in ns.
const LAT_MAX_NS: u64 = 60_000_000_000;

fn new_histogram() -> Histogram<u64> {
    // 3 significant digits from 1 ns to 60 s: a few tens of KiB, fixed, whatever the count.
    Histogram::new_with_bounds(1, LAT_MAX_NS, 3).expect("valid histogram bounds")
}

/// A turn's latency histogram, shared by its workers: each records into a [`Recorder`] of its
/// own (no lock per operation), merged in when the recorder is dropped. Disabled (records
/// nothing, costs nothing) on the rows that do not show latency.
#[derive(Clone, Default)]
pub struct Latencies(Option<Arc<Mutex<Histogram<u64>>>>);

impl Latencies {
    /// Records if `enabled`.
    pub fn new(enabled: bool) -> Latencies {
        Latencies(enabled.then(|| Arc::new(Mutex::new(new_histogram()))))
    }

    /// A worker's recorder.
    pub fn recorder(&self) -> Recorder {
        Recorder {
            local: self.0.as_ref().map(|_| new_histogram()),
            sink: self.0.clone(),
        }
    }

    /// p50 and p99 of everything merged so far; `None` when disabled or empty.
    pub fn summary(&self) -> Option<Latency> {
        let h = self.0.as_ref()?.lock().unwrap_or_else(|e| e.into_inner());
        (!h.is_empty()).then(|| Latency {
            p50_us: h.value_at_quantile(0.50) as f64 / 1e3,
            p99_us: h.value_at_quantile(0.99) as f64 / 1e3,
            count: h.len(),
        })
    }
}

/// One worker's side of [`Latencies`]: `let t = rec.start(); op; rec.stop(t);`. `Send`, so an
/// async task can hold it across awaits.
pub struct Recorder {
    local: Option<Histogram<u64>>,
    sink: Option<Arc<Mutex<Histogram<u64>>>>,
}

impl Recorder {
    /// The operation starts (`None` when not recording: no clock read).
    #[inline]
    pub fn start(&self) -> Option<Instant> {
        self.local.as_ref().map(|_| Instant::now())
    }

    /// The operation started at `t` is over.
    #[inline]
    pub fn stop(&mut self, t: Option<Instant>) {
        if let (Some(h), Some(t)) = (self.local.as_mut(), t) {
            let ns = (t.elapsed().as_nanos() as u64).clamp(1, LAT_MAX_NS);
            h.saturating_record(ns);
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let (Some(local), Some(sink)) = (self.local.take(), self.sink.as_ref()) {
            let mut h = sink.lock().unwrap_or_else(|e| e.into_inner());
            // Same bounds on both sides: adding cannot fail.
            let _ = h.add(&local);
        }
    }
}

/// Why a contender produced no sample.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "status", content = "reason", rename_all = "kebab-case")]
pub enum Miss {
    /// The workload means nothing for this contender (the reason says why).
    NotApplicable(String),
    /// The kernel refused the feature the contender is made of.
    Unsupported(String),
    /// The API the workload needs does not exist yet (no contender says so today; kept for
    /// the next workload that runs ahead of the API).
    #[allow(dead_code)]
    NotYet(String),
    /// It failed: an error, a panic, a wrong byte, or a timeout.
    Failed(String),
}

impl From<io::Error> for Miss {
    fn from(e: io::Error) -> Miss {
        Miss::Failed(e.to_string())
    }
}

/// A contender's result for one turn.
pub type Outcome = Result<Sample, Miss>;

/// Wall and CPU time of a timed section.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    /// Wall seconds.
    pub secs: f64,
    /// User + system CPU seconds of the whole process.
    pub cpu_secs: f64,
}

/// A running clock: wall time and process CPU time at its start.
pub struct Meter {
    start: Instant,
    cpu: f64,
}

/// User + system CPU seconds of every thread of this process so far.
pub fn process_cpu_secs() -> f64 {
    // SAFETY: getrusage fills the struct it is given; a zeroed rusage is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

impl Meter {
    /// Starts the clocks.
    pub fn start() -> Meter {
        let cpu = process_cpu_secs();
        Meter {
            start: Instant::now(),
            cpu,
        }
    }

    /// Reads the clocks.
    pub fn stop(self) -> Measured {
        let secs = self.start.elapsed().as_secs_f64();
        Measured {
            secs,
            cpu_secs: (process_cpu_secs() - self.cpu).max(0.0),
        }
    }
}

/// Start and finish barriers shared by `n` workers and the measuring thread.
struct Barriers {
    start: Barrier,
    finish: Barrier,
}

/// One worker's side of the gate: call [`ready`](Gate::ready) when set up, [`done`](Gate::done)
/// when the timed work is over. Dropping it (an early error, a panic) passes both barriers, so
/// the other workers and the measuring thread never wait forever.
pub struct Gate<'a> {
    barriers: &'a Barriers,
    ready: bool,
    done: bool,
}

impl Gate<'_> {
    /// Set-up is over; waits until every worker is, then the clock runs.
    pub fn ready(&mut self) {
        if !self.ready {
            self.ready = true;
            self.barriers.start.wait();
        }
    }

    /// The timed work is over; waits for every worker, then the clock stops.
    pub fn done(&mut self) {
        self.ready();
        if !self.done {
            self.done = true;
            self.barriers.finish.wait();
        }
    }
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        self.done();
    }
}

/// Runs `body(i, gate)` on `n` scoped threads and measures from the moment all of them called
/// `gate.ready()` to the moment all called `gate.done()`. Returns each thread's result in
/// order (the first error wins) and the measurement.
pub fn run_gated<T: Send>(
    n: usize,
    body: impl Fn(usize, &mut Gate<'_>) -> io::Result<T> + Sync,
) -> io::Result<(Vec<T>, Measured)> {
    let barriers = Barriers {
        start: Barrier::new(n + 1),
        finish: Barrier::new(n + 1),
    };
    let (results, measured) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let barriers = &barriers;
                let body = &body;
                std::thread::Builder::new()
                    .name(format!("bench-worker-{i}"))
                    .spawn_scoped(s, move || {
                        let mut gate = Gate {
                            barriers,
                            ready: false,
                            done: false,
                        };
                        body(i, &mut gate)
                    })
                    .expect("spawn a worker thread")
            })
            .collect();
        barriers.start.wait();
        let meter = Meter::start();
        barriers.finish.wait();
        let measured = meter.stop();
        let results: Vec<io::Result<T>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|p| Err(io::Error::other(panic_message(&*p))))
            })
            .collect();
        (results, measured)
    });
    let results = results.into_iter().collect::<io::Result<Vec<T>>>()?;
    Ok((results, measured))
}

/// The text of a panic payload.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_string()
    }
}

/// A deadline that workers check every few hundred reads.
#[derive(Clone, Copy)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// Starts now; `None` never expires.
    pub fn after(d: Option<Duration>) -> Deadline {
        Deadline(d.map(|d| Instant::now() + d))
    }

    /// Whether the `k`-th read (counting from 0) should be the last: checks the clock every
    /// 256 reads only, so the check costs nothing measurable.
    #[inline]
    pub fn expired_at(&self, k: usize) -> bool {
        match self.0 {
            Some(t) => k % 256 == 255 && Instant::now() >= t,
            None => false,
        }
    }
}

/// The offsets worker `i` of `n` reads: every `n`-th, starting at `i`, so that any number of
/// workers read the same set.
pub fn strided(offsets: &[u64], i: usize, n: usize) -> impl Iterator<Item = u64> + '_ {
    offsets.iter().skip(i).step_by(n.max(1)).copied()
}
