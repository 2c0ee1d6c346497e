"""Windowed aggregations online: per-entity window state in the online store, aggregates as of now.

The state of an entity is one value: a row log of its events of the view's longest
window, one JSON row per line (event time, created time, the input columns, each
``where`` condition's result), sorted by event and created time. Materialization
builds it for every entity from the offline rows in one DuckDB query, as one block
row holding all the events as columns (tiled views: one row per tile, see
:mod:`.aggregation_tiles`), so a lookup decodes a few lists per entity; a push merges
the new rows into the states of the entities it names with the store's
``merge_logs`` (one server-side script on Redis: one round trip, nothing else of the
history read) and drops the events that left the longest window. A lookup computes every
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
BLOCK = "cols"  # a row holding many events as columns: [newest event, "cols", [events], [created], [column]...]
_PAD = 18


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def reach_us(view: FeatureView) -> int:
    return int(max(reach(a) for a in view.aggregations).total_seconds() * 1_000_000)


def _version(as_of_us: int) -> str:
    return str(as_of_us).rjust(_PAD, "0") + "0" * _PAD


def row_names(view: FeatureView) -> list[str]:
    """The items of one row of a state, in order: event and created time (epoch µs), the input
    columns, each ``where`` condition's result."""
    return ["e", "c", *(f.name for f in view.schema), *(f"__w{i}" for i, a in enumerate(view.aggregations) if a.where)]


def state_sql(view: FeatureView, rows: str, where: str, as_of_us: int) -> str:
    """SQL giving (k, ver, v, exp): each entity's window state (a row log) as of ``as_of_us``, sorted by key."""
    keys = ", ".join(q(k) for k in view.join_keys)
    key_expr = (
        f"CAST({q(view.join_keys[0])} AS VARCHAR)"
        if len(view.join_keys) == 1
        else "concat_ws(chr(31), " + ", ".join(f"CAST({q(k)} AS VARCHAR)" for k in view.join_keys) + ")"
    )
    filters = [f"coalesce(CAST(({a.where}) AS BOOLEAN), false) AS __w{i}" for i, a in enumerate(view.aggregations) if a.where]
    items = [f"CAST(epoch_us({EVENT}) AS VARCHAR)", f"coalesce(CAST(epoch_us({CREATED}) AS VARCHAR), 'null')"]
    items += [f"coalesce(CAST(to_json({q(n)}) AS VARCHAR), 'null')" for n in row_names(view)[2:]]
    row = "'[' || " + " || ',' || ".join(items) + " || ']'"
    ttl_ms = None if view.ttl is None else int(view.ttl.total_seconds() * 1000)
    exp = "NULL::BIGINT" if ttl_ms is None else f"epoch_ms(max(__last)) + {ttl_ms}"
    low = as_of_us - reach_us(view)
    # exact windows: one block row per entity, its events as columns (one cheap decode per entity at lookup)
    order = f"ORDER BY {EVENT}, {CREATED} NULLS FIRST"
    lists = [f"list(epoch_us({EVENT}) {order})", f"list(epoch_us({CREATED}) {order})"]
    lists += [f"list({q(n)} {order})" for n in row_names(view)[2:]]
    block = f"""'[' || epoch_us(max({EVENT})) || ',"{BLOCK}",' || """ + " || ',' || ".join(
        f"CAST(to_json({x}) AS VARCHAR)" for x in lists
    ) + " || ']'"
    body = f"SELECT {keys}, epoch_us(max({EVENT})) AS __ord_e, -1 AS __ord_c, {block} AS __row, max({EVENT}) AS __last FROM r GROUP BY {keys}"
    if view.aggregations[0].interval is not None:  # tiles: what had arrived by as_of compacts into tile rows
        from keel.features.aggregation_tiles import tile_rows_sql

        at = f"make_timestamptz({as_of_us})"
        due = f"{EVENT} <= {at}"
        if view.late_events == "respect_created_time" and view.source.created_timestamp_field:
            due += f" AND coalesce({CREATED}, {EVENT}) <= {at}"
        body = f"""
            SELECT {keys}, epoch_us({EVENT}) AS __ord_e, coalesce(epoch_us({CREATED}), -1) AS __ord_c, {row} AS __row,
                   {EVENT} AS __last FROM r WHERE NOT ({due})
            UNION ALL {tile_rows_sql(view, f"(SELECT * FROM r WHERE {due})", keys, EVENT, CREATED)}"""
    return f"""
        WITH r AS (SELECT *{''.join(', ' + f for f in filters)} FROM {q(rows)}
                   WHERE {where} AND {EVENT} > make_timestamptz({low})
                     AND {' AND '.join(f'{q(k)} IS NOT NULL' for k in view.join_keys)})
        SELECT {key_expr} AS k, {_sql_text(_version(as_of_us))} AS ver,
               encode('[' || string_agg(__row, ',' || chr(10) ORDER BY __ord_e, __ord_c NULLS FIRST) || ']') AS v,
               {exp} AS exp
        FROM ({body}) GROUP BY {keys} ORDER BY k
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


def push_rows(view: FeatureView, store: KVStore, rows: dict[str, list[bytes]], now_us: int | None = None) -> int:
    """Merge new state rows (``encode_row``) into the states of their entities, in one store call
    (one round trip on Redis), dropping the events that left the longest window; returns keys written."""
    from keel.features.materialization import namespace

    if not rows:
        return 0
    now = time.time_ns() // 1_000 if now_us is None else now_us
    ttl_ms = None if view.ttl is None else int(view.ttl.total_seconds() * 1000)
    keys = list(rows)
    return store.merge_logs(namespace(view), keys, [rows[k] for k in keys], now - reach_us(view), _version(now), ttl_ms)


def encode_row(event_us: int, created_us: int | None, values: Sequence[Any]) -> bytes:
    import orjson

    return orjson.dumps([event_us, created_us, *values])


def push_events(con: duckdb.DuckDBPyConnection, view: FeatureView, rows: str, store: KVStore) -> int:
    """Merge pushed (transformed) rows into the states of their entities; returns keys written."""
    now_us = time.time_ns() // 1_000
    fresh = con.sql(state_sql(view, rows, "TRUE", now_us)).fetchall()
    return push_rows(view, store, {k: bytes(blob)[1:-1].split(b",\n") for k, _, blob, _ in fresh}, now_us)


def columnar(view: FeatureView, state: Any) -> dict[str, list[Any]] | None:
    """A stored state (block rows and event rows; older keels: a dict of lists) as a dict of lists sorted by time."""
    if state is None or isinstance(state, dict):
        return state
    names = row_names(view)
    blocks = [r for r in state if r[1] == BLOCK]
    rows = [r for r in state if r[1] != BLOCK]
    if not blocks:
        return dict(zip(names, map(list, zip(*rows, strict=True)), strict=True))
    out: dict[str, list[Any]] = {n: list(v) for n, v in zip(names, blocks[0][2:], strict=True)}
    if len(blocks) == 1 and not rows:
        return out
    for b in blocks[1:]:
        for n, v in zip(names, b[2:], strict=True):
            out[n].extend(v)
    for r in rows:
        for n, v in zip(names, r, strict=True):
            out[n].append(v)
    ev, cr = out["e"], out["c"]
    order = sorted(range(len(ev)), key=lambda j: (ev[j], -1 if cr[j] is None else cr[j]))
    return {n: [v[j] for j in order] for n, v in out.items()}


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
        elif agg.interval is not None:
            tile = int(agg.interval.total_seconds() * 1_000_000)
            out.append((at_us - at_us % tile - (agg.tiles - 1) * tile, True))
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
    if view.aggregations[0].interval is not None:
        from keel.features import aggregation_tiles

        return aggregation_tiles.compute(view, wanted, states, at_us, respect, bounds)
    states = [columnar(view, st) for st in states]
    if len(states) >= _NUMPY_FROM and all(_vectorizable(view, a) for _, a, _ in wanted):
        return _compute_numpy(view, wanted, states, at_us, respect, bounds)
    kinds = {"time_since_last": 1, "last_n": 2}
    share = {i: (bounds[i], i if a.where else -1, a.column, kinds.get(a.function, 0)) for i, a, _ in wanted}
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
    if a.function == "last_n":
        col, cr = st[str(a.column)], st["c"]
        return sorted(((ev[j], -1 if cr[j] is None else cr[j], col[j]) for j in idx if col[j] is not None), reverse=True)
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
    if f == "last_n":
        return [v for _, _, v in values[: a.n]] if values else a.empty
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
    if a.function in ("count_distinct", "last_n"):
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
