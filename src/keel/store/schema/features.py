"""Feature store tables: immutable definition versions, materialization state, consumers."""

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text, UniqueConstraint

from keel.store.schema._base import metadata

# One row per version of one object (entity, source, feature view, on-demand view,
# feature service). A version is immutable: a changed spec gets the next version.
feature_objects = Table(
    "feature_objects",
    metadata,
    Column("kind", String(32), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("hash", String(64), nullable=False),
    # canonical JSON of the definition (schema, source, TTL, transformation code...)
    Column("spec", Text, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("created_by", String(255), nullable=False),
    Index("ix_feature_objects_hash", "hash"),
)

# One row per `keel features apply` that changed anything: the project's whole set of
# definitions, as {"kind:name": version} (removed objects are absent).
feature_definitions = Table(
    "feature_definitions",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False, index=True),
    Column("objects", Text, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("created_by", String(255), nullable=False),
)

# Where materialization of each feature view got to (the incremental watermark).
feature_materializations = Table(
    "feature_materializations",
    metadata,
    Column("view", String(255), primary_key=True),
    Column("view_version", Integer, nullable=False),
    # ingestion (created) time when the source has one, else event time, epoch ms
    Column("watermark_ms", BigInteger, nullable=False),
    Column("start_ms", BigInteger, nullable=True),
    Column("end_ms", BigInteger, nullable=False),
    Column("rows_read", BigInteger, nullable=False),
    Column("keys_written", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    # when the run started listing and reading files: a file modified later was maybe not seen whole
    Column("read_from_ms", BigInteger, nullable=True),
)

# Who consumes a feature service version: models, runs, deployments.
feature_consumers = Table(
    "feature_consumers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("service", String(255), nullable=False),
    Column("service_version", Integer, nullable=False),
    Column("consumer_kind", String(32), nullable=False),
    Column("consumer_id", String(255), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    UniqueConstraint("service", "service_version", "consumer_kind", "consumer_id", name="uq_feature_consumers_key"),
    Index("ix_feature_consumers_service", "service"),
)
