"""Schedules: start a job on a cron expression or when an event arrives.

``keel schedule add NAME --cron "0 3 * * *" MODULE:pipeline`` stores a row in
``schedules``; ``keel scheduler`` (see :mod:`keel.pipelines.triggers`) checks
every row and starts the jobs. A schedule names a job kind (``pipeline`` by
default; monitors and retraining policies register theirs, see
:mod:`keel.pipelines.jobs`) and its target. Cron expressions are the usual
five fields (minute hour day-of-month month day-of-week, UTC) or ``@daily``
and the like, parsed by croniter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from keel.errors import ConflictError, NotFoundError, ValidationError, did_you_mean
from keel.store.metadata import get_metadata_store, ms_to_datetime, now_ms
from keel.store.schema.pipelines import schedules

KINDS = ("cron", "source", "model")


class Cron:
    """A five-field cron expression (UTC), parsed and stepped by croniter."""

    def __init__(self, expr: str) -> None:
        from croniter import CroniterError, croniter

        self.expr = expr
        text = expr.strip() if isinstance(expr, str) else ""
        if not text.startswith("@") and len(text.split()) != 5:
            raise ValidationError(f"Cron expression {expr!r} does not have 5 fields.", hint='Write minute hour day month weekday, e.g. "0 3 * * *".')
        try:
            croniter(text, datetime(2026, 1, 1, tzinfo=UTC)).get_next(datetime)
        except (CroniterError, ValueError, KeyError) as exc:
            detail = str(exc).replace(f"[{text}] ", "")
            raise ValidationError(f"Cron expression {expr!r} is not valid: {detail}.", hint='Use numbers, names, *, */n, a-b or a,b, e.g. "*/15 * * * *".') from None
        self._text = text

    def matches(self, t: datetime) -> bool:
        from croniter import croniter

        return bool(croniter.match(self._text, t.astimezone(UTC).replace(second=0, microsecond=0)))

    def next_after(self, t: datetime) -> datetime:
        """The first matching minute strictly after ``t``."""
        from croniter import croniter

        out: datetime = croniter(self._text, t.astimezone(UTC)).get_next(datetime)
        return out.astimezone(UTC)


@dataclass
class Schedule:
    name: str
    job: str  # the job kind
    target: str  # what it runs: a pipeline's module:name, a monitor's name
    kind: str  # the trigger: cron | source | model
    spec: str
    params: dict[str, Any]
    enabled: bool
    state: dict[str, Any]
    last_fired: datetime | None
    last_run_id: str | None
    created: datetime | None

    @property
    def pipeline(self) -> str:
        return self.target

    def describe(self) -> str:
        from keel.pipelines.triggers import trigger_kinds

        registered = trigger_kinds().get(self.kind)
        if registered is not None:
            return registered.describe(self.spec) if registered.describe else f"{self.kind} {self.spec}"
        return {"cron": f"cron {self.spec}", "source": f"new data in {self.spec}", "model": f"model {self.spec} registered, promoted or moved"}.get(self.kind, self.spec)


def _schedule(row: Any) -> Schedule:
    m = row._mapping
    return Schedule(m["name"], m["job"], m["target"], m["kind"], m["spec"], json.loads(m["params"]), bool(m["enabled"]),
                    json.loads(m["state"] or "{}"), ms_to_datetime(m["last_fired_ms"]), m["last_run_id"], ms_to_datetime(m["created_ms"]))


def add_schedule(
    name: str,
    target: str,
    *,
    job: str = "pipeline",
    cron: str | None = None,
    on_source: str | None = None,
    on_model: str | None = None,
    on: tuple[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> Schedule:
    """Add a schedule (``cron``) or a trigger (``on_source`` path, ``on_model`` name) that starts ``target``.

    ``job`` is the job kind (``pipeline``: ``target`` is its ``module:name``).
    The target and parameters are checked now by the kind; a trigger whose job
    produces the very event that triggers it (directly or through other
    triggers) is refused. ``on_model`` fires on registrations, promotions,
    rollbacks and alias moves of the model (``churn@production``: only moves
    of that environment or alias). ``on=(kind, spec)`` waits for a trigger kind
    a layer above registered (:func:`keel.pipelines.triggers.register_trigger_kind`),
    e.g. ``("alert", "churn-daily")``.
    """
    from keel.pipelines import triggers
    from keel.pipelines.jobs import get_job_kind

    if not isinstance(name, str) or not name or len(name) > 255 or not all(c.isalnum() or c in "-_." for c in name):
        raise ValidationError(f"Schedule name {name!r} is not valid.", hint="Use letters, digits, '-', '_' and '.'.")
    given = [(k, v) for k, v in (("cron", cron), ("source", on_source), ("model", on_model)) if v]
    if on is not None:
        registered = triggers.trigger_kinds()
        if on[0] not in registered:
            raise ValidationError(f"Trigger kind {on[0]!r} is not registered." + did_you_mean(str(on[0]), registered),
                                  hint=f"Registered: {', '.join(sorted(registered)) or 'none'} (import the module that registers it).")
        check = registered[on[0]].check
        if check is not None:
            check(str(on[1]))
        given.append((on[0], on[1]))
    if len(given) != 1:
        raise ValidationError(f"Schedule {name} needs exactly one of --cron, --on-source, --on-model (got {len(given)}).")
    kind, spec = given[0]
    jk = get_job_kind(job)
    bound_params = dict(params or {})
    if jk.check is not None:
        bound_params = jk.check(target, bound_params, kind)
    state: dict[str, Any] = {}
    t = now or datetime.now(UTC)
    if t.tzinfo is None:
        raise ValidationError(f"Clock time {t} has no timezone.", hint="Pass an aware datetime, e.g. datetime.now(UTC).")
    if kind == "cron":
        Cron(spec)
        state["checked_ms"] = int(t.timestamp() * 1000)
    else:
        triggers.refuse_loops(name, job, target, kind, spec, bound_params)
        state = triggers.initial_state(kind, spec)
    store = get_metadata_store()
    try:
        with store.write() as conn:
            if conn.execute(sa.select(schedules.c.id).where(schedules.c.name == name)).first():
                raise ConflictError(f"Schedule {name!r} already exists.", hint=f"Remove it first: keel schedule rm {name}.")
            conn.execute(sa.insert(schedules).values(
                name=name, job=job, target=target, kind=kind, spec=str(spec), params=json.dumps(bound_params, default=str),
                enabled=True, state=json.dumps(state), created_ms=now_ms(),
            ))
    except (sa.exc.IntegrityError, ConflictError):  # already there, or added at the same moment by another process
        raise ConflictError(f"Schedule {name!r} already exists.", hint=f"Remove it first: keel schedule rm {name}.") from None
    return get_schedule(name)


def get_schedule(name: str) -> Schedule:
    store = get_metadata_store()
    with store.read() as conn:
        row = conn.execute(sa.select(schedules).where(schedules.c.name == name)).first()
        if row is None:
            names = list(conn.execute(sa.select(schedules.c.name)).scalars())
            raise NotFoundError(f"No schedule named {name!r}." + did_you_mean(name, names), hint="List them with `keel schedule ls`.")
    return _schedule(row)


def list_schedules() -> list[Schedule]:
    store = get_metadata_store()
    with store.read() as conn:
        return [_schedule(r) for r in conn.execute(sa.select(schedules).order_by(schedules.c.name))]


def remove_schedule(name: str) -> None:
    """Remove a schedule or trigger and the record of what it fired."""
    from keel.store.schema.pipelines import schedule_fires

    get_schedule(name)
    with get_metadata_store().write() as conn:
        conn.execute(sa.delete(schedule_fires).where(schedule_fires.c.schedule == name))
        conn.execute(sa.delete(schedules).where(schedules.c.name == name))


def save_state(name: str, state: Mapping[str, Any], *, fired_run: str | None = None) -> None:
    values: dict[str, Any] = {"state": json.dumps(dict(state), default=str)}
    if fired_run is not None:
        values.update(last_fired_ms=now_ms(), last_run_id=fired_run)
    with get_metadata_store().write() as conn:
        conn.execute(sa.update(schedules).where(schedules.c.name == name).values(**values))
