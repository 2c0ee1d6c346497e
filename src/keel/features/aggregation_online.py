"""Windowed aggregations online: per-entity window state in the online store, aggregates as of now.

The state of an entity is one value: its events of the view's longest window
(event time, created time, the input columns, each ``where`` condition's result),
sorted by event time. Materialization builds it for every entity from the offline
rows in one DuckDB query; a push merges the new events into the state of the
entities it names (one read and one write per push, nothing else of the history
read) and drops the events that left the longest window. A lookup computes every
aggregate as of the lookup's instant by the same rules as the offline SQL (window
bounds, filters, arrival times), so old events leave each window on time without
any write. The state expires from the store ``ttl`` after its last event.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from keel.features.aggregations import Aggregation, reach
from keel.features.definitions import FeatureView

if TYPE_CHECKING:
    import duckdb

    from keel.store.kv import KVStore

EVENT = "__keel_event"
CREATED = "__keel_created"
_PAD = 18


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def reach_us(view: FeatureView) -> int:
    return int(max(reach(a) for a in view.aggregations).total_seconds() * 1_000_000)


def _version(as_of_us: int) -> str:
    return str(as_of_us).rjust(_PAD, "0") + "0" * _PAD


def state_sql(view: FeatureView, rows: str, where: str, as_of_us: int) -> str:
    """SQL giving (k, ver, v, exp): each entity's window state as of ``as_of_us``, sorted by key."""
    keys = ", ".join(q(k) for k in view.join_keys)
    key_expr = (
        f"CAST({q(view.join_keys[0])} AS VARCHAR)"
        if len(view.join_keys) == 1
        else "concat_ws(chr(31), " + ", ".join(f"CAST({q(k)} AS VARCHAR)" for k in view.join_keys) + ")"
    )
    order = f"ORDER BY {EVENT}, {CREATED} NULLS FIRST"
    filters = [f"coalesce(CAST(({a.where}) AS BOOLEAN), false) AS __w{i}" for i, a in enumerate(view.aggregations) if a.where]
    lists = [f"e := list(epoch_us({EVENT}) {order})", f"c := list(epoch_us({CREATED}) {order})"]
    lists += [f"{q(f.name)} := list({q(f.name)} {order})" for f in view.schema]
    lists += [f"__w{i} := list(__w{i} {order})" for i, a in enumerate(view.aggregations) if a.where]
    ttl_ms = None if view.ttl is None else int(view.ttl.total_seconds() * 1000)
    exp = "NULL::BIGINT" if ttl_ms is None else f"epoch_ms(max({EVENT})) + {ttl_ms}"
    low = as_of_us - reach_us(view)
    return f"""
        WITH r AS (SELECT *{''.join(', ' + f for f in filters)} FROM {q(rows)}
                   WHERE {where} AND {EVENT} > make_timestamptz({low})
                     AND {' AND '.join(f'{q(k)} IS NOT NULL' for k in view.join_keys)})
        SELECT {key_expr} AS k, {_sql_text(_version(as_of_us))} AS ver,
               encode(CAST(to_json(struct_pack({', '.join(lists)})) AS VARCHAR)) AS v,
               {exp} AS exp
        FROM r GROUP BY {keys} ORDER BY k
    """


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def write_states(con: duckdb.DuckDBPyConnection, view: FeatureView, rows: str, store: KVStore, where: str, as_of_us: int) -> int:
    """Materialize every entity's window state; returns keys written."""
    from keel.features.materialization import namespace

    reader = con.sql(state_sql(view, rows, where, as_of_us)).to_arrow_reader(100_000)
    ns = namespace(view)
    written = 0
    for batch in reader:
        exps = None if view.ttl is None else batch.column(3).to_pylist()
        written += store.put_many(ns, batch.column(0).to_pylist(), batch.column(1).to_pylist(), batch.column(2).to_pylist(), exps)
    return written


def push_events(con: duckdb.DuckDBPyConnection, view: FeatureView, rows: str, store: KVStore) -> int:
    """Merge pushed (transformed) rows into the states of their entities; returns keys written."""
    import orjson

    from keel.features.materialization import namespace

    now_us = time.time_ns() // 1_000
    fresh = con.sql(state_sql(view, rows, "TRUE", now_us)).fetchall()
    if not fresh:
        return 0
    ns = namespace(view)
    keys = [r[0] for r in fresh]
    old = store.get_many([(ns, keys)])[0]
    low = now_us - reach_us(view)
    ttl_ms = None if view.ttl is None else int(view.ttl.total_seconds() * 1000)
    vals: list[bytes] = []
    exps: list[int | None] = []
    for (_, _, blob, _), prev in zip(fresh, old, strict=True):
        new = orjson.loads(blob)
        state = merge(orjson.loads(prev), new, low) if prev is not None else new
        vals.append(orjson.dumps(state))
        exps.append(None if ttl_ms is None or not state["e"] else state["e"][-1] // 1000 + ttl_ms)
    return store.put_many(ns, keys, [_version(now_us)] * len(keys), vals, None if ttl_ms is None else exps)


def merge(old: dict[str, list[Any]], new: dict[str, list[Any]], low_us: int) -> dict[str, list[Any]]:
    """The union of two states, sorted by (event, created), without events at or before ``low_us``."""
    names = list(new)
    n_old, n_new = len(old["e"]), len(new["e"])
    order = sorted(
        [(old["e"][i], -1 if old["c"][i] is None else old["c"][i], 0, i) for i in range(n_old) if old["e"][i] > low_us]
        + [(new["e"][i], -1 if new["c"][i] is None else new["c"][i], 1, i) for i in range(n_new) if new["e"][i] > low_us]
    )
    src = (old, new)
    return {name: [src[s][name][i] if name in src[s] else None for _, _, s, i in order] for name in names}


def _calendar_start_us(tz: str, days: int, at_us: int) -> int:
    """Local midnight ``days - 1`` days before the local day of ``at_us``, in epoch microseconds."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(tz)
    local = datetime.fromtimestamp(at_us / 1_000_000, UTC).astimezone(zone)
    start = datetime.combine(local.date() - timedelta(days=days - 1), datetime.min.time(), tzinfo=zone)
    return int(start.timestamp()) * 1_000_000


def lower_bounds(view: FeatureView, at_us: int) -> list[tuple[int, bool]]:
    """Per aggregation (bound in µs, inclusive?) as of ``at_us``; calendar bounds by zoneinfo."""
    out = []
    for agg in view.aggregations:
        if agg.calendar:
            out.append((_calendar_start_us(str(agg.timezone), agg.days, at_us), True))
        else:
            out.append((at_us - int(agg.span.total_seconds() * 1_000_000), False))
    return out


def compute(
    view: FeatureView, names: Sequence[str], states: Sequence[dict[str, list[Any]] | None], at_us: int
) -> tuple[dict[str, list[Any]], list[int | None]]:
    """Each requested aggregate as of ``at_us`` for each state, and each state's last counted event time.

    Aggregations of one column over one window (and filter) share the values they read:
    sum, count and mean of a 7-day window slice the state once.
    """
    respect = view.late_events == "respect_created_time" and view.source.created_timestamp_field is not None
    bounds = lower_bounds(view, at_us)
    wanted = [(i, a, str(a.name)) for i, a in enumerate(view.aggregations) if a.name in names]
    if len(states) >= _NUMPY_FROM and all(_vectorizable(view, a) for _, a, _ in wanted):
        return _compute_numpy(view, wanted, states, at_us, respect, bounds)
    share = {i: (bounds[i], i if a.where else -1, a.column, a.function == "time_since_last") for i, a, _ in wanted}
    out: dict[str, list[Any]] = {n: [] for _, _, n in wanted}
    last: list[int | None] = []
    for st in states:
        if st is None:
            for _, a, n in wanted:
                out[n].append(a.empty)
            last.append(None)
            continue
        ev = st["e"]
        hi = bisect.bisect_right(ev, at_us)
        cr = st["c"] if respect else None
        if cr is not None:
            seen = [j for j in range(hi) if cr[j] is None or cr[j] <= at_us]
            last.append(ev[seen[-1]] if seen else None)
        else:
            last.append(ev[hi - 1] if hi else None)
        cache: dict[Any, Any] = {}
        for i, a, n in wanted:
            key = share[i]
            got = cache.get(key)
            if got is None:
                (lo, inclusive) = bounds[i]
                start = bisect.bisect_left(ev, lo) if inclusive else bisect.bisect_right(ev, lo)
                idx: Sequence[int] = range(start, hi)
                if cr is not None:
                    idx = [j for j in idx if cr[j] is None or cr[j] <= at_us]
                if a.where:
                    w = st[f"__w{i}"]
                    idx = [j for j in idx if w[j]]
                got = cache[key] = _values(a, st, idx, ev)
            out[n].append(_apply(a, got, at_us))
    return out, last


def _values(a: Aggregation, st: dict[str, list[Any]], idx: Sequence[int], ev: list[int]) -> Any:
    """What the aggregation reads: the non-null column values (or the event count), or the last event time."""
    if a.function == "time_since_last":
        if a.column is not None:
            col = st[a.column]
            idx = [j for j in idx if col[j] is not None]
        return ev[idx[-1]] if len(idx) else None
    if a.column is None:
        return len(idx)
    col = st[a.column]
    if isinstance(idx, range):
        values = col[idx.start : idx.stop]
        if None in values:
            values = [x for x in values if x is not None]
    else:
        values = [x for x in (col[j] for j in idx) if x is not None]
    return _Values(values)


class _Values(list):
    """A window's values, with their (exact) sum computed once for sum and mean alike."""

    _sum: Any = None

    def total(self) -> Any:
        if self._sum is None:
            self._sum = math.fsum(self) if isinstance(self[0], float) else sum(self)
        return self._sum


def _apply(a: Aggregation, values: Any, at_us: int) -> Any:
    f = a.function
    if f == "time_since_last":
        return None if values is None else (at_us - values) / 1e6
    if a.column is None:  # count of events
        return values
    if f == "count":
        return len(values)
    if f == "count_distinct":
        return len(set(values))
    if not values:
        return a.empty
    if f == "sum":
        return values.total()
    if f == "min":
        return min(values)
    if f == "max":
        return max(values)
    mean = values.total() / len(values)
    if f == "mean":
        return mean
    dof = len(values) - (1 if f == "stddev" else 0)
    if dof <= 0:
        return None
    return math.sqrt(math.fsum((x - mean) ** 2 for x in values) / dof)


# From this many entities a lookup computes with NumPy over all entities at once.
_NUMPY_FROM = 8
_NUMERIC = {"int64", "int32", "float64", "float32"}


def _vectorizable(view: FeatureView, a: Aggregation) -> bool:
    if a.function == "count_distinct":
        return False
    if a.column is None:
        return True
    dtype = next(f.dtype for f in view.schema if f.name == a.column)
    return dtype in _NUMERIC


def _compute_numpy(
    view: FeatureView, wanted: list[tuple[int, Aggregation, str]], states: Sequence[dict[str, list[Any]] | None],
    at_us: int, respect: bool, bounds: list[tuple[int, bool]],
) -> tuple[dict[str, list[Any]], list[int | None]]:
    """The same numbers as the per-entity loop, computed over every entity's events at once."""
    from itertools import chain

    import numpy as np

    where = [i for i, st in enumerate(states) if st is not None]
    present = [states[i] for i in where]
    p = len(present)
    lens = np.fromiter((len(st["e"]) for st in present), np.int64, p)  # type: ignore[index]
    total = int(lens.sum())
    seg = np.repeat(np.arange(p), lens)
    ev = np.fromiter(chain.from_iterable(st["e"] for st in present), np.int64, total)  # type: ignore[index]
    base = ev <= at_us
    if respect:
        cr = np.fromiter((-1 if c is None else c for c in chain.from_iterable(st["c"] for st in present)), np.int64, total)  # type: ignore[index]
        base &= cr <= at_us
    columns: dict[str, tuple[Any, Any, bool]] = {}

    def column(name: str) -> tuple[Any, Any, bool]:
        hit = columns.get(name)
        if hit is None:
            flat = list(chain.from_iterable(st[name] for st in present))  # type: ignore[index]
            is_int = next(f.dtype for f in view.schema if f.name == name).startswith("int")
            if None in flat:
                valid = np.fromiter((x is not None for x in flat), np.bool_, total)
                flat = [0 if x is None else x for x in flat]
            else:
                valid = np.ones(total, np.bool_)
            hit = columns[name] = (np.asarray(flat, dtype=np.float64), valid, is_int)
        return hit

    def per_entity(values: Any, reduce: Any, fill: float) -> Any:
        if total == 0:
            return np.full(p, fill)
        starts = np.minimum(np.concatenate(([0], np.cumsum(lens)[:-1])), total - 1)
        return reduce.reduceat(values, starts)

    out: dict[str, list[Any]] = {}
    counted_last = np.full(p, -1, np.int64)
    if total:
        counted_last = per_entity(np.where(base, ev, -1), np.maximum, -1)
    for i, a, name in wanted:
        lo, inclusive = bounds[i]
        mask = base & ((ev >= lo) if inclusive else (ev > lo))
        if a.where:
            mask &= np.fromiter(chain.from_iterable(st[f"__w{i}"] for st in present), np.bool_, total)  # type: ignore[index]
        vals: Any = None
        is_int = False
        if a.column is not None:
            vals, valid, is_int = column(a.column)
            mask = mask & valid
        n = np.bincount(seg, weights=mask, minlength=p).astype(np.int64)
        f = a.function
        if f == "time_since_last":
            last = per_entity(np.where(mask, ev, -1), np.maximum, -1)
            res: list[Any] = [None if c == 0 else (at_us - int(t)) / 1e6 for c, t in zip(n.tolist(), last.tolist(), strict=True)]
        elif a.column is None or f == "count":
            res = n.tolist()
        else:
            if f in ("min", "max"):
                fill = np.inf if f == "min" else -np.inf
                got = per_entity(np.where(mask, vals, fill), np.minimum if f == "min" else np.maximum, fill)
            else:
                sums = np.bincount(seg, weights=np.where(mask, vals, 0.0), minlength=p)
                if f == "sum":
                    got = sums
                else:
                    mean = np.divide(sums, n, out=np.zeros(p), where=n > 0)
                    if f == "mean":
                        got = mean
                    else:
                        dev = np.where(mask, vals - mean[seg], 0.0)
                        ss = np.bincount(seg, weights=dev * dev, minlength=p)
                        dof = n - (1 if f == "stddev" else 0)
                        got = np.sqrt(np.divide(ss, dof, out=np.zeros(p), where=dof > 0))
                        n = np.where(dof > 0, n, 0)
            as_int = is_int and f in ("sum", "min", "max")
            res = [a.empty if c == 0 else (int(v) if as_int else float(v)) for c, v in zip(n.tolist(), got.tolist(), strict=True)]
        full: list[Any] = [a.empty] * len(states)
        for j, v in zip(where, res, strict=True):
            full[j] = v
        out[name] = full
    last_out: list[int | None] = [None] * len(states)
    for j, t in zip(where, counted_last.tolist(), strict=True):
        last_out[j] = None if t < 0 else int(t)
    return out, last_out
