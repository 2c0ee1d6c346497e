"""STAND-IN for the prediction log (issue 13): just ``append`` and ``read``.

The serving engineer writes the real module (local segments, compaction into
Parquet partitioned by model, version and hour). Monitoring codes against only
these two functions and the row schema below, so this file is replaced
wholesale at merge.

Row schema: ``request_id`` string, ``ts`` timestamp[us, UTC], ``model`` string,
``version`` int64, ``route`` string, ``latency_ms`` float64, ``batch_id`` string
(nullable), ``status`` string, ``missing_features`` list<string>; then one typed
column per signature input; then ``prediction`` and, for classifiers, ``score``.
Here each model is one lake dataset ``predictions/<model>``, filtered with DuckDB.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from keel.errors import ValidationError

if TYPE_CHECKING:
    import pyarrow as pa

REQUIRED = ("request_id", "ts", "model", "version", "route")


def _dataset(model: str) -> str:
    return f"predictions/{model}"


def append(table: pa.Table) -> None:
    """Append logged predictions (rows of any number of models) to the log."""
    import pyarrow.compute as pc

    from keel.store.lake import get_lake

    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise ValidationError(f"Prediction log rows lack the columns {missing}.", hint=f"Every row needs {list(REQUIRED)}.")
    lake = get_lake()
    for model in pc.unique(table["model"]).to_pylist():
        lake.append(_dataset(str(model)), table.filter(pc.equal(table["model"], model)))


def read(
    model: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    version: int | None = None,
    route: str | None = None,
    columns: list[str] | None = None,
) -> pa.Table:
    """Logged predictions of ``model`` with ``start <= ts < end`` (empty table when none)."""
    import duckdb
    import pyarrow as pa

    from keel.store.lake import get_lake

    lake = get_lake()
    name = _dataset(model)
    if not lake.files(name):
        return pa.table({c: pa.array([], pa.string()) for c in (columns or list(REQUIRED))})
    where: list[str] = ["TRUE"]
    params: list[object] = []
    if start is not None:
        where.append("ts >= ?")
        params.append(start)
    if end is not None:
        where.append("ts < ?")
        params.append(end)
    if version is not None:
        where.append("version = ?")
        params.append(int(version))
    if route is not None:
        where.append("route = ?")
        params.append(route)
    cols = ", ".join('"' + c.replace('"', '""') + '"' for c in columns) if columns else "*"
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        sql = f"SELECT {cols} FROM {lake.scan_sql(name)} WHERE {' AND '.join(where)} ORDER BY ts"
        return con.sql(sql, params=params).to_arrow_table()
    finally:
        con.close()

