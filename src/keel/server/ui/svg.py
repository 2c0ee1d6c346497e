"""Plots drawn on the server as inline SVG: no JavaScript library, one request per panel.

- :func:`downsample`: min/max per bucket (NumPy), so a 100,000-point curve is drawn from
  ~2 x ``buckets`` points with its peaks kept; the exact values stay in the data behind it.
- :func:`ema`: exponential moving-average smoothing of a whole series (NumPy, debiased like
  TensorBoard's), applied before downsampling.
- :func:`line_chart`: several series over one x axis (step, time or value), optional
  log y; points carry ``data-title`` for the hover tooltip of ``keel.js``.
- :func:`scatter`: points (x, y) with a label and a link each (e.g. a param vs a metric over trials).
- :func:`bar_chart`: grouped bars (e.g. reference vs current distribution of a feature).
- :func:`heatmap`: rows x columns of values (e.g. drift per feature per window).
- :func:`dag`: a layered graph of boxes and arrows (a pipeline's steps, a lineage).

Every function returns :class:`markupsafe.Markup` (already escaped, safe to put in a template).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from markupsafe import Markup, escape

PALETTE = ("#0b5cad", "#d1495b", "#2a9d8f", "#e9a03b", "#6a4c93", "#8c564b", "#3d8b37", "#c2185b", "#4f5d75", "#b07c00")


def _e(v: Any) -> str:
    return str(escape(v))


def downsample(x: Any, y: Any, buckets: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """At most ``2 * buckets`` points of (x, y): the min and the max of y in each bucket of x order."""
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    n = len(xs)
    if n <= 2 * buckets:
        return xs, ys
    edges = np.linspace(0, n, buckets + 1).astype(int)
    starts = edges[:-1]
    # argmin/argmax per bucket, vectorized with reduceat over the bucket starts
    finite = np.where(np.isfinite(ys), ys, np.nan)
    lo = np.fmin.reduceat(np.nan_to_num(finite, nan=np.inf), starts)
    hi = np.fmax.reduceat(np.nan_to_num(finite, nan=-np.inf), starts)
    idx = np.arange(n)
    bucket = np.repeat(np.arange(buckets), np.diff(edges))  # the bucket of each index, in O(n)
    is_lo = finite == lo[bucket]
    is_hi = finite == hi[bucket]
    first_lo = np.full(buckets, -1)
    first_hi = np.full(buckets, -1)
    # the first index reaching the bucket's min / max
    for arr, mask in ((first_lo, is_lo), (first_hi, is_hi)):
        sel = idx[mask]
        b = bucket[mask]
        uniq, pos = np.unique(b, return_index=True)
        arr[uniq] = sel[pos]
    keep = np.unique(np.concatenate([first_lo[first_lo >= 0], first_hi[first_hi >= 0]]))
    return xs[keep], ys[keep]


def ema(y: Any, weight: float) -> np.ndarray:
    """``y`` smoothed: s[t] = w * s[t-1] + (1 - w) * y[t], from s[-1] = 0 and divided by 1 - w^(t+1)
    (so the start is not pulled towards 0). ``weight`` in [0, 1); NaN and inf are left as they are.

    Vectorized in blocks: within a block the recurrence is a cumulative sum of y[j] * w^-j, the
    block as long as w^-length stays far from overflowing.
    """
    ys = np.asarray(y, dtype=float)
    w = float(weight)
    if not 0.0 <= w < 1.0:
        raise ValueError(f"smoothing weight {weight!r} is not in [0, 1)")
    if w == 0.0 or len(ys) < 2:
        return ys.copy()
    finite = np.isfinite(ys)
    vals = ys[finite]
    out = np.empty_like(vals)
    block = min(len(vals), max(1, int(150 / -math.log10(w))))
    k = np.arange(block, dtype=float)
    decay = np.power(w, k)
    grow = 1.0 / decay
    carry = 0.0
    for start in range(0, len(vals), block):
        chunk = vals[start:start + block]
        n = len(chunk)
        out[start:start + n] = decay[:n] * (w * carry + (1 - w) * np.cumsum(chunk * grow[:n]))
        carry = float(out[start + n - 1])
    debias = min(len(vals), math.ceil(40 / -math.log10(w)))  # beyond it 1 - w^(t+1) is 1 to 1e-40
    out[:debias] /= 1.0 - np.power(w, np.arange(1, debias + 1, dtype=float))
    smoothed = ys.copy()
    smoothed[finite] = out
    return smoothed


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2, 5 x 10^k steps)."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    ticks = []
    v = first
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    return ticks


def _label(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6 or a < 1e-3:
        return f"{v:.2g}"
    if a >= 1000:
        return f"{v:,.0f}"
    return f"{v:.4g}"


@dataclass
class _Frame:
    width: int
    height: int
    left: int = 56
    right: int = 12
    top: int = 12
    bottom: int = 34
    x0: float = 0.0
    x1: float = 1.0
    y0: float = 0.0
    y1: float = 1.0
    log_y: bool = False
    parts: list[str] = field(default_factory=list)

    def sx(self, x: Any) -> Any:
        span = (self.x1 - self.x0) or 1.0
        return self.left + (np.asarray(x, dtype=float) - self.x0) / span * (self.width - self.left - self.right)

    def sy(self, y: Any) -> Any:
        y = np.asarray(y, dtype=float)
        lo, hi = self.y0, self.y1
        if self.log_y:
            y, lo, hi = np.log10(np.maximum(y, 1e-300)), math.log10(max(lo, 1e-300)), math.log10(max(hi, 1e-300))
        span = (hi - lo) or 1.0
        return self.top + (1 - (y - lo) / span) * (self.height - self.top - self.bottom)


def _tick_labels(ticks: Sequence[float], fmt: Any = None) -> list[str]:
    """The ticks' labels, with as many significant digits as it takes to tell them apart (0.9510, 0.9511, not 0.951 twice)."""
    labels = [fmt(t) if fmt else _label(t) for t in ticks]
    if fmt is None and len(set(labels)) < len(labels):
        for digits in range(5, 13):
            labels = [f"{t:.{digits}g}" for t in ticks]
            if len(set(labels)) == len(labels):
                break
    return labels


def _axes(f: _Frame, x_label: str, y_label: str, x_format: Any = None) -> None:
    h, w = f.height, f.width
    f.parts.append(f'<line x1="{f.left}" y1="{h - f.bottom}" x2="{w - f.right}" y2="{h - f.bottom}" stroke="#8a96a3"/>')
    f.parts.append(f'<line x1="{f.left}" y1="{f.top}" x2="{f.left}" y2="{h - f.bottom}" stroke="#8a96a3"/>')
    xticks = nice_ticks(f.x0, f.x1, 6)
    for t, text in zip(xticks, _tick_labels(xticks, x_format), strict=True):
        x = float(f.sx(t))
        f.parts.append(f'<line x1="{x:.1f}" y1="{h - f.bottom}" x2="{x:.1f}" y2="{h - f.bottom + 4}" stroke="#8a96a3"/>'
                       f'<text x="{x:.1f}" y="{h - f.bottom + 15}" text-anchor="middle">{_e(text)}</text>')
    if f.log_y:
        lo, hi = math.floor(math.log10(max(f.y0, 1e-300))), math.ceil(math.log10(max(f.y1, 1e-300)))
        yticks = [10.0 ** k for k in range(lo, hi + 1)]
    else:
        yticks = nice_ticks(f.y0, f.y1, 5)
    for t, text in zip(yticks, _tick_labels(yticks), strict=True):
        y = float(f.sy(t))
        f.parts.append(f'<line x1="{f.left}" y1="{y:.1f}" x2="{w - f.right}" y2="{y:.1f}" stroke="#eef1f4"/>'
                       f'<text x="{f.left - 5}" y="{y + 4:.1f}" text-anchor="end">{_e(text)}</text>')
    if x_label:
        f.parts.append(f'<text x="{(f.left + w - f.right) / 2:.0f}" y="{h - 3}" text-anchor="middle">{_e(x_label)}</text>')
    if y_label:
        f.parts.append(f'<text transform="translate(12 {(f.top + h - f.bottom) / 2:.0f}) rotate(-90)" text-anchor="middle">{_e(y_label)}</text>')


def _svg(f: _Frame, title: str, body: list[str]) -> Markup:
    head = (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {f.width} {f.height}" '
            f'width="{f.width}" height="{f.height}" role="img" aria-label="{_e(title)}"><title>{_e(title)}</title>')
    return Markup(head + "".join(f.parts) + "".join(body) + "</svg>")


def _empty(title: str, width: int, message: str = "no data") -> Markup:
    return Markup(f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} 40" width="{width}" height="40" '
                  f'role="img" aria-label="{_e(title)}: {message}"><text x="4" y="24">{_e(title)}: {message}</text></svg>')


LEGEND_CHAR_PX = 6.0  # the width of a character at the charts' font size 10, a little generous


def _legend_layout(names: Sequence[str], left: float, right: float) -> list[tuple[float, int, str]]:
    """``(x, row, text)`` per legend entry: entries side by side as wide as their text, wrapped onto new rows."""
    out: list[tuple[float, int, str]] = []
    x, row = left, 0
    for name in names:
        text = name[:40]
        w = 14 + len(text) * LEGEND_CHAR_PX + 12
        if x > left and x + w > right:
            x, row = left, row + 1
        out.append((x, row, text))
        x += w
    return out


def line_chart(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, title: str = "", width: int = 640,
               height: int = 260, x_label: str = "", y_label: str = "", log_y: bool = False, buckets: int = 400,
               x_format: Any = None, band: tuple[float, float] | None = None, markers: int = 120) -> Markup:
    """Series ``{name: (xs, ys)}`` drawn as lines, each downsampled to at most ``2 * buckets`` points.

    ``band``: a shaded y range (e.g. a threshold); ``markers``: how many points per series get
    a hover target with the exact value; ``x_format``: a function for the x tick labels.
    """
    drawn: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, (xs, ys) in series.items():
        x, y = downsample(xs, ys, buckets)
        ok = np.isfinite(x) & np.isfinite(y) & ((y > 0) if log_y else True)
        if ok.any():
            drawn[name] = (x[ok], y[ok])
    if not drawn:
        return _empty(title or "chart", width)
    allx = np.concatenate([d[0] for d in drawn.values()])
    ally = np.concatenate([d[1] for d in drawn.values()])
    y0, y1 = float(ally.min()), float(ally.max())
    if band is not None:
        y0, y1 = min(y0, band[0]), max(y1, band[1])
    if y0 == y1:  # a flat series: a small range around it, never below 0 for a series that is not (a share, a count)
        y0, y1 = y0 - (abs(y0) or 1) * 0.05, y1 + (abs(y1) or 1) * 0.05
        y0 = max(y0, 0.0) if float(ally.min()) >= 0 else y0
    elif not log_y:
        pad = (y1 - y0) * 0.05
        y0, y1 = y0 - pad, y1 + pad
    x0, x1 = float(allx.min()), float(allx.max())
    if x0 == x1:  # one x (a metric logged once): the point in the middle, not on the y axis
        x0, x1 = x0 - 0.5, x1 + 0.5
    f = _Frame(width, height, x0=x0, x1=x1, y0=y0, y1=y1, log_y=log_y)
    legend = _legend_layout(list(drawn), f.left + 8, width - f.right) if len(drawn) > 1 else []
    if legend:
        f.top = 12 + 12 * (legend[-1][1] + 1)
    _axes(f, x_label, y_label, x_format)
    body: list[str] = []
    if band is not None:
        ya, yb = float(f.sy(band[1])), float(f.sy(band[0]))
        body.append(f'<rect x="{f.left}" y="{ya:.1f}" width="{width - f.left - f.right}" height="{max(0.5, yb - ya):.1f}" fill="#fdecea" opacity="0.7"/>')
    fx = x_format or _label
    for i, (name, (x, y)) in enumerate(drawn.items()):
        color = PALETTE[i % len(PALETTE)]
        px, py = f.sx(x), f.sy(y)
        pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px, py, strict=True))
        body.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{pts}"><title>{_e(name)}</title></polyline>')
        step = max(1, len(x) // max(1, markers))
        alone = len(x) == 1  # a single value (a metric logged once) has no line: its point is drawn
        for j in sorted(set(range(0, len(x), step)) | {int(np.argmax(y)), int(np.argmin(y)), len(x) - 1}):  # extremes and the last value too
            body.append(f'<circle cx="{px[j]:.1f}" cy="{py[j]:.1f}" r="{4 if alone else 3}" fill="{color}" fill-opacity="{0.9 if alone else 0.01}" '
                        f'data-title="{_e(name)}: {_e(fx(float(x[j])))} → {_e(_label(float(y[j])))}"/>')
        if legend:
            lx, row, text = legend[i]
            ly = 12 + row * 12
            body.append(f'<rect x="{lx}" y="{ly - 8}" width="10" height="3" fill="{color}"/>'
                        f'<text x="{lx + 14}" y="{ly - 3}">{_e(text)}</text>')
    return _svg(f, title or "chart", body)


def scatter(points: Sequence[tuple[float, float, str]], *, title: str = "", width: int = 420, height: int = 260,
            x_label: str = "", y_label: str = "", hrefs: Sequence[str | None] | None = None, best: int | None = None) -> Markup:
    """Points ``(x, y, label)``: each a hover target (its label and values) and, with ``hrefs``, a link;
    the point at index ``best`` is drawn larger, in the second colour."""
    keep = [i for i, (x, y, _label) in enumerate(points) if math.isfinite(x) and math.isfinite(y)]
    if not keep:
        return _empty(title or "scatter", width)
    xs = np.array([points[i][0] for i in keep], dtype=float)
    ys = np.array([points[i][1] for i in keep], dtype=float)

    def padded(lo: float, hi: float) -> tuple[float, float]:
        pad = (hi - lo) * 0.06 or (abs(lo) or 1) * 0.05
        return lo - pad, hi + pad

    (x0, x1), (y0, y1) = padded(float(xs.min()), float(xs.max())), padded(float(ys.min()), float(ys.max()))
    f = _Frame(width, height, x0=x0, x1=x1, y0=y0, y1=y1)
    _axes(f, x_label, y_label)
    body: list[str] = []
    for i, px, py in zip(keep, f.sx(xs), f.sy(ys), strict=True):
        x, y, label = points[i]
        big = i == best
        dot = (f'<circle cx="{px:.1f}" cy="{py:.1f}" r="{6 if big else 4}" fill="{PALETTE[1 if big else 0]}" fill-opacity="0.75" '
               f'data-title="{_e(label)}: {_e(_label(x))}, {_e(_label(y))}"/>')
        href = hrefs[i] if hrefs is not None else None
        body.append(f'<a href="{_e(href)}">{dot}</a>' if href else dot)
    return _svg(f, title or "scatter", body)


def bar_chart(labels: Sequence[str], series: Mapping[str, Sequence[float]], *, title: str = "", width: int = 640,
              height: int = 240, y_label: str = "") -> Markup:
    """Grouped bars: one group per label, one bar per series (e.g. reference vs current share per bin)."""
    if not labels or not series:
        return _empty(title or "bars", width)
    values = np.array([[float(v) if v is not None else 0.0 for v in vs] for vs in series.values()], dtype=float)
    top = float(np.nanmax(values)) if values.size else 1.0
    f = _Frame(width, height, x0=0, x1=len(labels), y0=0.0, y1=top * 1.08 or 1.0, bottom=48)
    f.top = 24 if len(series) > 1 else 12
    h = height
    f.parts.append(f'<line x1="{f.left}" y1="{h - f.bottom}" x2="{width - f.right}" y2="{h - f.bottom}" stroke="#8a96a3"/>')
    for t in nice_ticks(0.0, f.y1, 4):
        y = float(f.sy(t))
        f.parts.append(f'<line x1="{f.left}" y1="{y:.1f}" x2="{width - f.right}" y2="{y:.1f}" stroke="#eef1f4"/>'
                       f'<text x="{f.left - 5}" y="{y + 4:.1f}" text-anchor="end">{_e(_label(t))}</text>')
    if y_label:
        f.parts.append(f'<text transform="translate(12 {(f.top + h - f.bottom) / 2:.0f}) rotate(-90)" text-anchor="middle">{_e(y_label)}</text>')
    group_w = (width - f.left - f.right) / len(labels)
    bar_w = group_w * 0.8 / len(series)
    body: list[str] = []
    every = max(1, math.ceil(len(labels) / 16))
    for gi, label in enumerate(labels):
        gx = f.left + gi * group_w + group_w * 0.1
        for si, name in enumerate(series):
            v = values[si, gi]
            y = float(f.sy(v))
            body.append(f'<rect x="{gx + si * bar_w:.1f}" y="{y:.1f}" width="{max(0.5, bar_w - 1):.1f}" height="{max(0.0, h - f.bottom - y):.1f}" '
                        f'fill="{PALETTE[si % len(PALETTE)]}" data-title="{_e(name)} · {_e(label)}: {_e(_label(v))}"/>')
        if gi % every == 0:
            body.append(f'<text x="{gx + group_w * 0.4:.1f}" y="{h - f.bottom + 14}" text-anchor="middle">{_e(str(label)[:12])}</text>')
    if len(series) > 1:
        for si, name in enumerate(series):
            lx = f.left + 8 + si * 140
            body.append(f'<rect x="{lx}" y="4" width="10" height="10" fill="{PALETTE[si % len(PALETTE)]}"/><text x="{lx + 14}" y="13">{_e(name)}</text>')
    return _svg(f, title or "bars", body)


def heatmap(rows: Sequence[str], columns: Sequence[str], values: Any, *, title: str = "", cell: int = 22,
            label_width: int = 150, fmt: Any = None, high: float | None = None, hrefs: Any = None) -> Markup:
    """A rows x columns grid coloured from white (0) to red (``high``, default the maximum).

    ``values[r][c]`` may be None (no data: grey); ``hrefs[r][c]`` optionally links a cell.
    """
    if not rows or not columns:
        return _empty(title or "heat map", 400)
    v = np.array([[np.nan if x is None else float(x) for x in row] for row in values], dtype=float)
    top = high if high is not None else (float(np.nanmax(v)) if np.isfinite(v).any() else 1.0)
    top = top or 1.0
    fmt = fmt or _label
    col_every = max(1, math.ceil(len(columns) / 24))
    # column labels at 60 degrees, above the grid: as tall as the longest needs (they were cut at the top and overlapped)
    longest = max(len(str(c)[:16]) for c in columns) * LEGEND_CHAR_PX
    base = int(longest * math.sin(math.radians(60))) + 12
    width = label_width + cell * len(columns) + 10 + int(longest * 0.5)
    height = base + 10 + cell * len(rows)
    f = _Frame(width, height)
    body: list[str] = []
    for ci, col in enumerate(columns):
        if ci % col_every == 0:
            x = label_width + ci * cell + cell / 2
            body.append(f'<text x="{x:.0f}" y="{base}" text-anchor="start" transform="rotate(-60 {x:.0f} {base})">{_e(str(col)[:16])}</text>')
    for ri, row in enumerate(rows):
        y = base + 6 + ri * cell
        body.append(f'<text x="{label_width - 6}" y="{y + cell * 0.65:.0f}" text-anchor="end">{_e(str(row)[:24])}</text>')
        for ci, col in enumerate(columns):
            val = v[ri, ci]
            if np.isfinite(val):
                t = max(0.0, min(1.0, val / top))
                color = f"rgb(255,{int(255 - 200 * t)},{int(255 - 215 * t)})"
                tip = f"{row} · {col}: {fmt(val)}"
            else:
                color, tip = "#eef1f4", f"{row} · {col}: no data"
            rect = (f'<rect x="{label_width + ci * cell}" y="{y}" width="{cell - 2}" height="{cell - 2}" fill="{color}" '
                    f'stroke="#d8dee4" data-title="{_e(tip)}"/>')
            href = hrefs[ri][ci] if hrefs is not None else None
            body.append(f'<a href="{_e(href)}">{rect}</a>' if href else rect)
    return _svg(f, title or "heat map", body)


@dataclass(frozen=True)
class GraphNode:
    id: str
    label: str
    detail: str = ""
    status: str = ""  # finished, failed, cached, running, ... (coloured)
    href: str | None = None


STATUS_COLORS = {"finished": "#e6f4ea", "passed": "#e6f4ea", "cached": "#e8f0fb", "failed": "#fdecea", "crashed": "#fdecea",
                 "running": "#fff4d6", "skipped": "#f5f7f9", "pending": "#f5f7f9"}


def dag(nodes: Sequence[GraphNode], edges: Sequence[tuple[str, str]], *, title: str = "graph", box_w: int = 170,
        box_h: int = 44, gap_x: int = 50, gap_y: int = 18) -> Markup:
    """A left-to-right layered drawing of a directed acyclic graph (longest-path layers, barycentre order)."""
    if not nodes:
        return _empty(title, 400)
    ids = [n.id for n in nodes]
    known = set(ids)
    edges = [(a, b) for a, b in edges if a in known and b in known and a != b]
    preds: dict[str, list[str]] = {i: [] for i in ids}
    for a, b in edges:
        preds[b].append(a)
    layer: dict[str, int] = {}

    def depth(i: str, seen: frozenset[str] = frozenset()) -> int:
        if i in layer:
            return layer[i]
        if i in seen:  # a cycle: break it here
            return 0
        layer[i] = d = 1 + max((depth(p, seen | {i}) for p in preds[i]), default=-1)
        return d

    for i in ids:
        depth(i)
    layers: dict[int, list[str]] = {}
    for i in ids:
        layers.setdefault(layer[i], []).append(i)
    pos: dict[str, float] = {}
    for d in sorted(layers):
        members = layers[d]
        if d > 0:
            members.sort(key=lambda i: (sum(pos.get(p, 0) for p in preds[i]) / len(preds[i])) if preds[i] else 0.0)
        for k, i in enumerate(members):
            pos[i] = float(k)
    tallest = max(len(m) for m in layers.values())
    width = 20 + len(layers) * (box_w + gap_x)
    height = 20 + tallest * (box_h + gap_y)
    xy: dict[str, tuple[float, float]] = {}
    for d, members in layers.items():
        offset = (tallest - len(members)) * (box_h + gap_y) / 2
        for k, i in enumerate(members):
            xy[i] = (10 + d * (box_w + gap_x), 10 + offset + k * (box_h + gap_y))
    f = _Frame(width, height)
    body = ['<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto">'
            '<path d="M0,0 L10,5 L0,10 z" fill="#8a96a3"/></marker></defs>']
    for a, b in edges:
        (ax, ay), (bx, by) = xy[a], xy[b]
        x1, y1, x2, y2 = ax + box_w, ay + box_h / 2, bx, by + box_h / 2
        mid = (x1 + x2) / 2
        body.append(f'<path d="M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2:.0f} {x2 - 2:.0f},{y2:.0f}" fill="none" '
                    f'stroke="#8a96a3" stroke-width="1.3" marker-end="url(#arrow)"/>')
    for n in nodes:
        x, y = xy[n.id]
        fill = STATUS_COLORS.get(n.status, "#ffffff")
        tip = " · ".join(p for p in (n.label, n.status, n.detail) if p)
        box = (f'<g data-title="{_e(tip)}"><rect x="{x:.0f}" y="{y:.0f}" width="{box_w}" height="{box_h}" rx="6" fill="{fill}" stroke="#8a96a3"/>'
               f'<text x="{x + 8:.0f}" y="{y + 18:.0f}" fill="#1d232b" style="font-weight:600">{_e(n.label[:26])}</text>'
               f'<text x="{x + 8:.0f}" y="{y + 34:.0f}">{_e((n.detail or n.status)[:30])}</text></g>')
        body.append(f'<a href="{_e(n.href)}">{box}</a>' if n.href else box)
    return _svg(f, title, body)
