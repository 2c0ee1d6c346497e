"""Delayed labels: join by request id or entity + time, corrections, unknown ids, duplicates, late; performance."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import keel
from keel.errors import NotFoundError, ValidationError
from keel.monitoring import feedback as F
from keel.monitoring import performance as P
from keel.store import predictions
from tests.monitoring.conftest import log_rows, make_data

T0 = pd.Timestamp("2026-01-01", tz="UTC")


def test_labels_join_by_request_id_with_every_case_counted(registered: Callable[..., Any]) -> None:
    registered()
    data = make_data(200, 3)
    ids = log_rows("churn", 1, data, T0)
    first = keel.log_feedback(ids[:100], data["churn"][:100], model="churn")
    assert (first.received, first.matched, first.unknown, first.duplicates, first.corrections) == (100, 100, 0, 0, 0)
    flipped = 1 - data["churn"][:10].to_numpy()
    second = keel.log_feedback([*ids[:10], "nope-1", "nope-2", ids[50], ids[50]], [*flipped, 1, 0, 1, 1], model="churn")
    assert second.corrections == 11 and second.unknown == 2 and second.duplicates == 1 and second.matched == 11
    assert second.unknown_examples == ["nope-1", "nope-2"] and "2 unknown" in second.summary()
    joined = F.join_labels("churn", predictions.read("churn")).to_pandas()
    assert joined["label_value"].notna().sum() == 100
    assert joined["label_value"][:10].tolist() == flipped.astype(float).tolist()  # the newer label replaced the first
    assert set(joined["label_source"].dropna()) == {"request_id"}
    assert keel.log_feedback(ids[:3], [1, 0, 1]).model == "churn"  # the model found from the ids


def test_late_labels_are_counted(registered: Callable[..., Any]) -> None:
    registered()
    data = make_data(50, 4)
    ids = log_rows("churn", 1, data, T0)  # predicted in 2026-01, labelled now
    report = keel.log_feedback(ids, data["churn"], model="churn", horizon="30d")
    assert report.late == 50 and report.matched == 50


def test_labels_by_entity_attach_to_the_latest_prediction_before_them_within_the_horizon(registered: Callable[..., Any]) -> None:
    registered()
    data = make_data(3, 5)
    data["customer"] = ["c1", "c2", "c1"]
    log_rows("churn", 1, data, T0, step_s=3600)  # c1 at 00:00 and 02:00, c2 at 01:00
    when = [T0 + pd.Timedelta("90min"), T0 + pd.Timedelta("3h"), T0 + pd.Timedelta(days=40)]
    report = keel.log_feedback(None, [1, 0, 1], model="churn", entities=["c1", "c1", "c2"], timestamps=when, entity_column="customer", horizon="30d")
    assert report.matched_by_entity == 2 and report.unknown == 1
    joined = F.join_labels("churn", predictions.read("churn"), entity="customer", horizon="30d").to_pandas()
    assert joined["label_value"].tolist()[0] == 1.0  # c1's 00:00 prediction: the 01:30 label
    assert joined["label_value"].tolist()[2] == 0.0  # c1's 02:00 prediction: the 03:00 label
    assert np.isnan(joined["label_value"].tolist()[1])  # c2's label came 40 days later: beyond the horizon
    assert joined["label_source"].tolist()[0] == "entity"


def test_feedback_import_and_bad_input(registered: Callable[..., Any], project: Path) -> None:
    registered()
    data = make_data(20, 6)
    ids = log_rows("churn", 1, data, T0)
    pd.DataFrame({"id": ids, "truth": data["churn"], "time": [T0] * 20}).to_csv(project / "labels.csv", index=False)
    report = F.import_feedback(project / "labels.csv", model="churn", id_column="id", label_column="truth")
    assert report.matched == 20
    with pytest.raises(ValidationError, match="Did you mean 'truth'"):
        F.import_feedback(project / "labels.csv", model="churn", id_column="id", label_column="truths")
    with pytest.raises(ValidationError, match="3 request ids for 2 labels"):
        keel.log_feedback(["a", "b", "c"], [1, 0], model="churn")
    with pytest.raises(NotFoundError, match="model='churn'"):
        keel.log_feedback(["zzz"], [1])
    with pytest.raises(ValidationError, match="not understood"):
        F.parse_duration("soon")


def test_realized_performance_with_coverage_and_labels_that_never_arrive(registered: Callable[..., Any]) -> None:
    registered()
    data = make_data(1000, 7)
    ids = log_rows("churn", 1, data, T0)
    none = P.realized(F.join_labels("churn", predictions.read("churn")), "binary")
    assert none["coverage"] == 0.0 and none["metrics"] == {}
    keel.log_feedback(ids[:400], data["churn"][:400], model="churn")
    got = P.realized(F.join_labels("churn", predictions.read("churn")), "binary")
    assert got["coverage"] == pytest.approx(0.4) and got["labelled"] == 400
    from sklearn.metrics import roc_auc_score

    window = predictions.read("churn").to_pandas()[:400]
    assert got["metrics"]["roc_auc"] == pytest.approx(roc_auc_score(data["churn"][:400], window["score"]), abs=1e-9)


def test_cbpe_estimates_performance_without_labels_and_agrees_with_the_realized() -> None:
    rng = np.random.default_rng(8)
    score = rng.beta(2, 3, 20_000)
    label = (rng.random(20_000) < score).astype(float)  # calibrated scores
    est = P.estimate_cbpe(score)
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    assert est["accuracy"] == pytest.approx(accuracy_score(label, score >= 0.5), abs=0.01)
    assert est["roc_auc"] == pytest.approx(roc_auc_score(label, score), abs=0.01)
    assert est["f1"] == pytest.approx(f1_score(label, score >= 0.5), abs=0.015)
    skewed = score**2  # mis-calibrated; the baseline's labels repair it
    cal = P.Calibrator((skewed[:10_000], label[:10_000]))
    fixed = P.estimate_cbpe(skewed[10_000:], cal)
    assert fixed["accuracy"] == pytest.approx(accuracy_score(label[10_000:], skewed[10_000:] >= 0.5), abs=0.015)  # the model decides on its raw score
    assert P.estimate_cbpe(skewed[10_000:])["accuracy"] != pytest.approx(fixed["accuracy"], abs=0.03)  # uncalibrated is off
    assert P.estimate_cbpe(np.array([])) == {}


def test_business_metrics() -> None:
    import pyarrow as pa

    t = pa.table({"score": np.linspace(0, 1, 100), "label_value": (np.arange(100) >= 90).astype(float), "prediction": np.zeros(100)})
    out = P.business(t, {"p_top5": "precision_at_top:0.05", "revenue": lambda f: float((f["score"] * 10).sum()), "broken": lambda f: 1 / 0})
    assert out["p_top5"] == 1.0 and out["revenue"] == pytest.approx(500.0) and out["broken"] is None
    with pytest.raises(ValidationError, match="module:function"):
        P.resolve_metric("nothing")
