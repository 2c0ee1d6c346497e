"""Schedules: run a pipeline on a cron expression or when an event arrives.

``keel schedule add NAME --cron "0 3 * * *" MODULE:pipeline`` stores a row in
``pipeline_schedules``; ``keel scheduler`` (see :mod:`keel.pipelines.triggers`)
checks every row and starts the runs. Cron expressions are the usual five
fields (minute hour day-of-month month day-of-week, UTC) with ``*``, ``*/n``,
ranges ``a-b``, lists ``a,b`` and day/month names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from keel.errors import ConflictError, NotFoundError, ValidationError, did_you_mean
from keel.store.metadata import get_metadata_store, ms_to_datetime, now_ms
from keel.store.schema.pipelines import pipeline_schedules

KINDS = ("cron", "source", "model")
_NAMES = {
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12,
    "sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6,
}
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))


class Cron:
    """A parsed five-field cron expression (UTC)."""

    def __init__(self, expr: str) -> None:
        self.expr = expr
        parts = expr.split() if isinstance(expr, str) else []
        if len(parts) != 5:
            raise ValidationError(f"Cron expression {expr!r} does not have 5 fields.", hint='Write minute hour day month weekday, e.g. "0 3 * * *".')
        self.sets = [self._field(p, *spec) for p, spec in zip(parts, _FIELDS, strict=True)]
        if 7 in self.sets[4]:
            self.sets[4] = (self.sets[4] - {7}) | {0}
        self.any_dom = parts[2] == "*"
        self.any_dow = parts[4] == "*"

    def _field(self, text: str, what: str, lo: int, hi: int) -> set[int]:
        out: set[int] = set()
        for item in text.lower().split(","):
            base, _, step_text = item.partition("/")
            try:
                step = int(step_text) if step_text else 1
                if base == "*":
                    a, b = lo, hi
                elif "-" in base:
                    x, y = base.split("-", 1)
                    a, b = _NAMES.get(x) or int(x), _NAMES.get(y) or int(y)
                else:
                    a = _NAMES[base] if base in _NAMES else int(base)
                    b = hi if step_text else a
            except (ValueError, KeyError):
                raise ValidationError(f"Cron expression {self.expr!r}: {what} field {text!r} is not valid.", hint='Use numbers, *, */n, a-b or a,b, e.g. "*/15 * * * *".') from None
            if not (lo <= a <= hi and lo <= b <= hi and a <= b and step >= 1):
                raise ValidationError(f"Cron expression {self.expr!r}: {what} {text!r} is outside {lo}-{hi}.")
            out.update(range(a, b + 1, step))
        return out

    def matches(self, t: datetime) -> bool:
        minute, hour, dom, month, dow = self.sets
        if t.minute not in minute or t.hour not in hour or t.month not in month:
            return False
        day_ok, wday_ok = t.day in dom, (t.isoweekday() % 7) in dow
        if self.any_dom or self.any_dow:
            return day_ok and wday_ok
        return day_ok or wday_ok  # cron's rule: either restricted day field matches

    def next_after(self, t: datetime) -> datetime:
        """The first matching minute strictly after ``t``."""
        t = t.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        for _ in range(366 * 24 * 60):
            if self.matches(t):
                return t
            t += timedelta(minutes=1)
        raise ValidationError(f"Cron expression {self.expr!r} never matches.")


@dataclass
class Schedule:
    name: str
    pipeline: str
    kind: str
    spec: str
    params: dict[str, Any]
    enabled: bool
    state: dict[str, Any]
    last_fired: datetime | None
    last_run_id: str | None
    created: datetime | None

    def describe(self) -> str:
        return {"cron": f"cron {self.spec}", "source": f"new data in {self.spec}", "model": f"model {self.spec} registered"}.get(self.kind, self.spec)


def _schedule(row: Any) -> Schedule:
    m = row._mapping
    return Schedule(m["name"], m["pipeline"], m["kind"], m["spec"], json.loads(m["params"]), bool(m["enabled"]),
                    json.loads(m["state"] or "{}"), ms_to_datetime(m["last_fired_ms"]), m["last_run_id"], ms_to_datetime(m["created_ms"]))


def add_schedule(
    name: str,
    pipeline: str,
    *,
    cron: str | None = None,
    on_source: str | None = None,
    on_model: str | None = None,
    params: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> Schedule:
    """Add a schedule (``cron``) or a trigger (``on_source`` path, ``on_model`` name) for ``pipeline``.

    The pipeline reference and parameters are checked now; a trigger whose
    pipeline produces the very event that triggers it (directly or through
    other triggers) is refused.
    """
    from keel.pipelines import triggers
    from keel.pipelines.pipeline import load_pipeline

    if not isinstance(name, str) or not name or len(name) > 255 or not all(c.isalnum() or c in "-_." for c in name):
        raise ValidationError(f"Schedule name {name!r} is not valid.", hint="Use letters, digits, '-', '_' and '.'.")
    given = [(k, v) for k, v in (("cron", cron), ("source", on_source), ("model", on_model)) if v]
    if len(given) != 1:
        raise ValidationError(f"Schedule {name} needs exactly one of --cron, --on-source, --on-model (got {len(given)}).")
    kind, spec = given[0]
    pipe = load_pipeline(pipeline)
    bound_params = dict(params or {})
    pipe.bind({k: v for k, v in bound_params.items()} | ({"event": None} if kind != "cron" and "event" in pipe.signature.parameters else {}))
    state: dict[str, Any] = {}
    t = now or datetime.now(UTC)
    if t.tzinfo is None:
        raise ValidationError(f"Clock time {t} has no timezone.", hint="Pass an aware datetime, e.g. datetime.now(UTC).")
    if kind == "cron":
        Cron(spec)
        state["checked_ms"] = int(t.timestamp() * 1000)
    else:
        triggers.refuse_loops(name, pipeline, kind, spec, bound_params)
        state = triggers.initial_state(kind, spec)
    store = get_metadata_store()
    with store.write() as conn:
        if conn.execute(sa.select(pipeline_schedules.c.id).where(pipeline_schedules.c.name == name)).first():
            raise ConflictError(f"Schedule {name!r} already exists.", hint=f"Remove it first: keel schedule rm {name}.")
        conn.execute(sa.insert(pipeline_schedules).values(
            name=name, pipeline=pipeline, kind=kind, spec=str(spec), params=json.dumps(bound_params, default=str),
            enabled=True, state=json.dumps(state), created_ms=now_ms(),
        ))
    return get_schedule(name)


def get_schedule(name: str) -> Schedule:
    store = get_metadata_store()
    with store.read() as conn:
        row = conn.execute(sa.select(pipeline_schedules).where(pipeline_schedules.c.name == name)).first()
        if row is None:
            names = list(conn.execute(sa.select(pipeline_schedules.c.name)).scalars())
            raise NotFoundError(f"No schedule named {name!r}." + did_you_mean(name, names), hint="List them with `keel schedule ls`.")
    return _schedule(row)


def list_schedules() -> list[Schedule]:
    store = get_metadata_store()
    with store.read() as conn:
        return [_schedule(r) for r in conn.execute(sa.select(pipeline_schedules).order_by(pipeline_schedules.c.name))]


def remove_schedule(name: str) -> None:
    get_schedule(name)
    with get_metadata_store().write() as conn:
        conn.execute(sa.delete(pipeline_schedules).where(pipeline_schedules.c.name == name))


def save_state(name: str, state: Mapping[str, Any], *, fired_run: str | None = None) -> None:
    values: dict[str, Any] = {"state": json.dumps(dict(state), default=str)}
    if fired_run is not None:
        values.update(last_fired_ms=now_ms(), last_run_id=fired_run)
    with get_metadata_store().write() as conn:
        conn.execute(sa.update(pipeline_schedules).where(pipeline_schedules.c.name == name).values(**values))
