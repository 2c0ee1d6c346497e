"""Routes of the platform API: the registry (``keel models ...``), under /v1/registry.

Each route calls the :mod:`keel.registry` function of the matching command, so the
gates, the approval rules (not the requester, not the trainer) and the audit log
apply exactly as on the command line; the acting user is the authenticated one.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query

from keel import registry
from keel.registry import config as registry_config
from keel.server.auth import Identity, action, authorize, identity
from keel.server.routes.common import (
    Alias,
    ModelName,
    ObjectId,
    VersionRef,
    project_file,
    version_ref,
)
from keel.server.schemas import (
    AliasIn,
    ApprovalRequestOut,
    AuditEventOut,
    EnvironmentOut,
    LifecycleOut,
    ModelVersionDetail,
    ModelVersionOut,
    OptionalReasonIn,
    PromoteIn,
    ReasonIn,
    RegisteredModelOut,
    RollbackIn,
    StatusOut,
    TransitionOut,
)

router = APIRouter(prefix="/v1/registry", tags=["registry"])
IDENT = Depends(identity)


@router.get("/models", response_model=list[RegisteredModelOut], summary="Registered models (keel models ls)")
def list_models(include_deleted: bool = False, ident: Identity = IDENT) -> list[dict[str, Any]]:
    authorize(ident, "read")
    return [m.to_dict() for m in registry.list_models(include_deleted=include_deleted)]


@router.get("/models/{name}", response_model=RegisteredModelOut, summary="One registered model")
def get_model(name: ModelName, ident: Identity = IDENT) -> dict[str, Any]:
    authorize(ident, "read", model=name)
    return registry.get_model(name).to_dict()


@router.get("/models/{name}/versions", response_model=list[ModelVersionOut], summary="A model's versions, oldest first (keel models show NAME)")
def list_versions(name: ModelName, include_deleted: bool = False, ident: Identity = IDENT) -> list[dict[str, Any]]:
    authorize(ident, "read", model=name)
    return [v.to_dict() for v in registry.list_versions(name, include_deleted=include_deleted)]


@router.get("/models/{name}/versions/{version}", response_model=ModelVersionDetail,
            summary="One version (a number, alias or environment) with lineage and evaluations (keel models show NAME VERSION)")
def get_version(name: ModelName, version: VersionRef, ident: Identity = IDENT) -> dict[str, Any]:
    authorize(ident, "read", model=name)
    mv = registry.get_version(name, version_ref(version))
    return {**mv.to_dict(), "evaluations": registry.evaluations(name, mv.version)}


@router.put("/models/{name}/aliases/{alias}", response_model=AuditEventOut, summary="Point a free alias at a version (keel models alias)")
def set_alias(name: ModelName, alias: Alias, body: AliasIn, ident: Identity = IDENT) -> dict[str, Any]:
    authorize(ident, "write", model=name)
    return registry.set_alias(name, alias, version_ref(body.version) if isinstance(body.version, str) else body.version)


@router.delete("/models/{name}/aliases/{alias}", response_model=AuditEventOut, summary="Delete a free alias (keel models alias --delete)")
def delete_alias(name: ModelName, alias: Alias, ident: Identity = IDENT) -> dict[str, Any]:
    authorize(ident, "write", model=name)
    return registry.delete_alias(name, alias)


@router.get("/environments", response_model=list[EnvironmentOut], summary="The environments versions are promoted into (keel.yaml registry)")
def environments(ident: Identity = IDENT) -> list[dict[str, Any]]:
    authorize(ident, "read")
    return [{"name": e, "requires_approval": registry_config.requires_approval(e)} for e in registry_config.environments()]


@router.post("/models/{name}/versions/{version}/promote", response_model=TransitionOut,
             summary="Promote a version through its gates (keel models promote); a refusal is 422 with the gate report")
def promote(name: ModelName, version: VersionRef, body: PromoteIn, ident: Identity = IDENT) -> dict[str, Any]:
    authorize(ident, "admin" if body.force else "write", model=name)
    t = registry.promote(name, version_ref(version), to=body.to, data=project_file(body.data), target=body.target, task=body.task,
                         force=body.force, reason=body.reason)
    return t.to_dict()


@router.get("/requests", response_model=list[ApprovalRequestOut], summary="Approval requests, newest first (keel models requests)")
def list_requests(model: str | None = None, status: Literal["pending", "approved", "rejected"] | None = None,
                  ident: Identity = IDENT) -> list[dict[str, Any]]:
    authorize(ident, "read", model=model)
    return registry.list_requests(model, status)


@router.get("/requests/{request_id}", response_model=ApprovalRequestOut, summary="One approval request")
def get_request(request_id: ObjectId, ident: Identity = IDENT) -> dict[str, Any]:
    found = registry.get_request(request_id)
    authorize(ident, "read", model=found["model"])
    return found


@router.post("/requests/{request_id}/approve", response_model=TransitionOut, openapi_extra=action("approve"),
             summary="Approve a pending promotion (not your own, nor of a version you trained) and apply it (keel models approve)")
def approve(request_id: ObjectId, body: ReasonIn, ident: Identity = IDENT) -> dict[str, Any]:
    authorize(ident, "approve", model=registry.get_request(request_id)["model"])
    return registry.approve(request_id, body.reason).to_dict()


@router.post("/requests/{request_id}/reject", response_model=AuditEventOut, openapi_extra=action("approve"), summary="Reject a pending promotion (keel models reject)")
def reject(request_id: ObjectId, body: ReasonIn, ident: Identity = IDENT) -> dict[str, Any]:
    authorize(ident, "approve", model=registry.get_request(request_id)["model"])
    return registry.reject(request_id, body.reason)


@router.post("/models/{name}/rollback", response_model=TransitionOut,
             summary="Restore the version an environment held before its current one (keel models rollback)")
def rollback(name: ModelName, body: RollbackIn, ident: Identity = IDENT) -> dict[str, Any]:
    authorize(ident, "write", model=name)
    return registry.rollback(name, body.env, reason=body.reason).to_dict()


@router.get("/models/{name}/status", response_model=StatusOut,
            summary="What each environment runs, its lineage and metrics beside the previous version's (keel models status)")
def status(name: ModelName, ident: Identity = IDENT) -> dict[str, Any]:
    authorize(ident, "read", model=name)
    return registry.status(name)


@router.get("/models/{name}/audit", response_model=list[AuditEventOut], summary="A model's audit log, oldest first (keel models history)")
def audit(name: ModelName, since_id: int = Query(0, ge=0, le=2**62), target: str | None = None,
          limit: int | None = Query(None, ge=1, le=100_000), ident: Identity = IDENT) -> list[dict[str, Any]]:
    authorize(ident, "read", model=name)
    registry.get_model(name)  # an unknown model is a 404, not an empty log
    return registry.history(name, since_id=since_id, target=target, limit=limit)


@router.post("/models/{name}/archive", response_model=LifecycleOut, summary="Archive a model (keel models archive NAME)")
def archive_model(name: ModelName, body: OptionalReasonIn, ident: Identity = IDENT) -> dict[str, Any]:
    authorize(ident, "write", model=name)
    return registry.archive_model(name, reason=body.reason)


@router.post("/models/{name}/restore", response_model=LifecycleOut, summary="Undo an archive of a model (keel models archive NAME --restore)")
def restore_model(name: ModelName, body: OptionalReasonIn, ident: Identity = IDENT) -> dict[str, Any]:
    authorize(ident, "write", model=name)
    return registry.restore_model(name, reason=body.reason)


@router.post("/models/{name}/versions/{version}/archive", response_model=LifecycleOut, summary="Archive a version (keel models archive NAME VERSION)")
def archive_version(name: ModelName, version: ObjectId, body: OptionalReasonIn, ident: Identity = IDENT) -> dict[str, Any]:
    authorize(ident, "write", model=name)
    return registry.archive_version(name, version, reason=body.reason)


@router.post("/models/{name}/versions/{version}/restore", response_model=LifecycleOut, summary="Undo an archive of a version")
def restore_version(name: ModelName, version: ObjectId, body: OptionalReasonIn, ident: Identity = IDENT) -> dict[str, Any]:
    authorize(ident, "write", model=name)
    return registry.restore_version(name, version, reason=body.reason)


@router.delete("/models/{name}/versions/{version}", response_model=LifecycleOut, openapi_extra=action("admin"),
               summary="Delete a version as a tombstone: lineage stays, files are released (keel models delete NAME VERSION)")
def delete_version(name: ModelName, version: ObjectId, reason: str | None = None, ident: Identity = IDENT) -> dict[str, Any]:
    authorize(ident, "admin", model=name)
    return registry.delete_version(name, version, reason=reason)


@router.delete("/models/{name}", response_model=LifecycleOut, openapi_extra=action("admin"), summary="Delete a model and its versions as tombstones (keel models delete NAME)")
def delete_model(name: ModelName, reason: str | None = None, ident: Identity = IDENT) -> dict[str, Any]:
    authorize(ident, "admin", model=name)
    return registry.delete_model(name, reason=reason)
