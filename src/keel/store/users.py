"""Users, API tokens and roles in the metadata store: who may call a keel server, and as what.

Roles rank ``viewer < member < approver < admin``. A user has one global role and
may hold a higher one on a single experiment or registered model
(:func:`grant`); the effective role on an object is the highest of the two
(:func:`role_on`). A token carries a scope (``read < write < approve < admin``):
the most it allows, whatever its user's role.

Passwords are argon2id hashes (argon2-cffi). A token is ``keel_<id>_<secret>``:
the id finds the row, the SHA-256 of the secret is compared in constant time;
the plaintext is returned once, by :func:`create_token`, and never stored.

This module sits in ``store`` so that the registry (the approval rule) and the
server share it; the HTTP side (headers, rate limits, CSRF) is
``keel.server.auth``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from keel.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    ValidationError,
    did_you_mean,
    missing_extra,
)
from keel.store.metadata import get_metadata_store, insert_ignore, ms_to_datetime, now_ms, upsert
from keel.store.schema.auth import api_tokens, auth_refusals, object_roles, users

Role = Literal["viewer", "member", "approver", "admin"]
Scope = Literal["read", "write", "approve", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "member", "approver", "admin")
SCOPES: tuple[Scope, ...] = ("read", "write", "approve", "admin")
# The role an action needs; a scope allows the actions up to its own.
ACTION_ROLE: dict[str, Role] = {"read": "viewer", "write": "member", "approve": "approver", "admin": "admin"}
OBJECT_KINDS = ("experiment", "model")
USER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@+\-]{0,127}$"  # also the API's schema for user names
_USER = re.compile(USER_PATTERN)
_TOKEN = re.compile(r"^keel_(?P<id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_\-]{20,})$")
DEFAULT_TOKEN_DAYS = 90
MAX_TOKEN_DAYS = 3650


def rank(role: str | None) -> int:
    """0 for no role, 1 (viewer) .. 4 (admin)."""
    return ROLES.index(role) + 1 if role in ROLES else 0


def scope_rank(scope: str | None) -> int:
    return SCOPES.index(scope) + 1 if scope in SCOPES else 0


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise ValidationError(f"Unknown role {role!r}." + did_you_mean(str(role), ROLES), hint=f"Roles are {', '.join(ROLES)}.")
    return role


def check_scope(scope: str) -> Scope:
    if scope not in SCOPES:
        raise ValidationError(f"Unknown token scope {scope!r}." + did_you_mean(str(scope), SCOPES), hint=f"Scopes are {', '.join(SCOPES)}.")
    return scope


def check_user_name(name: str) -> str:
    if not isinstance(name, str) or not _USER.match(name):
        raise ValidationError(
            f"User name {name!r} is not valid.",
            hint="Use letters, digits and . _ - @ + (at most 128 characters), starting with a letter or digit.",
        )
    return name


def _acting() -> str:
    from keel.config import settings

    return str(settings().acting_user)


# -- passwords ---------------------------------------------------------------------

_hasher: Any = None


def _password_hasher() -> Any:
    global _hasher
    if _hasher is None:
        try:
            from argon2 import PasswordHasher
        except ImportError:
            raise missing_extra("argon2-cffi", "server") from None
        _hasher = PasswordHasher()
    return _hasher


def hash_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < 8:
        raise ValidationError("A password needs at least 8 characters.", hint="Choose a longer one (or use a token: keel tokens create).")
    return str(_password_hasher().hash(password))


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches the argon2 ``stored_hash`` (constant time; False for no hash)."""
    if not stored_hash:
        return False
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return bool(_password_hasher().verify(stored_hash, password))
    except (VerificationError, InvalidHashError):
        return False


# -- users ---------------------------------------------------------------------------

@dataclass(frozen=True)
class User:
    name: str
    role: Role
    has_password: bool
    created_time: datetime | None
    created_by: str
    disabled: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "has_password": self.has_password,
                "created_time": self.created_time.isoformat() if self.created_time else None,
                "created_by": self.created_by, "disabled": self.disabled}


def _user(r: Any) -> User:
    return User(r.name, r.role, bool(r.password_hash), ms_to_datetime(r.created_ms), r.created_by, r.disabled_ms is not None)


def add_user(name: str, *, role: str = "member", password: str | None = None) -> User:
    """Create a user (a token-only user when ``password`` is None); ConflictError when it exists."""
    check_user_name(name)
    check_role(role)
    hashed = None if password is None else hash_password(password)
    with get_metadata_store().write() as conn:
        created = insert_ignore(conn, users, {"name": name, "password_hash": hashed, "role": role, "created_ms": now_ms(),
                                              "created_by": _acting(), "disabled_ms": None}, ["name"])
        if not created:
            raise ConflictError(f"User {name!r} already exists.", hint=f"Change its role with `keel users set-role {name} ROLE`.")
        row = conn.execute(sa.select(users).where(users.c.name == name)).one()
    return _user(row)


def get_user(name: str) -> User:
    with get_metadata_store().read() as conn:
        row = conn.execute(sa.select(users).where(users.c.name == name)).first()
        if row is None:
            known = list(conn.execute(sa.select(users.c.name)).scalars())
    if row is None:
        raise NotFoundError(f"No user {name!r}." + did_you_mean(str(name), known), hint="List users with `keel users ls`; add one with `keel users add NAME`.")
    return _user(row)


def list_users() -> list[User]:
    with get_metadata_store().read() as conn:
        return [_user(r) for r in conn.execute(sa.select(users).order_by(users.c.name)).all()]


def has_users() -> bool:
    """Whether any user is defined (roles are then enforced by the registry's approval rule)."""
    with get_metadata_store().read() as conn:
        return conn.execute(sa.select(users.c.name).limit(1)).first() is not None


def set_password(name: str, password: str) -> None:
    hashed = hash_password(password)
    with get_metadata_store().write() as conn:
        if conn.execute(sa.update(users).where(users.c.name == name).values(password_hash=hashed)).rowcount != 1:
            raise NotFoundError(f"No user {name!r}.", hint="Add it with `keel users add NAME`.")


def disable_user(name: str, *, disabled: bool = True) -> User:
    """Disable (or enable again) a user: their password and every token stop working at once."""
    with get_metadata_store().write() as conn:
        n = conn.execute(sa.update(users).where(users.c.name == name).values(disabled_ms=now_ms() if disabled else None)).rowcount
    if n != 1:
        get_user(name)  # raises NotFoundError with suggestions
    return get_user(name)


# -- roles -----------------------------------------------------------------------------

def grant(name: str, role: str, *, experiment: str | None = None, model: str | None = None) -> dict[str, Any]:
    """Set ``name``'s global role, or their role on one experiment or registered model."""
    check_role(role)
    if experiment is not None and model is not None:
        raise ValidationError("Grant a role on an experiment or on a model, not both at once.")
    get_user(name)
    if experiment is None and model is None:
        with get_metadata_store().write() as conn:
            conn.execute(sa.update(users).where(users.c.name == name).values(role=role))
        return {"user": name, "role": role, "scope": "global"}
    kind, obj = ("experiment", experiment) if experiment is not None else ("model", model)
    with get_metadata_store().write() as conn:
        upsert(conn, object_roles, {"kind": kind, "name": obj, "user": name, "role": role, "granted_ms": now_ms(),
                                    "granted_by": _acting()}, ["kind", "name", "user"])
    return {"user": name, "role": role, "scope": kind, kind: obj}


def revoke_role(name: str, *, experiment: str | None = None, model: str | None = None) -> bool:
    """Drop ``name``'s role on one object; True when there was one."""
    kind, obj = ("experiment", experiment) if experiment is not None else ("model", model)
    if obj is None:
        raise ValidationError("Name the experiment or model whose role to revoke.", hint="The global role is changed with set-role.")
    with get_metadata_store().write() as conn:
        return bool(conn.execute(sa.delete(object_roles).where(object_roles.c.kind == kind, object_roles.c.name == obj,
                                                               object_roles.c.user == name)).rowcount)


def roles_of(name: str) -> list[dict[str, Any]]:
    """Every role ``name`` holds: the global one first, then per object."""
    user = get_user(name)
    with get_metadata_store().read() as conn:
        rows = conn.execute(sa.select(object_roles).where(object_roles.c.user == name).order_by(object_roles.c.kind, object_roles.c.name)).all()
    return [{"scope": "global", "role": user.role}] + [{"scope": r.kind, "name": r.name, "role": r.role} for r in rows]


def role_on(name: str, *, global_role: str | None = None, experiment: str | None = None, model: str | None = None) -> Role | None:
    """The highest of ``name``'s global role and their role on the named experiment / model.

    None when the user does not exist or is disabled. Pass ``global_role`` when
    it is already known (it saves a query when no object is named).
    """
    with get_metadata_store().read() as conn:
        if global_role is None:
            row = conn.execute(sa.select(users.c.role, users.c.disabled_ms).where(users.c.name == name)).first()
            if row is None or row.disabled_ms is not None:
                return None
            global_role = row.role
        best: str = global_role
        wanted = [(k, v) for k, v in (("experiment", experiment), ("model", model)) if v is not None]
        if wanted:
            cond = sa.or_(*[sa.and_(object_roles.c.kind == k, object_roles.c.name == v) for k, v in wanted])
            for role in conn.execute(sa.select(object_roles.c.role).where(object_roles.c.user == name, cond)).scalars():
                if rank(role) > rank(best):
                    best = role
    return best  # type: ignore[return-value]


def best_role(name: str, global_role: str) -> Role:
    """The highest role ``name`` holds anywhere (global or on any object)."""
    with get_metadata_store().read() as conn:
        roles = list(conn.execute(sa.select(object_roles.c.role).where(object_roles.c.user == name)).scalars())
    return max([global_role, *roles], key=rank)


# -- tokens ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Token:
    id: str
    user: str
    name: str
    scope: Scope
    created_time: datetime | None
    expires_time: datetime | None
    revoked: bool
    last_used_time: datetime | None

    @property
    def expired(self) -> bool:
        return self.expires_time is not None and self.expires_time.timestamp() * 1000 <= now_ms()

    def to_dict(self) -> dict[str, Any]:
        iso = lambda d: d.isoformat() if d else None  # noqa: E731
        return {"id": self.id, "user": self.user, "name": self.name, "scope": self.scope,
                "created_time": iso(self.created_time), "expires_time": iso(self.expires_time),
                "revoked": self.revoked, "expired": self.expired, "last_used_time": iso(self.last_used_time)}


def _token(r: Any) -> Token:
    return Token(r.id, r.user, r.name, r.scope, ms_to_datetime(r.created_ms), ms_to_datetime(r.expires_ms),
                 r.revoked_ms is not None, ms_to_datetime(r.last_used_ms))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(user: str, *, name: str = "token", scope: str = "write", expires_days: float | None = DEFAULT_TOKEN_DAYS) -> tuple[Token, str]:
    """A new API token for ``user``: (its record, the plaintext, shown this once and never stored).

    ``expires_days=None`` makes a token that does not expire (revoke it when done).
    """
    check_scope(scope)
    if expires_days is not None and not 0 < expires_days <= MAX_TOKEN_DAYS:
        raise ValidationError(f"Token expiry must be a number of days in (0, {MAX_TOKEN_DAYS}], not {expires_days!r}.",
                              hint="e.g. --expires 30d, or --expires never.")
    u = get_user(user)
    if u.disabled:
        raise ValidationError(f"User {user!r} is disabled; it cannot get a token.", hint=f"Enable it with `keel users disable {user} --enable`.")
    tid, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    created = now_ms()
    expires = None if expires_days is None else created + int(expires_days * 86_400_000)
    with get_metadata_store().write() as conn:
        conn.execute(sa.insert(api_tokens).values(id=tid, user=user, name=name[:255], secret_hash=_digest(secret), scope=scope,
                                                  created_ms=created, expires_ms=expires, revoked_ms=None, last_used_ms=None))
        row = conn.execute(sa.select(api_tokens).where(api_tokens.c.id == tid)).one()
    return _token(row), f"keel_{tid}_{secret}"


def list_tokens(user: str | None = None) -> list[Token]:
    q = sa.select(api_tokens).order_by(api_tokens.c.created_ms)
    if user is not None:
        q = q.where(api_tokens.c.user == user)
    with get_metadata_store().read() as conn:
        return [_token(r) for r in conn.execute(q).all()]


def get_token(token_id: str) -> Token:
    with get_metadata_store().read() as conn:
        row = conn.execute(sa.select(api_tokens).where(api_tokens.c.id == token_id)).first()
    if row is None:
        raise NotFoundError(f"No token with id {token_id!r}.", hint="List tokens with `keel tokens ls`.")
    return _token(row)


def revoke_token(token_id: str) -> Token:
    """Revoke a token by its id (the ``keel_<id>_`` part); it stops working at once."""
    with get_metadata_store().write() as conn:
        n = conn.execute(sa.update(api_tokens).where(api_tokens.c.id == token_id, api_tokens.c.revoked_ms.is_(None))
                         .values(revoked_ms=now_ms())).rowcount
    token = get_token(token_id)
    if n == 0 and not token.revoked:  # pragma: no cover - raced with nothing
        raise ConflictError(f"Token {token_id} could not be revoked.")
    return token


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the user, their global role and (for a token) its id and scope."""

    user: str
    role: Role
    token_id: str | None = None
    scope: Scope = "admin"


def token_id_of(token: str) -> str | None:
    """The public id of a well-formed token (for logs and audit), or None."""
    m = _TOKEN.match(token or "")
    return m["id"] if m else None


def authenticate_token(token: str) -> Principal:
    """The principal of a bearer token; AuthenticationError when it is malformed, unknown, expired or revoked."""
    m = _TOKEN.match(token or "")
    if m is None:
        raise AuthenticationError("The bearer token is not a keel token.", hint="Create one with `keel tokens create` or `keel login`.")
    store = get_metadata_store()
    with store.read() as conn:
        row = conn.execute(
            sa.select(api_tokens.c.secret_hash, api_tokens.c.user, api_tokens.c.scope, api_tokens.c.expires_ms, api_tokens.c.revoked_ms,
                      api_tokens.c.last_used_ms, users.c.role, users.c.disabled_ms)
            .join(users, users.c.name == api_tokens.c.user).where(api_tokens.c.id == m["id"])
        ).first()
    if row is None or not hmac.compare_digest(row.secret_hash, _digest(m["secret"])):
        raise AuthenticationError(f"Token {m['id']} is not valid.", hint="Create one with `keel tokens create` or `keel login`.")
    t = now_ms()
    if row.revoked_ms is not None:
        raise AuthenticationError(f"Token {m['id']} was revoked.", hint="Create a new one with `keel login`.")
    if row.expires_ms is not None and row.expires_ms <= t:
        raise AuthenticationError(f"Token {m['id']} expired.", hint="Create a new one with `keel login`.")
    if row.disabled_ms is not None:
        raise AuthenticationError(f"User {row.user!r} is disabled.", hint="Ask an admin to enable it.")
    if row.last_used_ms is None or t - row.last_used_ms > 60_000:  # at most one write a minute per token
        with store.write() as conn:
            conn.execute(sa.update(api_tokens).where(api_tokens.c.id == m["id"]).values(last_used_ms=t))
    return Principal(row.user, row.role, m["id"], row.scope)


def password_record(name: str) -> tuple[str | None, Role, bool] | None:
    """(argon2 hash, global role, disabled) of ``name``, or None when there is no such user."""
    with get_metadata_store().read() as conn:
        row = conn.execute(sa.select(users.c.password_hash, users.c.role, users.c.disabled_ms).where(users.c.name == name)).first()
    return None if row is None else (row.password_hash, row.role, row.disabled_ms is not None)


def authenticate_password(name: str, password: str) -> Principal:
    """The principal for a user name and password; AuthenticationError when they do not match."""
    record = password_record(name)
    if record is None:
        _password_hasher().hash("x" * 12)  # as slow as a real check: no user enumeration by timing
        raise AuthenticationError("Wrong user name or password.", hint="Check them, or ask an admin (`keel users ls`).")
    stored, role, disabled = record
    if not verify_password(stored, password):
        raise AuthenticationError("Wrong user name or password.", hint="Check them, or ask an admin (`keel users ls`).")
    if disabled:
        raise AuthenticationError(f"User {name!r} is disabled.", hint="Ask an admin to enable it.")
    return Principal(name, role)


# -- refusals ----------------------------------------------------------------------------

def record_refusal(*, status: int, method: str, route: str, reason: str, user: str | None = None,
                   action: str | None = None, client: str | None = None) -> None:
    """Audit one refused request (never its credentials: pass only names, the route and why)."""
    from keel.errors import redact

    with get_metadata_store().write() as conn:
        conn.execute(sa.insert(auth_refusals).values(
            ts_ms=now_ms(), user=user, status=status, action=action, method=method[:8], route=redact(route)[:1024],
            client=client, reason=redact(reason)[:4000],
        ))


def refusals(limit: int = 100, user: str | None = None) -> list[dict[str, Any]]:
    """The newest refused requests, newest first."""
    q = sa.select(auth_refusals).order_by(auth_refusals.c.id.desc()).limit(limit)
    if user is not None:
        q = q.where(auth_refusals.c.user == user)
    with get_metadata_store().read() as conn:
        rows = conn.execute(q).all()
    return [{"time": ms_to_datetime(r.ts_ms), "user": r.user, "status": r.status, "action": r.action, "method": r.method,
             "route": r.route, "client": r.client, "reason": r.reason} for r in rows]
