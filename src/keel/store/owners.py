"""Owners: the users who own a registered model, feature view, contract, monitor or deployment.

An object has a list of owners (it replaced the registered model's single
``owner`` string; migration 0008_auth made the old value the one owner). The
first owner is recorded when the object is created (the acting user, or the
owner a definition declares); :func:`add_owners` / :func:`remove_owners`
change the list, and an object never loses its last owner.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa

from keel.errors import NotFoundError, ValidationError, did_you_mean
from keel.store.metadata import get_metadata_store, insert_ignore, now_ms
from keel.store.schema.auth import owners

OWNER_KINDS = ("model", "feature_view", "contract", "monitor", "deployment", "retraining")


def check_kind(kind: str) -> str:
    if kind not in OWNER_KINDS:
        raise ValidationError(f"Unknown owned kind {kind!r}." + did_you_mean(str(kind), OWNER_KINDS), hint=f"Kinds with owners: {', '.join(OWNER_KINDS)}.")
    return kind


def _acting() -> str:
    from keel.config import settings

    return str(settings().acting_user)


def _clean(users: Iterable[str]) -> list[str]:
    from keel.store.users import check_user_name

    out: list[str] = []
    for u in users:
        u = str(u).strip()
        if u and u not in out:
            out.append(check_user_name(u))
    return out


def seed_owners(conn: sa.Connection, kind: str, name: str, users: Sequence[str]) -> None:
    """Inside a caller's transaction: give a new object its first owners, unless it has some already."""
    if conn.execute(sa.select(owners.c.user).where(owners.c.kind == kind, owners.c.name == name).limit(1)).first() is not None:
        return
    by, t = _acting(), now_ms()
    for user in _clean(users) or [by]:
        insert_ignore(conn, owners, {"kind": kind, "name": name, "user": user, "added_ms": t, "added_by": by}, ["kind", "name", "user"])


def owners_of(kind: str, name: str) -> list[str]:
    """The owners of one object, in the order they were added."""
    return owners_of_many(kind, [name]).get(name, [])


def owners_of_many(kind: str, names: Iterable[str], conn: sa.Connection | None = None) -> dict[str, list[str]]:
    """{name: owners} for many objects of one kind in one query (objects without owners are absent)."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return {}
    q = (sa.select(owners.c.name, owners.c.user).where(owners.c.kind == kind, owners.c.name.in_(wanted))
         .order_by(owners.c.name, owners.c.added_ms, owners.c.user))
    if conn is None:
        with get_metadata_store().read() as c:
            rows = c.execute(q).all()
    else:
        rows = conn.execute(q).all()
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(r.name, []).append(r.user)
    return out


def _exists(conn: sa.Connection, kind: str, name: str) -> bool:
    from keel.store.schema.features import feature_objects
    from keel.store.schema.registry import registered_models

    if kind == "model":
        q = sa.select(registered_models.c.id).where(registered_models.c.name == name)
    elif kind == "feature_view":
        q = sa.select(feature_objects.c.name).where(feature_objects.c.name == name, feature_objects.c.kind.like("%view%"))
    elif kind == "deployment":
        from keel.store.schema.deployments import deployments

        q = sa.select(deployments.c.name).where(deployments.c.name == name, deployments.c.deleted_ms.is_(None))
    else:  # contracts and keel.yaml monitors live in the project's files; any name may be owned
        return True
    return conn.execute(q.limit(1)).first() is not None


def add_owners(kind: str, name: str, users: Iterable[str]) -> list[str]:
    """Add owners to an object; returns its owners afterwards."""
    check_kind(kind)
    new = _clean(users)
    if not new:
        raise ValidationError("Name at least one user to add as an owner.")
    by, t = _acting(), now_ms()
    with get_metadata_store().write() as conn:
        if not _exists(conn, kind, name):
            raise NotFoundError(f"No {kind.replace('_', ' ')} named {name!r}.", hint="Check the name (keel models ls, keel features ls).")
        for user in new:
            insert_ignore(conn, owners, {"kind": kind, "name": name, "user": user, "added_ms": t, "added_by": by}, ["kind", "name", "user"])
        return owners_of_many(kind, [name], conn).get(name, [])


def remove_owners(kind: str, name: str, users: Iterable[str]) -> list[str]:
    """Remove owners from an object; refused when it would leave none."""
    check_kind(kind)
    gone = _clean(users)
    with get_metadata_store().write() as conn:
        current = owners_of_many(kind, [name], conn).get(name, [])
        missing = [u for u in gone if u not in current]
        if missing:
            raise NotFoundError(f"{missing[0]!r} is not an owner of {kind.replace('_', ' ')} {name!r}; its owners are {', '.join(current) or 'none'}.")
        if current and not [u for u in current if u not in gone]:
            raise ValidationError(f"{kind.replace('_', ' ').capitalize()} {name!r} would have no owner left.", hint="Add the new owner first, then remove the old one.")
        conn.execute(sa.delete(owners).where(owners.c.kind == kind, owners.c.name == name, owners.c.user.in_(gone)))
        return [u for u in current if u not in gone]
