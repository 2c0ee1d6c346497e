"""Moving versions between environments: promote (through gates), approvals, aliases, rollback.

An environment row is changed with an optimistic check on its ``revision``
(and its primary key when it is first created): of two promotions racing for
the same environment exactly one commits; the other gets a ConflictError and
both attempts are in the audit log. Nothing is half-applied: the environment
row and its event are written in one transaction, and subscribers are called
only after it commits.

``ForbiddenError`` and ``GatesFailed`` live in :mod:`keel.errors` and are
re-exported here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from keel.errors import (
    ConflictError,
    ForbiddenError,
    GatesFailed,
    NotFoundError,
    ValidationError,
    WriteConflict,
    did_you_mean,
)
from keel.models.loader import model_id
from keel.registry import config as C
from keel.registry.audit import append_event, history, record_event
from keel.registry.events import emit
from keel.registry.gates import GateReport, GateResult, Policy, policy_for
from keel.registry.versions import ModelVersion, check_model_name, resolve_version
from keel.store.metadata import get_metadata_store, insert_ignore, ms_to_datetime, now_ms
from keel.store.schema.registry import (
    approval_requests,
    model_aliases,
    model_versions,
    registered_models,
)


class _Moved(Exception):
    """The environment moved under a transition (rolls its transaction back)."""


@dataclass
class Transition:
    model: str
    environment: str
    status: str  # applied | forced | pending | unchanged | dry-run (a smoke run's version: gates checked, nothing moved)
    from_version: int | None
    to_version: int
    event_id: int | None = None
    request_id: int | None = None
    gates: GateReport | None = None
    evaluation: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in ("gates", "evaluation")}
        out["gates"] = None if self.gates is None else self.gates.to_dict()
        return out

    def explain(self) -> str:
        """One line: what happened (or, for a dry run, would happen) and which gate decided it."""
        head = f"{self.model} v{self.to_version} -> {self.environment}"
        if self.gates is None:
            return f"{head}: {self.status}"
        failed = self.gates.failures
        why = "; ".join(f"{r.name}: {r.detail}" for r in (failed or self.gates.results)) or "no gates"
        if self.status == "dry-run":
            return f"would promote {head}: {'no' if failed else 'yes'} ({why})"
        return f"{head}: {self.status} ({why})"


def _user() -> str:
    from keel.config import settings

    return str(settings().acting_user)


# -- who may approve and force ------------------------------------------------------
# With users defined (keel users add; what `keel server --auth` uses) roles decide: an approval
# needs the approver role on the model (globally or on it), a forced promotion the admin role.
# Without any user (the local single-user default) keel.yaml registry.admins decides who may
# force, and any other user may approve. In both cases the approver is neither the requester
# nor the version's trainer (its run's user).

def trainer_of(mv: ModelVersion) -> str | None:
    """The user of the run that trained ``mv`` (None when the run is gone)."""
    from keel.store.schema.tracking import runs

    with get_metadata_store().read() as conn:
        return conn.execute(sa.select(runs.c.user).where(runs.c.id == mv.run_id)).scalar()


def check_force(user: str, model: str) -> None:
    """ForbiddenError unless ``user`` may force a promotion of ``model`` past its gates."""
    from keel.store.users import has_users, role_on

    if user in C.admins() or (has_users() and role_on(user, model=model) == "admin"):
        return
    raise ForbiddenError(
        f"User {user!r} may not force a promotion of {model} past its gates; only an admin may.",
        hint=f"Ask an admin (keel users ls; keel.yaml registry.admins: {', '.join(C.admins()) or 'none configured'}).",
    )


def check_approver(user: str, *, requested_by: str, trainer: str | None, model: str, request_id: int) -> None:
    """ForbiddenError unless ``user`` may approve request ``request_id`` (the four-eyes rule)."""
    from keel.store.users import has_users, rank, role_on

    if user == requested_by:
        raise ForbiddenError(f"User {user!r} requested #{request_id} and cannot approve it too.",
                             hint="Another user with the approver role must approve it.")
    if trainer is not None and user == trainer:
        raise ForbiddenError(f"User {user!r} trained the version of {model} in request #{request_id} and cannot approve it.",
                             hint="An approver who neither trained nor requested it must approve it.")
    if has_users():
        role = role_on(user, model=model)
        if rank(role) < rank("approver"):
            raise ForbiddenError(
                f"User {user!r} ({role or 'no such user'}) may not approve promotions of {model}; that needs the approver role.",
                hint=f"An admin can grant it: keel users set-role {user} approver --model {model}.",
            )


def _holder(conn: sa.Connection, mid: int, name: str) -> tuple[int | None, int | None, str | None]:
    row = conn.execute(
        sa.select(model_aliases.c.version, model_aliases.c.revision, model_aliases.c.kind).where(model_aliases.c.model_id == mid, model_aliases.c.name == name)
    ).first()
    return (None, None, None) if row is None else (int(row[0]), int(row[1]), str(row[2]))


def _refuse_retired(mv: ModelVersion, what: str) -> None:
    """Archived and deleted versions never enter an environment or take an alias."""
    if mv.status != "active":
        restore = f"Restore it first: keel models archive {mv.model} {mv.version} --restore." if mv.status == "archived" else "Pick a live version (keel models show NAME)."
        raise ValidationError(f"{mv.model} v{mv.version} is {mv.status}; cannot {what}.", hint=restore)


def _lock_live(conn: sa.Connection, mid: int, name: str, version: int) -> None:
    """Share-lock the version row (PostgreSQL) and check that it and its model are live, so that an
    archive or delete running at the same time either waits for this move or makes it fail."""
    row = conn.execute(
        sa.select(model_versions.c.archived_ms, model_versions.c.deleted_ms, registered_models.c.archived_ms.label("model_archived_ms"))
        .join(registered_models, registered_models.c.id == model_versions.c.model_id)
        .where(model_versions.c.model_id == mid, model_versions.c.version == version)
        .with_for_update(read=True, of=model_versions)
    ).first()
    if row is None or row.deleted_ms is not None:
        raise ValidationError(f"{name} v{version} is deleted; it cannot enter an environment or take an alias.", hint=f"See `keel models show {name}`.")
    if row.archived_ms is not None:
        raise ValidationError(
            f"{name} v{version} is archived; it cannot enter an environment or take an alias.",
            hint=f"Restore it first: keel models archive {name} {version} --restore.",
        )
    if row.model_archived_ms is not None:
        raise ValidationError(f"Model {name!r} is archived; its versions cannot move.", hint=f"Restore it first: keel models archive {name} --restore.")


def _move(conn: sa.Connection, mid: int, name: str, kind: str, version: int, expected: int | None, user: str) -> bool:
    """Point ``name`` at ``version`` if nobody moved it since ``expected``; False when someone did."""
    if expected is None:
        return insert_ignore(
            conn, model_aliases,
            {"model_id": mid, "name": name, "kind": kind, "version": version, "revision": 1, "updated_ms": now_ms(), "updated_by": user},
            ["model_id", "name"],
        )
    res = conn.execute(
        sa.update(model_aliases)
        .where(model_aliases.c.model_id == mid, model_aliases.c.name == name, model_aliases.c.revision == expected)
        .values(version=version, revision=expected + 1, updated_ms=now_ms(), updated_by=user)
    )
    return res.rowcount == 1


def _apply(mv: ModelVersion, env: str, action: str, frm: int | None, expected: int | None, outcome: str, user: str, reason: str | None, gates: Any) -> dict[str, Any]:
    store = get_metadata_store()
    with store.write() as conn:
        mid = model_id(conn, mv.model)
        _lock_live(conn, mid, mv.model, mv.version)
        if _move(conn, mid, env, "environment", mv.version, expected, user):
            event = append_event(conn, mid, mv.model, action, env, frm, mv.version, outcome, user, reason, gates)
        else:
            event = None
    if event is None:
        with store.read() as conn:
            now_v, _rev, _k = _holder(conn, mid, env)
        record_event(mid, mv.model, action, env, frm, mv.version, "conflict", user, f"{env} moved to v{now_v} meanwhile" + (f"; {reason}" if reason else ""), gates)
        raise ConflictError(
            f"{mv.model}: {env} changed while this {action} of v{mv.version} was in progress (it now holds v{now_v}).",
            hint=f"Check `keel models status {mv.model}` and try again if v{mv.version} should still replace it.",
        )
    emit(event)
    return event


def check_feature_service(mv: ModelVersion) -> None:
    """The version's input columns must still be served by its feature service."""
    service = mv.meta.get("feature_service")
    if not service:
        return
    try:
        from keel.features.registry import get_object
    except ImportError:
        return
    try:
        spec = get_object(str(service), kind="feature_service")
    except NotFoundError:
        raise ValidationError(
            f"{mv.model} v{mv.version} was trained on feature service {service!r}, which is not applied in this project.",
            hint="Run `keel features apply` with the service defined, or retrain on a service that exists.",
        ) from None
    served = {f for item in spec["spec"].get("features", []) for f in item.get("features", [])}
    needed = [c["name"] for c in (mv.meta.get("signature") or {}).get("inputs", [])] or list(mv.meta.get("feature_names") or [])
    missing = [c for c in needed if c not in served]
    if missing:
        raise ValidationError(
            f"{mv.model} v{mv.version}'s signature needs column '{missing[0]}'"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + f", which feature service {service!r} v{spec['version']} does not provide." + did_you_mean(missing[0], served),
            hint=f"Retrain on the current service (keel.get_training_set(..., features='{service}')) and register the new model, "
            "or restore the feature in the service and `keel features apply`.",
        )


def evaluate_gates(
    mv: ModelVersion, env: str, *, data: Any = None, target: str | None = None, task: str | None = None, policy: Any = None
) -> tuple[GateReport, Any]:
    """Run every gate for ``mv`` entering ``env``; returns (report, candidate evaluation or None)."""
    from keel.evaluation.evaluate import evaluate, read_data
    from keel.models.loader import load_model
    from keel.registry import gates as G

    pol, source = policy_for(mv.model, env, policy)
    champion_version = None
    with get_metadata_store().read() as conn:
        try:
            champion_version, _rev, _k = _holder(conn, model_id(conn, mv.model), env)
        except NotFoundError:
            if not mv.dry_run:  # a dry-run version's model may not be registered yet
                raise
    if champion_version == mv.version:
        champion_version = None
    data = data if data is not None else pol.data
    target = target or pol.target
    frame = None
    if data is not None:
        if not target:
            raise ValidationError("Evaluation data was given without its target column.", hint="Pass --target COLUMN (or target: in the policy).")
        frame, _n, _fp = read_data(data)
        if target not in frame.columns:
            raise ValidationError(f"Target column {target!r} is not in the evaluation data." + did_you_mean(target, [str(c) for c in frame.columns]))
        task = task or pol.task or G.infer_task(frame[target])
    task = task or pol.task or "binary"
    G.check_metric_names(pol, task)
    needs_data = bool(pol.metric_gates() or pol.max_slice_drop is not None)
    if needs_data and frame is None:
        raise ValidationError(
            f"The promotion policy of {mv.model!r} has metric gates but no evaluation data.",
            hint="Pass --data PATH --target COLUMN (keel.promote(..., data=, target=)) or set data: and target: in the policy.",
        )
    cand = champ = None
    ci: dict[str, Any] = {}
    if frame is not None:
        boot = int(pol.bootstrap) if pol.confidence else 0
        champ_uri = f"models:/{mv.model}/{champion_version}" if champion_version is not None else None
        cand = evaluate(
            mv.uri, frame, target=str(target), task=task, slices=pol.slices, custom_metrics=pol.custom_metrics, threshold=pol.threshold,
            baseline=champ_uri, bootstrap=boot, confidence=float(pol.confidence or 0.95), store=not mv.dry_run,
        )
        champ = cand.baseline
        ci = {r["metric"]: r for r in cand.comparison if "low" in r}
    results: list[GateResult] = []
    if pol.default:
        stored = None if frame is not None else _stored_pair(mv, champion_version)
        results += G.default_results(task, cand, champ, champion_version, env, stored)
    results += G.metric_results(pol, cand, champ, ci, champion_version, env) if cand is not None else []
    results += G.slice_results(pol, cand, champ, task) if cand is not None else []
    results += G.contract_results(pol, frame) if not pol.default else []
    results += G.function_results(pol, cand, champ)
    results += G.kind_results(pol, mv, env)
    packaged = load_model(mv.uri)
    if pol.smoke:
        results.append(G.smoke_result(packaged))
    if pol.latency_ms is not None:
        results.append(G.latency_result(packaged, float(pol.latency_ms), None if frame is None else frame.drop(columns=[str(target)])))
    report = GateReport(mv.model, mv.version, env, champion_version, results, source, None if cand is None else cand.to_dict())
    return report, cand


def _stored_pair(mv: ModelVersion, champion_version: int | None) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Metrics of both versions from stored evaluations on the same data (same fingerprint), newest first."""
    if champion_version is None:
        return None
    from keel.registry.versions import evaluations

    mine = evaluations(mv.model, mv.version)
    theirs = {e["fingerprint"]: e for e in evaluations(mv.model, champion_version)}
    for e in mine:
        if e["fingerprint"] in theirs:
            return e["metrics"], theirs[e["fingerprint"]]["metrics"]
    return None


def _refuse_smoke(mv: Any) -> None:
    """A model from a smoke run (``--smoke``: sampled data, shrunk params) never reaches an environment."""
    import sqlalchemy as sa

    from keel.store.schema import tags

    with get_metadata_store().read() as conn:
        smoke = conn.execute(sa.select(tags.c.value).where(tags.c.run_id == mv.run_id, tags.c.key == "keel.smoke")).scalar()
    if smoke == "true":
        raise ValidationError(
            f"Version {mv.version} comes from smoke run {mv.run_id}, which used sampled data and shrunk parameters; it can never be promoted.",
            hint="Run the full pipeline (without --smoke) and promote that version.",
        )


def promote(
    name: str,
    version: Any,
    to: str = "production",
    *,
    data: Any = None,
    target: str | None = None,
    task: str | None = None,
    policy: Policy | dict[str, Any] | None = None,
    force: bool = False,
    reason: str | None = None,
) -> Transition:
    """Move ``version`` of ``name`` into environment ``to`` through its gates.

    Refused (GatesFailed, recorded) when a gate fails, unless ``force=True`` with
    a ``reason`` by a user listed in keel.yaml ``registry.admins``. An environment
    that requires approval gets a pending request instead.
    """
    check_model_name(name)
    env = C.check_environment(to)
    mv = resolve_version(name, version)
    user = _user()
    if force:
        if not reason or not str(reason).strip():
            raise ValidationError("A forced promotion needs a reason.", hint="Pass reason='why the gates may be skipped' (--reason).")
        check_force(user, name)
    _refuse_retired(mv, f"promote it to {env}")
    check_feature_service(mv)
    if mv.dry_run:
        return _dry_promote(mv, env, data=data, target=target, task=task, policy=policy)
    _refuse_smoke(mv)
    with get_metadata_store().read() as conn:
        mid = model_id(conn, name)
        current, revision, _kind = _holder(conn, mid, env)
    if current == mv.version:
        return Transition(name, env, "unchanged", current, mv.version)
    report, evaluation = evaluate_gates(mv, env, data=data, target=target, task=task, policy=policy)
    gates = report.to_dict()
    if not report.passed and not force:
        failed = report.failures
        record_event(mid, name, "promote", env, current, mv.version, "refused", user, reason, gates)
        raise GatesFailed(
            f"{name} v{mv.version} was refused for {env}: {len(failed)} gate(s) failed ({'; '.join(f.name + ': ' + f.detail for f in failed)}).",
            report=report,
            hint="Fix the model or the data; an admin may override with --force --reason TEXT.",
        )
    outcome = "forced" if (force and not report.passed) else "applied"
    if C.requires_approval(env):
        with get_metadata_store().write() as conn:
            rid = conn.execute(
                sa.insert(approval_requests).values(
                    model_id=mid, version=mv.version, environment=env, status="pending", requested_by=user, requested_ms=now_ms(),
                    reason=reason, gates=json.dumps({"report": gates, "from_version": current, "revision": revision, "forced": outcome == "forced"}, default=str),
                )
            ).inserted_primary_key[0]  # type: ignore[index]
            event = append_event(conn, mid, name, "request", env, current, mv.version, "pending", user, reason, gates)
        emit(event)
        return Transition(name, env, "pending", current, mv.version, event["id"], int(rid), report, evaluation)
    event = _apply(mv, env, "promote", current, revision, outcome, user, reason, gates)
    return Transition(name, env, outcome, current, mv.version, event["id"], None, report, evaluation)


def _dry_promote(mv: ModelVersion, env: str, **gate_args: Any) -> Transition:
    """A smoke run's version: run the gates, move nothing, record the verdict on the active run."""
    from keel.tracking.runs import active_run, set_tag

    current = None
    with get_metadata_store().read() as conn:
        try:
            current, _rev, _kind = _holder(conn, model_id(conn, mv.model), env)
        except NotFoundError:
            pass
    report, evaluation = evaluate_gates(mv, env, **gate_args)
    moved = Transition(mv.model, env, "dry-run", current, mv.version, gates=report, evaluation=evaluation)
    verdict = moved.explain()
    if report.passed and C.requires_approval(env):
        verdict = verdict.replace(": yes (", ": yes, once approved (", 1)
    if active_run() is not None:
        set_tag("keel.smoke.promotion", verdict[:2000])
    return moved


# -- approvals -------------------------------------------------------------------

def _request(conn: sa.Connection, request_id: int) -> Any:
    row = conn.execute(sa.select(approval_requests).where(approval_requests.c.id == int(request_id))).first()
    if row is None:
        raise NotFoundError(f"No approval request #{request_id}.", hint="List them with `keel models requests`.")
    return row


def approve(request_id: int, reason: str) -> Transition:
    """Approve a pending promotion and apply it.

    The approver is neither the requester nor the version's trainer and, when
    users are defined, holds the approver role on the model (:func:`check_approver`).
    A refused approval is recorded in the model's audit log.
    """
    from keel.registry.versions import _model as _model_row

    if not reason or not str(reason).strip():
        raise ValidationError("An approval needs a reason.", hint="Pass reason='...' (--reason).")
    user = _user()
    store = get_metadata_store()
    with store.read() as conn:
        req = _request(conn, request_id)
        name = _model_row(conn, req.model_id).name
    if req.status != "pending":
        raise ConflictError(f"Request #{request_id} is already {req.status} (by {req.decided_by}).", hint="List pending ones with `keel models requests`.")
    saved = json.loads(req.gates or "{}")
    mv = resolve_version(name, int(req.version))
    try:
        check_approver(user, requested_by=req.requested_by, trainer=trainer_of(mv), model=name, request_id=int(request_id))
    except ForbiddenError as exc:
        record_event(req.model_id, name, "approve", req.environment, saved.get("from_version"), mv.version, "refused", user,
                     f"request #{request_id}: {exc.message}", saved.get("report"))
        raise
    try:
        with store.write() as conn:
            claimed = conn.execute(
                sa.update(approval_requests)
                .where(approval_requests.c.id == req.id, approval_requests.c.status == "pending")
                .values(status="approved", decided_by=user, decided_ms=now_ms(), decision_reason=reason)
            ).rowcount
            if claimed != 1:
                raise ConflictError(f"Request #{request_id} was decided by someone else meanwhile.", hint="See `keel models requests`.")
            _lock_live(conn, req.model_id, name, mv.version)
            if not _move(conn, req.model_id, req.environment, "environment", mv.version, saved.get("revision"), user):
                raise _Moved()
            event = append_event(
            conn, req.model_id, name, "approve", req.environment, saved.get("from_version"), mv.version,
                "forced" if saved.get("forced") else "applied", user, f"request #{request_id}: {reason}", saved.get("report"),
            )
    except _Moved:
        record_event(req.model_id, name, "approve", req.environment, saved.get("from_version"), mv.version, "conflict", user, reason, saved.get("report"))
        raise ConflictError(
            f"{req.environment} of {name} changed since request #{request_id} was made; its gates compared against another version.",
            hint=f"Ask for a new promotion: keel models promote {name} {mv.version} --to {req.environment}.",
        ) from None
    emit(event)
    return Transition(name, req.environment, event["outcome"], saved.get("from_version"), mv.version, event["id"], int(request_id))


def reject(request_id: int, reason: str) -> dict[str, Any]:
    """Reject a pending promotion request."""
    from keel.registry.versions import _model as _model_row

    if not reason or not str(reason).strip():
        raise ValidationError("A rejection needs a reason.", hint="Pass reason='...' (--reason).")
    user = _user()
    store = get_metadata_store()
    with store.write() as conn:
        req = _request(conn, request_id)
        if req.status != "pending":
            raise ConflictError(f"Request #{request_id} is already {req.status}.", hint="List pending ones with `keel models requests`.")
        name = _model_row(conn, req.model_id).name
        conn.execute(
            sa.update(approval_requests).where(approval_requests.c.id == req.id).values(status="rejected", decided_by=user, decided_ms=now_ms(), decision_reason=reason)
        )
        event = append_event(conn, req.model_id, name, "reject", req.environment, None, int(req.version), "applied", user, f"request #{request_id}: {reason}")
    emit(event)
    return event


def list_requests(name: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
    """Approval requests (newest first), optionally of one model and one status."""
    from keel.registry.versions import _model as _model_row

    if status is not None and status not in ("pending", "approved", "rejected"):
        raise ValidationError(f"Unknown request status {status!r}." + did_you_mean(status, ["pending", "approved", "rejected"]))
    with get_metadata_store().read() as conn:
        q = sa.select(approval_requests).order_by(approval_requests.c.id.desc())
        if name is not None:
            q = q.where(approval_requests.c.model_id == model_id(conn, name))
        if status is not None:
            q = q.where(approval_requests.c.status == status)
        rows = conn.execute(q).all()
        names = {r.model_id: _model_row(conn, r.model_id).name for r in rows}
    return [_request_dict(r, names[r.model_id]) for r in rows]


def get_request(request_id: int) -> dict[str, Any]:
    """One approval request (its model, version, environment, status and gates)."""
    from keel.registry.versions import _model as _model_row

    with get_metadata_store().read() as conn:
        r = _request(conn, request_id)
        return _request_dict(r, _model_row(conn, r.model_id).name)


def _request_dict(r: Any, model: str) -> dict[str, Any]:
    return {
        "id": r.id, "model": model, "version": r.version, "environment": r.environment, "status": r.status,
        "requested_by": r.requested_by, "requested_time": ms_to_datetime(r.requested_ms), "reason": r.reason,
        "decided_by": r.decided_by, "decided_time": ms_to_datetime(r.decided_ms), "decision_reason": r.decision_reason,
        "gates": (json.loads(r.gates) or {}).get("report") if r.gates else None,
    }


# -- aliases -----------------------------------------------------------------------

def set_alias(name: str, alias: str, version: Any) -> dict[str, Any]:
    """Point a free alias (champion, challenger, ...) at a version; no gates, but audited."""
    import re

    if not isinstance(alias, str) or not re.match(r"^[A-Za-z][A-Za-z0-9_\-.]{0,63}$", alias) or alias in ("latest",):
        raise ValidationError(f"Invalid alias {alias!r}.", hint="Use 1-64 letters, digits, '_', '-' or '.', starting with a letter (e.g. 'champion').")
    if alias in C.environments():
        raise ValidationError(f"{alias!r} is an environment, not a free alias.", hint=f"Move it through its gates: keel models promote {name} VERSION --to {alias}.")
    mv = resolve_version(name, version)
    _refuse_retired(mv, f"point alias {alias!r} at it")
    user = _user()
    store = get_metadata_store()
    with store.write() as conn:
        mid = model_id(conn, name)
        _lock_live(conn, mid, name, mv.version)
        # Compare-and-set on the row's revision, so that of concurrent moves each is applied
        # once, in order, and the audit log's from_version is the version it really replaced.
        for _ in range(1000):
            current, revision, _k = _holder(conn, mid, alias)
            if _move(conn, mid, alias, "alias", mv.version, revision, user):
                break
        else:  # pragma: no cover - a thousand writers overtook this one in a row
            raise WriteConflict(f"Alias {alias!r} of {name!r} kept moving under this write.", hint="Retry.")
        event = append_event(conn, mid, name, "alias", alias, current, mv.version, "applied", user)
    emit(event)
    return event


def delete_alias(name: str, alias: str) -> dict[str, Any]:
    if alias in C.environments():
        raise ValidationError(f"{alias!r} is an environment; it is changed by promote and rollback only.", hint=f"keel models rollback {name} --env {alias}")
    user = _user()
    with get_metadata_store().write() as conn:
        mid = model_id(conn, name)
        current, rev, _k = _holder(conn, mid, alias)
        gone = current is None or conn.execute(
            sa.delete(model_aliases).where(model_aliases.c.model_id == mid, model_aliases.c.name == alias, model_aliases.c.revision == rev)
        ).rowcount != 1
        if gone:
            raise NotFoundError(f"Model {name!r} has no alias {alias!r} (or it moved while being deleted).", hint=f"See `keel models status {name}`.")
        event = append_event(conn, mid, name, "unalias", alias, current, None, "applied", user)
    emit(event)
    return event


# -- rollback ------------------------------------------------------------------------

def env_history(name: str, env: str) -> list[int]:
    """The stack of versions ``env`` held, oldest first; the last one is the current version."""
    stack: list[int] = []
    for e in history(name, target=env):
        if e["outcome"] not in ("applied", "forced"):
            continue
        if e["action"] in ("promote", "approve"):
            stack.append(int(e["to_version"]))
        elif e["action"] == "rollback" and stack:
            stack.pop()
    return stack


def rollback_target(name: str, env: str) -> int | None:
    stack = env_history(name, env)
    return stack[-2] if len(stack) >= 2 else None


def rollback(name: str, env: str = "production", *, reason: str | None = None) -> Transition:
    """Restore the version ``env`` held before its current one, in one step (no gates: it ran there before)."""
    check_model_name(name)
    env = C.check_environment(env)
    with get_metadata_store().read() as conn:
        mid = model_id(conn, name)
        current, revision, _k = _holder(conn, mid, env)
    if current is None:
        raise NotFoundError(f"Model {name!r} has no version in {env}: nothing to roll back.", hint=f"Promote one with `keel models promote {name} VERSION --to {env}`.")
    stack = env_history(name, env)
    if len(stack) < 2 or stack[-1] != current:
        raise ValidationError(
            f"{name} has no earlier version in {env} to roll back to (it holds v{current}).",
            hint=f"Promote a specific version instead: keel models promote {name} VERSION --to {env}.",
        )
    mv = resolve_version(name, stack[-2])
    _refuse_retired(mv, f"roll {env} back to it")
    event = _apply(mv, env, "rollback", current, revision, "applied", _user(), reason, None)
    return Transition(name, env, "applied", current, mv.version, event["id"])
