"""Plots and HTML for drift reports: inline SVG written here (no plotting library), matplotlib for ``.plot``.

The SVG charts are small and self-contained, so a report is one HTML file that
opens anywhere and an alert can carry its distribution comparison as an image.
"""

from __future__ import annotations

import html as _html
import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.errors import ValidationError

if TYPE_CHECKING:
    from keel.monitoring.drift import DriftReport

REF_COLOR, CUR_COLOR = "#4C78A8", "#F58518"
DISPLAY_SAMPLE = 100_000
CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;font-size:13px}
td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left}th{background:#f4f4f4}
.alert{color:#b00020;font-weight:600}.warn{color:#b26a00}.ok{color:#2e7d32}.muted{color:#777}
.grid{display:flex;flex-wrap:wrap;gap:16px}.card{border:1px solid #ddd;border-radius:6px;padding:8px}"""


def _values(report: DriftReport, column: str) -> tuple[Any, Any]:
    from keel.monitoring.reference import as_float

    ref = report.reference
    if ref is None or column not in ref.columns:
        raise ValidationError(f"Column {column!r} is not in this report.", hint=f"The report has {[c.column for c in report.columns]}.")
    r = ref.columns[column]
    cur = report.current
    if r.kind == "numeric":
        cv = as_float(cur[column]) if cur is not None and column in cur.column_names else np.empty(0)
        return r.values, cv
    return r, cur


def histogram(report: DriftReport, column: str, bins: int = 30) -> dict[str, Any]:
    """{"kind", "labels" or "edges", "reference", "current"}: shares per bin or category."""
    from keel.monitoring import stats as S
    from keel.monitoring.reference import encode

    ref_v, cur_v = _values(report, column)
    if report.reference is not None and report.reference.columns[column].kind == "numeric":
        ref_v, cur_v = ref_v[~np.isnan(ref_v)], cur_v[~np.isnan(cur_v)]
        if ref_v.size + cur_v.size == 0:
            return {"kind": "numeric", "edges": [], "reference": [], "current": []}
        # the plotted range: the middle 99 % of both sides (read on at most 100,000 evenly spaced values of each)
        ends = [np.quantile(v[:: max(1, v.size // DISPLAY_SAMPLE)], [0.005, 0.995]) if v.size > 100 else (v.min(), v.max())
                for v in (ref_v, cur_v) if v.size]
        lo, hi = min(e[0] for e in ends), max(e[1] for e in ends)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, bins + 1)
        rc = np.histogram(np.clip(ref_v, lo, hi), edges)[0].astype(float)
        cc = np.histogram(np.clip(cur_v, lo, hi), edges)[0].astype(float)
        return {"kind": "numeric", "edges": edges.tolist(), "reference": (rc / max(rc.sum(), 1)).tolist(), "current": (cc / max(cc.sum(), 1)).tolist()}
    r = ref_v
    cats = r.categories[:15]
    rc = np.asarray(r.counts, float)
    cc = np.zeros_like(rc)
    if cur_v is not None and column in cur_v.column_names:
        cc = S.counts(encode(cur_v[column], r.categories), len(r.categories) + 1)
    rest_r, rest_c = rc[len(cats):-1].sum(), cc[len(cats):-1].sum()
    labels = [*cats, "(other)", "(new)"]
    rs = np.array([*rc[: len(cats)], rest_r, rc[-1]])
    cs = np.array([*cc[: len(cats)], rest_c, cc[-1]])
    keep = (rs + cs) > 0
    return {"kind": "categorical", "labels": [lab for lab, k in zip(labels, keep, strict=True) if k],
            "reference": (rs[keep] / max(rs.sum(), 1)).tolist(), "current": (cs[keep] / max(cs.sum(), 1)).tolist()}


def _esc(text: Any) -> str:
    return _html.escape(str(text))


def bars_svg(labels: Sequence[str], ref: Sequence[float], cur: Sequence[float], title: str, width: int = 420, height: int = 200) -> str:
    """Grouped bars of reference vs current shares, as an SVG string."""
    n = max(len(ref), 1)
    top = max([*ref, *cur, 1e-9])
    pad_l, pad_b, pad_t = 36, 34, 22
    w, h = width - pad_l - 8, height - pad_b - pad_t
    slot = w / n
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="10" font-family="sans-serif">',
             f'<text x="{pad_l}" y="14" font-size="12" font-weight="bold">{_esc(title)}</text>']
    for frac in (0.0, 0.5, 1.0):
        y = pad_t + h - frac * h
        parts.append(f'<line x1="{pad_l}" x2="{pad_l + w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{pad_l - 4}" y="{y + 3:.1f}" text-anchor="end">{frac * top * 100:.0f}%</text>')
    for i, (a, b) in enumerate(zip(ref, cur, strict=True)):
        x = pad_l + i * slot
        for j, (v, color) in enumerate(((a, REF_COLOR), (b, CUR_COLOR))):
            bh = v / top * h
            parts.append(f'<rect x="{x + slot * (0.1 + 0.4 * j):.1f}" y="{pad_t + h - bh:.1f}" width="{slot * 0.4:.1f}" height="{bh:.1f}" fill="{color}" opacity="0.85"/>')
    step = max(1, n // 8)
    for i in range(0, len(labels), step):
        parts.append(f'<text x="{pad_l + (i + 0.5) * slot:.1f}" y="{pad_t + h + 12}" text-anchor="middle">{_esc(labels[i])[:12]}</text>')
    parts.append(f'<rect x="{width - 150}" y="4" width="8" height="8" fill="{REF_COLOR}"/><text x="{width - 138}" y="12">reference</text>')
    parts.append(f'<rect x="{width - 80}" y="4" width="8" height="8" fill="{CUR_COLOR}"/><text x="{width - 68}" y="12">current</text>')
    parts.append("</svg>")
    return "".join(parts)


def line_svg(series: Mapping[str, Sequence[tuple[float, float]]], title: str, width: int = 620, height: int = 220, band: tuple[float, float] | None = None) -> str:
    """Lines over time (x: epoch seconds), optional threshold band, as SVG."""
    pts = [p for s in series.values() for p in s if p[1] is not None and p[1] == p[1]]
    if not pts:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="40"><text x="4" y="20">{_esc(title)}: no data</text></svg>'
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts] + ([band[1]] if band else [])
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(0.0, min(ys)), max(ys) * 1.1 or 1.0
    pad_l, pad_b, pad_t = 44, 24, 22
    w, h = width - pad_l - 8, height - pad_b - pad_t

    def xy(x: float, y: float) -> str:
        return f"{pad_l + (x - x0) / (x1 - x0) * w:.1f},{pad_t + h - (y - y0) / (y1 - y0) * h:.1f}"

    colors = [CUR_COLOR, REF_COLOR, "#54A24B", "#E45756", "#72B7B2"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="10" font-family="sans-serif">',
             f'<text x="{pad_l}" y="14" font-size="12" font-weight="bold">{_esc(title)}</text>']
    if band:
        parts.append(f'<line x1="{pad_l}" x2="{pad_l + w}" y1="{xy(x0, band[1]).split(",")[1]}" y2="{xy(x0, band[1]).split(",")[1]}" stroke="#b00020" stroke-dasharray="4 3"/>')
    for frac in (0.0, 0.5, 1.0):
        y = y0 + frac * (y1 - y0)
        parts.append(f'<text x="{pad_l - 4}" y="{xy(x0, y).split(",")[1]}" text-anchor="end">{y:.3g}</text>')
    for i, (name, s) in enumerate(series.items()):
        good = [(x, y) for x, y in s if y is not None and y == y]
        if not good:
            continue
        color = colors[i % len(colors)]
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(xy(x, y) for x, y in good)}"/>')
        parts.append(f'<text x="{pad_l + 8 + 90 * i}" y="{height - 4}" fill="{color}">{_esc(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def column_svg(report: DriftReport, column: str) -> str:
    h = report.histogram(column)
    if h["kind"] == "numeric":
        edges = h["edges"]
        labels = [f"{(a + b) / 2:.3g}" for a, b in itertools.pairwise(edges)]
    else:
        labels = h["labels"]
    return bars_svg(labels, h["reference"], h["current"], column)


def drift_table_html(report: DriftReport) -> str:
    rows = []
    for c in report.columns:
        stat = "" if c.statistic is None else f"{c.statistic:.4g}"
        thr = "" if c.threshold is None else f"{c.threshold:.4g}"
        rows.append(f'<tr><td>{_esc(c.column)}</td><td>{c.kind}</td><td>{c.method}{" (binned)" if c.approximate else ""}</td><td>{stat}</td>'
                    f'<td>{thr} <span class="muted">{c.threshold_kind}</span></td><td class="{c.level}">{c.level}</td>'
                    f"<td>{_esc(c.shift())}</td><td>{c.null_rate_current * 100:.1f} %</td><td>{_esc(c.note)}</td></tr>")
    head = "<tr><th>column</th><th>kind</th><th>method</th><th>statistic</th><th>threshold</th><th>level</th><th>shift</th><th>null rate</th><th>note</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def drift_html(report: DriftReport, title: str) -> str:
    cards = []
    for c in sorted(report.columns, key=lambda c: (not c.drifted, c.column)):
        if c.statistic is None:
            continue
        cards.append(f'<div class="card">{column_svg(report, c.column)}<div class="{c.level}">{_esc(c.describe())}</div></div>')
    multi = ""
    if report.multivariate and report.multivariate.get("statistic") is not None:
        m = report.multivariate
        multi = (f'<h2>Multivariate</h2><p class="{m["level"]}">PCA reconstruction error {m["statistic"]:.4g} '
                 f'(reference {m["reference"]:.4g}, band {m["lower"]:.4g} … {m["upper"]:.4g}): {m["level"]}</p>')
    notes = "".join(f"<li>{_esc(n)}</li>" for n in report.notes)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{_esc(title)}</h1><p>{report.n_reference} reference rows, {report.n_current} current rows; "
            f"drifted: <b>{_esc(', '.join(report.drifted) or 'none')}</b></p><ul>{notes}</ul>{drift_table_html(report)}{multi}"
            f"<h2>Distributions</h2><div class='grid'>{''.join(cards)}</div></body></html>")


def plot_column(report: DriftReport, column: str) -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        from keel.errors import missing_extra

        raise missing_extra("matplotlib", "plots") from None
    h = report.histogram(column)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    if h["kind"] == "numeric":
        edges = np.asarray(h["edges"])
        ax.stairs(h["reference"], edges, fill=True, alpha=0.5, color=REF_COLOR, label="reference")
        ax.stairs(h["current"], edges, fill=True, alpha=0.5, color=CUR_COLOR, label="current")
    else:
        x = np.arange(len(h["labels"]))
        ax.bar(x - 0.2, h["reference"], 0.4, color=REF_COLOR, label="reference")
        ax.bar(x + 0.2, h["current"], 0.4, color=CUR_COLOR, label="current")
        ax.set_xticks(x, h["labels"], rotation=45, ha="right")
    c = report[column]
    ax.set_title(c.describe(), fontsize=9)
    ax.set_ylabel("share of rows")
    ax.legend()
    fig.tight_layout()
    return fig
