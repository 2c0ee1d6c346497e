"""Monitors: a model's window of the prediction log checked against each version's baseline, on a schedule.

Declared in code (:func:`define_monitor`, stored in the metadata store) or in
``keel.yaml``::

    monitors:
      churn-daily:
        model: churn
        window: 1d            # or "10000 predictions"
        schedule: "0 6 * * *"
        checks: [drift, quality, performance, service, business]
        segments: [plan]
        horizon: 30d          # labels later than this after the prediction are late
        entity: customer_id   # labels keyed by entity join on this log column
        thresholds: {psi: 0.2}
        objectives: {latency_p99_ms: 50, error_rate: 0.01, min_volume: 100, missing_feature_rate: 0.05}
        business: {top5: "precision_at_top:0.05"}
        alerts: [{kind: log}, {kind: webhook, url: "https://hooks.slack.com/...", format: slack}]
        cooldown: 6h
        owners: [alice]       # who owns it (keel owners); default: who declared it

:func:`run_monitor` reads only the window (every route but ``shadow``: shadow
predictions never answered a caller), compares each version in it with its own
baseline, joins the labels received so far, estimates performance where labels
are missing, checks the service objectives, stores every figure as a time series
(``monitor_results``: per column and statistic) and raises alerts. Running the
same window again replaces its results, so labels that arrived since reconcile
the realized figure with the estimate.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from keel.errors import NotFoundError, ValidationError, did_you_mean

if TYPE_CHECKING:
    import pandas as pd

    from keel.monitoring.drift import DriftReport
    from keel.monitoring.window import Window

log = logging.getLogger("keel.monitoring")
CHECKS = ("drift", "quality", "performance", "service", "business")
LEVELS = {"ok": 0, "no_data": 0, "no_baseline": 1, "warn": 1, "alert": 2}
OBJECTIVES = ("latency_p99_ms", "error_rate", "min_volume", "missing_feature_rate")


@dataclass
class MonitorSpec:
    """A monitor's declaration (see the module docstring for the keel.yaml form)."""

    name: str
    model: str
    window: str = "1d"
    schedule: str | None = None
    checks: list[str] = field(default_factory=lambda: ["drift", "quality", "performance", "service"])
    columns: list[str] | None = None
    method: Any = None
    thresholds: Any = None
    segments: list[str] = field(default_factory=list)
    horizon: str = "30d"
    entity: str | None = None
    objectives: dict[str, float] = field(default_factory=dict)
    business: dict[str, str] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=lambda: [{"kind": "log"}])
    cooldown: str = "6h"
    decision_threshold: float = 0.5
    performance_drop: float = 0.05  # alert when a metric is this much worse than at validation
    owners: list[str] = field(default_factory=list)  # who owns it (keel owners); default: who declared it
    origin: str = "code"

    def validate(self) -> MonitorSpec:
        from keel.monitoring.feedback import parse_duration

        raw = self.owners.split(",") if isinstance(self.owners, str) else (self.owners or [])
        self.owners = [str(o).strip() for o in raw if str(o).strip()]

        unknown = [c for c in self.checks if c not in CHECKS]
        if unknown:
            raise ValidationError(f"Monitor {self.name!r}: unknown check {unknown[0]!r}." + did_you_mean(unknown[0], CHECKS), hint=f"Use {', '.join(CHECKS)}.")
        bad = [k for k in self.objectives if k not in OBJECTIVES]
        if bad:
            raise ValidationError(f"Monitor {self.name!r}: unknown objective {bad[0]!r}." + did_you_mean(bad[0], OBJECTIVES), hint=f"Use {', '.join(OBJECTIVES)}.")
        self.window_spec()
        from keel.monitoring.alerts import check_sinks

        check_sinks(self.alerts)
        parse_duration(self.horizon)
        parse_duration(self.cooldown)
        if self.schedule:
            from keel.pipelines.schedule import Cron

            Cron(self.schedule)
        return self

    def window_spec(self) -> timedelta | int:
        """A duration, or a number of predictions ('10000 predictions')."""
        from keel.monitoring.feedback import parse_duration

        text = str(self.window).strip()
        if text.endswith("predictions") or text.isdigit():
            try:
                n = int(text.split()[0])
            except ValueError:
                n = 0
            if n <= 0:
                raise ValidationError(f"Monitor {self.name!r}: window {self.window!r} is not a positive count.", hint="Write e.g. '10000 predictions' or 1d.")
            return n
        return parse_duration(text)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _from_dict(name: str, d: dict[str, Any], origin: str) -> MonitorSpec:
    known = set(MonitorSpec.__dataclass_fields__)
    extra = [k for k in d if k not in known]
    if extra:
        raise ValidationError(f"Monitor {name!r} has an unknown setting {extra[0]!r}." + did_you_mean(extra[0], known), hint=f"Settings: {', '.join(sorted(known))}.")
    if "model" not in d:
        raise ValidationError(f"Monitor {name!r} names no model.", hint="Add model: <registered model name>.")
    return MonitorSpec(**{**d, "name": name, "origin": origin}).validate()


def define_monitor(name: str, model: str, **settings: Any) -> MonitorSpec:
    """Declare (or replace) a monitor in code; stored in the metadata store.

    >>> define_monitor("churn-daily", "churn", window="1d", segments=["plan"])
    """
    import sqlalchemy as sa

    from keel.store.metadata import get_metadata_store, now_ms
    from keel.store.owners import seed_owners
    from keel.store.schema.monitoring import monitors

    spec = _from_dict(name, {"model": model, **settings}, "code")
    with get_metadata_store().write() as conn:
        conn.execute(sa.delete(monitors).where(monitors.c.name == name))
        conn.execute(sa.insert(monitors).values(name=name, model=model, spec=json.dumps(spec.to_dict(), default=str), origin="code",
                                                created_ms=now_ms(), updated_ms=now_ms()))
        seed_owners(conn, "monitor", name, spec.owners)  # those it declares, else the acting user, unless it has owners already
    return spec


def _yaml_monitors() -> dict[str, MonitorSpec]:
    from keel.config import settings

    section = settings().section("monitors")
    return {str(k): _from_dict(str(k), dict(v or {}), "keel.yaml") for k, v in section.items()}


def list_monitors() -> list[MonitorSpec]:
    """Every monitor: keel.yaml's, then those defined in code (a keel.yaml entry wins a name clash)."""
    import sqlalchemy as sa

    from keel.store.metadata import get_metadata_store
    from keel.store.schema.monitoring import monitors

    out = _yaml_monitors()
    with get_metadata_store().read() as conn:
        for row in conn.execute(sa.select(monitors).order_by(monitors.c.name)).all():
            if row.name not in out:
                d = json.loads(row.spec)
                d.pop("name", None)
                d.pop("origin", None)
                out[row.name] = _from_dict(row.name, d, "code")
    return [out[k] for k in sorted(out)]


def get_monitor(name: str) -> MonitorSpec:
    found = {m.name: m for m in list_monitors()}
    if name not in found:
        raise NotFoundError(f"Monitor {name!r} does not exist." + did_you_mean(name, found),
                            hint="Declare it under monitors: in keel.yaml or with keel.monitoring.define_monitor(...).")
    return found[name]


@dataclass
class VersionResult:
    version: int
    rows: int
    status: str
    drift: DriftReport | None = None
    performance: dict[str, Any] = field(default_factory=dict)
    estimated: dict[str, float] = field(default_factory=dict)
    baseline_performance: dict[str, float] = field(default_factory=dict)
    business: dict[str, float | None] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "rows": self.rows, "status": self.status, "note": self.note, "performance": self.performance,
                "estimated": self.estimated, "baseline_performance": self.baseline_performance, "business": self.business,
                "drift": None if self.drift is None else self.drift.to_dict()}


@dataclass
class MonitorResult:
    """One run of a monitor over one window."""

    monitor: str
    model: str
    window_start: datetime
    window_end: datetime
    rows: int
    status: str
    versions: list[VersionResult] = field(default_factory=list)
    service: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    run_id: int | None = None
    alerts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def drifted(self) -> list[str]:
        return sorted({c for v in self.versions if v.drift is not None for c in v.drift.drifted})

    def to_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "model": self.model, "window_start": self.window_start, "window_end": self.window_end,
                "rows": self.rows, "status": self.status, "drifted": self.drifted, "service": self.service, "notes": self.notes,
                "run_id": self.run_id, "alerts": self.alerts, "versions": [v.to_dict() for v in self.versions]}


def _service(spec: MonitorSpec, window: Window) -> dict[str, Any]:
    out = window.service()
    checks = {}
    for key, limit in spec.objectives.items():
        value = out.get("volume" if key == "min_volume" else key)
        if value is None:
            continue
        breached = value < limit if key == "min_volume" else value > limit
        checks[key] = {"value": value, "limit": limit, "level": "alert" if breached else "ok"}
    out["objectives"] = checks
    return out


def _log_inputs(names: list[str]) -> list[str]:
    """The input columns among a log's column names (not the reserved ones, not the class probabilities)."""
    from keel.store.predictions import BASE_COLUMNS, OUTPUT_COLUMNS

    return [c for c in names if c not in BASE_COLUMNS and c not in OUTPUT_COLUMNS and not c.startswith("proba_")]


def _version_result(spec: MonitorSpec, version: int, window: Window) -> VersionResult:
    from keel.monitoring import performance as P
    from keel.monitoring.baselines import baseline_from_registry, get_baseline
    from keel.monitoring.drift import compare
    from keel.monitoring.feedback import has_feedback, join_labels

    n = window.counts.get(version, 0)
    try:
        baseline = get_baseline(spec.model, version)
    except NotFoundError as exc:
        built = baseline_from_registry(spec.model, version) if _registered(spec.model, version) else None
        if built is None:
            return VersionResult(version, n, "no_baseline", note=str(exc))
        baseline = built
    res = VersionResult(version, n, "ok", baseline_performance=baseline.performance)
    ref = baseline.reference
    if spec.columns:
        from keel.monitoring.reference import Reference

        missing = [c for c in spec.columns if c not in ref.columns]
        if missing:
            raise ValidationError(f"Monitor {spec.name!r}: column {missing[0]!r} is not in the baseline of v{version}." + did_you_mean(missing[0], ref.columns),
                                  hint=f"The baseline has {sorted(ref.columns)}.")
        ref = Reference({c: ref.columns[c] for c in spec.columns}, ref.rows, ref.n_chunks, ref.bins, {}, ref.multivariate, ref.sample)
    drift = "drift" in spec.checks or "quality" in spec.checks
    labels = ("performance" in spec.checks or "business" in spec.checks)
    joined_by = ["request_id", "ts", *([spec.entity] if spec.entity else [])] if labels and has_feedback(spec.model) else []
    wanted = [*(ref.columns if drift or "business" in spec.checks else []), "score", "prediction", *joined_by]
    rows = window.read(version, wanted)  # only the columns the checks read
    if drift:
        added = sorted(set(_log_inputs(window.columns(version))) - set(baseline.reference.columns) - set(ref.skipped))
        res.drift = compare(ref, rows.select([c for c in rows.column_names if c in ref.columns]), method=spec.method,
                            thresholds=spec.thresholds, added=added)
    if labels:
        joined = join_labels(spec.model, rows, entity=spec.entity, horizon=spec.horizon)  # every label received so far
        if "performance" in spec.checks:
            res.performance = P.realized(joined, baseline.task, threshold=spec.decision_threshold)
            if baseline.task == "binary" and "score" in rows.column_names:
                from keel.monitoring.reference import as_float

                score = as_float(rows["score"])
                res.estimated = P.estimate_cbpe(score, P.Calibrator(baseline.labelled_sample()), threshold=spec.decision_threshold)
        if "business" in spec.checks:
            res.business = P.business(joined, spec.business)
    if n == 0:
        res.status = "no_data"
    elif res.drift is not None and (res.drift.drifted or (res.drift.multivariate or {}).get("drifted")):
        res.status = "alert"
    elif res.drift is not None and any(c.level == "warn" for c in res.drift.columns):
        res.status = "warn"
    return res


def _registered(model: str, version: int) -> bool:
    try:
        from keel.registry.versions import get_version

        get_version(model, version)
        return True
    except NotFoundError:
        return False


def run_monitor(name: str, *, end: datetime | None = None, alerts: bool = True, store: bool = True) -> MonitorResult:
    """Run monitor ``name`` over the window ending at ``end`` (default now); store and return the result.

    This is the scheduler's job: ``keel scheduler`` runs it for monitors with a
    ``schedule`` (see :func:`due_monitors`).
    """
    from keel.monitoring.window import open_window

    spec = get_monitor(name)
    end = (end or datetime.now(UTC)).astimezone(UTC)
    window = open_window(spec.model, spec.window_spec(), end)
    try:
        result = _run_window(spec, window, end)
    finally:
        window.close()
    if store:
        from keel.monitoring.results import store_result

        store_result(spec, result)
    if alerts:
        from keel.monitoring.alerts import raise_alerts

        result.alerts = raise_alerts(spec, result)
    return result


def _run_window(spec: MonitorSpec, window: Window, end: datetime) -> MonitorResult:
    """The checks of one run over an open window (not yet stored, no alerts raised)."""
    start = window.start
    result = MonitorResult(spec.name, spec.model, start, end, window.rows, "ok")
    if window.rows == 0:
        result.status = "no_data"
        result.notes.append(f"No predictions of {spec.model} between {start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M} UTC: nothing to compare.")
    else:
        for version in window.versions:
            result.versions.append(_version_result(spec, version, window))
        for v in result.versions:
            if v.status == "no_baseline":
                result.notes.append(f"v{v.version}: {v.note}")
    if "service" in spec.checks:
        result.service = _service(spec, window)
    worst = max([LEVELS.get(v.status, 0) for v in result.versions] + [2 if any(o["level"] == "alert" for o in result.service.get("objectives", {}).values()) else 0])
    if result.versions or window.rows:
        result.status = {0: "ok", 1: "warn", 2: "alert"}[worst]
        if all(v.status == "no_baseline" for v in result.versions) and result.versions:
            result.status = "no_baseline"
    return result


def due_monitors(now: datetime | None = None) -> list[str]:
    """Names of scheduled monitors whose cron expression matches ``now`` (UTC, to the minute)."""
    from keel.pipelines.schedule import Cron

    now = (now or datetime.now(UTC)).astimezone(UTC).replace(second=0, microsecond=0)
    return [m.name for m in list_monitors() if m.schedule and Cron(m.schedule).matches(now)]


def window_frame(result: MonitorResult) -> pd.DataFrame:
    """The drift table of every version in a result, with a ``version`` column."""
    import pandas as pd

    frames = [v.drift.to_frame().assign(version=v.version) for v in result.versions if v.drift is not None]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
