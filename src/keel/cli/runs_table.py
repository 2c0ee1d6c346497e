"""The table of ``keel runs ls``: the columns that fit the terminal and say the most.

A search returns every param and metric of the runs it found, often dozens;
printed as they come they fold into unreadable slivers at 80 columns. The view
keeps the run's identity (id, name, status, start), the sort keys, the columns
asked for with ``-c``, then adds the most informative other params and
metrics (user keys before keel's own, varying before constant, metrics before
params, the best covered first) while they fit the width. Columns that are
empty for every run are never shown; the caption names what was left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

BASE = [("run_id", "run"), ("run_name", "name"), ("status", "status"), ("start_time", "started")]
MAX_AUTO = 6  # at most this many columns picked automatically, however wide the terminal
PADDING = 3  # rich's cell padding and border per column


def fmt(v: Any) -> str:
    """A value for a table cell: 6 significant digits, blank when missing, never '-0'."""
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return "0" if v == 0 else f"{v:.6g}"
    if hasattr(v, "strftime"):
        return str(v.strftime("%Y-%m-%d %H:%M:%S"))
    if isinstance(v, str):
        return _short_number(v)
    return str(v)


def _short_number(text: str) -> str:
    """A param logged as a long decimal ('0.030365292068644') shown like a metric ('0.0303653')."""
    if "." not in text or len(text) <= 8:
        return text
    try:
        f = float(text)
    except ValueError:
        return text
    return "0" if f == 0 else f"{f:.6g}"


def column_of(item: str) -> tuple[str, bool]:
    """The frame column an ``--order-by`` item sorts on, and whether it is descending."""
    from keel.tracking._filter import ATTRIBUTES, PREFIX_OF, parse_order_by

    ref, desc = parse_order_by(item)
    if ref.kind == "attribute":
        return ATTRIBUTES[ref.key][0], desc
    return f"{PREFIX_OF[ref.kind]}.{ref.key}", desc


@dataclass
class RunsView:
    """The columns chosen for a width, and what was left out."""

    columns: list[str]
    headers: list[str]
    rows: list[list[str]]
    hidden: list[str] = field(default_factory=list)
    sort: list[tuple[str, bool]] = field(default_factory=list)

    def table(self, title: str) -> Table:
        t = Table(title=title, header_style="bold", caption=self.caption(), caption_justify="left")
        for h in self.headers:
            t.add_column(h, overflow="fold")
        for r in self.rows:
            t.add_row(*r)
        return t

    def caption(self) -> str:
        parts = ["sorted by " + ", ".join(f"{c} {'↓' if d else '↑'}" for c, d in self.sort) if self.sort else "newest first"]
        if self.hidden:
            shown = ", ".join(self.hidden[:6]) + (f" and {len(self.hidden) - 6} more" if len(self.hidden) > 6 else "")
            parts.append(f"not shown: {shown} (add with -c KEY; --json has everything)")
        return "; ".join(parts)


def _header(col: str, others: Sequence[str]) -> str:
    """'valid_roc_auc' for 'metrics.valid_roc_auc', unless a param has the same key."""
    kind, _, key = col.partition(".")
    if kind not in ("metrics", "params", "tags") or sum(1 for o in others if o.partition(".")[2] == key) > 1:
        return col
    return key


def _cells(df: Any, col: str) -> list[str]:
    if col == "run_id":
        return [str(v)[:8] for v in df[col]]
    if col in ("start_time", "end_time"):
        return ["" if v is None or v != v else v.strftime("%m-%d %H:%M:%S") for v in df[col]]
    return [fmt(v) for v in df[col].tolist()]


def _rank(df: Any, col: str) -> tuple[Any, ...]:
    values = df[col]
    filled = int(values.notna().sum())
    varies = values.nunique(dropna=True) > 1
    key = col.partition(".")[2]
    return (key.startswith("keel."), not varies, 0 if col.startswith("metrics.") else 1, -filled, col)


def choose(df: Any, width: int, order_by: Sequence[str] = (), extra: Sequence[str] = ()) -> RunsView:
    """Pick the columns of ``df`` (a ``search_runs`` frame) for a table ``width`` characters wide."""
    sort = [column_of(o) for o in order_by]
    wanted: list[str] = []
    for item in extra:
        if item.endswith(".*"):
            wanted += [c for c in df.columns if c.startswith(item[:-1])]
        elif item in df.columns:
            wanted.append(item)
        else:
            from keel.errors import ValidationError, did_you_mean

            raise ValidationError(
                f"None of the runs listed has the column {item!r}.{did_you_mean(item, [str(c) for c in df.columns])}",
                hint="Columns are metrics.KEY, params.KEY or tags.KEY (or metrics.*); `keel runs show RUN` lists a run's keys.",
            )
    base = [c for c, _h in BASE if c in df.columns and df[c].notna().any()]
    must = base + [c for c, _d in sort if c not in base] + [c for c in wanted if c not in base]
    must = list(dict.fromkeys(must))
    candidates = [c for c in df.columns if c.startswith(("metrics.", "params.")) and c not in must and df[c].notna().any()]
    candidates.sort(key=lambda c: _rank(df, c))
    cells = {c: _cells(df, c) for c in must + candidates}
    names = list(must) + candidates

    def size(col: str) -> int:
        header = dict(BASE).get(col) or _header(col, names)
        return max([len(header), *(len(v) for v in cells[col])]) + PADDING

    used = 1 + sum(size(c) for c in must)
    chosen = list(must)
    hidden = []
    for c in candidates:
        if len(chosen) - len(must) < MAX_AUTO and used + size(c) <= width:
            chosen.append(c)
            used += size(c)
        else:
            hidden.append(c)
    sort_cols = {c for c, _d in sort}
    headers = []
    for c in chosen:
        h = dict(BASE).get(c) or _header(c, names)
        if c in sort_cols:
            h += " ↓" if dict(sort)[c] else " ↑"
        headers.append(h)
    if not sort and "start_time" in chosen:  # the default order: newest first
        headers[chosen.index("start_time")] += " ↓"
    rows = [[cells[c][i] for c in chosen] for i in range(len(df))]
    return RunsView(chosen, headers, rows, hidden, sort)
