"""The window a monitor reads: the logged predictions that answered callers in [start, end), column by column.

The prediction log is partitioned by model, version and hour
(:mod:`keel.store.predictions`), so a window opens only its hours' files, and
each version's own. DuckDB then reads only what a check asks for: the columns
(projection) of the rows in the time range that did not go to the ``shadow``
route (predicates pushed into the Parquet scan, row groups skipped on their
statistics). Nothing is sorted for a time window; a count window ("10000
predictions") finds its first row with one top-N query over two columns. The
service objectives are one aggregate query, so latency, status and missing
features are never materialized.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from keel.errors import ValidationError

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

SHADOW = "shadow"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class Window:
    """The rows of ``model``'s log in one monitor window, and how to read them."""

    model: str
    start: datetime
    end: datetime
    files: dict[int, list[str]] = field(default_factory=dict)  # per version
    counts: dict[int, int] = field(default_factory=dict)  # rows per version
    first: tuple[datetime, str] | None = None  # a count window: its first (ts, request_id)
    _names: dict[int, list[str]] = field(default_factory=dict, repr=False)
    _con: Any = field(default=None, repr=False)  # one DuckDB connection for the window's queries (opening one costs ~20 ms)

    @property
    def rows(self) -> int:
        return sum(self.counts.values())

    @property
    def versions(self) -> list[int]:
        return sorted(v for v, n in self.counts.items() if n)

    def _where(self, version: int | None) -> tuple[str, list[Any]]:
        clauses: list[str] = ["ts < ?", f"route IS DISTINCT FROM '{SHADOW}'"]
        params: list[Any] = [self.end]
        if self.first is not None:
            clauses.append("(ts > ? OR (ts = ? AND request_id >= ?))")
            params += [self.first[0], self.first[0], self.first[1]]
        else:
            clauses.append("ts >= ?")
            params.append(self.start)
        if version is not None:
            clauses.append("version = ?")
            params.append(int(version))
        return " WHERE " + " AND ".join(clauses), params

    def _paths(self, version: int | None) -> list[str]:
        return self.files.get(version, []) if version is not None else [p for v in sorted(self.files) for p in self.files[v]]

    def connection(self) -> duckdb.DuckDBPyConnection:
        """The window's DuckDB connection (in UTC), opened on first use; :meth:`close` closes it."""
        if self._con is None:
            import duckdb

            self._con = duckdb.connect()
            self._con.execute("SET TimeZone = 'UTC'")
        return self._con

    def close(self) -> None:
        """Close the window's DuckDB connection (a later query opens another)."""
        if self._con is not None:
            self._con.close()
            self._con = None

    def columns(self, version: int) -> list[str]:
        """The log's column names for ``version`` in this window (from the files' footers)."""
        if version not in self._names:
            paths = self._paths(version)
            self._names[version] = _schema_names(paths) if paths else []
        return self._names[version]

    def read(self, version: int, columns: list[str]) -> pa.Table:
        """``columns`` (those the log has) of ``version``'s rows in the window, in the log's order."""
        import pyarrow as pa

        have = set(self.columns(version))
        wanted = [c for c in dict.fromkeys(columns) if c in have]
        if not wanted or not self.counts.get(version):
            return pa.table({c: pa.array([], pa.float64()) for c in wanted})
        where, params = self._where(version)
        sql = f"SELECT {', '.join(_quote(c) for c in wanted)} FROM {_scan(self._paths(version))}{where}"
        # as DuckDB's threads wrote it, a chunk per batch: combined here, every column would be copied once more than
        # the checks need (a numeric column is copied once into the array it is sorted in, the others read chunk by chunk)
        return self.connection().sql(sql, params=params).to_arrow_table()

    def service(self) -> dict[str, Any]:
        """Volume, latency p50/p99, error rate and missing-feature rate over the window, from one aggregate query."""
        out: dict[str, Any] = {"volume": self.rows}
        if not self.rows:
            return out
        names = set().union(*(self.columns(v) for v in self.files))
        parts: list[tuple[str, str]] = []
        if "latency_ms" in names:
            parts += [("latency_p50_ms", "quantile_cont(latency_ms, 0.5)"), ("latency_p99_ms", "quantile_cont(latency_ms, 0.99)")]
        if "status" in names:
            parts.append(("error_rate", "avg(CASE WHEN status <> 'ok' THEN 1.0 ELSE 0.0 END)"))
        if "missing_features" in names:
            parts.append(("missing_feature_rate", "avg(CASE WHEN coalesce(len(missing_features), 0) > 0 THEN 1.0 ELSE 0.0 END)"))
        if not parts:
            return out
        where, params = self._where(None)
        sql = f"SELECT {', '.join(expr for _, expr in parts)} FROM {_scan(self._paths(None))}{where}"
        row = self.connection().execute(sql, params).fetchone() or ()
        out.update({key: float(v) for (key, _), v in zip(parts, row, strict=False) if v is not None})
        return out


def _scan(paths: list[str]) -> str:
    from keel.store.lake import sql_string

    return f"read_parquet([{', '.join(sql_string(p) for p in paths)}], union_by_name = true)"


def _schema_names(paths: list[str]) -> list[str]:
    import pyarrow.parquet as pq

    names: dict[str, None] = {}
    for path in paths:  # footers only
        names.update(dict.fromkeys(pq.read_schema(path).names))
    return list(names)


def _version_of(partition: str) -> int | None:
    parts = partition.split("/")
    return int(parts[2][1:]) if len(parts) == 4 and parts[2][1:].isdigit() else None


def _by_version(model: str, partitions: list[str]) -> dict[int, list[str]]:
    from keel.store.lake import get_lake

    lake = get_lake()
    out: dict[int, list[str]] = {}
    for name in partitions:
        version = _version_of(name)
        if version is not None:
            out.setdefault(version, []).extend(str(p) for p in lake.files(name))
    return {v: paths for v, paths in out.items() if paths}


def _count(window: Window) -> None:
    if not window.files:
        return
    where, params = window._where(None)
    rows = window.connection().execute(f"SELECT version, count(*) FROM {_scan(window._paths(None))}{where} GROUP BY version", params).fetchall()
    window.counts = {int(v): int(n) for v, n in rows if v is not None}


def open_window(model: str, window: timedelta | int, end: datetime) -> Window:
    """The window ending at ``end``: a duration, or the last ``window`` predictions before ``end``."""
    from keel.store import predictions

    if isinstance(window, timedelta):
        start = end - window
        out = Window(model, start, end, _by_version(model, predictions.partitions(model, start=start, end=end)))
        _count(out)
        return out
    if window <= 0:
        raise ValidationError(f"A window of {window} predictions is empty.", hint="Give a positive count, e.g. '10000 predictions'.")
    return _last(model, window, end)


def _last(model: str, n: int, end: datetime) -> Window:
    """The last ``n`` predictions before ``end``: hour partitions newest first, until they hold ``n`` rows."""
    import pyarrow.parquet as pq

    from keel.store import predictions
    from keel.store.lake import get_lake

    hours = sorted(predictions.partitions(model, end=end), key=lambda p: p.rsplit("/", 1)[-1], reverse=True)
    lake = get_lake()
    taken: list[str] = []
    stored = 0
    out = Window(model, end, end)
    for i, name in enumerate(hours):
        taken.append(name)
        stored += sum(pq.ParquetFile(p).metadata.num_rows for p in lake.files(name))
        if stored < n and i + 1 < len(hours):
            continue
        probe = Window(model, datetime.min.replace(tzinfo=end.tzinfo), end, _by_version(model, taken))
        _count(probe)
        if probe.rows < n and i + 1 < len(hours):  # shadow rows counted in the files: read one more hour
            probe.close()
            continue
        out = probe
        break
    if not out.files:
        return out
    where, params = out._where(None)
    row = out.connection().execute(f"SELECT ts, request_id FROM {_scan(out._paths(None))}{where} ORDER BY ts DESC, request_id DESC LIMIT 1 OFFSET ?",
                                   [*params, max(min(n, out.rows) - 1, 0)]).fetchone()
    if row is None:
        return out
    out.first = (row[0], str(row[1]))
    out.start = row[0]
    _count(out)
    return out
