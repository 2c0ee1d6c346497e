"""Triggers and the scheduler loop: what starts pipeline runs without a person.

Events: a cron minute passed; a watched file or folder's content fingerprint
changed (a new batch of data); a model was registered (the registry's
``model_events`` rows, read only when that table exists). Each started run is
tagged with what started it (``keel.trigger``, ``keel.trigger.event``) and gets
the event as its ``event`` parameter when the pipeline declares one.

A trigger is refused when the pipeline it starts produces its own event
(``produces=`` on the pipeline or its steps), directly or through a chain of
other triggers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from keel.errors import KeelError, ValidationError
from keel.pipelines.schedule import Cron, Schedule, list_schedules, save_state
from keel.store.metadata import get_metadata_store


@dataclass
class Fired:
    schedule: str
    run_id: str | None
    status: str  # finished | failed
    event: dict[str, Any]
    error: str | None = None


# -- events ------------------------------------------------------------------------

def source_fingerprint(spec: str) -> str | None:
    from keel.pipelines.cache import content_fingerprint

    path = Path(spec)
    if not path.exists():
        return None
    return content_fingerprint(path)


def _model_events_table(conn: sa.Connection) -> sa.Table | None:
    if not sa.inspect(conn).has_table("model_events"):
        return None
    return sa.Table("model_events", sa.MetaData(), autoload_with=conn)


def _last_model_event(spec: str) -> int:
    with get_metadata_store().read() as conn:
        t = _model_events_table(conn)
        if t is None:
            return 0
        return int(conn.execute(sa.select(sa.func.max(t.c.id)).where(t.c.model == spec, t.c.action == "register")).scalar() or 0)


def initial_state(kind: str, spec: str) -> dict[str, Any]:
    """What the trigger has seen when it is added (only later changes fire it)."""
    if kind == "source":
        return {"fingerprint": source_fingerprint(spec)}
    return {"last_event": _last_model_event(spec)}


def pending_event(s: Schedule, now: datetime) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(the event to fire, or None; the schedule's new state)."""
    state = dict(s.state)
    if s.kind == "cron":
        checked = datetime.fromtimestamp(state.get("checked_ms", 0) / 1000, tz=UTC)
        due = Cron(s.spec).next_after(checked)
        state["checked_ms"] = int(now.timestamp() * 1000)
        if due <= now:
            return {"kind": "cron", "cron": s.spec, "due": due.isoformat()}, state
        return None, state
    if s.kind == "source":
        fp = source_fingerprint(s.spec)
        if fp is not None and fp != state.get("fingerprint"):
            state["fingerprint"] = fp
            return {"kind": "source", "path": s.spec, "fingerprint": fp}, state
        return None, state
    if s.kind == "model":
        last = int(state.get("last_event", 0))
        with get_metadata_store().read() as conn:
            t = _model_events_table(conn)
            row = None
            if t is not None:
                row = conn.execute(
                    sa.select(t.c.id, t.c.to_version).where(t.c.model == s.spec, t.c.action == "register", t.c.id > last).order_by(t.c.id.desc()).limit(1)
                ).first()
        if row is not None:
            state["last_event"] = int(row.id)
            return {"kind": "model", "model": s.spec, "version": row.to_version, "event_id": int(row.id)}, state
        return None, state
    raise ValidationError(f"Schedule {s.name} has unknown kind {s.kind!r}.")


# -- loops -------------------------------------------------------------------------

def products(pipeline_ref: str, params: Mapping[str, Any]) -> list[str]:
    """What a pipeline declares it writes: its own ``produces`` and its steps'."""
    from keel.pipelines.pipeline import load_pipeline

    pipe = load_pipeline(pipeline_ref)
    out = list(pipe.produces)
    try:
        call = dict(params)
        if "event" in pipe.signature.parameters and "event" not in call:
            call["event"] = None
        graph = pipe.graph(**call)
        for node in graph.nodes.values():
            out.extend(node.step.produces)
    except KeelError:
        pass
    return out


def _matches(kind: str, spec: str, product: str) -> bool:
    if kind == "model":
        return product == f"model:{spec}"
    if product.startswith("model:"):
        return False
    a, b = Path(spec).resolve(), Path(product).resolve()
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def refuse_loops(name: str, pipeline_ref: str, kind: str, spec: str, params: Mapping[str, Any]) -> None:
    """Raise when adding this trigger would let a pipeline start itself."""
    triggers = [(s.name, s.pipeline, s.kind, s.spec, s.params) for s in list_schedules() if s.kind != "cron"]
    triggers.append((name, pipeline_ref, kind, spec, dict(params)))
    made = {p: products(p, prm) for _, p, _, _, prm in triggers}
    # edge: pipeline A -> pipeline B when A produces the event of a trigger that starts B
    edges: dict[str, list[tuple[str, str]]] = {}
    for tname, target, tkind, tspec, _ in triggers:
        for source, prods in made.items():
            if any(_matches(tkind, tspec, p) for p in prods):
                edges.setdefault(source, []).append((target, tname))
    path: list[str] = []

    def reaches(node: str, goal: str, seen: set[str]) -> bool:
        for nxt, via in edges.get(node, []):
            if nxt in seen:
                continue
            path.append(f"{node} -[{via}]-> {nxt}")
            if nxt == goal or reaches(nxt, goal, seen | {nxt}):
                return True
            path.pop()
        return False

    if reaches(pipeline_ref, pipeline_ref, set()):
        raise ValidationError(
            f"Trigger {name!r} would start a loop: {'; '.join(path)}.",
            hint=f"Pipeline {pipeline_ref} produces the event that starts it. Watch another source, or use a cron schedule.",
        )


# -- the scheduler -----------------------------------------------------------------

def tick(now: datetime | None = None, *, engine: str | None = None) -> list[Fired]:
    """Check every schedule once and start the runs that are due."""
    from keel.pipelines.pipeline import load_pipeline
    from keel.pipelines.runner import StepFailed, run

    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise ValidationError(f"Scheduler clock {now} has no timezone.", hint="Pass an aware UTC time, e.g. 2026-01-01T03:00:00+00:00.")
    fired: list[Fired] = []
    for s in list_schedules():
        if not s.enabled:
            continue
        event, state = pending_event(s, now)
        if event is None:
            save_state(s.name, state)
            continue
        params = dict(s.params)
        tags = {"keel.trigger.kind": s.kind, "keel.trigger.event": json.dumps(event, default=str)[:5000], "keel.schedule": s.name}
        run_id: str | None = None
        try:
            pipe = load_pipeline(s.pipeline)
            if "event" in pipe.signature.parameters:
                params["event"] = event
            result = run(pipe, params, trigger=f"schedule:{s.name}", tags=tags, engine=engine)
            run_id = result.run_id
            fired.append(Fired(s.name, run_id, "finished", event))
        except StepFailed as exc:
            run_id = exc.result.run_id
            fired.append(Fired(s.name, run_id, "failed", event, str(exc)))
        except KeelError as exc:
            fired.append(Fired(s.name, None, "failed", event, str(exc)))
        save_state(s.name, state, fired_run=run_id or "")
    return fired


def run_scheduler(
    *,
    once: bool = False,
    until: datetime | None = None,
    poll_seconds: float = 30.0,
    clock: Callable[[], datetime] | None = None,
    engine: str | None = None,
    on_fire: Callable[[Fired], None] | None = None,
) -> list[Fired]:
    """Check the schedules every ``poll_seconds`` until ``until`` (or once); returns what fired."""
    clock = clock or (lambda: datetime.now(UTC))
    fired: list[Fired] = []
    while True:
        now = clock()
        if until is not None and now >= until:
            break
        for f in tick(now, engine=engine):
            fired.append(f)
            if on_fire:
                on_fire(f)
        if once:
            break
        time.sleep(poll_seconds)
    return fired
