"""The prediction log in the lake: its layout, the writer of compacted rows, and the reader.

Every prediction keel makes (server, embedded predictor, batch scorer) becomes one
row of a typed Parquet dataset, partitioned by model, version and hour::

    <lake>/predictions/<model>/v<version>/<YYYY-MM-DDTHH>/part-<writer>-<seq>.parquet

A row holds the reserved columns (:data:`BASE_SCHEMA`: ``request_id``, ``ts``,
``model``, ``version``, ``route``, ``latency_ms``, ``batch_id``, ``status``,
``missing_features``), then one typed column per signature input (an input named
like a reserved column is stored as ``input_<name>``), then the outputs:
``prediction``, and for classifiers ``score`` (the positive class's probability,
or the top probability for multiclass, with one ``proba_<class>`` column each).

Lower layers (the features' skew check, monitoring) read it here, through
:func:`read`, without importing ``keel.serving``. Online writes go through the
local segments of :mod:`keel.store.prediction_log`; :func:`append` writes
already-compacted rows (batch scoring, tests).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from keel.errors import ValidationError

if TYPE_CHECKING:
    import pyarrow as pa

    from keel.store.lake import Lake

ROOT = "predictions"
BASE_COLUMNS = ("request_id", "ts", "model", "version", "route", "latency_ms", "batch_id", "status", "missing_features")
OUTPUT_COLUMNS = ("prediction", "score")
RESERVED = frozenset((*BASE_COLUMNS, *OUTPUT_COLUMNS))
_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
HOUR_FORMAT = "%Y-%m-%dT%H"


def base_schema() -> pa.Schema:
    """The reserved columns every prediction row starts with."""
    import pyarrow as pa

    return pa.schema([
        ("request_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("model", pa.string()),
        ("version", pa.int64()),
        ("route", pa.string()),
        ("latency_ms", pa.float64()),
        ("batch_id", pa.string()),
        ("status", pa.string()),
        ("missing_features", pa.list_(pa.string())),
    ])


def input_column(name: str) -> str:
    """The log column of signature input ``name`` (reserved names get an ``input_`` prefix)."""
    return f"input_{name}" if name in RESERVED or name.startswith("proba_") else name


def arrow_type(signature_type: str) -> pa.DataType | None:
    """The Arrow type a signature type is logged as (None: inferred from the values)."""
    import pyarrow as pa

    return {
        "integer": pa.int64(),
        "double": pa.float64(),
        "boolean": pa.bool_(),
        "string": pa.string(),
        "category": pa.string(),
        "datetime": pa.timestamp("us", tz="UTC"),
    }.get(signature_type)


def _check_model(model: str) -> str:
    if not isinstance(model, str) or not _SAFE.match(model):
        raise ValidationError(f"Model name {model!r} cannot name a prediction log.", hint="Use letters, digits, '_', '-' and '.'.")
    return model


def dataset(model: str, version: int | None = None, hour: str | None = None) -> str:
    """The lake dataset name of a model's log, one version's, or one hour's partition."""
    name = f"{ROOT}/{_check_model(model)}"
    if version is not None:
        name += f"/v{int(version)}"
        if hour is not None:
            name += f"/{hour}"
    return name


def _utc(value: datetime | None, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ValidationError(f"{what}={value!r} is not a datetime.", hint="Pass a timezone-aware datetime, e.g. datetime.now(UTC) - timedelta(days=1).")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def normalize(table: pa.Table) -> pa.Table:
    """``table`` with the reserved columns first, typed, defaults filled (ts now, route "default", status "ok")."""
    import pyarrow as pa

    n = table.num_rows
    for required in ("model", "version", "request_id"):
        if required not in table.column_names:
            raise ValidationError(f"Prediction rows need a '{required}' column (got {', '.join(table.column_names)}).",
                                  hint="Give request_id, model and version for every row.")
    defaults: dict[str, Any] = {
        "ts": lambda: pa.array([datetime.now(UTC)] * n, pa.timestamp("us", tz="UTC")) if n else pa.array([], pa.timestamp("us", tz="UTC")),
        "route": lambda: pa.array(["default"] * n, pa.string()),
        "latency_ms": lambda: pa.nulls(n, pa.float64()),
        "batch_id": lambda: pa.nulls(n, pa.string()),
        "status": lambda: pa.array(["ok"] * n, pa.string()),
        "missing_features": lambda: pa.array([[]] * n, pa.list_(pa.string())),
    }
    columns: list[pa.Array | pa.ChunkedArray] = []
    fields: list[pa.Field] = []
    for field in base_schema():
        if field.name in table.column_names:
            col = table[field.name]
            if field.name == "ts" and pa.types.is_timestamp(col.type) and col.type.tz is None:
                col = col.cast(pa.timestamp("us")).cast(field.type)  # naive times are UTC
            try:
                col = col.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ValidationError(f"Prediction column '{field.name}' of type {col.type} cannot be {field.type}: {exc}.") from None
        else:
            col = defaults[field.name]()
        columns.append(col)
        fields.append(field)
    for name in table.column_names:
        if name not in BASE_COLUMNS:
            columns.append(table[name])
            fields.append(pa.field(name, table[name].type))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def write(table: pa.Table, *, writer: str | None = None, lake: Lake | None = None) -> list[str]:
    """Write normalized rows as one part per (model, version, hour); returns the parts written.

    With ``writer`` (e.g. ``host-pid-seq``) the part names are deterministic, so
    writing the same rows again replaces the parts instead of duplicating them.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from keel.store.lake import get_lake

    if table.num_rows == 0:
        return []
    lake = lake or get_lake()
    # the hour of each row as a number (strftime on every row costs more than the rest of the write)
    hours = pc.divide(table["ts"].cast(pa.int64()), pa.scalar(3_600_000_000, pa.int64()))
    keyed = table.append_column("__hour", hours)
    groups = keyed.group_by(["model", "version", "__hour"]).aggregate([]).to_pylist()
    written = []
    token = writer or f"{uuid.uuid4().hex}"
    for g in groups:
        if len(groups) == 1:
            part = table
        else:
            mask = pc.and_(pc.and_(pc.equal(keyed["model"], g["model"]), pc.equal(keyed["version"], pa.scalar(g["version"], pa.int64()))),
                           pc.equal(keyed["__hour"], pa.scalar(g["__hour"], pa.int64())))
            part = table.filter(mask)
        hour = datetime.fromtimestamp(g["__hour"] * 3600, UTC).strftime(HOUR_FORMAT)
        written.append(lake.append(dataset(g["model"], g["version"], hour), part, part=token, options=parquet_options(part.schema)))
    return written


def parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """How log parts are written: dictionaries only for text other than the request id; LZ4 except for floats.

    Floats (most of a log) gain little from a dictionary or compression but cost
    the most to try them on, and request ids are unique.
    """
    import pyarrow as pa

    text = [f.name for f in schema if (pa.types.is_string(f.type) or pa.types.is_large_string(f.type)) and f.name != "request_id"]
    return {"use_dictionary": text, "compression": {f.name: "none" if pa.types.is_floating(f.type) else "lz4" for f in schema}}


def append(table: pa.Table) -> None:
    """Write prediction rows (already compacted: batch scoring, tests) straight to the lake.

    ``request_id``, ``model`` and ``version`` are required; ``ts`` defaults to now,
    ``route`` to "default" and ``status`` to "ok".
    """
    write(normalize(table))


def _hour_of(name: str) -> datetime | None:
    try:
        return datetime.strptime(name.rsplit("/", 1)[-1], HOUR_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def partitions(model: str, *, start: datetime | None = None, end: datetime | None = None, version: int | None = None) -> list[str]:
    """The hour partitions of ``model``'s log that can hold rows in [start, end)."""
    from datetime import timedelta

    from keel.store.lake import get_lake

    start, end = _utc(start, "start"), _utc(end, "end")
    out = []
    for name in get_lake().datasets(dataset(model)):
        parts = name.split("/")
        if len(parts) != 4 or not parts[2].startswith("v"):
            continue
        if version is not None and parts[2] != f"v{int(version)}":
            continue
        hour = _hour_of(name)
        if hour is None:
            continue
        if start is not None and hour + timedelta(hours=1) <= start:
            continue
        if end is not None and hour >= end:
            continue
        out.append(name)
    return out


def files(model: str, *, start: datetime | None = None, end: datetime | None = None, version: int | None = None) -> list[str]:
    """Local paths of the part files that can hold ``model``'s rows in [start, end) (on S3: cached first)."""
    from keel.store.lake import get_lake

    lake = get_lake()
    return [str(p) for name in partitions(model, start=start, end=end, version=version) for p in lake.files(name)]


def models() -> list[str]:
    """The models that have logged predictions."""
    from keel.store.lake import get_lake

    return sorted({name.split("/")[1] for name in get_lake().datasets(ROOT) if name.count("/") >= 1})


def read(
    model: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    version: int | None = None,
    route: str | None = None,
    columns: list[str] | None = None,
) -> pa.Table:
    """``model``'s logged predictions with ``start <= ts < end``, oldest first.

    Only the hour partitions that can hold the window are read. No rows (or no log
    yet) give an empty table with the reserved columns, not an error.
    """
    import duckdb
    import pyarrow as pa

    from keel.store.lake import sql_string

    paths = files(model, start=start, end=end, version=version)
    if not paths:
        schema = base_schema()
        if columns:
            schema = pa.schema([schema.field(c) if c in schema.names else pa.field(c, pa.null()) for c in columns])
        return schema.empty_table()
    where: list[str] = []
    params: list[Any] = []
    if start is not None:
        where.append("ts >= ?")
        params.append(_utc(start, "start"))
    if end is not None:
        where.append("ts < ?")
        params.append(_utc(end, "end"))
    if version is not None:
        where.append("version = ?")
        params.append(int(version))
    if route is not None:
        where.append("route = ?")
        params.append(str(route))
    cols = "*" if not columns else ", ".join('"' + c.replace('"', '""') + '"' for c in columns)
    scan = f"read_parquet([{', '.join(sql_string(p) for p in paths)}], union_by_name = true)"
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        sql = f"SELECT {cols} FROM {scan}" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY ts, request_id"
        try:
            out = con.sql(sql, params=params).to_arrow_table()
        except duckdb.BinderException as exc:
            raise ValidationError(f"Cannot read columns {columns} of the prediction log of {model!r}: {exc}.") from None
    finally:
        con.close()
    for name in ("ts", "missing_features"):
        if name in out.column_names:
            out = out.set_column(out.column_names.index(name), name, out[name].cast(base_schema().field(name).type))
    return out
