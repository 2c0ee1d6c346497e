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
