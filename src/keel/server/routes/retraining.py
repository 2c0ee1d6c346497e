"""Routes of the platform API: retraining policies (``keel retraining ...``).

Viewers read (list, show, history); members declare, run, pause and resume (on
the policy's model). The authenticated identity is the acting user of every
event the library records.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import Field

from keel.server.auth import Identity, authorize, identity
from keel.server.routes.common import Name
from keel.server.schemas import In, Out

router = APIRouter(tags=["retraining"])
IDENT = Depends(identity)


class RetrainingPolicyIn(In):
    name: str = Field(..., min_length=1, max_length=100, description="The policy's name, e.g. churn-retrain")
    model: str = Field(..., min_length=1, max_length=255)
    triggers: list[dict[str, Any]] = Field(..., min_length=1, description="e.g. [{alert: churn-daily}, {schedule: '0 3 * * 0'}]")
    pipeline: str | None = Field(None, description="MODULE:NAME; default: the pipeline that produced the champion")
    params: dict[str, Any] = Field(default_factory=dict)
    window: str = "30d"
    window_source: str | None = None
    window_column: str = "event_timestamp"
    promotion: dict[str, str] = Field(default_factory=lambda: {"staging": "none", "production": "auto"})
    deployment: str | None = None
    live: dict[str, Any] = Field(default_factory=dict, description="the live comparison a canary / shadow must pass: min_labels, margin, since")
    data: str | None = None
    target: str | None = None
    cooldown: str = "6h"
    max_retrains: int = Field(3, ge=1)
    per: str = "7d"
    backoff: str = "10m"


class RetrainingRunIn(In):
    mode: Literal["retrain", "dry-run", "advance"] = Field("retrain", description="retrain now, show what would happen, or judge a pending canary")


class RetrainingPauseIn(In):
    reason: str | None = Field(None, max_length=2000)


class RetrainingPolicyOut(Out):
    name: str
    model: str
    version: int
    paused: bool
    triggers: list[str]
    production: str
    last: dict[str, Any] | None


class RetrainingDetailOut(Out):
    name: str
    model: str
    version: int
    paused: bool
    spec: dict[str, Any]
    state: dict[str, Any]
    owners: list[str]
    schedules: list[dict[str, Any]]
    versions: list[dict[str, Any]]
    history: list[dict[str, Any]]


class RetrainingEventOut(Out):
    id: int
    policy: str
    action: str
    outcome: str
    user: str
    trigger: dict[str, Any] | None
    run_id: str | None
    model_version: int | None
    detail: dict[str, Any] | None


class RetrainingDeclaredOut(Out):
    name: str
    model: str
    version: int
    changed: bool
    pipeline: str
    schedules: list[str]


class RetrainingOutcomeOut(Out):
    policy: str
    status: str


def _model(name: str) -> str:
    from keel.loop.policies import get_policy

    return get_policy(name).model


@router.get("/v1/retraining", response_model=list[RetrainingPolicyOut], summary="Retraining policies with their last event (keel retraining ls)")
def list_policies(ident: Identity = IDENT) -> list[dict[str, Any]]:
    from keel.loop.policies import list_policies as found

    authorize(ident, "read")
    return found()


@router.post("/v1/retraining", response_model=RetrainingDeclaredOut,
             summary="Declare a retraining policy: checked whole, stored as a new version when it changed (keel retraining declare)")
def declare(body: RetrainingPolicyIn, ident: Identity = IDENT) -> dict[str, Any]:
    from keel.loop.policies import RetrainingPolicy, declare_policy

    authorize(ident, "write", model=body.model)
    fields = body.model_dump()
    return declare_policy(RetrainingPolicy(**fields))


@router.get("/v1/retraining/{name}", response_model=RetrainingDetailOut,
            summary="A policy: declaration, versions, owners, schedules, state and recent events (keel retraining show)")
def show(name: Name, ident: Identity = IDENT) -> dict[str, Any]:
    from keel.loop.policies import describe_policy

    authorize(ident, "read", model=_model(name))
    return describe_policy(name)


@router.get("/v1/retraining/{name}/history", response_model=list[RetrainingEventOut],
            summary="What fired, when, what ran and the outcome, newest first (keel retraining history)")
def history(name: Name, limit: int = Query(50, ge=1, le=10_000), ident: Identity = IDENT) -> list[dict[str, Any]]:
    from keel.loop.policies import history as events

    authorize(ident, "read", model=_model(name))
    return events(name, limit=limit)


@router.post("/v1/retraining/{name}/run", response_model=RetrainingOutcomeOut,
             summary="Retrain now as if a trigger fired (guards apply), show what would happen, or advance a canary (keel retraining run)")
def run(name: Name, body: RetrainingRunIn, ident: Identity = IDENT) -> dict[str, Any]:
    from keel.loop.retraining import advance, run_policy

    authorize(ident, "write", model=_model(name))
    if body.mode == "advance":
        return advance(name)
    return run_policy(name, trigger={"kind": "manual", "by": ident.user}, dry_run=body.mode == "dry-run")


@router.post("/v1/retraining/{name}/pause", response_model=RetrainingDetailOut, summary="Pause a policy: its triggers stop (keel retraining pause)")
def pause(name: Name, body: RetrainingPauseIn, ident: Identity = IDENT) -> dict[str, Any]:
    from keel.loop.policies import set_paused

    authorize(ident, "write", model=_model(name))
    return set_paused(name, True, reason=body.reason)


@router.post("/v1/retraining/{name}/resume", response_model=RetrainingDetailOut, summary="Resume a paused policy (keel retraining resume)")
def resume(name: Name, body: RetrainingPauseIn, ident: Identity = IDENT) -> dict[str, Any]:
    from keel.loop.policies import set_paused

    authorize(ident, "write", model=_model(name))
    return set_paused(name, False, reason=body.reason)
