"""Retraining policies: what retrains a model, on which data, and how the new version reaches production.

Declared per model in ``keel.yaml`` (``keel retraining declare`` stores them)::

    retraining:
      churn-retrain:
        model: churn
        triggers:
          - alert: churn-daily            # a monitor's alert (severity: warn | alert)
          - performance: churn-daily      # realized (or estimated: true) performance below a threshold
            metric: roc_auc
            below: 0.75
            windows: 2
          - schedule: "0 3 * * 0"         # cron, UTC
          - data: data/usage.parquet      # new data at a source
        pipeline: pipelines:retrain       # default: the pipeline that produced the champion
        window: 30d                       # the pipeline gets window_start / window_end
        window_source: data/labels.parquet  # the data the window selects (checked when declared)
        window_column: event_timestamp
        promotion: {staging: auto, production: "canary:10"}   # production: auto | approval | canary:<weight> | shadow | none
                                                              # | shadow,canary:<weight> (staged: shadow, then canary, then promotion)
        deployment: churn-live            # the deployment a canary / shadow goes out in
        cooldown: 6h
        max_retrains: 3                   # at most 3 retrains ...
        per: 7d                           # ... per 7 days
        backoff: 10m                      # after a failure: 10m, 20m, 40m, ...

or in code: ``declare_policy(RetrainingPolicy("churn-retrain", "churn", triggers=[...]))``.
A declaration is checked whole before anything is stored (the monitor and the
pipeline exist, the pipeline takes ``window_start`` and ``window_end``, the
window selects data, no trigger is fired by the policy's own promotion or its
pipeline's products) and stored as a new version of the policy when it changed.
Each trigger becomes a schedule of job kind ``retraining`` (see
:mod:`keel.pipelines.triggers`), so ``keel scheduler`` runs the policy.

A retrain (:func:`keel.loop.retraining.run_policy`): the guards (paused, a retrain running or one
started after this trigger arrived: coalesced; back-off after a failure;
cooldown; at most N per period; a canary of this policy still rolling out),
then the pipeline with the window's parameters and the trigger as the run's
cause, then the registry's gates against the champion, then promotion as the
policy says. A rollout (``shadow``, ``canary:<w>``, or the staged
``shadow,canary:<w>``) is judged by :func:`keel.loop.retraining.advance` on the live
comparison of its current stage only (the rows logged since the stage began):
a staged rollout's shadow that passes becomes a canary of the same version, and
the canary that passes is promoted; a stage that fails ends the rollout. A failing pipeline leaves the champion in place, is an audited
event and an alert (``retraining:<policy>``), and backs the policy off
exponentially. Every step is a ``retraining_events`` row with the acting user.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from keel.errors import ConflictError, KeelError, NotFoundError, ValidationError, did_you_mean
from keel.store.metadata import get_metadata_store, ms_to_datetime, now_ms
from keel.store.schema.retraining import (
    retraining_events,
    retraining_policies,
    retraining_policy_versions,
)

TRIGGER_KINDS = ("alert", "performance", "schedule", "data", "model")
PRODUCTION_MODES = ("auto", "approval", "shadow", "none")  # and canary:<weight>, and the staged shadow,canary:<weight>
STAGED = "shadow,canary:<weight>"  # the one staged rollout: shadow first, then a canary of the same version, then promotion
STAGING_MODES = ("auto", "none")
WINDOW_PARAMS = ("window_start", "window_end")
JOB = "retraining"
ADVANCE_CRON = "*/5 * * * *"  # how often the scheduler looks at a pending canary / shadow
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,100}$")
_PIPELINE = re.compile(r"^[A-Za-z0-9_./\-]+:[A-Za-z_][A-Za-z0-9_.]*$")
_TRIGGER_KEYS = {
    "alert": {"alert", "severity"},
    "performance": {"performance", "metric", "below", "above", "windows", "estimated", "environment"},
    "schedule": {"schedule"},
    "data": {"data"},
    "model": {"model"},
}


def _user() -> str:
    from keel.config import settings

    return str(settings().acting_user)


def _duration(text: Any, what: str) -> timedelta:
    from keel.monitoring.feedback import parse_duration

    try:
        d = parse_duration(text)
    except ValidationError as exc:
        raise ValidationError(f"Retraining policy {what} {text!r} is not a duration.", hint="Write e.g. 30d, 6h or 10m.") from exc
    if d.total_seconds() <= 0:
        raise ValidationError(f"Retraining policy {what} {text!r} must be positive.", hint="Write e.g. 30d, 6h or 10m.")
    return d


@dataclass
class RetrainingPolicy:
    """A retraining policy's declaration (see the module docstring for the keel.yaml form)."""

    name: str
    model: str
    triggers: list[dict[str, Any]] = field(default_factory=list)
    pipeline: str | None = None  # module:name; None: the pipeline that produced the champion
    params: dict[str, Any] = field(default_factory=dict)  # more parameters for the pipeline
    window: str = "30d"
    window_source: str | None = None
    window_column: str = "event_timestamp"
    promotion: dict[str, str] = field(default_factory=lambda: {"staging": "none", "production": "auto"})
    deployment: str | None = None
    live: dict[str, Any] = field(default_factory=dict)  # the live comparison a canary / shadow must pass: min_labels, margin, since
    data: str | None = None  # evaluation data for the gates (else what the pipeline returns, else stored evaluations)
    target: str | None = None
    cooldown: str = "6h"
    max_retrains: int = 3
    per: str = "7d"
    backoff: str = "10m"
    origin: str = "code"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any], origin: str = "code") -> RetrainingPolicy:
        known = set(cls.__dataclass_fields__) - {"name", "origin"}
        extra = [k for k in data if k not in known and k not in ("name", "origin")]
        if extra:
            raise ValidationError(f"Retraining policy {name!r} has an unknown setting {extra[0]!r}." + did_you_mean(extra[0], known),
                                  hint=f"Settings: {', '.join(sorted(known))}.")
        if not data.get("model"):
            raise ValidationError(f"Retraining policy {name!r} names no model.", hint="Add model: <registered model name>.")
        return cls(**{k: v for k, v in data.items() if k in known}, name=name, origin=origin)

    # -- derived ---------------------------------------------------------------------
    @property
    def production(self) -> str:
        return str((self.promotion or {}).get("production", "auto"))

    @property
    def staging(self) -> str:
        return str((self.promotion or {}).get("staging", "none"))

    @property
    def stages(self) -> list[str]:
        """The rollout's stages in order: [] (no rollout), [shadow], [canary] or [shadow, canary]."""
        return [part.partition(":")[0] for part in rollout_parts(self.production)]

    @property
    def rollout(self) -> str | None:
        """The rollout's first stage: canary | shadow | None."""
        return self.stages[0] if self.stages else None

    @property
    def canary_weight(self) -> float:
        canary = next((part for part in rollout_parts(self.production) if part.startswith("canary")), "canary")
        _, _, w = canary.partition(":")
        return float(w or 10)

    def deployment_name(self) -> str:
        return self.deployment or f"{self.model}-live"


def rollout_parts(mode: str) -> list[str]:
    """``promotion.production``'s rollout stages as written (``shadow``, ``canary:50``); [] for auto, approval, none."""
    if mode in ("auto", "approval", "none"):
        return []
    return [part.strip() for part in mode.split(",")]


# -- checking a declaration -------------------------------------------------------------

def _check_shape(p: RetrainingPolicy) -> None:
    from keel.registry.versions import check_model_name

    if not isinstance(p.name, str) or not _NAME.match(p.name):
        raise ValidationError(f"Retraining policy name {p.name!r} is not valid.", hint="Use letters, digits, '.', '_' and '-', e.g. churn-retrain.")
    check_model_name(p.model)
    for key in ("promotion", "params", "live"):
        if not isinstance(getattr(p, key), Mapping):
            raise ValidationError(f"Retraining policy {p.name!r}: {key} must be a mapping, not {getattr(p, key)!r}.",
                                  hint="e.g. promotion: {staging: none, production: auto}.")
    live = p.live
    if ("min_labels" in live and (not isinstance(live["min_labels"], int) or isinstance(live["min_labels"], bool) or live["min_labels"] < 1)) \
            or ("margin" in live and (not isinstance(live["margin"], int | float) or isinstance(live["margin"], bool) or live["margin"] < 0)):
        raise ValidationError(f"Retraining policy {p.name!r}: live {dict(live)!r} is not valid.", hint="live: {min_labels: 200, margin: 0.01, since: 7d}.")
    if "since" in live:
        _duration(live["since"], "live.since")
    if not isinstance(p.triggers, list) or not p.triggers:
        raise ValidationError(f"Retraining policy {p.name!r} has no trigger.",
                              hint="Add one under triggers: alert: MONITOR, performance: MONITOR, schedule: CRON or data: PATH.")
    for t in p.triggers:
        if not isinstance(t, Mapping):
            raise ValidationError(f"Retraining policy {p.name!r}: trigger {t!r} is not a mapping.", hint="e.g. {alert: churn-daily}.")
        kinds = [k for k in TRIGGER_KINDS if k in t]
        if len(kinds) != 1:
            raise ValidationError(f"Retraining policy {p.name!r}: trigger {dict(t)!r} must name exactly one of {', '.join(TRIGGER_KINDS)}.")
        value = t[kinds[0]]
        if not isinstance(value, str) or not value.strip() or any(ord(ch) < 32 for ch in value):
            raise ValidationError(f"Retraining policy {p.name!r}: the {kinds[0]} trigger's value {value!r} is not a name, path or cron text.",
                                  hint="e.g. {alert: churn-daily}, {schedule: '0 3 * * 0'}, {data: data/usage.parquet}.")
        for key, kind in (("below", (int, float)), ("above", (int, float)), ("windows", int), ("estimated", bool), ("severity", str),
                          ("metric", str), ("environment", str)):
            if key in t and (not isinstance(t[key], kind) or (key != "estimated" and isinstance(t[key], bool))):
                raise ValidationError(f"Retraining policy {p.name!r}: trigger setting {key}={t[key]!r} has the wrong type.",
                                      hint="below/above: a number, windows: a whole number >= 1, estimated: true|false, metric: a name.")
        if int(t.get("windows", 1)) < 1:
            raise ValidationError(f"Retraining policy {p.name!r}: windows={t['windows']!r} must be at least 1.")
        unknown = set(t) - _TRIGGER_KEYS[kinds[0]]
        if unknown:
            key = sorted(unknown)[0]
            raise ValidationError(f"Retraining policy {p.name!r}: a {kinds[0]} trigger has no setting {key!r}." + did_you_mean(key, _TRIGGER_KEYS[kinds[0]]),
                                  hint=f"Its settings: {', '.join(sorted(_TRIGGER_KEYS[kinds[0]]))}.")
    if p.pipeline is not None and (not isinstance(p.pipeline, str) or not _PIPELINE.match(p.pipeline)):
        raise ValidationError(f"Retraining policy {p.name!r}: pipeline {p.pipeline!r} is not MODULE:NAME.", hint="e.g. pipelines:retrain.")
    for key in ("window_source", "window_column", "deployment", "data", "target"):
        v = getattr(p, key)
        if v is not None and (not isinstance(v, str) or not v.strip() or any(ord(ch) < 32 for ch in v)):
            raise ValidationError(f"Retraining policy {p.name!r}: {key} {v!r} is not valid.", hint=f"Give {key} as plain text.")
    if p.staging not in STAGING_MODES:
        raise ValidationError(f"Retraining policy {p.name!r}: promotion.staging {p.staging!r} is not known." + did_you_mean(p.staging, STAGING_MODES),
                              hint="Use auto or none.")
    _check_production(p.name, p.production)
    for key in ("cooldown", "per", "backoff", "window"):
        _duration(getattr(p, key), key)
    if not isinstance(p.max_retrains, int) or isinstance(p.max_retrains, bool) or p.max_retrains < 1:
        raise ValidationError(f"Retraining policy {p.name!r}: max_retrains {p.max_retrains!r} must be a whole number >= 1.", hint="e.g. max_retrains: 3, per: 7d.")
    bad_live = sorted(set(p.live or {}) - {"min_labels", "margin", "since"})
    if bad_live:
        raise ValidationError(f"Retraining policy {p.name!r}: live has no setting {bad_live[0]!r}.", hint="live: {min_labels: 200, margin: 0.01, since: 7d}.")
    clash = sorted(set(p.params) & set(WINDOW_PARAMS))
    if clash:
        raise ValidationError(f"Retraining policy {p.name!r}: params sets {clash[0]!r}, which the policy passes itself.", hint="Set window: instead.")


def _check_canary(name: str, mode: str, part: str) -> None:
    head, _, w = part.partition(":")
    try:
        weight = float(w or 10)
    except ValueError:
        weight = -1.0
    if head != "canary" or not 0 < weight < 100:
        raise ValidationError(f"Retraining policy {name!r}: {part!r} in promotion.production {mode!r} is not a canary weight.",
                              hint="Write canary:<percent>, e.g. canary:10" + (", or shadow,canary:50." if "," in mode else "."))


def _check_production(name: str, mode: Any) -> None:
    """auto | approval | none | shadow | canary:<weight> | the staged shadow,canary:<weight>; anything else is refused."""
    modes = [*PRODUCTION_MODES, "canary:10", "shadow,canary:50"]
    if not isinstance(mode, str):
        raise ValidationError(f"Retraining policy {name!r}: promotion.production {mode!r} is not text.", hint=f"Use one of {', '.join(modes)}.")
    parts = rollout_parts(mode)
    if len(parts) > 1:
        if len(parts) != 2 or parts[0] != "shadow" or not parts[1].startswith("canary"):
            raise ValidationError(
                f"Retraining policy {name!r}: promotion.production {mode!r} is not a staged rollout keel runs: the only sequence is "
                f"{STAGED} (the new version first as a shadow, then as a canary, then promoted).",
                hint="Write shadow,canary:<percent>, e.g. shadow,canary:50, or one mode: auto, approval, shadow, canary:<percent> or none.")
        _check_canary(name, mode, parts[1])
        return
    if mode not in PRODUCTION_MODES and not mode.startswith("canary"):
        raise ValidationError(f"Retraining policy {name!r}: promotion.production {mode!r} is not known." + did_you_mean(mode, modes),
                              hint=f"Use auto, approval, canary:<weight> (e.g. canary:10), shadow, {STAGED} or none.")
    if mode.startswith("canary"):
        _check_canary(name, mode, mode)


def _champion_pipeline(model: str) -> str | None:
    """The pipeline (module:name) whose run produced the model's production version, or its latest version."""
    from keel.registry.versions import list_versions, resolve_version
    from keel.store.schema import tags
    from keel.store.schema.pipelines import pipeline_runs

    try:
        mv = resolve_version(model, "production")
    except NotFoundError:
        versions = list_versions(model)
        if not versions:
            return None
        mv = versions[-1]
    with get_metadata_store().read() as conn:
        prun = conn.execute(sa.select(tags.c.value).where(tags.c.run_id == mv.run_id, tags.c.key == "keel.pipeline.run")).scalar()
        for run_id in (prun, mv.run_id):
            if run_id is None:
                continue
            ref = conn.execute(sa.select(pipeline_runs.c.pipeline).where(pipeline_runs.c.run_id == run_id)).scalar()
            if ref:
                return str(ref)
    return None


def resolve_pipeline(p: RetrainingPolicy) -> str:
    """The policy's pipeline: its own, or the one that produced the champion; refused when it lacks the window parameters."""
    from keel.pipelines.pipeline import load_pipeline

    ref = p.pipeline or _champion_pipeline(p.model)
    if ref is None:
        raise ValidationError(f"Retraining policy {p.name!r} names no pipeline, and no version of {p.model!r} was made by a pipeline.",
                              hint="Set pipeline: module:name (a keel pipeline taking window_start and window_end).")
    pipe = load_pipeline(ref)
    missing = [w for w in WINDOW_PARAMS if w not in pipe.signature.parameters]
    if missing:
        raise ValidationError(
            f"Pipeline {ref} of retraining policy {p.name!r} takes no {' and no '.join(repr(m) for m in missing)} parameter: "
            "the policy could not give it a fresh data window.",
            hint=f"Add window_start: str | None = None, window_end: str | None = None to {ref} and select its data by them.",
        )
    pipe.bind({**p.params, "window_start": "2026-01-01T00:00:00+00:00", "window_end": "2026-01-02T00:00:00+00:00"})
    return ref


def window_rows(p: RetrainingPolicy, start: datetime, end: datetime) -> int | None:
    """How many rows of ``window_source`` fall in [start, end) (None when the policy names no source)."""
    from pathlib import Path

    if not p.window_source:
        return None
    path = Path(p.window_source)
    if not path.exists():
        raise NotFoundError(f"Retraining policy {p.name!r}: window_source {p.window_source!r} does not exist.",
                            hint="Name the file or folder (Parquet or CSV) the window selects, e.g. data/labels.parquet.")
    import duckdb

    glob = str(path / "**" / "*.parquet") if path.is_dir() else str(path)
    reader = "read_csv_auto" if glob.endswith(".csv") else "read_parquet"
    col = p.window_column.replace('"', "")
    con = duckdb.connect()
    try:
        cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {reader}(?)", [glob]).fetchall()]
        if col not in cols:
            raise ValidationError(f"Retraining policy {p.name!r}: window_column {col!r} is not in {p.window_source}." + did_you_mean(col, cols),
                                  hint=f"Its columns: {', '.join(cols)}.")
        n = con.execute(f'SELECT count(*) FROM {reader}(?) WHERE CAST("{col}" AS TIMESTAMPTZ) >= ? AND CAST("{col}" AS TIMESTAMPTZ) < ?',
                        [glob, start, end]).fetchone()
    finally:
        con.close()
    return int(n[0]) if n else 0


def _schedules_of(p: RetrainingPolicy, pipeline: str) -> list[dict[str, Any]]:
    """The scheduler entries the policy's triggers become: (name, kind, spec, add_schedule keyword)."""
    from keel.monitoring.triggers import alert_spec, performance_spec

    out = []
    params = {"pipeline": pipeline, "model": p.model}
    for i, t in enumerate(p.triggers):
        name = f"retraining.{p.name}.{i}"
        if "alert" in t:
            spec = f"{t['alert']}:{t.get('severity', 'alert')}"
            alert_spec(spec)
            out.append({"name": name, "kind": "alert", "spec": spec, "on": ("alert", spec), "params": params})
        elif "performance" in t:
            if ("below" in t) == ("above" in t):
                raise ValidationError(f"Retraining policy {p.name!r}: a performance trigger needs below: X (or above: X for an error metric).",
                                      hint="e.g. {performance: churn-daily, metric: roc_auc, below: 0.75, windows: 2}.")
            op, value = ("<", t["below"]) if "below" in t else (">", t["above"])
            spec = (f"{t['performance']}: {'estimated ' if t.get('estimated') else ''}{t.get('metric', 'roc_auc')} {op} {float(value)} "
                    f"for {int(t.get('windows', 1))} windows of {t.get('environment', 'production')}")
            performance_spec(spec)
            out.append({"name": name, "kind": "performance", "spec": spec, "on": ("performance", spec), "params": params})
        elif "schedule" in t:
            out.append({"name": name, "kind": "cron", "spec": str(t["schedule"]), "cron": str(t["schedule"]), "params": params})
        elif "data" in t:
            out.append({"name": name, "kind": "source", "spec": str(t["data"]), "on_source": str(t["data"]), "params": params})
        else:
            out.append({"name": name, "kind": "model", "spec": str(t["model"]), "on_model": str(t["model"]), "params": params})
    if p.rollout:
        out.append({"name": f"retraining.{p.name}.rollout", "kind": "cron", "spec": ADVANCE_CRON, "cron": ADVANCE_CRON,
                    "params": {**params, "advance": True}})
    return out


def check_policy(p: RetrainingPolicy, *, now: datetime | None = None) -> dict[str, Any]:
    """Check a declaration whole (see the module docstring); returns what it resolved (pipeline, schedules, window rows)."""
    from keel.monitoring.monitors import get_monitor
    from keel.pipelines.schedule import Cron
    from keel.registry import config as C
    from keel.registry.versions import get_model

    _check_shape(p)
    get_model(p.model)
    for t in p.triggers:
        for key in ("alert", "performance"):
            if key in t:
                mon = get_monitor(str(t[key]))
                if mon.model != p.model:
                    raise ValidationError(f"Retraining policy {p.name!r}: monitor {mon.name!r} watches {mon.model!r}, not {p.model!r}.",
                                          hint=f"Use a monitor of {p.model} (keel monitor ls).")
        if "schedule" in t:
            Cron(str(t["schedule"]))
    if p.staging == "auto":
        C.check_environment("staging")
    C.check_environment("production")
    if p.production == "approval" and not C.requires_approval("production"):
        raise ValidationError(f"Retraining policy {p.name!r} promotes after approval, but production needs no approval.",
                              hint="Add production to keel.yaml registry.require_approval, or use promotion.production: auto.")
    pipeline = resolve_pipeline(p)
    end = (now or datetime.now(UTC)).astimezone(UTC)
    start = end - _duration(p.window, "window")
    rows = window_rows(p, start, end)
    if rows == 0:
        raise ValidationError(
            f"Retraining policy {p.name!r}: the window {p.window} ({start:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M} UTC) selects no rows of "
            f"{p.window_source} by {p.window_column}: a retrain would have nothing to learn from.",
            hint="Widen window:, or check window_source / window_column.",
        )
    entries = _schedules_of(p, pipeline)
    mine = {e["name"] for e in entries}
    others = [s for s in _other_schedules() if s.name not in mine]
    for e in entries:
        if e["kind"] != "cron":
            _refuse_loop(p, e, others)
    return {"pipeline": pipeline, "schedules": entries, "window_rows": rows, "window_start": start, "window_end": end}


def _other_schedules() -> list[Any]:
    from keel.pipelines.schedule import list_schedules

    return list_schedules()


def _refuse_loop(p: RetrainingPolicy, e: dict[str, Any], others: list[Any]) -> None:
    """A trigger the policy's own promotion or its pipeline's products would fire is refused."""
    from keel.pipelines import triggers as T

    mine = retraining_products(p.name, e["params"])
    if any(T._matches(e["kind"], e["spec"], prod) for prod in mine):
        what = next(prod for prod in mine if T._matches(e["kind"], e["spec"], prod))
        raise ValidationError(
            f"Retraining policy {p.name!r} would trigger itself: its trigger {e['kind']} {e['spec']!r} fires on {what!r}, "
            "which the policy's own retrain or promotion produces.",
            hint="Trigger on a monitor's alert, its performance, a schedule or a source the pipeline does not write.",
        )
    try:
        T.refuse_loops(e["name"], JOB, p.name, e["kind"], e["spec"], e["params"])
    except ValidationError as exc:
        raise ValidationError(f"Retraining policy {p.name!r}: {exc}",
                              hint="Trigger on something the policy's pipeline and promotion do not produce.") from None


# -- storing -----------------------------------------------------------------------------

def _event(conn: sa.Connection, policy: str, action: str, outcome: str, *, retrain: str | None = None, trigger: Any = None,
           run_id: str | None = None, version: int | None = None, detail: Any = None, user: str | None = None) -> dict[str, Any]:
    values = {"policy": policy, "retrain": retrain, "action": action, "outcome": outcome, "user": user or _user(),
              "trigger": None if trigger is None else json.dumps(trigger, default=str), "run_id": run_id, "model_version": version,
              "detail": None if detail is None else json.dumps(detail, default=str), "ts_ms": now_ms()}
    eid = conn.execute(sa.insert(retraining_events).values(**values)).inserted_primary_key[0]  # type: ignore[index]
    return _event_dict({**values, "id": int(eid)})


def record(policy: str, action: str, outcome: str, **kw: Any) -> dict[str, Any]:
    """Append one audited event in its own transaction."""
    with get_metadata_store().write() as conn:
        return _event(conn, policy, action, outcome, **kw)


def _event_dict(d: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(d)
    for k in ("trigger", "detail"):
        if isinstance(out.get(k), str):
            out[k] = json.loads(out[k])
    out["time"] = ms_to_datetime(out.get("ts_ms"))
    return out


def declare_policy(policy: RetrainingPolicy, *, now: datetime | None = None) -> dict[str, Any]:
    """Check and store a policy (a new version when it changed) and its schedules; the declaring user becomes its owner."""
    from keel.pipelines.schedule import add_schedule, remove_schedule
    from keel.store.owners import seed_owners

    checked = check_policy(policy, now=now)
    spec = policy.to_dict()
    text = json.dumps(spec, sort_keys=True, default=str)
    user = _user()
    t = now_ms()
    with get_metadata_store().write() as conn:
        row = conn.execute(sa.select(retraining_policies).where(retraining_policies.c.name == policy.name)).first()
        if row is not None and row.model != policy.model:
            raise ConflictError(f"Retraining policy {policy.name!r} already retrains {row.model!r}, not {policy.model!r}.",
                                hint="Give the new policy another name.")
        changed = row is None or json.dumps(json.loads(row.spec), sort_keys=True, default=str) != text
        version = 1 if row is None else int(row.version) + (1 if changed else 0)
        if row is None:
            conn.execute(sa.insert(retraining_policies).values(
                name=policy.name, model=policy.model, version=version, spec=text, origin=policy.origin, paused=False,
                state=json.dumps({"failures": 0}), created_by=user, created_ms=t, updated_ms=t))
        elif changed:
            conn.execute(sa.update(retraining_policies).where(retraining_policies.c.name == policy.name)
                         .values(version=version, spec=text, origin=policy.origin, updated_ms=t))
        if changed:
            conn.execute(sa.insert(retraining_policy_versions).values(policy=policy.name, version=version, spec=text, declared_by=user, declared_ms=t))
            _event(conn, policy.name, "declare", "applied", detail={"version": version, "pipeline": checked["pipeline"], "origin": policy.origin},
                   user=user)
        seed_owners(conn, "retraining", policy.name, [])
    if changed:
        for s in _policy_schedules(policy.name):
            remove_schedule(s.name)
        paused = _row(policy.name).paused
        for e in checked["schedules"]:
            kw = {k: e[k] for k in ("cron", "on_source", "on_model", "on") if k in e}
            add_schedule(e["name"], policy.name, job=JOB, params=e["params"], now=now, **kw)
        if paused:
            _enable_schedules(policy.name, False)
    return {"name": policy.name, "model": policy.model, "version": version, "changed": changed, "pipeline": checked["pipeline"],
            "schedules": [e["name"] for e in checked["schedules"]], "window_rows": checked["window_rows"]}


def declare_from_config(name: str | None = None, section: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Declare every policy of keel.yaml's ``retraining:`` block (or only ``name``); all are checked before any is stored."""
    from keel.config import settings

    block = dict(settings().section("retraining") if section is None else section)
    if name is not None and name not in block:
        raise NotFoundError(f"keel.yaml has no retraining policy {name!r}." + did_you_mean(name, block),
                            hint="Declare it under retraining: in keel.yaml, or pass --model and a trigger.")
    if not block:
        raise NotFoundError("keel.yaml has no retraining: block.", hint="Add one (see `keel retraining declare --help`), or pass --model and a trigger.")
    policies = []
    for key, value in block.items():
        if name is not None and key != name:
            continue
        if not isinstance(value, Mapping):
            raise ValidationError(f"keel.yaml retraining.{key} is not a mapping.", hint="e.g. retraining: {churn-retrain: {model: churn, triggers: [...]}}.")
        pol = RetrainingPolicy.from_dict(str(key), value, origin="keel.yaml")
        check_policy(pol)
        policies.append(pol)
    return [declare_policy(p) for p in policies]


def _row(name: str) -> Any:
    with get_metadata_store().read() as conn:
        row = conn.execute(sa.select(retraining_policies).where(retraining_policies.c.name == name)).first()
        if row is None:
            names = list(conn.execute(sa.select(retraining_policies.c.name)).scalars())
            raise NotFoundError(f"No retraining policy named {name!r}." + did_you_mean(name, names),
                                hint="List them with `keel retraining ls`; declare one with `keel retraining declare`.")
    return row


def get_policy(name: str) -> RetrainingPolicy:
    row = _row(name)
    d = json.loads(row.spec)
    return RetrainingPolicy.from_dict(row.name, {k: v for k, v in d.items() if k not in ("name", "origin")}, d.get("origin", row.origin))


def pending_rollout(name: str) -> dict[str, Any] | None:
    """The policy's rollout in progress: version, deployment, stage (shadow | canary), stages, since (ms, the stage's start), revision."""
    pending = _state(name).get("rollout")
    return dict(pending) if pending else None


def _policy_schedules(name: str) -> list[Any]:
    return [s for s in _other_schedules() if s.job == JOB and s.target == name]


def _state(name: str) -> dict[str, Any]:
    return dict(json.loads(_row(name).state or "{}"))


def _save_state(conn: sa.Connection, name: str, state: Mapping[str, Any]) -> None:
    conn.execute(sa.update(retraining_policies).where(retraining_policies.c.name == name).values(state=json.dumps(dict(state), default=str)))


def _enable_schedules(name: str, enabled: bool) -> None:
    from keel.store.schema.pipelines import schedules

    with get_metadata_store().write() as conn:
        conn.execute(sa.update(schedules).where(schedules.c.job == JOB, schedules.c.target == name).values(enabled=enabled))


def set_paused(name: str, paused: bool, *, reason: str | None = None) -> dict[str, Any]:
    """Pause (its triggers stop firing; a manual run is refused) or resume a policy; audited."""
    _row(name)
    with get_metadata_store().write() as conn:
        conn.execute(sa.update(retraining_policies).where(retraining_policies.c.name == name).values(paused=paused, updated_ms=now_ms()))
        _event(conn, name, "pause" if paused else "resume", "applied", detail={"reason": reason} if reason else None)
    _enable_schedules(name, not paused)
    return describe_policy(name)


def list_policies() -> list[dict[str, Any]]:
    """Every stored policy with its model, version, triggers, whether paused and its last event."""
    with get_metadata_store().read() as conn:
        rows = conn.execute(sa.select(retraining_policies).order_by(retraining_policies.c.name)).all()
        last = {}
        for r in rows:
            e = conn.execute(sa.select(retraining_events).where(retraining_events.c.policy == r.name, retraining_events.c.action != "declare")
                             .order_by(retraining_events.c.id.desc()).limit(1)).first()
            last[r.name] = None if e is None else _event_dict(dict(e._mapping))
    out = []
    for r in rows:
        spec = json.loads(r.spec)
        out.append({"name": r.name, "model": r.model, "version": int(r.version), "paused": bool(r.paused), "origin": r.origin,
                    "triggers": [describe_trigger(t) for t in spec.get("triggers", [])], "production": (spec.get("promotion") or {}).get("production", "auto"),
                    "last": last[r.name]})
    return out


def describe_trigger(t: Mapping[str, Any]) -> str:
    if "alert" in t:
        return f"alert of {t['alert']} (>= {t.get('severity', 'alert')})"
    if "performance" in t:
        op, v = ("<", t.get("below")) if "below" in t else (">", t.get("above"))
        src = "estimated " if t.get("estimated") else ""
        return f"{src}{t.get('metric', 'roc_auc')} {op} {v} for {t.get('windows', 1)} windows of {t['performance']}"
    if "schedule" in t:
        return f"cron {t['schedule']}"
    if "data" in t:
        return f"new data at {t['data']}"
    return f"model {t.get('model')} moved"


def describe_policy(name: str) -> dict[str, Any]:
    """A policy's declaration, versions, state, schedules, owners and recent events (``keel retraining show``)."""
    from keel.store.owners import owners_of

    row = _row(name)
    with get_metadata_store().read() as conn:
        versions = [{"version": int(v.version), "declared_by": v.declared_by, "declared": ms_to_datetime(v.declared_ms)}
                    for v in conn.execute(sa.select(retraining_policy_versions).where(retraining_policy_versions.c.policy == name)
                                          .order_by(retraining_policy_versions.c.version))]
    state = json.loads(row.state or "{}")
    return {"name": row.name, "model": row.model, "version": int(row.version), "paused": bool(row.paused), "origin": row.origin,
            "spec": json.loads(row.spec), "state": state, "versions": versions, "owners": owners_of("retraining", name),
            "schedules": [{"name": s.name, "trigger": s.describe(), "enabled": s.enabled,
                           "last_fired": s.last_fired} for s in _policy_schedules(name)],
            "created_by": row.created_by, "created": ms_to_datetime(row.created_ms), "history": history(name, limit=20)}


def history(name: str, *, limit: int | None = None) -> list[dict[str, Any]]:
    """The policy's events, newest first: what fired, when, what ran and with what outcome."""
    _row(name)
    q = sa.select(retraining_events).where(retraining_events.c.policy == name).order_by(retraining_events.c.id.desc())
    if limit:
        q = q.limit(limit)
    with get_metadata_store().read() as conn:
        return [_event_dict(dict(r._mapping)) for r in conn.execute(q)]


def retraining_products(target: str, params: Mapping[str, Any]) -> list[str]:
    """What a retrain writes: the pipeline's products and the model it promotes."""
    from keel.pipelines.jobs import pipeline_products

    out = [f"model:{params['model']}"] if params.get("model") else []
    if params.get("pipeline"):
        try:
            out.extend(pipeline_products(str(params["pipeline"]), {"window_start": None, "window_end": None}))
        except KeelError:
            pass
    return out
