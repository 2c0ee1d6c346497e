"""Monitoring's trigger kinds for the scheduler: an alert, and performance below a threshold.

Registered with :mod:`keel.pipelines.triggers` from this layer (the scheduler
imports nothing above it), so a schedule can wait for them::

    add_schedule("retrain-on-drift", "churn-retrain", job="retraining", on=("alert", "churn-daily:alert"))
    add_schedule("retrain-on-auc", "churn-retrain", job="retraining",
                 on=("performance", "churn-daily: roc_auc < 0.75 for 2 windows"))

``alert`` fires when a monitor opens an alert or records a new occurrence of
one (at or above a severity: ``warn`` < ``alert``). ``performance`` fires when
the last N windows of a monitor's realized (or ``estimated``) metric, for the
version the model's production environment holds, are all below the threshold
(``>`` above it, for an error metric); one window fires once.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from keel.errors import ValidationError, did_you_mean

SEVERITIES = {"warn": 1, "alert": 2}
_PERF = re.compile(
    r"^\s*(?P<monitor>[^:\s]+)\s*:\s*(?P<source>estimated\s+)?(?P<metric>[A-Za-z0-9_@.]+)\s*(?P<op>[<>])\s*(?P<threshold>-?[0-9.]+)"
    r"\s+for\s+(?P<n>\d+)\s+windows?(?:\s+of\s+(?P<env>[A-Za-z0-9_\-]+))?\s*$"
)


def alert_spec(text: str) -> tuple[str, str]:
    """(monitor, minimum severity) from ``MONITOR`` or ``MONITOR:SEVERITY``."""
    monitor, _, severity = str(text).partition(":")
    severity = severity.strip() or "alert"
    if severity not in SEVERITIES:
        raise ValidationError(f"Alert severity {severity!r} is not known." + did_you_mean(severity, SEVERITIES), hint="Use warn or alert.")
    return monitor.strip(), severity


def performance_spec(text: str) -> dict[str, Any]:
    """The parts of ``MONITOR: [estimated] METRIC < THRESHOLD for N windows [of ENV]``."""
    m = _PERF.match(str(text))
    if not m:
        raise ValidationError(f"Performance trigger {text!r} is not understood.",
                              hint="Write 'MONITOR: METRIC < THRESHOLD for N windows', e.g. 'churn-daily: roc_auc < 0.75 for 2 windows'.")
    n = int(m["n"])
    if n < 1:
        raise ValidationError(f"Performance trigger {text!r}: N windows must be at least 1.")
    return {"monitor": m["monitor"], "kind": "estimated" if m["source"] else "performance", "metric": m["metric"], "op": m["op"],
            "threshold": float(m["threshold"]), "windows": n, "environment": m["env"] or "production"}


def _check_alert(spec: str) -> None:
    from keel.monitoring.monitors import get_monitor

    get_monitor(alert_spec(spec)[0])


def _check_performance(spec: str) -> None:
    from keel.monitoring.monitors import get_monitor

    get_monitor(performance_spec(spec)["monitor"])


def _alert_rows(monitor: str, since_ms: int) -> list[Any]:
    import sqlalchemy as sa

    from keel.store.metadata import get_metadata_store
    from keel.store.schema.monitoring import alerts as t

    q = sa.select(t).where(t.c.monitor == monitor, t.c.last_ms > since_ms, t.c.status == "open").order_by(t.c.last_ms, t.c.id)
    with get_metadata_store().read() as conn:
        return list(conn.execute(q).all())


def _alert_initial(spec: str) -> dict[str, Any]:
    monitor, _ = alert_spec(spec)
    rows = _alert_rows(monitor, 0)
    return {"last_ms": max((int(r.last_ms) for r in rows), default=0)}


def _alert_pending(spec: str, state: dict[str, Any], now: datetime) -> tuple[dict[str, Any] | None, dict[str, Any], str]:
    monitor, severity = alert_spec(spec)
    state = dict(state)
    rows = _alert_rows(monitor, int(state.get("last_ms", 0)))
    if not rows:
        return None, state, ""
    state["last_ms"] = max(int(r.last_ms) for r in rows)
    due = [r for r in rows if SEVERITIES.get(r.level, 2) >= SEVERITIES[severity]]
    if not due:
        return None, state, ""
    a = due[-1]  # several alerts since the last check: one event, for the latest (the others are listed)
    context = json.loads(a.context or "{}")
    event = {"kind": "alert", "monitor": monitor, "alert_id": int(a.id), "subject": a.subject, "level": a.level, "model": a.model,
             "version": a.version, "message": str(a.message)[:1000], "occurrences": int(a.occurrences),
             "window_end": context.get("window_end") or _last_window_end(monitor), "also": [int(r.id) for r in due[:-1]]}
    return event, state, f"alert:{int(a.id)}:{int(a.occurrences)}"


def _last_window_end(monitor: str) -> str | None:
    """The end of the monitor's latest window (an alert without a window of its own, e.g. multivariate, was raised there)."""
    import sqlalchemy as sa

    from keel.store.metadata import get_metadata_store, ms_to_datetime
    from keel.store.schema.monitoring import monitor_runs as t

    with get_metadata_store().read() as conn:
        ms = conn.execute(sa.select(t.c.window_end_ms).where(t.c.monitor == monitor).order_by(t.c.run_ms.desc(), t.c.id.desc()).limit(1)).scalar()
    end = ms_to_datetime(ms)
    return None if end is None else end.isoformat()


def _performance_initial(spec: str) -> dict[str, Any]:
    return {"last_key": None}


def _performance_pending(spec: str, state: dict[str, Any], now: datetime) -> tuple[dict[str, Any] | None, dict[str, Any], str]:
    from keel.errors import NotFoundError
    from keel.monitoring.monitors import get_monitor
    from keel.monitoring.results import series
    from keel.registry.versions import resolve_version

    p = performance_spec(spec)
    state = dict(state)
    model = get_monitor(p["monitor"]).model
    try:
        version = resolve_version(model, p["environment"]).version
    except NotFoundError:
        return None, state, ""
    s = series(p["monitor"], kind=p["kind"], statistic=p["metric"])
    s = s[(s["version"] == version) & s["value"].notna()].sort_values("window_end")
    last = s.tail(p["windows"])
    if len(last) < p["windows"]:
        return None, state, ""
    values = [float(v) for v in last["value"]]
    below = p["op"] == "<"  # "< threshold" for a higher-is-better metric, "> threshold" for an error
    breached = all(v < p["threshold"] for v in values) if below else all(v > p["threshold"] for v in values)
    if not breached:
        return None, state, ""
    end = last["window_end"].iloc[-1]
    key = f"performance:{version}:{int(end.timestamp() * 1000)}"
    if state.get("last_key") == key:
        return None, state, ""
    state["last_key"] = key
    event = {"kind": "performance", "monitor": p["monitor"], "model": model, "version": version, "metric": p["metric"],
             "source": p["kind"], "values": values, "threshold": p["threshold"], "windows": p["windows"], "window_end": end.isoformat()}
    return event, state, key


def register() -> None:
    from keel.pipelines.triggers import register_trigger_kind

    register_trigger_kind("alert", initial=_alert_initial, pending=_alert_pending, check=_check_alert,
                          describe=lambda spec: f"an alert of monitor {alert_spec(spec)[0]} (severity >= {alert_spec(spec)[1]})")
    register_trigger_kind("performance", initial=_performance_initial, pending=_performance_pending, check=_check_performance,
                          describe=lambda spec: f"performance: {spec}")
