"""Identity tables: users, API tokens, per-object roles, owners and the refusal audit.

Passwords are stored as argon2 hashes, tokens as the SHA-256 of their secret
(a token is 256 random bits, so a fast hash is enough; a password is not).
``object_roles`` grants a role on one experiment or registered model;
``owners`` lists the users who own a registered model, feature view, contract
or monitor (it replaced ``registered_models.owner``, migration 0008_auth).
``auth_refusals`` records every refused request (who, what, route, when),
never a credential.
"""

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text

from keel.store.schema._base import metadata

users = Table(
    "users",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("password_hash", String(255), nullable=True),  # argon2id; NULL: token-only user
    Column("role", String(16), nullable=False),  # viewer | member | approver | admin (global)
    Column("created_ms", BigInteger, nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("disabled_ms", BigInteger, nullable=True),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),  # the public part of the token (keel_<id>_<secret>)
    Column("user", String(255), nullable=False, index=True),
    Column("name", String(255), nullable=False),
    Column("secret_hash", String(64), nullable=False),  # sha256 hex of the secret part
    Column("scope", String(16), nullable=False),  # read | write | approve | admin: the most it allows
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=True),
    Column("revoked_ms", BigInteger, nullable=True),
    Column("last_used_ms", BigInteger, nullable=True),
)

# kind: experiment | model
object_roles = Table(
    "object_roles",
    metadata,
    Column("kind", String(16), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("user", String(255), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("granted_ms", BigInteger, nullable=False),
    Column("granted_by", String(255), nullable=False),
    Index("ix_object_roles_user", "user"),
)

# kind: model | feature_view | contract | monitor
owners = Table(
    "owners",
    metadata,
    Column("kind", String(16), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("user", String(255), primary_key=True),
    Column("added_ms", BigInteger, nullable=False),
    Column("added_by", String(255), nullable=False),
)

auth_refusals = Table(
    "auth_refusals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts_ms", BigInteger, nullable=False, index=True),
    Column("user", String(255), nullable=True),  # NULL: no or unknown credentials
    Column("status", Integer, nullable=False),  # 401 | 403 | 429
    Column("action", String(16), nullable=True),
    Column("method", String(8), nullable=False),
    Column("route", String(1024), nullable=False),
    Column("client", String(64), nullable=True),
    Column("reason", Text, nullable=False),
)
