"""Retraining policy tables: the declared policies (current spec and state), every declared version, every event.

``retraining_policies`` holds a policy's current declaration, whether it is
paused, its state (failures in a row, back-off, the last retrain) and the lease
of the process retraining it now (one conditional UPDATE claims it, so two
triggers at once start one retrain). ``retraining_policy_versions`` keeps each
declaration; ``retraining_events`` is the audit trail of what fired, what ran
and what came of it, with the acting user.
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from keel.store.schema._base import metadata

retraining_policies = Table(
    "retraining_policies",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("model", String(255), nullable=False),
    Column("version", Integer, nullable=False),  # the current declaration
    Column("spec", Text, nullable=False),  # JSON
    Column("origin", String(16), nullable=False),  # code | keel.yaml
    Column("paused", Boolean, nullable=False),
    Column("state", Text, nullable=False),  # JSON: failures, backoff_until_ms, last_started_ms, last_ended_ms, pending canary
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_ms", BigInteger, nullable=True),
    Column("created_by", String(255), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

retraining_policy_versions = Table(
    "retraining_policy_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("policy", String(255), nullable=False),
    Column("version", Integer, nullable=False),
    Column("spec", Text, nullable=False),  # JSON
    Column("declared_by", String(255), nullable=False),
    Column("declared_ms", BigInteger, nullable=False),
    UniqueConstraint("policy", "version", name="uq_retraining_policy_versions"),
)

retraining_events = Table(
    "retraining_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("policy", String(255), nullable=False),
    Column("retrain", String(32), nullable=True),  # one id for the steps of one retrain
    Column("action", String(32), nullable=False),  # declare | trigger | coalesced | skipped | pipeline | gates | promote | canary | ...
    Column("outcome", String(32), nullable=False),  # started | finished | failed | refused | applied | pending | dry-run | ...
    Column("user", String(255), nullable=False),
    Column("trigger", Text, nullable=True),  # JSON: the event that fired
    Column("run_id", String(32), nullable=True),
    Column("model_version", Integer, nullable=True),
    Column("detail", Text, nullable=True),  # JSON
    Column("ts_ms", BigInteger, nullable=False),
    Index("ix_retraining_events_policy", "policy", "id"),
)
