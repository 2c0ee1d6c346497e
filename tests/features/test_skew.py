"""Row-level skew: the offline and online paths must agree value by value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from keel.features.materialization import materialize
from keel.features.online import reset_context
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


def _serve_churn_model(root: Path) -> Any:
    """A model trained from churn_v1, at models:/churn_fs@live."""
    import keel
    from keel.registry.transitions import set_alias

    labels = pd.read_parquet(root / "data" / "usage.parquet")[["customer_id", "event_timestamp"]].iloc[::4].reset_index(drop=True)
    labels["churned"] = labels["customer_id"] % 3 == 0
    labels["discount"] = 0.1
    ts = keel.get_training_set(labels, "churn_v1")
    X = ts.drop(columns=["customer_id", "event_timestamp", "churned", "discount", "plan", "region"]).astype("float64")
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(max_iter=10, min_samples_leaf=5).fit(X, ts["churned"])
    with keel.start_run():
        keel.log_dataset(ts, "train")
        info = keel.log_model(model, signature=X, input_example=X.head(3))
    version = keel.register_model(info.uri, "churn_fs")
    set_alias("churn_fs", "live", version.version)
    return version


def test_served_values_come_from_the_prediction_log_and_are_checked_as_of_each_request(
    churn_project: tuple[Path, dict[str, pd.DataFrame]], make_data: Any
) -> None:
    import pytest

    from keel.errors import NotFoundError
    from keel.serving import Predictor
    from keel.store.prediction_log import close_prediction_log

    root, _ = churn_project
    make_data(root, start=datetime.now(UTC) - timedelta(days=40))
    apply()
    materialize()
    _serve_churn_model(root)
    with pytest.raises(NotFoundError, match="prediction log"):
        check_skew("churn_v1", served=True)
    customers = list(range(1, 41))
    predictor = Predictor("models:/churn_fs@live")
    predictor.predict([{"customer_id": c, "discount": 0.1} for c in customers])
    report = check_skew("churn_v1", served=True, sample=40)
    assert report.against == "served" and report.sample == 40 and report.ok, report
    assert sum(f.compared for f in report.features) > 0
    assert {f.feature for f in report.features} >= {"sessions", "minutes_per_session", "tenure_months"}

    # the online store now holds values computed another way: what is served differs
    from keel.store.kv import get_kv_store

    _skew_online_values(get_kv_store(), "minutes_per_session")
    reset_context()
    predictor.predict([{"customer_id": c, "discount": 0.1} for c in customers])
    report = check_skew("churn_v1", served=True, sample=80)
    assert not report.ok
    (bad,) = report.mismatched
    assert bad.feature == "minutes_per_session" and bad.mismatches > 0
    assert {"customer_id", "served_at", "offline", "served"} <= set(bad.examples[0])
    close_prediction_log()
