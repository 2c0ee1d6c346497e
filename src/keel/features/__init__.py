"""The feature store: one definition for training and serving.

Definitions (:mod:`keel.features.definitions`) live in the project's features
module; ``keel features apply`` versions them (:mod:`.registry`); training sets
come from the point-in-time join (:mod:`.offline`), serving reads the online
store (:mod:`.online`) filled by :mod:`.materialize` and :mod:`.push`;
:mod:`.skew` checks that both paths agree. See docs/features.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from keel.features.aggregations import Aggregation
from keel.features.definitions import (
    Bool,
    Entity,
    FeatureService,
    FeatureView,
    Field,
    Float32,
    Float64,
    Int32,
    Int64,
    OnDemandFeatureView,
    Source,
    String,
    UnixTimestamp,
    on_demand_feature_view,
)

_LAZY = {
    "get_training_set": "keel.features.offline",
    "get_online_features": "keel.features.online",
    "materialize": "keel.features.materialization",
    "push": "keel.features.ingestion",
    "check_skew": "keel.features.skew",
    "apply": "keel.features.registry",
    "load_definitions": "keel.features.loader",
}

__all__ = [
    "Aggregation",
    "Bool",
    "Entity",
    "FeatureService",
    "FeatureView",
    "Field",
    "Float32",
    "Float64",
    "Int32",
    "Int64",
    "OnDemandFeatureView",
    "Source",
    "String",
    "UnixTimestamp",
    "apply",
    "check_skew",
    "get_online_features",
    "get_training_set",
    "load_definitions",
    "materialize",
    "on_demand_feature_view",
    "push",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'keel.features' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


if TYPE_CHECKING:  # pragma: no cover
    from keel.features.ingestion import push
    from keel.features.loader import load_definitions
    from keel.features.materialization import materialize
    from keel.features.offline import get_training_set
    from keel.features.online import get_online_features
    from keel.features.registry import apply
    from keel.features.skew import check_skew


def _register_contract_targets() -> None:
    from keel.features.targets import register

    register()


_register_contract_targets()
