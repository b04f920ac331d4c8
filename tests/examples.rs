//! Smoke tests of the workspace examples: each runs as a user would run it, with no arguments
//! (it makes its own scratch input) and with paths, and its output is checked.
//!
//! The example binaries are not visible to integration tests through `CARGO_BIN_EXE_*`, so
//! they are found next to this test's binary (`target/<profile>/deps/..` →
//! `target/<profile>/examples/<name>`). `cargo build --example ...` is run once first, so a
//! stale binary from an earlier build is never what gets tested (a no-op when up to date).
//!
//! The examples build their caches with `Backend::Auto`, as users do; each test runs them
//! once with `URINGCACHE_BACKEND=uring` and once with `=threads` (`common::backend_test!`),
//! and `copy`'s printed stats show that the variable picked the backend.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::{make_file, scratch_dir};
use uringcache::Backend;

const EXAMPLES: &[&str] = &[
    "cat",
    "copy",
    "tokio_uring",
    "kv",
    "blocking",
    "readme",
    "redb",
    "serve",
];

/// `target/<profile>`, from this test binary's path `target/<profile>/deps/examples-<hash>`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

/// Builds the examples (once per test run) and returns the path of `name`.
fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let dir = profile_dir();
    BUILT.get_or_init(|| {
        let mut cmd = Command::new(env!("CARGO"));
        // `--workspace`: the features `cargo test --workspace` unified, so that the examples it
        // built already are up to date (the root package alone would rebuild hyper and more).
        cmd.arg("build")
            .arg("--quiet")
            .arg("--workspace")
            .arg("--manifest-path")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
        for e in EXAMPLES {
            cmd.args(["--example", e]);
        }
        // The same profile and target directory as this test binary.
        match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some(profile) => {
                cmd.args(["--profile", profile]);
            }
        }
        if let Some(target_dir) = dir.parent() {
            cmd.arg("--target-dir").arg(target_dir);
        }
        let out = cmd.output().expect("run cargo build --example");
        assert!(
            out.status.success(),
            "cargo build of the examples failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    let path = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.is_file(), "example binary {} missing", path.display());
    path
}

/// Runs example `name` with `args` and returns its output, failing the test on a non-zero exit.
fn run_ok(backend: Backend, name: &str, args: &[&Path]) -> Output {
    let out = run(backend, name, args);
    assert!(
        out.status.success(),
        "example {name} {args:?} failed with {}:\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs example `name` with `args` and returns its output, failing the test if it succeeds.
fn run_fails(backend: Backend, name: &str, args: &[&Path]) -> Output {
    let out = run(backend, name, args);
    assert!(
        !out.status.success(),
        "example {name} {args:?} succeeded but should have failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `URINGCACHE_BACKEND` value that makes an example's `Backend::Auto` cache use `backend`.
fn env_value(backend: Backend) -> &'static str {
    match backend {
        Backend::IoUring => "uring",
        Backend::Threads => "threads",
        Backend::Auto => "auto",
    }
}

/// The first line of a printed `Stats`, naming the backend in use (`Stats::backend`).
fn stats_line(backend: Backend) -> &'static str {
    match backend {
        Backend::IoUring => "backend io_uring",
        _ => "backend threads",
    }
}

/// Runs example `name` with `args`, its `Backend::Auto` steered to `backend`.
fn run(backend: Backend, name: &str, args: &[&Path]) -> Output {
    Command::new(example(name))
        .args(args)
        .env(uringcache::BACKEND_ENV, env_value(backend))
        .output()
        .unwrap_or_else(|e| panic!("run example {name}: {e}"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

common::backend_test!(the_readmes_twenty_lines_run_as_written);
/// `examples/readme.rs`, the README's "Twenty lines": run in a scratch directory (it makes
/// `data.db` there), it writes, hits, syncs, pins a page and prints the stats; the file holds
/// the bytes on disk afterwards.
fn the_readmes_twenty_lines_run_as_written(backend: Backend) {
    let dir = scratch_dir();
    let out = Command::new(example("readme"))
        .current_dir(dir.path())
        .env("URINGCACHE_BACKEND", env_value(backend))
        .output()
        .expect("run the readme example");
    assert!(out.status.success(), "readme failed: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("hits"), "stats missing: {text}");
    assert!(text.contains(stats_line(backend)), "{text}");
    let on_disk = common::read_disk(dir.path().join("data.db")).expect("data.db");
    assert_eq!(&on_disk[..17], b"hello, page cache");
}

common::backend_test!(cat_without_arguments_prints_its_scratch_file);
fn cat_without_arguments_prints_its_scratch_file(backend: Backend) {
    let out = run_ok(backend, "cat", &[]);
    let text = stdout(&out);
    assert!(
        text.starts_with("line 1: read through uringcache\n"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 20, "{text}");
}

common::backend_test!(cat_streams_files_byte_for_byte);
fn cat_streams_files_byte_for_byte(backend: Backend) {
    let dir = scratch_dir();
    let (a, data_a) = make_file(dir.path(), "a", (300 << 10) + 17, 1);
    let (b, data_b) = make_file(dir.path(), "b", 4095, 2);
    let out = run_ok(backend, "cat", &[&a, &b]);
    let mut want = data_a;
    want.extend_from_slice(&data_b);
    assert_eq!(out.stdout.len(), want.len());
    assert!(out.stdout == want, "cat output differs from the files");
}

common::backend_test!(cat_of_a_missing_file_fails_and_names_it);
fn cat_of_a_missing_file_fails_and_names_it(backend: Backend) {
    let dir = scratch_dir();
    let missing = dir.path().join("no-such-file");
    let out = run(backend, "cat", &[&missing]);
    assert!(!out.status.success(), "cat of a missing file succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-file"), "{err}");
}

common::backend_test!(copy_without_arguments_verifies_itself);
fn copy_without_arguments_verifies_itself(backend: Backend) {
    let out = run_ok(backend, "copy", &[]);
    let text = stdout(&out);
    assert!(text.contains("MiB/s"), "{text}");
    assert!(text.contains("hits"), "stats missing: {text}");
    assert!(text.contains(stats_line(backend)), "{text}");
    assert!(text.contains("verified"), "{text}");
}

common::backend_test!(copy_copies_a_file);
fn copy_copies_a_file(backend: Backend) {
    let dir = scratch_dir();
    let (src, data) = make_file(dir.path(), "src", (3 << 20) + 999, 3);
    let dst = dir.path().join("dst");
    let out = run_ok(backend, "copy", &[&src, &dst]);
    let text = stdout(&out);
    assert!(text.contains(&format!("{} bytes", data.len())), "{text}");
    assert!(text.contains(stats_line(backend)), "{text}");
    let got = common::read_disk(&dst).expect("read dst");
    assert_eq!(got.len(), data.len());
    assert!(got == data, "copy differs from the source");
}

common::backend_test!(copy_onto_itself_is_refused_and_the_source_kept);
fn copy_onto_itself_is_refused_and_the_source_kept(backend: Backend) {
    let dir = scratch_dir();
    let (src, data) = make_file(dir.path(), "src", (1 << 20) + 77, 5);
    // The same path, and another spelling of it.
    let respelt = dir.path().join(".").join("src");
    for dst in [&src, &respelt] {
        let out = run_fails(backend, "copy", &[&src, dst]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "'{}' and '{}' are the same file",
                src.display(),
                dst.display()
            )),
            "{err}"
        );
        let got = common::read_disk(&src).expect("read src");
        assert!(got == data, "copy onto itself changed the source");
    }
}

common::backend_test!(copy_onto_a_hard_link_of_the_source_is_refused);
fn copy_onto_a_hard_link_of_the_source_is_refused(backend: Backend) {
    let dir = scratch_dir();
    let (src, data) = make_file(dir.path(), "src", (2 << 20) + 5, 6);
    let link = dir.path().join("link");
    std::fs::hard_link(&src, &link).expect("hard link");
    std::os::unix::fs::symlink(&src, dir.path().join("sym")).expect("symlink");
    // A hard link and a symbolic link to the source are the same file.
    for dst in [link, dir.path().join("sym")] {
        let out = run_fails(backend, "copy", &[&src, &dst]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("are the same file"),
            "{}",
            stderr(&out)
        );
        assert!(
            common::read_disk(&src).expect("read src") == data,
            "source changed"
        );
    }
    // A different existing file is overwritten as before.
    let (other, _) = make_file(dir.path(), "other", 12_345, 7);
    run_ok(backend, "copy", &[&src, &other]);
    assert!(common::read_disk(&other).expect("read other") == data);
}

common::backend_test!(tokio_uring_reads_the_same_bytes);
fn tokio_uring_reads_the_same_bytes(backend: Backend) {
    // The example's other half is tokio-uring, which needs io_uring whatever the cache's backend.
    let test = format!("examples::tokio_uring_reads_the_same_bytes on {backend:?} (tokio-uring)");
    if common::io_uring_or_skip(&test).is_none() {
        return;
    }
    let out = run_ok(backend, "tokio_uring", &[]);
    assert!(stdout(&out).contains("identical"), "{}", stdout(&out));
    let dir = scratch_dir();
    let (path, data) = make_file(dir.path(), "f", 200_001, 4);
    let out = run_ok(backend, "tokio_uring", &[&path]);
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{} bytes through uringcache", data.len())),
        "{text}"
    );
    assert!(text.contains("identical"), "{text}");
}

common::backend_test!(kv_loads_and_looks_up_a_few_thousand_keys);
fn kv_loads_and_looks_up_a_few_thousand_keys(backend: Backend) {
    let dir = scratch_dir();
    let out = run_ok(backend, "kv", &[Path::new("3000"), dir.path()]);
    let text = stdout(&out);
    assert!(text.contains("load   3000 keys"), "{text}");
    assert!(text.contains("lookup 3000 keys"), "{text}");
}

common::backend_test!(blocking_writes_syncs_and_verifies_with_no_runtime);
fn blocking_writes_syncs_and_verifies_with_no_runtime(backend: Backend) {
    let out = run_ok(backend, "blocking", &[]);
    let text = stdout(&out);
    assert!(text.contains("wrote 8000 records"), "{text}");
    assert!(
        text.contains("verified 8000 records through the cache"),
        "{text}"
    );
    assert!(text.contains(stats_line(backend)), "stats missing: {text}");
    assert!(text.contains("verified 800000 bytes on disk"), "{text}");
}

common::backend_test!(blocking_creates_its_file_and_refuses_an_existing_one);
fn blocking_creates_its_file_and_refuses_an_existing_one(backend: Backend) {
    let dir = scratch_dir();
    let path = dir.path().join("records");
    run_ok(backend, "blocking", &[&path]);
    assert_eq!(
        common::read_disk(&path).expect("read records").len(),
        800_000
    );
    let out = run_fails(backend, "blocking", &[&path]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("records"), "{}", stderr(&out));
}

common::backend_test!(redb_serves_reads_scans_and_batched_commits);
/// `examples/redb.rs`: redb on the cache loads, reads, scans and updates a few thousand
/// records, checks every value and the database's integrity, and prints the cache's stats.
fn redb_serves_reads_scans_and_batched_commits(backend: Backend) {
    let dir = scratch_dir();
    let out = run_ok(backend, "redb", &[Path::new("3000"), dir.path()]);
    let text = stdout(&out);
    assert!(text.contains("load    3000 records in 3 commits"), "{text}");
    assert!(text.contains("read    3000 random records"), "{text}");
    assert!(
        text.contains("update  1500 records in 15 commits"),
        "{text}"
    );
    assert!(
        text.contains("verified 3000 records, integrity ok"),
        "{text}"
    );
    assert!(text.contains(stats_line(backend)), "stats missing: {text}");
    // The database is there, whole, for redb on its own file backend too.
    let path = dir.path().join("service.redb");
    let mut db = redb::Database::open(&path).expect("redb opens the example's database");
    assert!(db.check_integrity().expect("check_integrity"));
    drop(db);
    // A second run refuses to overwrite it.
    let out = run_fails(backend, "redb", &[Path::new("10"), dir.path()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("service.redb"), "{}", stderr(&out));
}

common::backend_test!(serve_answers_range_requests_until_killed);
fn serve_answers_range_requests_until_killed(backend: Backend) {
    use std::io::{BufRead, Read, Write};
    let dir = scratch_dir();
    let (_, data) = make_file(dir.path(), "f", 100_000, 11);
    let mut child = Command::new(example("serve"))
        .args([dir.path().as_os_str(), "127.0.0.1:0".as_ref()])
        .env(uringcache::BACKEND_ENV, env_value(backend))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the serve example");
    // "serving ROOT on http://ADDR (cache: …, io_uring backend)"
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let result = std::panic::catch_unwind(|| {
        let backend_name = if backend == Backend::IoUring {
            "io_uring"
        } else {
            "threads"
        };
        assert!(line.contains(&format!("{backend_name} backend")), "{line}");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        write!(
            sock,
            "GET /f HTTP/1.1\r\nHost: x\r\nRange: bytes=4090-4109\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = Vec::new();
        sock.read_to_end(&mut resp).unwrap();
        let text = String::from_utf8_lossy(&resp);
        assert!(
            text.starts_with("HTTP/1.1 206 Partial Content\r\n"),
            "{text}"
        );
        assert!(
            text.to_ascii_lowercase()
                .contains("content-range: bytes 4090-4109/100000"),
            "{text}"
        );
        assert!(resp.ends_with(&data[4090..4110]), "{text}");
    });
    child.kill().expect("kill the serve example");
    let _ = child.wait();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
