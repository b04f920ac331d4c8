//! Durability under SIGKILL: a child process appends records through the cache and reports
//! each one it has synced; the parent kills it at random points and checks that every record
//! reported as synced is on disk, whole.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use rand::{Rng, SeedableRng};
use uringcache::Backend;

const RECORD: usize = 3000; // not a multiple of any block size: exercises the tail block
const CHILD_ENV: &str = "URINGCACHE_KILL_CHILD";
/// The child's backend: `IoUring` or `Threads` (the parent's `{backend:?}`).
const CHILD_BACKEND_ENV: &str = "URINGCACHE_KILL_CHILD_BACKEND";

fn record(i: u64) -> Vec<u8> {
    let mut r = common::pattern(RECORD, i + 1);
    r[..8].copy_from_slice(&i.to_le_bytes());
    r
}

/// The child: appends records forever (bounded) on the parent's backend, syncing every few and
/// printing the index of the last synced record. Run only by
/// `records_reported_synced_survive_sigkill`.
#[test]
#[ignore = "the child process of records_reported_synced_survive_sigkill"]
fn kill_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let backend = match std::env::var(CHILD_BACKEND_ENV).as_deref() {
        Ok("IoUring") => Backend::IoUring,
        Ok("Threads") => Backend::Threads,
        other => panic!("{CHILD_BACKEND_ENV}: {other:?} is neither IoUring nor Threads"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let cache = common::builder(backend)
            .memory_limit(64 * 4096)
            .build()
            .unwrap();
        let file = cache
            .open(
                &path,
                uringcache::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true),
            )
            .await
            .unwrap();
        for i in 0..200_000u64 {
            file.write_all_at(&record(i), i * RECORD as u64)
                .await
                .unwrap();
            if i % 3 == 2 {
                if i % 2 == 0 {
                    file.sync_all().await.unwrap();
                } else {
                    file.sync_data().await.unwrap();
                }
                println!("synced {i}");
            }
        }
    });
}

common::backend_test!(records_reported_synced_survive_sigkill);
fn records_reported_synced_survive_sigkill(backend: Backend) {
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xdead);
    for round in 0..5 {
        let dir = common::scratch_dir();
        let path = dir.path().join("log");
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "kill_child",
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
        let kill_after = rng.gen_range(1..400u64);
        let mut last_synced = None;
        let stdout = BufReader::new(child.stdout.take().unwrap());
        for line in stdout.lines() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("synced ") {
                let n: u64 = n.trim().parse().unwrap();
                last_synced = Some(n);
                if n >= kill_after {
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let last = last_synced.expect("the child synced at least once");
        let disk = common::read_disk(&path).unwrap();
        let synced_end = (last as usize + 1) * RECORD;
        assert!(
            disk.len() >= synced_end,
            "round {round}: file has {} bytes, {synced_end} were synced",
            disk.len()
        );
        for i in 0..=last {
            let at = i as usize * RECORD;
            common::assert_bytes(
                &disk[at..at + RECORD],
                &record(i),
                &format!("round {round}: record {i} of {last} synced"),
            );
        }
    }
}
