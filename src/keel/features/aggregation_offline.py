"""Windowed aggregations offline: every aggregate of a view as of every entity row, in DuckDB.

One range join per view: each entity row meets the events of its key whose event
time is in the longest window ending at the row's timestamp (and, with
``respect_created_time``, that had arrived by then); one hash aggregate per entity
row then computes every aggregate with ``FILTER`` clauses for the shorter windows
and the ``where`` conditions. DuckDB runs the join and the aggregate out of core
when they do not fit in memory. Window bounds are computed once per entity row:
``t - window`` for sliding windows, the local midnight ``N - 1`` days before the
local day of ``t`` (in the aggregation's timezone) for calendar windows, the start of
the tile ``N - 1`` tiles before the tile of ``t`` for tiled windows (the same bound the
online path computes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel.features.aggregations import Aggregation, reach
from keel.features.definitions import DTYPES, FeatureView
from keel.store.lake import sql_string

if TYPE_CHECKING:
    import duckdb

ROW = "__keel_row"
EVENT = "__keel_event"
CREATED = "__keel_created"


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def lower_bound_sql(agg: Aggregation, t: str) -> tuple[str, str]:
    """(SQL of the window's lower bound as of timestamp expression ``t``, comparison operator)."""
    if agg.calendar:
        tz = sql_string(str(agg.timezone))
        return (
            f"timezone({tz}, date_trunc('day', timezone({tz}, {t})) - INTERVAL {agg.days - 1} DAY)",
            ">=",
        )
    if agg.interval is not None:
        tile = int(agg.interval.total_seconds() * 1_000_000)
        return f"make_timestamptz(epoch_us({t}) - epoch_us({t}) % {tile} - {(agg.tiles - 1) * tile})", ">="
    return f"{t} - to_microseconds({int(agg.span.total_seconds() * 1_000_000)})", ">"


def _bound_key(agg: Aggregation) -> str:
    if agg.calendar:
        return f"cal:{agg.timezone}:{agg.days}"
    if agg.interval is not None:
        return f"tile:{agg.interval.total_seconds()}:{agg.tiles}"
    return f"sl:{agg.span.total_seconds()}"


def aggregate_sql(
    view: FeatureView, rows: str, entity: str, timestamp_column: str, *, respect_created: bool, include_event_time: bool = False
) -> str:
    """SQL giving (__keel_row, one column per aggregation[, __keel_event]) for every row of ``entity``."""
    aggs = view.aggregations
    bounds: dict[str, str] = {}
    ops: dict[str, str] = {}
    for agg in aggs:
        key = _bound_key(agg)
        if key not in bounds:
            bounds[key], ops[key] = lower_bound_sql(agg, f"e.{q(timestamp_column)}")
    names = {k: f"__lb{i}" for i, k in enumerate(bounds)}
    span_us = int(max(reach(a) for a in aggs).total_seconds() * 1_000_000)
    keys = view.join_keys
    on = [f"e.{q(k)} = ev.{q(k)}" for k in keys]
    on += [f"ev.{EVENT} <= e.__t", f"ev.{EVENT} > e.__t - to_microseconds({span_us})"]
    if respect_created and view.late_events == "respect_created_time" and view.source.created_timestamp_field:
        on.append(f"coalesce(ev.{CREATED}, ev.{EVENT}) <= e.__t")
    filters = [f"coalesce(CAST(({a.where}) AS BOOLEAN), false) AS __w{i}" for i, a in enumerate(aggs) if a.where]
    dtypes = {f.name: f.dtype for f in view.schema}
    outs = []
    for i, agg in enumerate(aggs):
        key = _bound_key(agg)
        cond = f"ev.{EVENT} {ops[key]} e.{names[key]}" + (f" AND ev.__w{i}" if agg.where else "")
        col = f"ev.{q(agg.column)}" if agg.column else f"ev.{EVENT}"
        f = agg.function
        if f == "count":
            expr = f"count({col}) FILTER (WHERE {cond})"
        elif f == "sum":
            expr = f"sum({col}) FILTER (WHERE {cond})"
        elif f == "mean":
            expr = f"avg({col}) FILTER (WHERE {cond})"
        elif f in ("min", "max"):
            expr = f"{f}({col}) FILTER (WHERE {cond})"
        elif f == "stddev":
            expr = f"stddev_samp({col}) FILTER (WHERE {cond})"
        elif f == "stddev_pop":
            expr = f"stddev_pop({col}) FILTER (WHERE {cond})"
        elif f == "count_distinct":
            expr = f"count(DISTINCT {col}) FILTER (WHERE {cond})"
        elif f == "last_n":
            newest = f"ev.{EVENT} DESC, ev.{CREATED} DESC NULLS LAST, {col} DESC"
            expr = f"list({col} ORDER BY {newest}) FILTER (WHERE {cond} AND {col} IS NOT NULL)[1:{agg.n}]"
        else:  # time_since_last
            last = f"max(ev.{EVENT}) FILTER (WHERE {cond}{f' AND {col} IS NOT NULL' if agg.column else ''})"
            expr = f"(epoch_us(e.__t) - epoch_us({last})) / 1e6"
        if agg.empty == 0:
            expr = f"coalesce({expr}, 0)"
        dtype = agg.output_dtype(None if agg.column is None else dtypes[agg.column])
        out_type = DTYPES[dtype[5:-1]] + "[]" if dtype.startswith("list<") else DTYPES[dtype]
        outs.append(f"CAST({expr} AS {out_type}) AS {q(str(agg.name))}")
    if include_event_time:
        outs.append(f"max(ev.{EVENT}) AS {EVENT}")
    entity_cols = ", ".join([ROW, *(q(k) for k in keys), f"{q(timestamp_column)} AS __t", q(timestamp_column)])
    lbs = ", ".join(f"{sql} AS {names[k]}" for k, sql in bounds.items())
    ev_cols = ", ".join([*(q(k) for k in keys), EVENT, CREATED, *(q(f.name) for f in view.schema), *filters])
    return f"""
        WITH e AS (SELECT {entity_cols}, {lbs} FROM {q(entity)} e),
             ev AS (SELECT {ev_cols} FROM {q(rows)})
        SELECT e.{ROW}, {', '.join(outs)}
        FROM e LEFT JOIN ev ON {' AND '.join(on)}
        GROUP BY e.{ROW}, e.__t, {', '.join(f'e.{n}' for n in names.values())}
    """


def aggregate(
    con: duckdb.DuckDBPyConnection, view: FeatureView, rows: str, entity: str, timestamp_column: str, *,
    respect_created: bool, include_event_time: bool = False,
) -> str:
    """Create a temp table of ``aggregate_sql``; returns its name."""
    name = f"agg_{view.name}"
    sql = aggregate_sql(view, rows, entity, timestamp_column, respect_created=respect_created, include_event_time=include_event_time)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {q(name)} AS {sql}")
    return name
