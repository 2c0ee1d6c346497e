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


def test_served_values_are_logged_and_checked_as_of_each_request(
    churn_project: tuple[Path, dict[str, pd.DataFrame]], make_data: Any, monkeypatch: Any
) -> None:
    import pytest

    import keel
    from keel.errors import NotFoundError
    from keel.features import served
    from keel.features.online import reset_context
    from keel.store.lake import get_lake

    root, _ = churn_project
    make_data(root, start=datetime.now(UTC) - timedelta(days=40))
    apply()
    with pytest.raises(NotFoundError, match="KEEL_LOG_SERVED_FEATURES"):
        check_skew("churn_v1", served=True)
    materialize()
    monkeypatch.setenv("KEEL_LOG_SERVED_FEATURES", "true")
    reset_context()
    customers = list(range(1, 41))
    keel.get_online_features("churn_v1", [{"customer_id": c, "discount": 0.1} for c in customers])
    served.flush()
    logged = get_lake().read(served.dataset("churn_v1")).to_pandas()
    assert set(logged["customer_id"]) == set(customers) and {"feature", "value", "event_us", "status", "served_at"} <= set(logged.columns)
    report = check_skew("churn_v1", served=True, sample=40)
    assert report.against == "served" and report.sample == 40 and report.ok, report
    assert sum(f.compared for f in report.features) > 0

    # the online store now holds values computed by another transformation: what is served differs
    path = root / "features.py"
    path.write_text(path.read_text().replace("minutes / nullif(sessions, 0)", "minutes / nullif(sessions + 1, 0)"))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    apply()
    materialize(start=datetime.now(UTC) - timedelta(days=400))
    path.write_text(path.read_text().replace("minutes / nullif(sessions + 1, 0)", "minutes / nullif(sessions, 0)"))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 2_000_000))
    apply()
    reset_context()
    keel.get_online_features("churn_v1", [{"customer_id": c, "discount": 0.1} for c in customers])
    report = check_skew("churn_v1", served=True, sample=80)
    assert not report.ok
    (bad,) = report.mismatched
    assert bad.feature == "minutes_per_session" and bad.mismatches > 0
    assert {"customer_id", "served_at", "offline", "served"} <= set(bad.examples[0])
