"""Request and response models of the platform API (pydantic), so the OpenAPI document is complete.

Responses are the library's own ``to_dict()`` values: each model names the fields
a client relies on and allows the rest (``extra="allow"``), so a field added in the
library reaches clients without a second definition here. Floats are ``float |
None``: NaN and infinities are sent as null (JSON has neither).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

Num = float | None


def _iso_text(value: Any) -> Any:
    if value is not None and not isinstance(value, str):
        raise ValueError("give the time as an ISO-8601 string with a zone, e.g. 2026-01-31T00:00:00Z")
    return value


# A time in a request body: ISO-8601 text with a zone only (never a number of seconds, never naive).
IsoTime = Annotated[AwareDatetime, BeforeValidator(_iso_text), Field(strict=False)]


class Out(BaseModel):
    """A response: the listed fields, and whatever else the library returns."""

    model_config = ConfigDict(extra="allow")


class In(BaseModel):
    """A request body: unknown fields are refused (a typo is a 422, never ignored), and types are
    strict (``"3"`` is not a number, ``0`` not a boolean)."""

    model_config = ConfigDict(extra="forbid", strict=True)


# -- errors --------------------------------------------------------------------------

class Problem(Out):
    """The body of every refused request: the error's class, its message (with the fix) and detail."""

    error: str = Field(examples=["NotFoundError"])
    message: str
    detail: dict[str, Any] | None = None
    report: dict[str, Any] | None = Field(None, description="Gate or contract results, when gates or a contract refused the request")


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class RequestInvalid(BaseModel):
    """FastAPI's body for a request that does not match its schema (422)."""

    detail: list[FieldError] | str


def _problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _problem("Bad input or a setting keel cannot use"),
    401: _problem("No valid credentials"),
    403: _problem("The caller may not do this"),
    404: _problem("No such object"),
    409: _problem("The write collides with existing state"),
    429: _problem("Too many failed logins: wait Retry-After seconds"),
    422: {"model": Problem | RequestInvalid, "description": "A value is not acceptable, or the request does not match its schema"},
    503: _problem("A store or service is unreachable"),
}


class MlflowError(Out):
    """MLflow's error body (the /api/2.0/mlflow routes answer in MLflow's shape)."""

    error_code: str = Field(examples=["RESOURCE_DOES_NOT_EXIST"])
    message: str


def _mlflow_problem(description: str) -> dict[str, Any]:
    return {"model": MlflowError | Problem, "description": description}


MLFLOW_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: _mlflow_problem(str(spec["description"])) for status, spec in ERROR_RESPONSES.items()
}


# -- registry ------------------------------------------------------------------------

class RegisteredModelOut(Out):
    name: str
    owner: str
    owners: list[str] = []
    description: str | None = None
    tags: dict[str, str] = {}
    created_time: datetime | None = None
    updated_time: datetime | None = None
    latest_version: int | None = None
    environments: dict[str, int] = {}
    aliases: dict[str, int] = {}
    status: str


class ModelVersionOut(Out):
    model: str
    version: int
    uri: str
    run_id: str
    flavor: str
    created_by: str
    created_time: datetime | None = None
    description: str | None = None
    environments: list[str] = []
    aliases: list[str] = []
    status: str
    meta: dict[str, Any] = {}
    lineage: dict[str, Any] = {}


class ModelVersionDetail(ModelVersionOut):
    evaluations: list[dict[str, Any]] = []


class AuditEventOut(Out):
    id: int
    model: str | None = None
    action: str
    target: str | None = None
    from_version: int | None = None
    to_version: int | None = None
    outcome: str
    user: str
    reason: str | None = None
    time: datetime | None = None


class GateResultOut(Out):
    name: str
    status: str
    detail: str
    value: Num = None
    required: Num = None
    champion: Num = None


class GateReportOut(Out):
    model: str
    version: int
    environment: str
    champion_version: int | None = None
    passed: bool
    policy: str
    results: list[GateResultOut]


class TransitionOut(Out):
    model: str
    environment: str
    status: str = Field(description="applied | forced | pending | unchanged | dry-run")
    from_version: int | None = None
    to_version: int
    event_id: int | None = None
    request_id: int | None = None
    gates: GateReportOut | None = None


class ApprovalRequestOut(Out):
    id: int
    model: str
    version: int
    environment: str
    status: str
    requested_by: str
    requested_time: datetime | None = None
    reason: str | None = None
    decided_by: str | None = None
    decided_time: datetime | None = None
    decision_reason: str | None = None


class EnvironmentOut(Out):
    name: str
    requires_approval: bool


class AliasIn(In):
    version: int | str = Field(description="A version number, or an alias or environment to copy", examples=[3])


class PromoteIn(In):
    to: str = Field("production", description="Target environment")
    data: str | None = Field(None, description="Evaluation data: a Parquet or CSV file inside the server's project folder (default: the policy's)")
    target: str | None = None
    task: Literal["binary", "multiclass", "regression"] | None = None
    force: bool = Field(False, description="Override failed gates (admins only, with a reason)")
    reason: str | None = None


class ReasonIn(In):
    reason: str = Field(min_length=1)


class OptionalReasonIn(In):
    reason: str | None = None


class RollbackIn(In):
    env: str = "production"
    reason: str | None = None


class StatusOut(Out):
    model: str
    owner: str = ""
    owners: list[str] = []
    latest_version: int | None = None
    aliases: dict[str, int] = {}
    environments: list[dict[str, Any]]
    pending_requests: list[dict[str, Any]] = []


class LifecycleOut(Out):
    """The audit event of an archive, restore or delete."""


# -- features ------------------------------------------------------------------------

class FeatureObjectOut(Out):
    kind: str
    name: str
    version: int
    owner: str | Any = ""
    description: str | None = ""
    features: list[str] = []
    materialized_until: str | None = None
    used_by: list[str] = []


class FeatureObjectDetail(Out):
    kind: str
    name: str
    version: int
    hash: str
    spec: dict[str, Any]
    history: list[dict[str, Any]] = []


class OnlineIn(In):
    features: str | list[str] = Field(description="A feature service's name, or 'view:feature' references", examples=["churn_v1"])
    entity_rows: list[dict[str, Any]] | dict[str, list[Any]] = Field(description="Join keys (and request data) per row",
                                                                     examples=[[{"customer_id": 42}]])
    definitions_version: int | None = Field(None, ge=1, le=2**62, description="Read the values of an applied definitions version")
    with_status: bool = Field(True, description="Also return each value's status and age")


class OnlineOut(Out):
    features: list[str]
    rows: dict[str, list[Any]]
    values: dict[str, list[Any]]
    status: dict[str, list[str]] | None = None
    age_seconds: dict[str, list[Num]] | None = None


class PushIn(In):
    rows: list[dict[str, Any]] = Field(min_length=1, description="Rows shaped like the view's source; times as ISO-8601 strings")
    to: Literal["online_and_offline", "online", "offline"] = "online_and_offline"


class PushOut(Out):
    view: str
    rows: int
    keys_written: int
    offline_path: str | None = None


# -- predictions and feedback --------------------------------------------------------

class QueryIn(In):
    sql: str = Field(min_length=1, examples=["SELECT version, count(*) AS n FROM predictions GROUP BY version"])
    model: str | None = Field(None, description="Only this model's log (faster)")
    limit: int = Field(10_000, ge=1, le=1_000_000, description="Most rows returned")


class QueryOut(Out):
    columns: list[str]
    rows: list[dict[str, Any]]
    num_rows: int = Field(description="Rows the query produced (more than returned when over the limit)")
    truncated: bool


class FeedbackIn(In):
    labels: list[Any] = Field(min_length=1, description="One ground-truth label per request id (or entity)")
    request_ids: list[str] | None = Field(None, description="The ids predictions were returned with")
    entities: list[Any] | None = Field(None, description="Entity keys instead of request ids (with timestamps)")
    entity_column: str | None = None
    timestamps: list[IsoTime] | None = Field(None, description="The labels' event times (default: now)")
    model: str | None = Field(None, description="The model (default: found from the ids)")
    horizon: str | None = Field(None, description="Labels later than this after their prediction count as late, e.g. 30d")


class FeedbackOut(Out):
    model: str
    received: int
    stored: int
    matched: int
    unknown: int
    duplicates: int
    corrections: int
    late: int


# -- monitoring ----------------------------------------------------------------------

class MonitorOut(Out):
    name: str
    model: str
    window: str
    checks: list[str] = []
    schedule: str | None = None
    origin: str | None = None
    last_run: dict[str, Any] | None = None


class MonitorDetail(Out):
    monitor: MonitorOut
    runs: list[dict[str, Any]]


class MonitorRunIn(In):
    end: IsoTime | None = Field(None, description="End of the window (default: now); ISO-8601 with a zone")


class MonitorResultOut(Out):
    monitor: str
    model: str
    status: str
    rows: int
    window_start: datetime | None = None
    window_end: datetime | None = None
    alerts: list[dict[str, Any]] = []


class AlertOut(Out):
    id: int
    monitor: str
    status: str
    subject: str | None = None
    message: str | None = None
    occurrences: int | None = None


class AlertChange(Out):
    id: int
    status: str


# -- pipelines -----------------------------------------------------------------------

class PipelineParam(Out):
    name: str
    type: str | None = None
    required: bool
    default: str | int | float | bool | None = None


class PipelineOut(Out):
    name: str
    ref: str
    experiment: str
    description: str | None = None
    parameters: list[PipelineParam]


class PipelineRunIn(In):
    pipeline: str = Field(description="A pipeline of the project, by name or module:name", examples=["training"])
    params: dict[str, Any] = {}
    smoke: bool = False
    refresh: bool = Field(False, description="Ignore the cache: run every step again")
    engine: Literal["local", "process", "ray"] | None = None
    id: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$",
                           description="A client-generated id: a retried request then queues nothing twice")


class PipelineRunOut(Out):
    id: str
    pipeline: str
    name: str
    experiment: str
    params: dict[str, Any]
    status: str = Field(description="queued | running | finished | failed | crashed")
    requested_by: str
    requested_time: datetime | None = None
    worker: str | None = None
    started_time: datetime | None = None
    ended_time: datetime | None = None
    run_id: str | None = Field(None, description="The pipeline run (a tracked run), once started")
    error: str | None = None
    resume_of: str | None = Field(None, description="The failed pipeline run this row resumes (the UI's Resume), if any")


class PipelineRunDetail(PipelineRunOut):
    steps: list[dict[str, Any]] = []


class Health(BaseModel):
    status: str
    version: str
