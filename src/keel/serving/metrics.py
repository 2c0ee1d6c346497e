"""Prometheus metrics of a model server (``GET /metrics``), aggregated over workers.

Requests by model, version, endpoint and status; latency histograms; rows per
predict call (batch sizes); and the prediction log's lag, bytes pending on disk,
rows written and records dropped (which must stay 0). With ``--workers N`` the
server runs prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``,
set by ``keel serve`` before the workers start), so a scrape of any worker
returns the sum over all of them.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from keel.errors import missing_extra

if TYPE_CHECKING:
    from keel.store.prediction_log import PredictionLog

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
ROW_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000)


class Metrics:
    """The server's collectors, in their own registry (one per app)."""

    def __init__(self) -> None:
        try:
            import prometheus_client as pc
        except ImportError:  # pragma: no cover
            raise missing_extra("prometheus_client", "serving") from None
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = pc.CollectorRegistry()
        reg = None if self.multiprocess else self.registry
        self.requests = pc.Counter("keel_requests", "Requests by model, version, endpoint and status",
                                   ["model", "version", "endpoint", "status"], registry=reg)
        self.latency = pc.Histogram("keel_request_duration_seconds", "Time to answer a request",
                                    ["model", "endpoint"], buckets=LATENCY_BUCKETS, registry=reg)
        self.rows = pc.Histogram("keel_predict_rows", "Rows per predict call (batch size)", ["model"], buckets=ROW_BUCKETS, registry=reg)
        self.rejected = pc.Counter("keel_requests_rejected", "Requests refused because the queue was full (503)", ["model"], registry=reg)
        gauge: dict[str, Any] = {"registry": reg}
        if self.multiprocess:
            gauge["multiprocess_mode"] = "livesum"
        self.log_lag = pc.Gauge("keel_prediction_log_lag_seconds", "Age of the oldest prediction not yet in the lake", **(
            {**gauge, "multiprocess_mode": "livemax"} if self.multiprocess else gauge))
        self.log_pending = pc.Gauge("keel_prediction_log_pending_bytes", "Bytes of prediction log segments on local disk", **gauge)
        self.log_written = pc.Gauge("keel_prediction_log_rows_written", "Prediction rows compacted into the lake", **gauge)
        self.log_dropped = pc.Gauge("keel_prediction_log_dropped", "Prediction records that could not be logged (must stay 0)", **gauge)
        self.log_errors = pc.Gauge("keel_prediction_log_lake_errors", "Failed compactions into the lake (retried)", **gauge)
        self._lock = threading.Lock()

    def observe_log(self, log: PredictionLog | None) -> None:
        if log is None:
            return
        s = log.stats()
        self.log_lag.set(s["lag_seconds"])
        self.log_pending.set(s["pending_bytes"])
        self.log_written.set(s["rows_written"])
        self.log_dropped.set(s["dropped"])
        self.log_errors.set(s["lake_errors"])

    def render(self) -> tuple[bytes, str]:
        """(body, content type) of a scrape."""
        import prometheus_client as pc

        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = pc.CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return pc.generate_latest(registry), pc.CONTENT_TYPE_LATEST
        return pc.generate_latest(self.registry), pc.CONTENT_TYPE_LATEST


def mark_worker_dead(pid: int) -> None:
    """Drop a finished worker's live gauges (multiprocess mode)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
