"""Model registry tables: models, versions, environments/aliases, evaluations, approvals, events.

A model's owners are rows of ``owners`` (kind ``model``, keel.store.schema.auth).

An environment (``staging``, ``production``) or free alias (``champion``) is one
row of ``model_aliases`` keyed by (model, name): the primary key makes it
impossible for an environment to hold two versions, and the ``revision``
counter lets a promotion detect that someone else moved it first.
``model_events`` is append-only: every transition attempt, applied or not.

Models and versions are retired, never erased: ``archived_ms`` marks one that
may no longer be promoted or aliased, ``deleted_ms`` a tombstone whose files
are released but whose row (name, version number, lineage) keeps resolving for
the runs, lineage and logged predictions that name it (migration 0006).
"""

from sqlalchemy import (
    DDL,
    BigInteger,
    Column,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
)

from keel.store.schema._base import metadata

registered_models = Table(
    "registered_models",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("description", Text, nullable=True),
    Column("tags", Text, nullable=True),  # JSON object
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Column("archived_ms", BigInteger, nullable=True),
    Column("deleted_ms", BigInteger, nullable=True),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("run_id", String(32), nullable=False, index=True),
    Column("artifact_path", String(1024), nullable=False),
    Column("flavor", String(32), nullable=False),
    Column("description", Text, nullable=True),
    Column("created_by", String(255), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    # JSON: keel-model.json of the package, and the lineage (data, features, code, packages)
    Column("meta", Text, nullable=False),
    Column("lineage", Text, nullable=False),
    Column("archived_ms", BigInteger, nullable=True),
    Column("deleted_ms", BigInteger, nullable=True),
    UniqueConstraint("model_id", "version"),
)

# kind: "environment" (gated, audited) or "alias" (free pointer)
model_aliases = Table(
    "model_aliases",
    metadata,
    Column("model_id", Integer, primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("version", Integer, nullable=False),
    Column("revision", Integer, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Column("updated_by", String(255), nullable=False),
)

model_evaluations = Table(
    "model_evaluations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("dataset", String(255), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("task", String(16), nullable=False),
    Column("num_rows", BigInteger, nullable=False),
    Column("result", Text, nullable=False),  # JSON: metrics, slices, confusion matrix
    Column("created_by", String(255), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Index("ix_model_evaluations_model_version", "model_id", "version"),
)

approval_requests = Table(
    "approval_requests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("environment", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # pending | approved | rejected
    Column("requested_by", String(255), nullable=False),
    Column("requested_ms", BigInteger, nullable=False),
    Column("reason", Text, nullable=True),
    Column("gates", Text, nullable=True),  # JSON gate results at request time
    Column("decided_by", String(255), nullable=True),
    Column("decided_ms", BigInteger, nullable=True),
    Column("decision_reason", Text, nullable=True),
    Index("ix_approval_requests_model_status", "model_id", "status"),
)

model_events = Table(
    "model_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, nullable=False),
    Column("model", String(255), nullable=False),
    # register | promote | rollback | alias | unalias | request | approve | reject | archive | unarchive | delete
    Column("action", String(16), nullable=False),
    Column("target", String(64), nullable=True),  # environment or alias name
    Column("from_version", Integer, nullable=True),
    Column("to_version", Integer, nullable=True),
    # applied | refused | conflict | pending | forced
    Column("outcome", String(16), nullable=False),
    Column("user", String(255), nullable=False),
    Column("ts_ms", BigInteger, nullable=False),
    Column("reason", Text, nullable=True),
    Column("gates", Text, nullable=True),  # JSON
    Index("ix_model_events_model_id", "model_id", "id"),
)

# The audit log refuses UPDATE and DELETE in the database itself (migration 0004 does the same).
for _event in ("UPDATE", "DELETE"):
    event.listen(
        model_events,
        "after_create",
        DDL(
            f"CREATE TRIGGER model_events_no_{_event.lower()} BEFORE {_event} ON model_events "
            "BEGIN SELECT RAISE(ABORT, 'model_events is append-only'); END"
        ).execute_if(dialect="sqlite"),
    )
event.listen(
    model_events,
    "after_create",
    DDL(
        "CREATE FUNCTION model_events_append_only() RETURNS trigger AS $$ "
        "BEGIN RAISE EXCEPTION 'model_events is append-only'; END; $$ LANGUAGE plpgsql"
    ).execute_if(dialect="postgresql"),
)
event.listen(
    model_events,
    "after_create",
    DDL(
        "CREATE TRIGGER model_events_append_only BEFORE UPDATE OR DELETE ON model_events "
        "FOR EACH ROW EXECUTE FUNCTION model_events_append_only()"
    ).execute_if(dialect="postgresql"),
)
