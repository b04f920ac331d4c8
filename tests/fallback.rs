//! `Backend::Auto` where the kernel refuses `io_uring`, end to end. A child process of this test
//! installs a seccomp filter that fails `io_uring_setup` with `EPERM` — what Docker's default
//! profile does, and what `kernel.io_uring_disabled=2` looks like to a process — and then uses a
//! cache: `Backend::IoUring` must fail with a message saying what to change, `Backend::Auto`
//! must fall back to the thread pool and work. The filter only ever applies to the child, so the
//! shared machine's settings are left alone.
//!
//! Also here, in children too: `URINGCACHE_BACKEND` steers `Backend::Auto` only.

mod common;

use std::io;
use std::process::Command;

use uringcache::{Backend, Cache};

const CHILD_ENV: &str = "URINGCACHE_FALLBACK_CHILD";

/// Makes every later `io_uring_setup` of this thread, and of threads it starts, fail with
/// `EPERM` (seccomp, `SECCOMP_RET_ERRNO`).
fn refuse_io_uring() -> io::Result<()> {
    // Classic BPF opcodes (linux/filter.h: BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K,
    // BPF_RET|BPF_K) and seccomp_data offsets.
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JMP_JEQ_K: u16 = 0x15;
    const BPF_RET_K: u16 = 0x06;
    const NR_OFFSET: u32 = 0;
    const ARCH_OFFSET: u32 = 4;
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xC000_003E;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xC000_00B7;
    let stmt = |code, k| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |k, jt, jf| libc::sock_filter {
        code: BPF_JMP_JEQ_K,
        jt,
        jf,
        k,
    };
    let mut filter = [
        stmt(BPF_LD_W_ABS, ARCH_OFFSET),
        jump(AUDIT_ARCH, 1, 0),
        stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW),
        stmt(BPF_LD_W_ABS, NR_OFFSET),
        jump(libc::SYS_io_uring_setup as u32, 0, 1),
        stmt(BPF_RET_K, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: plain prctl calls; `prog` points to a filter that lives across the call (the
    // kernel copies it).
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            ) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[test]
#[ignore = "run in a child process by refused_io_uring_falls_back_to_the_thread_pool"]
fn fallback_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    refuse_io_uring().expect("installing the seccomp filter");
    let err = match Cache::builder().backend(Backend::IoUring).build() {
        Ok(_) => panic!("io_uring was refused, yet Backend::IoUring built a cache"),
        Err(e) => e,
    };
    println!("io_uring error: {err}");
    let cache = Cache::builder().memory_limit(64 * 4096).build().unwrap();
    let stats = cache.stats();
    println!("backend: {}", stats.backend);
    assert!(!stats.fixed_buffers);
    println!(
        "fallback reason: {}",
        stats.backend_fallback.as_deref().unwrap_or("(none)")
    );
    assert!(
        stats.to_string().contains("fell back to the thread pool"),
        "{stats}"
    );
    let (path, data) = common::make_file(std::path::Path::new(&dir), "fb", 300_000, 5);
    common::multi_thread().block_on(async {
        let file = cache.open(&path, &common::rw()).await.unwrap();
        let mut buf = vec![0u8; data.len()];
        file.read_exact_at(&mut buf, 0).await.unwrap();
        common::assert_bytes(&buf, &data, "read through the fallback");
        file.write_all_at(&[9u8; 10_000], 1234).await.unwrap();
        file.sync_all().await.unwrap();
    });
    let mut want = data;
    want[1234..11_234].fill(9);
    common::assert_bytes(&common::read_disk(&path).unwrap(), &want, "on disk");
    println!("fallback ok");
}

#[test]
fn refused_io_uring_falls_back_to_the_thread_pool() {
    let dir = common::scratch_dir();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "fallback_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        // Auto is what is tested, whatever the suite's own run asks for.
        .env_remove(uringcache::BACKEND_ENV)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("fallback ok"),
        "child failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("backend: threads"), "{stdout}");
    // `Stats::backend_fallback` keeps the io_uring error that made Auto fall back.
    let reason = stdout
        .lines()
        .find_map(|l| l.strip_prefix("fallback reason: "))
        .expect("the fallback reason line");
    assert!(
        reason.contains("io_uring is refused") && reason.contains("threads"),
        "the reason must say what happened and what to do: {reason}"
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("io_uring error:"))
        .expect("the io_uring error line");
    assert!(
        line.contains("threads") || line.contains("Threads"),
        "the error must say what to do instead: {line}"
    );
}

const CHOICE_CHILD_ENV: &str = "URINGCACHE_CHOICE_CHILD";

#[test]
#[ignore = "run in a child process by an_explicit_backend_wins_over_the_environment"]
fn backend_choice_child() {
    if std::env::var(CHOICE_CHILD_ENV).is_err() {
        return;
    }
    let env = std::env::var(uringcache::BACKEND_ENV).unwrap();
    let uring_ok = uringcache_uring::UringBackend::probe().is_ok();
    let name = |b| {
        Cache::builder()
            .memory_limit(64 * 4096)
            .backend(b)
            .build()
            .map(|c| c.stats().backend)
    };
    assert_eq!(name(Backend::Threads).unwrap(), "threads", "{env}");
    if uring_ok {
        assert_eq!(name(Backend::IoUring).unwrap(), "io_uring", "{env}");
    }
    match env.as_str() {
        "threads" => assert_eq!(name(Backend::Auto).unwrap(), "threads"),
        _ if uring_ok => assert_eq!(name(Backend::Auto).unwrap(), "io_uring"),
        _ => {}
    }
    println!("choice ok (io_uring available: {uring_ok})");
}

/// `URINGCACHE_BACKEND` steers `Backend::Auto` (`threads` makes it the thread pool, `uring`
/// `io_uring` where the kernel allows it), and only `Auto`: a backend chosen in code wins.
/// The suite's other tests name their backend in code, so this is what checks the variable
/// (with `examples.rs`, whose examples build `Auto` caches and run with it set).
#[test]
fn an_explicit_backend_wins_over_the_environment() {
    for env in ["threads", "uring"] {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "backend_choice_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHOICE_CHILD_ENV, "1")
            .env(uringcache::BACKEND_ENV, env)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("choice ok"),
            "child with {}={env} failed:\n{stdout}\n{stderr}",
            uringcache::BACKEND_ENV
        );
    }
}
