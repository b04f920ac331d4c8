//! redb on the cache under SIGKILL: a child process opens one database (recovering it after the
//! previous kill), commits numbered transactions with `Durability::Immediate` and reports each
//! after `commit` returns; the parent kills it at random moments, some before the child has
//! finished opening (during recovery), most a little after a commit. Every few kills, and
//! after the last, a fresh open in the parent (a process that did not write) finds exactly the
//! commits 1..c, each with its value, with c ≥ the last commit reported (and at most one
//! more: the commit in flight), and `check_integrity` holds.
//!
//! `REDB_KILLS` (default 10 per backend, so 20 in all) kills per backend. Long run:
//! `REDB_KILLS=100 cargo test --release -p uringcache-suite --test redb_kill`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use uringcache::Backend;
use uringcache_redb::UringcacheBackend;

const COMMITS: TableDefinition<u64, &[u8]> = TableDefinition::new("commits");
/// Key 0: the number of the last commit, rewritten by every commit (so every commit changes an
/// old page as well as adding one).
const LAST: TableDefinition<u64, u64> = TableDefinition::new("last");
const CHILD_ENV: &str = "REDB_KILL_CHILD";
const CHILD_BACKEND_ENV: &str = "REDB_KILL_CHILD_BACKEND";
const BUDGET: usize = 256 << 10;

/// Commit `n`'s value: 100..6000 bytes that depend on `n`.
fn value(n: u64) -> Vec<u8> {
    let len = 100 + (n.wrapping_mul(0x9E37_79B9) % 5_900) as usize;
    let mut v = common::pattern(len, n);
    v[..8].copy_from_slice(&n.to_le_bytes());
    v
}

fn open(cache: &uringcache::Cache, path: &Path) -> Database {
    let backend = UringcacheBackend::with_cache(cache, path).expect("open the backend");
    Database::builder()
        .set_cache_size(0)
        .create_with_backend(backend)
        .expect("open the database")
}

/// The child: opens the database, then commits n + 1, n + 2, … for ever (bounded), printing
/// `committed N` after each commit returns. Run only by `commits_reported_survive_sigkill`.
#[test]
#[ignore = "the child process of commits_reported_survive_sigkill"]
fn redb_kill_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let backend = match std::env::var(CHILD_BACKEND_ENV).as_deref() {
        Ok("IoUring") => Backend::IoUring,
        Ok("Threads") => Backend::Threads,
        other => panic!("{CHILD_BACKEND_ENV}: {other:?} is neither IoUring nor Threads"),
    };
    let cache = common::builder(backend)
        .memory_limit(BUDGET)
        .build()
        .unwrap();
    let db = open(&cache, Path::new(&path));
    let mut n = match db.begin_read().unwrap().open_table(LAST) {
        Ok(t) => t.get(0).unwrap().map_or(0, |v| v.value()),
        Err(redb::TableError::TableDoesNotExist(_)) => 0,
        Err(e) => panic!("{e}"),
    };
    println!("opened at {n}");
    for _ in 0..100_000 {
        n += 1;
        let tx = db.begin_write().unwrap();
        tx.open_table(COMMITS)
            .unwrap()
            .insert(n, value(n).as_slice())
            .unwrap();
        tx.open_table(LAST).unwrap().insert(0, n).unwrap();
        tx.commit().unwrap(); // Durability::Immediate, the default
        println!("committed {n}");
    }
}

/// Opens the database in this process and checks it: exactly commits 1..c, c within
/// `reported ..= reported + 1`, each value right, `LAST` saying c, integrity. Returns c.
fn verify(path: &Path, backend: Backend, reported: u64, what: &str) -> u64 {
    let cache = common::builder(backend)
        .memory_limit(BUDGET)
        .build()
        .unwrap();
    let mut db = open(&cache, path);
    assert!(
        db.check_integrity().expect("check_integrity"),
        "{what}: check_integrity"
    );
    let rx = db.begin_read().unwrap();
    let (c, last) = match (rx.open_table(COMMITS), rx.open_table(LAST)) {
        (Ok(t), Ok(l)) => {
            let mut c = 0;
            for kv in t.iter().unwrap() {
                let (k, v) = kv.unwrap();
                c += 1;
                assert_eq!(k.value(), c, "{what}: commits are not 1..c: {c} is missing");
                assert!(
                    v.value() == value(c).as_slice(),
                    "{what}: commit {c}: wrong value"
                );
            }
            (c, l.get(0).unwrap().unwrap().value())
        }
        (Err(redb::TableError::TableDoesNotExist(_)), _) => (0, 0),
        (Err(e), _) | (_, Err(e)) => panic!("{what}: {e}"),
    };
    assert_eq!(last, c, "{what}: LAST says {last}, commits 1..{c}");
    assert!(
        (reported..=reported + 1).contains(&c),
        "{what}: commits 1..{c} on disk, {reported} reported"
    );
    drop(rx);
    drop(db);
    cache.shutdown_blocking().unwrap();
    c
}

common::backend_test!(commits_reported_survive_sigkill);
fn commits_reported_survive_sigkill(backend: Backend) {
    let kills: u64 = std::env::var("REDB_KILLS")
        .map(|v| v.parse().expect("REDB_KILLS"))
        .unwrap_or(10);
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5ed6 ^ kills);
    let dir = common::scratch_dir();
    let path = dir.path().join("commits.redb");
    // The highest commit reported by any child (a later child starts after it).
    let mut reported = 0u64;
    let (mut before_open, mut verified) = (0u64, 0u64);
    // How long the last child took from its spawn to the end of its open: early kills fall
    // within it.
    let mut open_time = Duration::from_millis(20);
    for round in 0..kills {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "redb_kill_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .env(CHILD_BACKEND_ENV, format!("{backend:?}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let spawned = Instant::now();
        let (tx, lines) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let reader = std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // A third of the kills at a random moment before the child's open would end (process
        // start, open, recovery; as long as the last one took), the others a random 0..3 ms
        // after the k-th commit of this child.
        let early = rng.gen_bool(0.33);
        let deadline = spawned + open_time.mul_f64(rng.gen_range(0.0..1.0));
        let target = rng.gen_range(1..25u64);
        let after = Duration::from_micros(rng.gen_range(0..3_000));
        let timeout = Instant::now() + Duration::from_secs(30);
        let (mut opened, mut seen) = (false, 0u64);
        // Takes one line of the child's: its commits must follow on from what was reported.
        let mut take = |line: String, reported: &mut u64, opened: &mut bool| {
            if let Some((_, n)) = line.split_once("committed ") {
                let n: u64 = n.trim().parse().unwrap();
                assert_eq!(n, *reported + 1, "round {round}: commits out of order");
                *reported = n;
                seen += 1;
            } else if let Some((_, n)) = line.split_once("opened at ") {
                // (after the harness's "test redb_kill_child ... ", on the same line)
                let n: u64 = n.trim().parse().unwrap();
                // The commit in flight at the last kill may have landed.
                assert!(
                    (*reported..=*reported + 1).contains(&n),
                    "round {round}: the child opened at {n}, {reported} reported"
                );
                *reported = n;
                *opened = true;
            }
            seen
        };
        loop {
            let wait = if early {
                deadline.saturating_duration_since(Instant::now())
            } else {
                timeout.saturating_duration_since(Instant::now())
            };
            match lines.recv_timeout(wait) {
                Ok(line) => {
                    let was_open = opened;
                    let seen = take(line, &mut reported, &mut opened);
                    if opened && !was_open {
                        open_time = spawned.elapsed();
                    }
                    if seen >= target && !early {
                        std::thread::sleep(after);
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) if early => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    panic!("round {round}: the child made no progress for 30 s");
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().unwrap();
                    panic!("round {round}: the child exited early: {status}");
                }
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // What the child printed before it died counts too.
        for line in lines.iter() {
            take(line, &mut reported, &mut opened);
        }
        reader.join().unwrap();
        if !opened {
            before_open += 1;
        }
        if round % 4 == 3 || round + 1 == kills {
            let c = verify(
                &path,
                backend,
                reported,
                &format!("{backend:?} round {round}"),
            );
            reported = c;
            verified += 1;
        }
    }
    eprintln!(
        "{backend:?}: {kills} kills ({before_open} before the open finished), {verified} \
         verifications, {reported} commits on disk"
    );
}
