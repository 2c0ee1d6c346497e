"""The push hot path: a few rows of a view, online in well under a millisecond.

A push of a handful of rows (a stream consumer, a request handler) must not pay for
a DuckDB query: for a push of at most :data:`MAX_ROWS` rows, keel runs the view's
transformation (Python as it is; SQL compiled once to Arrow kernels by
:mod:`.push_sql`, or on a DuckDB connection kept for the view when it leaves the
compiled subset), checks and casts
the columns with Arrow, runs the view's compiled row-level contract checks, encodes
each key's value (or merges its window state) with orjson, and writes to the online
store in one call. The offline copy is queued and appended to the lake in batches
by a background thread (:func:`flush` writes it now; training sets and
materialization flush before they read). Everything else goes through the DuckDB
path in :mod:`.ingestion` (larger pushes), which computes the same values.
"""

from __future__ import annotations

import atexit
import threading
from typing import TYPE_CHECKING, Any

from keel.errors import ValidationError
from keel.features.definitions import FeatureView

if TYPE_CHECKING:
    import pyarrow as pa

    from keel.store.kv import KVStore

MAX_ROWS = 1_000
_ARROW = {
    "int64": "int64", "int32": "int32", "float64": "float64", "float32": "float32", "string": "string", "bool": "bool",
}


def eligible(view: FeatureView, rows: int) -> bool:
    return rows <= MAX_ROWS


def _typed(view: FeatureView, table: pa.Table) -> dict[str, list[Any]]:
    """The view's columns from the pushed rows, cast to the declared types; raises naming a bad column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    src = view.source
    where = f"FeatureView '{view.name}' (source '{src.name}')"
    out: dict[str, list[Any]] = {}
    names = set(table.column_names)
    for col in [src.timestamp_field, *([src.created_timestamp_field] if src.created_timestamp_field else [])]:
        typ = table.schema.field(col).type
        if not pa.types.is_timestamp(typ) or typ.tz is None:
            raise ValidationError(
                f"{where}: column '{col}' holds " + ("naive timestamps (no time zone)." if pa.types.is_timestamp(typ) else f"{typ}, not a timestamp."),
                hint="Store them timezone-aware in UTC, e.g. pandas: df[col] = df[col].dt.tz_localize('UTC').",
            )
        out[col] = pc.cast(table.column(col), pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_pylist()
    for k in view.join_keys:
        out[k] = table.column(k).to_pylist()
    for f in view.schema:
        if f.name not in names:
            raise ValidationError(f"{where}: feature '{f.name}' is not in the pushed rows.", hint="Push rows with every column of the source.")
        arr = table.column(f.name)
        target = _ARROW.get(f.dtype)
        try:
            if target is not None and str(arr.type) != target:
                if f.dtype.startswith("int") and pa.types.is_floating(arr.type):
                    raise pa.ArrowInvalid("floats for an integer feature")
                if f.dtype == "string" and not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
                    raise pa.ArrowInvalid("not strings")
                arr = pc.cast(arr, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise ValidationError(
                f"{where}: feature '{f.name}' is declared {f.dtype} but the pushed rows hold {table.column(f.name).type}.",
                hint=f"Push {f.dtype} values, or change Field('{f.name}', ...).",
            ) from None
        out[f.name] = arr.to_pylist()
    return out


def push_online(view: FeatureView, table: pa.Table, store: KVStore) -> int:
    """Check and write pushed rows to the online store without DuckDB; returns keys written."""
    import orjson

    from keel.features.materialization import KEY_SEP, namespace
    from keel.features.push_checks import check_pushed_rows

    if view.mode == "sql":
        from keel.features.push_sql import transform

        table = transform(view, table)
    elif view.transformation is not None:
        from keel.features.offline import _run_python_transform

        table = _run_python_transform(view, table)
    cols = _typed(view, table)
    src = view.source
    event = cols[src.timestamp_field]
    created = cols[src.created_timestamp_field] if src.created_timestamp_field else [None] * len(event)
    check_pushed_rows(view.name, table, src.timestamp_field)
    keys = view.join_keys
    if len(keys) == 1:
        key_text = [_text(v) for v in cols[keys[0]]]
    else:
        key_text = [KEY_SEP.join(_text(v) for v in vals) for vals in zip(*(cols[k] for k in keys), strict=True)]
    n = len(event)
    ok = [i for i in range(n) if all(cols[k][i] is not None for k in keys)]
    ns = namespace(view)
    ttl_ms = None if view.ttl is None else int(view.ttl.total_seconds() * 1000)
    names = [f.name for f in view.schema]
    if view.aggregations:
        return _push_states(view, cols, names, key_text, event, created, ok, store, ns, ttl_ms)
    latest: dict[str, int] = {}
    for i in ok:
        k = key_text[i]
        j = latest.get(k)
        if j is not None and (event[i], created[i] or 0) == (event[j], created[j] or 0):
            raise ValidationError(
                f"FeatureView '{view.name}' (source '{src.name}'): several pushed rows share entity key and event time: "
                f"{', '.join(keys)}={k.replace(KEY_SEP, ', ')}.",
                hint="Remove the duplicates or give them distinct created times.",
            )
        if j is None or (event[i], created[i] or 0) > (event[j], created[j] or 0):
            latest[k] = i
    out_keys = list(latest)
    rows = [latest[k] for k in out_keys]
    versions = [str(event[i]).rjust(18, "0") + str(created[i] or 0).rjust(18, "0") for i in rows]
    values = [orjson.dumps({"__e": event[i], **{c: cols[c][i] for c in names}}) for i in rows]
    exps = None if ttl_ms is None else [event[i] // 1000 + ttl_ms for i in rows]
    return store.put_many(ns, out_keys, versions, values, exps)


def _push_states(
    view: FeatureView, cols: dict[str, list[Any]], names: list[str], key_text: list[str], event: list[int],
    created: list[int | None], ok: list[int], store: KVStore, ns: str, ttl_ms: int | None,
) -> int:
    from keel.features.aggregation_online import encode_row, push_rows

    filters = _filters(view, cols, len(event))
    flags = list(filters.values())
    new: dict[str, list[bytes]] = {}
    for i in ok:
        new.setdefault(key_text[i], []).append(encode_row(event[i], created[i], [*(cols[c][i] for c in names), *(w[i] for w in flags)]))
    return push_rows(view, store, new)


def _filters(view: FeatureView, cols: dict[str, list[Any]], n: int) -> dict[str, list[bool]]:
    """Each aggregation filter's value per pushed row, as DuckDB defines it (:mod:`.push_sql` compiles the SQL once)."""
    out: dict[str, list[bool]] = {}
    exprs = {f"__w{i}": a.where for i, a in enumerate(view.aggregations) if a.where}
    if not exprs:
        return out
    import pyarrow as pa

    from keel.features.push_sql import run_select
    from keel.store.sql import quote_ident

    select = ", ".join(f"coalesce(CAST(({e}) AS BOOLEAN), false) AS {quote_ident(w)}" for w, e in exprs.items())
    batch = pa.table({c: cols[c] for c in (f.name for f in view.schema)})
    res = run_select(f"FeatureView '{view.name}' (aggregation filters)", f"SELECT {select} FROM source", batch)
    return {w: res.column(w).to_pylist() for w in exprs}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- the offline copy, appended in batches off the caller's path ------------------------
_queue: dict[str, list[pa.Table]] = {}
_lock = threading.Lock()
_wake = threading.Event()
_thread: threading.Thread | None = None
FLUSH_SECONDS = 0.5
errors: list[str] = []  # failed background appends: reported by flush()


def queue_offline(dataset: str, table: pa.Table) -> None:
    global _thread
    with _lock:
        _queue.setdefault(dataset, []).append(table)
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run, name="keel-push-offline", daemon=True)
            _thread.start()


def _run() -> None:
    while True:
        _wake.wait(FLUSH_SECONDS)
        _wake.clear()
        try:
            flush()
        except Exception as exc:  # kept and raised by the next flush() a caller makes
            errors.append(str(exc))


def flush() -> int:
    """Append every queued pushed row to the lake now; returns rows written.

    Raises :class:`~keel.errors.StoreError` when an earlier background append failed
    (its rows stay queued and are retried here).
    """
    import pyarrow as pa

    from keel.store.lake import get_lake

    with _lock:
        pending = {k: v for k, v in _queue.items() if v}
        _queue.clear()
    written = 0
    for dataset, parts in pending.items():
        table = pa.concat_tables(parts, promote_options="default")
        try:
            get_lake().append(dataset, table)
        except Exception:
            with _lock:
                _queue.setdefault(dataset, [])[:0] = parts  # keep them, in order
            raise
        written += table.num_rows
    if errors:
        from keel.errors import StoreError

        failed = errors[:]
        errors.clear()
        raise StoreError(f"{len(failed)} background append(s) of pushed rows failed: {failed[-1]}", hint="Check the lake (KEEL_LAKE_URI).")
    return written


def pending_rows() -> int:
    with _lock:
        return sum(t.num_rows for parts in _queue.values() for t in parts)


atexit.register(lambda: flush() if pending_rows() else None)
