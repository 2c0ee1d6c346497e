"""The audit log: one append-only ``model_events`` row per transition attempt.

Applied, forced, refused, conflicting and pending promotions, rollbacks,
aliases, approvals and registrations are all recorded with who, when, from
which version to which, why and the gate results. Rows are only ever inserted.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from keel.store.metadata import get_metadata_store, ms_to_datetime, now_ms
from keel.store.schema.registry import model_events


def append_event(
    conn: sa.Connection,
    model_id: int,
    model: str,
    action: str,
    target: str | None,
    from_version: int | None,
    to_version: int | None,
    outcome: str,
    user: str,
    reason: str | None = None,
    gates: Any = None,
) -> dict[str, Any]:
    """Insert one event row in the caller's transaction; returns it as a dict."""
    values = {
        "model_id": model_id, "model": model, "action": action, "target": target, "from_version": from_version,
        "to_version": to_version, "outcome": outcome, "user": user, "ts_ms": now_ms(), "reason": reason,
        "gates": None if gates is None else json.dumps(gates, default=str),
    }
    eid = conn.execute(sa.insert(model_events).values(**values)).inserted_primary_key[0]  # type: ignore[index]
    return _as_dict({**values, "id": int(eid)})


def record_event(model_id: int, model: str, action: str, target: str | None, from_version: int | None, to_version: int | None,
                 outcome: str, user: str, reason: str | None = None, gates: Any = None) -> dict[str, Any]:
    """Append an event in its own transaction (refused and conflicting attempts)."""
    with get_metadata_store().write() as conn:
        return append_event(conn, model_id, model, action, target, from_version, to_version, outcome, user, reason, gates)


def _as_dict(r: Any) -> dict[str, Any]:
    d = dict(r)
    d["time"] = ms_to_datetime(d.get("ts_ms"))
    if isinstance(d.get("gates"), str):
        d["gates"] = json.loads(d["gates"])
    return d


def history(model: str | None = None, *, since_id: int = 0, target: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Events in the order they happened (``since_id`` for polling from another process)."""
    q = sa.select(model_events).where(model_events.c.id > since_id)
    if model is not None:
        q = q.where(model_events.c.model == model)
    if target is not None:
        q = q.where(model_events.c.target == target)
    q = q.order_by(model_events.c.id)
    if limit:
        q = q.limit(limit)
    with get_metadata_store().read() as conn:
        return [_as_dict(r._mapping) for r in conn.execute(q)]


def recent(model: str, *, limit: int = 50, before_id: int | None = None) -> list[dict[str, Any]]:
    """A model's latest events, newest first, ``limit`` at a time (``before_id`` pages back): the UI's audit trail."""
    q = sa.select(model_events).where(model_events.c.model == model)
    if before_id is not None:
        q = q.where(model_events.c.id < int(before_id))
    q = q.order_by(model_events.c.id.desc()).limit(max(1, min(int(limit), 1000)))
    with get_metadata_store().read() as conn:
        return [_as_dict(r._mapping) for r in conn.execute(q)]


def latest_gates(model: str, versions: list[int] | None = None) -> dict[int, dict[str, Any]]:
    """{version: the newest event that evaluated its gates (promote or request, any outcome)} of ``model``."""
    newest = (sa.select(sa.func.max(model_events.c.id).label("id"))
              .where(model_events.c.model == model, model_events.c.gates.is_not(None), model_events.c.to_version.is_not(None),
                     model_events.c.action.in_(("promote", "request")))
              .group_by(model_events.c.to_version))
    if versions is not None:
        newest = newest.where(model_events.c.to_version.in_([int(v) for v in versions]))
    with get_metadata_store().read() as conn:
        rows = conn.execute(sa.select(model_events).where(model_events.c.id.in_(newest))).all()
    return {int(r.to_version): _as_dict(r._mapping) for r in rows}
