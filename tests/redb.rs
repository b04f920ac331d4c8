//! Differential test of redb on the cache (`uringcache_redb::UringcacheBackend`) against redb on
//! its own file backend: the same seeded workload runs on both databases, every result of every
//! operation is compared, and after each batch the full contents of every table, the table
//! list and (after a close) the length of each file on disk; at the end redb's
//! `check_integrity` on both, and the two files byte for byte (redb is deterministic: the same
//! operations write the same bytes to the same places).
//!
//! The workload: inserts (small values, a few KiB, now and then 1–2.5 MiB), overwrites (few
//! keys), removals, `retain_in` over ranges, `pop_first`, gets and forward and reverse range
//! scans inside write transactions, three tables, commits with `Durability::Immediate` and
//! `None`, aborted transactions, a close and reopen (on the same cache, whose pages of the file
//! stay across the close), and `compact`. redb's own cache is 0 or 64 KiB, so its reads reach
//! the cache. Budgets from 16 KiB (four pages: multi-MiB values go through four frames) to
//! 32 MiB; both backends.
//!
//! `REDB_DIFF_OPS` (default 150) operations per budget; `REDB_DIFF_SEED` replays one seed
//! (a failure prints it); `REDB_DIFF_SEEDS` (default 1) seeds per budget; `REDB_DIFF_BUDGET`
//! (in bytes: 16384, 262144 or 33554432) runs that budget only. Long run:
//! `REDB_DIFF_OPS=5000 REDB_DIFF_SEEDS=4 cargo test --release --test redb`.

mod common;

use std::fmt;
use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    TableError, TableHandle, WriteTransaction,
};
use uringcache::{Backend, Cache};
use uringcache_redb::UringcacheBackend;

const TABLES: [TableDefinition<u64, &[u8]>; 3] = [
    TableDefinition::new("small"),
    TableDefinition::new("mixed"),
    TableDefinition::new("big"),
];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
        })
        .unwrap_or(default)
}

/// The bytes of value number `n`, `len` long.
fn value(n: u64, len: usize) -> Vec<u8> {
    common::pattern(len, n)
}

#[derive(Clone)]
enum Op {
    Insert {
        t: usize,
        k: u64,
        v: Vec<u8>,
    },
    Remove {
        t: usize,
        k: u64,
    },
    Get {
        t: usize,
        k: u64,
    },
    Range {
        t: usize,
        lo: u64,
        hi: u64,
        rev: bool,
    },
    RetainIn {
        t: usize,
        lo: u64,
        hi: u64,
        modulo: u64,
    },
    PopFirst {
        t: usize,
    },
    Len {
        t: usize,
    },
}

impl fmt::Debug for Op {
    /// A value as its length.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Insert { t, k, v } => write!(f, "Insert {{ t: {t}, k: {k}, {} bytes }}", v.len()),
            Op::Remove { t, k } => write!(f, "Remove {{ t: {t}, k: {k} }}"),
            Op::Get { t, k } => write!(f, "Get {{ t: {t}, k: {k} }}"),
            Op::Range { t, lo, hi, rev } => write!(f, "Range {{ t: {t}, {lo}..{hi}, rev: {rev} }}"),
            Op::RetainIn { t, lo, hi, modulo } => {
                write!(
                    f,
                    "RetainIn {{ t: {t}, {lo}..{hi}, drop k % {modulo} == 0 }}"
                )
            }
            Op::PopFirst { t } => write!(f, "PopFirst {{ t: {t} }}"),
            Op::Len { t } => write!(f, "Len {{ t: {t} }}"),
        }
    }
}

/// What an operation returned, compared between the two databases.
#[derive(PartialEq)]
enum Out {
    Value(Option<Vec<u8>>),
    Entries(Entries),
    Len(u64),
    Unit,
}

impl fmt::Debug for Out {
    /// Lengths and a checksum, not megabytes of values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn sum(v: &[u8]) -> u64 {
            v.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            })
        }
        match self {
            Out::Value(None) => write!(f, "None"),
            Out::Value(Some(v)) => write!(f, "{} bytes #{:x}", v.len(), sum(v)),
            Out::Entries(e) => {
                write!(f, "{} entries [", e.len())?;
                for (k, v) in e.iter().take(8) {
                    write!(f, "{k}: {} bytes #{:x}, ", v.len(), sum(v))?;
                }
                write!(f, "…]")
            }
            Out::Len(n) => write!(f, "len {n}"),
            Out::Unit => write!(f, "()"),
        }
    }
}

fn apply(tx: &WriteTransaction, op: &Op) -> Out {
    let table = |t: usize| tx.open_table(TABLES[t]).expect("open_table");
    match *op {
        Op::Insert { t, k, ref v } => Out::Value(
            table(t)
                .insert(k, v.as_slice())
                .expect("insert")
                .map(|old| old.value().to_vec()),
        ),
        Op::Remove { t, k } => Out::Value(
            table(t)
                .remove(k)
                .expect("remove")
                .map(|old| old.value().to_vec()),
        ),
        Op::Get { t, k } => Out::Value(table(t).get(k).expect("get").map(|v| v.value().to_vec())),
        Op::Range { t, lo, hi, rev } => {
            let table = table(t);
            let range = table.range(lo..hi).expect("range");
            let entries = |kv: redb::Result<(redb::AccessGuard<u64>, redb::AccessGuard<&[u8]>)>| {
                let (k, v) = kv.expect("range entry");
                (k.value(), v.value().to_vec())
            };
            Out::Entries(if rev {
                range.rev().map(entries).collect()
            } else {
                range.map(entries).collect()
            })
        }
        Op::RetainIn { t, lo, hi, modulo } => {
            table(t)
                .retain_in(lo..hi, |k, _| k % modulo != 0)
                .expect("retain_in");
            Out::Unit
        }
        Op::PopFirst { t } => Out::Entries(
            table(t)
                .pop_first()
                .expect("pop_first")
                .map(|(k, v)| vec![(k.value(), v.value().to_vec())])
                .unwrap_or_default(),
        ),
        Op::Len { t } => Out::Len(table(t).len().expect("len")),
    }
}

fn random_op(rng: &mut StdRng, next_value: &mut u64) -> Op {
    // The big table a fifth of the time.
    let t = [0, 0, 1, 1, 2][rng.gen_range(0..5)];
    // Few keys, so that inserts overwrite and removals find something.
    let keys = [64u64, 512, 8][t];
    let k = rng.gen_range(0..keys);
    match rng.gen_range(0..100) {
        0..=54 => {
            let len = match (t, rng.gen_range(0..100)) {
                (2, 0..=19) => rng.gen_range(1 << 20..5 << 19), // multi-MiB
                (2, _) | (1, 0..=19) => rng.gen_range(2_000..20_000),
                _ => rng.gen_range(0..300),
            };
            *next_value += 1;
            Op::Insert {
                t,
                k,
                v: value(*next_value, len),
            }
        }
        55..=69 => Op::Remove { t, k },
        70..=79 => Op::Get { t, k },
        80..=89 => {
            let hi = k + rng.gen_range(1..keys);
            Op::Range {
                t,
                lo: k,
                hi,
                rev: rng.gen_bool(0.3),
            }
        }
        90..=93 => Op::RetainIn {
            t,
            lo: k,
            hi: k + keys / 4,
            modulo: rng.gen_range(2..4),
        },
        94..=96 => Op::PopFirst { t },
        _ => Op::Len { t },
    }
}

/// A table's entries, in key order.
type Entries = Vec<(u64, Vec<u8>)>;

/// Every table's contents, or `None` where the table does not exist.
fn contents(db: &Database) -> Vec<Option<Entries>> {
    let rx = db.begin_read().expect("begin_read");
    let mut names: Vec<String> = rx
        .list_tables()
        .expect("list_tables")
        .map(|h| h.name().to_string())
        .collect();
    names.sort();
    let mut all: Vec<_> = TABLES
        .iter()
        .map(|def| match rx.open_table(*def) {
            Ok(t) => Some(
                t.iter()
                    .expect("iter")
                    .map(|kv| {
                        let (k, v) = kv.expect("entry");
                        (k.value(), v.value().to_vec())
                    })
                    .collect(),
            ),
            Err(TableError::TableDoesNotExist(_)) => None,
            Err(e) => panic!("open_table: {e}"),
        })
        .collect();
    // The table list as one more "table" of names.
    all.push(Some(
        names
            .into_iter()
            .enumerate()
            .map(|(i, n)| (i as u64, n.into_bytes()))
            .collect(),
    ));
    all
}

/// One run's setting, printed with every failure.
#[derive(Clone, Copy, Debug)]
struct Setting {
    backend: Backend,
    budget: usize,
    redb_cache: usize,
    seed: u64,
}

struct Pair {
    setting: Setting,
    cache: Cache,
    file_path: PathBuf,
    ours_path: PathBuf,
    file: Option<Database>,
    ours: Option<Database>,
}

impl Pair {
    fn open(&mut self) {
        let mut b = Database::builder();
        b.set_cache_size(self.setting.redb_cache);
        self.file = Some(b.create(&self.file_path).expect("redb on its file backend"));
        let backend = UringcacheBackend::with_cache(&self.cache, &self.ours_path)
            .unwrap_or_else(|e| panic!("{:?}: open our backend: {e}", self.setting));
        self.ours = Some(
            b.create_with_backend(backend)
                .unwrap_or_else(|e| panic!("{:?}: redb over uringcache: {e}", self.setting)),
        );
    }

    fn close(&mut self) {
        self.file
            .take()
            .unwrap()
            .close()
            .expect("close redb on its file backend");
        self.ours
            .take()
            .unwrap()
            .close()
            .unwrap_or_else(|e| panic!("{:?}: close redb over uringcache: {e}", self.setting));
    }

    fn dbs(&mut self) -> [&mut Database; 2] {
        [self.file.as_mut().unwrap(), self.ours.as_mut().unwrap()]
    }

    #[track_caller]
    fn compare_contents(&mut self, what: &str) {
        let setting = self.setting;
        let [file, ours] = self.dbs();
        let (want, got) = (contents(file), contents(ours));
        for (t, (w, g)) in want.iter().zip(&got).enumerate() {
            if w != g {
                let first = match (w, g) {
                    (Some(w), Some(g)) => w
                        .iter()
                        .zip(g)
                        .position(|(a, b)| a != b)
                        .map(|i| {
                            format!(
                                "first difference at entry {i}: key {} vs {}",
                                w[i].0, g[i].0
                            )
                        })
                        .unwrap_or_else(|| format!("{} entries vs {}", w.len(), g.len())),
                    _ => format!("exists {} vs {}", w.is_some(), g.is_some()),
                };
                panic!("{setting:?}: {what}: table {t} differs: {first}");
            }
        }
    }
}

fn run(setting: Setting, ops: u64) {
    let started = std::time::Instant::now();
    let dir = common::scratch_dir();
    // The settings `UringcacheBackend::new` uses, on the backend under test.
    let cache = UringcacheBackend::cache_builder(setting.budget)
        .backend(setting.backend)
        .build()
        .unwrap_or_else(|e| panic!("{setting:?}: build the cache: {e}"));
    let mut pair = Pair {
        setting,
        cache,
        file_path: dir.path().join("file.redb"),
        ours_path: dir.path().join("ours.redb"),
        file: None,
        ours: None,
    };
    pair.open();
    let mut rng = StdRng::seed_from_u64(setting.seed);
    let mut next_value = setting.seed << 32;
    let mut done = 0u64;
    let mut batch = 0u64;
    let (mut commits, mut aborts, mut reopens, mut compactions, mut huge) = (0, 0, 0, 0, 0);
    while done < ops {
        batch += 1;
        let n = rng.gen_range(1..16u64).min(ops - done);
        let durability = if rng.gen_bool(0.2) {
            Durability::None
        } else {
            Durability::Immediate
        };
        let abort = rng.gen_bool(0.15);
        let batch_ops: Vec<Op> = (0..n)
            .map(|_| random_op(&mut rng, &mut next_value))
            .collect();
        let [file, ours] = pair.dbs();
        let mut txs = [
            file.begin_write().expect("begin_write"),
            ours.begin_write().expect("begin_write"),
        ];
        for tx in &mut txs {
            tx.set_durability(durability).expect("set_durability");
        }
        huge += batch_ops
            .iter()
            .filter(|op| matches!(op, Op::Insert { v, .. } if v.len() >= 1 << 20))
            .count();
        for (i, op) in batch_ops.iter().enumerate() {
            let want = apply(&txs[0], op);
            let got = apply(&txs[1], op);
            assert_eq!(
                got, want,
                "{setting:?}: batch {batch}, op {i} ({op:?}, {done} ops before the batch) differs"
            );
        }
        let [a, b] = txs;
        if abort {
            a.abort().expect("abort");
            b.abort().expect("abort");
            aborts += 1;
        } else {
            a.commit().expect("commit");
            b.commit()
                .unwrap_or_else(|e| panic!("{setting:?}: batch {batch}: commit: {e}"));
            commits += 1;
        }
        done += n;
        pair.compare_contents(&format!("after batch {batch} ({done} ops)"));

        match rng.gen_range(0..100) {
            0..=11 => {
                pair.close();
                let (fl, ol) = (
                    std::fs::metadata(&pair.file_path).unwrap().len(),
                    std::fs::metadata(&pair.ours_path).unwrap().len(),
                );
                assert_eq!(
                    ol, fl,
                    "{setting:?}: after batch {batch}: file lengths on disk after close"
                );
                pair.open();
                pair.compare_contents(&format!("after reopen at batch {batch}"));
                reopens += 1;
            }
            12..=19 => {
                let [file, ours] = pair.dbs();
                let want = file.compact().expect("compact");
                let got = ours
                    .compact()
                    .unwrap_or_else(|e| panic!("{setting:?}: batch {batch}: compact: {e}"));
                assert_eq!(got, want, "{setting:?}: batch {batch}: compact's result");
                pair.compare_contents(&format!("after compact at batch {batch}"));
                compactions += 1;
            }
            _ => {}
        }
    }
    let [file, ours] = pair.dbs();
    assert!(
        file.check_integrity().expect("check_integrity"),
        "file backend repaired"
    );
    assert!(
        ours.check_integrity()
            .unwrap_or_else(|e| panic!("{setting:?}: check_integrity: {e}")),
        "{setting:?}: check_integrity repaired redb over uringcache"
    );
    pair.compare_contents("at the end");
    pair.close();
    let (want, got) = (
        std::fs::read(&pair.file_path).unwrap(),
        common::read_disk(&pair.ours_path).unwrap(),
    );
    common::assert_bytes(
        &got,
        &want,
        &format!("{setting:?}: the two files on disk at the end"),
    );
    let stats = pair.cache.stats();
    eprintln!(
        "{setting:?}: {done} ops in {batch} batches ({commits} commits, {aborts} aborts, \
         {reopens} reopens, {compactions} compactions, {huge} values of 1 MiB or more) in {:.1} s; cache hits {} misses {} evictions {}",
        started.elapsed().as_secs_f64(),
        stats.hits, stats.misses, stats.evictions
    );
    pair.cache.shutdown_blocking().expect("shutdown");
}

/// Seeds to run: `REDB_DIFF_SEED` alone, or `REDB_DIFF_SEEDS` from a base that depends on
/// `salt` (so that each budget gets its own workload).
fn seeds(salt: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("REDB_DIFF_SEED") {
        return vec![s.parse().expect("REDB_DIFF_SEED")];
    }
    (0..env_u64("REDB_DIFF_SEEDS", 1))
        .map(|i| salt * 1000 + i)
        .collect()
}

common::backend_test!(redb_on_the_cache_matches_redb_on_its_file_backend);
fn redb_on_the_cache_matches_redb_on_its_file_backend(backend: Backend) {
    let ops = env_u64("REDB_DIFF_OPS", 150);
    // (budget, redb's cache): four pages and no redb cache, a little of both, roomy.
    for (i, (budget, redb_cache)) in [(16 << 10, 0), (256 << 10, 64 << 10), (32 << 20, 0)]
        .into_iter()
        .enumerate()
    {
        if std::env::var("REDB_DIFF_BUDGET").is_ok_and(|b| b != budget.to_string()) {
            continue;
        }
        for seed in seeds(i as u64 + 1) {
            run(
                Setting {
                    backend,
                    budget,
                    redb_cache,
                    seed,
                },
                ops,
            );
        }
    }
}
