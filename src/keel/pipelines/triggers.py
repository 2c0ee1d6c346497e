"""Triggers and the scheduler loop: what starts jobs without a person.

Events: a cron minute passed; a watched file or folder's content fingerprint
changed (a new batch of data); a model was registered, promoted, rolled back
or had an alias moved (the registry's audit events, read from the metadata
store, so a scheduler sees what any process did). Each started pipeline run is
tagged with what started it (``keel.trigger``, ``keel.trigger.event``) and gets
the event as its ``event`` parameter when the pipeline declares one.

Two schedulers, or one that crashed, never start the same run twice:

- a scheduler evaluates a schedule only while it holds the schedule's lease
  (``schedules.lease_owner`` / ``lease_expires_ms``, claimed with one
  conditional UPDATE, so only one of several processes wins it);
- each occurrence (a cron minute, a new fingerprint, a model event) is claimed
  by inserting its row in ``schedule_fires``, whose primary key lets one insert
  win; the winner renews the row's lease while the job runs;
- an occurrence whose owner stopped renewing (it crashed mid-run) is marked
  ``crashed`` and reported, never started again.

Jobs run off the tick loop, each in a fresh worker process (so it sees the
current code), while the loop keeps checking the schedules.

A trigger is refused when the job it starts produces its own event
(``produces=`` on the pipeline or its steps), directly or through a chain of
other triggers.

Layers above add trigger kinds (:func:`register_trigger_kind`): monitoring its
alerts and its performance series, without the scheduler importing them.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from keel.errors import ConflictError, KeelError, ValidationError
from keel.pipelines.jobs import JobOutcome, get_job_kind, job_kinds, run_job
from keel.pipelines.schedule import Cron, Schedule, get_schedule, list_schedules
from keel.store.metadata import get_metadata_store, now_ms
from keel.store.schema.pipelines import schedule_fires, schedules

MODEL_ACTIONS = ("register", "promote", "rollback", "alias")  # what moves a model version into use
DEFAULT_LEASE_S = 60.0


@dataclass
class Fired:
    schedule: str
    run_id: str | None
    status: str  # started | finished | failed | crashed
    event: dict[str, Any]
    error: str | None = None
    fire_key: str = ""


# -- trigger kinds registered from above ---------------------------------------------

Pending = Callable[[str, dict[str, Any], datetime], tuple[dict[str, Any] | None, dict[str, Any], str]]


@dataclass(frozen=True)
class TriggerKind:
    """A kind of event a schedule can wait for, registered by the layer that owns the events.

    ``initial(spec)`` is the state when the trigger is added (only later events fire it);
    ``pending(spec, state, now)`` returns (the event or None, the new state, the occurrence's
    unique key); ``check(spec)`` refuses a bad spec; ``matches(spec, product)`` says whether a
    job's product (``model:churn``, a path) would fire it (loop refusal).
    """

    name: str
    initial: Callable[[str], dict[str, Any]]
    pending: Pending
    check: Callable[[str], None] | None = None
    matches: Callable[[str, str], bool] | None = None
    describe: Callable[[str], str] | None = None


_trigger_kinds: dict[str, TriggerKind] = {}


def register_trigger_kind(
    name: str,
    *,
    initial: Callable[[str], dict[str, Any]],
    pending: Pending,
    check: Callable[[str], None] | None = None,
    matches: Callable[[str, str], bool] | None = None,
    describe: Callable[[str], str] | None = None,
) -> TriggerKind:
    """Register (or replace) a trigger kind; ``keel.pipelines.schedule.add_schedule(..., on=(name, spec))`` uses it."""
    if name in ("cron", "source", "model") or not name.replace("_", "").isalnum():
        raise ValidationError(f"Trigger kind {name!r} is built in or not a valid name.", hint="Use letters, digits and '_'.")
    kind = TriggerKind(name, initial, pending, check, matches, describe)
    _trigger_kinds[name] = kind
    return kind


def trigger_kinds() -> dict[str, TriggerKind]:
    return dict(_trigger_kinds)


# -- events ------------------------------------------------------------------------

def source_fingerprint(spec: str) -> str | None:
    from keel.pipelines.cache import content_fingerprint

    path = Path(spec)
    if not path.exists():
        return None
    return content_fingerprint(path)


def _model_spec(spec: str) -> tuple[str, str | None]:
    model, _, target = spec.partition("@")
    return model, target or None


def _model_events(spec: str, since: int) -> list[dict[str, Any]]:
    """The model's events after ``since`` that put a version into use (applied or forced)."""
    from keel.registry.events import poll

    model, target = _model_spec(spec)
    try:
        events = poll(since, model)
    except sa.exc.OperationalError:  # no registry tables in this store yet
        return []
    return [
        e for e in events
        if e["action"] in MODEL_ACTIONS and e["outcome"] in ("applied", "forced") and (target is None or e.get("target") == target)
    ]


def _last_model_event(spec: str) -> int:
    from keel.registry.events import poll

    try:
        events = poll(0, _model_spec(spec)[0])
    except sa.exc.OperationalError:
        return 0
    return max((int(e["id"]) for e in events), default=0)


def initial_state(kind: str, spec: str) -> dict[str, Any]:
    """What the trigger has seen when it is added (only later changes fire it)."""
    if kind == "source":
        return {"fingerprint": source_fingerprint(spec), "seq": 0}
    if kind in _trigger_kinds:
        return _trigger_kinds[kind].initial(spec)
    return {"last_event": _last_model_event(spec)}


def pending_event(s: Schedule, now: datetime) -> tuple[dict[str, Any] | None, dict[str, Any], str]:
    """(the event to fire, or None; the schedule's new state; the occurrence's key)."""
    state = dict(s.state)
    if s.kind == "cron":
        checked = datetime.fromtimestamp(state.get("checked_ms", 0) / 1000, tz=UTC)
        due = Cron(s.spec).next_after(checked)
        state["checked_ms"] = int(now.timestamp() * 1000)
        if due <= now:  # missed minutes coalesce into one run
            return {"kind": "cron", "cron": s.spec, "due": due.isoformat()}, state, f"cron:{due.isoformat()}"
        return None, state, ""
    if s.kind == "source":
        fp = source_fingerprint(s.spec)
        if fp is not None and fp != state.get("fingerprint"):
            seq = int(state.get("seq", 0)) + 1
            state.update(fingerprint=fp, seq=seq)
            return {"kind": "source", "path": s.spec, "fingerprint": fp}, state, f"source:{seq}:{fp}"
        return None, state, ""
    if s.kind == "model":
        found = _model_events(s.spec, int(state.get("last_event", 0)))
        if found:
            e = found[-1]  # several moves since the last check: one run, for the latest
            state["last_event"] = int(e["id"])
            event = {"kind": "model", "model": e["model"], "action": e["action"], "version": e["to_version"],
                     "target": e.get("target"), "event_id": int(e["id"])}
            return event, state, f"model:{int(e['id'])}"
        return None, state, ""
    if s.kind in _trigger_kinds:
        return _trigger_kinds[s.kind].pending(s.spec, state, now)
    raise ValidationError(f"Schedule {s.name} has unknown kind {s.kind!r}.",
                          hint="Import the module that registers it (e.g. keel.monitoring for alert triggers) before the scheduler.")


# -- loops -------------------------------------------------------------------------

def _matches(kind: str, spec: str, product: str) -> bool:
    if kind in _trigger_kinds:
        fn = _trigger_kinds[kind].matches
        return bool(fn is not None and fn(spec, product))
    if kind == "model":
        return product == f"model:{_model_spec(spec)[0]}"
    if product.startswith("model:"):
        return False
    a, b = Path(spec).resolve(), Path(product).resolve()
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def products(job: str, target: str, params: Mapping[str, Any]) -> list[str]:
    """What a job declares it writes (its kind says; nothing when the kind cannot tell)."""
    kind = job_kinds().get(job)
    if kind is None or kind.products is None:
        return []
    return kind.products(target, params)


def refuse_loops(name: str, job: str, target: str, kind: str, spec: str, params: Mapping[str, Any]) -> None:
    """Raise when adding this trigger would let a job start itself."""
    found = [(s.name, (s.job, s.target), s.kind, s.spec, s.params) for s in list_schedules() if s.kind != "cron"]
    found.append((name, (job, target), kind, spec, dict(params)))
    made = {node: products(node[0], node[1], prm) for _, node, _, _, prm in found}
    edges: dict[tuple[str, str], list[tuple[tuple[str, str], str]]] = {}
    for tname, node, tkind, tspec, _ in found:
        for source, prods in made.items():
            if any(_matches(tkind, tspec, p) for p in prods):
                edges.setdefault(source, []).append((node, tname))
    path: list[str] = []

    def reaches(node: tuple[str, str], goal: tuple[str, str], seen: set[tuple[str, str]]) -> bool:
        for nxt, via in edges.get(node, []):
            if nxt in seen:
                continue
            path.append(f"{node[1]} -[{via}]-> {nxt[1]}")
            if nxt == goal or reaches(nxt, goal, seen | {nxt}):
                return True
            path.pop()
        return False

    if reaches((job, target), (job, target), set()):
        raise ValidationError(
            f"Trigger {name!r} would start a loop: {'; '.join(path)}.",
            hint=f"{target} produces the event that starts it. Watch another source, or use a cron schedule.",
        )


# -- leases ------------------------------------------------------------------------

def scheduler_id() -> str:
    """This scheduler's name in leases: host, pid and a random part."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def claim_schedule(name: str, owner: str, lease_ms: int) -> bool:
    """Take the schedule's evaluation lease (free, expired or already ours); one conditional UPDATE, so one process wins."""
    t = now_ms()
    with get_metadata_store().write() as conn:
        res = conn.execute(
            sa.update(schedules)
            .where(schedules.c.name == name, schedules.c.enabled.is_(True),
                   sa.or_(schedules.c.lease_owner.is_(None), schedules.c.lease_expires_ms < t, schedules.c.lease_owner == owner))
            .values(lease_owner=owner, lease_expires_ms=t + lease_ms)
        )
        return bool(res.rowcount == 1)


def _commit_check(name: str, owner: str, state: Mapping[str, Any]) -> bool:
    """Store the schedule's new state and give the lease back, if it is still ours."""
    with get_metadata_store().write() as conn:
        res = conn.execute(
            sa.update(schedules).where(schedules.c.name == name, schedules.c.lease_owner == owner)
            .values(state=json.dumps(dict(state), default=str), lease_owner=None, lease_expires_ms=None)
        )
        return bool(res.rowcount == 1)


def _claim_fire(s: Schedule, owner: str, lease_ms: int, event: dict[str, Any], state: Mapping[str, Any], key: str) -> bool:
    """In one transaction: claim the occurrence, store the state, release the schedule. False when another process has it."""
    t = now_ms()
    try:
        with get_metadata_store().write() as conn:
            res = conn.execute(
                sa.update(schedules).where(schedules.c.name == s.name, schedules.c.lease_owner == owner)
                .values(state=json.dumps(dict(state), default=str), lease_owner=None, lease_expires_ms=None, last_fired_ms=t)
            )
            if res.rowcount != 1:
                raise _LostLease()
            conn.execute(sa.insert(schedule_fires).values(
                schedule=s.name, fire_key=key[:255], event=json.dumps(event, default=str), status="running", owner=owner,
                lease_expires_ms=t + lease_ms, claimed_ms=t,
            ))
    except _LostLease:
        return False
    except (sa.exc.IntegrityError, ConflictError):  # claimed already (a stale state, another scheduler); the store may report it as WriteConflict
        _commit_check(s.name, owner, state)
        return False
    return True


class _LostLease(Exception):
    pass


def renew(owner: str, lease_ms: int) -> int:
    """Extend the leases of the occurrences this scheduler is running; returns how many."""
    with get_metadata_store().write() as conn:
        res = conn.execute(
            sa.update(schedule_fires).where(schedule_fires.c.owner == owner, schedule_fires.c.status == "running")
            .values(lease_expires_ms=now_ms() + lease_ms)
        )
        return int(res.rowcount or 0)


def reap_crashed() -> list[Fired]:
    """Mark occurrences whose scheduler stopped renewing their lease as crashed (they are not started again)."""
    t = now_ms()
    store = get_metadata_store()
    with store.write() as conn:
        rows = list(conn.execute(sa.select(schedule_fires).where(schedule_fires.c.status == "running", schedule_fires.c.lease_expires_ms < t)))
        out = []
        for r in rows:
            err = f"scheduler {r.owner} stopped renewing its lease (expired {datetime.fromtimestamp(r.lease_expires_ms / 1000, UTC):%Y-%m-%d %H:%M:%S} UTC); the run is not started again"
            res = conn.execute(
                sa.update(schedule_fires)
                .where(schedule_fires.c.schedule == r.schedule, schedule_fires.c.fire_key == r.fire_key,
                       schedule_fires.c.status == "running", schedule_fires.c.lease_expires_ms < t)
                .values(status="crashed", ended_ms=t, error=err)
            )
            if res.rowcount == 1:
                out.append(Fired(r.schedule, r.run_id, "crashed", json.loads(r.event), err, r.fire_key))
    return out


def _finish_fire(f: Fired, owner: str, out: JobOutcome) -> Fired:
    t = now_ms()
    with get_metadata_store().write() as conn:
        conn.execute(
            sa.update(schedule_fires).where(schedule_fires.c.schedule == f.schedule, schedule_fires.c.fire_key == f.fire_key, schedule_fires.c.owner == owner)
            .values(status=out.status, run_id=out.run_id, ended_ms=t, error=out.error)
        )
        if out.run_id:
            conn.execute(sa.update(schedules).where(schedules.c.name == f.schedule).values(last_run_id=out.run_id))
    return Fired(f.schedule, out.run_id, out.status, f.event, out.error, f.fire_key)


def fires(schedule: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The occurrences schedules fired, newest first (status, run, error)."""
    q = sa.select(schedule_fires).order_by(schedule_fires.c.claimed_ms.desc()).limit(limit)
    if schedule is not None:
        q = q.where(schedule_fires.c.schedule == schedule)
    with get_metadata_store().read() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


# -- the scheduler -----------------------------------------------------------------

@dataclass
class _Job:
    fired: Fired
    kind_ref: str
    target: str
    params: dict[str, Any]
    trigger: str
    tags: dict[str, str] = field(default_factory=dict)


def _due(now: datetime, owner: str, lease_ms: int) -> tuple[list[_Job], list[Fired]]:
    """Claim every due occurrence: (jobs to run, schedules that could not be run)."""
    jobs: list[_Job] = []
    errors: list[Fired] = []
    for s in list_schedules():
        if not s.enabled or not claim_schedule(s.name, owner, lease_ms):
            continue
        try:
            s = get_schedule(s.name)  # the state as the last holder of the lease left it
            kind = get_job_kind(s.job)
            event, state, key = pending_event(s, now)
        except KeelError as exc:
            _commit_check(s.name, owner, s.state)
            errors.append(Fired(s.name, None, "failed", {}, str(exc).replace("\n", " ")))
            continue
        if event is None:
            _commit_check(s.name, owner, state)
            continue
        if not _claim_fire(s, owner, lease_ms, event, state, key):
            continue
        tags = {"keel.trigger.kind": s.kind, "keel.trigger.event": json.dumps(event, default=str)[:5000], "keel.schedule": s.name,
                "keel.schedule.fire": key[:255]}
        jobs.append(_Job(Fired(s.name, None, "started", event, None, key), kind.run_ref, s.target, dict(s.params), f"schedule:{s.name}", tags))
    return jobs, errors


def tick(now: datetime | None = None, *, engine: str | None = None, owner: str | None = None, lease_seconds: float = DEFAULT_LEASE_S) -> list[Fired]:
    """Check every schedule once and run the due jobs here, one after the other; returns what they did."""
    now = _aware(now)
    owner = owner or scheduler_id()
    lease_ms = int(lease_seconds * 1000)
    out = reap_crashed()
    jobs, errors = _due(now, owner, lease_ms)
    out.extend(errors)
    if not jobs:
        return out
    with Heartbeat(owner, lease_ms):
        for job in jobs:
            with _engine(engine):
                result = run_job(job.kind_ref, job.target, job.params, job.fired.event, job.trigger, job.tags, {})
            out.append(_finish_fire(job.fired, owner, result))
    return out


def _aware(now: datetime | None) -> datetime:
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise ValidationError(f"Scheduler clock {now} has no timezone.", hint="Pass an aware UTC time, e.g. 2026-01-01T03:00:00+00:00.")
    return now


class _engine:
    """KEEL_ENGINE for the jobs this scheduler starts (``--engine``)."""

    def __init__(self, engine: str | None) -> None:
        self.engine = engine
        self.old: str | None = None

    def __enter__(self) -> None:
        if self.engine:  # settings are read again when KEEL_* change
            self.old = os.environ.get("KEEL_ENGINE")
            os.environ["KEEL_ENGINE"] = self.engine

    def __exit__(self, *exc: Any) -> None:
        if self.engine:
            if self.old is None:
                os.environ.pop("KEEL_ENGINE", None)
            else:
                os.environ["KEEL_ENGINE"] = self.old


class Heartbeat:
    """Renews this process's leases every third of the lease, on a thread of its own.

    ``renew_fn(owner, lease_ms)`` extends them: the scheduler's occurrences by default,
    the queued runs a ``keel worker`` holds (:mod:`keel.pipelines.queue`) otherwise.
    """

    def __init__(self, owner: str, lease_ms: int, renew_fn: Callable[[str, int], int] | None = None) -> None:
        self.owner = owner
        self.lease_ms = lease_ms
        self.renew_fn = renew_fn or renew
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="keel-scheduler-lease", daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(self.lease_ms / 3000):
            try:
                self.renew_fn(self.owner, self.lease_ms)
            except Exception:  # the store is briefly unreachable: try again next beat
                pass

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def run_scheduler(
    *,
    once: bool = False,
    until: datetime | None = None,
    poll_seconds: float = 30.0,
    clock: Callable[[], datetime] | None = None,
    engine: str | None = None,
    on_fire: Callable[[Fired], None] | None = None,
    workers: int = 2,
    lease_seconds: float = DEFAULT_LEASE_S,
) -> list[Fired]:
    """Check the schedules every ``poll_seconds`` until ``until`` (or once); returns what the jobs did.

    With ``once`` the due jobs run here and the call returns when they end.
    Otherwise each job runs in a fresh worker process (``workers`` at a time)
    while the loop goes on checking; at ``until`` it stops claiming and waits
    for the running jobs.
    """
    clock = clock or (lambda: datetime.now(UTC))
    owner = scheduler_id()
    lease_ms = int(lease_seconds * 1000)
    fired: list[Fired] = []

    def report(f: Fired) -> None:
        if f.status != "started":
            fired.append(f)
        if on_fire:
            on_fire(f)

    if once:
        for f in tick(clock(), engine=engine, owner=owner, lease_seconds=lease_seconds):
            report(f)
        return fired
    import multiprocessing

    from keel.pipelines.executors import worker_context

    ctx = worker_context()
    if engine:
        ctx["env"] = {**ctx["env"], "KEEL_ENGINE": engine}
    pool = cf.ProcessPoolExecutor(max(1, workers), mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1)
    running: dict[cf.Future[JobOutcome], Fired] = {}
    try:
        with Heartbeat(owner, lease_ms):
            while True:
                now = clock()
                if until is not None and now >= until:
                    break
                for f in reap_crashed():
                    report(f)
                jobs, errors = _due(_aware(now), owner, lease_ms)
                for f in errors:
                    report(f)
                for job in jobs:
                    fut = pool.submit(run_job, job.kind_ref, job.target, job.params, job.fired.event, job.trigger, job.tags, ctx)
                    running[fut] = job.fired
                    report(job.fired)
                _collect(running, owner, report, timeout=poll_seconds)
            while running:
                _collect(running, owner, report, timeout=None)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return fired


def _collect(running: dict[cf.Future[JobOutcome], Fired], owner: str, report: Callable[[Fired], None], timeout: float | None) -> None:
    """Wait up to ``timeout`` for running jobs; record each one that ended."""
    if not running:
        if timeout:
            time.sleep(timeout)
        return
    done, _ = cf.wait(list(running), timeout=timeout, return_when=cf.FIRST_COMPLETED if timeout is None else cf.ALL_COMPLETED)
    for fut in done:
        f = running.pop(fut)
        try:
            out = fut.result()
        except Exception as exc:  # the worker process died
            from keel.pipelines.executors import one_line

            out = JobOutcome(None, f"the job's worker process failed: {one_line(exc)}")
        report(_finish_fire(f, owner, out))
