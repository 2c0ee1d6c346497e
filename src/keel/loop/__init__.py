"""The closed loop: retraining policies, lineage from a prediction back to its code and data, and diagnosis."""

from __future__ import annotations

from keel.loop import retraining as _retraining
from keel.loop.lineage import Node, feature_usage, model_lineage, prediction_lineage
from keel.loop.policies import RetrainingPolicy, declare_policy
from keel.loop.retraining import run_policy

__all__ = ["Node", "RetrainingPolicy", "declare_policy", "feature_usage", "model_lineage", "prediction_lineage", "run_policy"]

_retraining.register()  # retraining policies as a job kind with the scheduler
