"""Pipeline tables: the step cache, pipeline runs with their steps, schedules and triggers."""

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text

from keel.store.schema._base import metadata

# One row per content-addressed step key. The key is the primary key, so two
# concurrent writers of the same key cannot both win: the first insert stands.
# The output blob is referenced from `artifacts` (owner_kind "cache", owner_id = key).
pipeline_cache = Table(
    "pipeline_cache",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("step", String(255), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("serializer", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("run_id", String(32), nullable=True),  # the step run that produced the output
    Column("duration_ms", BigInteger, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=True),
    Index("ix_pipeline_cache_step", "step"),
)

# A pipeline run is a tracked run (runs.id); this row says how to run it again.
pipeline_runs = Table(
    "pipeline_runs",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("pipeline", String(255), nullable=False),  # the import reference, module:attribute
    Column("name", String(255), nullable=False),
    Column("params", Text, nullable=False),  # JSON
    Column("graph", Text, nullable=False),  # JSON: nodes, edges, file:line of each step
    Column("smoke", Boolean, nullable=False),
    Column("engine", String(16), nullable=False),
    Column("trigger", String(255), nullable=False),
    Column("resume_of", String(32), nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Index("ix_pipeline_runs_pipeline", "pipeline"),
)

pipeline_steps = Table(
    "pipeline_steps",
    metadata,
    Column("run_id", String(32), primary_key=True),  # the pipeline run
    Column("step", String(255), primary_key=True),
    Column("step_run_id", String(32), nullable=True),  # the child run
    Column("status", String(16), nullable=False),  # pending | running | finished | cached | failed | skipped
    Column("cache_key", String(64), nullable=True),
    Column("cache_hit", Boolean, nullable=False),
    Column("source_run_id", String(32), nullable=True),  # on a hit: the step run that produced the output
    Column("digest", String(64), nullable=True),
    Column("serializer", String(64), nullable=True),
    Column("duration_ms", BigInteger, nullable=True),
    Column("saved_ms", BigInteger, nullable=True),
    Column("started_ms", BigInteger, nullable=True),
    Column("ended_ms", BigInteger, nullable=True),
    Column("error", Text, nullable=True),
)

# Schedules (cron) and event triggers (a source changed, a model moved) of jobs of any
# registered kind: a pipeline, later a monitor or a retraining policy. `target` is what
# the job kind runs (a pipeline's module:name, a monitor's name).
schedules = Table(
    "schedules",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("job", String(64), nullable=False),  # the job kind: pipeline | monitor | ...
    Column("target", String(255), nullable=False),
    Column("kind", String(16), nullable=False),  # cron | source | model
    Column("spec", Text, nullable=False),  # the cron expression, the watched path, the model name
    Column("params", Text, nullable=False),  # JSON
    Column("enabled", Boolean, nullable=False),
    Column("state", Text, nullable=True),  # JSON: last cron minute checked / fingerprint / event seen
    Column("last_fired_ms", BigInteger, nullable=True),
    Column("last_run_id", String(32), nullable=True),
    # the lease of the scheduler evaluating the schedule now (a row claim with expiry)
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_ms", BigInteger, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
)

# One row per occurrence a schedule fired (a cron minute, a fingerprint, a model event). The
# primary key is the claim: however many schedulers see the occurrence, one insert wins, and
# the winner's lease (renewed while the run goes on) says whether it is still alive.
schedule_fires = Table(
    "schedule_fires",
    metadata,
    Column("schedule", String(255), primary_key=True),
    Column("fire_key", String(255), primary_key=True),
    Column("event", Text, nullable=False),  # JSON
    Column("status", String(16), nullable=False),  # running | finished | failed | crashed
    Column("owner", String(64), nullable=False),  # the scheduler: host:pid:random
    Column("lease_expires_ms", BigInteger, nullable=False),
    Column("run_id", String(32), nullable=True),
    Column("claimed_ms", BigInteger, nullable=False),
    Column("ended_ms", BigInteger, nullable=True),
    Column("error", Text, nullable=True),
    Index("ix_schedule_fires_status", "status", "lease_expires_ms"),
)

# Optuna journal logs of tuning studies, kept in the metadata store so that trials on every
# machine of a cluster share one study. `seq` numbers a journal's logs from 0 without gaps.
optuna_journal = Table(
    "optuna_journal",
    metadata,
    Column("journal", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("log", Text, nullable=False),  # JSON
    Column("created_ms", BigInteger, nullable=False),
)

# Pipeline runs asked for through the server (POST /v1/pipeline-runs), waiting for a `keel worker`.
# A worker claims a row with one conditional UPDATE (queued -> running), so of several workers one
# wins; it renews `lease_expires_ms` while the run goes on. A row whose worker stopped renewing is
# marked crashed and never started again. `id` may come from the client, so a retried request
# queues nothing twice.
pipeline_queue = Table(
    "pipeline_queue",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("pipeline", String(255), nullable=False),  # the import reference, module:attribute
    Column("name", String(255), nullable=False),
    Column("experiment", String(255), nullable=False),
    Column("params", Text, nullable=False),  # JSON, as given (coerced by the worker's bind)
    Column("smoke", Boolean, nullable=False),
    Column("refresh", Boolean, nullable=False),
    Column("engine", String(16), nullable=True),
    Column("status", String(16), nullable=False),  # queued | running | finished | failed | crashed
    Column("requested_by", String(255), nullable=False),
    Column("requested_ms", BigInteger, nullable=False),
    Column("owner", String(64), nullable=True),  # the worker: host:pid:random
    Column("lease_expires_ms", BigInteger, nullable=True),
    Column("started_ms", BigInteger, nullable=True),
    Column("ended_ms", BigInteger, nullable=True),
    Column("run_id", String(32), nullable=True),  # the pipeline run, once it started
    Column("error", Text, nullable=True),
    Column("resume_of", String(32), nullable=True),  # a resume of this failed pipeline run (keel pipelines resume), not a fresh run
    Index("ix_pipeline_queue_status", "status", "requested_ms"),
)
