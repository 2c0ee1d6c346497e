"""A run URI names one artifact folder literally: LIKE wildcards in it match nothing else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier

import keel
from keel.errors import NotFoundError


@pytest.mark.parametrize("logged,asked", [("model-a", "model_a"), ("modelXa", "model_a"), ("model-100", "model%")])
def test_run_uri_does_not_match_a_look_alike_folder(project: Path, logged: str, asked: str) -> None:
    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0]})
    with keel.start_run() as run:
        keel.log_model(DummyClassifier().fit(X, np.array([0, 1, 0, 1])), name=logged, input_example=X)
    assert keel.load_model(f"runs:/{run.id}/{logged}", cache=False).source.path == logged
    with pytest.raises(NotFoundError, match=f"has no packaged model under '{asked}/'"):
        keel.load_model(f"runs:/{run.id}/{asked}", cache=False)
