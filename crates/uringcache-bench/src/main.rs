//! # uringcache-bench: uringcache against the kernel page cache and its peers
//!
//! `cargo run --release -p uringcache-bench [-- --quick | --full]` writes its own scratch
//! files, runs every workload against its contenders in one process, and ends with a summary
//! on stdout: one row per case with uringcache, the kernel at the same budget, the kernel
//! unbounded, the best peer and the ratios. The full table (workload | contender | median |
//! min–max | ratio vs kernel | CPU s/GiB | notes), the JSON of every sample and an SVG chart
//! of the ratios are written under `target/uringcache-bench/` (`--out DIR`), their paths
//! printed. Three sizes of run: the main run (no flag: about 2.5 minutes here, ~2 GiB of
//! scratch, the short list of contenders in `MAIN`), `--quick` (the CI smoke run: small
//! files, 16 MiB budget) and `--full` (every contender, the big files, 3 rounds). The sizes
//! below are `--full`'s; `--help` gives all three. `--workload seq-write,rand-write-sync` runs
//! only those; `--workload redb` runs redb's benchmark phases over uringcache against redb
//! on its file backend at the same memory (on request only: `redb.rs`). `--startup
//! 64M,1G,4G` instead times `Cache::build` for those budgets on both backends, with the
//! resident memory each build leaves (`startup.rs`).
//!
//! ## Contenders
//!
//! * **kernel pread** (**kernel pwrite** in the write workloads) —
//!   `std::os::unix::fs::FileExt::read_at` / `write_at` through the kernel's page cache, with
//!   `File::sync_all` (`fsync`) or `File::sync_data` (`fdatasync`): the baseline of every
//!   ratio. One thread per read in flight or writer, each with its own descriptor.
//! * **kernel preadv2 / pwritev2 RWF_DONTCACHE** — the kernel's uncached buffered I/O (Linux
//!   6.14+), synced the same way. Where the kernel refuses the flag the row says "unsupported
//!   by this kernel".
//! * **mmap** (memmap2) — copies out of a shared mapping (in place for `hit-page`); no rows in
//!   the write workloads.
//! * **tokio::fs** — seek + read (or write_all, then `sync_all` / `sync_data`), each a closure
//!   on tokio's blocking pool.
//! * **tokio-uring**, buffered and `O_DIRECT` — `File::read_at`, `File::write_all_at` +
//!   `sync_all` / `sync_data`; one runtime per core.
//! * **glommio** — `DmaStreamReader` for sequential reads, `DmaFile::read_at` for random ones
//!   (`O_DIRECT`, no cache); one executor per core. Writes: `DmaFile::write_at` with 4 writes
//!   in flight then one `fdatasync` for a sequential file (what `DmaStreamWriter` does — its
//!   `AsyncWrite` trait is not a dependency here), `write_at` + `fdatasync` each for random
//!   ones.
//! * **uringcache**, `io_uring` and thread-pool backends — a fresh `Cache` every turn, one
//!   handle per task on a tokio multi-thread runtime with 2 workers; zero-copy reads through
//!   `File::page`, writes through `File::write_all_at` + `sync_all` / `sync_data`.
//! * **uringcache blocking** — [`uringcache::BlockingFile`] (`Cache::open_blocking`), reads
//!   and writes from plain std threads with no runtime, each call parking its thread until
//!   the backend completes it; a fresh `Cache` every turn. Queue-depth-1 rows only
//!   (`rand-cold, 1 in flight`, `rand-write-sync, 1 writer`): the synchronous caller's view.
//! * **LRU model** — a simulated LRU of the budget's size, the floor of the `scan` workload.
//! * **… @ budget** — the kernel-cache contenders (`pread`, `RWF_DONTCACHE`, `mmap`,
//!   `tokio::fs`, tokio-uring buffered) again, held to uringcache's budget: each turn runs in
//!   a child process (this program again) placed in a child memory cgroup of the run's own
//!   whose limit is the budget (`cgroup.rs`; v1 `memory.limit_in_bytes`, v2 `memory.max`),
//!   made at the start and removed at exit, on error and on Ctrl-C. Their rows show the limit
//!   and the peak usage the cgroup measured (which also counts the child's own few MiB of
//!   stacks and buffers); where no cgroup can be made the row says why and the ratios fall
//!   back to the unbounded kernel. Only in the workloads where the budget matters
//!   (`rand-large`, `zipf`, `scan`, `mixed`), whose ratios are taken against
//!   `kernel pread @ budget`.
//!
//! ## Method
//!
//! * **Same work for everyone.** Every offset and trace comes from a seeded RNG (`--seed`): in
//!   a round, every contender reads (or writes) exactly the same offsets in the same order,
//!   task `i` of `n` taking every `n`-th one. Every 4 KiB block of a scratch file starts with its block
//!   number, and every read is checked: a contender that returns the wrong bytes fails its row.
//!   Every block a write workload writes carries its block number and a stamp unique to the
//!   turn; after each turn the harness reads the file back through `std::fs` — its length, a
//!   sample of 256 writes (every block of each must hold this turn's stamp) and 256 blocks
//!   spread over the file (right tags) — and a turn that fails the read-back fails its row.
//! * **Alternation.** For each case the contenders take turns, A B C … A B C …, for `--rounds`
//!   rounds, so that drift of the machine (the host's cache, other tenants) hits everyone
//!   alike. A row reports the median of its rounds with the min–max beside it, and the ratio of
//!   its median to the kernel `pread` (`pwrite`) median of the same case.
//! * **Cold and warm.** Before every turn of a cold case the harness drops the kernel's copy of
//!   the files (`posix_fadvise(POSIX_FADV_DONTNEED)`; a row notes it if more than 1 % stayed
//!   resident, checked with `mincore`), and uringcache starts with a fresh cache. At the start
//!   of the run every cold file is read once with `O_DIRECT` — the virtual disk sits on a host
//!   cache, which is then equally warm for every contender — and the run says so. Before every
//!   turn of a warm case the harness reads the file whole through the kernel cache; caches of
//!   the contenders' own (uringcache, the mmap page tables) are filled before their clock starts.
//!   Before every turn of a write workload on a new file the harness removes the file and
//!   syncs the filesystem (so freeing the last turn's blocks is not charged to the next
//!   contender); the file rand-write-sync overwrites is written and synced once at the start,
//!   and its kernel copy is dropped before every turn as for a cold case.
//! * **Latency.** On the queue-depth-1 rows each contender times every operation (a read;
//!   a write with its sync) into an HDR histogram (`hdrhistogram`, 3 significant digits: fixed
//!   memory and a constant-time record, so the recording does not grow with the count or
//!   disturb the throughput it sits in); the row gives the medians over rounds of each
//!   round's p50 and p99.
//! * **What is timed.** Only the reads, or the writes with their syncs: files are opened (or
//!   created), runtimes and caches built, threads started and warm-up reads made before the
//!   clock starts (worker threads meet at a barrier, then the clock runs until all of them
//!   are done). Wall time and CPU time
//!   (`getrusage(RUSAGE_SELF)`, user + system of every thread of the process — runtimes'
//!   workers, io_uring's io-wq workers, the cache's backend) are taken around that section
//!   only; CPU s/GiB is that CPU time over the bytes delivered (or written). uringcache's
//!   `shutdown` runs after the clock stops; in the write workloads nothing is dirty by then.
//! * **Failures are rows.** A contender's error, wrong byte or panic ends up in its row; a turn
//!   running longer than a timeout is reported as failed and the run goes on. A turn that
//!   leaves threads running behind it (which would disturb the next contender's CPU figures)
//!   is noted in its row.
//!
//! ## Workloads
//!
//! * `hit` — 4 KiB random reads of a wholly cached file (`--hit-size`, 256 MiB; uringcache's
//!   budget 1.25x the file), 1 and 2 threads/tasks, ops/s. Each turn runs at most 1.5 s (its
//!   reads counted). The uringcache target is 3x the kernel: a hit without a system call.
//! * `hit-page` — the same through a zero-copy page API, one task: `mmap` reads the page in
//!   place, the kernel row copies (its baseline); uringcache pins each page with
//!   `File::page(index)` and checks its tag in place (no copy), dropping the pin before the
//!   next read.
//! * `seq-cold` — 128 KiB sequential reads of a whole cold file (`--size`, 2 GiB), one reader,
//!   uringcache budget `--budget` (64 MiB), MB/s. Target 1.0x the kernel.
//! * `rand-cold` — a fixed count of random 4 KiB reads of the cold file, 1 and 32 in flight
//!   (kernel: 1 / 32 threads; uringcache: 1 / 32 tasks with `Advice::Random`; every contender
//!   gets its random-access hint: `POSIX_FADV_RANDOM`, `MADV_RANDOM`), ops/s. Target 1.0x the
//!   kernel's 32 threads. The 1-in-flight row also gives every contender's p50 / p99 read
//!   latency.
//! * `zipf` — Zipf(0.99) 4 KiB reads over a file 4x the budget, hot blocks scattered over the
//!   file, one reader: as many untimed warm-up reads as timed ones, from cold. ops/s, and the
//!   hit ratio where the contender can tell (uringcache's `Stats`). Target 1.0x the kernel at
//!   the same budget (the unbounded kernel takes the whole file).
//! * `rand-large` — uniform 4 KiB random reads over a file 8x the budget, 1 and 32 in
//!   flight, after an untimed warm-up of budget / 4 KiB reads that fills the cache (about
//!   94 % of them distinct): every miss evicts. Target 1.0x the kernel at the same budget.
//! * `scan` — scan resistance: the hit ratio of a hot set (10 % of the budget, uniform reads)
//!   before, during and after one sequential scan of a file 2x the budget, with one hot read
//!   per 256 KiB scanned. uringcache observes hits with `try_read_at`; the kernel `pread`
//!   rows (unbounded and at the budget) with `mincore` on a mapping of the hot file before
//!   each hot read; a plain LRU of the same size replays the same trace as the floor.
//! * `mixed` — YCSB-A-like: one client, Zipf(0.99) 4 KiB records over a file 4x the budget,
//!   50 % reads (checked) and 50 % updates (stamped), a data sync every 64 updates and one at
//!   the end, after as many untimed warm-up reads; the updates are read back after the turn.
//!   Target 1.0x the kernel at the same budget.
//! * `seq-write` — 64 KiB sequential writes of a new file (`--write-size`, 1 GiB; quick
//!   64 MiB), then one durable sync (`fsync`, `sync_all`; glommio `fdatasync`), MB/s including
//!   the sync. uringcache: budget `--budget` (64 MiB), and right after `sync_all` the file's
//!   length on disk (`std::fs::metadata`) must be the bytes written. Target 1.2x the kernel's
//!   pwrite + fsync.
//! * `rand-write-sync` — a fixed count of 4 KiB writes at seeded random block offsets of an
//!   existing, preallocated and synced file (`--sync-size`, 256 MiB; quick 32 MiB), each
//!   followed by a data sync (`fdatasync`, `sync_data`) before that writer's next write, with
//!   1 and 16 writers (kernel: threads; uringcache: tasks on one cache, whose concurrent syncs
//!   share flushes — group commit), ops/s. 4000 writes a round (quick 800), split between the
//!   writers. Targets 1.0x the kernel with 1 writer, 3x with 16. The 1-writer row also gives
//!   every contender's p50 / p99 latency of a write with its sync. uringcache's rows give its
//!   `Stats`: syncs against the flushes they took, pages written back and in how many
//!   requests.
//! * `redb` (on request only: not in a run of every workload) — the phases of redb's own
//!   benchmark (bulk load, individual writes, batch writes, cold and warm random reads,
//!   4-thread reads, range reads, removals), redb over uringcache against redb on its file
//!   backend run in a child process in a memory cgroup whose limit is uringcache's budget,
//!   redb's own cache 1 MiB on both sides, for a database that fits the budget and one 8x
//!   it, A B A B; a table per size after the summary (`redb.rs`). Targets 1.0x on every
//!   phase, 1.2x on individual writes. Its own budget: 8 MiB `--quick`, 16 MiB main, 32 MiB
//!   `--full`.
//!
//! Each uringcache row also gives the process's peak resident set over its turns (`VmHWM`,
//! reset through `/proc/self/clear_refs` before each cache is built; the largest of the
//! rounds) and how long `Cache::build` took (the median).
//!
//! ## Output
//!
//! The summary on stdout; `results.md` (the setup, the summary and every row),
//! `results.json` (every sample of every round) and `results.svg` (the ratios per case) under
//! `--out` (default `target/uringcache-bench/`); a progress bar on stderr when it is a
//! terminal (a line per turn otherwise). `--json FILE` writes a copy of the JSON to `FILE`
//! and of the chart beside it (`FILE` with the extension `.svg`).

mod args;
mod cgroup;
mod contenders;
mod data;
mod measure;
mod redb;
mod report;
mod serve;
mod startup;
mod workloads;

use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::args::Config;
use crate::contenders::Contender;
use crate::measure::{panic_message, Miss, Outcome};
use crate::report::Row;
use crate::workloads::{human, Case, Files, Prep, Task, Workload};

fn main() {
    if cgroup::is_child() {
        // A kernel contender's turn at the same budget, in its memory cgroup (or ServeDir's
        // server, or a run of redb on its file backend, there).
        let served = if serve::is_child() {
            cgroup::serve_child(serve::child_turn)
        } else if std::env::args().nth(1).as_deref() == Some(redb::CHILD_ARG) {
            cgroup::serve_child(redb::run_child)
        } else {
            cgroup::serve_child(contenders::run_child_turn)
        };
        if let Err(e) = served {
            eprintln!("uringcache-bench cgroup child: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Ok(spec) = std::env::var(startup::CHILD_ENV) {
        if let Err(e) = startup::child(&spec) {
            eprintln!("uringcache-bench start-up child: {e}");
            std::process::exit(1);
        }
        return;
    }
    // First, before any thread starts: Ctrl-C removes the cgroups and scratch files.
    if let Err(e) = cgroup::install_interrupt_cleanup(data::remove_scratch_now) {
        eprintln!("uringcache-bench: {e} (Ctrl-C will leave its cgroups and scratch files behind)");
    }
    let cfg = match args::parse(std::env::args().skip(1)) {
        Ok(cfg) => cfg,
        Err(msg) if msg == args::USAGE => {
            print!("{msg}");
            return;
        }
        Err(msg) => {
            eprintln!("uringcache-bench: {msg}");
            std::process::exit(2);
        }
    };
    if cfg.serve {
        // `--workload serve`: its own files, turns and table (serve.rs).
        if let Err(e) = serve::run(&cfg) {
            eprintln!("uringcache-bench: serve: {e}");
            std::process::exit(1);
        }
        if cfg.workloads.is_empty() {
            return;
        }
    }
    if let Err(e) = run(&cfg) {
        eprintln!("uringcache-bench: {e}");
        std::process::exit(1);
    }
}

/// Progress on stderr: a bar on a terminal, one line per turn otherwise.
struct Progress {
    bar: ProgressBar,
    lines: bool,
}

impl Progress {
    fn new(total: u64) -> Progress {
        if io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30.cyan/blue} {pos}/{len} [{elapsed_precise}] {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            Progress { bar, lines: false }
        } else {
            Progress {
                bar: ProgressBar::hidden(),
                lines: true,
            }
        }
    }

    /// A line on stderr that does not tear the bar.
    fn log(&self, msg: &str) {
        if self.lines {
            eprintln!("{msg}");
        } else {
            self.bar.println(msg);
        }
    }

    /// Prints to stdout without tearing the bar.
    fn out(&self, msg: &str) {
        self.bar.suspend(|| println!("{msg}"));
    }
}

/// The whole run.
fn run(cfg: &Config) -> io::Result<()> {
    let started = Instant::now();
    let load_start = load_average();
    let mut setup: Vec<String> = Vec::new();
    let mut all = contenders::all();
    if cfg.workloads.iter().any(|w| w.budget_matters()) {
        let cg = cgroup::MemCgroup::create("budget", cfg.budget);
        setup.push(match &cg {
            Ok(cg) => format!(
                "memory cgroup {} ({:?}) with a limit of {}: the kernel contenders \"@ budget\" run their turns in a child process placed in it",
                cg.path().display(),
                cg.version(),
                human(cg.limit())
            ),
            Err(e) => format!("no memory cgroup for the same-budget rows: {e}"),
        });
        all = contenders::with_budget(all, Arc::new(cg.map_err(|e| e.to_string())));
    }
    let chosen: Vec<Arc<dyn Contender>> = all
        .into_iter()
        .filter(|c| {
            c.id() == contenders::BASELINE
                || c.id() == contenders::BUDGET_BASELINE
                || cfg.contenders.is_empty()
                || cfg.contenders.iter().any(|f| {
                    c.id().contains(f.as_str())
                        || c.name().to_lowercase().contains(&f.to_lowercase())
                })
        })
        .collect();

    let mut scratch = data::Scratch::new(cfg.dir.as_deref())?;
    if !cfg.startup.is_empty() {
        let (file, _) = scratch.create("startup.dat", 1 << 20)?;
        let table = startup::run(&cfg.startup, cfg.rounds, &file)?;
        println!(
            "# uringcache-bench --startup\n\n- machine: Linux {}, {} CPUs; load average {load_start}; {} round(s), median (min–max)\n\n{table}",
            kernel_release(),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            cfg.rounds,
        );
        return Ok(());
    }
    let uses = |w: Workload| cfg.workloads.contains(&w);
    let mut files = Files::default();
    let mut cold_files: Vec<PathBuf> = Vec::new();
    let mut make = |name: &str, size: u64, cold: bool, setup: &mut Vec<String>| {
        eprintln!("writing {name} ({}) …", human(size));
        let (p, rate) = scratch.create(name, size)?;
        setup.push(format!(
            "wrote {} ({}) at {rate:.0} MB/s (plain writes + fsync)",
            p.display(),
            human(size)
        ));
        if cold {
            cold_files.push(p.clone());
        }
        io::Result::Ok(Some(p))
    };
    if uses(Workload::Hit) || uses(Workload::HitPage) {
        files.hit = make("hit.dat", cfg.hit_size, false, &mut setup)?;
    }
    if uses(Workload::SeqCold) || uses(Workload::RandCold) {
        files.big = make("cold.dat", cfg.size, true, &mut setup)?;
    }
    if uses(Workload::Zipf) {
        files.zipf = make("zipf.dat", workloads::zipf_len(cfg), true, &mut setup)?;
    }
    if uses(Workload::RandLarge) {
        files.large = make("large.dat", workloads::large_len(cfg), true, &mut setup)?;
    }
    if uses(Workload::Mixed) {
        files.mixed = make("mixed.dat", workloads::mixed_len(cfg), true, &mut setup)?;
    }
    if uses(Workload::Scan) {
        files.hot = make("scan-hot.dat", workloads::hot_len(cfg), true, &mut setup)?;
        files.scan = make("scan.dat", workloads::scan_len(cfg), true, &mut setup)?;
    }
    if uses(Workload::RandWriteSync) {
        files.sync = make("sync.dat", cfg.sync_size, false, &mut setup)?;
    }
    if uses(Workload::SeqWrite) {
        files.seq_write = Some(scratch.reserve("seq-write.dat"));
    }
    for p in &cold_files {
        eprintln!("reading {} once with O_DIRECT …", p.display());
        let rate = data::read_direct(p)?;
        data::drop_kernel_cache(p)?;
        setup.push(format!(
            "read {} once with O_DIRECT at {rate:.0} MB/s, so the host cache under the virtual disk is equally warm for every contender",
            p.display()
        ));
    }

    let cases = workloads::cases(cfg, &files);
    let total: usize = cases
        .iter()
        .map(|c| {
            cfg.rounds
                * chosen
                    .iter()
                    .filter(|k| runs_in(cfg, k.as_ref(), c))
                    .count()
        })
        .sum();
    let progress = Progress::new(total as u64);
    let mut rows: Vec<Row> = Vec::new();
    let mut timeouts = 0;
    let mut step = 0;
    for case in &cases {
        let who: Vec<&Arc<dyn Contender>> = chosen
            .iter()
            .filter(|k| runs_in(cfg, k.as_ref(), case))
            .collect();
        let first = rows.len();
        for k in &who {
            rows.push(Row::with_baseline(
                case.workload,
                &case.name,
                case.unit,
                case.target,
                k.id(),
                k.name_in(case.workload),
                case.baseline,
            ));
        }
        for round in 0..cfg.rounds {
            let task = (case.make)(round as u64);
            for (j, k) in who.iter().enumerate() {
                step += 1;
                let task = task.for_turn(step as u64);
                let label = format!(
                    "{} · round {}/{} · {}",
                    case.name,
                    round + 1,
                    cfg.rounds,
                    k.name_in(case.workload)
                );
                progress.bar.set_message(label.clone());
                let row = &mut rows[first + j];
                match prepare(case, k.kernel_cached()) {
                    Ok(Some(note)) => row.prep_notes.push(note),
                    Ok(None) => {}
                    Err(e) => row
                        .prep_notes
                        .push(format!("preparing the cache state failed: {e}")),
                }
                let threads_before = thread_count();
                let outcome = run_turn(k, &task, cfg.turn_timeout);
                if let Some(left) = threads_left_behind(threads_before) {
                    row.prep_notes.push(format!(
                        "left {left} thread(s) running after its turn (they may disturb later turns)"
                    ));
                }
                if matches!(&outcome, Err(Miss::Failed(m)) if m.starts_with("timed out")) {
                    timeouts += 1;
                }
                // What a turn wrote is read back through std::fs before it counts.
                let outcome = outcome.and_then(|s| {
                    task.check_after()
                        .map(|()| s)
                        .map_err(|e| Miss::Failed(format!("read-back after the turn: {e}")))
                });
                let shown = match &outcome {
                    Ok(s) => report::fmt_value(case.unit, report::value(case.unit, s)),
                    Err(m) => report::miss_text(m),
                };
                if progress.lines {
                    progress.log(&format!("[{step}/{total}] {label}: {shown}"));
                }
                match outcome {
                    Ok(s) => row.samples.push(s),
                    Err(m) => row.misses.push(m),
                }
                progress.bar.inc(1);
            }
        }
    }
    progress.bar.finish_and_clear();
    report::finish(&mut rows, contenders::BASELINE);
    let redb = if uses(Workload::Redb) {
        Some(redb::run(cfg, &mut scratch, &|line| eprintln!("{line}"))?)
    } else {
        None
    };

    // The report.
    let mut text = String::new();
    text.push_str(&format!(
        "# uringcache-bench{}\n\n",
        if cfg.quick {
            " (--quick)"
        } else if cfg.full {
            " (--full)"
        } else {
            ""
        }
    ));
    text.push_str(&format!(
        "- machine: Linux {}, {} CPUs; load average {load_start} at the start, {} at the end (other processes share the CPUs); {} round(s) per case, contenders alternated; seed {}\n",
        kernel_release(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
        cfg.rounds,
        cfg.seed
    ));
    for s in &setup {
        text.push_str(&format!("- {s}\n"));
    }
    for c in &cases {
        text.push_str(&format!(
            "- **{}** ({}): {}\n",
            c.name,
            match c.prep {
                Prep::Warm => "warm",
                Prep::Cold => "cold: kernel copy dropped before every turn",
                Prep::Fresh => "new file: removed before every turn",
            },
            c.about
        ));
    }
    if timeouts > 0 {
        text.push_str(&format!(
            "- WARNING: {timeouts} turn(s) timed out; their threads were left running and may have disturbed later turns\n"
        ));
    }
    let footer = format!(
        "\nratio: median over the median of the kernel baseline of the same case: `kernel pread @ budget` where the budget matters (rand-large, zipf, scan, mixed), the unbounded kernel pread (pwrite for writes) elsewhere; CPU s/GiB: user + system CPU of the whole process in the timed section per GiB read or written. Run took {:.0} s.\n",
        started.elapsed().as_secs_f64()
    );
    let mut summary = if cases.is_empty() {
        String::new()
    } else {
        report::summary(&rows, &cases)
    };
    if let Some(r) = &redb {
        summary.push_str(&r.markdown);
    }
    text.push_str("\n## Summary\n\n");
    text.push_str(&summary);
    text.push_str("\n## Every row\n\n");
    text.push_str(&report::table(&rows));
    text.push_str(&footer);

    let doc = serde_json::json!({
        "config": cfg,
        "kernel": kernel_release(),
        "load_average": { "start": load_start, "end": load_average() },
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "setup": setup,
        "cases": cases.iter().map(|c| serde_json::json!({
            "workload": c.workload,
            "case": c.name,
            "unit": c.unit,
            "target": c.target,
            "prep": c.prep,
            "baseline": c.baseline,
            "about": c.about,
        })).collect::<Vec<_>>(),
        "rows": rows,
        "redb": redb.as_ref().map(|r| &r.json),
        "seconds": started.elapsed().as_secs_f64(),
    });
    let mut written = Vec::new();
    let mut write_all = |json: &Path| -> io::Result<()> {
        report::write_json(json, &doc)?;
        let svg = json.with_extension("svg");
        report::write_svg(&svg, &rows)?;
        written.push(json.to_path_buf());
        written.push(svg);
        Ok(())
    };
    std::fs::create_dir_all(&cfg.out)
        .map_err(|e| io::Error::new(e.kind(), format!("create {}: {e}", cfg.out.display())))?;
    let md = cfg.out.join("results.md");
    std::fs::write(&md, &text)
        .map_err(|e| io::Error::new(e.kind(), format!("write {}: {e}", md.display())))?;
    write_all(&cfg.out.join("results.json"))?;
    if let Some(json) = &cfg.json {
        write_all(json)?;
    }
    // On stdout: the header, the summary, where the rest went.
    // (The title and the machine line; the setup and what each case measures are in the file.)
    let mut shown: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
    shown.push_str("\n## Summary\n\n");
    shown.push_str(&summary);
    shown.push_str(&footer);
    shown.push_str(&format!(
        "\nEvery row (the full table, with notes): {}\n",
        md.display()
    ));
    for p in &written {
        shown.push_str(&format!("Written: {}\n", p.display()));
    }
    progress.out(&shown);
    Ok(())
}

/// Contenders of the workloads where the budget matters in a `--quick` run (CI time): the
/// kernel unbounded and at the budget, one more kernel contender at the budget, uringcache.
const QUICK_BUDGET: [&str; 5] = [
    contenders::BASELINE,
    contenders::BUDGET_BASELINE,
    "mmap@budget",
    "uringcache-uring",
    "lru-model",
];

/// Contenders of the main run (neither `--quick` nor `--full`, no `--contender`): the kernel
/// unbounded and at the budget, the fastest peers of each kind in earlier full runs
/// (`mmap`, tokio-uring `O_DIRECT`, glommio), and uringcache.
const MAIN: [&str; 9] = [
    contenders::BASELINE,
    contenders::BUDGET_BASELINE,
    "mmap",
    "mmap@budget",
    "tokio-uring-direct",
    "glommio",
    "uringcache-uring",
    "uringcache-blocking",
    "lru-model",
];

/// Whether contender `k` has a row in `case`.
fn runs_in(cfg: &Config, k: &dyn Contender, case: &Case) -> bool {
    let main_run = !cfg.quick && !cfg.full && cfg.contenders.is_empty();
    // The driver-thread variant of uringcache compares the reactor rings with what was
    // before them: in the full run, or when asked for.
    let on_request = k.id() != contenders::SHARED_RING || cfg.full || !cfg.contenders.is_empty();
    k.applies_to_depth(case.workload, case.depth)
        && on_request
        && (!cfg.quick || !case.workload.budget_matters() || QUICK_BUDGET.contains(&k.id()))
        && (!main_run || MAIN.contains(&k.id()))
}

/// Sets the kernel cache state of `case`'s files before a turn of a contender (filled for a
/// warm case if the contender reads through it; dropped for a cold case, whoever runs);
/// returns a note if the state could not be reached (pages that stayed resident).
fn prepare(case: &Case, kernel_cached: bool) -> io::Result<Option<String>> {
    let mut notes = Vec::new();
    for f in &case.files {
        match case.prep {
            Prep::Warm if kernel_cached => data::warm_kernel_cache(f)?,
            Prep::Warm => {}
            Prep::Fresh => {
                match std::fs::remove_file(f) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                // Free the removed file's blocks (and discard them) now, not during the next
                // contender's timed section.
                data::sync_filesystem(f.parent().unwrap_or(Path::new("/")))?;
            }
            Prep::Cold => {
                data::drop_kernel_cache(f)?;
                let left = data::resident_fraction(f)?;
                if left > 0.01 {
                    notes.push(format!(
                        "{:.0} % of {} stayed in the kernel cache after the drop",
                        left * 100.0,
                        file_name(f)
                    ));
                }
            }
        }
    }
    Ok((!notes.is_empty()).then(|| notes.join(", ")))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
}

/// Threads of this process now (`/proc/self/task`).
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// Waits up to a second for the threads a turn started to end; returns how many did not.
fn threads_left_behind(before: usize) -> Option<usize> {
    let until = Instant::now() + Duration::from_secs(1);
    loop {
        let now = thread_count();
        if now <= before {
            return None;
        }
        if Instant::now() >= until {
            return Some(now - before);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs one turn on its own thread, so that a panic or a hang fails the row, not the run.
fn run_turn(k: &Arc<dyn Contender>, task: &Task, timeout: Duration) -> Outcome {
    let (tx, rx) = mpsc::channel();
    let (k2, task2) = (k.clone(), task.clone());
    let spawned = std::thread::Builder::new()
        .name(format!("turn-{}", k.id()))
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &task2 {
                Task::Reads(j) => k2.reads(j),
                Task::Pages(j) => k2.page_reads(j),
                Task::Scan(s) => k2.scan(s),
                Task::Writes(j) => k2.writes(j),
                Task::Mixed(j) => k2.mixed(j),
            }));
            let _ = tx.send(r.unwrap_or_else(|p| Err(Miss::Failed(panic_message(&*p)))));
        });
    let handle = match spawned {
        Ok(h) => h,
        Err(e) => return Err(Miss::Failed(format!("could not start the turn: {e}"))),
    };
    match rx.recv_timeout(timeout) {
        Ok(r) => {
            let _ = handle.join();
            r
        }
        Err(mpsc::RecvTimeoutError::Timeout) => Err(Miss::Failed(format!(
            "timed out after {} s (its threads were left running)",
            timeout.as_secs()
        ))),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Err(Miss::Failed("the turn's thread died".into()))
        }
    }
}

/// The 1-minute load average (`/proc/loadavg`).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "?".into())
}

/// `uname -r`.
fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}
