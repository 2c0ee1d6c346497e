"""Reading the prediction log: ``keel.predictions(model)`` and SQL over it (``keel predictions query``).

``query("SELECT ... FROM predictions WHERE ...")`` runs in DuckDB over a view of
every logged prediction (all models: filter on ``model``; the columns are the
union of the models' columns). Only one read-only statement (SELECT, WITH ...)
is accepted and the connection has external access off, with only the log's part
files readable, so a query can neither read nor write anything else.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from keel.errors import ValidationError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

VIEW = "predictions"


def _flush_local() -> None:
    from keel.store.prediction_log import active_log

    log = active_log()
    if log is not None:
        log.flush()


def predictions(
    model: str,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    version: int | None = None,
    route: str | None = None,
    columns: list[str] | None = None,
) -> pd.DataFrame:
    """``model``'s logged predictions with ``start <= ts < end`` as a DataFrame, oldest first.

    What this process logged is compacted first, so a prediction made just before is included::

        keel.predictions("churn", start=datetime.now(UTC) - timedelta(days=1))
    """
    from keel.store.predictions import read

    _flush_local()
    return read(model, start=start, end=end, version=version, route=route, columns=columns).to_pandas()


def _check_read_only(sql: str) -> None:
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise ValidationError(f"The query is not valid SQL: {exc}", hint='Example: SELECT version, count(*) FROM predictions GROUP BY version') from None
    if len(statements) != 1:
        raise ValidationError(f"The query holds {len(statements)} statements; give exactly one SELECT.")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise ValidationError(f"Only SELECT queries run over the prediction log (got {kind.name}).",
                              hint="e.g. SELECT * FROM predictions WHERE model = 'churn' ORDER BY ts DESC LIMIT 10")


def query(sql: str, *, model: str | None = None) -> pa.Table:
    """Run one SELECT over the ``predictions`` view (every model's log, or ``model``'s) and return Arrow."""
    import duckdb

    from keel.store import predictions as log
    from keel.store.lake import sql_string

    _check_read_only(sql)
    _flush_local()
    names = [model] if model else log.models()
    paths = [p for m in names for p in log.files(m)]
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        if paths:
            con.execute(f"CREATE VIEW {VIEW} AS SELECT * FROM read_parquet([{', '.join(sql_string(p) for p in paths)}], union_by_name = true)")
        else:
            cols = ", ".join(f"CAST(NULL AS {t}) AS {c}" for c, t in (
                ("request_id", "VARCHAR"), ("ts", "TIMESTAMPTZ"), ("model", "VARCHAR"), ("version", "BIGINT"), ("route", "VARCHAR"),
                ("latency_ms", "DOUBLE"), ("batch_id", "VARCHAR"), ("status", "VARCHAR"), ("missing_features", "VARCHAR[]")))
            con.execute(f"CREATE VIEW {VIEW} AS SELECT {cols} WHERE false")
        con.execute(f"SET allowed_paths = [{', '.join(sql_string(p) for p in paths)}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        try:
            return con.sql(sql).to_arrow_table()
        except duckdb.Error as exc:
            raise ValidationError(f"The query failed: {exc}", hint=f"The view is '{VIEW}'; `keel predictions query 'DESCRIBE {VIEW}'` lists its columns.") from None
    finally:
        con.close()


def rows(table: pa.Table) -> list[dict[str, Any]]:
    """JSON-ready rows (timestamps as ISO strings)."""
    out = table.to_pylist()
    for row in out:
        for k, v in row.items():
            if isinstance(v, datetime):
                row[k] = v.isoformat()
    return out
