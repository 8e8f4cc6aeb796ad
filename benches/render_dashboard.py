#!/usr/bin/env python3
"""Draws deploy/grafana/sluice.json's panels as one SVG, from a real
Prometheus: every panel's own PromQL, asked with query_range over a time
window. It stands in for a Grafana screenshot where Grafana cannot run
(benches/dashboard.sh says why); the queries are exactly the dashboard's,
with $job and $instance matching everything and $__rate_interval set to
four scrape intervals, as Grafana sets it.

usage: render_dashboard.py PROMETHEUS_URL DASHBOARD START END STEP OUT.svg
"""

import json
import math
import sys
import urllib.parse
import urllib.request
from html import escape

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
          "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
CELL_W, CELL_H = 58, 34  # pixels per Grafana grid unit (24 across, 30 px rows)


def query_range(base, expr, start, end, step):
    params = urllib.parse.urlencode(
        {"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{params}", timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def legend(fmt, labels):
    out = fmt
    for k, v in labels.items():
        out = out.replace("{{" + k + "}}", v)
    return out


def fmt_value(v, unit):
    if unit == "s":
        if v == 0:
            return "0"
        if v < 1e-3:
            return f"{v * 1e6:.0f} µs"
        if v < 1:
            return f"{v * 1e3:.3g} ms"
        return f"{v:.3g} s"
    if unit == "ops":
        return f"{v:.4g}/s"
    return f"{v:.4g}"


def panel_svg(panel, series, start, end, x0, y0, w, h):
    out = []
    out.append(f'<g transform="translate({x0},{y0})">')
    out.append(f'<rect width="{w - 8}" height="{h - 8}" rx="4" fill="#181b1f" stroke="#2c3235"/>')
    out.append(f'<text x="10" y="20" fill="#ccccdc" font-size="13" font-weight="bold">'
               f'{escape(panel["title"])}</text>')
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
    stacked = panel.get("fieldConfig", {}).get("defaults", {}).get(
        "custom", {}).get("stacking", {}).get("mode") == "normal"
    left, top, right, bottom = 70, 30, w - 20, h - 30 - 14 * min(len(series), 4)
    pw, ph = right - left, bottom - top
    # Stacked panels draw cumulative sums, as Grafana stacks them.
    times = sorted({t for _, pts in series for t, _ in pts})
    drawn = []
    base = {t: 0.0 for t in times}
    for name, pts in series:
        d = dict(pts)
        if stacked:
            cum = [(t, base[t] + d.get(t, 0.0)) for t in times]
            for t, v in cum:
                base[t] = v
            drawn.append((name, cum))
        else:
            drawn.append((name, pts))
    vmax = max([v for _, pts in drawn for _, v in pts] + [0.0])
    vmax = vmax * 1.1 if vmax > 0 else 1.0
    for i in range(5):
        v = vmax * i / 4
        y = bottom - ph * i / 4
        out.append(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#2c3235"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" fill="#8e8e8e" font-size="10" '
                   f'text-anchor="end">{escape(fmt_value(v, unit))}</text>')
    span = max(end - start, 1)
    for i in range(5):
        t = start + span * i / 4
        x = left + pw * i / 4
        out.append(f'<text x="{x:.1f}" y="{bottom + 14}" fill="#8e8e8e" font-size="10" '
                   f'text-anchor="middle">{int(t - start)} s</text>')
    def xy(t, v):
        return f"{left + pw * (t - start) / span:.1f},{bottom - ph * v / vmax:.1f}"

    below = [(t, 0.0) for t in times]
    for i, (name, pts) in enumerate(drawn):
        color = COLORS[i % len(COLORS)]
        path = " ".join(f"{'M' if j == 0 else 'L'}{xy(t, v)}" for j, (t, v) in enumerate(pts))
        if stacked and pts:
            # The band between this series and the one below it.
            band = [xy(t, v) for t, v in pts] + [xy(t, v) for t, v in reversed(below)]
            out.append(f'<polygon points="{" ".join(band)}" fill="{color}" fill-opacity="0.35"/>')
            below = pts
        if path:
            out.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        if i < 4:
            ly = bottom + 30 + 14 * i
            out.append(f'<rect x="{left}" y="{ly - 8}" width="10" height="3" fill="{color}"/>')
            out.append(f'<text x="{left + 16}" y="{ly - 3}" fill="#ccccdc" font-size="10">'
                       f'{escape(name)}</text>')
    if not drawn:
        out.append(f'<text x="{w / 2}" y="{h / 2}" fill="#8e8e8e" font-size="12" '
                   f'text-anchor="middle">No data</text>')
    out.append("</g>")
    return "\n".join(out)


def main():
    base, dashboard, start, end, step, out_path = sys.argv[1:7]
    start, end, step = float(start), float(end), float(step)
    dash = json.load(open(dashboard))
    rate_interval = f"{int(4 * step)}s"
    parts = []
    height = 0
    for panel in dash["panels"]:
        series = []
        for target in panel["targets"]:
            expr = (target["expr"].replace("$__rate_interval", rate_interval)
                    .replace("$job", ".*").replace("$instance", ".*"))
            for result in query_range(base, expr, start, end, step):
                pts = [(float(t), float(v)) for t, v in result["values"]
                       if not (math.isnan(float(v)) or math.isinf(float(v)))]
                if pts:  # a histogram with no observations has no quantile
                    series.append((legend(target.get("legendFormat", ""), result["metric"]), pts))
        g = panel["gridPos"]
        x0, y0 = g["x"] * CELL_W, g["y"] * CELL_H
        w, h = g["w"] * CELL_W, g["h"] * CELL_H
        height = max(height, y0 + h)
        parts.append(panel_svg(panel, series, start, end, x0, y0, w, h))
    width = 24 * CELL_W
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 30}" '
           f'font-family="sans-serif">',
           f'<rect width="100%" height="100%" fill="#111217"/>',
           f'<g transform="translate(0,30)">', *parts, "</g>",
           f'<text x="10" y="20" fill="#ccccdc" font-size="15">{escape(dash["title"])}: '
           f'deploy/grafana/sluice.json drawn from Prometheus</text>', "</svg>"]
    open(out_path, "w").write("\n".join(svg))


main()
