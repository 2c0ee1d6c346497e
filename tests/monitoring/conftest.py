"""Monitoring fixtures: a registered churn-like classifier and its validation data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest


def make_data(n: int = 4000, seed: int = 0, *, shift: float = 0.0, concept: float = 0.0) -> pd.DataFrame:
    """charges (shiftable), tenure, control (never moves), plan; churn depends on charges and tenure.

    ``concept`` flips the relation: with concept=1 the label follows the opposite sign of charges.
    """
    rng = np.random.default_rng(seed)
    charges = rng.normal(65 + shift, 12, n)
    tenure = rng.integers(0, 72, n).astype(float)
    control = rng.normal(0, 1, n)
    plan = rng.choice(["basic", "plus", "pro"], n, p=[0.5, 0.3, 0.2])
    sign = 1 - 2 * concept
    logit = sign * (charges - 65) / 8 - (tenure - 36) / 20
    churn = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"charges": charges, "tenure": tenure, "control": control, "plan": plan, "churn": churn})


FEATURES = ["charges", "tenure", "control"]


@pytest.fixture
def registered(project: Path) -> Callable[..., Any]:
    """registered(name="churn", validation=True) -> ModelVersion of a logistic regression on FEATURES + plan."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    import keel

    def _register(name: str = "churn", *, validation: bool = True, seed: int = 0) -> Any:
        train = make_data(6000, seed)
        valid = make_data(4000, seed + 1)
        cols = [*FEATURES, "plan"]
        pre = ColumnTransformer([("num", StandardScaler(), FEATURES), ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"])])
        model = make_pipeline(pre, LogisticRegression(max_iter=500)).fit(train[cols], train["churn"])
        path = project / f"valid_{name}_{seed}.parquet"
        valid.to_parquet(path)
        with keel.start_run():
            keel.log_dataset(train, "train")
            if validation:
                keel.log_dataset(str(path), "valid", context="validation")
            info = keel.log_model(model, input_example=train[cols].head(5))
        return keel.register_model(info.uri, name)

    return _register


def log_rows(model: str, version: int, frame: pd.DataFrame, start: Any, *, step_s: float = 1.0, route: str = "default",
             score: Any = None, prefix: str = "r", status: str = "ok", latency_ms: float = 5.0) -> list[str]:
    """Append ``frame``'s rows to the prediction log (scored by the registered version unless ``score`` is given); returns the request ids."""
    import pyarrow as pa

    from keel.store import predictions

    n = len(frame)
    inputs = frame.drop(columns=[c for c in ("churn",) if c in frame.columns])
    if score is None:
        import keel

        score = keel.load_model(f"models:/{model}/{version}").predict_proba(inputs)[:, 1]
    ids = [f"{prefix}-{i}" for i in range(n)]
    ts = pd.Timestamp(start) + pd.to_timedelta(np.arange(n) * step_s, unit="s")
    cols: dict[str, Any] = {
        "request_id": pa.array(ids, pa.string()),
        "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "model": pa.array([model] * n, pa.string()),
        "version": pa.array([version] * n, pa.int64()),
        "route": pa.array([route] * n, pa.string()),
        "latency_ms": pa.array(np.full(n, latency_ms), pa.float64()),
        "batch_id": pa.nulls(n, pa.string()),
        "status": pa.array([status] * n, pa.string()),
        "missing_features": pa.array([[] for _ in range(n)], pa.list_(pa.string())),
    }
    for c in inputs.columns:
        cols[c] = pa.array(inputs[c])
    cols["prediction"] = pa.array((np.asarray(score) >= 0.5).astype(np.int64))
    cols["score"] = pa.array(np.asarray(score, np.float64))
    predictions.append(pa.table(cols))
    return ids
