"""Every table keel keeps in the metadata store, on one SQLAlchemy ``MetaData``.

Each subsystem owns one module here; the Alembic migrations in
``keel/store/migrations/versions`` create the same tables.
Timestamps are stored as integer milliseconds since the epoch (UTC).
"""

from keel.store.schema._base import metadata
from keel.store.schema.tracking import (
    artifacts,
    datasets,
    experiments,
    metric_history,
    metrics,
    params,
    runs,
    tags,
)

__all__ = [
    "artifacts",
    "datasets",
    "experiments",
    "metadata",
    "metric_history",
    "metrics",
    "params",
    "runs",
    "tags",
]
