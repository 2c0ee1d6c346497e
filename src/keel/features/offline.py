"""The offline path: feature view relations in DuckDB and point-in-time correct training sets.

For each entity row (join keys + event timestamp ``t``) and each feature view, the
value is the row with the latest event time ``<= t`` (ties broken by created time)
and, when the source has a created time, ingested by ``t`` too, so a training set
holds only what serving could have seen at ``t``. A value whose event time is older
than ``t - ttl`` is null. Every input row gives exactly one output row, in order.

The join is DuckDB's ``ASOF LEFT JOIN`` on the join keys and a *visibility time*:
the event time, or, when created times count, a "timeline" in which each row
appears at ``max(event, created)`` only if it then becomes the latest visible row
(a row that is not the latest when it becomes visible never will be).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import ValidationError
from keel.features.definitions import DTYPES, FeatureView, Source
from keel.features.loader import Definitions, Selection, as_definitions
from keel.store.sql import quote_ident, sql_string

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    import pyarrow as pa

ROW = "__keel_row"
EVENT = "__keel_event"
CREATED = "__keel_created"
VISIBLE = "__keel_visible"
FILE = "__keel_file"

_INTS = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "HUGEINT"}
_FLOATS = {"FLOAT", "DOUBLE"}
_ACCEPT: dict[str, set[str]] = {
    "int64": _INTS,
    "int32": _INTS,
    "float64": _FLOATS | _INTS,
    "float32": _FLOATS | _INTS,
    "string": {"VARCHAR"},
    "bool": {"BOOLEAN"},
    "timestamp": {"TIMESTAMP WITH TIME ZONE"},
}


def _check_contracts(target_name: str, relation: duckdb.DuckDBPyRelation, stage: str) -> None:
    """Data contracts attached to a feature view (``contracts/<view>.yaml`` or keel.yaml
    ``contracts:``) check its rows before a training set is built from it and before it
    is materialized; an error-level failure raises ContractViolation and nothing is built."""
    from keel.contracts.targets import attached_contracts

    if not attached_contracts(target_name):
        return
    from keel.contracts import enforce

    enforce(target_name, relation.arrow(), stage=stage)


q = quote_ident  # a quoted DuckDB identifier


_database: duckdb.DuckDBPyConnection | None = None


def connect() -> duckdb.DuckDBPyConnection:
    """A fresh DuckDB session (its own temp views) on one shared in-memory database.

    Opening a database costs tens of milliseconds; a cursor on the shared one almost nothing.
    """
    import duckdb

    global _database
    if _database is None:
        _database = duckdb.connect()
    con = _database.cursor()
    con.execute("SET TimeZone = 'UTC'")
    return con


def push_dataset(view: FeatureView) -> str:
    """The lake dataset holding rows pushed to ``view`` (source-shaped, before transformation)."""
    return f"features/push/{view.name}"


# -- reading sources ------------------------------------------------------------------
def source_files(source: Source) -> list[Path]:
    """The files a path source reads (empty for SQL and DataFrame sources)."""
    path = _source_path(source)
    if path is None:
        return []
    return sorted(path.glob(f"**/*.{source.file_format}")) if path.is_dir() else [path]


def _source_path(source: Source) -> Path | None:
    from keel.config import settings

    if source.path is None:
        return None
    path = Path(source.path)
    if not path.is_absolute():
        path = settings().root / path
    if not path.exists():
        raise ValidationError(
            f"Source '{source.name}': {path} does not exist.",
            hint="Fix path= (relative paths are relative to the project root) or create the file.",
        )
    return path


def _source_sql(con: duckdb.DuckDBPyConnection, source: Source, tag: str, *, with_files: bool = False) -> str:
    path = _source_path(source)
    if path is not None:
        pattern = str(path / "**" / f"*.{source.file_format}") if path.is_dir() else str(path)
        extra = f", filename = {sql_string(FILE)}" if with_files else ""
        if source.file_format == "csv":
            return f"read_csv_auto({sql_string(pattern)}, union_by_name = true{extra})"
        return f"read_parquet({sql_string(pattern)}, union_by_name = true{extra})"
    if source.df is not None:
        import pyarrow as pa

        table = source.df if isinstance(source.df, pa.Table) else pa.Table.from_pandas(source.df, preserve_index=False)
        con.register(f"__df_{tag}", table)
        return f"__df_{tag}"
    import pandas as pd
    import sqlalchemy as sa

    engine = sa.create_engine(str(source.connection))
    try:
        with engine.connect() as conn:
            frame = pd.read_sql(sa.text(str(source.query)), conn)
    except sa.exc.SQLAlchemyError as exc:
        raise ValidationError(
            f"Source '{source.name}': the query failed: {str(exc).splitlines()[0]}", hint="Fix the query or the connection."
        ) from None
    finally:
        engine.dispose()
    con.register(f"__sql_{tag}", frame)
    return f"__sql_{tag}"


def view_relation(
    con: duckdb.DuckDBPyConnection, view: FeatureView, *, extra_rows: pa.Table | None = None, with_files: bool = False
) -> str:
    """Create a temp view of ``view``'s rows (source + pushed rows, transformed, typed); returns its name.

    Columns: join keys, ``__keel_event``, ``__keel_created`` (or NULL) and every feature of the schema;
    with ``with_files`` also ``__keel_file``, the file a row came from, when a SQL transformation
    keeps it (NULL for pushed rows).
    """
    from keel.store.lake import get_lake

    tag = view.name
    src = _source_sql(con, view.source, tag, with_files=with_files) if extra_rows is None else None
    if extra_rows is not None:
        con.register(f"__push_{tag}", extra_rows)
        raw = f"SELECT * FROM __push_{tag}"
    else:
        raw = f"SELECT * FROM {src}"
        from keel.features import fast_push

        if fast_push.pending_rows():
            fast_push.flush()  # pushed rows still queued for the lake are part of the view
        lake = get_lake()
        if lake.exists(push_dataset(view)):
            raw = f"{raw} UNION ALL BY NAME SELECT * FROM {lake.scan_sql(push_dataset(view))}"
    con.execute(f"CREATE OR REPLACE TEMP VIEW {q('raw_' + tag)} AS {raw}")
    body = f"SELECT * FROM {q('raw_' + tag)}"
    if view.transformation is not None:
        if view.mode == "sql":
            con.execute(f"CREATE OR REPLACE TEMP VIEW source AS SELECT * FROM {q('raw_' + tag)}")
            try:
                con.execute(f"CREATE OR REPLACE TEMP TABLE {q('tx_' + tag)} AS {view.transformation_code()}")
            except Exception as exc:
                raise ValidationError(
                    f"FeatureView '{view.name}': the SQL transformation failed: {str(exc).splitlines()[0]}",
                    hint="It must be a DuckDB SELECT over the table `source`.",
                ) from None
        else:
            table = con.sql(body).to_arrow_table()
            con.register(f"__tx_in_{tag}", _run_python_transform(view, table))
            con.execute(f"CREATE OR REPLACE TEMP VIEW {q('tx_' + tag)} AS SELECT * FROM {q('__tx_in_' + tag)}")
        body = f"SELECT * FROM {q('tx_' + tag)}"
    cols = _describe(con, body)
    _check_columns(view, cols)
    source = view.source
    select = [q(k) for k in view.join_keys]
    select.append(f"{q(source.timestamp_field)} AS {EVENT}")
    created = source.created_timestamp_field
    select.append(f"{q(created)} AS {CREATED}" if created else f"NULL::TIMESTAMPTZ AS {CREATED}")
    for f in view.schema:
        select.append(f"CAST({q(f.name)} AS {DTYPES[f.dtype]}) AS {q(f.name)}")
    if with_files and FILE in cols:
        select.append(q(FILE))
    name = "rows_" + tag
    con.execute(f"CREATE OR REPLACE TEMP VIEW {q(name)} AS SELECT {', '.join(select)} FROM ({body})")
    return name


def _run_python_transform(view: FeatureView, table: pa.Table) -> pa.Table:
    import pyarrow as pa

    fn = view.transformation
    assert callable(fn)
    try:
        if view.mode == "arrow":
            out = fn(table)
        else:
            out = fn(table.to_pandas(types_mapper=_arrow_types_mapper()))
    except Exception as exc:
        raise ValidationError(
            f"FeatureView '{view.name}': the {view.mode} transformation raised {type(exc).__name__}: {exc}",
            hint="Fix the transformation function; it receives the source rows.",
        ) from exc
    if isinstance(out, pa.Table):
        result = out
    else:
        import pandas as pd

        if not isinstance(out, pd.DataFrame):
            raise ValidationError(
                f"FeatureView '{view.name}': the transformation returned {type(out).__name__}, not a DataFrame / Arrow table."
            )
        result = pa.Table.from_pandas(out, preserve_index=False)
    if result.num_rows != table.num_rows:
        raise ValidationError(
            f"FeatureView '{view.name}': the transformation returned {result.num_rows} rows for {table.num_rows}.",
            hint="Transformations must be row-wise (one output row per source row); windowed aggregates are Aggregation(...) definitions.",
        )
    return result


def _arrow_types_mapper() -> Any:
    import pandas as pd

    return pd.ArrowDtype


def _describe(con: duckdb.DuckDBPyConnection, body: str) -> dict[str, str]:
    rel = con.sql(f"SELECT * FROM ({body}) LIMIT 0")
    return {c: str(t).upper() for c, t in zip(rel.columns, rel.types, strict=True)}


def _check_columns(view: FeatureView, cols: dict[str, str]) -> None:
    from keel.errors import did_you_mean

    src = view.source
    where = f"FeatureView '{view.name}' (source '{src.name}')"
    for col, role in [*((k, "join key") for k in view.join_keys), (src.timestamp_field, "timestamp_field")] + (
        [(src.created_timestamp_field, "created_timestamp_field")] if src.created_timestamp_field else []
    ):
        if col not in cols:
            raise ValidationError(
                f"{where}: {role} column '{col}' is not in the data." + did_you_mean(col, cols),
                hint=f"Columns are: {', '.join(cols)}. Fix the definition or the data.",
            )
    for col in [c for c in (src.timestamp_field, src.created_timestamp_field) if c]:
        if cols[col] == "TIMESTAMP" or cols[col].startswith("TIMESTAMP_"):
            raise ValidationError(
                f"{where}: column '{col}' holds naive timestamps (no time zone).",
                hint="Store them timezone-aware in UTC, e.g. pandas: df[col] = df[col].dt.tz_localize('UTC').",
            )
        if cols[col] != "TIMESTAMP WITH TIME ZONE":
            raise ValidationError(
                f"{where}: column '{col}' has type {cols[col]}, not a timestamp.",
                hint="Store it as a timezone-aware UTC timestamp.",
            )
    for f in view.schema:
        if f.name not in cols:
            raise ValidationError(
                f"{where}: feature '{f.name}' is not in the data." + did_you_mean(f.name, cols),
                hint="Add the column to the source or the transformation, or remove the Field.",
            )
        if cols[f.name] not in _ACCEPT[f.dtype] and not (f.dtype.startswith("float") and cols[f.name].startswith("DECIMAL")):
            raise ValidationError(
                f"{where}: feature '{f.name}' is declared {f.dtype} but the data holds {cols[f.name]}.",
                hint=f"Change Field('{f.name}', ...) to the data's type, or cast the column in the transformation.",
            )


def check_duplicates(con: duckdb.DuckDBPyConnection, view: FeatureView, rows: str, *, by_created: bool) -> None:
    """Reject rows that share (entity key, event time) and cannot be told apart by created time."""
    keys = ", ".join(q(k) for k in view.join_keys)
    group = f"{keys}, {EVENT}" + (f", {CREATED}" if by_created else "")
    shown_cols = ", ".join([*(q(k) for k in view.join_keys), f"CAST({EVENT} AS VARCHAR)"])
    dup = con.sql(
        f"SELECT {shown_cols} FROM {q(rows)} GROUP BY {group} HAVING count(*) > 1 LIMIT 3"
    ).fetchall()
    if dup:
        _raise_duplicates(view, dup)


def timeline(con: duckdb.DuckDBPyConnection, view: FeatureView, rows: str, *, respect_created: bool) -> str:
    """A relation (keys, __keel_visible, __keel_event, __keel_created) to ASOF-join on the visibility time.

    Rows tied on (key, event time, created time) are not resolved here: the join checks
    the rows it matched (:func:`_reject_ambiguous_matches`).
    """
    keys = ", ".join(q(k) for k in view.join_keys)
    has_created = view.source.created_timestamp_field is not None
    name = "tl_" + view.name
    if not has_created:
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW {q(name)} AS SELECT {keys}, {EVENT} AS {VISIBLE}, {EVENT}, {CREATED} FROM {q(rows)}"
        )
        return name
    if not respect_created:
        # Only the latest ingested row of each (key, event time) can ever be the answer.
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW {q(name)} AS SELECT {keys}, {EVENT} AS {VISIBLE}, {EVENT}, {CREATED} FROM {q(rows)} "
            f"QUALIFY row_number() OVER (PARTITION BY {keys}, {EVENT} ORDER BY {CREATED} DESC NULLS FIRST) = 1"
        )
        return name
    # Visible from greatest(event, created); keep a row only if it is then the latest by
    # (event, created) among visible rows of its key, and one row per (key, visible time).
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {q(name)} AS
        WITH ranked AS (
            SELECT {keys}, {EVENT}, {CREATED}, greatest({EVENT}, coalesce({CREATED}, {EVENT})) AS {VISIBLE},
                   dense_rank() OVER (PARTITION BY {keys} ORDER BY {EVENT}, {CREATED} NULLS FIRST) AS __rank
            FROM {q(rows)}
        ), running AS (
            SELECT *, max(__rank) OVER (PARTITION BY {keys} ORDER BY {VISIBLE}, __rank
                                        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS __best
            FROM ranked
        )
        SELECT {keys}, {VISIBLE}, {EVENT}, {CREATED} FROM running WHERE __rank = __best
        QUALIFY row_number() OVER (PARTITION BY {keys}, {VISIBLE} ORDER BY __rank DESC) = 1"""
    )
    return name


# -- entity rows ------------------------------------------------------------------------
def entity_table(entity_df: Any, join_keys: Sequence[str], timestamp_column: str, extra: Sequence[str] = ()) -> pa.Table:
    """The entity rows as Arrow (keys, timestamp, request columns, row number), validated."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from keel.errors import did_you_mean

    if isinstance(entity_df, pd.DataFrame):
        cols = list(entity_df.columns)
    elif isinstance(entity_df, pa.Table):
        cols = entity_df.column_names
    else:
        raise ValidationError(f"entity_df must be a pandas DataFrame or Arrow table, got {type(entity_df).__name__}.")
    if timestamp_column not in cols:
        raise ValidationError(
            f"The entity DataFrame has no timestamp column '{timestamp_column}'." + did_you_mean(timestamp_column, map(str, cols)),
            hint="Add the time each row's prediction was made, or pass timestamp_column='...'.",
        )
    for k in [*join_keys, *extra]:
        if k not in cols:
            raise ValidationError(
                f"The entity DataFrame has no column '{k}' (needed by the requested features)." + did_you_mean(k, map(str, cols)),
                hint=f"Add '{k}' to the entity DataFrame.",
            )
    wanted = list(dict.fromkeys([*join_keys, timestamp_column, *extra]))
    if isinstance(entity_df, pd.DataFrame):
        table = pa.Table.from_pandas(entity_df[wanted], preserve_index=False)
    else:
        table = entity_df.select(wanted)
    ts_type = table.schema.field(timestamp_column).type
    if not pa.types.is_timestamp(ts_type):
        raise ValidationError(
            f"The entity DataFrame column '{timestamp_column}' has type {ts_type}, not a timestamp.",
            hint="Convert it: pd.to_datetime(df[col], utc=True).",
        )
    if ts_type.tz is None:
        raise ValidationError(
            f"The entity DataFrame column '{timestamp_column}' holds naive timestamps (no time zone).",
            hint="Make them UTC-aware: df[col] = df[col].dt.tz_localize('UTC') (or tz_convert if they have a zone).",
        )
    if table.column(timestamp_column).null_count:
        raise ValidationError(f"The entity DataFrame column '{timestamp_column}' has missing timestamps.", hint="Drop or fill those rows.")
    return table.append_column(ROW, pa.array(np.arange(table.num_rows, dtype=np.int64)))


def _check_key_types(con: duckdb.DuckDBPyConnection, view: FeatureView, rows: str, entity: str) -> None:
    vcols = _describe(con, f"SELECT * FROM {q(rows)}")
    ecols = _describe(con, f"SELECT * FROM {q(entity)}")

    def family(t: str) -> str:
        return "int" if t in _INTS else ("str" if t == "VARCHAR" else t)

    for k in view.join_keys:
        if ecols[k] == '"NULL"' or ecols[k] == "NULL":
            continue
        if family(vcols[k]) != family(ecols[k]):
            raise ValidationError(
                f"Join key '{k}' is {ecols[k]} in the entity DataFrame but {vcols[k]} in FeatureView '{view.name}'.",
                hint=f"Cast the entity DataFrame column: df['{k}'] = df['{k}'].astype(...) to match.",
            )


# -- training sets ---------------------------------------------------------------------
def point_in_time_join(
    entity: pa.Table,
    selection: Selection,
    timestamp_column: str,
    *,
    respect_created_time: bool = True,
    include_event_times: bool = False,
    con: duckdb.DuckDBPyConnection | None = None,
) -> pa.Table:
    """Feature columns for every entity row, in row order (see the module docstring).

    Two phases. The ASOF join carries only keys and times: for each entity row and
    view, the (event, created) time of the value it sees, or null when there is none
    or it is older than the TTL. Then one hash join per view fetches the feature
    values of exactly those source rows. Sorting only keys and times is what makes
    the ASOF join cheap; and since a source row is identified by (key, event,
    created), an entity row that fetches two rows has met a tie, which is rejected
    with the keys named.
    """
    con = con or connect()
    con.register("__entity", entity)
    keys = list(dict.fromkeys(k for v in selection.views for k in v.join_keys))
    epoch = "'epoch'::TIMESTAMPTZ"
    joins, matched = [], [f"e.{ROW}", *(f"e.{q(k)}" for k in keys)]
    fetches, fetched = [], [f"m.{ROW}"]
    outer = [ROW]  # output column names
    relations = []
    for i, view in enumerate(selection.views):
        rows = view_relation(con, view)
        _check_contracts(view.name, con.table(rows), "training_set")
        _check_key_types(con, view, rows, "__entity")
        relations.append(rows)
        if view.aggregations:
            from keel.features.aggregation_offline import aggregate

            table = aggregate(
                con, view, rows, "__entity", timestamp_column,
                respect_created=respect_created_time, include_event_time=include_event_times,
            )
            fetches.append(f"LEFT JOIN {q(table)} a{i} ON a{i}.{ROW} = m.{ROW}")
            for f in view.features:
                fetched.append(f"a{i}.{q(f.name)}")
                outer.append(f.name)
            if include_event_times:
                fetched.append(f"a{i}.{EVENT} AS {q(EVENT + '_' + view.name)}")
                outer.append(EVENT + "_" + view.name)
            continue
        tl = timeline(con, view, rows, respect_created=respect_created_time)
        alias = f"v{i}"
        on = " AND ".join(f"e.{q(k)} = {alias}.{q(k)}" for k in view.join_keys)
        joins.append(f"ASOF LEFT JOIN {q(tl)} {alias} ON {on} AND e.{q(timestamp_column)} >= {alias}.{VISIBLE}")
        fresh = (
            f"{alias}.{EVENT} IS NOT NULL"
            if view.ttl is None
            else f"{alias}.{EVENT} >= e.{q(timestamp_column)} - to_microseconds({int(view.ttl.total_seconds() * 1_000_000)})"
        )
        matched += [
            f"CASE WHEN {fresh} THEN {alias}.{EVENT} END AS __m{i}_ev",
            f"CASE WHEN {fresh} THEN coalesce({alias}.{CREATED}, {epoch}) END AS __m{i}_cr",
        ]
        r = f"r{i}"
        match_on = " AND ".join(
            [*(f"{r}.{q(k)} = m.{q(k)}" for k in view.join_keys), f"{r}.{EVENT} = m.__m{i}_ev", f"coalesce({r}.{CREATED}, {epoch}) = m.__m{i}_cr"]
        )
        fetches.append(f"LEFT JOIN {q(rows)} {r} ON {match_on}")
        for f in view.features:
            fetched.append(f"{r}.{q(f.name)}")
            outer.append(f.name)
        if include_event_times:
            fetched.append(f"m.__m{i}_ev AS {q(EVENT + '_' + view.name)}")
            outer.append(EVENT + "_" + view.name)
    matches = con.sql(f"SELECT {', '.join(matched)} FROM __entity e {' '.join(joins)}").to_arrow_table()
    con.register("__matches", matches)
    try:
        joined = con.sql(f"SELECT {', '.join(fetched)} FROM __matches m {' '.join(fetches)}").to_arrow_table()
        if joined.num_rows != entity.num_rows:  # some entity row fetched two source rows: a tie
            for i, view in enumerate(selection.views):
                if not view.aggregations:
                    _reject_ambiguous_matches(con, view, relations[i], i)
            raise AssertionError("a tie was detected but not found")  # pragma: no cover
    finally:
        con.unregister("__matches")
    # Hash joins do not keep row order: one scatter and take restores it (cheaper than ORDER BY).
    return joined.take(_inverse(joined.column(ROW), entity.num_rows)).select(outer)


def _inverse(rows: pa.ChunkedArray, n: int) -> Any:
    """Positions that put a table whose ``rows`` column is a permutation of 0..n-1 back in row order."""
    import numpy as np

    where = np.empty(n, dtype=np.int64)
    where[rows.to_numpy()] = np.arange(n, dtype=np.int64)
    return where


def _reject_ambiguous_matches(con: duckdb.DuckDBPyConnection, view: FeatureView, rows: str, i: int) -> None:
    """Name the keys whose matched (key, event, created) time belongs to more than one source row."""
    keys = view.join_keys
    epoch = "'epoch'::TIMESTAMPTZ"
    cols = ", ".join(q(k) for k in keys)
    on = " AND ".join([*(f"r.{q(k)} = m.{q(k)}" for k in keys), f"r.{EVENT} = m.ev", f"coalesce(r.{CREATED}, {epoch}) = m.cr"])
    shown = ", ".join([*(f"m.{q(k)}" for k in keys), "CAST(m.ev AS VARCHAR)"])
    dup = con.sql(
        f"""WITH m AS (SELECT DISTINCT {cols}, __m{i}_ev AS ev, __m{i}_cr AS cr FROM __matches WHERE __m{i}_ev IS NOT NULL)
            SELECT {shown} FROM {q(rows)} r JOIN m ON {on}
            GROUP BY {", ".join(f"m.{q(k)}" for k in keys)}, m.ev, m.cr HAVING count(*) > 1 LIMIT 3"""
    ).fetchall()
    if dup:
        _raise_duplicates(view, dup)


def _raise_duplicates(view: FeatureView, dup: list[tuple[Any, ...]]) -> None:
    shown = "; ".join(
        ", ".join(f"{k}={r[i]!r}" for i, k in enumerate(view.join_keys)) + f" at {r[len(view.join_keys)]}" for r in dup
    )
    how = "and the same created time" if view.source.created_timestamp_field else "and no created_timestamp_field to order them"
    raise ValidationError(
        f"FeatureView '{view.name}' (source '{view.source.name}'): several rows share entity key and event time {how}: {shown}.",
        hint="Remove the duplicates or give them distinct created times."
        if view.source.created_timestamp_field
        else "Remove the duplicates, or give the source a created_timestamp_field so the latest ingested row wins.",
    )


def apply_on_demand(frame: pd.DataFrame, selection: Selection) -> pd.DataFrame:
    """Add the on-demand features to ``frame`` (which holds request columns and input features)."""
    import pandas as pd

    for odfv in selection.on_demand:
        needed = [*(f.name for f in odfv.request_schema), *odfv.input_features]
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise ValidationError(
                f"OnDemandFeatureView '{odfv.name}' needs column '{missing[0]}', which the request does not provide.",
                hint=f"Pass '{missing[0]}' in the entity rows (request data).",
            )
        try:
            out = odfv.function(frame[needed].copy())
        except Exception as exc:
            raise ValidationError(
                f"OnDemandFeatureView '{odfv.name}': the function raised {type(exc).__name__}: {exc}",
                hint="Fix the function; it receives a DataFrame of the request columns and input features.",
            ) from exc
        if not isinstance(out, pd.DataFrame) or len(out) != len(frame):
            raise ValidationError(
                f"OnDemandFeatureView '{odfv.name}' must return a DataFrame with one row per input row "
                f"(got {type(out).__name__} of length {len(out) if hasattr(out, '__len__') else '?'})."
            )
        for f in odfv.features:
            if f.name not in out.columns:
                raise ValidationError(
                    f"OnDemandFeatureView '{odfv.name}' did not return feature '{f.name}'.",
                    hint="Return a DataFrame with every column of schema=.",
                )
            frame[f.name] = _cast_series(out[f.name].reset_index(drop=True), f.dtype, odfv.name, f.name, frame.index)
    return frame


def _cast_series(series: pd.Series, dtype: str, owner: str, column: str, index: pd.Index) -> pd.Series:
    import pandas as pd
    import pyarrow as pa

    arrow = {"int64": pa.int64(), "int32": pa.int32(), "float64": pa.float64(), "float32": pa.float32(),
             "string": pa.string(), "bool": pa.bool_(), "timestamp": pa.timestamp("us", tz="UTC")}[dtype]
    try:
        arr = pa.array(series, from_pandas=True).cast(arrow)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise ValidationError(
            f"OnDemandFeatureView '{owner}': feature '{column}' is declared {dtype} but the function returned {series.dtype}: {exc}",
            hint=f"Return {dtype} values or change Field('{column}', ...).",
        ) from None
    return pd.Series(arr, index=index, dtype=pd.ArrowDtype(arrow))


def fingerprint(df: pd.DataFrame) -> str:
    """The content fingerprint of a training set (:func:`keel.store.fingerprint.frame_fingerprint`)."""
    from keel.store.fingerprint import frame_fingerprint

    return frame_fingerprint(df)


def build_training_set(
    entity_df: Any,
    features: Any,
    *,
    timestamp_column: str = "event_timestamp",
    respect_created_time: bool = True,
    include_event_times: bool = False,
    definitions: Definitions | str | Path | None = None,
    require_applied: bool = True,
) -> pd.DataFrame:
    import pandas as pd

    defs = as_definitions(definitions)
    selection = defs.select(features)
    pin = None
    if require_applied:
        from keel.features.registry import pinned

        pin = pinned(defs)
    entity = entity_table(entity_df, selection.join_keys, timestamp_column, selection.request_fields)
    clash = [f for f in selection.features if f in entity.column_names or f in getattr(entity_df, "columns", ())]
    if clash:
        raise ValidationError(
            f"The entity DataFrame already has a column '{clash[0]}', which is also a requested feature.",
            hint=f"Drop or rename '{clash[0]}' in the entity DataFrame.",
        )
    joined = point_in_time_join(
        entity, selection, timestamp_column, respect_created_time=respect_created_time, include_event_times=include_event_times
    )
    if isinstance(entity_df, pd.DataFrame):
        out = entity_df.reset_index(drop=True).copy()
    else:
        out = entity_df.to_pandas(types_mapper=pd.ArrowDtype)
    for name in joined.column_names:
        if name == ROW:
            continue
        out[name] = pd.Series(joined.column(name), dtype=pd.ArrowDtype(joined.schema.field(name).type))
    out = apply_on_demand(out, selection)
    for names in selection.hidden.values():
        out = out.drop(columns=[n for n in names if n not in selection.features])
    service = selection.service
    out.attrs["keel"] = {
        "kind": "training_set",
        "fingerprint": fingerprint(out),
        "feature_service": None if service is None else service.name,
        "feature_service_version": None if (service is None or pin is None) else pin.version_of("feature_service", service.name),
        "definitions_version": None if pin is None else pin.definitions_version,
        "features": list(selection.features),
        "views": {v.name: (None if pin is None else pin.version_of("feature_view", v.name)) for v in selection.views},
    }
    return out


def get_training_set(
    entity_df: Any,
    features: Any,
    *,
    timestamp_column: str = "event_timestamp",
    respect_created_time: bool = True,
) -> pd.DataFrame:
    """A point-in-time correct training set: one row per ``entity_df`` row, in its order.

    ``features`` is a FeatureService (object or name) or a list of "view:feature"
    references. ``entity_df`` holds the join keys, a timezone-aware
    ``timestamp_column`` and any request columns that on-demand features need.
    With ``respect_created_time`` (default) a value counts only once ingested by
    the row's timestamp. The result's ``attrs["keel"]`` records the fingerprint,
    the feature service and the definitions version (read by ``keel.log_dataset``).

    Example::

        train = keel.get_training_set(labels, "churn_v1")
    """
    return build_training_set(entity_df, features, timestamp_column=timestamp_column, respect_created_time=respect_created_time)


def validate_view(view: FeatureView) -> None:
    """Check a view against its data (columns, types, transformation) without reading it all."""
    con = connect()
    rows = view_relation(con, view)
    con.sql(f"SELECT * FROM {q(rows)} LIMIT 10").to_arrow_table()
    if view.aggregations:
        from keel.features.aggregations import check_filters

        check_filters(con, view.name, q(rows), view.aggregations)
