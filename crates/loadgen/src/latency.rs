//! Latency histograms: recording, summaries, the `.hgrm` percentile file.
//!
//! Values are kept in microseconds with three significant digits, from 1 µs
//! to one hour: fine enough for a loopback round trip, wide enough for a
//! message that waited in a queue, and a fixed ~200 KiB per histogram.

use std::io::{self, Write};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

const HIGHEST_US: u64 = 3_600_000_000;

/// One latency distribution.
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

/// What a report quotes of a distribution, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// `[percentile, ms]` points of the whole distribution, for plots.
    pub curve: Vec<[f64; 2]>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl Latency {
    pub fn new() -> Latency {
        Latency {
            hist: Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("constant bounds are valid"),
        }
    }

    /// Records one latency; anything beyond an hour counts as an hour.
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.hist.saturating_record(us.clamp(1, HIGHEST_US));
    }

    /// Adds every value recorded in `other`.
    pub fn merge(&mut self, other: &Latency) {
        self.hist
            .add(&other.hist)
            .expect("histograms with the same bounds always add");
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The value at `percentile` (0–100), in milliseconds.
    pub fn percentile_ms(&self, percentile: f64) -> f64 {
        us_to_ms(self.hist.value_at_percentile(percentile))
    }

    pub fn summary(&self) -> LatencySummary {
        let empty = self.hist.is_empty();
        let at = |p: f64| if empty { 0.0 } else { self.percentile_ms(p) };
        LatencySummary {
            count: self.hist.len(),
            mean_ms: if empty {
                0.0
            } else {
                self.hist.mean() / 1000.0
            },
            p50_ms: at(50.0),
            p90_ms: at(90.0),
            p99_ms: at(99.0),
            p999_ms: at(99.9),
            max_ms: if empty {
                0.0
            } else {
                us_to_ms(self.hist.max())
            },
            curve: if empty { Vec::new() } else { self.curve() },
        }
    }

    /// Points of the percentile distribution, denser towards the tail (five
    /// per halving of the remaining distance to 100 %, as HdrHistogram's own
    /// percentile output does).
    fn curve(&self) -> Vec<[f64; 2]> {
        self.hist
            .iter_quantiles(5)
            .map(|v| {
                [
                    v.quantile_iterated_to() * 100.0,
                    us_to_ms(self.hist.highest_equivalent(v.value_iterated_to())),
                ]
            })
            .collect()
    }

    /// Writes the percentile distribution in HdrHistogram's `.hgrm` text
    /// format (values in milliseconds), which the usual HdrHistogram
    /// plotters read.
    pub fn write_hgrm(&self, mut out: impl Write) -> io::Result<()> {
        writeln!(
            out,
            "{:>12} {:>14} {:>10} {:>14}\n",
            "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
        )?;
        let mut total = 0u64;
        for v in self.hist.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let value = us_to_ms(self.hist.highest_equivalent(v.value_iterated_to()));
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                writeln!(
                    out,
                    "{value:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                )?;
            } else {
                writeln!(out, "{value:12.3} {q:2.12} {total:10}")?;
            }
        }
        let (mean, stdev, max) = if self.hist.is_empty() {
            (0.0, 0.0, 0.0)
        } else {
            (
                self.hist.mean() / 1000.0,
                self.hist.stdev() / 1000.0,
                us_to_ms(self.hist.max()),
            )
        };
        writeln!(
            out,
            "#[Mean    = {mean:12.3}, StdDeviation   = {stdev:12.3}]"
        )?;
        writeln!(
            out,
            "#[Max     = {max:12.3}, Total count    = {:12}]",
            self.hist.len()
        )?;
        writeln!(
            out,
            "#[Buckets = {:12}, SubBuckets     = {:12}]",
            self.hist.buckets(),
            self.hist.distinct_values()
        )
    }
}

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut l = Latency::new();
        for i in 1..=1000 {
            l.record(ms(i));
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        // Three significant digits: within 0.1 %.
        assert!((s.p50_ms - 500.0).abs() <= 0.5, "{}", s.p50_ms);
        assert!((s.p99_ms - 990.0).abs() <= 1.0, "{}", s.p99_ms);
        assert!((s.max_ms - 1000.0).abs() <= 1.0, "{}", s.max_ms);
        assert!(
            s.curve
                .windows(2)
                .all(|w| w[0][0] <= w[1][0] && w[0][1] <= w[1][1])
        );
        assert_eq!(s.curve.last().map(|p| p[0]), Some(100.0));
    }

    #[test]
    fn merge_adds_counts_and_keeps_the_tail() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        for _ in 0..99 {
            a.record(ms(1));
        }
        b.record(ms(250));
        a.merge(&b);
        assert_eq!(a.count(), 100);
        assert!((a.summary().max_ms - 250.0).abs() < 0.5);
        assert!((a.percentile_ms(50.0) - 1.0).abs() < 0.01);
    }

    #[test]
    fn empty_summary_is_zero_not_garbage() {
        let s = Latency::new().summary();
        assert_eq!((s.count, s.p99_ms, s.max_ms), (0, 0.0, 0.0));
        assert!(s.curve.is_empty());
    }

    #[test]
    fn hgrm_has_header_rows_and_footer() {
        let mut l = Latency::new();
        for i in 1..=100 {
            l.record(Duration::from_micros(i * 100));
        }
        let mut out = Vec::new();
        l.write_hgrm(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        assert!(lines.next().unwrap().contains("Percentile"));
        let rows: Vec<&str> = text
            .lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .collect();
        let last: Vec<&str> = rows.last().unwrap().split_whitespace().collect();
        // The last row is the maximum at percentile 1 with every value counted.
        assert!((last[0].parse::<f64>().unwrap() - 10.0).abs() < 0.01);
        assert_eq!(last[1].parse::<f64>().unwrap(), 1.0);
        assert_eq!(last[2], "100");
        assert!(text.contains("Total count    =          100]"));
    }
}
