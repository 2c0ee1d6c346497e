"""Deployment tables: the declared deployments (their current spec) and every change to them.

A deployment's spec is JSON (routes, weights, stickiness, objectives); ``revision``
counts its changes and is the compare-and-set guard of concurrent writers.
``deployment_events`` is the audit trail: who changed what, why, the spec before
and after.
"""

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text

from keel.store.schema._base import metadata

deployments = Table(
    "deployments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("spec", Text, nullable=False),  # JSON
    Column("revision", Integer, nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_by", String(255), nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Column("deleted_ms", BigInteger, nullable=True),
)

deployment_events = Table(
    "deployment_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("deployment", String(255), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("action", String(32), nullable=False),  # create | set | promote | rollback | auto_rollback | delete
    Column("user", String(255), nullable=False),
    Column("reason", Text, nullable=True),
    Column("spec_before", Text, nullable=True),
    Column("spec_after", Text, nullable=True),
    Column("detail", Text, nullable=True),  # JSON: e.g. the objective breached, the registry transition
    Column("created_ms", BigInteger, nullable=False),
    Index("ix_deployment_events_deployment", "deployment", "id"),
)
