"""Running a retraining policy: the guards, the pipeline on its window, the gates, the promotion or rollout.

:func:`run_policy` is one retrain for one trigger (the ``retraining`` job kind the
scheduler runs, ``keel retraining run``, ``POST /v1/retraining/NAME/run``);
:func:`advance` judges a pending canary / shadow on its live comparison, stage by
stage for the staged ``shadow,canary:<w>`` (each stage reads only its own rows). The
declarations they run are :mod:`keel.loop.policies`'s; see its docstring for the
whole story.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from keel.errors import KeelError, NotFoundError, ValidationError
from keel.loop.policies import (
    JOB,
    RetrainingPolicy,
    _duration,
    _event,
    _row,
    _save_state,
    _state,
    _user,
    get_policy,
    history,
    record,
    resolve_pipeline,
    retraining_products,
    window_rows,
)
from keel.pipelines.jobs import JobOutcome, register_job_kind
from keel.store.metadata import get_metadata_store, ms_to_datetime, now_ms
from keel.store.schema.retraining import retraining_policies

__all__ = ["advance", "history", "run_policy"]


# -- running -----------------------------------------------------------------------------

def _claim(name: str, owner: str, lease_ms: int) -> bool:
    t = now_ms()
    c = retraining_policies.c
    with get_metadata_store().write() as conn:
        res = conn.execute(sa.update(retraining_policies)
                           .where(c.name == name, sa.or_(c.lease_owner.is_(None), c.lease_expires_ms < t))
                           .values(lease_owner=owner, lease_expires_ms=t + lease_ms))
        return bool(res.rowcount == 1)


def _release(name: str, owner: str, state: Mapping[str, Any]) -> None:
    c = retraining_policies.c
    with get_metadata_store().write() as conn:
        conn.execute(sa.update(retraining_policies).where(c.name == name, c.lease_owner == owner)
                     .values(lease_owner=None, lease_expires_ms=None, state=json.dumps(dict(state), default=str)))


def _window_end(trigger: Mapping[str, Any], now: datetime) -> datetime:
    """The window ends where the trigger's evidence ends (an alert's or a performance series' window), else now."""
    value = trigger.get("window_end")
    if value:
        try:
            t = datetime.fromisoformat(str(value))
            return t if t.tzinfo else t.replace(tzinfo=UTC)
        except ValueError:
            pass
    return now


def _arrived_ms(trigger: Mapping[str, Any]) -> int | None:
    """When the scheduler claimed the trigger's occurrence (so a retrain started after it covers it)."""
    from keel.store.schema.pipelines import schedule_fires

    sched, key = trigger.get("_schedule"), trigger.get("_fire")
    if not sched or not key:
        return None
    with get_metadata_store().read() as conn:
        v = conn.execute(sa.select(schedule_fires.c.claimed_ms).where(schedule_fires.c.schedule == sched, schedule_fires.c.fire_key == key)).scalar()
    return None if v is None else int(v)


def _guard(p: RetrainingPolicy, row: Any, state: Mapping[str, Any], trigger: Mapping[str, Any], now: datetime) -> tuple[str, str] | None:
    """(action, reason) when the trigger must not start a retrain, else None."""
    t = int(now.timestamp() * 1000)
    if row.paused:
        return "skipped", "the policy is paused (keel retraining resume NAME)"
    if row.lease_owner and (row.lease_expires_ms or 0) >= now_ms():
        return "coalesced", f"a retrain is running (retrain {state.get('current')})"
    arrived = trigger.get("_arrived_ms")
    if arrived is not None and int(state.get("last_started_ms") or 0) >= int(arrived):
        return "coalesced", f"retrain {state.get('last_retrain')} started after this trigger arrived and covers it"
    pending = state.get("rollout")
    if pending:
        return "skipped", f"v{pending['version']} is still rolling out in deployment {pending['deployment']} (its own deployment never retriggers the policy)"
    until = int(state.get("backoff_until_ms") or 0)
    if until > t:
        return "skipped", f"backing off after {state.get('failures')} failure(s) until {ms_to_datetime(until):%Y-%m-%d %H:%M:%S} UTC"
    ended = state.get("last_success_ms")
    cool = _duration(p.cooldown, "cooldown")
    if ended and t - int(ended) < cool.total_seconds() * 1000:
        return "skipped", f"cooldown {p.cooldown}: the last retrain ended {ms_to_datetime(int(ended)):%Y-%m-%d %H:%M:%S} UTC"
    per_ms = _duration(p.per, "per").total_seconds() * 1000
    recent = [s for s in state.get("started", []) if t - int(s) < per_ms]
    if len(recent) >= p.max_retrains:
        return "skipped", f"at most {p.max_retrains} retrains per {p.per} ({len(recent)} already)"
    return None


def run_policy(name: str, *, trigger: Mapping[str, Any] | None = None, dry_run: bool = False, now: datetime | None = None,
               lease_seconds: float = 3600.0) -> dict[str, Any]:
    """Retrain per the policy for one trigger (default: a manual run); returns what happened (or, dry, what would).

    The outcome's ``status``: ``promoted`` | ``pending`` (approval) | ``rollout`` (canary/shadow out) |
    ``registered`` (no promotion asked) | ``refused`` (gates) | ``failed`` | ``skipped`` | ``coalesced`` | ``dry-run``.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    p = get_policy(name)
    row = _row(name)
    state = dict(json.loads(row.state or "{}"))
    cause = dict(trigger or {"kind": "manual", "by": _user()})
    arrived = _arrived_ms(cause)
    if arrived is not None:
        cause["_arrived_ms"] = arrived
    shown = {k: v for k, v in cause.items() if not k.startswith("_")}
    blocked = _guard(p, row, state, cause, now)
    if blocked is not None and not dry_run:
        action, reason = blocked
        e = record(name, "trigger", action, trigger=shown, detail={"reason": reason})
        return {"policy": name, "status": action, "reason": reason, "event": e["id"]}
    end = _window_end(cause, now)
    start = end - _duration(p.window, "window")
    pipeline = resolve_pipeline(p)
    params = {**p.params, "window_start": start.isoformat(), "window_end": end.isoformat()}
    plan: dict[str, Any] = {"policy": name, "model": p.model, "trigger": shown, "pipeline": pipeline, "params": params,
            "window_rows": window_rows(p, start, end), "gates": f"the registry's gates for {p.model} against the production champion",
            "staging": p.staging, "production": p.production, "deployment": p.deployment_name() if p.rollout else None,
            "blocked": None if blocked is None else {"action": blocked[0], "reason": blocked[1]}}
    if dry_run:
        plan["status"] = "dry-run"
        plan["would"] = _would(p, plan)
        record(name, "dry_run", "dry-run", trigger=shown, detail={k: v for k, v in plan.items() if k not in ("trigger",)})
        return plan
    if plan["window_rows"] == 0:
        reason = f"the window {start:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M} UTC selects no rows of {p.window_source}"
        e = record(name, "trigger", "skipped", trigger=shown, detail={"reason": reason})
        return {"policy": name, "status": "skipped", "reason": reason, "event": e["id"]}
    owner = f"retrain:{uuid.uuid4().hex[:12]}"
    if not _claim(name, owner, int(lease_seconds * 1000)):
        e = record(name, "trigger", "coalesced", trigger=shown, detail={"reason": "a retrain is running"})
        return {"policy": name, "status": "coalesced", "reason": "a retrain is running", "event": e["id"]}
    retrain = uuid.uuid4().hex[:16]
    started = now_ms()
    state.update(current=retrain, last_retrain=retrain, last_started_ms=started,
                 started=[*[s for s in state.get("started", []) if started - int(s) < _duration(p.per, "per").total_seconds() * 1000], started])
    with get_metadata_store().write() as conn:
        _save_state(conn, name, state)
        _event(conn, name, "trigger", "accepted", retrain=retrain, trigger=shown)
    try:
        out = _retrain(p, pipeline, params, shown, retrain, state)
    finally:
        state.pop("current", None)
        _release(name, owner, state)
    return out


def _would(p: RetrainingPolicy, plan: Mapping[str, Any]) -> list[str]:
    steps = []
    if plan.get("blocked"):
        steps.append(f"nothing now: {plan['blocked']['action']} ({plan['blocked']['reason']})")
    steps.append(f"run {plan['pipeline']} with window_start={plan['params']['window_start']} window_end={plan['params']['window_end']}"
                 + ("" if plan["window_rows"] is None else f" ({plan['window_rows']:,} rows of {p.window_source})"))
    steps.append(f"evaluate {plan['gates']}")
    if p.staging == "auto":
        steps.append("promote the new version to staging")
    mode = p.production
    shadow = f"run it as a shadow in deployment {p.deployment_name()}"
    canary = f"send it {p.canary_weight:g} % of traffic as a canary in deployment {p.deployment_name()}"
    steps.append({"auto": "promote it to production", "approval": "request approval for production", "none": "leave production as it is",
                  "shadow": f"{shadow}, promote once the live comparison passes"}.get(
        mode, f"{shadow}; once its live comparison passes, {canary}; promote once the canary's comparison passes" if p.stages == ["shadow", "canary"]
        else f"{canary}, promote once the live comparison passes"))
    return steps


def _fail(p: RetrainingPolicy, retrain: str, state: dict[str, Any], trigger: Any, error: str, run_id: str | None, step: str) -> dict[str, Any]:
    """A failed retrain: the champion stays; audited, an alert, and exponential back-off."""
    from keel.monitoring.alerts import record_alert

    failures = int(state.get("failures", 0)) + 1
    delay = _duration(p.backoff, "backoff") * (2 ** (failures - 1))
    until = now_ms() + int(delay.total_seconds() * 1000)
    state.update(failures=failures, backoff_until_ms=until)
    with get_metadata_store().write() as conn:
        _save_state(conn, p.name, state)
        _event(conn, p.name, step, "failed", retrain=retrain, trigger=trigger, run_id=run_id, detail={"error": error})
        _event(conn, p.name, "backoff", "applied", retrain=retrain,
               detail={"failures": failures, "delay_s": delay.total_seconds(), "until": ms_to_datetime(until)})
    alert = record_alert(f"retraining:{p.name}", p.model, f"retrain:{step}",
                         f"retraining policy {p.name}: {step} failed ({error[:300]}); {p.model}'s champion stays; next attempt not before "
                         f"{ms_to_datetime(until):%Y-%m-%d %H:%M:%S} UTC", {"kind": "retraining", "policy": p.name, "retrain": retrain,
                                                                            "run_id": run_id, "error": error, "failures": failures})
    return {"policy": p.name, "status": "failed", "retrain": retrain, "run_id": run_id, "error": error, "alert": alert["id"],
            "backoff_s": delay.total_seconds()}


def _new_version(model: str, run_id: str, output: Any) -> int | None:
    """The version the pipeline run registered: its output's ``version``, else a version trained by one of its runs."""
    from keel.registry.versions import list_versions
    from keel.store.schema import tags

    if isinstance(output, Mapping) and isinstance(output.get("version"), int):
        return int(output["version"])
    with get_metadata_store().read() as conn:
        runs = {run_id, *conn.execute(sa.select(tags.c.run_id).where(tags.c.key == "keel.pipeline.run", tags.c.value == run_id)).scalars()}
    made = [v.version for v in list_versions(model) if v.run_id in runs]
    return max(made) if made else None


def _retrain(p: RetrainingPolicy, pipeline: str, params: dict[str, Any], trigger: Any, retrain: str, state: dict[str, Any]) -> dict[str, Any]:
    from keel.pipelines.runner import StepFailed, run

    tags = {"keel.retraining.policy": p.name, "keel.retraining.id": retrain, "keel.retraining.cause": json.dumps(trigger, default=str)[:5000]}
    record(p.name, "pipeline", "started", retrain=retrain, detail={"pipeline": pipeline, "params": params})
    try:
        result = run(pipeline, params, trigger=f"retraining:{p.name}", tags=tags)
    except StepFailed as exc:
        return _fail(p, retrain, state, trigger, str(exc).replace("\n", " ")[:2000], exc.result.run_id if exc.result else None, "pipeline")
    except KeelError as exc:
        return _fail(p, retrain, state, trigger, str(exc).replace("\n", " ")[:2000], None, "pipeline")
    except Exception as exc:  # the user's pipeline code raised: recorded like any failure, never lost
        return _fail(p, retrain, state, trigger, f"{type(exc).__name__}: {exc}"[:2000], None, "pipeline")
    version = _new_version(p.model, result.run_id, result.output)
    record(p.name, "pipeline", "finished", retrain=retrain, run_id=result.run_id, version=version,
           detail={"cached_steps": result.cached, "steps": len(result.steps), "duration_s": round(result.duration_s, 3),
                   "output": dict(result.output) if isinstance(result.output, Mapping) else None})
    if version is None:
        return _fail(p, retrain, state, trigger, f"pipeline run {result.run_id} registered no version of {p.model}", result.run_id, "register")
    data, target = _gate_data(p, result.output)
    if version == _production_version(p.model):  # the pipeline came from cache: its version is the champion already
        record(p.name, "promote", "unchanged", retrain=retrain, run_id=result.run_id, version=version,
               detail={"reason": f"v{version} is already in production (the pipeline run came from cache)"})
        out: dict[str, Any] = {"status": "unchanged", "reason": f"v{version} is already in production"}
    else:
        out = _promote(p, version, data, target, retrain, result.run_id)
    if out["status"] != "failed":
        state.update(failures=0, backoff_until_ms=None, last_success_ms=now_ms())
        if out["status"] == "rollout":
            state["rollout"] = {"version": version, "deployment": out["deployment"], "since": out["since"], "retrain": retrain,
                                "stage": out["mode"], "stages": p.stages, "revision": out["revision"],
                                # the gates' evaluation data (the fresh holdout), for the promotion once the live comparison passes
                                "data": data if isinstance(data, str) else None, "target": target}
        with get_metadata_store().write() as conn:
            _save_state(conn, p.name, state)
    return {**out, "policy": p.name, "retrain": retrain, "run_id": result.run_id, "version": version}


def _production_version(model: str) -> int | None:
    from keel.registry.versions import resolve_version

    try:
        return resolve_version(model, "production").version
    except NotFoundError:
        return None


def _gate_data(p: RetrainingPolicy, output: Any) -> tuple[Any, str | None]:
    """The policy's evaluation data, else the fresh holdout the pipeline returned (``{"data": ..., "target": ...}``)."""
    if p.data:
        return p.data, p.target
    if isinstance(output, Mapping) and output.get("data") is not None:
        return output["data"], output.get("target") or p.target
    return None, p.target


def _promote(p: RetrainingPolicy, version: int, data: Any, target: str | None, retrain: str, run_id: str) -> dict[str, Any]:
    from keel.errors import GatesFailed
    from keel.registry.transitions import evaluate_gates, promote
    from keel.registry.versions import resolve_version

    def refused(env: str, exc: GatesFailed) -> dict[str, Any]:
        report = exc.report.to_dict() if getattr(exc, "report", None) is not None else None
        record(p.name, "gates", "refused", retrain=retrain, run_id=run_id, version=version, detail={"environment": env, "gates": report, "error": str(exc)})
        return {"status": "refused", "environment": env, "gates": report, "reason": str(exc)}

    if p.staging == "auto":
        try:
            t = promote(p.model, version, "staging", data=data, target=target, reason=f"retraining policy {p.name}")
        except GatesFailed as exc:
            return refused("staging", exc)
        record(p.name, "promote", t.status, retrain=retrain, run_id=run_id, version=version,
               detail={"environment": "staging", "gates": None if t.gates is None else t.gates.to_dict()})
    mode = p.production
    if mode == "none":
        return {"status": "registered", "environment": "staging" if p.staging == "auto" else None}
    if mode in ("auto", "approval"):
        try:
            t = promote(p.model, version, "production", data=data, target=target, reason=f"retraining policy {p.name}")
        except GatesFailed as exc:
            return refused("production", exc)
        gates = None if t.gates is None else t.gates.to_dict()
        record(p.name, "promote", t.status, retrain=retrain, run_id=run_id, version=version,
               detail={"environment": "production", "gates": gates, "request_id": t.request_id})
        return {"status": "pending" if t.status == "pending" else "promoted", "environment": "production", "gates": gates,
                "request_id": t.request_id}
    mv = resolve_version(p.model, version)
    report, _ = evaluate_gates(mv, "production", data=data, target=target)
    non_live = [r for r in report.results if not r.name.startswith("live:")]
    failed = [r for r in non_live if r.status == "fail"]
    gates = report.to_dict()
    if failed:
        record(p.name, "gates", "refused", retrain=retrain, run_id=run_id, version=version, detail={"environment": "production", "gates": gates})
        return {"status": "refused", "environment": "production", "gates": gates,
                "reason": "; ".join(f"{r.name}: {r.detail}" for r in failed)}
    record(p.name, "gates", "passed", retrain=retrain, run_id=run_id, version=version, detail={"environment": "production", "gates": gates})
    stage = p.rollout or "canary"
    since = now_ms()  # the stage's start: its comparison reads only the rows logged from here on
    dep = _start_rollout(p, version, stage, f"retraining policy {p.name}: v{version} passed its gates")
    record(p.name, stage, "started", retrain=retrain, run_id=run_id, version=version,
           detail={"deployment": dep.name, "revision": dep.revision, "spec": dep.spec.describe(), "stages": p.stages})
    return {"status": "rollout", "environment": "production", "gates": gates, "deployment": dep.name, "mode": stage,
            "revision": dep.revision, "since": since}


def _start_rollout(p: RetrainingPolicy, version: int, stage: str, reason: str) -> Any:
    """Put ``version`` beside the champion in the policy's deployment as ``stage`` (shadow | canary): a new revision."""
    from keel.deployments.specs import build_spec, deploy, get_deployment, set_deployment

    name = p.deployment_name()
    ref = f"{p.model}/{version}"
    opts: dict[str, Any] = {"canary": ref, "weight": p.canary_weight} if stage == "canary" else {"shadow": ref}
    try:
        get_deployment(name)
    except NotFoundError:
        return deploy(build_spec(name, model=f"{p.model}@production", **opts), reason=reason)
    return set_deployment(name, reason=reason, model=f"{p.model}@production", **opts)


def _judged(c: Mapping[str, Any], min_labels: int, margin: float) -> str:
    """The policy's verdict on a comparison: its live rules (min_labels, margin) applied to the comparison's interval."""
    from keel.deployments.compare import _verdict

    q = c.get("quality")
    if not q:
        return "not enough data"
    lab = q["labelled"]
    n = int(lab) if isinstance(lab, int) else min(int(v) for v in lab.values())
    return _verdict(float(q["low"]), float(q["high"]), q["metric"] != "rmse", margin, n, min_labels)


def _stage_comparison(dep: str, revision: int, start: datetime, comparison: Mapping[str, Any] | None, min_labels: int,
                      margin: float) -> dict[str, Any]:
    """The stage's comparison: the one given (it must be of this revision and read nothing before the stage began), else computed."""
    from keel.deployments.compare import compare

    if comparison is None:
        return compare(dep, since=start, min_labels=min_labels, margin=margin)
    c = dict(comparison)
    try:
        since = datetime.fromisoformat(str(c.get("since")))
    except ValueError:
        since = None
    if c.get("deployment") != dep or c.get("revision") != revision or since is None or since.astimezone(UTC) < start:
        raise ValidationError(
            f"The comparison given is of deployment {c.get('deployment')!r} revision {c.get('revision')} since {c.get('since')}, "
            f"not of this stage ({dep!r} revision {revision} since {start.isoformat()}).",
            hint="Pass keel.deployments.compare.compare(DEPLOYMENT, since=<the stage's start>), or let advance compute it.")
    return c


def advance(name: str, *, min_labels: int | None = None, margin: float | None = None, since: str | None = None, data: Any = None,
            target: str | None = None, comparison: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Judge the policy's pending canary / shadow on its current stage's live comparison: the next stage, promote, end it, or wait.

    The comparison reads only the rows logged since the stage began (and within the policy's ``live.since``);
    ``comparison``: a ``compare()`` of the stage's deployment revision already made (its verdict is re-judged by
    the policy's ``live:`` rules). A staged ``shadow,canary:<w>`` whose shadow passes puts the same version out
    as a canary (a new deployment revision, its own stage); the last stage that passes is promoted; a stage
    that fails ends the rollout. Every step is an audited event.
    """
    from keel.deployments.compare import _since
    from keel.deployments.specs import end_challenger, get_deployment, promote_deployment

    p = get_policy(name)
    min_labels = int(p.live.get("min_labels", 100)) if min_labels is None else min_labels
    margin = float(p.live.get("margin", 0.0)) if margin is None else margin
    since = str(p.live.get("since", "30d")) if since is None else since
    state = _state(name)
    pending = state.get("rollout")
    if not pending:
        return {"policy": name, "status": "idle", "reason": "no canary or shadow of this policy is rolling out"}
    dep, version, retrain = pending["deployment"], int(pending["version"]), pending.get("retrain")
    stages = list(pending.get("stages") or p.stages or ["canary"])
    stage = str(pending.get("stage") or stages[0])
    current = get_deployment(dep)
    challenger = current.spec.challenger
    if challenger is None or current.spec.mode != stage:  # taken out meanwhile (an objective's automatic rollback, or by hand)
        reason = f"deployment {dep} no longer runs v{version} as its {stage} ({current.spec.describe()})"
        record(name, "rollout", "ended", retrain=retrain, version=version, detail={"deployment": dep, "stage": stage, "reason": reason})
        state.pop("rollout", None)
        with get_metadata_store().write() as conn:
            _save_state(conn, name, state)
        return {"policy": name, "status": "ended", "deployment": dep, "version": version, "stage": stage, "reason": reason}
    start = _since(since)
    if pending.get("since"):  # only the stage's own rows: those logged since it began
        start = max(start, datetime.fromtimestamp(int(pending["since"]) / 1000, tz=UTC))
    c = _stage_comparison(dep, current.revision, start, comparison, min_labels, margin)
    verdict = _judged(c, min_labels, margin)
    quality = c.get("quality")
    shown = {"deployment": dep, "stage": stage, "revision": current.revision, "since": start.isoformat(), "quality": quality}
    if verdict == "not enough data":
        record(name, "rollout", "waiting", retrain=retrain, version=version, detail=shown)
        return {"policy": name, "status": "waiting", "deployment": dep, "version": version, "stage": stage, "comparison": quality}
    nxt = stages[stages.index(stage) + 1] if stage in stages and stages.index(stage) + 1 < len(stages) else None
    diff = "" if not quality else f" ({quality['metric']} {quality['difference']:+.4f} [{quality['low']:+.4f}, {quality['high']:+.4f}])"
    if verdict != "keep" and nxt is not None:
        began = now_ms()
        moved = _start_rollout(p, version, nxt, f"retraining policy {name}: v{version}'s {stage} passed its live comparison")
        weight = f" at {p.canary_weight:g} %" if nxt == "canary" else ""
        record(name, "rollout", "advanced", retrain=retrain, version=version,
               detail={**shown, "next": nxt, "reason": f"the {stage} passed its live comparison{diff}; v{version} goes on as the {nxt}{weight}"})
        record(name, nxt, "started", retrain=retrain, version=version,
               detail={"deployment": dep, "revision": moved.revision, "spec": moved.spec.describe(), "stages": stages})
        state["rollout"] = {**pending, "stage": nxt, "stages": stages, "since": began, "revision": moved.revision}
        with get_metadata_store().write() as conn:
            _save_state(conn, name, state)
        return {"policy": name, "status": "advanced", "deployment": dep, "version": version, "stage": nxt, "previous": stage,
                "revision": moved.revision, "comparison": quality}
    if verdict == "keep":
        end_challenger(dep, detail={"policy": name, "stage": stage, "quality": quality},
                       reason=f"retraining policy {name}: v{version} lost the live comparison as the {stage}")
        outcome = {"status": "rolled_back", "deployment": dep, "version": version, "stage": stage, "comparison": quality}
    else:
        if data is None:
            d, t = _gate_data(p, {"data": pending.get("data"), "target": pending.get("target")})
        else:
            d, t = data, target
        promoted = promote_deployment(dep, to="production", reason=f"retraining policy {name}: live comparison passed", data=d, target=t)
        status = promoted["transition"]["status"]
        outcome = {"status": "promoted" if status in ("applied", "forced", "unchanged") else status, "deployment": dep, "version": version,
                   "stage": stage, "comparison": quality, "transition": promoted["transition"]}
    why = (f"the {stage} lost its live comparison{diff}; the champion answers everything" if verdict == "keep"
           else f"the {stage} passed its live comparison{diff}; v{version} {outcome['status']} to production")
    record(name, "rollout", outcome["status"], retrain=retrain, version=version, detail={**shown, "reason": why})
    state.pop("rollout", None)
    with get_metadata_store().write() as conn:
        _save_state(conn, name, state)
    return {"policy": name, **outcome}


# -- the scheduler's job kind ------------------------------------------------------------

def run_retraining_job(target: str, params: dict[str, Any], event: dict[str, Any] | None, *, trigger: str, tags: dict[str, str]) -> JobOutcome:
    """What ``keel scheduler`` runs for a policy's trigger: one retrain (or, on the rollout schedule, advance a canary)."""
    if params.get("advance"):
        advance(target)
        return JobOutcome(None, None)
    cause = dict(event or {})
    cause.update(_schedule=tags.get("keel.schedule"), _fire=tags.get("keel.schedule.fire"), schedule=tags.get("keel.schedule"))
    out = run_policy(target, trigger=cause)
    return JobOutcome(out.get("run_id"), out.get("error") if out.get("status") == "failed" else None)


def check_retraining_job(target: str, params: dict[str, Any], trigger_kind: str) -> dict[str, Any]:
    unknown = set(params) - {"pipeline", "model", "advance"}
    if unknown:
        raise ValidationError(f"Retraining jobs take no parameter {sorted(unknown)[0]!r}.", hint="Declare the policy with keel retraining declare.")
    return dict(params)


def register() -> None:
    register_job_kind(JOB, run_retraining_job, check=check_retraining_job, products=retraining_products, describe="retraining policy")
