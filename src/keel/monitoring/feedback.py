"""Delayed ground truth: labels logged by request id or by entity key + time, joined onto the prediction log.

``keel.log_feedback(request_ids, labels, model="churn")`` and ``keel feedback import
PATH`` append labels to the lake dataset ``feedback/<model>``; every label is
kept (one whose prediction is not logged yet may match once the log catches up),
and the :class:`FeedbackReport` says what happened to each batch: matched,
unknown ids, duplicates within the batch, corrections (an id labelled before:
the newer label wins), late arrivals (received more than ``horizon`` after the
prediction). Labels keyed by entity attach to that entity's latest prediction at
or before the label's event time, within the horizon (a DuckDB ASOF join).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.errors import NotFoundError, ValidationError, did_you_mean

if TYPE_CHECKING:
    import pyarrow as pa

LABEL_SCHEMA_COLUMNS = ("request_id", "entity_key", "event_ts", "received_ts", "label", "label_value", "batch_id")


@dataclass
class FeedbackReport:
    """What happened to one batch of labels; nothing is dropped without being counted here."""

    model: str
    received: int
    stored: int
    matched: int = 0
    matched_by_entity: int = 0
    unknown: int = 0
    duplicates: int = 0
    corrections: int = 0
    late: int = 0
    unknown_examples: list[str] = field(default_factory=list)
    batch_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def summary(self) -> str:
        return (f"{self.received} labels for {self.model}: {self.matched} matched a logged prediction"
                f"{f' ({self.matched_by_entity} by entity)' if self.matched_by_entity else ''}, {self.unknown} unknown, "
                f"{self.duplicates} duplicates in the batch, {self.corrections} corrections, {self.late} late")


def _dataset(model: str) -> str:
    return f"feedback/{model}"


def parse_duration(text: Any) -> timedelta:
    """'30d', '12h', '15m', '90s', '2w' or a timedelta."""
    if isinstance(text, timedelta):
        return text
    s = str(text).strip().lower()
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    try:
        if s and s[-1] in units:
            return timedelta(**{units[s[-1]]: float(s[:-1])})
        return timedelta(seconds=float(s))
    except ValueError:
        raise ValidationError(f"Duration {text!r} is not understood.", hint="Write e.g. 30d, 12h, 15m or 90s.") from None


def _utc(values: Any, n: int, what: str) -> Any:
    import pandas as pd

    if values is None:
        return pd.Series(pd.Timestamp.now(tz="UTC"), index=range(n))
    try:
        ts = pd.to_datetime(pd.Series(values).reset_index(drop=True), utc=True)
    except (ValueError, TypeError) as exc:
        raise ValidationError(f"The {what} are not timestamps: {exc}", hint="Give ISO-8601 times, e.g. 2026-01-31T12:00:00Z.") from None
    if len(ts) != n:
        raise ValidationError(f"{len(ts)} {what} for {n} labels.", hint="Give one time per label.")
    return ts


def _labels_table(ids: Any, entities: Any, labels: Any, event_ts: Any, batch: str) -> pa.Table:
    import pandas as pd
    import pyarrow as pa

    n = len(labels)
    lab = pd.Series(labels).reset_index(drop=True)
    value = pd.to_numeric(lab.map(lambda v: float(v) if isinstance(v, bool | np.bool_) else v), errors="coerce")
    now = pd.Timestamp.now(tz="UTC")
    cols = {
        "request_id": pa.array(None if ids is None else pd.Series(ids).astype("string").reset_index(drop=True), pa.string()) if ids is not None else pa.nulls(n, pa.string()),
        "entity_key": pa.array(pd.Series(entities).astype("string").reset_index(drop=True), pa.string()) if entities is not None else pa.nulls(n, pa.string()),
        "event_ts": pa.array(event_ts, pa.timestamp("us", tz="UTC")),
        "received_ts": pa.array(pd.Series(now, index=range(n)), pa.timestamp("us", tz="UTC")),
        "label": pa.array(lab.astype("string"), pa.string()),
        "label_value": pa.array(value.astype("float64"), pa.float64()),
        "batch_id": pa.array([batch] * n, pa.string()),
    }
    return pa.table(cols)


def _known_models() -> list[str]:
    from keel.registry.versions import list_models

    return [m.name for m in list_models()]


def _logged(model: str, columns: list[str]) -> pa.Table:
    from keel.store import predictions

    return predictions.read(model, columns=columns)


def log_feedback(
    request_ids: Any,
    labels: Any,
    *,
    model: str | None = None,
    timestamps: Any = None,
    entities: Any = None,
    entity_column: str | None = None,
    horizon: Any = None,
) -> FeedbackReport:
    """Record ground-truth ``labels`` for logged predictions; returns what matched.

    ``request_ids`` are the ids the predictions were returned with (or None when
    ``entities`` are given: entity keys, each label then attaching to the entity's
    latest prediction at or before its timestamp; ``entity_column`` names the
    log's column holding the key, to count those matches). ``model`` defaults to the model
    whose log holds the ids. ``timestamps`` are the labels' event times (default:
    now); ``horizon`` (e.g. '30d') counts labels arriving later than that after
    their prediction as late.

    >>> keel.log_feedback(["req-1", "req-2"], [1, 0], model="churn")
    """
    import pandas as pd

    labels = list(labels) if not hasattr(labels, "__len__") else labels
    n = len(labels)
    if request_ids is None and entities is None:
        raise ValidationError("Labels need request ids or entity keys.", hint="Pass request_ids=[...] or entities=[...] with timestamps=[...].")
    for what, values in (("request ids", request_ids), ("entity keys", entities)):
        if values is not None and len(values) != n:
            raise ValidationError(f"{len(values)} {what} for {n} labels.", hint="Give one id per label.")
    ids = None if request_ids is None else pd.Series(request_ids).astype("string").reset_index(drop=True)
    if ids is not None and ids.isna().any():
        raise ValidationError(f"{int(ids.isna().sum())} request ids are null.", hint="Every label needs the id its prediction returned.")
    event_ts = _utc(timestamps, n, "label timestamps")
    if model is None:
        model = _find_model(ids)
    batch = uuid.uuid4().hex[:16]
    table = _labels_table(ids, entities, labels, event_ts, batch)
    report = _report(model, table, parse_duration(horizon) if horizon is not None else None, entity_column)
    if n:
        from keel.store.lake import get_lake

        get_lake().append(_dataset(model), table)
    return report


def _find_model(ids: Any) -> str:
    if ids is None or len(ids) == 0:
        raise ValidationError("Which model are these labels for?", hint="Pass model='churn'.")
    probe = set(ids[:1000].tolist())
    for name in _known_models():
        logged = _logged(name, ["request_id"])
        if logged.num_rows and probe & set(logged["request_id"].to_pylist()):
            return name
    raise NotFoundError(f"No model's prediction log holds request id {ids.iloc[0]!r}.", hint="Pass model='churn' to keep the labels for later predictions.")


def _one(con: Any, sql: str, params: list[Any] | None = None) -> tuple[Any, ...]:
    """The first row of a query, the result fully consumed."""
    rows = con.execute(sql, params or []).fetchall()
    return tuple(rows[0]) if rows else ()


def _report(model: str, table: pa.Table, horizon: timedelta | None, entity_column: str | None = None) -> FeedbackReport:
    """Count matches, unknowns, duplicates, corrections and late labels of one batch (vectorized, in DuckDB)."""
    import duckdb

    from keel.store.lake import get_lake

    report = FeedbackReport(model, table.num_rows, table.num_rows, batch_id=table["batch_id"][0].as_py() if table.num_rows else "")
    if table.num_rows == 0:
        return report
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("batch", table)
        has_ids = table["request_id"].null_count < table.num_rows
        if has_ids:
            report.duplicates = int(_one(con, "SELECT count(*) - count(DISTINCT request_id) FROM batch WHERE request_id IS NOT NULL")[0])
            lake = get_lake()
            if lake.files(_dataset(model)):
                con.execute(f"CREATE VIEW earlier AS SELECT DISTINCT request_id FROM {lake.scan_sql(_dataset(model))} WHERE request_id IS NOT NULL")
                report.corrections = int(_one(con, "SELECT count(DISTINCT b.request_id) FROM batch b JOIN earlier e USING (request_id)")[0])
            logged = _logged(model, ["request_id", "ts"])
            con.register("logged", logged)
            row = _one(
                con,
                "SELECT count(l.request_id), count(*) - count(l.request_id), count(*) FILTER (WHERE l.ts IS NOT NULL AND b.received_ts - l.ts > ?) "
                "FROM (SELECT DISTINCT ON (request_id) * FROM batch WHERE request_id IS NOT NULL) b LEFT JOIN logged l USING (request_id)",
                [horizon if horizon is not None else timedelta(days=36500)],
            )
            report.matched, report.unknown, report.late = int(row[0]), int(row[1]), int(row[2])
            if report.unknown:
                ex = con.execute("SELECT b.request_id FROM batch b ANTI JOIN logged l USING (request_id) ORDER BY b.request_id LIMIT 5").fetchall()
                report.unknown_examples = [str(r[0]) for r in ex]
        elif entity_column:
            logged = _logged(model, [entity_column, "ts"])
            if logged.num_rows:
                con.register("logged", logged)
                row = _one(
                    con,
                    f'SELECT count(*) FROM batch b ASOF JOIN (SELECT CAST("{entity_column}" AS VARCHAR) AS ek, ts FROM logged) l '
                    "ON b.entity_key = l.ek AND b.event_ts >= l.ts WHERE b.event_ts - l.ts <= ?",
                    [horizon if horizon is not None else timedelta(days=36500)],
                )
                report.matched = report.matched_by_entity = int(row[0])
            report.unknown = report.received - report.matched
    finally:
        con.close()
    return report


def import_feedback(
    path: str | Path,
    *,
    model: str | None = None,
    id_column: str = "request_id",
    label_column: str = "label",
    time_column: str | None = None,
    entity_column: str | None = None,
    horizon: Any = None,
) -> FeedbackReport:
    """``keel feedback import``: a CSV or Parquet file of (id or entity, label, time) rows."""
    from keel.monitoring.drift import as_table

    table = as_table(path, "feedback file")
    frame = table.to_pandas()
    wanted = [label_column, *([entity_column] if entity_column else [id_column])]
    if time_column is None and "time" in frame.columns:
        time_column = "time"
    if time_column:
        wanted.append(time_column)
    for col in wanted:
        if col not in frame.columns:
            raise ValidationError(f"Column {col!r} is not in {path}." + did_you_mean(col, [str(c) for c in frame.columns]),
                                  hint=f"The file has {list(frame.columns)}; name the columns with --id-column/--label-column/--time-column.")
    return log_feedback(
        None if entity_column else frame[id_column], frame[label_column], model=model,
        timestamps=frame[time_column] if time_column else None, entities=frame[entity_column] if entity_column else None,
        entity_column=entity_column, horizon=horizon,
    )


def has_feedback(model: str) -> bool:
    """Whether any label of ``model`` has been received."""
    from keel.store.lake import get_lake

    return bool(get_lake().files(_dataset(model)))


def join_labels(model: str, window: pa.Table, *, entity: str | None = None, horizon: Any = None, as_of: datetime | None = None) -> pa.Table:
    """``window`` (logged predictions) with ``label``, ``label_value`` and ``label_source`` columns (null without a label).

    By request id, the newest label of each id wins (corrections). With ``entity``
    (an input column of the log), labels without an id attach to the entity's latest
    prediction at or before their event time, within ``horizon``. Only labels
    received by ``as_of`` count (default: all).
    """
    import duckdb
    import pyarrow as pa

    from keel.store.lake import get_lake

    lake = get_lake()
    name = _dataset(model)
    if window.num_rows == 0 or not lake.files(name):
        return window.append_column("label", pa.nulls(window.num_rows, pa.string())).append_column(
            "label_value", pa.nulls(window.num_rows, pa.float64())).append_column("label_source", pa.nulls(window.num_rows, pa.string()))
    limit = parse_duration(horizon) if horizon is not None else timedelta(days=36500)
    cutoff = as_of or datetime.now(UTC) + timedelta(days=1)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("w", window.append_column("__row", pa.array(np.arange(window.num_rows))))
        stamp = cutoff.astimezone(UTC).isoformat() if cutoff.tzinfo else cutoff.isoformat() + "+00:00"
        con.execute(f"CREATE VIEW labels AS SELECT * FROM {lake.scan_sql(name)} WHERE received_ts <= TIMESTAMPTZ '{stamp}'")
        by_id = ("SELECT request_id, label, label_value FROM (SELECT *, row_number() OVER (PARTITION BY request_id ORDER BY received_ts DESC, event_ts DESC) AS k "
                 "FROM labels WHERE request_id IS NOT NULL) WHERE k = 1")
        if entity and entity in window.column_names:
            ent = f'"{entity}"'
            by_entity = (
                "SELECT r.__row, l.label, l.label_value FROM (SELECT * FROM labels WHERE request_id IS NULL AND entity_key IS NOT NULL) l "
                f"ASOF JOIN (SELECT __row, CAST({ent} AS VARCHAR) AS ek, ts FROM w) r ON l.entity_key = r.ek AND l.event_ts >= r.ts "
                "WHERE l.event_ts - r.ts <= ?"
            )
            sql = (f"SELECT w.* EXCLUDE (__row), coalesce(i.label, e.label) AS label, coalesce(i.label_value, e.label_value) AS label_value, "
                   f"CASE WHEN i.label IS NOT NULL THEN 'request_id' WHEN e.label IS NOT NULL THEN 'entity' END AS label_source "
                   f"FROM w LEFT JOIN ({by_id}) i ON w.request_id = i.request_id "
                   f"LEFT JOIN (SELECT __row, last(label ORDER BY label) AS label, last(label_value ORDER BY label) AS label_value FROM ({by_entity}) GROUP BY __row) e "
                   f"ON w.__row = e.__row ORDER BY w.__row")
            return con.sql(sql, params=[limit]).to_arrow_table()
        sql = (f"SELECT w.* EXCLUDE (__row), i.label, i.label_value, CASE WHEN i.label IS NOT NULL THEN 'request_id' END AS label_source "
               f"FROM w LEFT JOIN ({by_id}) i ON w.request_id = i.request_id ORDER BY w.__row")
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()
