//! A memory cgroup that holds the kernel's page cache to uringcache's budget, so that the
//! kernel contenders can run "at the same budget".
//!
//! This module owns the child memory cgroups the harness makes: [`MemCgroup::create`] makes a
//! child of the process's own memory cgroup with a memory limit (cgroup v1
//! `memory.limit_in_bytes`, v2 `memory.max`); [`MemCgroup::run_in_child`] runs a contender's
//! turn in a child process placed in it, so that the page cache its reads bring in (and the
//! pages of its writes) are charged there and reclaimed at the limit; [`MemCgroup::peak`]
//! reads the peak usage (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`). The cgroup is
//! removed when the value is dropped — also when a contender's turn panicked or failed, since
//! the value outlives the turn — and on Ctrl-C (SIGINT, SIGTERM, SIGHUP) through
//! [`install_interrupt_cleanup`]: each cgroup's processes are moved back to the parent, then
//! the directory is removed. A cgroup left behind by a killed run (SIGKILL) is removed by the
//! next run's [`MemCgroup::create`].
//!
//! **Why a child process, not a thread.** With cgroup v1 a thread can be moved alone (its TID
//! into `tasks`), but the kernel charges page cache to the cgroup of the process's memory
//! owner (`get_mem_cgroup_from_mm` → `mm->owner`), not of the thread that reads: measured here,
//! a thread moved into an 8 MiB cgroup read 32 MiB and the cgroup saw 0.5 MiB. With cgroup v2
//! the memory controller is not threaded at all. A child process is charged on both. It is
//! this program started again (fork + exec), not a bare fork of a multi-threaded process: a
//! forked child deadlocked here on a lock (the panic hook's) another thread held at the fork.
//!
//! **What is charged.** Page cache charged to another cgroup before a thread joins is not
//! moved: drop the file's cache (`POSIX_FADV_DONTNEED`) before a contender's turn. The limit
//! also covers the child's own new memory (its threads' stacks and buffers, pages of the
//! parent it writes to: a few MiB), so the kernel's page cache gets a little less than the
//! budget.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Which cgroup hierarchy the memory controller is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// The legacy per-controller hierarchies (`memory.limit_in_bytes`, `tasks`).
    V1,
    /// The unified hierarchy (`memory.max`, `cgroup.procs`).
    V2,
}

/// A child memory cgroup of this process's own, with a memory limit; removed on drop.
#[derive(Debug)]
pub struct MemCgroup {
    path: PathBuf,
    parent: PathBuf,
    version: Version,
    limit: u64,
}

/// Prefix of the directories this harness makes (followed by the PID and a counter).
const PREFIX: &str = "uringcache-bench-";

/// Cgroups created and not yet removed, for the interrupt handler.
static LIVE: Mutex<Vec<(PathBuf, PathBuf)>> = Mutex::new(Vec::new());

fn ctx(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Where this process's memory cgroup is: its directory and the hierarchy's version.
pub fn own_memory_cgroup() -> io::Result<(PathBuf, Version)> {
    let cgroups = fs::read_to_string("/proc/self/cgroup").map_err(ctx("read /proc/self/cgroup"))?;
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").map_err(ctx("read /proc/self/mountinfo"))?;
    // v1: "4:memory:/a/b"; v2: "0::/a/b".
    let v1 = cgroups.lines().find_map(|l| {
        let mut it = l.splitn(3, ':');
        let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
        ctrls.split(',').any(|c| c == "memory").then_some(path)
    });
    let v2 = cgroups.lines().find_map(|l| l.strip_prefix("0::"));
    // mountinfo: id parent maj:min root mountpoint opts ... - fstype source superopts
    let mount = |want_v2: bool| -> Option<(String, String)> {
        mountinfo.lines().find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            let p: Vec<&str> = post.split(' ').collect();
            let (root, point) = (*f.get(3)?, *f.get(4)?);
            let ok = if want_v2 {
                p.first() == Some(&"cgroup2")
            } else {
                p.first() == Some(&"cgroup")
                    && p.get(2)
                        .is_some_and(|o| o.split(',').any(|o| o == "memory"))
            };
            ok.then(|| (root.to_string(), point.to_string()))
        })
    };
    let join = |root: &str, point: &str, path: &str| {
        let rel = path
            .strip_prefix(root)
            .unwrap_or(path)
            .trim_start_matches('/');
        Path::new(point).join(rel)
    };
    if let (Some(path), Some((root, point))) = (v1, mount(false)) {
        return Ok((join(&root, &point, path), Version::V1));
    }
    if let (Some(path), Some((root, point))) = (v2, mount(true)) {
        let dir = join(&root, &point, path);
        let ctrls = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        if ctrls.split_whitespace().any(|c| c == "memory") {
            return Ok((dir, Version::V2));
        }
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "cgroup v2 at {}: the memory controller is not enabled for it",
                dir.display()
            ),
        ));
    }
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "no memory cgroup hierarchy is mounted (neither a v1 memory controller nor cgroup2)",
    ))
}

/// Moves every thread of `child` (v1 `tasks`, v2 `cgroup.procs`) to `parent`, then removes it.
fn remove(child: &Path, parent: &Path) -> io::Result<()> {
    for list in ["tasks", "cgroup.procs"] {
        let Ok(ids) = fs::read_to_string(child.join(list)) else {
            continue;
        };
        for id in ids.split_whitespace() {
            // A thread that ended in the meantime is gone already.
            let _ = fs::write(parent.join(list), id);
        }
    }
    let mut last = None;
    for _ in 0..50 {
        match fs::remove_dir(child) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            // EBUSY while a thread that was moved has not left yet.
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Err(io::Error::new(
        last.as_ref().map_or(io::ErrorKind::Other, |e| e.kind()),
        format!(
            "remove cgroup {}: {}",
            child.display(),
            last.map_or_else(String::new, |e| e.to_string())
        ),
    ))
}

/// Removes `PREFIX{pid}-*` children of `dir` whose process is gone (a run that was killed).
fn remove_stale(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = remove(&e.path(), dir);
        }
    }
}

impl MemCgroup {
    /// Makes a child of this process's memory cgroup named `uringcache-bench-PID-TAG` with a
    /// memory limit of `limit` bytes (v1 `memory.limit_in_bytes`, v2 `memory.max`). Fails with
    /// a reason fit for a row ("permission denied", no hierarchy, …) where none can be made.
    pub fn create(tag: &str, limit: u64) -> io::Result<MemCgroup> {
        let (parent, version) = own_memory_cgroup()?;
        if version == Version::V2 {
            // A child gets memory.max only if the parent hands the controller down, which a
            // cgroup that has processes of its own cannot ("no internal processes").
            let sub = parent.join("cgroup.subtree_control");
            let on = fs::read_to_string(&sub).unwrap_or_default();
            if !on.split_whitespace().any(|c| c == "memory") {
                fs::write(&sub, "+memory").map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "cgroup v2: {} does not hand the memory controller to its children and cannot be made to ({e}; a cgroup with processes of its own cannot)",
                            parent.display()
                        ),
                    )
                })?;
            }
        }
        remove_stale(&parent);
        let path = parent.join(format!("{PREFIX}{}-{tag}", std::process::id()));
        match fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                remove(&path, &parent)?;
                fs::create_dir(&path).map_err(ctx(format!("create cgroup {}", path.display())))?;
            }
            Err(e) => {
                return Err(ctx(format!("create cgroup {}", path.display()))(e));
            }
        }
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((path.clone(), parent.clone()));
        let cg = MemCgroup {
            path,
            parent,
            version,
            limit,
        };
        let file = match version {
            Version::V1 => "memory.limit_in_bytes",
            Version::V2 => "memory.max",
        };
        fs::write(cg.path.join(file), limit.to_string())
            .map_err(ctx(format!("set {}/{file}", cg.path.display())))?;
        let set = cg.read(file)?;
        if set != limit {
            return Err(io::Error::other(format!(
                "{}/{file} reads {set} after writing {limit}",
                cg.path.display()
            )));
        }
        Ok(cg)
    }

    /// Its directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The hierarchy it is on.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The memory limit it was made with, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    fn read(&self, file: &str) -> io::Result<u64> {
        let p = self.path.join(file);
        let text = fs::read_to_string(&p).map_err(ctx(format!("read {}", p.display())))?;
        let t = text.trim();
        if t == "max" {
            return Ok(u64::MAX);
        }
        t.parse()
            .map_err(|_| io::Error::other(format!("{}: {t:?} is not a number", p.display())))
    }

    /// Runs a request in a child process placed in the cgroup, so that what it reads or
    /// writes through the kernel's page cache is charged here, and returns its answer. The
    /// child is this program again (`/proc/self/exe` with `args`, and [`CHILD_ENV`] set), which
    /// must call [`serve_child`] when it sees that variable. The parent writes the child's PID
    /// to the cgroup's `cgroup.procs` before it sends the request (JSON on the child's stdin),
    /// so everything the child does on it is charged here; the answer comes back as one line
    /// of JSON on the child's stdout. A panic in the child comes back as an error; the child
    /// is killed if the parent dies.
    ///
    /// A thread alone cannot be charged: the kernel charges page cache to the cgroup of the
    /// process's memory owner (`mm->owner`), not of the thread that reads.
    pub fn run_in_child<Req, Resp>(&self, args: &[&str], request: &Req) -> io::Result<Resp>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
    {
        use std::io::{BufRead, Write};
        use std::os::unix::process::CommandExt;
        use std::process::{Command, Stdio};

        // This very program, even if its file was replaced (rebuilt) since it started.
        let exe = Path::new("/proc/self/exe");
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .env(CHILD_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(ctx(format!("start {} as the cgroup child", exe.display())))?;
        let result = (|| {
            let procs = self.path.join("cgroup.procs");
            fs::write(&procs, child.id().to_string())
                .map_err(ctx(format!("move the child into {}", procs.display())))?;
            let text = serde_json::to_vec(request).map_err(io::Error::other)?;
            let mut stdin = child.stdin.take().expect("piped stdin");
            stdin
                .write_all(&text)
                .map_err(ctx("send the request to the cgroup child"))?;
            drop(stdin);
            let stdout = child.stdout.take().expect("piped stdout");
            let mut answer = None;
            for line in std::io::BufReader::new(stdout).lines() {
                let line = line.map_err(ctx("read the cgroup child's answer"))?;
                if let Some(at) = line.find(ANSWER) {
                    answer = Some(line[at + ANSWER.len()..].to_string());
                }
            }
            answer.ok_or_else(|| io::Error::other("the cgroup child sent no answer"))
        })();
        let status = child.wait().map_err(ctx("wait for the cgroup child"))?;
        let answer = result.map_err(|e| io::Error::new(e.kind(), format!("{e} ({status})")))?;
        let out: Result<Resp, String> = serde_json::from_str(&answer)
            .map_err(|e| io::Error::other(format!("the cgroup child's answer: {e}")))?;
        out.map_err(io::Error::other)
    }

    /// Bytes charged now (used by the tests; the rows show the peak) (v1 `memory.usage_in_bytes`, v2 `memory.current`).
    #[allow(dead_code)]
    pub fn usage(&self) -> io::Result<u64> {
        self.read(match self.version {
            Version::V1 => "memory.usage_in_bytes",
            Version::V2 => "memory.current",
        })
    }

    /// The most bytes charged at once since it was made or last [`reset_peak`](Self::reset_peak)
    /// (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`).
    pub fn peak(&self) -> io::Result<u64> {
        self.read(match self.version {
            Version::V1 => "memory.max_usage_in_bytes",
            Version::V2 => "memory.peak",
        })
    }

    /// Starts the peak over from the usage now (v1: writing to `memory.max_usage_in_bytes`;
    /// v2 `memory.peak` accepts a reset from 6.12 on).
    pub fn reset_peak(&self) -> io::Result<()> {
        let file = match self.version {
            Version::V1 => "memory.max_usage_in_bytes",
            Version::V2 => "memory.peak",
        };
        fs::write(self.path.join(file), "0")
            .map_err(ctx(format!("reset {}/{file}", self.path.display())))
    }

    /// Sets the memory limit to `limit` bytes now (the kernel reclaims down to it; v1 fails
    /// with `EBUSY` when it cannot). [`limit`](Self::limit) still says the one it was made
    /// with. For a turn whose child needs memory of its own beyond the budget (the `serve`
    /// workload's server: its runtime, sockets and buffers), set once that is known.
    pub fn set_limit(&self, limit: u64) -> io::Result<()> {
        let file = match self.version {
            Version::V1 => "memory.limit_in_bytes",
            Version::V2 => "memory.max",
        };
        fs::write(self.path.join(file), limit.to_string()).map_err(ctx(format!(
            "set {}/{file} to {limit}",
            self.path.display()
        )))
    }

    /// What is charged now, from `memory.stat`: (anonymous memory, page cache) in bytes
    /// (v1 `rss` and `cache`, v2 `anon` and `file`).
    pub fn charged(&self) -> io::Result<(u64, u64)> {
        let p = self.path.join("memory.stat");
        let text = fs::read_to_string(&p).map_err(ctx(format!("read {}", p.display())))?;
        let (anon, file) = match self.version {
            Version::V1 => ("rss", "cache"),
            Version::V2 => ("anon", "file"),
        };
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
                .ok_or_else(|| io::Error::other(format!("{}: no {key}", p.display())))
        };
        Ok((get(anon)?, get(file)?))
    }

    /// Removes it now (what dropping it does), reporting a failure (used by the tests; the
    /// run's cgroup is shared, and dropped at the end).
    #[allow(dead_code)]
    pub fn remove(mut self) -> io::Result<()> {
        self.remove_now()
    }

    fn remove_now(&mut self) -> io::Result<()> {
        let r = remove(&self.path, &self.parent);
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(p, _)| *p != self.path);
        r
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        if let Err(e) = self.remove_now() {
            eprintln!("uringcache-bench: {e}");
        }
    }
}

/// Set in the environment of a child started by [`MemCgroup::run_in_child`].
pub const CHILD_ENV: &str = "URINGCACHE_BENCH_CGROUP_CHILD";

/// The prefix of the child's answer line on its stdout (anything else there is ignored).
const ANSWER: &str = "uringcache-bench-cgroup-answer: ";

/// Whether this process is a child started by [`MemCgroup::run_in_child`].
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// The child's side of [`MemCgroup::run_in_child`]: reads the request (JSON on stdin; the
/// parent sends it once the child is in the cgroup), runs `f` on it, and prints the answer
/// line. A panic in `f` becomes an error answer.
pub fn serve_child<Req, Resp>(f: impl FnOnce(Req) -> Resp) -> io::Result<()>
where
    Req: serde::de::DeserializeOwned,
    Resp: serde::Serialize,
{
    use std::io::Write;
    // A panic's message comes back in the answer: print nothing, take no backtrace (whose
    // symbols would be charged to the cgroup's limit).
    std::panic::set_hook(Box::new(|_| {}));
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut text)
        .map_err(ctx("read the request from the parent"))?;
    let req: Req = serde_json::from_slice(&text)
        .map_err(|e| io::Error::other(format!("the parent's request: {e}")))?;
    let out: Result<Resp, String> =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(req)))
            .map_err(|p| crate::measure::panic_message(&*p));
    let json = serde_json::to_string(&out).map_err(io::Error::other)?;
    let mut stdout = std::io::stdout().lock();
    // On a line of its own, whatever was printed before.
    writeln!(stdout, "\n{ANSWER}{json}")?;
    stdout.flush()
}

/// Removes every cgroup still alive (the interrupt path).
fn remove_all_live() {
    let live = std::mem::take(&mut *LIVE.lock().unwrap_or_else(|e| e.into_inner()));
    for (child, parent) in live {
        if let Err(e) = remove(&child, &parent) {
            eprintln!("uringcache-bench: {e}");
        }
    }
}

/// Makes Ctrl-C (and SIGTERM, SIGHUP) remove the cgroups before the process ends: blocks those
/// signals in the calling thread — call it first in `main`, before any thread starts, so that
/// every thread inherits the mask — and starts a thread that waits for one, removes every live
/// cgroup, runs `also` (the harness's other clean-up: its scratch files), and exits with
/// 128 + the signal's number.
pub fn install_interrupt_cleanup(also: fn()) -> io::Result<()> {
    // SAFETY: plain signal-set manipulation on a local set; pthread_sigmask on this thread.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if r != 0 {
            return Err(ctx("block SIGINT")(io::Error::from_raw_os_error(r)));
        }
        set
    };
    std::thread::Builder::new()
        .name("bench-signals".into())
        .spawn(move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is a valid signal set; sigwait writes the signal into `sig`.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                eprintln!(
                    "\nuringcache-bench: interrupted; removing its cgroups and scratch files"
                );
                remove_all_live();
                also();
                std::process::exit(128 + sig);
            }
        })
        .map(|_| ())
        .map_err(ctx("start the signal thread"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    const MIB: u64 = 1 << 20;

    /// A cgroup, or `None` with the reason printed (no hierarchy, no permission).
    fn make(tag: &str, limit: u64) -> Option<MemCgroup> {
        match MemCgroup::create(tag, limit) {
            Ok(cg) => Some(cg),
            Err(e) => {
                eprintln!("skipped: no memory cgroup can be made here: {e}");
                None
            }
        }
    }

    /// Reads `path` whole through the kernel cache, 1 MiB at a time.
    fn read_all(path: &Path) -> io::Result<u64> {
        let mut f = fs::File::open(path)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let k = f.read(&mut buf)?;
            if k == 0 {
                return Ok(n);
            }
            n += k as u64;
        }
    }

    /// A scratch file of `len` bytes, its kernel cache dropped.
    fn scratch(name: &str, len: u64) -> PathBuf {
        let p = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let block = vec![0x5au8; 1 << 20];
        let mut data = Vec::with_capacity(len as usize);
        while (data.len() as u64) < len {
            data.extend_from_slice(&block);
        }
        fs::write(&p, &data).unwrap();
        let f = fs::File::open(&p).unwrap();
        f.sync_all().unwrap();
        // SAFETY: a valid descriptor.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        p
    }

    #[test]
    fn created_with_its_limit_and_removed() {
        let Some(cg) = make("t-create", 16 * MIB) else {
            return;
        };
        let path = cg.path().to_path_buf();
        assert!(path.is_dir());
        assert_eq!(cg.limit(), 16 * MIB);
        let file = match cg.version() {
            Version::V1 => "memory.limit_in_bytes",
            Version::V2 => "memory.max",
        };
        let set: u64 = fs::read_to_string(path.join(file))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(set, 16 * MIB);
        cg.remove().unwrap();
        assert!(!path.exists());
    }

    /// Not a test of its own: the body of the child the tests start (this test binary again,
    /// running only this function, with [`CHILD_ENV`] set). Without the variable it does
    /// nothing.
    #[test]
    fn child_entry() {
        if !is_child() {
            return;
        }
        serve_child(|(path, panic): (PathBuf, bool)| -> Result<u64, String> {
            assert!(!panic, "a contender panicked in the child");
            // The child reads with a thread of its own, as the contenders do.
            std::thread::scope(|s| {
                s.spawn(|| read_all(&path).map_err(|e| e.to_string()))
                    .join()
            })
            .map_err(|_| "the reading thread panicked".to_string())?
        })
        .unwrap();
    }

    const CHILD_ARGS: [&str; 4] = [
        "--exact",
        "cgroup::tests::child_entry",
        "--nocapture",
        "--test-threads=1",
    ];

    #[test]
    fn a_child_in_it_is_charged_up_to_the_limit() {
        // Room for the child's own memory (a debug test binary) beside the page cache.
        let Some(cg) = make("t-charge", 24 * MIB) else {
            return;
        };
        let file = scratch("uringcache-bench-cgroup-charge", 64 * MIB);
        cg.reset_peak().unwrap();
        let read: io::Result<Result<u64, String>> = cg.run_in_child(&CHILD_ARGS, &(&file, false));
        let (peak, usage) = (cg.peak().unwrap(), cg.usage().unwrap());
        fs::remove_file(&file).unwrap();
        assert_eq!(read.unwrap(), Ok(64 * MIB));
        // The reads' page cache was charged to it, never more than the limit.
        assert!(peak > 12 * MIB, "peak {peak}");
        assert!(peak <= 24 * MIB, "peak {peak}");
        assert!(usage <= 24 * MIB, "usage {usage}");
        let path = cg.path().to_path_buf();
        drop(cg);
        assert!(!path.exists());
    }

    #[test]
    fn removed_after_a_panic_in_the_contender() {
        let Some(cg) = make("t-panic", 24 * MIB) else {
            return;
        };
        let path = cg.path().to_path_buf();
        // A panic in the child comes back as an error.
        let e = cg
            .run_in_child::<_, Result<u64, String>>(
                &CHILD_ARGS,
                &(PathBuf::from("/nonexistent"), true),
            )
            .unwrap_err();
        assert!(e.to_string().contains("a contender panicked"), "{e}");
        // A panic in the harness while the cgroup is alive still removes it.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _cg = cg;
            panic!("a contender panicked");
        }));
        assert!(r.is_err());
        assert!(!path.exists(), "{} left behind", path.display());
    }
}
