"""Monitoring: drift against stored baselines, delayed labels and performance, monitors and alerts.

- :mod:`~keel.monitoring.drift` the drift engine (``keel.drift``), over :mod:`~keel.monitoring.stats`;
- :mod:`~keel.monitoring.reference` and :mod:`~keel.monitoring.thresholds`: a reference fitted once,
  thresholds learned from its chunks;
- :mod:`~keel.monitoring.baselines`: fitted references stored per model version;
- :mod:`~keel.monitoring.feedback` and :mod:`~keel.monitoring.performance`: labels, realized and
  estimated performance;
- :mod:`~keel.monitoring.monitors` and :mod:`~keel.monitoring.alerts`.
"""

from keel.monitoring import jobs as _jobs
from keel.monitoring import triggers as _triggers
from keel.monitoring.alerts import ack_alert, list_alerts, resolve_alert
from keel.monitoring.baselines import Baseline, build_baseline, get_baseline, list_baselines
from keel.monitoring.baselines import subscribe_to_registry as _subscribe
from keel.monitoring.drift import ColumnDrift, DriftReport, drift
from keel.monitoring.feedback import FeedbackReport, import_feedback, log_feedback
from keel.monitoring.monitors import (
    MonitorResult,
    MonitorSpec,
    define_monitor,
    due_monitors,
    get_monitor,
    list_monitors,
    run_monitor,
)
from keel.monitoring.results import series, write_report

__all__ = [
    "Baseline", "ColumnDrift", "DriftReport", "FeedbackReport", "MonitorResult", "MonitorSpec", "ack_alert", "build_baseline",
    "define_monitor", "drift", "due_monitors", "get_baseline", "get_monitor", "import_feedback", "list_alerts", "list_baselines",
    "list_monitors", "log_feedback", "resolve_alert", "run_monitor", "series", "write_report",
]

_subscribe()  # registered versions get a baseline (monitoring registers itself with the registry)
_jobs.register()  # and its monitors as a job kind with the scheduler
_triggers.register()  # and its alerts and performance series as trigger kinds
