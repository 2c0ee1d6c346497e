"""UI pages: the model registry — ``/models``, ``/models/{name}``, ``/models/{name}/{version}``.

- ``/models``: registered models with their owners, latest version and what each
  environment and alias holds.
- ``/models/{name}``: the versions with their latest gate results (pass/fail with the
  numbers), environments and aliases, pending approval requests (Approve / Reject with a
  reason), Roll back per environment, and the audit trail (who, when, why), paged.
- ``/models/{name}/{version}``: its evaluations side by side with the champion's (metrics
  and slices), its gate results, the run that trained it, the deployments that route to it,
  links to its lineage and diagnosis, and Request promotion.

Each action is a form post that calls the same :mod:`keel.registry` function as the
``keel models`` command (promote, approve, reject, rollback), inside the authenticated
user's ``acting_as``, so the audit log records who did it. Buttons are shown only to a
role that may use them; the routes check again (a viewer's post is a 403 page). A
promotion refused by its gates renders the gate report on the version page (422).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, Response

from keel import registry
from keel.errors import GatesFailed, NotFoundError, ValidationError
from keel.registry import audit
from keel.registry import config as registry_config
from keel.server.auth import Identity, action, authorize
from keel.server.routes.common import project_file, version_ref
from keel.server.ui.pages.timing import STARTED, timed_page
from keel.server.ui.render import redirect, ui_identity

router = APIRouter(dependencies=[STARTED])
IDENT = Depends(ui_identity)
AUDIT_PAGE = 50
VERSIONS_PAGE = 100
MODELS_PAGE = 100


def _path(name: str, version: Any = None) -> str:
    from urllib.parse import quote

    return f"/models/{quote(name, safe='')}" + ("" if version is None else f"/{version}")


@router.get("/models", response_class=HTMLResponse)
def models_page(request: Request, offset: int = Query(0, ge=0, le=10**9), ident: Identity = IDENT) -> HTMLResponse:
    authorize(ident, "read")
    models = registry.list_models(offset=offset, limit=MODELS_PAGE + 1)  # one more: is there a next page
    return timed_page(request, ident, "models/list.html", section="models", title="Models", models=models[:MODELS_PAGE],
                      more=len(models) > MODELS_PAGE, offset=offset, limit=MODELS_PAGE, environments=registry_config.environments())


def _champion(model: registry.RegisteredModel, envs: list[str]) -> int | None:
    """The version an evaluation is compared with: the last environment's holder (production), else the champion alias."""
    for env in reversed(envs):
        if env in model.environments:
            return model.environments[env]
    return model.aliases.get("champion")


def _gate_rows(event: dict[str, Any] | None) -> list[dict[str, Any]]:
    gates = (event or {}).get("gates") or {}
    return list(gates.get("results") or []) if isinstance(gates, dict) else []


@router.get("/models/{name}", response_class=HTMLResponse)
def model_page(request: Request, name: str, before: int | None = Query(None, ge=1, le=2**62), ident: Identity = IDENT) -> HTMLResponse:
    authorize(ident, "read", model=name)
    model = registry.get_model(name)
    envs = registry_config.environments()
    versions = registry.list_versions(name, newest=VERSIONS_PAGE)
    gates = audit.latest_gates(name, [v.version for v in versions])
    events = audit.recent(name, limit=AUDIT_PAGE, before_id=before)
    pending = registry.list_requests(name, "pending")
    rollbacks = {env: registry.rollback_target(name, env) for env in envs if env in model.environments}
    return timed_page(request, ident, "models/model.html", section="models", title=name, model=model, versions=versions,
                gates=gates, gate_rows=_gate_rows, events=events, pending=pending, environments=envs,
                approval={e: registry_config.requires_approval(e) for e in envs}, rollbacks=rollbacks,
                older=events[-1]["id"] if len(events) == AUDIT_PAGE else None, before=before, path=_path)


def _pair(name: str, version: int, champion: int | None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(this version's evaluation, the champion's on the same data), newest shared data first."""
    mine = registry.evaluations(name, version)
    if champion is None or champion == version:
        return (mine[0] if mine else None), None
    theirs = registry.evaluations(name, champion)
    by_fp = {e["fingerprint"]: e for e in theirs}
    for e in mine:
        if e["fingerprint"] in by_fp:
            return e, by_fp[e["fingerprint"]]
    # An evaluation against the champion stores the champion's result beside it.
    for e in mine:
        if isinstance(e.get("baseline"), dict):
            return e, e["baseline"]
    return (mine[0] if mine else None), None


def _metric_rows(mine: dict[str, Any] | None, theirs: dict[str, Any] | None) -> list[dict[str, Any]]:
    a = (mine or {}).get("metrics") or {}
    b = (theirs or {}).get("metrics") or {}
    rows = []
    for k in list(a) + [k for k in b if k not in a]:
        va, vb = a.get(k), b.get(k)
        diff = va - vb if isinstance(va, int | float) and isinstance(vb, int | float) else None
        rows.append({"metric": k, "value": va, "champion": vb, "diff": diff})
    return rows


def _slice_rows(mine: dict[str, Any] | None, theirs: dict[str, Any] | None) -> tuple[list[str], list[dict[str, Any]]]:
    """(metric names, rows of slice / rows / this version's and the champion's metrics)."""
    ours = {s["slice"]: s for s in (mine or {}).get("slices") or []}
    champ = {s["slice"]: s for s in (theirs or {}).get("slices") or []}
    names: list[str] = []
    for s in list(ours.values()) + list(champ.values()):
        names += [k for k in (s.get("metrics") or {}) if k not in names]
    names = names[:4]  # the first few metrics keep the table readable at 1280 px
    rows = [{"slice": label, "rows": (ours.get(label) or champ.get(label) or {}).get("num_rows"),
             "mine": (ours.get(label) or {}).get("metrics") or {}, "champion": (champ.get(label) or {}).get("metrics") or {}}
            for label in list(ours) + [k for k in champ if k not in ours]]
    return names, rows


def _deployments_using(model: registry.RegisteredModel, version: int) -> list[dict[str, Any]]:
    from keel.deployments.specs import list_deployments

    held = {**model.aliases, **model.environments}
    out = []
    for d in list_deployments():
        for r in d.spec.routes:
            ref = str(r.ref).lstrip("@")
            resolved = int(ref) if ref.isdigit() else (model.latest_version if ref == "latest" else held.get(ref))
            if r.model == model.name and resolved == version:
                out.append({"deployment": d.name, "route": r.name, "ref": r.ref, "weight": r.weight, "shadow": r.shadow})
    return out


def _version_context(name: str, version: str) -> dict[str, Any]:
    model = registry.get_model(name)
    mv = registry.get_version(name, version_ref(version))
    envs = registry_config.environments()
    champion = _champion(model, envs)
    mine, theirs = _pair(name, mv.version, champion)
    slice_metrics, slices = _slice_rows(mine, theirs)
    gate_event = audit.latest_gates(name, [mv.version]).get(mv.version)
    return {
        "model": model, "mv": mv, "environments": envs, "champion": champion if champion != mv.version else None,
        "evaluation": mine, "champion_evaluation": theirs, "metrics": _metric_rows(mine, theirs),
        "slice_metrics": slice_metrics, "slices": slices, "gate_event": gate_event, "gates": _gate_rows(gate_event),
        "deployments": _deployments_using(model, mv.version), "approval": {e: registry_config.requires_approval(e) for e in envs},
        "refused": None, "path": _path,
    }


@router.get("/models/{name}/{version}", response_class=HTMLResponse)
def version_page(request: Request, name: str, version: str, ident: Identity = IDENT) -> HTMLResponse:
    authorize(ident, "read", model=name)
    ctx = _version_context(name, version)
    return timed_page(request, ident, "models/version.html", section="models", title=f"{name} v{ctx['mv'].version}", **ctx)


def _reason(text: str) -> str | None:
    return text.strip() or None


@router.post("/models/{name}/{version}/promote")
def promote(request: Request, name: str, version: str, to: str = Form(..., max_length=64), reason: str = Form("", max_length=2000),
            data: str = Form("", max_length=1024), target: str = Form("", max_length=255), ident: Identity = IDENT) -> Response:
    """Request a promotion (``keel models promote NAME VERSION --to ENV``): applied, or a pending request where approval is required."""
    authorize(ident, "write", model=name)
    try:
        t = registry.promote(name, version_ref(version), to=to, data=project_file(data.strip() or None), target=target.strip() or None,
                             reason=_reason(reason))
    except GatesFailed as exc:
        ctx = _version_context(name, version)
        ctx["refused"] = {"message": exc.message, "hint": exc.hint, "report": exc.report.to_dict(), "environment": to}
        return timed_page(request, ident, "models/version.html", section="models", title=f"{name} v{ctx['mv'].version}", status_code=422, **ctx)
    if t.status == "pending":
        return redirect(_path(name), flash=f"Request #{t.request_id}: v{t.to_version} to {t.environment} waits for an approver.")
    if t.status == "unchanged":
        return redirect(_path(name, t.to_version), flash=f"{t.environment} already holds v{t.to_version}.")
    return redirect(_path(name), flash=f"v{t.to_version} is in {t.environment} ({t.status}).")


def _request_of(name: str, request_id: int) -> dict[str, Any]:
    found = registry.get_request(request_id)
    if found["model"] != name:
        raise NotFoundError(f"Request #{request_id} is not a request of model {name!r}.", hint=f"See the requests on {_path(name)}.")
    return found


@router.post("/models/{name}/requests/{request_id}/approve", openapi_extra=action("approve"))
def approve(request: Request, name: str, request_id: int, reason: str = Form("", max_length=2000), ident: Identity = IDENT) -> Response:
    """Approve a pending request with a reason (``keel models approve ID --reason``)."""
    authorize(ident, "approve", model=name)
    _request_of(name, request_id)
    t = registry.approve(request_id, reason)
    return redirect(_path(name), flash=f"Approved #{request_id}: v{t.to_version} is in {t.environment}.")


@router.post("/models/{name}/requests/{request_id}/reject", openapi_extra=action("approve"))
def reject(request: Request, name: str, request_id: int, reason: str = Form("", max_length=2000), ident: Identity = IDENT) -> Response:
    """Reject a pending request with a reason (``keel models reject ID --reason``)."""
    authorize(ident, "approve", model=name)
    _request_of(name, request_id)
    registry.reject(request_id, reason)
    return redirect(_path(name), flash=f"Rejected #{request_id}.")


@router.post("/models/{name}/rollback")
def rollback(request: Request, name: str, env: str = Form(..., max_length=64), reason: str = Form("", max_length=2000),
             ident: Identity = IDENT) -> Response:
    """Restore the version ``env`` held before (``keel models rollback NAME --env ENV``)."""
    authorize(ident, "write", model=name)
    if not env.strip():
        raise ValidationError("A rollback needs an environment.", hint="Pick one, e.g. production.")
    t = registry.rollback(name, env, reason=_reason(reason))
    return redirect(_path(name), flash=f"Rolled {t.environment} back from v{t.from_version} to v{t.to_version}.")
