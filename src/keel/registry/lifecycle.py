"""Retiring registered models and versions: archive, restore, delete (a tombstone).

An archived model or version stays loadable by number but can no longer be
promoted, aliased or (for a model) take new versions; ``restore`` undoes it.
A delete is a tombstone: the row, its version number and its lineage remain,
so the runs, lineage queries and logged predictions that name
``churn v3`` keep resolving, while its file references are dropped (``keel gc``
reclaims the blobs no run still holds) and ``load_model`` says it was deleted.
Version numbers are never reused, and registering into a deleted model's name
brings the name back with the next number.

Nothing that an environment or alias holds can be archived or deleted: the
check and the change happen in one transaction that locks the version rows
(PostgreSQL), so a promotion racing an archive either lands first (and the
archive is refused) or fails. Every change is one audited ``model_events`` row.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from keel.errors import ConflictError, ValidationError
from keel.models.loader import model_id, version_row
from keel.registry.audit import append_event
from keel.registry.events import emit
from keel.registry.versions import check_model_name, lifecycle_status
from keel.store.metadata import get_metadata_store, now_ms
from keel.store.schema import artifacts
from keel.store.schema.registry import model_aliases, model_versions, registered_models


def _user() -> str:
    from keel.config import settings

    return str(settings().acting_user)


def _refuse_held(conn: sa.Connection, mid: int, name: str, what: str, version: int | None) -> None:
    q = sa.select(model_aliases.c.name, model_aliases.c.kind, model_aliases.c.version).where(model_aliases.c.model_id == mid)
    if version is not None:
        q = q.where(model_aliases.c.version == version)
    held = conn.execute(q.order_by(model_aliases.c.kind.desc(), model_aliases.c.name)).all()
    if not held:
        return
    where = ", ".join(f"{k} {n!r} (v{v})" for n, k, v in held)
    subject = f"{name} v{version}" if version is not None else f"Model {name!r}"
    envs = [n for n, k, _v in held if k == "environment"]
    aliases = [n for n, k, _v in held if k == "alias"]
    steps = []
    if envs:
        steps.append(f"promote another version into {', '.join(envs)} (or `keel models rollback {name} --env {envs[0]}`)")
    if aliases:
        steps.append(f"remove the alias (`keel models alias {name} {aliases[0]} --delete`)")
    raise ConflictError(
        f"{subject} cannot be {what}: it is held by {where}.",
        hint="First " + " and ".join(steps) + ".",
        held=[n for n, _k, _v in held],
    )


def _locked_version(conn: sa.Connection, mid: int, name: str, version: int) -> Any:
    version_row(conn, mid, name, int(version))  # a clear NotFoundError for a wrong number
    return conn.execute(
        sa.select(model_versions).where(model_versions.c.model_id == mid, model_versions.c.version == int(version)).with_for_update()
    ).one()


def _check_version(version: Any) -> int:
    if isinstance(version, bool) or not isinstance(version, int | str) or not str(version).isdigit():
        raise ValidationError(f"Version {version!r} is not a version number.", hint="Pass the number, e.g. 3 (see `keel models show NAME`).")
    return int(version)


def _change(name: str, version: Any, action: str, reason: str | None) -> dict[str, Any]:
    check_model_name(name)
    v = None if version is None else _check_version(version)
    user = _user()
    with get_metadata_store().write() as conn:
        mid = model_id(conn, name)
        model = conn.execute(sa.select(registered_models).where(registered_models.c.id == mid).with_for_update()).one()
        if v is not None:
            row = _locked_version(conn, mid, name, v)
            state = lifecycle_status(row)
        else:
            # lock every version row, so that no promotion of one of them slips in meanwhile
            conn.execute(sa.select(model_versions.c.id).where(model_versions.c.model_id == mid).with_for_update()).all()
            state = lifecycle_status(model)
        subject = f"{name} v{v}" if v is not None else f"Model {name!r}"
        if state == "deleted":
            raise ConflictError(f"{subject} is already deleted.", hint="A deleted model or version stays a tombstone; nothing to do.")
        table, where = (model_versions, model_versions.c.id == row.id) if v is not None else (registered_models, registered_models.c.id == mid)
        if action == "unarchive":
            if state != "archived":
                raise ConflictError(f"{subject} is not archived.", hint="Only archived models and versions can be restored.")
            conn.execute(sa.update(table).where(where).values(archived_ms=None))
        else:
            if action == "archive" and state == "archived":
                raise ConflictError(f"{subject} is already archived.", hint=f"Restore it with `keel models archive {name}{'' if v is None else f' {v}'} --restore`.")
            _refuse_held(conn, mid, name, "archived" if action == "archive" else "deleted", v)
            ts = now_ms()
            if action == "archive":
                conn.execute(sa.update(table).where(where).values(archived_ms=ts))
            else:
                conn.execute(sa.update(table).where(where).values(deleted_ms=ts))
                ids = [row.id] if v is not None else list(conn.execute(sa.select(model_versions.c.id).where(model_versions.c.model_id == mid)).scalars())
                if v is None:
                    conn.execute(sa.update(model_versions).where(model_versions.c.model_id == mid, model_versions.c.deleted_ms.is_(None)).values(deleted_ms=ts))
                # release the files: `keel gc` keeps blobs a run still references
                conn.execute(sa.delete(artifacts).where(artifacts.c.owner_kind == "model_version", artifacts.c.owner_id.in_([str(i) for i in ids])))
        conn.execute(sa.update(registered_models).where(registered_models.c.id == mid).values(updated_ms=now_ms()))
        event = append_event(conn, mid, name, action, None, v, v, "applied", user, reason)
    emit(event)
    return event


def archive_version(name: str, version: int, *, reason: str | None = None) -> dict[str, Any]:
    """Archive a version: still loadable by number, never promoted or aliased again. Returns the audit event."""
    return _change(name, version, "archive", reason)


def archive_model(name: str, *, reason: str | None = None) -> dict[str, Any]:
    """Archive a registered model: it takes no new versions, promotions or aliases until restored."""
    return _change(name, None, "archive", reason)


def restore_version(name: str, version: int, *, reason: str | None = None) -> dict[str, Any]:
    """Undo :func:`archive_version`."""
    return _change(name, version, "unarchive", reason)


def restore_model(name: str, *, reason: str | None = None) -> dict[str, Any]:
    """Undo :func:`archive_model`."""
    return _change(name, None, "unarchive", reason)


def delete_version(name: str, version: int, *, reason: str | None = None) -> dict[str, Any]:
    """Delete a version, leaving a tombstone: its record and lineage keep resolving, its files are released."""
    return _change(name, version, "delete", reason)


def delete_model(name: str, *, reason: str | None = None) -> dict[str, Any]:
    """Delete a registered model and every version as tombstones (refused while any is in an environment or alias)."""
    return _change(name, None, "delete", reason)
