"""Tables of the MLflow REST protocol that keel's own tables do not hold.

MLflow runs, params, metrics, tags, artifacts and registered models live in
keel's tracking and registry tables (an MLflow run *is* a keel run). What is
MLflow's alone is kept here: experiment tags, MLflow 3 logged models
(``m-<id>``, the unit ``mlflow.<flavor>.log_model`` creates) and the links
between runs and the logged models they read or produced.
"""

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text

from keel.store.schema._base import metadata

mlflow_experiment_tags = Table(
    "mlflow_experiment_tags",
    metadata,
    Column("experiment_id", Integer, primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
)

mlflow_logged_models = Table(
    "mlflow_logged_models",
    metadata,
    Column("id", String(64), primary_key=True),  # m-<32 hex>
    Column("experiment_id", Integer, nullable=False, index=True),
    Column("name", String(255), nullable=False),
    Column("source_run_id", String(32), nullable=True, index=True),
    Column("model_type", String(255), nullable=True),
    # PENDING | READY | FAILED (MLflow's LoggedModelStatus)
    Column("status", String(16), nullable=False),
    Column("status_message", Text, nullable=True),
    Column("creator", String(255), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Column("tags", Text, nullable=False),  # JSON object
    Column("params", Text, nullable=False),  # JSON object
)

# runs -> logged models: "input" (log-inputs models) or "output" (runs/outputs, with its step)
mlflow_run_models = Table(
    "mlflow_run_models",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("model_id", String(64), primary_key=True),
    Column("direction", String(8), primary_key=True),
    Column("step", BigInteger, nullable=False),
    Index("ix_mlflow_run_models_model", "model_id"),
)
