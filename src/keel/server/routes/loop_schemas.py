"""Request and response models of the deployment, lineage, diagnosis and ownership routes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import Field

from keel.server.schemas import In, Num, Out, TransitionOut

DeploymentName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$", description="A deployment's name, e.g. churn-live")]
ModelRef = Annotated[str, Field(min_length=3, max_length=300, pattern=r"^(models:/)?[A-Za-z0-9][A-Za-z0-9_.\-]*(@[A-Za-z0-9_.\-]+|/[0-9]{1,18})$",
                                examples=["churn@production", "churn/7"])]
Percent = Annotated[float, Field(gt=0, lt=100, allow_inf_nan=False, description="Share of requests, in percent")]


# -- deployments ---------------------------------------------------------------------

class RouteOut(Out):
    name: str
    model: str
    ref: str
    weight: float
    shadow: bool


class ObjectivesOut(Out):
    max_error_rate: Num = None
    max_p99_ms: Num = None
    min_requests: int


class SpecOut(Out):
    name: str
    mode: str = Field(description="single | shadow | canary | ab")
    routes: list[RouteOut]
    sticky_by: str | None = None
    objectives: ObjectivesOut


class DeploymentOut(Out):
    name: str
    spec: SpecOut
    revision: int
    created_by: str
    created_ms: int
    updated_by: str
    updated_ms: int


class _Options(In):
    shadow: ModelRef | None = Field(None, description="A challenger that sees every request off the request path")
    canary: ModelRef | None = Field(None, description="A challenger that answers `weight` percent of requests")
    weight: Percent | None = Field(None, description="The canary's share (default 10)")
    ab: dict[Annotated[str, Field(max_length=300)], Annotated[float, Field(allow_inf_nan=False)]] | None = Field(
        None, max_length=26, description="An A/B split: {NAME/VERSION: weight}, weights adding up to 100", examples=[{"churn/7": 50, "churn/6": 50}])
    sticky_by: str | None = Field(None, max_length=255, description="An input column, or header:NAME")
    max_error_rate: float | None = Field(None, ge=0, le=1, description="Roll the canary back above this error rate")
    max_p99_ms: float | None = Field(None, gt=0, allow_inf_nan=False, description="Roll the canary back above this p99 latency")
    reason: str | None = Field(None, max_length=2000, description="Why (recorded with the change)")


class DeploymentIn(_Options):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$", examples=["churn-live"])
    model: ModelRef | None = Field(None, description="The champion (optional with `ab`)")
    min_requests: int = Field(100, ge=1, le=2**62, description="Requests the canary answers before its objectives are judged")


class DeploymentSetIn(_Options):
    model: ModelRef | None = Field(None, description="A new champion")
    min_requests: int | None = Field(None, ge=1, le=2**62)
    single: bool = Field(False, description="Drop the challenger: the champion answers everything")


class DeployPromoteIn(In):
    to: str = Field("production", min_length=1, max_length=64, description="Environment the challenger's version moves into")
    data: str | None = Field(None, description="Evaluation data for the gates: a file inside the server's project folder")
    target: str | None = Field(None, max_length=255)
    force: bool = Field(False, description="Past failing gates (admins only, with a reason)")
    reason: str | None = Field(None, max_length=2000)


class DeployPromoteOut(Out):
    transition: TransitionOut
    deployment: DeploymentOut


class DeploymentEventOut(Out):
    id: int
    revision: int
    action: str = Field(description="create | set | promote | promote_requested | rollback | auto_rollback | delete")
    user: str
    reason: str | None = None
    time_ms: int
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    detail: dict[str, Any] | None = None


class RouteStatsOut(Out):
    model: str
    ref: str
    weight: float
    shadow: bool
    versions: list[int]
    requests: int
    errors: int
    latency_p50_ms: Num = None
    latency_p99_ms: Num = None
    labelled: int


class ComparisonOut(Out):
    deployment: str
    revision: int
    mode: str
    since: str
    routes: dict[str, RouteStatsOut]
    shadow: dict[str, Any] | None = None
    quality: dict[str, Any] | None = None
    recommendation: str


class DeploymentStatusOut(Out):
    deployment: DeploymentOut
    comparison: ComparisonOut


class DeletedOut(Out):
    name: str
    deleted: bool


# -- lineage, diagnosis, owners --------------------------------------------------------

class LineageNodeOut(Out):
    kind: str = Field(description="prediction | deployment | route | model_version | run | dataset | feature_service | feature_view | source | code | packages | monitor")
    label: str
    detail: dict[str, Any]
    children: list[LineageNodeOut]


class DiagnoseOut(Out):
    model: str
    version: int
    ref: str
    aliases: list[str]
    environments: list[str]
    window_days: int
    generated: str
    findings: list[str]
    monitors: Any = Field(description="Monitor names, or {unavailable: why}")
    changes: Any
    alerts: Any
    drift: Any
    performance: Any
    prediction_log: Any
    lineage: Any


class OwnedOut(Out):
    kind: str
    name: str


class OwnershipOut(Out):
    kinds: list[str]
    owners: dict[str, list[OwnedOut]] = Field(description="{user: what they own}")
    unowned: list[OwnedOut]


class ProductionOut(Out):
    model: str
    version: int
    via: list[str] = Field(description="How it is in production: the environment, deployment routes")


class GapOut(Out):
    kind: str
    name: str
    problem: str = Field(description="no_monitor | no_owner | no_contract")
    detail: str
    fix: str
    model: str | None = None
    version: int | None = None


class GapsOut(Out):
    production: list[ProductionOut]
    gaps: list[GapOut]
