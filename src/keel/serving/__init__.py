"""Serving: an embedded predictor, an ASGI app on three protocols, batch scoring, and the prediction log.

``Predictor`` (no HTTP) validates, fetches features, predicts and logs; the HTTP
app (:mod:`keel.serving.app`), the batch scorer (:mod:`keel.serving.batch`) and
the CLI (`keel serve`, `keel score`, `keel predictions query`) are adapters in
front of it. The prediction log lives in :mod:`keel.store.predictions`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Predictor": "keel.serving.predictor",
    "Prediction": "keel.serving.predictor",
    "InputError": "keel.serving.validation",
    "create_app": "keel.serving.app",
    "score": "keel.serving.batch",
    "query": "keel.serving.sql",
    "predictions": "keel.serving.sql",
}
__all__ = ["InputError", "Prediction", "Predictor", "create_app", "predictions", "query", "score"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'keel.serving' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


if TYPE_CHECKING:  # pragma: no cover
    from keel.serving.app import create_app
    from keel.serving.batch import score
    from keel.serving.predictor import Prediction, Predictor
    from keel.serving.sql import predictions, query
    from keel.serving.validation import InputError
