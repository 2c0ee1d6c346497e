"""Routes of the platform API: deployments (``keel deploy ...``), under /v1/deployments.

Each route calls the :mod:`keel.deployments.specs` (or ``compare``) function of the
matching command, so the checks against the registry, the audited events and
``registry.promote`` (gates and approvals) apply as on the command line; the
acting user of every event is the authenticated one. The role is checked on the
champion's registered model: ``write`` to change a deployment, ``admin`` to delete
one or to promote past failing gates. ``start`` and ``stop`` (``keel deploy start|stop``)
record what a ``keel worker`` runs (:mod:`keel.deployments.services`), with ``write``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import Field

from keel.deployments import compare as C
from keel.deployments import services as V
from keel.deployments import specs as S
from keel.server.auth import Identity, action, authorize, identity
from keel.server.routes.common import project_file
from keel.server.routes.loop_schemas import (
    ComparisonOut,
    DeletedOut,
    DeploymentEventOut,
    DeploymentIn,
    DeploymentName,
    DeploymentOut,
    DeploymentSetIn,
    DeploymentStatusOut,
    DeployPromoteIn,
    DeployPromoteOut,
)
from keel.server.schemas import In, OptionalReasonIn, Out

router = APIRouter(prefix="/v1/deployments", tags=["deployments"])
IDENT = Depends(identity)
Since = Query("1d", min_length=1, max_length=32, description="Window of the prediction log, e.g. 1h, 7d")


class ServiceStartIn(In):
    replicas: int = Field(1, ge=1, le=V.MAX_REPLICAS, description="Model-server processes")
    port: int | None = Field(None, ge=1, le=65535, description="Port of the first replica; the others take the next ones (default: free ports)")
    host: str = Field("127.0.0.1", min_length=1, max_length=255, description="Interface the replicas bind")
    reason: str | None = Field(None, max_length=2000)


class ReplicaOut(Out):
    index: int
    port: int
    state: str
    pid: int | None = None
    restarts: int
    last_error: str | None = None
    log: str | None = None


class ServiceOut(Out):
    name: str
    replicas: int
    host: str
    ports: list[int]
    desired: str
    state: str
    owner: str | None = None
    replica_state: list[ReplicaOut]


def _model_of(ref: str | None) -> str | None:
    return None if ref is None else S.parse_model_ref(ref)[0]


def _champion_model(name: str) -> str:
    return S.get_deployment(name).spec.champion.model


@router.get("", response_model=list[DeploymentOut], summary="Deployments (keel deploy ls)")
def list_deployments(ident: Identity = IDENT) -> list[dict[str, Any]]:
    authorize(ident, "read")
    return [d.to_dict() for d in S.list_deployments()]


@router.post("", response_model=DeploymentOut, summary="Create or replace a deployment, checked against the registry first (keel deploy NAME ...)")
def create_deployment(body: DeploymentIn, ident: Identity = IDENT) -> dict[str, Any]:
    spec = S.build_spec(body.name, model=body.model, shadow=body.shadow, canary=body.canary, weight=body.weight, ab=body.ab,
                        sticky_by=body.sticky_by, max_error_rate=body.max_error_rate, max_p99_ms=body.max_p99_ms,
                        min_requests=body.min_requests)
    authorize(ident, "write", model=spec.champion.model)
    return S.deploy(spec, reason=body.reason).to_dict()


@router.get("/{name}", response_model=DeploymentOut, summary="One deployment")
def get_deployment(name: DeploymentName, ident: Identity = IDENT) -> dict[str, Any]:
    dep = S.get_deployment(name)
    authorize(ident, "read", model=dep.spec.champion.model)
    return dep.to_dict()


@router.delete("/{name}", response_model=DeletedOut, openapi_extra=action("admin"), summary="Delete a deployment; its history stays (keel deploy delete)")
def delete_deployment(name: DeploymentName, reason: str | None = Query(None, max_length=2000), ident: Identity = IDENT) -> dict[str, Any]:
    authorize(ident, "admin", model=_champion_model(name))
    S.delete_deployment(name, reason=reason)
    return {"name": name, "deleted": True}


@router.post("/{name}/set", response_model=DeploymentOut, summary="Change some options of a deployment; the rest stay (keel deploy set)")
def set_deployment(name: DeploymentName, body: DeploymentSetIn, ident: Identity = IDENT) -> dict[str, Any]:
    authorize(ident, "write", model=_champion_model(name))
    if body.model is not None:
        authorize(ident, "write", model=_model_of(body.model))
    changes = body.model_dump(exclude={"reason", "single"}, exclude_none=True)
    return S.set_deployment(name, reason=body.reason, single=body.single, **changes).to_dict()


@router.post("/{name}/promote", response_model=DeployPromoteOut,
             summary="Promote the challenger through the registry (gates, approvals) and make it the champion (keel deploy promote)")
def promote_deployment(name: DeploymentName, body: DeployPromoteIn, ident: Identity = IDENT) -> dict[str, Any]:
    dep = S.get_deployment(name)
    authorize(ident, "admin" if body.force else "write", model=dep.spec.champion.model)
    challenger = dep.spec.challenger
    if challenger is not None and challenger.model != dep.spec.champion.model:
        authorize(ident, "admin" if body.force else "write", model=challenger.model)
    return S.promote_deployment(name, to=body.to, reason=body.reason, force=body.force, data=project_file(body.data), target=body.target)


@router.post("/{name}/rollback", response_model=DeploymentOut, summary="Restore the spec the last change replaced (keel deploy rollback)")
def rollback_deployment(name: DeploymentName, body: OptionalReasonIn, ident: Identity = IDENT) -> dict[str, Any]:
    authorize(ident, "write", model=_champion_model(name))
    return S.rollback_deployment(name, reason=body.reason).to_dict()


@router.post("/{name}/start", response_model=ServiceOut,
             summary="Run the deployment's model servers: a keel worker starts and supervises them (keel deploy start)")
def start_deployment(name: DeploymentName, body: ServiceStartIn, ident: Identity = IDENT) -> dict[str, Any]:
    authorize(ident, "write", model=_champion_model(name))
    return V.start_service(name, replicas=body.replicas, port=body.port, host=body.host, reason=body.reason).to_dict()


@router.post("/{name}/stop", response_model=ServiceOut, summary="Stop the deployment's model servers; its worker drains them (keel deploy stop)")
def stop_deployment(name: DeploymentName, body: OptionalReasonIn, ident: Identity = IDENT) -> dict[str, Any]:
    authorize(ident, "write", model=_champion_model(name))
    return V.stop_service(name, reason=body.reason).to_dict()


@router.get("/{name}/history", response_model=list[DeploymentEventOut], summary="Every change of a deployment: who, what, why (keel deploy history)")
def deployment_history(name: DeploymentName, ident: Identity = IDENT) -> list[dict[str, Any]]:
    events = S.history(name)  # a deleted deployment keeps its history
    last = next((e["after"] or e["before"] for e in reversed(events) if e["after"] or e["before"]), None)
    authorize(ident, "read", model=last["routes"][0]["model"] if last else None)
    return events


@router.get("/{name}/status", response_model=DeploymentStatusOut,
            summary="A deployment and, per route, traffic, errors and latency (keel deploy status)")
def deployment_status(name: DeploymentName, since: str = Since, ident: Identity = IDENT) -> dict[str, Any]:
    dep = S.get_deployment(name)
    authorize(ident, "read", model=dep.spec.champion.model)
    svc = V.find_service(name)
    return {"deployment": dep.to_dict(), "comparison": C.compare(name, since=since), "service": None if svc is None else svc.to_dict()}


@router.get("/{name}/compare", response_model=ComparisonOut,
            summary="Champion vs challenger: traffic, latency, agreement, quality once labelled, a recommendation (keel deploy compare)")
def deployment_compare(name: DeploymentName, since: str = Query("7d", min_length=1, max_length=32),
                       min_labels: int = Query(100, ge=1, le=10**9), margin: float = Query(0.0, ge=0, le=1),
                       confidence: float = Query(0.95, gt=0, lt=1), ident: Identity = IDENT) -> dict[str, Any]:
    authorize(ident, "read", model=_champion_model(name))
    return C.compare(name, since=since, min_labels=min_labels, margin=margin, confidence=confidence)
