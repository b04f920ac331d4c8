//! The workloads: what each one reads or writes, in which cache state, and how its result is
//! counted.
//!
//! A workload becomes one or more [`Case`]s (one per concurrency level). For each round a case
//! makes a [`Task`] — the same offsets for every contender in that round — and each contender
//! runs it with one small function of the [`Contender`](crate::contenders::Contender) trait.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::args::Config;
use crate::data::{self, Step, BLOCK};

/// A workload, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// 4 KiB random reads of a wholly cached file.
    Hit,
    /// The same through a zero-copy page API.
    HitPage,
    /// 128 KiB sequential reads of a cold file.
    SeqCold,
    /// 4 KiB random reads of a cold file, 1 and 32 in flight.
    RandCold,
    /// Uniform 4 KiB random reads over a file 8x the budget, 1 and 32 in flight, after a
    /// warm-up that fills the cache: steady-state eviction.
    RandLarge,
    /// Zipf(0.99) 4 KiB reads over a file 4x the budget.
    Zipf,
    /// Hot-set hit ratio before, during and after a scan of 2x the budget.
    Scan,
    /// YCSB-A-like: 50 % reads, 50 % updates of 4 KiB records under Zipf(0.99), a data sync
    /// every 64 updates, over a file 4x the budget.
    Mixed,
    /// 64 KiB sequential writes of a new file, then one `fsync`.
    SeqWrite,
    /// 4 KiB random overwrites, each followed by `fdatasync`, 1 and 16 writers.
    RandWriteSync,
    /// redb's benchmark phases, redb over uringcache against redb on its file backend held to
    /// the same memory (`redb.rs`; on request only, not in [`Workload::ALL`]).
    Redb,
}

impl Workload {
    /// Every workload, in the order a run runs them.
    pub const ALL: [Workload; 10] = [
        Workload::Hit,
        Workload::HitPage,
        Workload::SeqCold,
        Workload::RandCold,
        Workload::RandLarge,
        Workload::Zipf,
        Workload::Scan,
        Workload::Mixed,
        Workload::SeqWrite,
        Workload::RandWriteSync,
    ];

    /// Workloads that run only when named (`--workload redb`): not in a run of every workload.
    pub const ON_REQUEST: [Workload; 1] = [Workload::Redb];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Hit => "hit",
            Workload::HitPage => "hit-page",
            Workload::SeqCold => "seq-cold",
            Workload::RandCold => "rand-cold",
            Workload::RandLarge => "rand-large",
            Workload::Zipf => "zipf",
            Workload::Scan => "scan",
            Workload::Mixed => "mixed",
            Workload::SeqWrite => "seq-write",
            Workload::RandWriteSync => "rand-write-sync",
            Workload::Redb => "redb",
        }
    }

    /// Whether it writes (its tasks are [`Task::Writes`]).
    pub fn is_write(self) -> bool {
        matches!(self, Workload::SeqWrite | Workload::RandWriteSync)
    }

    /// Whether its data is larger than the budget, so that the kernel contenders also run at
    /// the same budget (in a memory cgroup) and its ratios are taken against that.
    pub fn budget_matters(self) -> bool {
        matches!(
            self,
            Workload::RandLarge | Workload::Zipf | Workload::Scan | Workload::Mixed
        )
    }

    /// The workload called `name`.
    pub fn from_name(name: &str) -> Option<Workload> {
        Workload::ALL
            .into_iter()
            .chain(Workload::ON_REQUEST)
            .find(|w| w.name() == name)
    }
}

/// How a case's figure is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Unit {
    /// Reads (or writes) per second.
    #[serde(rename = "ops/s")]
    OpsPerSec,
    /// Megabytes (10^6) per second (read or written).
    #[serde(rename = "MB/s")]
    MBps,
    /// Hot-set hit ratio during the scan (before and after ride along).
    #[serde(rename = "hit ratio")]
    HitRatio,
}

/// The kernel page cache's state the harness sets before every contender's turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Prep {
    /// The files are read whole through the kernel cache (cached); contenders with a cache of
    /// their own fill it before their timed section.
    Warm,
    /// The kernel's copy is dropped (`POSIX_FADV_DONTNEED`); caches of contenders are fresh.
    Cold,
    /// The file does not exist: the harness removes it (and syncs the filesystem, so the
    /// freeing of its blocks is not charged to the next contender) before every turn.
    Fresh,
}

/// How a job's reads are laid out, as a hint contenders may pass on (`posix_fadvise`,
/// `madvise`, [`uringcache::Advice`], a stream reader).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Access {
    /// From start to end.
    Sequential,
    /// Anywhere.
    Random,
}

/// Serde for the `Arc<Vec<T>>` fields of the jobs (serde's `rc` feature is not enabled), so
/// that a job can be sent to a child process in a cgroup.
mod arc_vec {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(
        v: &Arc<Vec<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        v.as_slice().serialize(s)
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Arc<Vec<T>>, D::Error> {
        Vec::<T>::deserialize(d).map(Arc::new)
    }
}

/// One turn's reads: every contender gets the same job in a round.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Job {
    /// The file.
    pub path: PathBuf,
    /// Its length.
    pub file_len: u64,
    /// Bytes per read.
    pub size: usize,
    /// Timed reads, in order; task `i` of `n` takes every `n`-th from `i`.
    #[serde(with = "arc_vec")]
    pub offsets: Arc<Vec<u64>>,
    /// Untimed reads made before the timed ones (fill the caches); contenders without a cache
    /// skip them.
    #[serde(with = "arc_vec")]
    pub warmup: Arc<Vec<u64>>,
    /// Reads in flight: threads or tasks.
    pub tasks: usize,
    /// The access pattern.
    pub access: Access,
    /// Whether the file is to be wholly cached before the timed section.
    pub warm: bool,
    /// uringcache's memory budget.
    pub budget: usize,
    /// Stop the timed section early (reads counted) after this long.
    pub deadline: Option<Duration>,
    /// Whether contenders record each read's latency (the queue-depth-1 rows).
    pub latency: bool,
}

/// When a write job makes its bytes durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Durability {
    /// Each writer makes one full sync (`fsync`, `sync_all`) after its last write.
    AtEnd,
    /// A data sync (`fdatasync`, `sync_data`) after every write, before the next.
    EachWrite,
}

/// One turn's writes: every contender gets the same job in a round (with its own stamp).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct WriteJob {
    /// The file.
    pub path: PathBuf,
    /// Whether the contender creates the file (it does not exist before the turn); otherwise
    /// it exists, `file_len` bytes long, and is overwritten in place.
    pub new_file: bool,
    /// The file's length after the turn.
    pub file_len: u64,
    /// Bytes per write (a multiple of 4 KiB, at 4 KiB-aligned offsets).
    pub size: usize,
    /// The writes, in order; writer `i` of `n` takes every `n`-th from `i`.
    #[serde(with = "arc_vec")]
    pub offsets: Arc<Vec<u64>>,
    /// Writers: threads or tasks.
    pub tasks: usize,
    /// The access pattern (a sequential job has one writer and needs no seeks).
    pub access: Access,
    /// When the bytes are made durable.
    pub sync: Durability,
    /// uringcache's memory budget.
    pub budget: usize,
    /// This turn's stamp, written into every block (see [`data::stamp`]) and checked by the
    /// read-back after the turn.
    pub stamp: u64,
    /// Whether contenders record each write's latency, its sync included (the
    /// queue-depth-1 rows).
    pub latency: bool,
}

/// One turn of the scan-resistance workload.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ScanJob {
    /// The hot-set file (10 % of the budget).
    pub hot_path: PathBuf,
    /// The scanned file (2x the budget).
    pub scan_path: PathBuf,
    /// Bytes per scan read.
    pub scan_read: usize,
    /// uringcache's memory budget (and the LRU model's capacity).
    pub budget: usize,
    /// The accesses, in order.
    #[serde(with = "arc_vec")]
    pub trace: Arc<Vec<Step>>,
}

/// One turn of the mixed workload: reads and updates of 4 KiB records in one trace.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct MixedJob {
    /// The file (existing, `file_len` bytes, overwritten in place).
    pub path: PathBuf,
    /// Its length.
    pub file_len: u64,
    /// The records, in order (byte offsets of 4 KiB blocks).
    #[serde(with = "arc_vec")]
    pub offsets: Arc<Vec<u64>>,
    /// Whether each record of `offsets` is updated (written, stamped) rather than read.
    #[serde(with = "arc_vec")]
    pub updates: Arc<Vec<bool>>,
    /// Untimed reads made before the timed trace (fill the caches).
    #[serde(with = "arc_vec")]
    pub warmup: Arc<Vec<u64>>,
    /// A data sync (`fdatasync`, `sync_data`) after every this many updates, and one at the
    /// end (timed).
    pub sync_every: usize,
    /// uringcache's memory budget.
    pub budget: usize,
    /// This turn's stamp, written into every updated block and checked by the read-back.
    pub stamp: u64,
}

impl MixedJob {
    /// The offsets the trace updates.
    pub fn updated(&self) -> Vec<u64> {
        self.offsets
            .iter()
            .zip(self.updates.iter())
            .filter(|(_, &u)| u)
            .map(|(&o, _)| o)
            .collect()
    }
}

/// What one turn runs.
#[derive(Clone, Debug)]
pub enum Task {
    /// Reads copied into the caller's buffer.
    Reads(Arc<Job>),
    /// Reads through a zero-copy page API.
    Pages(Arc<Job>),
    /// The scan-resistance trace.
    Scan(Arc<ScanJob>),
    /// Writes (and syncs), checked on read-back after the turn.
    Writes(Arc<WriteJob>),
    /// Reads and updates in one trace, the updates checked on read-back after the turn.
    Mixed(Arc<MixedJob>),
}

/// High bits of every turn's stamp (the low bits count turns).
const STAMP_BASE: u64 = 0x57a3_5eed_0000_0000;

impl Task {
    /// The task of turn number `turn` of the run: the same, except that a write job gets a
    /// stamp of its own, so that each turn's read-back sees that turn's bytes, not the bytes
    /// an earlier contender wrote at the same offsets.
    pub fn for_turn(&self, turn: u64) -> Task {
        match self {
            Task::Writes(j) => Task::Writes(Arc::new(WriteJob {
                stamp: STAMP_BASE | turn,
                ..(**j).clone()
            })),
            Task::Mixed(j) => Task::Mixed(Arc::new(MixedJob {
                stamp: STAMP_BASE | turn,
                ..(**j).clone()
            })),
            other => other.clone(),
        }
    }

    /// The read-back after a successful turn (writes only): see [`data::check_written`].
    pub fn check_after(&self) -> std::io::Result<()> {
        match self {
            Task::Writes(j) => {
                data::check_written(&j.path, j.file_len, j.size, &j.offsets, j.stamp)
            }
            Task::Mixed(j) => {
                data::check_written(&j.path, j.file_len, BLOCK, &j.updated(), j.stamp)
            }
            _ => Ok(()),
        }
    }
}

/// One row group of the table: a workload at one concurrency level.
pub struct Case {
    /// The workload.
    pub workload: Workload,
    /// The name in the table, e.g. `rand-cold, 32 in flight`.
    pub name: String,
    /// How its figure is counted.
    pub unit: Unit,
    /// uringcache's target as a ratio to the kernel, if the issue sets one.
    pub target: Option<f64>,
    /// The kernel cache state set before each turn.
    pub prep: Prep,
    /// The files whose kernel cache state is set.
    pub files: Vec<PathBuf>,
    /// Reads (or writers) in flight: threads or tasks.
    pub depth: usize,
    /// The id of the contender its ratios are taken against (the kernel at the same budget
    /// where the budget matters, the unbounded kernel otherwise).
    pub baseline: &'static str,
    /// What the case measures, one line for the report.
    pub about: String,
    /// Makes round `r`'s task (offsets seeded by the run's seed, the case and the round).
    pub make: Box<dyn Fn(u64) -> Task>,
}

/// The files the chosen workloads need, once written.
#[derive(Default, Clone)]
pub struct Files {
    /// The cached file (hit, hit-page).
    pub hit: Option<PathBuf>,
    /// The cold file (seq-cold, rand-cold).
    pub big: Option<PathBuf>,
    /// The zipf file (4x budget).
    pub zipf: Option<PathBuf>,
    /// The scan's hot-set file (10 % of budget).
    pub hot: Option<PathBuf>,
    /// The scanned file (2x budget).
    pub scan: Option<PathBuf>,
    /// The new file of seq-write (not created by the harness).
    pub seq_write: Option<PathBuf>,
    /// The preallocated file rand-write-sync overwrites.
    pub sync: Option<PathBuf>,
    /// The rand-large file (8x budget).
    pub large: Option<PathBuf>,
    /// The mixed workload's file (4x budget).
    pub mixed: Option<PathBuf>,
}

/// Size of the rand-large file.
pub fn large_len(cfg: &Config) -> u64 {
    cfg.budget * 8
}

/// Size of the mixed workload's file.
pub fn mixed_len(cfg: &Config) -> u64 {
    cfg.budget * 4
}

/// Size of the zipf file.
pub fn zipf_len(cfg: &Config) -> u64 {
    cfg.budget * 4
}

/// Size of the scan's hot-set file: 10 % of the budget, in whole blocks.
pub fn hot_len(cfg: &Config) -> u64 {
    (cfg.budget / 10 / BLOCK as u64).max(1) * BLOCK as u64
}

/// Size of the scanned file.
pub fn scan_len(cfg: &Config) -> u64 {
    cfg.budget * 2
}

/// Reads in flight of `rand-cold`.
pub const RAND_DEPTHS: [usize; 2] = [1, 32];
/// Tasks of `hit`.
pub const HIT_TASKS: [usize; 2] = [1, 2];
/// Bytes per sequential read.
pub const SEQ_READ: usize = 128 << 10;
/// Zipf exponent.
pub const ZIPF_S: f64 = 0.99;
/// Bytes per sequential write.
pub const SEQ_WRITE: usize = 64 << 10;
/// Writers of `rand-write-sync`.
pub const SYNC_WRITERS: [usize; 2] = [1, 16];
/// Updates between two data syncs in `mixed`.
pub const MIXED_SYNC_EVERY: usize = 64;

fn seed_of(cfg: &Config, case: &str, round: u64) -> u64 {
    // FNV-1a of the case name: stable across runs and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in case.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h ^ cfg.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ round
}

/// The baseline of `w`'s cases (see [`Case::baseline`]).
pub fn baseline(w: Workload) -> &'static str {
    if w.budget_matters() {
        crate::contenders::BUDGET_BASELINE
    } else {
        crate::contenders::BASELINE
    }
}

/// The cases of the chosen workloads over `files`.
pub fn cases(cfg: &Config, files: &Files) -> Vec<Case> {
    let mut out = Vec::new();
    let budget = cfg.budget as usize;
    for &w in &cfg.workloads {
        match w {
            Workload::Hit | Workload::HitPage => {
                let path = files.hit.clone().expect("the hit file");
                let len = cfg.hit_size;
                // Big enough to hold the file with room to spare.
                let hit_budget = (len + len / 4) as usize;
                let tasks: &[usize] = if w == Workload::Hit { &HIT_TASKS } else { &[1] };
                for &n in tasks {
                    let name = format!("{}, {n} task{}", w.name(), if n == 1 { "" } else { "s" });
                    let (cfg2, name2, path2) = (cfg.clone(), name.clone(), path.clone());
                    out.push(Case {
                        workload: w,
                        unit: Unit::OpsPerSec,
                        target: (w == Workload::Hit).then_some(3.0),
                        prep: Prep::Warm,
                        depth: n,
                        baseline: baseline(w),
                        files: vec![path.clone()],
                        about: if w == Workload::Hit {
                            format!(
                                "4 KiB random reads of a wholly cached {} file, {n} thread(s)/task(s), at most {:.1} s each",
                                human(len),
                                cfg.hit_time.as_secs_f64()
                            )
                        } else {
                            "the same through a zero-copy page API (no copy into a buffer)"
                                .to_string()
                        },
                        make: Box::new(move |r| {
                            let job = Arc::new(Job {
                                path: path2.clone(),
                                file_len: len,
                                size: BLOCK,
                                offsets: Arc::new(data::uniform_offsets(
                                    seed_of(&cfg2, &name2, r),
                                    len,
                                    BLOCK,
                                    cfg2.hit_ops * n,
                                )),
                                warmup: Arc::new(Vec::new()),
                                tasks: n,
                                access: Access::Random,
                                warm: true,
                                budget: hit_budget,
                                deadline: Some(cfg2.hit_time),
                                latency: false,
                            });
                            if w == Workload::Hit {
                                Task::Reads(job)
                            } else {
                                Task::Pages(job)
                            }
                        }),
                        name,
                    });
                }
            }
            Workload::SeqCold => {
                let path = files.big.clone().expect("the cold file");
                let len = cfg.size;
                let path2 = path.clone();
                out.push(Case {
                    workload: w,
                    name: w.name().to_string(),
                    unit: Unit::MBps,
                    target: Some(1.0),
                    prep: Prep::Cold,
                    depth: 1,
                    baseline: baseline(w),
                    files: vec![path.clone()],
                    about: format!(
                        "128 KiB sequential reads of a cold {} file, one reader; uringcache budget {}",
                        human(len),
                        human(cfg.budget)
                    ),
                    make: Box::new(move |_| {
                        Task::Reads(Arc::new(Job {
                            path: path2.clone(),
                            file_len: len,
                            size: SEQ_READ,
                            offsets: Arc::new(data::sequential_offsets(len, SEQ_READ)),
                            warmup: Arc::new(Vec::new()),
                            tasks: 1,
                            access: Access::Sequential,
                            warm: false,
                            budget,
                            deadline: None,
                            latency: false,
                        }))
                    }),
                });
            }
            Workload::RandCold => {
                let path = files.big.clone().expect("the cold file");
                let len = cfg.size;
                for &n in &RAND_DEPTHS {
                    let name = format!("{}, {n} in flight", w.name());
                    let (cfg2, name2, path2) = (cfg.clone(), name.clone(), path.clone());
                    out.push(Case {
                        workload: w,
                        unit: Unit::OpsPerSec,
                        target: (n == 32).then_some(1.0),
                        prep: Prep::Cold,
                        depth: n,
                        baseline: baseline(w),
                        files: vec![path.clone()],
                        about: format!(
                            "{} random 4 KiB reads of a cold {} file, {n} in flight (kernel: {n} thread(s)); random-access hints for all",
                            cfg.rand_ops,
                            human(len)
                        ),
                        make: Box::new(move |r| {
                            Task::Reads(Arc::new(Job {
                                path: path2.clone(),
                                file_len: len,
                                size: BLOCK,
                                offsets: Arc::new(data::uniform_offsets(
                                    seed_of(&cfg2, &name2, r),
                                    len,
                                    BLOCK,
                                    cfg2.rand_ops,
                                )),
                                warmup: Arc::new(Vec::new()),
                                tasks: n,
                                access: Access::Random,
                                warm: false,
                                budget,
                                deadline: None,
                                latency: n == 1,
                            }))
                        }),
                        name,
                    });
                }
            }
            Workload::RandLarge => {
                let path = files.large.clone().expect("the rand-large file");
                let len = large_len(cfg);
                for &n in &RAND_DEPTHS {
                    let name = format!("{}, {n} in flight", w.name());
                    let (cfg2, name2, path2) = (cfg.clone(), name.clone(), path.clone());
                    // Enough reads to fill the budget: uniform over 8x the budget, about 94 %
                    // of them land on distinct blocks.
                    let warm = cfg.budget as usize / BLOCK;
                    out.push(Case {
                        workload: w,
                        unit: Unit::OpsPerSec,
                        target: Some(1.0),
                        prep: Prep::Cold,
                        files: vec![path.clone()],
                        depth: n,
                        baseline: baseline(w),
                        about: format!(
                            "uniform 4 KiB random reads over a {} file (8x the {} budget), {n} in flight: {warm} untimed warm-up reads fill the cache, then {} timed (steady-state eviction)",
                            human(len),
                            human(cfg.budget),
                            cfg.rand_ops
                        ),
                        make: Box::new(move |r| {
                            let seed = seed_of(&cfg2, &name2, r);
                            Task::Reads(Arc::new(Job {
                                path: path2.clone(),
                                file_len: len,
                                size: BLOCK,
                                offsets: Arc::new(data::uniform_offsets(
                                    seed,
                                    len,
                                    BLOCK,
                                    cfg2.rand_ops,
                                )),
                                warmup: Arc::new(data::uniform_offsets(
                                    seed ^ 0x77a2,
                                    len,
                                    BLOCK,
                                    warm,
                                )),
                                tasks: n,
                                access: Access::Random,
                                warm: false,
                                budget,
                                deadline: None,
                                latency: n == 1,
                            }))
                        }),
                        name,
                    });
                }
            }
            Workload::Mixed => {
                let path = files.mixed.clone().expect("the mixed file");
                let len = mixed_len(cfg);
                let (cfg2, path2) = (cfg.clone(), path.clone());
                out.push(Case {
                    workload: w,
                    name: w.name().to_string(),
                    unit: Unit::OpsPerSec,
                    target: Some(1.0),
                    prep: Prep::Cold,
                    files: vec![path.clone()],
                    depth: 1,
                    baseline: baseline(w),
                    about: format!(
                        "YCSB-A-like over a {} file (4x the {} budget), one client: Zipf({ZIPF_S}) 4 KiB records, 50 % reads / 50 % updates, a data sync (fdatasync, sync_data) every {MIXED_SYNC_EVERY} updates and at the end; {} warm-up reads, then {} timed operations; updates read back after each turn",
                        human(len),
                        human(cfg.budget),
                        cfg.zipf_ops,
                        cfg.zipf_ops
                    ),
                    make: Box::new(move |r| {
                        let seed = seed_of(&cfg2, "mixed", r);
                        let mut all = data::zipf_offsets(seed, len, ZIPF_S, cfg2.zipf_ops * 2);
                        let timed = all.split_off(cfg2.zipf_ops);
                        let updates = data::coin_flips(seed ^ 0x5a, timed.len());
                        Task::Mixed(Arc::new(MixedJob {
                            path: path2.clone(),
                            file_len: len,
                            offsets: Arc::new(timed),
                            updates: Arc::new(updates),
                            warmup: Arc::new(all),
                            sync_every: MIXED_SYNC_EVERY,
                            budget,
                            stamp: STAMP_BASE,
                        }))
                    }),
                });
            }
            Workload::Zipf => {
                let path = files.zipf.clone().expect("the zipf file");
                let len = zipf_len(cfg);
                let (cfg2, path2) = (cfg.clone(), path.clone());
                out.push(Case {
                    workload: w,
                    name: w.name().to_string(),
                    unit: Unit::OpsPerSec,
                    target: Some(1.0),
                    prep: Prep::Cold,
                    depth: 1,
                    baseline: baseline(w),
                    files: vec![path.clone()],
                    about: format!(
                        "Zipf({ZIPF_S}) 4 KiB reads over a {} file (4x the {} budget), one reader: {} warm-up reads, then {} timed (at most {:.1} s)",
                        human(len),
                        human(cfg.budget),
                        cfg.zipf_ops,
                        cfg.zipf_ops,
                        cfg.zipf_time.as_secs_f64()
                    ),
                    make: Box::new(move |r| {
                        let mut all = data::zipf_offsets(
                            seed_of(&cfg2, "zipf", r),
                            len,
                            ZIPF_S,
                            cfg2.zipf_ops * 2,
                        );
                        let timed = all.split_off(cfg2.zipf_ops);
                        Task::Reads(Arc::new(Job {
                            path: path2.clone(),
                            file_len: len,
                            size: BLOCK,
                            offsets: Arc::new(timed),
                            warmup: Arc::new(all),
                            tasks: 1,
                            access: Access::Random,
                            warm: false,
                            budget,
                            deadline: Some(cfg2.zipf_time),
                            latency: false,
                        }))
                    }),
                });
            }
            Workload::Scan => {
                let hot = files.hot.clone().expect("the hot file");
                let scan = files.scan.clone().expect("the scan file");
                let hot_blocks = hot_len(cfg) / BLOCK as u64;
                let slen = scan_len(cfg);
                let (cfg2, hot2, scan2) = (cfg.clone(), hot.clone(), scan.clone());
                out.push(Case {
                    workload: w,
                    name: w.name().to_string(),
                    unit: Unit::HitRatio,
                    target: None,
                    prep: Prep::Cold,
                    depth: 1,
                    baseline: baseline(w),
                    files: vec![hot.clone(), scan.clone()],
                    about: format!(
                        "hot-set hit ratio (uniform 4 KiB reads of a {} hot file, 10 % of the budget) before / during / after one 128 KiB sequential scan of a {} file (2x the budget), one hot read per {} KiB scanned",
                        human(hot_len(cfg)),
                        human(slen),
                        data::SCAN_BYTES_PER_HOT_READ >> 10
                    ),
                    make: Box::new(move |r| {
                        Task::Scan(Arc::new(ScanJob {
                            hot_path: hot2.clone(),
                            scan_path: scan2.clone(),
                            scan_read: SEQ_READ,
                            budget,
                            trace: Arc::new(data::scan_trace(
                                seed_of(&cfg2, "scan", r),
                                hot_blocks,
                                slen,
                                SEQ_READ,
                            )),
                        }))
                    }),
                });
            }
            Workload::SeqWrite => {
                let path = files.seq_write.clone().expect("the seq-write path");
                let len = cfg.write_size;
                let path2 = path.clone();
                out.push(Case {
                    workload: w,
                    name: w.name().to_string(),
                    unit: Unit::MBps,
                    target: Some(1.2),
                    prep: Prep::Fresh,
                    depth: 1,
                    baseline: baseline(w),
                    files: vec![path.clone()],
                    about: format!(
                        "64 KiB sequential writes of a new {} file, then one fsync (sync_all), timed together; uringcache budget {}, a fresh cache each turn; length and a sample of blocks read back after each turn",
                        human(len),
                        human(cfg.budget)
                    ),
                    make: Box::new(move |_| {
                        Task::Writes(Arc::new(WriteJob {
                            path: path2.clone(),
                            new_file: true,
                            file_len: len,
                            size: SEQ_WRITE,
                            offsets: Arc::new(data::sequential_offsets(len, SEQ_WRITE)),
                            tasks: 1,
                            access: Access::Sequential,
                            sync: Durability::AtEnd,
                            budget,
                            stamp: STAMP_BASE,
                            latency: false,
                        }))
                    }),
                });
            }
            Workload::RandWriteSync => {
                let path = files.sync.clone().expect("the rand-write-sync file");
                let len = cfg.sync_size;
                for &n in &SYNC_WRITERS {
                    let name = format!("{}, {n} writer{}", w.name(), if n == 1 { "" } else { "s" });
                    let (cfg2, name2, path2) = (cfg.clone(), name.clone(), path.clone());
                    out.push(Case {
                        workload: w,
                        unit: Unit::OpsPerSec,
                        target: Some(if n == 1 { 1.0 } else { 3.0 }),
                        prep: Prep::Cold,
                        depth: n,
                        baseline: baseline(w),
                        files: vec![path.clone()],
                        about: format!(
                            "{} random 4 KiB overwrites of a preallocated, synced {} file, each followed by fdatasync (sync_data), {n} writer(s) (kernel: {n} thread(s); uringcache: {n} task(s) on one cache, whose concurrent syncs share flushes); uringcache budget {}",
                            cfg.sync_ops,
                            human(len),
                            human(cfg.budget)
                        ),
                        make: Box::new(move |r| {
                            Task::Writes(Arc::new(WriteJob {
                                path: path2.clone(),
                                new_file: false,
                                file_len: len,
                                size: BLOCK,
                                offsets: Arc::new(data::uniform_offsets(
                                    seed_of(&cfg2, &name2, r),
                                    len,
                                    BLOCK,
                                    cfg2.sync_ops,
                                )),
                                tasks: n,
                                access: Access::Random,
                                sync: Durability::EachWrite,
                                budget,
                                stamp: STAMP_BASE,
                                latency: n == 1,
                            }))
                        }),
                        name,
                    });
                }
            }
            // No cases: it runs on its own, after the others (`redb.rs`).
            Workload::Redb => {}
        }
    }
    out
}

/// `2 GiB`, `128 MiB`, `6.4 MiB`.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if bytes >= 1 << 30 {
        trim(b / (1u64 << 30) as f64, "GiB")
    } else if bytes >= 1 << 20 {
        trim(b / (1u64 << 20) as f64, "MiB")
    } else if bytes >= 1 << 10 {
        trim(b / 1024.0, "KiB")
    } else {
        format!("{bytes} B")
    }
}

fn trim(v: f64, unit: &str) -> String {
    if (v - v.round()).abs() < 0.05 {
        format!("{v:.0} {unit}")
    } else {
        format!("{v:.1} {unit}")
    }
}
