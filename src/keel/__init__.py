"""keel: one package for the ML lifecycle.

The public names load lazily, so ``import keel`` stays cheap; heavy libraries
(pandas, pyarrow, DuckDB, scikit-learn) load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "KeelError": "keel.errors",
    "ContractViolation": "keel.errors",
    # contracts
    "Contract": "keel.contracts.model",
    "validate": "keel.contracts.api",
    # tracking
    "Run": "keel.tracking.runs",
    "start_run": "keel.tracking.runs",
    "end_run": "keel.tracking.runs",
    "active_run": "keel.tracking.runs",
    "set_experiment": "keel.tracking.runs",
    "log_param": "keel.tracking.runs",
    "log_params": "keel.tracking.runs",
    "log_metric": "keel.tracking.runs",
    "log_metrics": "keel.tracking.runs",
    "set_tag": "keel.tracking.runs",
    "set_tags": "keel.tracking.runs",
    "log_artifact": "keel.tracking.artifacts",
    "log_artifacts": "keel.tracking.artifacts",
    "log_figure": "keel.tracking.artifacts",
    "log_table": "keel.tracking.artifacts",
    "log_dict": "keel.tracking.artifacts",
    "log_text": "keel.tracking.artifacts",
    "log_dataset": "keel.tracking.datasets",
    "search_runs": "keel.tracking.search",
    "get_run": "keel.tracking.query",
    "get_metric_history": "keel.tracking.query",
    "seed": "keel.tracking.environment",
    "autolog": "keel.tracking.autolog",
    "set_tracking_uri": "keel.tracking.remote",
    # models, evaluation, registry
    "log_model": "keel.models.package",
    "load_model": "keel.models.loader",
    "evaluate": "keel.evaluation.evaluate",
    "register_model": "keel.registry.versions",
    "promote": "keel.registry.transitions",
    # features
    "Entity": "keel.features.definitions",
    "Source": "keel.features.definitions",
    "FeatureView": "keel.features.definitions",
    "OnDemandFeatureView": "keel.features.definitions",
    "FeatureService": "keel.features.definitions",
    "Field": "keel.features.definitions",
    "get_training_set": "keel.features.offline",
    "get_online_features": "keel.features.online",
    "push": "keel.features.ingestion",
    "materialize": "keel.features.materialization",
    # pipelines
    "step": "keel.pipelines.step",
    "pipeline": "keel.pipelines.pipeline",
    "tune": "keel.pipelines.tuning",
    # serving
    "predictions": "keel.serving.sql",
    # monitoring
    "drift": "keel.monitoring.drift",
    "log_feedback": "keel.monitoring.feedback",
}

__all__ = ["__version__", *_EXPORTS]

# a public name whose module (a lower layer) needs an upper layer to have registered with it:
# autologged models are written by keel.log_model's package writer, which keel.models registers
_REGISTRARS = {"autolog": "keel.models.package"}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'keel' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    if name in _REGISTRARS:
        importlib.import_module(_REGISTRARS[name])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover
    from keel.contracts.api import validate
    from keel.contracts.model import Contract
    from keel.errors import ContractViolation, KeelError
    from keel.evaluation.evaluate import evaluate
    from keel.features.definitions import (
        Entity,
        FeatureService,
        FeatureView,
        Field,
        OnDemandFeatureView,
        Source,
    )
    from keel.features.ingestion import push
    from keel.features.materialization import materialize
    from keel.features.offline import get_training_set
    from keel.features.online import get_online_features
    from keel.models.loader import load_model
    from keel.models.package import log_model
    from keel.monitoring.drift import drift
    from keel.monitoring.feedback import log_feedback
    from keel.pipelines.pipeline import pipeline
    from keel.pipelines.step import step
    from keel.pipelines.tuning import tune
    from keel.registry.transitions import promote
    from keel.registry.versions import register_model
    from keel.serving.sql import predictions
    from keel.tracking.artifacts import (
        log_artifact,
        log_artifacts,
        log_dict,
        log_figure,
        log_table,
        log_text,
    )
    from keel.tracking.autolog import autolog
    from keel.tracking.datasets import log_dataset
    from keel.tracking.environment import seed
    from keel.tracking.query import get_metric_history, get_run
    from keel.tracking.remote import set_tracking_uri
    from keel.tracking.runs import (
        Run,
        active_run,
        end_run,
        log_metric,
        log_metrics,
        log_param,
        log_params,
        set_experiment,
        set_tag,
        set_tags,
        start_run,
    )
    from keel.tracking.search import search_runs
