"""The pipeline-run queue: runs asked for through the server, executed by ``keel worker``.

``POST /v1/pipeline-runs`` calls :func:`enqueue`, which checks the pipeline and
its parameters and stores a ``queued`` row in the metadata store; nothing runs
inside the request. A worker (:func:`work`), started beside the server in the
project folder, claims the oldest queued row and runs it in a fresh process
with the project's code, then records how it ended.

Two workers never run one row twice, on SQLite and on PostgreSQL alike, by the
scheduler's lease scheme (:mod:`keel.pipelines.triggers`):

- a claim is one conditional UPDATE (``status = 'queued'`` -> ``running`` with the
  worker's id and a lease expiry), so of several workers exactly one wins;
- the winner renews the lease while the run goes on (the scheduler's heartbeat);
- a running row whose lease expired (its worker was killed) is marked ``crashed``
  and reported, never started again: a run may have half-happened, so starting
  it again is a person's decision (queue it anew).

The client may give the row's id: a retried POST then queues nothing twice.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from keel.errors import ConflictError, NotFoundError, ValidationError
from keel.store.metadata import get_metadata_store, insert_ignore, ms_to_datetime, now_ms
from keel.store.schema.pipelines import pipeline_queue

STATUSES = ("queued", "running", "finished", "failed", "crashed")
DEFAULT_LEASE_S = 60.0
QUEUE_TAG = "keel.queue"  # on the pipeline run a queued row started
_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclass
class QueuedRun:
    """One row of the queue; ``run_id`` is the pipeline run once it started."""

    id: str
    pipeline: str
    name: str
    experiment: str
    params: dict[str, Any]
    smoke: bool
    refresh: bool
    engine: str | None
    status: str
    requested_by: str
    requested_time: datetime | None
    worker: str | None
    started_time: datetime | None
    ended_time: datetime | None
    run_id: str | None
    error: str | None
    resume_of: str | None = None  # the failed pipeline run this row resumes

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _row(r: Any) -> QueuedRun:
    return QueuedRun(
        r.id, r.pipeline, r.name, r.experiment, json.loads(r.params), bool(r.smoke), bool(r.refresh), r.engine, r.status,
        r.requested_by, ms_to_datetime(r.requested_ms), r.owner, ms_to_datetime(r.started_ms), ms_to_datetime(r.ended_ms), r.run_id, r.error,
        r.resume_of,
    )


def _check_id(run_id: Any) -> str:
    if not isinstance(run_id, str) or not 1 <= len(run_id) <= 64 or not set(run_id) <= _ID_CHARS:
        raise ValidationError(f"Queued run id {run_id!r} is not valid.", hint="Use 1-64 letters, digits, '-', '_' or '.' (or leave it out).")
    return run_id


def _json_params(params: Mapping[str, Any]) -> str:
    try:
        return json.dumps(dict(params), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"Pipeline parameters {dict(params)!r} are not JSON: {exc}.", hint="Give numbers, strings, booleans, lists or objects.") from None


def enqueue(
    pipeline: str,
    params: Mapping[str, Any] | None = None,
    *,
    smoke: bool = False,
    refresh: bool = False,
    engine: str | None = None,
    run_id: str | None = None,
) -> QueuedRun:
    """Queue a run of one of the project's pipelines (by name or reference) for a worker.

    The pipeline and its parameters are checked now, so a bad request fails at once.
    With ``run_id`` (client-generated) a repeated call returns the row queued first;
    the same id with other arguments is a conflict.
    """
    from keel.config import settings
    from keel.pipelines.pipeline import project_pipeline

    if engine is not None and engine not in ("local", "process", "ray"):
        raise ValidationError(f"Engine {engine!r} is not known.", hint="Use local, process or ray (or leave it out: the worker's).")
    pipe = project_pipeline(pipeline)
    given = dict(params or {})
    pipe.graph(**pipe.bind(given))  # unknown, missing or mistyped parameters and a bad graph fail now
    rid = _check_id(run_id) if run_id is not None else uuid.uuid4().hex
    values = {
        "id": rid, "pipeline": pipe.ref, "name": pipe.name, "experiment": pipe.experiment + ("-smoke" if smoke else ""),
        "params": _json_params(given), "smoke": bool(smoke), "refresh": bool(refresh), "engine": engine, "status": "queued",
        "requested_by": settings().acting_user, "requested_ms": now_ms(),
    }
    with get_metadata_store().write() as conn:
        insert_ignore(conn, pipeline_queue, values, ["id"])
        row = _row(conn.execute(sa.select(pipeline_queue).where(pipeline_queue.c.id == rid)).one())
    same = (row.pipeline, row.params, row.smoke, row.refresh, row.engine) == (pipe.ref, json.loads(str(values["params"])), bool(smoke), bool(refresh), engine)
    if not same:
        raise ConflictError(f"Queued run {rid!r} exists with other arguments ({row.name}, {row.params}).",
                            hint="Use a new id for a new run; the same id repeats a request.")
    return row


def enqueue_resume(run_ref: str, *, engine: str | None = None, run_id: str | None = None) -> QueuedRun:
    """Queue a resume of a failed or killed pipeline run (``keel pipelines resume RUN`` through a worker).

    The worker runs it as :func:`keel.pipelines.runner.resume` does: the run's pipeline and
    parameters again, its finished steps from the cache, recorded as ``resume_of`` the run.
    A run that finished needs no resume (ConflictError); one already queued for resuming is
    returned instead of being queued twice.
    """
    from keel.config import settings
    from keel.pipelines.runner import _pipeline_row
    from keel.tracking.query import get_run

    if engine is not None and engine not in ("local", "process", "ray"):
        raise ValidationError(f"Engine {engine!r} is not known.", hint="Use local, process or ray (or leave it out: the run's).")
    row = _pipeline_row(run_ref)
    tracked = get_run(row.run_id)
    status = tracked.status
    if status in ("finished", "running"):
        raise ConflictError(f"Pipeline run {row.run_id} is {status}; only a failed or killed run is resumed.",
                            hint="Start a new run instead (keel pipelines run).")
    waiting = pending_resume(row.run_id)
    if waiting is not None:
        return waiting
    rid = _check_id(run_id) if run_id is not None else uuid.uuid4().hex
    values = {
        "id": rid, "pipeline": row.pipeline, "name": row.name, "experiment": tracked.experiment, "params": row.params,
        "smoke": bool(row.smoke), "refresh": False, "engine": engine, "status": "queued", "resume_of": row.run_id,
        "requested_by": settings().acting_user, "requested_ms": now_ms(),
    }
    with get_metadata_store().write() as conn:
        insert_ignore(conn, pipeline_queue, values, ["id"])
        found = _row(conn.execute(sa.select(pipeline_queue).where(pipeline_queue.c.id == rid)).one())
    if found.resume_of != row.run_id:
        raise ConflictError(f"Queued run {rid!r} exists with other arguments ({found.name}).",
                            hint="Use a new id for a new run; the same id repeats a request.")
    return found


def pending_resume(pipeline_run_id: str) -> QueuedRun | None:
    """The queued or running resume of a pipeline run, if one waits for (or is with) a worker."""
    with get_metadata_store().read() as conn:
        found = conn.execute(sa.select(pipeline_queue).where(pipeline_queue.c.resume_of == pipeline_run_id,
                                                             pipeline_queue.c.status.in_(("queued", "running"))).limit(1)).first()
    return None if found is None else _row(found)


def get(run_id: str) -> QueuedRun:
    """One queued run, with the pipeline run it started (found by its tag while it is running)."""
    with get_metadata_store().read() as conn:
        r = conn.execute(sa.select(pipeline_queue).where(pipeline_queue.c.id == str(run_id))).first()
        if r is None:
            raise NotFoundError(f"No queued pipeline run {run_id!r}.", hint="List them with GET /v1/pipeline-runs.")
        item = _row(r)
        if item.run_id is None and item.status == "running":
            from keel.store.schema import tags

            item.run_id = conn.execute(sa.select(tags.c.run_id).where(tags.c.key == QUEUE_TAG, tags.c.value == item.id).limit(1)).scalar()
    return item


def list_queued(status: str | None = None, limit: int = 50) -> list[QueuedRun]:
    """Queued runs, newest first; ``status`` one of :data:`STATUSES`."""
    if status is not None and status not in STATUSES:
        from keel.errors import did_you_mean

        raise ValidationError(f"Status {status!r} is not known." + did_you_mean(status, STATUSES), hint=f"Use {', '.join(STATUSES)}.")
    q = sa.select(pipeline_queue).order_by(pipeline_queue.c.requested_ms.desc(), pipeline_queue.c.id).limit(max(1, min(int(limit), 1000)))
    if status:
        q = q.where(pipeline_queue.c.status == status)
    with get_metadata_store().read() as conn:
        return [_row(r) for r in conn.execute(q)]


def steps(item: QueuedRun) -> list[dict[str, Any]]:
    """The steps of the pipeline run a queued row started (none before it starts)."""
    if item.run_id is None:
        return []
    from keel.pipelines.runner import run_steps

    try:
        _, found = run_steps(item.run_id)
    except NotFoundError:  # the tracked run exists, its pipeline row is not written yet
        return []
    return found


# -- claiming ----------------------------------------------------------------------

def claim(owner: str, lease_ms: int) -> QueuedRun | None:
    """Take the oldest queued row (one conditional UPDATE: one worker wins); None when none is left."""
    store = get_metadata_store()
    for _ in range(20):  # another worker may win each candidate; try the next
        with store.read() as conn:
            rid = conn.execute(
                sa.select(pipeline_queue.c.id).where(pipeline_queue.c.status == "queued")
                .order_by(pipeline_queue.c.requested_ms, pipeline_queue.c.id).limit(1)
            ).scalar()
        if rid is None:
            return None
        t = now_ms()
        with store.write() as conn:
            res = conn.execute(
                sa.update(pipeline_queue).where(pipeline_queue.c.id == rid, pipeline_queue.c.status == "queued")
                .values(status="running", owner=owner, lease_expires_ms=t + lease_ms, started_ms=t)
            )
            won = res.rowcount == 1
        if won:
            return get(rid)
    return None


def renew(owner: str, lease_ms: int) -> int:
    """Extend the leases of the rows this worker is running; returns how many."""
    with get_metadata_store().write() as conn:
        res = conn.execute(
            sa.update(pipeline_queue).where(pipeline_queue.c.owner == owner, pipeline_queue.c.status == "running")
            .values(lease_expires_ms=now_ms() + lease_ms)
        )
        return int(res.rowcount or 0)


def reap_crashed() -> list[QueuedRun]:
    """Mark running rows whose worker stopped renewing its lease as crashed (never started again)."""
    t = now_ms()
    store = get_metadata_store()
    with store.read() as conn:
        rows = list(conn.execute(sa.select(pipeline_queue).where(pipeline_queue.c.status == "running", pipeline_queue.c.lease_expires_ms < t)))
    out = []
    for r in rows:
        err = (f"worker {r.owner} stopped renewing its lease (expired {ms_to_datetime(r.lease_expires_ms):%Y-%m-%d %H:%M:%S} UTC); "
               "the run is not started again: queue it anew")
        with store.write() as conn:
            res = conn.execute(
                sa.update(pipeline_queue).where(pipeline_queue.c.id == r.id, pipeline_queue.c.status == "running", pipeline_queue.c.lease_expires_ms < t)
                .values(status="crashed", ended_ms=t, error=err)
            )
            won = res.rowcount == 1
        if won:
            out.append(get(r.id))
    return out


def finish(item: QueuedRun, owner: str, run_id: str | None, error: str | None) -> QueuedRun:
    """Record how a claimed row ended (only while this worker still owns it)."""
    with get_metadata_store().write() as conn:
        conn.execute(
            sa.update(pipeline_queue).where(pipeline_queue.c.id == item.id, pipeline_queue.c.owner == owner, pipeline_queue.c.status == "running")
            .values(status="failed" if error else "finished", run_id=run_id, ended_ms=now_ms(), error=error)
        )
    return get(item.id)


# -- running -----------------------------------------------------------------------

def _exit_with_parent() -> None:
    """End this process when the worker that started it dies (SIGKILL leaves no chance to stop it).

    Its row is marked crashed once the lease expires and is never run again, so the run
    must not go on writing behind that verdict.
    """
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(70)

    threading.Thread(target=watch, name="keel-worker-parent", daemon=True).start()


def execute(item: dict[str, Any], context: dict[str, Any]) -> tuple[str | None, str | None]:
    """Run one queued row (in a fresh worker process): (pipeline run id, error or None)."""
    from keel.config import acting_as
    from keel.errors import KeelError, StepFailed
    from keel.pipelines import executors
    from keel.pipelines.runner import resume, run

    _exit_with_parent()
    executors.enter_context(context)
    tags = {QUEUE_TAG: item["id"], "keel.requested_by": item["requested_by"]}
    try:
        with acting_as(item["requested_by"]):  # the run is the requester's, not the worker's
            if item.get("resume_of"):
                result = resume(item["resume_of"], engine=item["engine"], tags=tags)
            else:
                result = run(item["pipeline"], item["params"], smoke=item["smoke"], refresh=item["refresh"], engine=item["engine"],
                             trigger=f"queue:{item['id']}", tags=tags)
    except StepFailed as exc:
        return exc.result.run_id, str(exc).replace("\n", " ")
    except KeelError as exc:
        return None, str(exc).replace("\n", " ")
    except Exception as exc:
        return None, executors.one_line(exc)
    return result.run_id, None


def work(
    *,
    concurrency: int = 1,
    poll_seconds: float = 2.0,
    lease_seconds: float = DEFAULT_LEASE_S,
    drain: bool = False,
    until: Callable[[], bool] | None = None,
    on_event: Callable[[str, QueuedRun], None] | None = None,
) -> list[QueuedRun]:
    """Claim queued runs and run them, ``concurrency`` at a time, each in a fresh process.

    Polls every ``poll_seconds``; with ``drain`` it returns once the queue is empty and
    its runs have ended, otherwise when ``until()`` says so (or never). Returns the
    rows it ran, as they ended. ``on_event(kind, row)`` hears started, finished,
    failed and crashed (another worker's row found dead).
    """
    import multiprocessing

    from keel.pipelines.executors import worker_context
    from keel.pipelines.triggers import Heartbeat, scheduler_id

    owner = scheduler_id()
    lease_ms = int(lease_seconds * 1000)
    ctx = worker_context()
    done: list[QueuedRun] = []
    pool = cf.ProcessPoolExecutor(max(1, concurrency), mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1)
    running: dict[cf.Future[tuple[str | None, str | None]], QueuedRun] = {}

    def tell(kind: str, row: QueuedRun) -> None:
        if on_event:
            on_event(kind, row)

    def collect(timeout: float | None) -> None:
        if not running:
            return
        finished, _ = cf.wait(list(running), timeout=timeout, return_when=cf.FIRST_COMPLETED)
        for fut in finished:
            item = running.pop(fut)
            try:
                run_id, error = fut.result()
            except Exception as exc:  # the worker process died
                from keel.pipelines.executors import one_line

                run_id, error = None, f"the run's worker process failed: {one_line(exc)}"
            row = finish(item, owner, run_id, error)
            done.append(row)
            tell(row.status, row)

    try:
        with Heartbeat(owner, lease_ms, renew):
            while until is None or not until():
                for row in reap_crashed():
                    tell("crashed", row)
                claimed = False
                while len(running) < max(1, concurrency):
                    item = claim(owner, lease_ms)
                    if item is None:
                        break
                    claimed = True
                    running[pool.submit(execute, item.to_dict(), ctx)] = item
                    tell("started", item)
                if drain and not claimed and not running:
                    break
                if running:
                    collect(poll_seconds)
                else:
                    time.sleep(poll_seconds)
            while running:
                collect(None)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return done
