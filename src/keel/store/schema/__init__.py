"""Every table keel keeps in the metadata store, on one SQLAlchemy ``MetaData``.

Each subsystem owns one module here; the Alembic migrations in
``keel/store/migrations/versions`` create the same tables.
Timestamps are stored as integer milliseconds since the epoch (UTC).
"""

from keel.store.schema import auth as auth  # users, tokens, roles, owners, refusals
from keel.store.schema import contracts as contracts  # data contract tables
from keel.store.schema import deployments as deployments  # deployments and their audit trail
from keel.store.schema import features as features  # feature store tables
from keel.store.schema import mlflow as mlflow  # MLflow protocol tables
from keel.store.schema import monitoring as monitoring  # baselines, monitors, results, alerts
from keel.store.schema import pipelines as pipelines  # pipeline cache, runs, schedules
from keel.store.schema import registry as registry  # model registry tables
from keel.store.schema import (
    retraining as retraining,  # retraining policies, their versions and events
)
from keel.store.schema import (
    services as services,  # model servers keel worker runs (keel deploy start)
)
from keel.store.schema._base import metadata
from keel.store.schema.tracking import (
    artifacts,
    datasets,
    experiments,
    metric_batches,
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
    "metric_batches",
    "metric_history",
    "metrics",
    "params",
    "runs",
    "tags",
]
