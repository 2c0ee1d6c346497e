"""Row-level skew: the offline and online paths must agree value by value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from keel.features.materialization import materialize
from keel.features.registry import apply
from keel.features.skew import check_skew
from keel.store.kv import open_kv_store


def _skew_online_values(store: Any, feature: str) -> None:
    """Rewrite ``feature`` of every stored usage value at the same version, as a skewed writer would."""
    import json

    from keel.features.loader import load_definitions
    from keel.features.materialization import namespace

    view = load_definitions().view("usage")
    ns = namespace(view)
    keys = [str(i) for i in range(1, 200)]
    blobs = store.get_many([(ns, keys)])[0]
    found = [(k, json.loads(b)) for k, b in zip(keys, blobs, strict=True) if b is not None]
    for _, row in found:
        if row.get(feature) is not None:
            row[feature] = row[feature] * 1.5 + 1
    version = [f"{row['__e']:018d}" + "9" * 18 for _, row in found]  # same event, a later write
    store.put_many(ns, [k for k, _ in found], version, [json.dumps(r).encode() for _, r in found])


def test_skew_check_catches_a_skewed_transformation(churn_project: tuple[Path, dict[str, pd.DataFrame]], make_data: Any) -> None:
    root, _ = churn_project
    make_data(root, start=datetime.now(UTC) - timedelta(days=40))  # recent: within the TTL
    apply()
    store = open_kv_store("memory://skew")
    materialize(store=store)
    assert check_skew("churn_v1", sample=30, store=store).ok

    # another writer put values computed differently from training into the online store
    _skew_online_values(store, "minutes_per_session")
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

    # the online store now holds values computed another way: what is served differs
    from keel.store.kv import get_kv_store

    _skew_online_values(get_kv_store(), "minutes_per_session")
    reset_context()
    keel.get_online_features("churn_v1", [{"customer_id": c, "discount": 0.1} for c in customers])
    report = check_skew("churn_v1", served=True, sample=80)
    assert not report.ok
    (bad,) = report.mismatched
    assert bad.feature == "minutes_per_session" and bad.mismatches > 0
    assert {"customer_id", "served_at", "offline", "served"} <= set(bad.examples[0])
