"""Baselines: built on registration and on demand, stored once, read back exactly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.errors import NotFoundError, ValidationError
from keel.monitoring import baselines as B
from tests.monitoring.conftest import make_data


def test_registration_builds_the_baseline_from_the_validation_data(registered: Callable[..., Any]) -> None:
    mv = registered()
    b = B.get_baseline("churn", mv.version)
    assert b.task == "binary" and b.rows == 4000 and b.reference.rows == 4000
    assert set(b.columns) == {"charges", "tenure", "control", "plan", "prediction", "score"}
    assert b.performance["roc_auc"] > 0.75  # the label was found: the one column the model does not take
    charges = b.reference.columns["charges"]
    assert charges.summary["quantiles"]["0.5"] == pytest.approx(65, abs=1.5)
    assert len(charges.edges) == 9 and charges.counts.sum() == 4000 and len(charges.null_samples["ks"]) == 20
    assert b.reference.columns["plan"].categories == ["basic", "plus", "pro"]
    assert b.reference.columns["prediction"].kind == "categorical"


def test_without_validation_data_there_is_no_baseline_and_the_error_says_how(registered: Callable[..., Any]) -> None:
    mv = registered(validation=False)
    with pytest.raises(NotFoundError, match="keel monitor baseline churn --version 1 --data"):
        B.get_baseline("churn", mv.version)


def test_on_demand_baseline_samples_and_replaces(registered: Callable[..., Any], project: Path) -> None:
    mv = registered(validation=False)
    data = make_data(3000, 5)
    b = B.build_baseline("churn", data, target="churn", sample_rows=1000)
    assert b.version == mv.version and b.rows == 3000 and b.reference.rows == 1000
    again = B.build_baseline("churn", data.drop(columns=["churn"]))
    assert again.performance == {} and B.get_baseline("churn", 1).reference.rows == 3000
    assert [r["version"] for r in B.list_baselines("churn")] == [1]
    with pytest.raises(ValidationError, match="Did you mean 'churn'"):
        B.build_baseline("churn", data, target="chrun")
    with pytest.raises(ValidationError, match="no rows"):
        B.build_baseline("churn", data.iloc[:0])


def test_a_stored_baseline_gives_the_same_drift_as_its_sample(registered: Callable[..., Any]) -> None:
    registered()
    b = B.get_baseline("churn", 1)
    cur = make_data(2000, 9, shift=6.0)
    from keel.monitoring.baselines import score_table
    from keel.monitoring.drift import as_table

    scored, _ = score_table(keel.load_model("models:/churn/1"), as_table(cur.drop(columns=["churn"]), "x"))
    stored = keel.drift(b, scored).to_frame()
    fresh = keel.drift(b.reference.sample.drop_columns(["__target__"]), scored).to_frame()
    assert stored["statistic"].tolist() == pytest.approx(fresh["statistic"].tolist(), abs=1e-12)
    assert "charges" in set(stored.loc[stored["drifted"], "column"]) and "control" not in set(stored.loc[stored["drifted"], "column"])


def test_baselines_on_postgres(pg_project: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    data = make_data(1500, 3)
    cols = ["charges", "tenure", "control"]
    with keel.start_run():
        info = keel.log_model(LogisticRegression().fit(data[cols], data["churn"]), input_example=data[cols].head(3))
    keel.register_model(info.uri, "pgchurn")
    B.build_baseline("pgchurn", data[[*cols, "churn"]], target="churn")
    assert B.get_baseline("pgchurn", 1).performance["accuracy"] > 0.6
