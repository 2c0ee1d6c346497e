"""A deployment's traffic over time, per route, from the prediction log: one DuckDB aggregate, no row loaded.

``traffic("churn-live", since="24h", buckets=48)`` reads only the hour partitions of
the routes' models that can hold the window, and groups their rows by route and time
bucket in one query: requests, errors (``status`` other than ``ok``), latency p50 and
p99. The web UI's deployment page draws its charts from it; nothing here is per row
in Python.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from keel.deployments.specs import get_deployment
from keel.errors import ValidationError

MAX_BUCKETS = 500


def traffic(name: str, *, since: Any = "24h", end: datetime | None = None, buckets: int = 48) -> dict[str, Any]:
    """``{"start", "end", "bucket_s", "routes": {route: [{"t", "requests", "errors", "p50_ms", "p99_ms"}, ...]}}``.

    ``since``: a duration ("24h", "7d"), a timedelta or a start datetime; ``buckets``: how
    many equal time buckets the window is cut into (at most :data:`MAX_BUCKETS`).
    """
    import duckdb

    from keel.deployments.compare import _since
    from keel.store import predictions as P
    from keel.store.lake import sql_string

    if not 1 <= int(buckets) <= MAX_BUCKETS:
        raise ValidationError(f"buckets={buckets!r} is not between 1 and {MAX_BUCKETS}.", hint="e.g. buckets=48 for half-hours over a day.")
    spec = get_deployment(name).spec
    end = (end or datetime.now(UTC)).astimezone(UTC)
    start = _since(since)
    if start >= end:
        raise ValidationError(f"The window starts at {start.isoformat()}, after its end {end.isoformat()}.", hint="Give a positive duration, e.g. 24h.")
    bucket_s = max(1.0, (end - start).total_seconds() / int(buckets))
    out: dict[str, Any] = {"start": start, "end": end, "bucket_s": bucket_s, "routes": {r.name: [] for r in spec.routes}}
    for model in sorted({r.model for r in spec.routes}):
        routes = [r.name for r in spec.routes if r.model == model]
        paths = P.files(model, start=start, end=end)
        if not paths:
            continue
        scan = f"read_parquet([{', '.join(sql_string(p) for p in paths)}], union_by_name = true)"
        marks = ", ".join("?" for _ in routes)
        sql = (f"SELECT route, floor((epoch(ts) - ?) / ?) AS b, count(*), "
               f"sum(CASE WHEN coalesce(status, 'ok') <> 'ok' THEN 1 ELSE 0 END), "
               f"quantile_cont(latency_ms, 0.5), quantile_cont(latency_ms, 0.99) "
               f"FROM {scan} WHERE ts >= ? AND ts < ? AND route IN ({marks}) GROUP BY route, b ORDER BY route, b")
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            rows = con.execute(sql, [start.timestamp(), bucket_s, start, end, *routes]).fetchall()
        finally:
            con.close()
        for route, b, n, errors, p50, p99 in rows:
            out["routes"][route].append({"t": start.timestamp() + (float(b) + 0.5) * bucket_s, "requests": int(n), "errors": int(errors or 0),
                                         "p50_ms": None if p50 is None else float(p50), "p99_ms": None if p99 is None else float(p99)})
    return out
