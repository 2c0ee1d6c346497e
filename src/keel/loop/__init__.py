"""The closed loop: lineage from a prediction back to its code and data (retraining policies and diagnosis next)."""

from __future__ import annotations

from keel.loop.lineage import Node, feature_usage, model_lineage, prediction_lineage

__all__ = ["Node", "feature_usage", "model_lineage", "prediction_lineage"]
