"""Monitoring tables: baselines, monitors, their runs and results (time series), alerts.

A baseline's reference sample is a lake dataset (``monitoring/baselines/<model>/<version>``);
its row here holds the fitted profile (JSON) and the validation performance.
``monitor_results`` is the time series: one row per (run, column, statistic).
Labels (feedback) are bulk data and live in the lake, not here.
"""

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from keel.store.schema._base import metadata

monitoring_baselines = Table(
    "monitoring_baselines",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(255), nullable=False),
    Column("version", Integer, nullable=False),
    Column("dataset", String(512), nullable=False),  # lake dataset of the reference sample
    Column("source", String(1024), nullable=False),  # where the data came from
    Column("rows", BigInteger, nullable=False),  # rows of the source (the sample may hold fewer)
    Column("task", String(16), nullable=True),
    Column("profile", Text, nullable=False),  # JSON: the fitted reference
    Column("performance", Text, nullable=True),  # JSON: validation metrics
    Column("created_by", String(255), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    UniqueConstraint("model", "version"),
)

monitors = Table(
    "monitors",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("model", String(255), nullable=False),
    Column("spec", Text, nullable=False),  # JSON: the monitor's declaration
    Column("origin", String(16), nullable=False),  # code | keel.yaml
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

monitor_runs = Table(
    "monitor_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("monitor", String(255), nullable=False),
    Column("model", String(255), nullable=False),
    Column("version", Integer, nullable=True),
    Column("window_start_ms", BigInteger, nullable=False),
    Column("window_end_ms", BigInteger, nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # ok | warn | alert | no_data | no_baseline
    Column("summary", Text, nullable=False),  # JSON: the whole result
    Column("run_ms", BigInteger, nullable=False),
    Index("ix_monitor_runs_monitor", "monitor", "window_end_ms"),
)

monitor_results = Table(
    "monitor_results",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, nullable=False),
    Column("monitor", String(255), nullable=False),
    Column("version", Integer, nullable=True),
    Column("window_end_ms", BigInteger, nullable=False),
    Column("kind", String(16), nullable=False),  # drift | quality | performance | estimated | business | service | multivariate
    Column("column", String(255), nullable=False),
    Column("statistic", String(64), nullable=False),
    Column("value", Float, nullable=True),
    Column("threshold", Float, nullable=True),
    Column("level", String(16), nullable=False),
    Index("ix_monitor_results_series", "monitor", "column", "statistic", "window_end_ms"),
)

alerts = Table(
    "monitoring_alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("monitor", String(255), nullable=False),
    Column("model", String(255), nullable=False),
    Column("version", Integer, nullable=True),
    Column("subject", String(255), nullable=False),  # the feature or metric; dedup key with the monitor
    Column("level", String(16), nullable=False),
    Column("status", String(16), nullable=False),  # open | acked | resolved
    Column("message", Text, nullable=False),
    Column("context", Text, nullable=False),  # JSON
    Column("deliveries", Text, nullable=False),  # JSON: per sink, delivered or the last error
    Column("occurrences", Integer, nullable=False),
    Column("first_ms", BigInteger, nullable=False),
    Column("last_ms", BigInteger, nullable=False),
    Column("notified_ms", BigInteger, nullable=True),
    Column("acked_by", String(255), nullable=True),
    Column("resolved_ms", BigInteger, nullable=True),
    Column("resolved_by", String(255), nullable=True),
    Index("ix_monitoring_alerts_open", "monitor", "subject", "status"),
)
