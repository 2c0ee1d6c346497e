"""Materialization: the latest value of each entity, from the offline rows into the online store.

Each key's value is one JSON blob (every feature of the view plus the event and
created times), versioned by (event time, created time): a write lands only if
it is not older than what the store holds, so running a materialization twice
changes nothing and a late or replayed batch never moves a key backwards.
Incremental runs start from a stored watermark: the created (ingestion) time
when the source has one, so late-arriving rows are picked up, else event time.
A backfill written with created times before the watermark is picked up too: every
row of a source file modified since the last run is read again (a SQL or DataFrame
source, which has no such record, is read whole).

Values live under the view's *version*: the namespace ``fv:<view>:<hash>`` names
the hash of what decides the values (keys, schema, source, transformation,
aggregations), so a new definition is materialized beside the old one and a model
pinned to an older definitions version keeps reading its own values until that
version is retired (:func:`retire`). With a TTL, each value expires in the store
itself at event time + TTL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from keel.errors import ValidationError
from keel.features.definitions import FeatureView, content_hash
from keel.features.loader import Definitions, as_definitions
from keel.features.offline import (
    CREATED,
    EVENT,
    FILE,
    _check_contracts,
    connect,
    q,
    source_files,
    view_relation,
)
from keel.store.lake import sql_string
from keel.store.metadata import get_metadata_store, now_ms
from keel.store.schema.features import feature_materializations

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from keel.store.kv import KVStore

KEY_SEP = "\x1f"
_BATCH = 100_000
Progress = Callable[[str, int, int], None]  # (view, keys done, keys total)


# Spec fields that decide a view's online values; description, owner, tags and TTL do not.
_VALUE_FIELDS = ("join_keys", "schema", "source", "transformation", "mode", "aggregations", "late_events")


def value_hash(spec: dict[str, Any]) -> str:
    """The hash of the parts of a view's spec that decide its values (12 hex digits)."""
    part = {k: spec.get(k) for k in _VALUE_FIELDS}
    part["schema"] = [{"name": f["name"], "dtype": f["dtype"]} for f in spec.get("schema", [])]
    return content_hash(part)[:12]


def namespace(view: FeatureView) -> str:
    """The online namespace of this version of ``view``: ``fv:<name>:<value hash>``."""
    ns = view.__dict__.get("_online_ns")
    if ns is None:
        ns = view.__dict__["_online_ns"] = f"fv:{view.name}:{value_hash(view.spec())}"
    return str(ns)


def encode_sql(view: FeatureView, rows: str, where: str = "TRUE") -> str:
    """SQL giving (k, ver, v) for the latest row per key of ``rows`` matching ``where``, sorted by key.

    One hash aggregate finds each key's latest (event time, created time); a hash join
    picks those rows (unique: duplicates were rejected before); only they are encoded as
    JSON. Sorted keys make the online store's B-tree inserts sequential.
    """
    keys = ", ".join(q(k) for k in view.join_keys)
    key_expr = (
        f"CAST(r.{q(view.join_keys[0])} AS VARCHAR)"
        if len(view.join_keys) == 1
        else "concat_ws(chr(31), " + ", ".join(f"CAST(r.{q(k)} AS VARCHAR)" for k in view.join_keys) + ")"
    )
    order = f"epoch_us({EVENT})::HUGEINT * 10000000000000000000 + coalesce(epoch_us({CREATED}), 0)"
    ttl_ms = None if view.ttl is None else int(view.ttl.total_seconds() * 1000)
    exp = "NULL::BIGINT" if ttl_ms is None else f"epoch_ms(r.{EVENT}) + {ttl_ms}"
    fields = ", ".join(f"{q(f.name)} := r.{q(f.name)}" for f in view.schema)
    filt = f"{where} AND " + " AND ".join(f"{q(k)} IS NOT NULL" for k in view.join_keys)
    on = " AND ".join(f"r.{q(k)} = w.{q(k)}" for k in view.join_keys)
    return f"""
        WITH r AS (SELECT *, {order} AS __ord FROM {q(rows)} WHERE {filt}),
             w AS (SELECT {keys}, max(__ord) AS __ord FROM r GROUP BY {keys})
        SELECT {key_expr} AS k,
               lpad(CAST(epoch_us(r.{EVENT}) AS VARCHAR), 18, '0')
                 || lpad(CAST(coalesce(epoch_us(r.{CREATED}), 0) AS VARCHAR), 18, '0') AS ver,
               encode(CAST(to_json(struct_pack(__e := epoch_us(r.{EVENT}), {fields})) AS VARCHAR)) AS v,
               {exp} AS exp
        FROM r JOIN w ON {on} AND r.__ord = w.__ord
        ORDER BY k
    """


def write_online(
    con: duckdb.DuckDBPyConnection,
    view: FeatureView,
    rows: str,
    store: KVStore,
    where: str = "TRUE",
    on_progress: Progress | None = None,
) -> int:
    """Write the latest row per key into the online store (expiring at event time + TTL); returns keys written."""
    reader = con.sql(encode_sql(view, rows, where)).to_arrow_reader(_BATCH)
    ns = namespace(view)
    done = written = 0
    total = -1
    previous: str | None = None
    for batch in reader:
        keys = batch.column(0).to_pylist()
        _reject_ambiguous(view, batch, previous)
        previous = keys[-1] if keys else previous
        vers = batch.column(1).to_pylist()
        vals = batch.column(2).to_pylist()
        exps = None if view.ttl is None else batch.column(3).to_pylist()
        written += store.put_many(ns, keys, vers, vals, exps)
        done += len(keys)
        if on_progress is not None:
            on_progress(view.name, done, total)
    return written


def _reject_ambiguous(view: FeatureView, batch: pa.RecordBatch, previous: str | None) -> None:
    """Keys arrive sorted: two equal neighbours mean two rows tie as a key's latest value."""
    import pyarrow.compute as pc

    col = batch.column(0)
    dup = None
    if previous is not None and len(col) and col[0].as_py() == previous:
        dup = previous
    elif len(col) > 1:
        same = pc.equal(col.slice(1), col.slice(0, len(col) - 1))
        if pc.any(same).as_py():
            dup = col[int(pc.index(same, True).as_py()) + 1].as_py()
    if dup is not None:
        raise ValidationError(
            f"FeatureView '{view.name}' (source '{view.source.name}'): several rows tie as the latest value of "
            f"{', '.join(view.join_keys)}={dup.replace(KEY_SEP, ', ')} (same event time"
            + (" and created time)." if view.source.created_timestamp_field else ", no created_timestamp_field)."),
            hint="Remove the duplicates, or give the source a created_timestamp_field so the latest ingested row wins.",
        )


@dataclass
class ViewResult:
    view: str
    rows_read: int
    keys_written: int
    start: datetime | None
    end: datetime
    seconds: float
    reread: list[str] = field(default_factory=list)  # files modified since the last run, read whole again


@dataclass
class MaterializeResult:
    views: list[ViewResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows_read(self) -> int:
        return sum(v.rows_read for v in self.views)

    @property
    def keys_written(self) -> int:
        return sum(v.keys_written for v in self.views)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_read": self.rows_read, "keys_written": self.keys_written, "seconds": round(self.seconds, 3),
            "views": [dict(v.__dict__, seconds=round(v.seconds, 3)) for v in self.views],
        }


def _utc(value: datetime | None, what: str) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValidationError(f"{what} {value.isoformat()} has no time zone.", hint="Pass a UTC-aware datetime, e.g. 2024-05-01T00:00:00+00:00.")
    return value.astimezone(UTC)


def watermarks() -> dict[str, dict[str, Any]]:
    """{view: {"watermark_ms", "end_ms", "keys_written", "updated_ms", ...}} of past materializations."""
    with get_metadata_store().read() as conn:
        return {r["view"]: dict(r) for r in conn.execute(sa.select(feature_materializations)).mappings()}


def materialize(
    views: Sequence[str] | None = None,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    incremental: bool = False,
    definitions: Definitions | str | None = None,
    store: KVStore | None = None,
    on_progress: Progress | None = None,
) -> MaterializeResult:
    """Write the latest feature values per entity into the online store.

    Without ``start``/``end`` every row up to now; ``incremental=True`` starts where
    the last run of each view stopped. Idempotent.

    Example::

        keel.materialize(incremental=True)
    """
    from keel.features.registry import pinned
    from keel.store.kv import get_kv_store

    if incremental and start is not None:
        raise ValidationError("Pass either start= or incremental=True, not both.", hint="Incremental runs start at the stored watermark.")
    defs = as_definitions(definitions)
    pin = pinned(defs)
    store = store or get_kv_store()
    start, end = _utc(start, "start"), _utc(end, "end") or datetime.now(UTC)
    if start is not None and start >= end:
        raise ValidationError(f"start {start.isoformat()} is not before end {end.isoformat()}.")
    chosen = [defs.view(v) for v in views] if views else [v for v in defs.views.values() if v.online]
    marks = watermarks() if incremental else {}
    result = MaterializeResult()
    t_all = time.perf_counter()
    for view in chosen:
        t0 = time.perf_counter()
        read_from = now_ms()
        con = connect()
        last = marks.get(view.name) if incremental else None
        changed: list[Path | str] = [] if last is None else list(_changed_files(view, last))
        files = bool(changed) and (view.transformation is None or view.mode == "sql")
        rows = view_relation(con, view, with_files=files)
        _check_contracts(view.name, con.table(rows), "materialize")
        has_created = view.source.created_timestamp_field is not None
        mark_col = CREATED if has_created else EVENT
        end_us = int(end.timestamp() * 1_000_000)
        where = [f"{EVENT} <= make_timestamptz({end_us})", f"{mark_col} <= make_timestamptz({end_us})"]
        view_start = start
        if last is not None:
            view_start = datetime.fromtimestamp(last["watermark_ms"] / 1000, UTC)
            fresh = f"{mark_col} > make_timestamptz({last['watermark_ms'] * 1000})"
            if view.source.path is None:
                changed = ["<whole source>"]  # no file times to tell a backfill by: read it all
            elif changed and FILE in con.table(rows).columns:
                listed = ", ".join(sql_string(str(p)) for p in changed)
                where.append(f"({fresh} OR {FILE} IN ({listed}))")
            elif not changed:
                where.append(fresh)
        elif start is not None:
            where.append(f"{EVENT} >= make_timestamptz({int(start.timestamp() * 1_000_000)})")
        if view.aggregations:
            # a window's state needs every event of the longest window, not only the new ones:
            # rebuild the state of every entity with events in it (a backfill included)
            from keel.features.aggregation_online import reach_us, write_states

            news = " AND ".join(where)
            where = where[:2]
            cond = " AND ".join(where)
            low = f"{EVENT} > make_timestamptz({end_us - reach_us(view)})"
            if last is not None and not con.sql(f"SELECT 1 FROM {q(rows)} WHERE {news} LIMIT 1").fetchall():
                read = written = 0  # no new or backfilled event since the last run: every state is current
            else:
                read = int(con.sql(f"SELECT count(*) FROM {q(rows)} WHERE {cond} AND {low}").fetchall()[0][0])
                written = write_states(con, view, rows, store, cond, end_us)
        else:
            cond = " AND ".join(where)
            read = int(con.sql(f"SELECT count(*) FROM {q(rows)} WHERE {cond}").fetchall()[0][0])
            written = write_online(con, view, rows, store, cond, on_progress)
        con.close()
        _save_watermark(view, pin.version_of("feature_view", view.name) or 0, view_start, end, read, written, read_from)
        result.views.append(
            ViewResult(view.name, read, written, view_start, end, time.perf_counter() - t0, [str(p) for p in changed])
        )
    result.seconds = time.perf_counter() - t_all
    return result


# Files modified this long before the last run started reading count as changed too
# (coarse file-system timestamps). Reading a file again is harmless (writes are
# idempotent); missing one is not. Rows from before read_from_ms existed fall back
# to a minute before the run ended.
_MTIME_SLACK_MS = 2_000


def _changed_files(view: FeatureView, last: dict[str, Any]) -> list[Path]:
    """Source files modified since the last run of ``view`` started reading."""
    since = last.get("read_from_ms")
    cutoff = int(since) - _MTIME_SLACK_MS if since is not None else int(last["updated_ms"]) - 60_000
    return [p for p in source_files(view.source) if p.stat().st_mtime_ns // 1_000_000 > cutoff]


def retire(view: str, version: int, *, store: KVStore | None = None) -> str:
    """Delete the online values of an applied version of ``view``; returns its namespace.

    The version the current definitions use cannot be retired (materialize and lookups use it).

    Example::

        keel.features.materialization.retire("usage", 3)
    """
    from keel.errors import ConflictError
    from keel.features.registry import get_object
    from keel.store.kv import get_kv_store

    obj = get_object(view, "feature_view", version)
    ns = f"fv:{view}:{value_hash(obj['spec'])}"
    try:
        from keel.features.loader import load_definitions

        current = load_definitions().views.get(view)
    except Exception:  # the project module may not load; retiring an old version still works
        current = None
    if current is not None and namespace(current) == ns:
        raise ConflictError(
            f"Version {version} of feature view '{view}' holds the same values as the current definition; it cannot be retired.",
            hint="Retire versions that the current features module no longer uses.",
        )
    (store or get_kv_store()).drop(ns)
    return ns


def _save_watermark(
    view: FeatureView, version: int, start: datetime | None, end: datetime, read: int, written: int, read_from_ms: int
) -> None:
    end_ms = int(end.timestamp() * 1000)
    values = {
        "view_version": version, "watermark_ms": end_ms, "start_ms": None if start is None else int(start.timestamp() * 1000),
        "end_ms": end_ms, "rows_read": read, "keys_written": written, "updated_ms": now_ms(), "read_from_ms": read_from_ms,
    }
    from keel.store.metadata import upsert

    with get_metadata_store().write() as conn:
        upsert(conn, feature_materializations, {"view": view.name, **values}, ["view"])
