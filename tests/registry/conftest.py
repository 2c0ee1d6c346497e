"""Registry fixtures: every registry test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(params=["sqlite", "postgres"])
def proj(request: pytest.FixtureRequest) -> Path:
    """A fresh project on each metadata backend."""
    return request.getfixturevalue("project" if request.param == "sqlite" else "pg_project")


def make_data(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "region": rng.choice(["north", "south"], n)})
    df["y"] = ((df.a + 0.8 * df.b + rng.normal(0, 0.7, n)) > 0).astype(int)
    return df


@pytest.fixture
def data() -> pd.DataFrame:
    return make_data()


@pytest.fixture
def train(proj: Path, data: pd.DataFrame) -> Callable[..., Any]:
    """train(columns, name="churn", C=1.0) -> a registered ModelVersion of a logistic regression."""
    from sklearn.linear_model import LogisticRegression

    import keel

    def _train(columns: tuple[str, ...] = ("a", "b"), name: str = "churn", C: float = 1.0) -> Any:
        X = data[list(columns)]
        with keel.start_run():
            keel.log_params({"C": C, "columns": ",".join(columns)})
            keel.log_dataset(data, "train")
            info = keel.log_model(LogisticRegression(C=C).fit(X, data["y"]), input_example=X.head(5))
        return keel.register_model(info.uri, name)

    return _train


@pytest.fixture
def configure(proj: Path) -> Callable[[dict[str, Any]], None]:
    """configure({...}) writes the ``registry:`` block of the project's keel.yaml."""

    def _write(registry: dict[str, Any]) -> None:
        import yaml

        from keel import config

        path = proj / "keel.yaml"
        doc = yaml.safe_load(path.read_text()) or {}
        doc["registry"] = registry
        path.write_text(yaml.safe_dump(doc))
        config.reset()

    return _write
