"""The metadata-store conformance suite runs every test on each backend: SQLite and PostgreSQL.

A new backend passes by adding one parameter to ``backend``.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """The backend's name; the test's project (working directory) uses it as its metadata store."""
    request.getfixturevalue("project" if request.param == "sqlite" else "pg_project")
    return str(request.param)


@pytest.fixture
def metadata_uri(backend: str) -> str:
    from keel.config import settings

    return str(settings().metadata_uri)


@pytest.fixture
def two_versions(backend: str, project: Path) -> str:
    """A registered model 'conf' with versions 1 and 2 (a tiny scikit-learn model each)."""
    import numpy as np
    import pandas as pd
    from sklearn.dummy import DummyClassifier

    import keel

    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0]})
    y = np.array([0, 1, 0, 1])
    for strategy in ("most_frequent", "prior"):
        with keel.start_run():
            info = keel.log_model(DummyClassifier(strategy=strategy).fit(X, y), input_example=X)
        keel.register_model(info.uri, "conf")
    return "conf"
