"""keel.evaluate: metrics match scikit-learn, slices, custom metrics, paired bootstrap, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sklearn.metrics as skm

import keel
from keel.errors import ValidationError
from keel.evaluation import metrics as M
from keel.evaluation.evaluate import Predictions, paired_bootstrap


class Scores:
    """A 'model' whose P(positive) is a column of the data: lets tests control the scores exactly."""

    def __init__(self, column: str) -> None:
        self.column = column
        self.classes_ = np.array([0, 1])

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        p = df[self.column].to_numpy()
        return np.column_stack([1 - p, p])

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        return (df[self.column].to_numpy() >= 0.5).astype(int)


class Regressor:
    def predict(self, df: pd.DataFrame) -> np.ndarray:
        return df["guess"].to_numpy()


def _binary(n: int = 400, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    good = np.clip(0.25 + 0.5 * y + rng.normal(0, 0.2, n), 0.001, 0.999).round(2)
    bad = np.clip(0.4 + 0.2 * y + rng.normal(0, 0.3, n), 0.001, 0.999).round(2)
    return pd.DataFrame({"good": good, "bad": bad, "region": rng.choice(["north", "south", "east"], n), "age": rng.uniform(18, 80, n), "y": y})


def test_binary_metrics_match_sklearn(project: Path) -> None:
    df = _binary()
    res = keel.evaluate(Scores("good"), df, target="y", task="binary", threshold=0.6)
    y, p = df["y"].to_numpy(), df["good"].to_numpy()
    pred = (p >= 0.6).astype(int)
    expected = {
        "accuracy": skm.accuracy_score(y, pred), "precision": skm.precision_score(y, pred), "recall": skm.recall_score(y, pred),
        "f1": skm.f1_score(y, pred), "roc_auc": skm.roc_auc_score(y, p), "pr_auc": skm.average_precision_score(y, p),
        "log_loss": skm.log_loss(y, p), "brier": skm.brier_score_loss(y, p),
    }
    for k, v in expected.items():
        assert res.metrics[k] == pytest.approx(v, rel=1e-9), k
    assert res.confusion_matrix is not None
    assert res.confusion_matrix["matrix"] == skm.confusion_matrix(y, pred).tolist()
    # calibration error: 10 equal-width bins of |mean(y) - mean(p)| weighted by bin size
    bins = np.minimum((p * 10).astype(int), 9)
    ece = sum(abs(y[bins == b].mean() - p[bins == b].mean()) * (bins == b).mean() for b in range(10) if (bins == b).any())
    assert res.metrics["ece"] == pytest.approx(ece)


def test_multiclass_and_regression_match_sklearn(project: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    X = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    y = np.where(X.a > 0.5, "hi", np.where(X.a < -0.5, "lo", "mid"))
    model = LogisticRegression().fit(X, y)
    res = keel.evaluate(model, X.assign(label=y), target="label", task="multiclass")
    proba = model.predict_proba(X)
    assert res.metrics["accuracy"] == pytest.approx(skm.accuracy_score(y, model.predict(X)))
    assert res.metrics["f1"] == pytest.approx(skm.f1_score(y, model.predict(X), average="macro"))
    assert res.metrics["log_loss"] == pytest.approx(skm.log_loss(y, proba, labels=model.classes_))
    assert res.metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr", labels=model.classes_))

    t = rng.uniform(1, 10, 200)
    g = t + rng.normal(0, 1, 200)
    r = keel.evaluate(Regressor(), pd.DataFrame({"guess": g, "t": t}), target="t", task="regression")
    assert r.metrics["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(t, g)))
    assert r.metrics["mae"] == pytest.approx(skm.mean_absolute_error(t, g))
    assert r.metrics["r2"] == pytest.approx(skm.r2_score(t, g))
    assert r.metrics["mape"] == pytest.approx(skm.mean_absolute_percentage_error(t, g))


def test_slices_by_value_and_bins_and_custom_metric(project: Path) -> None:
    df = _binary()

    def expected_revenue(y_true: np.ndarray, y_pred: np.ndarray) -> float:
        return float(((y_true == 1) & (y_pred == 1)).sum() * 30 - ((y_true == 0) & (y_pred == 1)).sum() * 5)

    res = keel.evaluate(
        Scores("good"), df, target="y", slices=["region", {"column": "age", "bins": [18, 40, 80]}],
        custom_metrics={"revenue": expected_revenue},
    )
    labels = {s["slice"]: s for s in res.slices}
    assert set(labels) == {"region=east", "region=north", "region=south", "age=(17.999, 40.0]", "age=(40.0, 80.0]"}
    north = df[df.region == "north"]
    assert labels["region=north"]["num_rows"] == len(north)
    assert labels["region=north"]["metrics"]["roc_auc"] == pytest.approx(skm.roc_auc_score(north.y, north.good))
    pred = (df.good >= 0.5).astype(int)
    assert res.metrics["revenue"] == expected_revenue(df.y.to_numpy(), pred.to_numpy())
    assert labels["region=north"]["metrics"]["revenue"] == expected_revenue(north.y.to_numpy(), (north.good >= 0.5).astype(int).to_numpy())


def test_paired_bootstrap_separates_a_better_model_from_noise() -> None:
    df = _binary(n=600)
    y = df["y"].to_numpy()
    good = Predictions("binary", y, df["good"].to_numpy(), [0, 1], y)
    bad = Predictions("binary", y, df["bad"].to_numpy(), [0, 1], y)
    ci = paired_bootstrap(bad, good, n=400, seed=1)
    assert ci["roc_auc"]["low"] > 0  # clearly better: the whole interval is above zero
    assert ci["log_loss"]["high"] < 0 and ci["log_loss"]["p_better"] > 0.99  # lower is better, direction known
    # same model against itself with a tiny perturbation: the interval straddles zero
    jitter = Predictions("binary", y, np.clip(df["good"].to_numpy() + np.random.default_rng(0).normal(0, 0.01, len(y)), 0, 1), [0, 1], y)
    same = paired_bootstrap(good, jitter, n=400, seed=1)
    assert same["roc_auc"]["low"] < 0 < same["roc_auc"]["high"]


def test_bootstrap_resamples_match_index_resampling() -> None:
    """The weight-matrix computation equals computing the metric on explicitly resampled rows."""
    df = _binary(n=120)
    y, p = df["y"].to_numpy(), df["good"].to_numpy()
    rng = np.random.default_rng(5)
    idx = rng.integers(0, len(y), len(y))
    W = np.bincount(idx, minlength=len(y))[None, :].astype(float)
    got = M.binary(W, y, p, 0.5)
    assert got["roc_auc"][0] == pytest.approx(skm.roc_auc_score(y[idx], p[idx]))
    assert got["pr_auc"][0] == pytest.approx(skm.average_precision_score(y[idx], p[idx]))
    assert got["log_loss"][0] == pytest.approx(skm.log_loss(y[idx], p[idx]))


def test_bad_input(project: Path) -> None:
    df = _binary()
    with pytest.raises(ValidationError, match=r"Target column 'yy'.*Did you mean 'y'"):
        keel.evaluate(Scores("good"), df, target="yy")
    with pytest.raises(ValidationError, match=r"Unknown task 'binery'. Did you mean 'binary'"):
        keel.evaluate(Scores("good"), df, target="y", task="binery")
    with pytest.raises(ValidationError, match=r"Slice column 'regoin'"):
        keel.evaluate(Scores("good"), df, target="y", slices=["regoin"])
    with pytest.raises(ValidationError, match=r"shadows a built-in"):
        keel.evaluate(Scores("good"), df, target="y", custom_metrics={"f1": lambda a, b: 0.0})
    with pytest.raises(ValidationError, match=r"Threshold"):
        keel.evaluate(Scores("good"), df, target="y", threshold=1.5)
    with pytest.raises(ValidationError, match=r"null"):
        keel.evaluate(Scores("good"), df.assign(y=df.y.astype(float).where(df.index > 0)), target="y")
