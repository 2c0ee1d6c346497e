"""The monitor window: only its rows (no shadow route), only the columns asked for, count windows exact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from keel.monitoring.window import open_window
from keel.store import predictions

T0 = pd.Timestamp("2026-02-01", tz="UTC")


def _log(version: int, n: int, start: Any, *, step_s: float, route: str = "default", prefix: str = "r", seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = pd.Timestamp(start) + pd.to_timedelta(np.arange(n) * step_s, unit="s")
    frame = pd.DataFrame({
        "request_id": [f"{prefix}-{i:05d}" for i in range(n)], "ts": ts, "model": "m", "version": version, "route": route,
        "latency_ms": rng.gamma(2.0, 3.0, n), "status": np.where(rng.random(n) < 0.1, "error", "ok"),
        "x": rng.normal(size=n), "y": rng.normal(size=n), "score": rng.random(n),
    })
    table = pa.Table.from_pandas(frame, preserve_index=False)
    missing = [["x"] if i % 7 == 0 else [] for i in range(n)]
    predictions.append(table.append_column("missing_features", pa.array(missing, pa.list_(pa.string()))))
    return frame.assign(missing=[bool(m) for m in missing])


def test_a_time_window_reads_its_rows_and_columns_only(project: Path) -> None:
    a = _log(1, 3000, T0, step_s=20)  # 16.7 hours
    b = _log(2, 1000, T0 + pd.Timedelta(hours=10), step_s=30, prefix="b", seed=1)
    shadow = _log(2, 500, T0 + pd.Timedelta(hours=10), step_s=30, route="shadow", prefix="s", seed=2)
    before = _log(1, 200, T0 - pd.Timedelta(days=1), step_s=60, prefix="old", seed=3)
    end = T0 + pd.Timedelta(hours=14)
    w = open_window("m", pd.Timedelta(hours=12).to_pytimedelta(), end)
    inside = lambda f: f[(f["ts"] >= end - pd.Timedelta(hours=12)) & (f["ts"] < end)]  # noqa: E731
    assert w.counts == {1: len(inside(a)), 2: len(inside(b))} and w.rows == len(inside(a)) + len(inside(b))
    assert len(inside(shadow)) > 0 and len(inside(before)) == 0
    t = w.read(2, ["x", "score", "not_logged"])
    assert t.column_names == ["x", "score"] and sorted(t["x"].to_pylist()) == sorted(inside(b)["x"].tolist())
    both = pd.concat([inside(a), inside(b)])
    svc = w.service()
    assert svc["volume"] == len(both)
    assert abs(svc["latency_p99_ms"] - np.quantile(both["latency_ms"], 0.99)) < 1e-9
    assert abs(svc["error_rate"] - (both["status"] != "ok").mean()) < 1e-12
    assert abs(svc["missing_feature_rate"] - both["missing"].mean()) < 1e-12


def test_a_count_window_takes_exactly_the_newest_rows(project: Path) -> None:
    _log(1, 4000, T0, step_s=1)
    _log(2, 300, T0 + pd.Timedelta(seconds=3900), step_s=0.5, prefix="b", seed=1)
    _log(1, 400, T0 + pd.Timedelta(seconds=3950), step_s=0.1, route="shadow", prefix="s", seed=2)
    end = T0 + pd.Timedelta(hours=3)
    w = open_window("m", 1000, end)
    assert w.rows == 1000
    got = pa.concat_tables([w.read(v, ["request_id", "ts"]) for v in w.versions]).to_pandas()
    full = predictions.read("m", end=end).to_pandas()
    expected = full[full["route"] != "shadow"].sort_values(["ts", "request_id"]).tail(1000)
    assert sorted(got["request_id"]) == sorted(expected["request_id"])
    assert w.start == expected["ts"].iloc[0]
    assert open_window("m", 10**6, end).rows == 4300  # more than the log holds: all of it
    assert open_window("nothing-logged", 10, end).rows == 0
