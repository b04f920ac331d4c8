//! Results: per (case, contender) the samples of every round, their median and spread, the
//! ratio to the kernel, CPU per GiB; printed as a markdown table, written as JSON and as an
//! SVG chart of the ratios.

use std::io;
use std::path::Path;

use crate::measure::{Latency, MemUse, Miss, ProcessUse, Sample, WriteCounts};
use crate::workloads::human;
use crate::workloads::{Unit, Workload};

/// Every round's result of one contender in one case.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    /// The workload.
    pub workload: Workload,
    /// The case name.
    pub case: String,
    /// The contender's id.
    pub contender_id: &'static str,
    /// The contender's name.
    pub contender: &'static str,
    /// The unit of `median`, `min`, `max`.
    pub unit: Unit,
    /// uringcache's target ratio in this case, if any.
    pub target: Option<f64>,
    /// The successful rounds.
    pub samples: Vec<Sample>,
    /// The rounds that produced no sample, and why.
    pub misses: Vec<Miss>,
    /// Harness notes (a kernel cache that would not drop, threads left running).
    pub prep_notes: Vec<String>,
    /// Median over successful rounds.
    pub median: Option<f64>,
    /// Smallest.
    pub min: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
    /// `median` over the kernel `pread` row's median in the same case.
    pub ratio: Option<f64>,
    /// Median CPU seconds (whole process, user + system) per GiB delivered.
    pub cpu_s_per_gib: Option<f64>,
    /// Median cache hit ratio, where the contender reports one.
    pub hit_ratio: Option<f64>,
    /// Median hot-set hit ratios before / during / after the scan.
    pub phases: Option<[f64; 3]>,
    /// Median write and sync counters (each field its own median), where the contender
    /// reports them.
    pub writes: Option<WriteCounts>,
    /// Median per-operation latency quantiles (each its own median over rounds), on the rows
    /// that record them.
    pub latency: Option<Latency>,
    /// The id of the row its ratio is taken against.
    pub baseline: &'static str,
    /// Whether the ratio fell back to the unbounded kernel because the baseline at the same
    /// budget has no figure (no cgroup).
    pub ratio_unbounded: bool,
    /// Median cgroup peak (and its limit), on the rows run at the same budget.
    pub memory: Option<MemUse>,
    /// Largest peak RSS and median cache build time, on the uringcache rows.
    pub process: Option<ProcessUse>,
    /// `ok`, `partial` (some rounds failed), `n/a`, `unsupported`, `not-yet`, `failed`.
    pub status: &'static str,
    /// The notes column.
    pub notes: String,
}

impl Row {
    /// An empty row whose ratio is taken against the unbounded kernel (used by the tests).
    #[allow(dead_code)]
    pub fn new(
        workload: Workload,
        case: &str,
        unit: Unit,
        target: Option<f64>,
        id: &'static str,
        name: &'static str,
    ) -> Row {
        Row::with_baseline(
            workload,
            case,
            unit,
            target,
            id,
            name,
            crate::contenders::BASELINE,
        )
    }

    /// An empty row whose ratio is taken against `baseline`'s row of the same case.
    pub fn with_baseline(
        workload: Workload,
        case: &str,
        unit: Unit,
        target: Option<f64>,
        id: &'static str,
        name: &'static str,
        baseline: &'static str,
    ) -> Row {
        Row {
            workload,
            case: case.to_string(),
            contender_id: id,
            contender: name,
            unit,
            target,
            samples: Vec::new(),
            misses: Vec::new(),
            prep_notes: Vec::new(),
            median: None,
            min: None,
            max: None,
            ratio: None,
            cpu_s_per_gib: None,
            hit_ratio: None,
            phases: None,
            writes: None,
            latency: None,
            baseline,
            ratio_unbounded: false,
            memory: None,
            process: None,
            status: "failed",
            notes: String::new(),
        }
    }

    /// One sample's figure in the row's unit.
    pub fn value(&self, s: &Sample) -> f64 {
        value(self.unit, s)
    }
}

/// A sample's figure in `unit`.
pub fn value(unit: Unit, s: &Sample) -> f64 {
    let secs = s.secs.max(1e-9);
    match unit {
        Unit::OpsPerSec => s.ops as f64 / secs,
        Unit::MBps => s.bytes as f64 / secs / 1e6,
        Unit::HitRatio => s.phases.map_or(0.0, |p| p[1]),
    }
}

/// The median of `v` (mean of the middle two for an even count).
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// How a miss reads in the table.
pub fn miss_text(m: &Miss) -> String {
    match m {
        Miss::NotApplicable(r) => format!("n/a: {r}"),
        Miss::Unsupported(r) | Miss::NotYet(r) => r.clone(),
        Miss::Failed(r) => format!("failed: {r}"),
    }
}

/// Fills the derived fields of every row: medians, ratios, status and notes.
pub fn finish(rows: &mut [Row], baseline: &str) {
    for r in rows.iter_mut() {
        let vals: Vec<f64> = r.samples.iter().map(|s| r.value(s)).collect();
        r.median = median(vals.clone());
        r.min = vals.iter().copied().reduce(f64::min);
        r.max = vals.iter().copied().reduce(f64::max);
        r.cpu_s_per_gib = median(
            r.samples
                .iter()
                .filter(|s| s.bytes > 0 && s.cpu_secs > 0.0)
                .map(|s| s.cpu_secs / (s.bytes as f64 / (1u64 << 30) as f64))
                .collect(),
        );
        r.hit_ratio = median(r.samples.iter().filter_map(|s| s.hit_ratio).collect());
        let phases: Vec<[f64; 3]> = r.samples.iter().filter_map(|s| s.phases).collect();
        if !phases.is_empty() {
            let m = |i: usize| median(phases.iter().map(|p| p[i]).collect()).unwrap_or(0.0);
            r.phases = Some([m(0), m(1), m(2)]);
        }
        let mems: Vec<MemUse> = r.samples.iter().filter_map(|s| s.memory).collect();
        if let Some(first) = mems.first() {
            r.memory = Some(MemUse {
                limit: first.limit,
                peak: median(mems.iter().map(|m| m.peak as f64).collect()).unwrap_or(0.0) as u64,
            });
        }
        let procs: Vec<ProcessUse> = r.samples.iter().filter_map(|s| s.process).collect();
        if !procs.is_empty() {
            r.process = Some(ProcessUse {
                peak_rss: procs.iter().map(|p| p.peak_rss).max().unwrap_or(0),
                rss_reset: procs.iter().all(|p| p.rss_reset),
                build_secs: median(procs.iter().map(|p| p.build_secs).collect()).unwrap_or(0.0),
            });
        }
        let lats: Vec<Latency> = r.samples.iter().filter_map(|s| s.latency).collect();
        if !lats.is_empty() {
            let m = |f: fn(&Latency) -> f64| median(lats.iter().map(f).collect()).unwrap_or(0.0);
            r.latency = Some(Latency {
                p50_us: m(|l| l.p50_us),
                p99_us: m(|l| l.p99_us),
                count: lats.iter().map(|l| l.count).sum(),
            });
        }
        let writes: Vec<WriteCounts> = r.samples.iter().filter_map(|s| s.writes).collect();
        if !writes.is_empty() {
            let m = |f: fn(&WriteCounts) -> u64| {
                median(writes.iter().map(|w| f(w) as f64).collect()).map_or(0, |v| v.round() as u64)
            };
            r.writes = Some(WriteCounts {
                syncs: m(|w| w.syncs),
                flushes: m(|w| w.flushes),
                pages_written: m(|w| w.pages_written),
                write_requests: m(|w| w.write_requests),
                throttle_waits: m(|w| w.throttle_waits),
            });
        }
    }
    // Ratios against the row's baseline in the same case; where that has no figure (no
    // cgroup for the same budget), against the unbounded kernel, and the row says so.
    let bases: Vec<(String, &'static str, Option<f64>)> = rows
        .iter()
        .map(|r| (r.case.clone(), r.contender_id, r.median))
        .collect();
    let base_of = |case: &str, id: &str| {
        bases
            .iter()
            .find(|(c, i, _)| c == case && *i == id)
            .and_then(|(_, _, m)| *m)
    };
    for r in rows.iter_mut() {
        if r.unit == Unit::HitRatio {
            continue;
        }
        let mut base = base_of(&r.case, r.baseline);
        if base.is_none() && r.baseline != baseline {
            base = base_of(&r.case, baseline);
            r.ratio_unbounded = base.is_some();
        }
        if let (Some(m), Some(b)) = (r.median, base) {
            if b > 0.0 {
                r.ratio = Some(m / b);
            }
        }
    }
    for r in rows.iter_mut() {
        let mut notes: Vec<String> = Vec::new();
        let rounds = r.samples.len() + r.misses.len();
        r.status = if !r.samples.is_empty() {
            if r.misses.is_empty() {
                "ok"
            } else {
                "partial"
            }
        } else {
            match r.misses.first() {
                Some(Miss::NotApplicable(_)) => "n/a",
                Some(Miss::Unsupported(_)) => "unsupported",
                Some(Miss::NotYet(_)) => "not-yet",
                _ => "failed",
            }
        };
        if r.samples.is_empty() {
            if let Some(m) = r.misses.first() {
                let mut text = miss_text(m);
                if matches!(m, Miss::Failed(_)) && rounds > 1 {
                    text = format!("{text} (all {rounds} rounds)");
                }
                notes.push(text);
            }
        } else if let Some(m) = r.misses.first() {
            notes.push(format!(
                "{} of {rounds} rounds failed: {}",
                r.misses.len(),
                miss_text(m)
            ));
        }
        if let Some(l) = r.latency {
            notes.push(latency_text(&l));
        }
        if let Some(mu) = r.memory {
            notes.push(format!(
                "cgroup limit {}, peak {}",
                human(mu.limit),
                human(mu.peak)
            ));
        }
        if let Some(p) = r.process {
            notes.push(format!(
                "peak RSS {}{}, cache built in {:.1} ms",
                human(p.peak_rss),
                if p.rss_reset {
                    ""
                } else {
                    " (the run's so far: it could not be reset)"
                },
                p.build_secs * 1e3
            ));
        }
        if r.ratio_unbounded {
            notes.push("ratio vs the unbounded kernel (no figure at the same budget)".into());
        }
        if let Some(h) = r.hit_ratio {
            notes.push(format!("hit ratio {:.1} %", h * 100.0));
        }
        if let (Some(t), Some(ratio)) = (r.target, r.ratio) {
            if r.contender_id.starts_with("uringcache") {
                let verdict = if ratio >= t { "met" } else { "missed" };
                notes.push(format!("target >= {t:.1}x: {verdict}"));
            }
        }
        if let Some(w) = r.writes {
            notes.push(write_counts_text(&w));
        }
        let mut seen: Vec<&str> = Vec::new();
        for s in &r.samples {
            if let Some(n) = s.note.as_deref() {
                if !seen.contains(&n) {
                    seen.push(n);
                }
            }
        }
        notes.extend(seen.into_iter().map(String::from));
        let mut prep = r.prep_notes.clone();
        prep.dedup();
        notes.extend(prep);
        r.notes = notes.join("; ");
    }
}

/// How a row's latency reads in the notes: `p50 48.1 µs, p99 120 µs`.
pub fn latency_text(l: &Latency) -> String {
    format!("p50 {}, p99 {}", fmt_us(l.p50_us), fmt_us(l.p99_us))
}

/// Microseconds to three significant digits or so (`0.84 µs`, `48.1 µs`, `1.20 ms`).
fn fmt_us(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else if us >= 100.0 {
        format!("{us:.0} µs")
    } else if us >= 10.0 {
        format!("{us:.1} µs")
    } else {
        format!("{us:.2} µs")
    }
}

/// How a row's write counters read in the notes: syncs against the flushes they took (group
/// commit), and how writeback went.
pub fn write_counts_text(w: &WriteCounts) -> String {
    let mut t = format!("{} sync(s), {} flush(es)", w.syncs, w.flushes);
    if w.syncs > 1 && w.flushes > 0 {
        t.push_str(&format!(
            " ({:.1} syncs a flush)",
            w.syncs as f64 / w.flushes as f64
        ));
    }
    if w.write_requests > 0 {
        t.push_str(&format!(
            "; {} pages written back in {} requests ({:.0} KiB each)",
            w.pages_written,
            w.write_requests,
            w.pages_written as f64 * 4.0 / w.write_requests as f64
        ));
    }
    if w.throttle_waits > 0 {
        t.push_str(&format!("; {} throttled waits", w.throttle_waits));
    }
    t.push_str(" (medians of rounds)");
    t
}

/// A figure with its unit, to three significant digits or so.
pub fn fmt_value(unit: Unit, v: f64) -> String {
    match unit {
        Unit::OpsPerSec => {
            if v >= 1e6 {
                format!("{:.2} M ops/s", v / 1e6)
            } else if v >= 1e3 {
                format!("{:.1} k ops/s", v / 1e3)
            } else {
                format!("{v:.0} ops/s")
            }
        }
        Unit::MBps => format!("{v:.0} MB/s"),
        Unit::HitRatio => format!("{:.1} %", v * 100.0),
    }
}

fn fmt_range(unit: Unit, lo: f64, hi: f64) -> String {
    match unit {
        Unit::OpsPerSec => {
            let (d, suffix) = if hi >= 1e6 {
                (1e6, "M")
            } else if hi >= 1e3 {
                (1e3, "k")
            } else {
                (1.0, "")
            };
            let prec = if d == 1e6 { 2 } else { 1 };
            format!("{:.*}–{:.*} {suffix}", prec, lo / d, prec, hi / d)
        }
        Unit::MBps => format!("{lo:.0}–{hi:.0}"),
        Unit::HitRatio => format!("{:.1}–{:.1} %", lo * 100.0, hi * 100.0),
    }
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(
        "| workload | contender | median | min–max | ratio vs kernel | CPU s/GiB | notes |\n",
    );
    out.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
    for r in rows {
        let (median, range) = match (r.median, r.min, r.max) {
            (Some(m), Some(lo), Some(hi)) => {
                if r.unit == Unit::HitRatio {
                    let p = r.phases.unwrap_or([0.0; 3]);
                    (
                        format!(
                            "before {:.1} % · during {:.1} % · after {:.1} %",
                            p[0] * 100.0,
                            p[1] * 100.0,
                            p[2] * 100.0
                        ),
                        format!("during: {}", fmt_range(r.unit, lo, hi)),
                    )
                } else {
                    (fmt_value(r.unit, m), fmt_range(r.unit, lo, hi))
                }
            }
            _ => ("—".to_string(), "—".to_string()),
        };
        let ratio = match r.ratio {
            Some(x) => format!("{x:.2}x"),
            None if r.unit == Unit::HitRatio => "n/a".to_string(),
            None => "—".to_string(),
        };
        let cpu = r
            .cpu_s_per_gib
            .map_or("—".to_string(), |c| format!("{c:.3}"));
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            cell(&r.case),
            cell(r.contender),
            median,
            range,
            ratio,
            cpu,
            cell(&r.notes)
        ));
    }
    out
}

/// Contenders that are not peers in the summary: the baselines, uringcache itself, the model.
fn is_peer(id: &str) -> bool {
    !(id == crate::contenders::BASELINE
        || id == crate::contenders::BUDGET_BASELINE
        || id.starts_with("uringcache")
        || id == "lru-model")
}

/// A row's headline figure: its median, or for the scan the hot set's hit ratio during it.
fn headline(r: &Row) -> Option<f64> {
    if r.unit == Unit::HitRatio {
        r.phases.map(|p| p[1])
    } else {
        r.median
    }
}

/// The summary: one row per case with uringcache (io_uring), the kernel at the same budget
/// (where the budget matters), the kernel unbounded, the best peer, and uringcache's ratios to
/// each. The scan's figures are hit ratios during the scan (its "ratios" are differences in
/// points).
pub fn summary(rows: &[Row], cases: &[crate::workloads::Case]) -> String {
    let mut out = String::from(
        "| case | uringcache | kernel @ budget | kernel | best peer | vs kernel @ budget | vs kernel | vs best peer | target |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for c in cases {
        let in_case: Vec<&Row> = rows.iter().filter(|r| r.case == c.name).collect();
        let find = |id: &str| in_case.iter().find(|r| r.contender_id == id).copied();
        let uc = find("uringcache-uring");
        let kb = c
            .workload
            .budget_matters()
            .then(|| find(crate::contenders::BUDGET_BASELINE))
            .flatten();
        let ku = find(crate::contenders::BASELINE);
        let peer = in_case
            .iter()
            .filter(|r| is_peer(r.contender_id))
            .filter_map(|r| headline(r).map(|v| (*r, v)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let fig = |r: Option<&Row>| match r {
            Some(r) => match headline(r) {
                Some(v) => fmt_value(c.unit, v),
                None => format!("({})", r.status),
            },
            None => "—".to_string(),
        };
        let ratio = |other: Option<f64>| match (uc.and_then(headline), other) {
            (Some(u), Some(o)) if c.unit == Unit::HitRatio => {
                format!("{:+.1} pts", (u - o) * 100.0)
            }
            (Some(u), Some(o)) if o > 0.0 => format!("{:.2}x", u / o),
            _ => "—".to_string(),
        };
        let kb_cell = if c.workload.budget_matters() {
            fig(kb)
        } else {
            "n/a".to_string()
        };
        let peer_cell = match peer {
            Some((r, v)) => format!("{} ({})", fmt_value(c.unit, v), r.contender),
            None => "—".to_string(),
        };
        let target = match c.target {
            Some(t) => {
                let base = if c.workload.budget_matters() { kb } else { ku };
                let met = match (uc.and_then(headline), base.and_then(headline)) {
                    (Some(u), Some(b)) if b > 0.0 => {
                        if u / b >= t {
                            " met"
                        } else {
                            " missed"
                        }
                    }
                    _ => "",
                };
                format!(">= {t:.1}x{met}")
            }
            None if c.unit == Unit::HitRatio => match uc.and_then(headline) {
                Some(u) if u >= 0.95 => ">= 95 % during met".to_string(),
                Some(_) => ">= 95 % during missed".to_string(),
                None => ">= 95 % during".to_string(),
            },
            None => String::new(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            cell(&c.name),
            fig(uc),
            kb_cell,
            fig(ku),
            cell(&peer_cell),
            if c.workload.budget_matters() {
                ratio(kb.and_then(headline))
            } else {
                "n/a".to_string()
            },
            ratio(ku.and_then(headline)),
            ratio(peer.map(|p| p.1)),
            target
        ));
    }
    out
}

/// Writes the JSON report.
pub fn write_json(path: &Path, doc: &serde_json::Value) -> io::Result<()> {
    let text = serde_json::to_string_pretty(doc).map_err(io::Error::other)?;
    std::fs::write(path, text + "\n")
}

/// Writes an SVG chart: per case, one horizontal bar per contender, its ratio to the kernel on
/// a log axis, with the kernel (1.0x) and the target marked.
pub fn write_svg(path: &Path, rows: &[Row]) -> io::Result<()> {
    use plotters::prelude::*;

    let mut cases: Vec<(&str, Option<f64>)> = Vec::new();
    for r in rows {
        if r.unit != Unit::HitRatio && !cases.iter().any(|(c, _)| *c == r.case) {
            cases.push((&r.case, r.target));
        }
    }
    if cases.is_empty() {
        return Ok(());
    }
    let panel_rows: Vec<Vec<&Row>> = cases
        .iter()
        .map(|(c, _)| rows.iter().filter(|r| r.case == *c).collect())
        .collect();
    let heights: Vec<u32> = panel_rows
        .iter()
        .map(|rs| 70 + 22 * rs.len() as u32)
        .collect();
    let total: u32 = heights.iter().sum();
    let width = 1000u32;
    let ratios = rows.iter().filter_map(|r| r.ratio);
    let xmax = ratios.clone().fold(10.0f64, f64::max) * 1.5;
    let xmin = ratios.fold(0.1f64, f64::min).max(1e-4) / 1.5;
    let err = |e: &dyn std::fmt::Display| io::Error::other(format!("SVG chart: {e}"));

    let root = SVGBackend::new(path, (width, total)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut breaks = Vec::new();
    let mut acc = 0;
    for h in &heights[..heights.len() - 1] {
        acc += *h as i32;
        breaks.push(acc);
    }
    let areas = root.split_by_breakpoints(Vec::<i32>::new(), breaks);
    for ((area, (case, target)), rs) in areas.iter().zip(&cases).zip(&panel_rows) {
        let n = rs.len();
        let labels: Vec<String> = rs
            .iter()
            .map(|r| match r.ratio {
                Some(_) => r.contender.to_string(),
                None => format!("{} ({})", r.contender, r.status),
            })
            .collect();
        let title = match target {
            Some(t) => format!("{case}: ratio vs kernel (uringcache target {t:.1}x)"),
            None => format!("{case}: ratio vs kernel"),
        };
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 16))
            .margin(6)
            .x_label_area_size(24)
            .y_label_area_size(260)
            .build_cartesian_2d((xmin..xmax).log_scale(), (0..n).into_segmented())
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&|v: &SegmentValue<usize>| match v {
                SegmentValue::CenterOf(i) if *i < n => labels[n - 1 - *i].clone(),
                _ => String::new(),
            })
            .x_label_formatter(&|x: &f64| format!("{x}x"))
            .draw()
            .map_err(|e| err(&e))?;
        // The first row (the kernel) at the top.
        let slot = |i: usize| n - 1 - i;
        chart
            .draw_series(rs.iter().enumerate().filter_map(|(i, r)| {
                let x = r.ratio?;
                let i = slot(i);
                let color = if r.contender_id.starts_with("uringcache") {
                    RGBColor(0xd9, 0x5f, 0x02)
                } else if r.contender_id == crate::contenders::BASELINE {
                    RGBColor(0x55, 0x55, 0x55)
                } else {
                    RGBColor(0x1b, 0x9e, 0x77)
                };
                Some(Rectangle::new(
                    [
                        (xmin, SegmentValue::Exact(i)),
                        (x.max(xmin), SegmentValue::Exact(i + 1)),
                    ],
                    color.filled(),
                ))
            }))
            .map_err(|e| err(&e))?;
        // White outlines keep neighbouring bars apart.
        chart
            .draw_series(rs.iter().enumerate().filter_map(|(i, r)| {
                let x = r.ratio?;
                let i = slot(i);
                Some(Rectangle::new(
                    [
                        (xmin, SegmentValue::Exact(i)),
                        (x.max(xmin), SegmentValue::Exact(i + 1)),
                    ],
                    WHITE.stroke_width(3),
                ))
            }))
            .map_err(|e| err(&e))?;
        chart
            .draw_series(rs.iter().enumerate().filter_map(|(i, r)| {
                let x = r.ratio?;
                Some(Text::new(
                    format!(" {x:.2}x"),
                    (x.max(xmin), SegmentValue::CenterOf(slot(i))),
                    ("sans-serif", 12),
                ))
            }))
            .map_err(|e| err(&e))?;
        let mut lines = vec![(1.0, BLACK)];
        if let Some(t) = target {
            lines.push((*t, RED));
        }
        for (x, color) in lines {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x, SegmentValue::Exact(0)), (x, SegmentValue::Exact(n))],
                    color.stroke_width(1),
                )))
                .map_err(|e| err(&e))?;
        }
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
    }

    #[test]
    fn rows_get_ratios_and_notes() {
        let s = |ops| Sample {
            ops,
            bytes: ops * 4096,
            secs: 1.0,
            cpu_secs: 0.5,
            ..Sample::default()
        };
        let mut base = Row::new(
            Workload::Hit,
            "hit",
            Unit::OpsPerSec,
            Some(3.0),
            "kernel-pread",
            "k",
        );
        base.samples = vec![s(100), s(120), s(110)];
        let mut uc = Row::new(
            Workload::Hit,
            "hit",
            Unit::OpsPerSec,
            Some(3.0),
            "uringcache-uring",
            "u",
        );
        uc.samples = vec![s(330), s(340)];
        uc.misses = vec![Miss::Failed("boom".into())];
        let mut na = Row::new(Workload::Hit, "hit", Unit::OpsPerSec, None, "x", "x");
        na.misses = vec![Miss::Unsupported("unsupported by this kernel".into())];
        let mut rows = vec![base, uc, na];
        finish(&mut rows, "kernel-pread");
        assert_eq!(rows[0].median, Some(110.0));
        assert!((rows[1].ratio.unwrap() - 335.0 / 110.0).abs() < 1e-9);
        assert_eq!(rows[1].status, "partial");
        assert!(
            rows[1].notes.contains("target >= 3.0x: met"),
            "{}",
            rows[1].notes
        );
        assert!(rows[1].notes.contains("1 of 3 rounds failed"));
        assert_eq!(rows[2].status, "unsupported");
        assert!(!rows[1].notes.contains("flush"));
        let t = table(&rows);
        assert!(t.contains("unsupported by this kernel"));
        assert!(t.contains("3.05x"), "{t}");
    }

    #[test]
    fn the_summary_has_one_row_per_case_with_its_ratios() {
        use crate::workloads::{Case, Prep, Task};
        let case = |w: Workload, name: &str, unit: Unit, target: Option<f64>| Case {
            workload: w,
            name: name.to_string(),
            unit,
            target,
            prep: Prep::Cold,
            files: Vec::new(),
            depth: 1,
            baseline: crate::workloads::baseline(w),
            about: String::new(),
            make: Box::new(|_| -> Task { unreachable!() }),
        };
        let cases = vec![
            case(Workload::Zipf, "zipf", Unit::OpsPerSec, Some(1.0)),
            case(Workload::SeqCold, "seq-cold", Unit::MBps, Some(1.0)),
            case(Workload::Scan, "scan", Unit::HitRatio, None),
        ];
        let s = |ops| Sample {
            ops,
            bytes: ops * 4096,
            secs: 1.0,
            ..Sample::default()
        };
        let row = |c: &Case, id: &'static str, name: &'static str, sample: Sample| {
            let mut r =
                Row::with_baseline(c.workload, &c.name, c.unit, c.target, id, name, c.baseline);
            r.samples = vec![sample];
            r
        };
        let scan = |during| Sample {
            phases: Some([1.0, during, 1.0]),
            ..s(1)
        };
        let mut rows = vec![
            row(&cases[0], "kernel-pread", "kernel pread", s(300)),
            row(
                &cases[0],
                "kernel-pread@budget",
                "kernel pread @ budget",
                s(100),
            ),
            row(&cases[0], "mmap@budget", "mmap @ budget", s(150)),
            row(
                &cases[0],
                "uringcache-uring",
                "uringcache (io_uring)",
                s(120),
            ),
            // 1 op of 4096 bytes in 1 s: 0.004096 MB/s; uringcache twice that.
            row(&cases[1], "kernel-pread", "kernel pread", s(1)),
            row(&cases[1], "uringcache-uring", "uringcache (io_uring)", s(2)),
            row(
                &cases[2],
                "kernel-pread@budget",
                "kernel pread @ budget",
                scan(0.9),
            ),
            row(
                &cases[2],
                "uringcache-uring",
                "uringcache (io_uring)",
                scan(0.99),
            ),
        ];
        finish(&mut rows, "kernel-pread");
        // Where the budget matters the ratio is against the kernel at the budget.
        assert!((rows[3].ratio.unwrap() - 1.2).abs() < 1e-9);
        let t = summary(&rows, &cases);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2 + 3, "{t}");
        assert!(lines[2].starts_with("| zipf | 120 ops/s | 100 ops/s | 300 ops/s | 150 ops/s (mmap @ budget) | 1.20x | 0.40x | 0.80x | >= 1.0x met |"), "{}", lines[2]);
        assert!(lines[3].contains("| n/a | 2.00x |"), "{}", lines[3]);
        assert!(lines[3].ends_with(">= 1.0x met |"), "{}", lines[3]);
        assert!(lines[4].contains("+9.0 pts"), "{}", lines[4]);
        assert!(lines[4].contains(">= 95 % during met"), "{}", lines[4]);
    }

    #[test]
    fn without_a_figure_at_the_budget_the_ratio_falls_back_and_says_so() {
        let s = |ops| Sample {
            ops,
            bytes: ops * 4096,
            secs: 1.0,
            ..Sample::default()
        };
        let b = crate::contenders::BUDGET_BASELINE;
        let mut k = Row::with_baseline(
            Workload::Zipf,
            "zipf",
            Unit::OpsPerSec,
            None,
            "kernel-pread",
            "k",
            b,
        );
        k.samples = vec![s(100)];
        let mut kb = Row::with_baseline(Workload::Zipf, "zipf", Unit::OpsPerSec, None, b, "kb", b);
        kb.misses = vec![Miss::Unsupported(
            "no memory cgroup: permission denied".into(),
        )];
        let mut u = Row::with_baseline(
            Workload::Zipf,
            "zipf",
            Unit::OpsPerSec,
            None,
            "uringcache-uring",
            "u",
            b,
        );
        u.samples = vec![s(50)];
        let mut rows = vec![k, kb, u];
        finish(&mut rows, "kernel-pread");
        assert_eq!(rows[2].ratio, Some(0.5));
        assert!(rows[2].ratio_unbounded);
        assert!(
            rows[2].notes.contains("ratio vs the unbounded kernel"),
            "{}",
            rows[2].notes
        );
        assert!(
            rows[1].notes.contains("permission denied"),
            "{}",
            rows[1].notes
        );
    }

    #[test]
    fn latency_reaches_the_notes() {
        let s = |p50, p99| Sample {
            ops: 100,
            bytes: 100 * 4096,
            secs: 1.0,
            latency: Some(Latency {
                p50_us: p50,
                p99_us: p99,
                count: 100,
            }),
            ..Sample::default()
        };
        let mut r = Row::new(
            Workload::RandCold,
            "rand-cold, 1 in flight",
            Unit::OpsPerSec,
            None,
            "kernel-pread",
            "k",
        );
        r.samples = vec![s(40.0, 900.0), s(50.0, 1200.0), s(45.0, 1000.0)];
        let mut rows = vec![r];
        finish(&mut rows, "kernel-pread");
        let l = rows[0].latency.unwrap();
        assert_eq!((l.p50_us, l.p99_us, l.count), (45.0, 1000.0, 300));
        assert!(
            rows[0].notes.contains("p50 45.0 µs, p99 1.00 ms"),
            "{}",
            rows[0].notes
        );
    }

    #[test]
    fn histogram_quantiles() {
        let lat = crate::measure::Latencies::new(true);
        std::thread::scope(|s| {
            for _ in 0..2 {
                let lat = &lat;
                s.spawn(move || {
                    let mut rec = lat.recorder();
                    for _ in 0..10 {
                        let t = rec.start();
                        rec.stop(t);
                    }
                });
            }
        });
        assert_eq!(lat.summary().map(|l| l.count), Some(20));
        let off = crate::measure::Latencies::new(false);
        let mut rec = off.recorder();
        let t = rec.start();
        assert!(t.is_none());
        rec.stop(t);
        drop(rec);
        assert_eq!(off.summary(), None);
    }

    #[test]
    fn write_counts_reach_the_notes() {
        let s = |flushes| Sample {
            ops: 800,
            bytes: 800 * 4096,
            secs: 1.0,
            writes: Some(WriteCounts {
                syncs: 800,
                flushes,
                pages_written: 800,
                write_requests: 800,
                throttle_waits: 0,
            }),
            ..Sample::default()
        };
        let mut r = Row::new(
            Workload::RandWriteSync,
            "rand-write-sync, 16 writers",
            Unit::OpsPerSec,
            Some(3.0),
            "uringcache-uring",
            "u",
        );
        r.samples = vec![s(100), s(300), s(200)];
        let mut rows = vec![r];
        finish(&mut rows, "kernel-pread");
        assert_eq!(rows[0].writes.unwrap().flushes, 200);
        assert!(
            rows[0]
                .notes
                .contains("800 sync(s), 200 flush(es) (4.0 syncs a flush)"),
            "{}",
            rows[0].notes
        );
    }
}
