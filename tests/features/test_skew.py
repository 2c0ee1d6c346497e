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

    # the online store now holds values computed by another transformation: what is served differs
    path = root / "features.py"
    path.write_text(path.read_text().replace("minutes / nullif(sessions, 0)", "minutes / nullif(sessions + 1, 0)"))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    apply()
    materialize(start=datetime.now(UTC) - timedelta(days=400))
    path.write_text(path.read_text().replace("minutes / nullif(sessions + 1, 0)", "minutes / nullif(sessions, 0)"))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 2_000_000))
    apply()
    predictor.predict([{"customer_id": c, "discount": 0.1} for c in customers])
    report = check_skew("churn_v1", served=True, sample=80)
    assert not report.ok
    (bad,) = report.mismatched
    assert bad.feature == "minutes_per_session" and bad.mismatches > 0
    assert {"customer_id", "served_at", "offline", "served"} <= set(bad.examples[0])
    close_prediction_log()
