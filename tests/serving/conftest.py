"""Serving fixtures: registered models on SQLite and PostgreSQL, and a feature-service model on the example churn project."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "churn" / "features.py"


def make_data(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "plan": rng.choice(["basic", "pro"], n)})
    df["y"] = ((df.a + 0.5 * df.b + (df.plan == "pro") + rng.normal(0, 0.5, n)) > 0.5).astype(int)
    return df


def train_model(name: str = "churn", *, C: float = 1.0, alias: str | None = "live", data: pd.DataFrame | None = None) -> Any:
    """Log, register and (with ``alias``) promote a logistic regression on a, b and plan; returns the version."""
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    import keel

    df = make_data() if data is None else data
    X = df[["a", "b", "plan"]]
    model = make_pipeline(make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["plan"]), remainder="passthrough"),
                          LogisticRegression(C=C)).fit(X, df["y"])
    with keel.start_run():
        info = keel.log_model(model, input_example=X.head(5))
    version = keel.register_model(info.uri, name)
    if alias:
        from keel.registry.transitions import set_alias

        set_alias(name, alias, version.version)
    return version


@pytest.fixture(params=["sqlite", "postgres"])
def proj(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh project on each metadata backend; the prediction log is closed afterwards."""
    path = request.getfixturevalue("project" if request.param == "sqlite" else "pg_project")
    yield path
    from keel.store.prediction_log import close_prediction_log

    close_prediction_log()


@pytest.fixture
def local(project: Path) -> Iterator[Path]:
    """A fresh SQLite project (tests that need one backend only)."""
    yield project
    from keel.store.prediction_log import close_prediction_log

    close_prediction_log()


@pytest.fixture
def served_model(proj: Path) -> Any:
    """models:/churn@live: a logistic regression on a, b, plan."""
    return train_model()


def make_feature_model(root: Path, online_uri: str | None = None) -> Any:
    """The example churn definitions, materialized, and a model trained from churn_v1 at production."""
    import keel
    from keel.features import apply, materialize
    from keel.registry.transitions import set_alias
    from tests.features.conftest import make_churn_data

    shutil.copy(EXAMPLE, root / "features.py")
    from datetime import UTC, datetime, timedelta

    make_churn_data(root, customers=40, start=datetime.now(UTC) - timedelta(days=30))
    apply()
    materialize()
    labels = pd.read_parquet(root / "data" / "usage.parquet")[["customer_id", "event_timestamp"]].iloc[::4].reset_index(drop=True)
    labels["churned"] = (labels["customer_id"] % 3 == 0)
    labels["discount"] = 0.1
    ts = keel.get_training_set(labels, "churn_v1")
    X = ts.drop(columns=["customer_id", "event_timestamp", "churned", "discount"])
    from sklearn.ensemble import HistGradientBoostingClassifier

    numeric = [c for c in X.columns if c not in ("plan", "region")]
    X = X[numeric].astype("float64")
    model = HistGradientBoostingClassifier(max_iter=20, min_samples_leaf=5).fit(X, ts["churned"])
    with keel.start_run():
        keel.log_dataset(ts, "train")
        info = keel.log_model(model, signature=X, input_example=X.head(3))
    version = keel.register_model(info.uri, "churn_fs")
    set_alias("churn_fs", "live", version.version)
    return version


@pytest.fixture(params=["sqlite", "postgres+redis"])
def feature_project(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The churn features materialized and models:/churn_fs@live trained from them: on SQLite + the SQLite
    online store, and on PostgreSQL + Redis."""
    from keel import config
    from keel.features import loader, online
    from keel.store import kv

    if request.param == "sqlite":
        project = request.getfixturevalue("project")
    else:
        project = request.getfixturevalue("pg_project")
        monkeypatch.setenv("KEEL_ONLINE_URI", request.getfixturevalue("redis_url"))
        config.reset()
    online.reset_context()
    make_feature_model(project)
    yield project
    from keel.store.prediction_log import close_prediction_log

    close_prediction_log()
    loader.clear_cache()
    online.reset_context()
    kv.reset_kv_stores()
