"""Tracking tables: experiments, runs and what a run records."""

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from keel.store.schema._base import metadata

experiments = Table(
    "experiments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("description", Text, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("experiment_id", Integer, nullable=False, index=True),
    Column("name", String(255), nullable=False),
    Column("parent_id", String(32), nullable=True, index=True),
    # running | finished | failed | killed  (crashed is derived from the heartbeat)
    Column("status", String(16), nullable=False),
    Column("start_ms", BigInteger, nullable=False),
    Column("end_ms", BigInteger, nullable=True),
    Column("heartbeat_ms", BigInteger, nullable=False),
    Column("user", String(255), nullable=False),
    Column("host", String(255), nullable=False),
    Column("error", Text, nullable=True),
    # the reproducibility record (JSON): git, argv, python, platform, lock hash, seeds
    Column("env", Text, nullable=True),
)

params = Table(
    "params",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
    # the value as a number when it parses as one, so filters can compare numerically
    Column("num", Float, nullable=True),
    # covering: a filter on a param finds its runs from the index alone
    Index("ix_params_key_num", "key", "num", "run_id"),
    sqlite_with_rowid=False,
)

tags = Table(
    "tags",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
    sqlite_with_rowid=False,
)

# The run summary: the latest value of each metric (largest step, then newest).
# NaN is stored as NULL (SQLite cannot hold NaN); +/-inf are stored as they are.
metrics = Table(
    "metrics",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Float, nullable=True),
    Column("step", BigInteger, nullable=False),
    Column("ts", BigInteger, nullable=False),
    Index("ix_metrics_key_value", "key", "value", "run_id"),
    sqlite_with_rowid=False,
)

# Every logged value, apart from the summaries so that search never touches it.
# One row per (run, key, flush): the steps, timestamps and values of that flush
# as little-endian int64 / int64 / float64 arrays, so a flush of 100,000 values
# is one insert per key, NaN stays NaN, and a history is read in a few rows.
metric_history = Table(
    "metric_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False),
    Column("key", String(250), nullable=False),
    Column("n", Integer, nullable=False),
    Column("min_step", BigInteger, nullable=False),
    Column("max_step", BigInteger, nullable=False),
    Column("steps", LargeBinary, nullable=False),
    Column("ts", LargeBinary, nullable=False),
    Column("vals", LargeBinary, nullable=False),
    Index("ix_metric_history_run_key", "run_id", "key", "min_step"),
)

# Content-addressed blobs referenced by runs, model versions, cache entries...
# `keel gc` deletes every blob no row here references.
artifacts = Table(
    "artifacts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("owner_kind", String(32), nullable=False),
    Column("owner_id", String(64), nullable=False),
    Column("path", String(1024), nullable=False),
    Column("digest", String(64), nullable=False, index=True),
    Column("size", BigInteger, nullable=False),
    Column("media_type", String(128), nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    UniqueConstraint("owner_kind", "owner_id", "path"),
    Index("ix_artifacts_owner", "owner_kind", "owner_id"),
)

# Dataset inputs of runs: content fingerprint, schema, row count, source.
datasets = Table(
    "datasets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False, index=True),
    Column("name", String(255), nullable=False),
    Column("context", String(64), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("num_rows", BigInteger, nullable=True),
    Column("schema", Text, nullable=True),
    Column("source", Text, nullable=True),
    Column("extra", Text, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    UniqueConstraint("run_id", "name", "context"),
)

# Metric batches sent through a keel server, by the client's batch id: a batch that is
# retried (a lost answer, a replica that died) is stored once.
metric_batches = Table(
    "metric_batches",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("batch_id", String(64), primary_key=True),
    Column("n", Integer, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)
