"""The ``monitor`` job kind: ``keel scheduler`` runs monitors like it runs pipelines.

Monitoring registers the kind with the scheduler from this layer (the scheduler
imports nothing above it), so a schedule names a monitor as its target::

    keel schedule add drift-hourly churn-drift --job monitor --cron "0 * * * *"
"""

from __future__ import annotations

from typing import Any

from keel.pipelines.jobs import JobOutcome, register_job_kind


def run_monitor_job(target: str, params: dict[str, Any], event: dict[str, Any] | None, *, trigger: str, tags: dict[str, str]) -> JobOutcome:
    """Run monitor ``target`` over the window ending now; a failed run is the job's error."""
    from keel.monitoring.monitors import run_monitor

    result = run_monitor(target, alerts=bool(params.get("alerts", True)))
    return JobOutcome(None if result.run_id is None else str(result.run_id))


def check_monitor_job(target: str, params: dict[str, Any], trigger_kind: str) -> dict[str, Any]:
    """Refuse a schedule for a monitor that does not exist (with "did you mean")."""
    from keel.errors import ValidationError
    from keel.monitoring.monitors import get_monitor

    get_monitor(target)
    unknown = set(params) - {"alerts"}
    if unknown:
        raise ValidationError(f"Monitor jobs take no parameter {sorted(unknown)[0]!r}.", hint="The only parameter is alerts=true|false.")
    return dict(params)


def register() -> None:
    register_job_kind("monitor", run_monitor_job, check=check_monitor_job, describe="monitor")
