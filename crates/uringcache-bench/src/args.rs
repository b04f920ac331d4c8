//! Command-line flags (hand-rolled: a dozen flags do not need a parser crate) and the run's
//! configuration derived from them.

use std::path::PathBuf;
use std::time::Duration;

use crate::workloads::Workload;

/// The usage text printed by `--help` and after a bad flag.
pub const USAGE: &str = "\
uringcache-bench: uringcache against the kernel page cache and peer libraries

USAGE: cargo run --release -p uringcache-bench -- [FLAGS]

With no flag: the main run (about 2.5 minutes on a 2-core machine, ~2 GiB of scratch
files): every workload, the kernel unbounded and at uringcache's budget, one or two peers
per kind, uringcache; it ends with a summary table (one row per case) and writes the full
table (markdown), JSON and an SVG chart under target/uringcache-bench/.

FLAGS:
  --quick              small files and few operations (CI smoke run, asserts nothing about
                       speed)
  --full               the complete run: every contender, big files (2G cold file), 3
                       rounds (about 15 minutes, ~4.6 GiB of scratch files)
  --out DIR            where the results go (default target/uringcache-bench/ of the
                       target directory this binary was built in)
  --workload NAME      run only these workloads (repeatable, or a comma list):
                       hit, hit-page, seq-cold, rand-cold, rand-large, zipf, scan,
                       mixed, seq-write, rand-write-sync, all (all of those); and
                       on request only (not in `all`): serve (HTTP range reads:
                       uringcache's hyper server against tower-http's ServeDir at
                       the same memory) and redb (redb over uringcache against redb
                       on its file backend held to the same memory; about 2 minutes)
  --contender NAME     run only contenders whose id or name contains NAME (repeatable,
                       or a comma list); the kernel pread baselines (unbounded and at
                       the budget) always run; without it the main run has its own
                       short list (--full and --quick run every contender)
Defaults below are main run / --quick / --full:
  --size BYTES         the cold file of seq-cold and rand-cold (512M / 128M / 2G)
  --hit-size BYTES     the cached file of hit and hit-page (64M / 32M / 256M)
  --write-size BYTES   the new file seq-write writes (256M / 64M / 1G)
  --sync-size BYTES    the preallocated file rand-write-sync overwrites (64M / 32M / 256M)
  --budget BYTES       uringcache's memory budget for seq-cold, rand-cold, rand-large, zipf,
                       scan, mixed and the write workloads, and the kernel's in the
                       `@ budget` rows (64M / 16M / 64M); rand-large's file is 8x,
                       zipf's and mixed's 4x, scan's 2x this budget
  --rounds N           rounds of each workload, contenders alternated in each (2 / 2 / 3)
  --seed N             seed of every random offset and trace (default 1)
  --dir PATH           scratch directory (default: a fresh directory under /tmp, removed at
                       exit); the harness's own files in it are removed at exit
  --json FILE          also write the JSON results to FILE and an SVG chart of the
                       ratios beside it (FILE with the extension .svg)
  --startup BUDGETS    instead of the workloads: time Cache::build (and the first miss,
                       and shutdown) for each budget of the comma list on both backends,
                       --rounds times, with the resident memory the build leaves
                       (e.g. --startup 64M,1G,4G)
  -h, --help           this text

BYTES accept the suffixes K, M, G, T (powers of 1024), e.g. 2G, 128M, 65536.
";

/// Everything one run needs to know, after flags and defaults.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Config {
    /// `--quick` was given.
    pub quick: bool,
    /// `--full` was given.
    pub full: bool,
    /// Where the results (markdown, JSON, SVG) are written.
    pub out: PathBuf,
    /// Workloads to run, in the order they run.
    pub workloads: Vec<Workload>,
    /// `--workload serve` was given (`serve.rs`; not one of `workloads`, not in `all`).
    pub serve: bool,
    /// Contender filters (substrings); empty: all.
    pub contenders: Vec<String>,
    /// The cold file's size (seq-cold, rand-cold).
    pub size: u64,
    /// The cached file's size (hit, hit-page).
    pub hit_size: u64,
    /// The new file's size (seq-write).
    pub write_size: u64,
    /// The overwritten file's size (rand-write-sync).
    pub sync_size: u64,
    /// uringcache's budget for the cold, zipf, scan and write workloads.
    pub budget: u64,
    /// Rounds per workload.
    pub rounds: usize,
    /// Base seed of the random offsets and traces.
    pub seed: u64,
    /// Scratch directory given with `--dir`, if any.
    pub dir: Option<PathBuf>,
    /// Where to write JSON (and the SVG beside it).
    pub json: Option<PathBuf>,
    /// Budgets of the start-up measurement (`--startup`); empty: run the workloads.
    pub startup: Vec<u64>,
    /// Upper bound on reads per task in `hit` (the deadline usually stops it first).
    pub hit_ops: usize,
    /// Timed reads of `rand-cold` per round (fixed: no deadline).
    pub rand_ops: usize,
    /// Timed reads of `zipf` per round; as many again warm the caches first.
    pub zipf_ops: usize,
    /// Writes (each followed by a data sync) of `rand-write-sync` per round, shared by the
    /// writers (fixed: no deadline).
    pub sync_ops: usize,
    /// How long one contender's timed section of `hit` may run before it stops early.
    #[serde(serialize_with = "secs")]
    pub hit_time: Duration,
    /// The same bound for `zipf` (it stops the uncached contenders early).
    #[serde(serialize_with = "secs")]
    pub zipf_time: Duration,
    /// A contender's turn taking longer than this is reported as failed (its threads are
    /// left behind) and the run goes on.
    #[serde(serialize_with = "secs")]
    pub turn_timeout: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Parses `2G`, `128M`, `64k`, `4096`, `1.5G` (binary multiples) into bytes.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some(c @ ('k' | 'K' | 'm' | 'M' | 'g' | 'G' | 't' | 'T')) => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                _ => 40,
            };
            (&t[..t.len() - 1], 1u64 << shift)
        }
        _ => (t, 1),
    };
    let bad = || format!("{text:?} is not a size in bytes (examples: 2G, 128M, 65536)");
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult).ok_or_else(bad);
    }
    let f: f64 = num.parse().map_err(|_| bad())?;
    if !(f.is_finite() && f >= 0.0) {
        return Err(bad());
    }
    Ok((f * mult as f64) as u64)
}

fn parse_list(value: &str, out: &mut Vec<String>) {
    out.extend(
        value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from),
    );
}

const MIB: u64 = 1 << 20;

/// Parses the process's arguments. `Err` carries the message to print (usage on `--help`).
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Config, String> {
    let mut quick = false;
    let mut full = false;
    let mut out = None;
    let mut workloads: Vec<String> = Vec::new();
    let mut contenders: Vec<String> = Vec::new();
    let mut size = None;
    let mut hit_size = None;
    let mut budget = None;
    let mut write_size = None;
    let mut sync_size = None;
    let mut rounds = None;
    let mut seed = 1u64;
    let mut dir = None;
    let mut json = None;
    let mut startup = Vec::new();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value\n\n{USAGE}"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Err(USAGE.to_string()),
            "--quick" => quick = true,
            "--full" => full = true,
            "--out" => out = Some(PathBuf::from(value(&flag)?)),
            "--workload" | "--workloads" => parse_list(&value(&flag)?, &mut workloads),
            "--contender" | "--contenders" => parse_list(&value(&flag)?, &mut contenders),
            "--size" => size = Some(parse_bytes(&value(&flag)?)?),
            "--hit-size" => hit_size = Some(parse_bytes(&value(&flag)?)?),
            "--budget" => budget = Some(parse_bytes(&value(&flag)?)?),
            "--write-size" => write_size = Some(parse_bytes(&value(&flag)?)?),
            "--sync-size" => sync_size = Some(parse_bytes(&value(&flag)?)?),
            "--rounds" => {
                let v = value(&flag)?;
                let n: usize = v
                    .parse()
                    .map_err(|_| format!("--rounds {v:?}: not a number"))?;
                if n == 0 {
                    return Err("--rounds must be at least 1".into());
                }
                rounds = Some(n);
            }
            "--seed" => {
                let v = value(&flag)?;
                seed = v
                    .parse()
                    .map_err(|_| format!("--seed {v:?}: not a number"))?;
            }
            "--dir" => dir = Some(PathBuf::from(value(&flag)?)),
            "--json" => json = Some(PathBuf::from(value(&flag)?)),
            "--startup" => {
                let mut names = Vec::new();
                parse_list(&value(&flag)?, &mut names);
                for n in &names {
                    startup.push(parse_bytes(n)?);
                }
                if startup.is_empty() {
                    return Err("--startup needs at least one budget (e.g. 64M,1G)".into());
                }
            }
            other => return Err(format!("unknown flag {other:?}\n\n{USAGE}")),
        }
    }
    if quick && full {
        return Err("--quick and --full exclude each other".into());
    }
    // Sizes and counts: quick (CI), the main run, full.
    let pick = |q: u64, main: u64, f: u64| {
        if quick {
            q
        } else if full {
            f
        } else {
            main
        }
    };
    let serve = workloads.iter().any(|w| w == "serve");
    workloads.retain(|w| w != "serve");
    let workloads = if serve && workloads.is_empty() {
        Vec::new()
    } else if workloads.is_empty() || workloads.iter().any(|w| w == "all") {
        Workload::ALL.to_vec()
    } else {
        let mut chosen = Vec::new();
        for name in &workloads {
            let w = Workload::from_name(name).ok_or_else(|| {
                format!(
                    "unknown workload {name:?}; known: {}",
                    Workload::ALL
                        .iter()
                        .chain(&Workload::ON_REQUEST)
                        .map(|w| w.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            if !chosen.contains(&w) {
                chosen.push(w);
            }
        }
        // Run in the canonical order whatever the order on the command line.
        Workload::ALL
            .iter()
            .chain(&Workload::ON_REQUEST)
            .copied()
            .filter(|w| chosen.contains(w))
            .collect()
    };
    // Files are written in 1 MiB chunks and read in 128 KiB requests: round to whole MiBs.
    let round_mib = |name: &str, v: u64| -> Result<u64, String> {
        if v < 4 * MIB {
            return Err(format!("{name} must be at least 4M"));
        }
        Ok(v / MIB * MIB)
    };
    let size = round_mib(
        "--size",
        size.unwrap_or(pick(128 * MIB, 512 * MIB, 2 << 30)),
    )?;
    let hit_size = round_mib(
        "--hit-size",
        hit_size.unwrap_or(pick(32 * MIB, 64 * MIB, 256 * MIB)),
    )?;
    // Quick: a quarter of the budget, so that the files of the workloads where it matters (8x, 4x,
    // 2x it) and the warm-ups that fill it stay small.
    let budget = round_mib(
        "--budget",
        budget.unwrap_or(if quick { 16 * MIB } else { 64 * MIB }),
    )?;
    let write_size = round_mib(
        "--write-size",
        write_size.unwrap_or(pick(64 * MIB, 256 * MIB, 1 << 30)),
    )?;
    let sync_size = round_mib(
        "--sync-size",
        sync_size.unwrap_or(pick(32 * MIB, 64 * MIB, 256 * MIB)),
    )?;
    let ms = |q, main, f| Duration::from_millis(pick(q, main, f));
    Ok(Config {
        quick,
        full,
        out: out.unwrap_or_else(default_out),
        workloads,
        serve,
        contenders,
        size,
        hit_size,
        write_size,
        sync_size,
        budget,
        rounds: rounds.unwrap_or(if full { 3 } else { 2 }),
        seed,
        dir,
        json,
        startup,
        hit_ops: pick(500_000, 1_000_000, 2_000_000) as usize,
        rand_ops: pick(4_000, 8_000, 20_000) as usize,
        zipf_ops: pick(10_000, 20_000, 50_000) as usize,
        sync_ops: pick(800, 1_600, 4_000) as usize,
        hit_time: ms(250, 500, 1500),
        zipf_time: ms(1000, 1500, 3000),
        turn_timeout: Duration::from_secs(pick(60, 120, 180)),
    })
}

/// `target/uringcache-bench/` of the target directory this binary was built in
/// (`target/release/uringcache-bench` → `target/`), else of the current directory.
fn default_out() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            let profile = exe.parent()?;
            let target = profile.parent()?;
            (target.file_name()? == "target" || target.join("CACHEDIR.TAG").exists())
                .then(|| target.join("uringcache-bench"))
        })
        .unwrap_or_else(|| PathBuf::from("target/uringcache-bench"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        assert_eq!(parse_bytes("128M"), Ok(128 << 20));
        assert_eq!(parse_bytes("64k"), Ok(64 << 10));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("1.5G"), Ok(3 << 29));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999T").is_err());
    }

    #[test]
    fn flags_parse() {
        let args = [
            "--quick",
            "--workload",
            "zipf,hit",
            "--workload=scan",
            "--workload",
            "rand-write-sync",
            "--write-size=16M",
            "--size",
            "64M",
            "--rounds",
            "1",
            "--json",
            "/tmp/x.json",
        ];
        let c = parse(args.iter().map(|s| s.to_string())).unwrap();
        assert!(c.quick);
        assert_eq!(
            c.workloads,
            vec![
                Workload::Hit,
                Workload::Zipf,
                Workload::Scan,
                Workload::RandWriteSync
            ]
        );
        assert_eq!(c.write_size, 16 << 20);
        assert_eq!(c.sync_size, 32 << 20);
        assert_eq!(c.size, 64 << 20);
        assert_eq!(c.rounds, 1);
        assert_eq!(c.json, Some(PathBuf::from("/tmp/x.json")));
        assert!(parse(["--workload", "nope"].iter().map(|s| s.to_string())).is_err());
        let s = parse(["--startup", "64M,1G"].iter().map(|s| s.to_string())).unwrap();
        assert_eq!(s.startup, vec![64 << 20, 1 << 30]);
        assert!(parse(["--bogus"].iter().map(|s| s.to_string())).is_err());
        let s = parse(["--workload", "serve"].iter().map(|s| s.to_string())).unwrap();
        assert!(s.serve && s.workloads.is_empty());
        let s = parse(["--workload", "serve,hit"].iter().map(|s| s.to_string())).unwrap();
        assert!(s.serve && s.workloads == vec![Workload::Hit]);
        assert!(!parse(std::iter::empty()).unwrap().serve);
        assert!(parse(["--size"].iter().map(|s| s.to_string())).is_err());
    }
}
