//! The side-by-side report `benches/compare.sh` prints: one directory per
//! run, read back and put into one table and one chart.
//!
//! Each run directory holds `run.json` ([`RunInfo`], written by the script:
//! which MTA, which generator, timestamps, CPU ticks), `sink.json`
//! ([`SinkReport`]) and, when the generator was `sluice-loadgen`,
//! `loadgen.json` ([`GeneratorReport`]).

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::generator::GeneratorReport;
use crate::latency::LatencySummary;
use crate::sink::SinkReport;
use crate::svg::{BarGroup, Chart, Curve};

/// What the script knows about a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// `sluice`, `postfix`, or `none` (generator straight into the sink).
    pub mta: String,
    /// `sluice-loadgen` or `smtp-source`.
    pub generator: String,
    /// Messages the generator was asked to send.
    pub messages: u64,
    /// When the generator process started and ended (ns since the epoch).
    pub gen_start_unix_ns: u64,
    pub gen_end_unix_ns: u64,
    /// CPU ticks of the MTA's process tree before the load and once the
    /// sink had every message.
    pub cpu_ticks_before: Option<u64>,
    pub cpu_ticks_after: Option<u64>,
    /// Ticks per second (`getconf CLK_TCK`).
    pub clk_tck: u64,
}

/// One run, read back.
#[derive(Debug, Clone)]
pub struct Run {
    pub info: RunInfo,
    pub loadgen: Option<GeneratorReport>,
    pub sink: SinkReport,
}

impl Run {
    pub fn load(dir: &Path) -> io::Result<Run> {
        fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<T> {
            let text = fs::read_to_string(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            serde_json::from_str(&text).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })
        }
        let loadgen_path = dir.join("loadgen.json");
        Ok(Run {
            info: read(&dir.join("run.json"))?,
            loadgen: if loadgen_path.exists() {
                Some(read(&loadgen_path)?)
            } else {
                None
            },
            sink: read(&dir.join("sink.json"))?,
        })
    }

    /// When the load started: the generator's own clock when it reports
    /// one (it excludes process start-up), else the script's.
    fn start_ns(&self) -> u64 {
        self.loadgen
            .as_ref()
            .map_or(self.info.gen_start_unix_ns, |l| l.start_unix_ns)
    }

    /// Messages per second the MTA accepted (250 after DATA).
    pub fn ingress(&self) -> Option<f64> {
        match &self.loadgen {
            Some(l) => Some(l.messages_per_s),
            None => {
                let s = self
                    .info
                    .gen_end_unix_ns
                    .checked_sub(self.info.gen_start_unix_ns)?;
                (s > 0).then(|| self.info.messages as f64 / (s as f64 / 1e9))
            }
        }
    }

    /// Messages per second from the start of the load until the sink had
    /// the last one.
    pub fn end_to_end(&self) -> Option<f64> {
        let span = self.sink.last_accept_unix_ns.checked_sub(self.start_ns())?;
        (span > 0 && self.sink.accepted > 0)
            .then(|| self.sink.accepted as f64 / (span as f64 / 1e9))
    }

    /// CPU seconds the MTA spent per 1,000 messages delivered.
    pub fn cpu_per_1000(&self) -> Option<f64> {
        let ticks = self
            .info
            .cpu_ticks_after?
            .checked_sub(self.info.cpu_ticks_before?)?;
        (self.sink.accepted > 0 && self.info.clk_tck > 0)
            .then(|| ticks as f64 / self.info.clk_tck as f64 / self.sink.accepted as f64 * 1000.0)
    }

    pub fn accept_latency(&self) -> Option<&LatencySummary> {
        self.loadgen
            .as_ref()
            .map(|l| &l.accept_latency)
            .filter(|s| s.count > 0)
    }

    /// Whether every message asked for was accepted and reached the sink.
    pub fn complete(&self) -> bool {
        self.sink.accepted >= self.info.messages
            && self
                .loadgen
                .as_ref()
                .is_none_or(|l| l.accepted >= self.info.messages)
    }
}

/// The run directories the script writes, by name.
pub mod runs {
    pub const CEILING: &str = "ceiling";
    pub const CEILING_SMTP_SOURCE: &str = "ceiling-smtp-source";
    pub fn closed(mta: &str) -> String {
        mta.to_string()
    }
    pub fn half_rate(mta: &str) -> String {
        format!("{mta}-half-rate")
    }
    pub fn smtp_source(mta: &str) -> String {
        format!("{mta}-smtp-source")
    }
}

/// Every run found under one results directory.
#[derive(Debug, Default)]
pub struct Results {
    runs: Vec<(String, Run)>,
    /// Runs whose files were there but unreadable.
    pub problems: Vec<String>,
}

impl Results {
    pub fn load(dir: &Path) -> io::Result<Results> {
        let mut results = Results::default();
        let mut names: Vec<String> = fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter(|e| e.path().join("run.json").exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            match Run::load(&dir.join(&name)) {
                Ok(run) => results.runs.push((name, run)),
                Err(e) => results.problems.push(e.to_string()),
            }
        }
        Ok(results)
    }

    pub fn from_runs(runs: Vec<(String, Run)>) -> Results {
        Results {
            runs,
            problems: Vec::new(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Run> {
        self.runs.iter().find(|(n, _)| n == name).map(|(_, r)| r)
    }
}

/// `x` with a precision that suits its size: whole numbers from 100 up,
/// two significant digits below 1 (so a tiny ratio does not print as 0).
fn num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 1.0 || x <= 0.0 {
        format!("{x:.2}")
    } else {
        let decimals = (1.0 - x.log10().floor()) as usize;
        format!("{x:.decimals$}")
    }
}

fn cell(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_string(), num)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{}×", num(a / b)),
        _ => "n/a".to_string(),
    }
}

const MTAS: [&str; 2] = ["sluice", "postfix"];

/// The comparison table (Markdown), with the harness ceiling and the
/// verdict on the project's target under it.
pub fn table(results: &Results) -> String {
    type Metric = fn(&Results, &str) -> Option<f64>;
    let rows: [(&str, Metric); 12] = [
        ("end-to-end msg/s (sluice-loadgen)", |r, m| {
            r.get(&runs::closed(m))?.end_to_end()
        }),
        ("ingress msg/s (sluice-loadgen)", |r, m| {
            r.get(&runs::closed(m))?.ingress()
        }),
        ("accept latency p50, ms", |r, m| {
            Some(r.get(&runs::closed(m))?.accept_latency()?.p50_ms)
        }),
        ("accept latency p99, ms", |r, m| {
            Some(r.get(&runs::closed(m))?.accept_latency()?.p99_ms)
        }),
        ("end-to-end latency p99, ms", |r, m| {
            let s = &r.get(&runs::closed(m))?.sink.end_to_end_latency;
            (s.count > 0).then_some(s.p99_ms)
        }),
        ("MTA CPU-s per 1,000 msgs", |r, m| {
            r.get(&runs::closed(m))?.cpu_per_1000()
        }),
        ("half rate: offered msg/s", |r, m| {
            r.get(&runs::half_rate(m))?.loadgen.as_ref()?.rate
        }),
        ("half rate: accept latency p50, ms", |r, m| {
            Some(r.get(&runs::half_rate(m))?.accept_latency()?.p50_ms)
        }),
        ("half rate: accept latency p99, ms", |r, m| {
            Some(r.get(&runs::half_rate(m))?.accept_latency()?.p99_ms)
        }),
        ("half rate: p99 from the scheduled time, ms", |r, m| {
            let l = r.get(&runs::half_rate(m))?.loadgen.as_ref()?;
            Some(l.latency_from_due.as_ref()?.p99_ms)
        }),
        ("smtp-source: ingress msg/s", |r, m| {
            r.get(&runs::smtp_source(m))?.ingress()
        }),
        ("smtp-source: end-to-end msg/s", |r, m| {
            r.get(&runs::smtp_source(m))?.end_to_end()
        }),
    ];
    let mut out = String::new();
    out.push_str("| | Sluice | Postfix | Sluice/Postfix |\n|---|---:|---:|---:|\n");
    for (label, metric) in rows {
        let [s, p] = MTAS.map(|m| metric(results, m));
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} |",
            cell(s),
            cell(p),
            ratio(s, p)
        );
    }
    out.push('\n');
    let ceiling = |name: &str| results.get(name).and_then(Run::end_to_end);
    let _ = writeln!(
        out,
        "Harness ceiling, no MTA (end-to-end msg/s): sluice-loadgen → sluice-sink {}; \
         smtp-source → sluice-sink {}.",
        cell(ceiling(runs::CEILING)),
        cell(ceiling(runs::CEILING_SMTP_SOURCE)),
    );
    for (name, run) in &results.runs {
        if !run.complete() {
            let _ = writeln!(
                out,
                "\nWarning: run `{name}` is incomplete: the sink accepted {} of {} messages{}.",
                run.sink.accepted,
                run.info.messages,
                run.loadgen.as_ref().map_or(String::new(), |l| format!(
                    ", the generator saw {} accepted, {} 4xx, {} 5xx, {} errors ({})",
                    l.accepted,
                    l.temp_failed,
                    l.perm_failed,
                    l.errors,
                    l.first_error.as_deref().unwrap_or("no error text")
                ))
            );
        }
    }
    for p in &results.problems {
        let _ = writeln!(out, "\nWarning: {p}");
    }
    out.push('\n');
    out.push_str(&verdict(results));
    out
}

/// End-to-end rate against Postfix's with the project's generator (issue
/// 15's target; the first stage's was 10×).
const TARGET_RATIO: f64 = 20.0;
/// The same with Postfix's `smtp-source` as the generator.
const TARGET_RATIO_SMTP_SOURCE: f64 = 12.0;
/// p99 accept latency at half of Sluice's own maximum rate, in ms.
const TARGET_HALF_RATE_P99_MS: f64 = 2.0;

/// The project's targets, each met or not, from the runs there are.
pub fn verdict(results: &Results) -> String {
    let e2e = |run: String| results.get(&run).and_then(Run::end_to_end);
    let half_p99 = results
        .get(&runs::half_rate("sluice"))
        .and_then(Run::accept_latency)
        .map(|s| s.p99_ms);
    let met = |yes: bool| if yes { "met" } else { "NOT met" };
    let mut out = String::new();
    let ratios = [
        ("", runs::closed as fn(&str) -> String, TARGET_RATIO),
        (
            " with smtp-source",
            runs::smtp_source,
            TARGET_RATIO_SMTP_SOURCE,
        ),
    ];
    for (with, run, target) in ratios {
        match (e2e(run("sluice")), e2e(run("postfix"))) {
            (Some(s), Some(p)) if p > 0.0 => {
                let r = s / p;
                let _ = writeln!(
                    out,
                    "Target ≥ {target}× Postfix end to end{with}: {} ({}×).",
                    met(r >= target),
                    num(r)
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "Target ≥ {target}× Postfix end to end{with}: not measured."
                );
            }
        }
    }
    let target = TARGET_HALF_RATE_P99_MS;
    match half_p99 {
        Some(p99) => {
            let _ = writeln!(
                out,
                "Target p99 accept latency < {target} ms at half the maximum rate: {} ({} ms).",
                met(p99 < TARGET_HALF_RATE_P99_MS),
                num(p99)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "Target p99 accept latency < {target} ms at half rate: not measured."
            );
        }
    }
    out
}

/// The chart for the same results.
pub fn chart(results: &Results, subtitle: &str) -> Chart {
    let colors = [("sluice", "#1f77b4"), ("postfix", "#d62728")];
    let name = |m: &str| if m == "sluice" { "Sluice" } else { "Postfix" };
    let mut curves = Vec::new();
    for (mta, color) in colors {
        if let Some(l) = results
            .get(&runs::closed(mta))
            .and_then(Run::accept_latency)
        {
            curves.push(Curve {
                name: format!("{}, full speed", name(mta)),
                color,
                dashed: false,
                points: l.curve.clone(),
            });
        }
        if let Some(run) = results.get(&runs::half_rate(mta))
            && let Some(l) = run.accept_latency()
        {
            let rate = run.loadgen.as_ref().and_then(|l| l.rate).unwrap_or(0.0);
            curves.push(Curve {
                name: format!("{}, open loop {} msg/s", name(mta), num(rate)),
                color,
                dashed: true,
                points: l.curve.clone(),
            });
        }
    }
    let group = |label: &str, f: &dyn Fn(&str) -> Option<f64>| BarGroup {
        label: label.to_string(),
        bars: colors
            .iter()
            .filter_map(|(m, c)| f(m).map(|v| (name(m).to_string(), *c, v)))
            .collect(),
    };
    let get = |n: String| results.get(&n);
    let groups = vec![
        group("end to end", &|m| get(runs::closed(m))?.end_to_end()),
        group("ingress", &|m| get(runs::closed(m))?.ingress()),
        group("smtp-source e2e", &|m| {
            get(runs::smtp_source(m))?.end_to_end()
        }),
    ];
    Chart {
        title: "Sluice vs Postfix: relay to a sink on loopback".into(),
        subtitle: subtitle.to_string(),
        latency_title: "Accept latency (end of DATA → 250)".into(),
        curves,
        throughput_title: "Throughput".into(),
        groups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(p50: f64, p99: f64) -> LatencySummary {
        LatencySummary {
            count: 100,
            mean_ms: p50,
            p50_ms: p50,
            p90_ms: p50,
            p99_ms: p99,
            p999_ms: p99,
            max_ms: p99,
            curve: vec![[0.0, p50], [99.0, p99], [100.0, p99]],
        }
    }

    fn run(mta: &str, messages: u64, e2e_secs: f64, ingress: f64, cpu_ticks: u64) -> Run {
        let start = 1_000_000_000_000u64;
        Run {
            info: RunInfo {
                mta: mta.into(),
                generator: "sluice-loadgen".into(),
                messages,
                gen_start_unix_ns: start - 5_000_000,
                gen_end_unix_ns: start + 1,
                cpu_ticks_before: Some(1000),
                cpu_ticks_after: Some(1000 + cpu_ticks),
                clk_tck: 100,
            },
            loadgen: Some(GeneratorReport {
                target: "127.0.0.1:2525".into(),
                connections: 20,
                messages_per_connection: None,
                message_size: 4096,
                recipients: 1,
                rate: None,
                accepted: messages,
                temp_failed: 0,
                perm_failed: 0,
                errors: 0,
                first_error: None,
                bytes: messages * 4096,
                start_unix_ns: start,
                end_unix_ns: start + 1,
                elapsed_s: 1.0,
                messages_per_s: ingress,
                megabytes_per_s: 1.0,
                accept_latency: summary(1.0, 4.0),
                latency_from_due: None,
            }),
            sink: SinkReport {
                listen: "127.0.0.1:2626".into(),
                connections: 20,
                messages,
                accepted: messages,
                temp_rejected: 0,
                perm_rejected: 0,
                recipients: messages,
                bytes: 0,
                missing_timestamp: 0,
                first_accept_unix_ns: start + 1,
                last_accept_unix_ns: start + (e2e_secs * 1e9) as u64,
                messages_per_s: 0.0,
                stop_after: Some(messages),
                reached: true,
                end_to_end_latency: summary(2.0, 8.0),
            },
        }
    }

    #[test]
    fn numbers_keep_two_significant_digits_when_small() {
        assert_eq!(num(7226.4), "7226");
        assert_eq!(num(12.54), "12.5");
        assert_eq!(num(4.349), "4.35");
        assert_eq!(num(0.2), "0.20");
        assert_eq!(num(0.00187), "0.0019");
        assert_eq!(num(0.0), "0.00");
    }

    #[test]
    fn rates_come_from_the_generator_start_and_the_sinks_last_message() {
        let r = run("sluice", 20_000, 2.0, 12_000.0, 300);
        assert!((r.end_to_end().unwrap() - 10_000.0).abs() < 1e-6);
        assert_eq!(r.ingress(), Some(12_000.0));
        // 300 ticks at 100 Hz = 3 s for 20,000 messages.
        assert!((r.cpu_per_1000().unwrap() - 0.15).abs() < 1e-9);
        assert!(r.complete());
    }

    #[test]
    fn smtp_source_runs_use_the_script_clock() {
        let mut r = run("postfix", 1000, 2.0, 0.0, 0);
        r.loadgen = None;
        r.info.gen_start_unix_ns = 0;
        r.info.gen_end_unix_ns = 500_000_000;
        assert!((r.ingress().unwrap() - 2000.0).abs() < 1e-9);
        r.sink.last_accept_unix_ns = 1_000_000_000;
        assert!((r.end_to_end().unwrap() - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn table_has_both_columns_and_the_ratio() {
        let results = Results::from_runs(vec![
            ("sluice".into(), run("sluice", 20_000, 2.0, 12_000.0, 300)),
            ("postfix".into(), run("postfix", 20_000, 25.0, 800.0, 4000)),
        ]);
        let t = table(&results);
        let e2e = t
            .lines()
            .find(|l| l.starts_with("| end-to-end msg/s"))
            .unwrap();
        assert_eq!(
            e2e,
            "| end-to-end msg/s (sluice-loadgen) | 10000 | 800 | 12.5× |"
        );
        assert!(t.contains("Target ≥ 20× Postfix end to end: NOT met (12.5×)"));
        assert!(t.contains("Target ≥ 12× Postfix end to end with smtp-source: not measured."));
        assert!(t.contains("| smtp-source: ingress msg/s | n/a | n/a | n/a |"));
        assert!(t.contains("not measured"), "no half-rate run: {t}");
    }

    #[test]
    fn the_verdict_weighs_each_target_on_its_own_runs() {
        let results = Results::from_runs(vec![
            ("sluice".into(), run("sluice", 20_000, 1.0, 20_000.0, 300)),
            ("postfix".into(), run("postfix", 20_000, 21.0, 900.0, 4000)),
            (
                runs::smtp_source("sluice"),
                run("sluice", 20_000, 2.0, 10_000.0, 300),
            ),
            (
                runs::smtp_source("postfix"),
                run("postfix", 20_000, 20.0, 900.0, 4000),
            ),
        ]);
        let v = verdict(&results);
        assert!(
            v.contains("Target ≥ 20× Postfix end to end: met (21.0×)"),
            "{v}"
        );
        assert!(
            v.contains("Target ≥ 12× Postfix end to end with smtp-source: NOT met (10.0×)"),
            "{v}"
        );
        assert!(v.contains("< 2 ms at half rate: not measured"), "{v}");
    }

    #[test]
    fn an_incomplete_run_is_called_out() {
        let mut r = run("sluice", 20_000, 2.0, 12_000.0, 300);
        r.sink.accepted = 19_000;
        let t = table(&Results::from_runs(vec![("sluice".into(), r)]));
        assert!(t.contains("run `sluice` is incomplete: the sink accepted 19000 of 20000"));
    }

    #[test]
    fn chart_has_a_curve_and_bars_per_mta() {
        let results = Results::from_runs(vec![
            ("sluice".into(), run("sluice", 100, 1.0, 100.0, 1)),
            ("postfix".into(), run("postfix", 100, 4.0, 25.0, 1)),
        ]);
        let c = chart(&results, "test");
        assert_eq!(c.curves.len(), 2);
        assert_eq!(c.groups[0].bars.len(), 2);
        assert!(c.groups[2].bars.is_empty(), "no smtp-source runs");
    }

    #[test]
    fn loads_runs_from_a_directory() {
        let dir = std::env::temp_dir().join(format!("loadgen-report-{}", std::process::id()));
        let r = run("sluice", 10, 1.0, 10.0, 1);
        let run_dir = dir.join("sluice");
        fs::create_dir_all(&run_dir).unwrap();
        fs::write(
            run_dir.join("run.json"),
            serde_json::to_string(&r.info).unwrap(),
        )
        .unwrap();
        fs::write(
            run_dir.join("sink.json"),
            serde_json::to_string(&r.sink).unwrap(),
        )
        .unwrap();
        fs::write(
            run_dir.join("loadgen.json"),
            serde_json::to_string(&r.loadgen).unwrap(),
        )
        .unwrap();
        // A broken run is reported, not fatal.
        fs::create_dir_all(dir.join("broken")).unwrap();
        fs::write(dir.join("broken/run.json"), "{").unwrap();
        let results = Results::load(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(results.get("sluice").unwrap().sink.accepted, 10);
        assert_eq!(results.problems.len(), 1);
    }
}
