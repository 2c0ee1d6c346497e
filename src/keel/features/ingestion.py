"""Push ingestion: fresh rows go to the online store and are appended to the offline store.

Pushed rows have the *source's* shape (before the view's transformation); the
same transformation runs on them as on the source, so a pushed value and a
materialized one are computed by one definition. The offline copy is a Parquet
part in the lake (``features/push/<view>``) that training sets read with the source.
The view's row-level contract checks run on the transformed rows before anything
is written (:mod:`.push_checks`). For a view with aggregations a push adds the
rows to each entity's window state, without reading the rest of its history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from keel.errors import ValidationError
from keel.features.definitions import FeatureView
from keel.features.loader import Definitions, as_definitions
from keel.features.materialization import write_online
from keel.features.offline import (
    _describe,
    _source_sql,
    check_duplicates,
    connect,
    push_dataset,
    q,
    view_relation,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from keel.store.kv import KVStore


@dataclass
class PushResult:
    view: str
    rows: int
    keys_written: int
    offline_path: str | None


def _as_table(view: FeatureView, df: Any) -> pa.Table:
    import pandas as pd
    import pyarrow as pa

    try:
        if isinstance(df, pd.DataFrame):
            table = pa.Table.from_pandas(df, preserve_index=False)
        elif isinstance(df, pa.Table):
            table = df
        elif isinstance(df, dict):
            table = pa.Table.from_pydict({k: v if isinstance(v, list | tuple) else [v] for k, v in df.items()})
        elif isinstance(df, list) and all(isinstance(r, dict) for r in df):
            table = pa.Table.from_pylist(df)
        else:
            raise ValidationError(
                f"push() needs a pandas DataFrame, an Arrow table, a dict of columns or a list of row dicts, got {type(df).__name__}."
            )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise ValidationError(f"push to '{view.name}': the rows do not form a table ({exc}).",
                              hint="Give every row the same columns, each column one type.") from None
    created = view.source.created_timestamp_field
    if created and created not in table.column_names:
        now = pa.array([datetime.now(UTC)] * table.num_rows, type=pa.timestamp("us", tz="UTC"))
        table = table.append_column(created, now)
    # timestamps as microseconds UTC, the lake's one unit
    for i, f in enumerate(table.schema):
        if pa.types.is_timestamp(f.type) and f.type.tz is not None:
            table = table.set_column(i, f.name, table.column(i).cast(pa.timestamp("us", tz="UTC")))
    return table


def push(
    view: str | FeatureView,
    df: Any,
    *,
    to: str = "online_and_offline",
    definitions: Definitions | str | None = None,
    store: KVStore | None = None,
) -> PushResult:
    """Write rows of ``view``'s source shape to the online store and append them offline.

    ``to`` is ``online_and_offline`` (default), ``online`` or ``offline``. A missing
    created-time column is filled with the push time. A small push takes the hot path
    (:mod:`.fast_push`; a SQL transformation compiled by :mod:`.push_sql`): no DuckDB query, and
    the offline copy is appended in the background within a second
    (``keel.features.fast_push.flush()`` writes it at once).

    Example::

        keel.push("usage", pd.DataFrame({"customer_id": [42], "event_timestamp": [now], ...}))
    """
    from keel.store.kv import get_kv_store
    from keel.store.lake import get_lake

    if to not in ("online_and_offline", "online", "offline"):
        raise ValidationError(f"push(to={to!r}) is not valid.", hint="Use 'online_and_offline', 'online' or 'offline'.")
    defs = as_definitions(definitions)
    fv = defs.view(view if isinstance(view, str) else view.name)
    table = _as_table(fv, df)
    expected = _source_columns(fv)
    missing = [c for c in expected if c not in table.column_names]
    if missing:
        raise ValidationError(
            f"push to '{fv.name}': the rows lack column '{missing[0]}' of source '{fv.source.name}'.",
            hint=f"Push rows shaped like the source (columns {', '.join(expected)}); the view's transformation runs on them.",
        )
    table = _parse_times(fv, table, expected)
    from keel.features import fast_push

    if to != "offline" and fast_push.eligible(fv, table.num_rows):
        written = fast_push.push_online(fv, table, store or get_kv_store())
        path = None
        if to != "online":
            fast_push.queue_offline(push_dataset(fv), table)
            path = get_lake().location(push_dataset(fv))
        return PushResult(fv.name, table.num_rows, written, path)
    con = connect()
    rows = view_relation(con, fv, extra_rows=table)  # validates columns and types, runs the transformation
    if not fv.aggregations:  # events may tie; a row view's latest value may not
        check_duplicates(con, fv, rows, by_created=fv.source.created_timestamp_field is not None)
    from keel.features.push_checks import check_pushed_rows

    check_pushed_rows(fv.name, con.sql(f"SELECT * FROM {q(rows)}").to_arrow_table(), fv.source.timestamp_field)
    path = None
    if to != "online":
        path = str(get_lake().append(push_dataset(fv), table))
    written = 0
    if to != "offline":
        kv = store or get_kv_store()
        if fv.aggregations:
            from keel.features.aggregation_online import push_events

            written = push_events(con, fv, rows, kv)
        else:
            written = write_online(con, fv, rows, kv)
    con.close()
    return PushResult(fv.name, table.num_rows, written, path)


def _parse_times(fv: FeatureView, table: pa.Table, expected: dict[str, str]) -> pa.Table:
    """Text in columns the source holds as times (rows pushed as JSON) parsed as ISO-8601, UTC when no zone is given."""
    import pandas as pd
    import pyarrow as pa

    for name, dtype in expected.items():
        if not dtype.upper().startswith(("TIMESTAMP", "DATE")) or name not in table.column_names:
            continue
        col = table.column(name)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            continue
        try:
            parsed = pd.to_datetime(pd.Series(col.to_pylist(), dtype="object"), utc=True, format="ISO8601")
        except (ValueError, TypeError) as exc:
            raise ValidationError(f"push to '{fv.name}': column '{name}' holds a value that is not an ISO-8601 time ({exc}).",
                                  hint="Write times as e.g. 2026-01-31T12:00:00Z.") from None
        table = table.set_column(table.column_names.index(name), name, pa.array(parsed, type=pa.timestamp("us", tz="UTC")))
    return table


_columns: dict[str, tuple[tuple[Any, ...], dict[str, str]]] = {}


def _source_columns(fv: FeatureView) -> dict[str, str]:
    """The source's columns and types, read once per version of its files (a push must not read the source)."""
    from keel.features.offline import source_files

    files = source_files(fv.source)
    stamp: tuple[Any, ...] = (
        (fv.source.spec()["path"], *((str(p), p.stat().st_mtime_ns) for p in files)) if files else (id(fv.source.df), fv.source.query)
    )
    hit = _columns.get(fv.source.name)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    con = connect()
    cols = _describe(con, f"SELECT * FROM {_source_sql(con, fv.source, fv.name)}")
    con.close()
    _columns[fv.source.name] = (stamp, cols)
    return cols
