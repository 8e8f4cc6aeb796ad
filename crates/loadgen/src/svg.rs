//! A small, dependency-free SVG chart: latency percentile curves on the
//! left (HdrHistogram's usual log "1/(1-p)" x axis, log latency axis), and
//! grouped throughput bars on the right. Written by hand because the whole
//! need is lines, rectangles and text; a plotting library would bring fonts
//! and a build-time cost for that.

use std::fmt::Write as _;

/// One percentile curve.
#[derive(Debug, Clone)]
pub struct Curve {
    pub name: String,
    pub color: &'static str,
    pub dashed: bool,
    /// `[percentile 0–100, latency ms]`, increasing.
    pub points: Vec<[f64; 2]>,
}

/// One group of bars (e.g. "ingress") with one bar per series.
#[derive(Debug, Clone)]
pub struct BarGroup {
    pub label: String,
    /// `(series name, color, value)`.
    pub bars: Vec<(String, &'static str, f64)>,
}

#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub subtitle: String,
    pub latency_title: String,
    pub curves: Vec<Curve>,
    pub throughput_title: String,
    pub groups: Vec<BarGroup>,
}

const W: f64 = 1100.0;
const H: f64 = 520.0;
const PANEL_TOP: f64 = 90.0;
const PANEL_H: f64 = 330.0;
const LEFT_X: f64 = 70.0;
const LEFT_W: f64 = 470.0;
const RIGHT_X: f64 = 620.0;
const RIGHT_W: f64 = 450.0;
/// The percentile axis ends at 99.999 %.
const MAX_NINES: f64 = 5.0;

/// Where a percentile sits on the x axis: the number of nines,
/// `log10(1 / (1 - p))`, so 90 % → 1, 99 % → 2, 99.9 % → 3.
pub fn nines(percentile: f64) -> f64 {
    let rest = 1.0 - percentile / 100.0;
    if rest <= 0.0 {
        f64::INFINITY
    } else {
        (1.0 / rest).log10()
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the chart as a standalone SVG document.
pub fn render(chart: &Chart) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" font-size="18" text-anchor="middle" font-weight="bold">{}</text>"#,
        W / 2.0,
        esc(&chart.title)
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="50" text-anchor="middle" fill="#444">{}</text>"##,
        W / 2.0,
        esc(&chart.subtitle)
    );
    latency_panel(&mut s, chart);
    bar_panel(&mut s, chart);
    s.push_str("</svg>\n");
    s
}

fn latency_panel(s: &mut String, chart: &Chart) {
    let (x0, y0, w, h) = (LEFT_X, PANEL_TOP, LEFT_W, PANEL_H);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">{}</text>"#,
        x0 + w / 2.0,
        y0 - 12.0,
        esc(&chart.latency_title)
    );
    let finite_max = chart
        .curves
        .iter()
        .flat_map(|c| c.points.iter())
        .map(|p| nines(p[0]))
        .filter(|x| x.is_finite())
        .fold(1.0f64, f64::max);
    let x_max = finite_max.ceil().clamp(1.0, MAX_NINES);
    // The axis starts at the lowest 5th percentile: the very fastest
    // replies (already read when the write returned) would otherwise
    // stretch it over decades nobody looks at.
    let values = chart
        .curves
        .iter()
        .flat_map(|c| c.points.iter())
        .filter(|p| p[0] >= 5.0)
        .map(|p| p[1])
        .filter(|v| *v > 0.0);
    let (lo, hi) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (y_lo, y_hi) = if lo.is_finite() {
        (
            lo.log10().floor(),
            hi.log10().ceil().max(lo.log10().floor() + 1.0),
        )
    } else {
        (-1.0, 1.0)
    };
    let px = |n: f64| x0 + n.min(x_max) / x_max * w;
    let py = |ms: f64| {
        let l = ms.max(10f64.powf(y_lo)).log10();
        y0 + h - (l - y_lo) / (y_hi - y_lo) * h
    };
    let _ = writeln!(
        s,
        "<rect x=\"{x0}\" y=\"{y0}\" width=\"{w}\" height=\"{h}\" fill=\"none\" stroke=\"#888\"/>"
    );
    for i in 0..=(x_max as i32) {
        let x = px(f64::from(i));
        let label = match i {
            0 => "0%".to_string(),
            n => format!("{}%", 100.0 - 100.0 / 10f64.powi(n)),
        };
        let _ = writeln!(
            s,
            "<line x1=\"{x}\" y1=\"{y0}\" x2=\"{x}\" y2=\"{}\" stroke=\"#ddd\"/>\
             <text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{label}</text>",
            y0 + h,
            y0 + h + 16.0
        );
    }
    for e in (y_lo as i32)..=(y_hi as i32) {
        let v = 10f64.powi(e);
        let y = py(v);
        let label = if e < 0 {
            format!("{v:.*}", (-e) as usize)
        } else {
            format!("{v:.0}")
        };
        let _ = writeln!(
            s,
            "<line x1=\"{x0}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{label}</text>",
            x0 + w,
            x0 - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
        x0 + w / 2.0,
        y0 + h + 36.0
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle" transform="rotate(-90 {} {})">latency (ms, log scale)</text>"#,
        x0 - 48.0,
        y0 + h / 2.0,
        x0 - 48.0,
        y0 + h / 2.0
    );
    for (i, c) in chart.curves.iter().enumerate() {
        if c.points.is_empty() {
            continue;
        }
        let points: Vec<String> = c
            .points
            .iter()
            .map(|p| format!("{:.1},{:.1}", px(nines(p[0])), py(p[1])))
            .collect();
        let dash = if c.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
            points.join(" "),
            c.color
        );
        // The legend, under the panel, two entries a row.
        let lx = x0 + 10.0 + 240.0 * (i % 2) as f64;
        let ly = y0 + h + 58.0 + 16.0 * (i / 2) as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            lx,
            ly - 4.0,
            lx + 24.0,
            ly - 4.0,
            c.color,
            lx + 30.0,
            ly,
            esc(&c.name)
        );
    }
}

fn bar_panel(s: &mut String, chart: &Chart) {
    let (x0, y0, w, h) = (RIGHT_X, PANEL_TOP, RIGHT_W, PANEL_H);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">{}</text>"#,
        x0 + w / 2.0,
        y0 - 12.0,
        esc(&chart.throughput_title)
    );
    let max = chart
        .groups
        .iter()
        .flat_map(|g| g.bars.iter().map(|b| b.2))
        .fold(0.0f64, f64::max);
    let step = nice_step(max / 5.0);
    let top = ((max / step).ceil() * step).max(step);
    let py = |v: f64| y0 + h - v / top * h;
    let _ = writeln!(
        s,
        "<rect x=\"{x0}\" y=\"{y0}\" width=\"{w}\" height=\"{h}\" fill=\"none\" stroke=\"#888\"/>"
    );
    let mut v = 0.0;
    while v <= top + step / 2.0 {
        let y = py(v);
        let _ = writeln!(
            s,
            "<line x1=\"{x0}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{v:.0}</text>",
            x0 + w,
            x0 - 6.0,
            y + 4.0
        );
        v += step;
    }
    let groups = chart.groups.len().max(1) as f64;
    let group_w = w / groups;
    let mut legend: Vec<(&str, &str)> = Vec::new();
    for (gi, g) in chart.groups.iter().enumerate() {
        let gx = x0 + group_w * gi as f64;
        let n = g.bars.len().max(1) as f64;
        let bar_w = (group_w * 0.7 / n).min(60.0);
        let start = gx + (group_w - bar_w * n) / 2.0;
        for (bi, (name, color, value)) in g.bars.iter().enumerate() {
            let bx = start + bar_w * bi as f64;
            let by = py(*value);
            let _ = writeln!(
                s,
                r#"<rect x="{bx:.1}" y="{by:.1}" width="{:.1}" height="{:.1}" fill="{color}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">{value:.0}</text>"#,
                bar_w - 4.0,
                (y0 + h - by).max(0.0),
                bx + (bar_w - 4.0) / 2.0,
                by - 4.0
            );
            if !legend.iter().any(|(n, _)| n == name) {
                legend.push((name, color));
            }
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            gx + group_w / 2.0,
            y0 + h + 16.0,
            esc(&g.label)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle" transform="rotate(-90 {} {})">messages per second</text>"#,
        x0 - 50.0,
        y0 + h / 2.0,
        x0 - 50.0,
        y0 + h / 2.0
    );
    for (i, (name, color)) in legend.iter().enumerate() {
        let lx = x0 + 10.0 + 150.0 * i as f64;
        let ly = y0 + h + 48.0;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{}" width="12" height="12" fill="{color}"/><text x="{}" y="{ly}">{}</text>"#,
            ly - 10.0,
            lx + 18.0,
            esc(name)
        );
    }
}

/// A round step (1, 2 or 5 × 10^n) no smaller than `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * mag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_maps_percentiles_to_decades() {
        assert!((nines(0.0)).abs() < 1e-12);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.0) - 2.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert!(nines(100.0).is_infinite());
    }

    #[test]
    fn nice_steps_are_round_and_large_enough() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.3), 2.0);
        assert_eq!(nice_step(2.1), 5.0);
        assert_eq!(nice_step(730.0), 1000.0);
        assert_eq!(nice_step(1999.0), 2000.0);
    }

    #[test]
    fn renders_every_curve_and_bar_with_escaped_text() {
        let chart = Chart {
            title: "A & B".into(),
            subtitle: "<sub>".into(),
            latency_title: "latency".into(),
            curves: vec![
                Curve {
                    name: "one".into(),
                    color: "#1f77b4",
                    dashed: false,
                    points: vec![[0.0, 0.5], [90.0, 1.0], [99.0, 3.0], [100.0, 20.0]],
                },
                Curve {
                    name: "two".into(),
                    color: "#d62728",
                    dashed: true,
                    points: vec![[0.0, 5.0], [99.9, 40.0]],
                },
            ],
            throughput_title: "throughput".into(),
            groups: vec![BarGroup {
                label: "ingress".into(),
                bars: vec![
                    ("Sluice".into(), "#1f77b4", 9000.0),
                    ("Postfix".into(), "#d62728", 700.0),
                ],
            }],
        };
        let svg = render(&chart);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("stroke-dasharray"));
        assert!(svg.contains("A &amp; B") && svg.contains("&lt;sub&gt;"));
        assert!(svg.contains(">9000<") && svg.contains(">700<"));
        // Percentile ticks up to 99.9 % (the largest finite point).
        assert!(svg.contains(">99.9%<"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }
}
