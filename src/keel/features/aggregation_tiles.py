"""Tiles for ``aggregation_interval`` views: one partial aggregate per tile instead of every event.

A tiled view's online state is the same row log as an exact view's (see
:mod:`.aggregation_online`), but materialization compacts the events that had
arrived by its instant into *tile rows*, one per entity and tile::

    [tile_start_us, "tile", last_event_us, partial_0, partial_1, ...]

with one partial per aggregation of the view. Pushed events stay event rows
(``merge_logs`` appends them in one round trip) until the next materialization
compacts them. A tiled window holds whole tiles only (its far edge is a tile
boundary), so a lookup combines the partials of the tiles in the window with the
event rows in it, and gives what the offline range join over the same tiles gives.

Partials, by function: count ``n``; sum and mean ``[n, sum]``; min and max the value;
stddev and stddev_pop ``[n, sum, m2]`` (m2: the sum of squared deviations from the
tile's mean, combined by Chan's parallel formula); count_distinct the distinct
values; time_since_last the last event time; last_n the ``n`` newest
``[event, created, value]`` triples (created ``-1`` when absent).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

from keel.features.aggregations import Aggregation
from keel.features.definitions import FeatureView

TILE = "tile"
_FAMILY = {"mean": "sum", "stddev_pop": "stddev"}


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def partial_sql(agg: Aggregation, i: int, event: str, created: str) -> str:
    """SQL text (a JSON value) of the aggregation's partial over the group's events."""
    cond = "TRUE" + (f" AND __w{i}" if agg.where else "")
    col = q(str(agg.column)) if agg.column else event
    if agg.column is not None:
        cond += f" AND {col} IS NOT NULL"
    f = agg.function

    def js(expr: str) -> str:
        return f"coalesce(CAST(to_json({expr}) AS VARCHAR), 'null')"

    n = f"CAST(count(*) FILTER (WHERE {cond}) AS VARCHAR)"
    if f == "count":
        return n
    if f in ("sum", "mean"):
        return f"'[' || {n} || ',' || {js(f'coalesce(sum({col}) FILTER (WHERE {cond}), 0)')} || ']'"
    if f in ("min", "max"):
        return js(f"{f}({col}) FILTER (WHERE {cond})")
    if f in ("stddev", "stddev_pop"):
        m2 = f"coalesce(var_pop({col}) FILTER (WHERE {cond}) * count(*) FILTER (WHERE {cond}), 0)"
        return f"'[' || {n} || ',' || {js(f'coalesce(sum({col}) FILTER (WHERE {cond}), 0)')} || ',' || {js(m2)} || ']'"
    if f == "count_distinct":
        return js(f"list(DISTINCT {col}) FILTER (WHERE {cond})")
    if f == "time_since_last":
        return js(f"epoch_us(max({event}) FILTER (WHERE {cond}))")
    # last_n
    triple = f"'[' || epoch_us({event}) || ',' || coalesce(epoch_us({created}), -1) || ',' || CAST(to_json({col}) AS VARCHAR) || ']'"
    newest = f"{event} DESC, {created} DESC NULLS LAST, {col} DESC"
    return f"'[' || coalesce(array_to_string(list({triple} ORDER BY {newest}) FILTER (WHERE {cond})[1:{agg.n}], ','), '') || ']'"


def tile_rows_sql(view: FeatureView, relation: str, keys: str, event: str, created: str) -> str:
    """SQL giving (join keys..., __ord_e, __ord_c, __row, __last) of the tile rows of ``relation``'s events."""
    agg0 = view.aggregations[0]
    assert agg0.interval is not None
    tile_us = int(agg0.interval.total_seconds() * 1_000_000)
    partials = " || ',' || ".join(partial_sql(a, i, event, created) for i, a in enumerate(view.aggregations))
    return f"""
        SELECT {keys}, __tile AS __ord_e, -1 AS __ord_c,
               '[' || __tile || ',"{TILE}",' || epoch_us(max({event})) || ',' || {partials} || ']' AS __row,
               max({event}) AS __last
        FROM (SELECT *, epoch_us({event}) - epoch_us({event}) % {tile_us} AS __tile FROM {relation})
        GROUP BY {keys}, __tile
    """


# -- lookups ---------------------------------------------------------------------------------
def of_values(a: Aggregation, values: Any) -> Any:
    """The partial of a window's event rows, from what :func:`.aggregation_online._values` read."""
    f = a.function
    if f == "time_since_last":
        return values
    if a.column is None:
        return values  # a count
    if f == "last_n":
        return [list(t) for t in values[: a.n]]
    if f == "count":
        return len(values)
    if f == "count_distinct":
        return list(set(values))
    if f in ("min", "max"):
        return (min if f == "min" else max)(values) if values else None
    s = values.total() if values else 0
    if f in ("sum", "mean"):
        return [len(values), s]
    mean = s / len(values) if values else 0.0
    return [len(values), s, math.fsum((x - mean) ** 2 for x in values)]


def combine(a: Aggregation, p: Any, r: Any) -> Any:
    f = a.function
    if p is None:
        return r
    if r is None:
        return p
    if f == "count" or (a.column is None and f != "time_since_last"):
        return p + r
    if f == "time_since_last":
        return max(p, r)
    if f in ("min", "max"):
        return (min if f == "min" else max)(p, r)
    if f == "count_distinct":
        return list({*p, *r})
    if f == "last_n":
        return sorted([*map(tuple, p), *map(tuple, r)], reverse=True)[: a.n]
    if f in ("sum", "mean"):
        return [p[0] + r[0], p[1] + r[1]]
    n1, s1, m1 = p
    n2, s2, m2 = r
    if not n1:
        return r
    if not n2:
        return p
    n = n1 + n2
    delta = s2 / n2 - s1 / n1
    return [n, s1 + s2, m1 + m2 + delta * delta * n1 * n2 / n]


def finalize(a: Aggregation, p: Any, at_us: int) -> Any:
    f = a.function
    if f == "time_since_last":
        return None if p is None else (at_us - p) / 1e6
    if f == "count" or a.column is None:
        return int(p or 0)
    if f == "count_distinct":
        return len(p or ())
    if f == "last_n":
        return [t[2] for t in p] if p else a.empty
    if f in ("min", "max"):
        return a.empty if p is None else p
    if p is None or not p[0]:
        return a.empty
    if f == "sum":
        return p[1]
    if f == "mean":
        return p[1] / p[0]
    dof = p[0] - (1 if f == "stddev" else 0)
    return None if dof <= 0 else math.sqrt(max(p[2], 0.0) / dof)


def compute(
    view: FeatureView, wanted: list[tuple[int, Aggregation, str]], states: Sequence[Any], at_us: int, respect: bool,
    bounds: list[tuple[int, bool]],
) -> tuple[dict[str, list[Any]], list[int | None]]:
    """Every wanted aggregate of every state (a row log of tile and event rows) as of ``at_us``."""
    from keel.features.aggregation_online import _values, columnar

    out: dict[str, list[Any]] = {n: [] for _, _, n in wanted}
    last: list[int | None] = []
    for rows in states:
        if rows is None:
            for _, a, n in wanted:
                out[n].append(a.empty)
            last.append(None)
            continue
        tiles = [r for r in rows if r[1] == TILE and r[0] <= at_us]
        events = [r for r in rows if r[1] != TILE]
        st = columnar(view, events) if events else None
        ev: list[int] = st["e"] if st else []
        cr = st["c"] if st and respect else None
        hi = bisect.bisect_right(ev, at_us)
        seen = [j for j in range(hi) if cr is None or cr[j] is None or cr[j] <= at_us]
        times = [ev[j] for j in seen[-1:]] + [t[2] for t in tiles]
        last.append(max(times) if times else None)
        starts = [t[0] for t in tiles]
        cache: dict[Any, Any] = {}
        for i, a, n in wanted:
            lo = bounds[i][0]
            # sum and mean (stddev and stddev_pop) of one column, filter and window share one partial
            key = (lo, a.column, a.where, _FAMILY.get(a.function, a.function), a.n)
            if key not in cache:
                p = None
                for t in tiles[bisect.bisect_left(starts, lo) :]:
                    p = combine(a, p, t[3 + i])
                if st is not None:
                    idx = [j for j in seen if ev[j] >= lo and (not a.where or st[f"__w{i}"][j])]
                    p = combine(a, p, of_values(a, _values(a, st, idx, ev)))
                cache[key] = p
            out[n].append(finalize(a, cache[key], at_us))
    return out, last
