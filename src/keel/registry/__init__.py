"""The model registry: registered models, versions with lineage, environments and aliases,
promotion gates, approvals, an append-only audit log, rollback and transition events.

The public functions are re-exported here; ``keel.register_model`` and
``keel.promote`` are the same functions.
"""

from keel.errors import ForbiddenError, GatesFailed
from keel.registry.audit import history
from keel.registry.gates import GateReport, GateResult, Policy
from keel.registry.lifecycle import (
    archive_model,
    archive_version,
    delete_model,
    delete_version,
    restore_model,
    restore_version,
)
from keel.registry.status import status
from keel.registry.transitions import (
    Transition,
    approve,
    delete_alias,
    evaluate_gates,
    get_request,
    list_requests,
    promote,
    reject,
    rollback,
    rollback_target,
    set_alias,
)
from keel.registry.versions import (
    ModelVersion,
    RegisteredModel,
    evaluations,
    get_model,
    get_version,
    list_models,
    list_versions,
    register_model,
    update_model,
)

__all__ = [
    "ForbiddenError",
    "GateReport",
    "GateResult",
    "GatesFailed",
    "ModelVersion",
    "Policy",
    "RegisteredModel",
    "Transition",
    "approve",
    "archive_model",
    "archive_version",
    "delete_alias",
    "delete_model",
    "delete_version",
    "evaluate_gates",
    "evaluations",
    "get_model",
    "get_request",
    "get_version",
    "history",
    "list_models",
    "list_requests",
    "list_versions",
    "promote",
    "register_model",
    "reject",
    "restore_model",
    "restore_version",
    "rollback",
    "rollback_target",
    "set_alias",
    "status",
    "update_model",
]
