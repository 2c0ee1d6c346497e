"""Row-level skew: the offline and online paths must agree value by value."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from keel.features.materialization import materialize
from keel.features.registry import apply
from keel.features.skew import check_skew
from keel.store.kv import open_kv_store


def test_skew_check_catches_a_skewed_transformation(churn_project: tuple[Path, dict[str, pd.DataFrame]], make_data: Any) -> None:
    root, _ = churn_project
    make_data(root, start=datetime.now(UTC) - timedelta(days=40))  # recent: within the TTL
    apply()
    store = open_kv_store("memory://skew")
    materialize(store=store)
    assert check_skew("churn_v1", sample=30, store=store).ok

    # the serving side now computes minutes_per_session differently from training
    path = root / "features.py"
    path.write_text(path.read_text().replace("minutes / nullif(sessions, 0)", "minutes / nullif(sessions + 1, 0)"))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    report = check_skew("churn_v1", sample=30, store=store)
    assert not report.ok, report
    (bad,) = report.mismatched
    assert bad.feature == "minutes_per_session" and bad.mismatches > 0 and bad.stale == 0
    example = bad.examples[0]
    assert {"customer_id", "offline", "online"} <= set(example) and example["offline"] != example["online"]
    assert all(f.mismatches == 0 for f in report.features if f.feature != "minutes_per_session")


def test_stale_online_values_are_reported_apart_from_skew(churn_project: tuple[Path, dict[str, pd.DataFrame]], make_data: Any) -> None:
    root, _ = churn_project
    make_data(root, start=datetime.now(UTC) - timedelta(days=40))
    apply()
    store = open_kv_store("memory://stale")
    materialize(store=store, end=datetime.now(UTC) - timedelta(days=20))
    report = check_skew(["profile:plan", "usage:minutes"], sample=50, store=store)
    assert report.ok
    minutes = next(f for f in report.features if f.feature == "minutes")
    assert minutes.stale > 0 and minutes.mismatches == 0
