"""The prediction log's part summaries: footer stats, the request-id Bloom filter, the cache, the listing."""

from __future__ import annotations

import glob
import math
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keel.store import predictions as P


def rows(ids: list[str], *, version: int = 1, ts: datetime | None = None, status: str = "ok", model: str = "m", step_s: float = 0) -> pa.Table:
    n = len(ids)
    t0 = ts or datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    return P.normalize(pa.table({
        "request_id": ids, "model": [model] * n, "version": [version] * n,
        "ts": pa.array([t0 + timedelta(seconds=i * step_s) for i in range(n)], pa.timestamp("us", tz="UTC")),
        "status": [status] * n, "latency_ms": [float(i) for i in range(n)], "x": [1.0] * n, "prediction": [0] * n}))


def test_parts_carry_stats_and_a_bloom_filter_that_never_misses(project: Path) -> None:
    ids = [f"req-{i}" for i in range(3000)] + [f"batch-7:{i}" for i in range(4)]
    [path] = P.write(rows(ids, status="error"), writer="a")
    meta = pq.read_metadata(path).metadata
    stats = P.part_stats(pq.read_table(path))
    assert P.summaries("m", [path])[0][0] == stats and stats["rows"] == 3004 and stats["status"] == {"error": 3004}
    assert P.STATS_KEY in meta and P.IDS_KEY in meta
    assert all(P.files_holding("m", i) == [path] for i in ids)  # no false negative, batch rows by their own id too
    assert P.files_holding("m", "batch-7") == [path]  # and by the request's id (its rows are ID:n)
    misses = sum(bool(P.files_holding("m", f"other-{i}")) for i in range(2000))
    assert misses < 100  # about 1 % false positives
    # DuckDB's reader sees the Parquet Bloom filter on request_id too
    assert duckdb.connect().execute(f"SELECT bloom_filter_excludes FROM parquet_bloom_probe('{path}', 'request_id', 'nope-1')").fetchall() == [(True,)]


def test_lookup_reads_only_candidate_parts_and_finds_what_a_full_scan_finds(project: Path) -> None:
    from keel.loop.lineage import find_prediction

    for h in range(6):
        P.write(rows([f"r{h}-{i}" for i in range(500)], version=1 + h % 2, ts=datetime(2026, 1, 2, h, tzinfo=UTC)), writer=f"w{h}")
    assert len(P.files_holding("m", "r4-17")) < len(P.files("m"))
    assert [r["version"] for r in find_prediction("r4-17")["rows"]] == [1]
    assert [r["version"] for r in find_prediction("r3-499", model="m")["rows"]] == [2]
    from keel.errors import NotFoundError

    with pytest.raises(NotFoundError, match="r9-1"):
        find_prediction("r9-1")


def test_summary_cache_follows_rewritten_and_old_parts(project: Path) -> None:
    [path] = P.write(rows(["a", "b"]), writer="same")
    assert P.summaries("m", [path])[0][0]["rows"] == 2
    cache = Path(P._cache_file("m"))
    assert cache.exists()
    os.utime(path, ns=(1, 1))  # pretend a long time passed, then rewrite the part under the same name
    [again] = P.write(rows(["a", "b", "c"]), writer="same")
    assert again == path
    P._SUMMARIES.clear()
    P._LOADED.clear()
    assert P.summaries("m", [path])[0][0]["rows"] == 3 and P.files_holding("m", "c") == [path]
    # a part written without keel's footer (an older keel): summarized from its rows, once
    old = Path(path).with_name("part-old.parquet")
    pq.write_table(rows(["z1", "z2"], status="error"), old)
    stats, _ = P.summaries("m", [str(old)])[0]
    assert stats["rows"] == 2 and stats["status"] == {"error": 2} and P.files_holding("m", "z2") == [str(old)]


def test_files_lists_what_the_lake_holds_in_order(project: Path) -> None:
    for v, h in ((1, 0), (2, 5), (10, 23), (2, 6)):
        P.write(rows([f"{v}-{h}"], version=v, ts=datetime(2026, 1, 2, h, 30, tzinfo=UTC)), writer=f"w{v}{h}")
    from keel.store.lake import get_lake

    lake = get_lake()
    expected = [str(p) for name in P.partitions("m") for p in lake.files(name)]
    assert P.files("m") == expected and len(expected) == 4
    assert sorted(P.files("m")) == sorted(glob.glob(str(lake.path("predictions/m") / "**" / "*.parquet"), recursive=True))
    start, end = datetime(2026, 1, 2, 5, 45, tzinfo=UTC), datetime(2026, 1, 2, 7, tzinfo=UTC)
    assert P.files("m", start=start, end=end) == [str(p) for name in P.partitions("m", start=start, end=end) for p in lake.files(name)]
    assert len(P.files("m", start=start, end=end)) == 2 and len(P.files("m", version=2)) == 2
    assert P.models() == ["m"] and P.files("nobody") == []


def _health_by_hand(paths: list[str], start: datetime) -> dict[str, Any]:
    from keel.store.lake import sql_string

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    scan = f"(SELECT * FROM read_parquet([{', '.join(sql_string(p) for p in paths)}], union_by_name = true) WHERE ts >= ?)"
    per_version = con.execute(
        f"SELECT version, count(*), avg(CASE WHEN coalesce(status, 'ok') <> 'ok' THEN 1 ELSE 0 END), quantile_cont(latency_ms, 0.5), "
        f"quantile_cont(latency_ms, 0.99), avg(CASE WHEN len(coalesce(missing_features, [])) > 0 THEN 1 ELSE 0 END) "
        f"FROM {scan} GROUP BY version ORDER BY version", [start]).fetchall()
    per_day = con.execute(f"SELECT date_trunc('day', ts) AS d, count(*) FROM {scan} GROUP BY d ORDER BY d", [start]).fetchall()
    versions = [{"version": int(v), "rows": int(n), "error_share": float(e or 0), "latency_p50_ms": p50, "latency_p99_ms": p99,
                 "missing_features_share": float(mf or 0)} for v, n, e, p50, p99, mf in per_version]
    return {"rows": sum(v["rows"] for v in versions), "versions": versions,
            "days": [{"day": d.date().isoformat(), "rows": int(n)} for d, n in per_day]}


def test_log_health_from_summaries_equals_the_full_scan(project: Path) -> None:
    from keel.loop.diagnose import _log_health

    now = datetime.now(UTC).replace(minute=30)
    for h in range(0, 60, 7):  # every 7 hours back: several days, two versions, a few failures
        t = now - timedelta(hours=h)
        P.write(rows([f"{h}-{i}" for i in range(50 + h)], version=1 + h % 2, ts=t, status="error" if h % 3 == 0 else "ok"), writer=f"h{h}")
    mixed = rows([f"mix-{i}" for i in range(40)], version=1, ts=now - timedelta(hours=30))  # one part, two versions, written by hand
    mixed = pa.concat_tables([mixed, rows(["mix-v2"], version=2, ts=now - timedelta(hours=30, minutes=-1))])
    P.write(mixed.slice(0, 0), writer="none")
    folder = Path(P.files("m")[0]).parent
    pq.write_table(mixed, folder / "part-mixed.parquet")
    start = now - timedelta(hours=43, minutes=10)
    P.write(rows([f"cut-{i}" for i in range(60)], version=2, ts=start - timedelta(minutes=5), step_s=10), writer="cut")  # the window cuts it
    paths = P.files("m", start=start)
    assert any(st["ts_min_us"] < start.timestamp() * 1e6 <= st["ts_max_us"] for st, _ in P.summaries("m", paths))

    class MV:
        model = "m"

    got, expected = _log_health(MV(), start), _health_by_hand(paths, start)
    for health in (got, expected):
        for v in health["versions"]:
            v["latency_p50_ms"], v["latency_p99_ms"] = round(v["latency_p50_ms"], 9), round(v["latency_p99_ms"], 9)
    assert got == expected
    assert _log_health(MV(), now + timedelta(days=1)) == {"rows": 0, "days": [], "versions": []}


def test_latency_quantiles_from_histograms_are_duckdbs(project: Path) -> None:
    import numpy as np

    from keel.loop.diagnose import _quantiles
    from keel.store.lake import sql_string

    rng = np.random.default_rng(5)
    for i, n in enumerate((997, 1500, 3)):
        t = rows([f"q{i}-{j}" for j in range(n)], version=1 + i % 2, ts=datetime(2026, 1, 2, i, tzinfo=UTC))
        lat = rng.gamma(2.0, 1.5, n) * (10 if i == 1 else 1)
        lat[:5] = 2.0  # ties
        P.write(t.set_column(t.column_names.index("latency_ms"), "latency_ms", pa.array(lat)), writer=f"q{i}")
    paths = P.files("m")
    bins: dict[int, Any] = {}
    for st, _ in P.summaries("m", paths):
        h = bins.setdefault(int(next(iter(st["versions"]))), np.zeros(len(P.latency_edges()) + 2, np.int64))
        P.add_histogram(h, st["latency_bins"])
    scan = f"SELECT version, latency_ms FROM read_parquet([{', '.join(sql_string(p) for p in paths)}])"
    sql: list[str] = []
    con = duckdb.connect()

    class Spy:
        def execute(self, q: str, args: Any) -> Any:
            sql.append(q)
            return con.execute(q, args)

    got = _quantiles(Spy(), scan, {}, bins)
    expected = {v: (a, b) for v, a, b in con.execute(
        f"SELECT version, quantile_cont(latency_ms, 0.5), quantile_cont(latency_ms, 0.99) FROM ({scan}) GROUP BY version").fetchall()}
    assert got.keys() == expected.keys() and len(got) == 2
    assert all(math.isclose(g, e, rel_tol=1e-12) for v in got for g, e in zip(got[v], expected[v], strict=True))  # DuckDB rounds its last step its own way
    assert sql and not any("quantile_cont" in q for q in sql)  # answered from the histogram bins, not DuckDB's sort
    bins[1][-1] = 1  # an open count (NaN): DuckDB answers
    assert _quantiles(Spy(), scan, {}, bins) == expected and "quantile_cont" in sql[-1]


def test_summary_cache_forgets_deleted_parts(project: Path) -> None:
    [a] = P.write(rows(["a"], ts=datetime(2026, 1, 2, 1, tzinfo=UTC)), writer="a")
    [b] = P.write(rows(["b"], ts=datetime(2026, 1, 2, 2, tzinfo=UTC)), writer="b")
    P.summaries("m", [a, b])
    os.unlink(a)
    [c] = P.write(rows(["c"], ts=datetime(2026, 1, 2, 3, tzinfo=UTC)), writer="c")
    P.summaries("m", [b, c])
    cached = pa.ipc.open_file(pa.memory_map(str(P._cache_file("m")))).read_all()["path"].to_pylist()
    assert sorted(cached) == sorted([b, c])
