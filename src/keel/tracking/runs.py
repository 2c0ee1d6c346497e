"""Runs: the unit of tracking. ``with keel.start_run():`` and the ``keel.log_*`` calls.

A run records params (once each), metrics (many values per key, buffered),
tags, artifacts, dataset inputs and, without being asked, a reproducibility
record (git state, argv, Python, platform, package lock, seeds). Its status is
running, finished, failed (with the traceback) or killed; a running run whose
process stopped beating its heartbeat shows as crashed.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import re
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import sqlalchemy as sa

from keel.config import settings
from keel.errors import ConflictError, NotFoundError, ValidationError, did_you_mean
from keel.store.metadata import MetadataStore, get_metadata_store, insert_ignore, now_ms
from keel.store.schema import artifacts, experiments, params, runs, tags
from keel.tracking import _writer

STATUSES = ("running", "finished", "failed", "killed")
_NAME_RE = re.compile(r"^[A-Za-z0-9_\-./: ]{1,250}$")
_checked_names: set[str] = set()


def check_name(kind: str, name: Any) -> str:
    """Validate a metric, param or tag key."""
    if name in _checked_names:
        return name
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.strip() != name or "//" in name:
        raise ValidationError(
            f"Invalid {kind} name {name!r}.",
            hint="Use 1-250 letters, digits, '_', '-', '.', '/', ':' or spaces, with no leading or trailing space.",
            name=str(name),
        )
    if len(_checked_names) < 100_000:
        _checked_names.add(name)
    return name


def _value_str(kind: str, key: str, value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, list | dict) else str(value)
    if len(text) > limit:
        raise ValidationError(
            f"{kind.capitalize()} '{key}' is {len(text)} characters long; the limit is {limit}.",
            hint="Log long values as an artifact (keel.log_text / keel.log_dict), or raise KEEL_MAX_VALUE_LENGTH.",
        )
    return text


def _value_limit() -> int:
    return int(settings().max_value_length)


def _as_number(text: str) -> float | None:
    try:
        f = float(text)
    except ValueError:
        return None
    return f if math.isfinite(f) else None


def effective_status(status: str, heartbeat_ms: int, now: int | None = None) -> str:
    """'crashed' for a running run whose heartbeat is older than the timeout."""
    if status != "running":
        return status
    timeout_ms = float(settings().heartbeat_timeout) * 1000
    return "crashed" if (now or now_ms()) - heartbeat_ms > timeout_ms else status


def effective_status_sql() -> sa.ColumnElement[Any]:
    """The same as :func:`effective_status`, as a SQL expression over the runs table."""
    cutoff = now_ms() - int(float(settings().heartbeat_timeout) * 1000)
    return sa.case(
        (sa.and_(runs.c.status == "running", runs.c.heartbeat_ms < cutoff), sa.literal("crashed")),
        else_=runs.c.status,
    )


# -- experiments ------------------------------------------------------------

def get_or_create_experiment(store: MetadataStore, name: str) -> int:
    """The id of experiment ``name``, created if missing; safe to call from many processes at once."""
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        raise ValidationError(f"Invalid experiment name {name!r}.", hint="Use a non-empty name of at most 255 characters.")
    with store.read() as conn:
        found = conn.execute(sa.select(experiments.c.id).where(experiments.c.name == name)).scalar()
    if found is not None:
        return int(found)
    with store.write() as conn:
        # ON CONFLICT: of many processes creating the same experiment at once, one inserts and none fails
        insert_ignore(conn, experiments, {"name": name, "created_ms": now_ms()}, ["name"])
        found = conn.execute(sa.select(experiments.c.id).where(experiments.c.name == name)).scalar_one()
    return int(found)


def experiment_id(store: MetadataStore, ref: str | int) -> int:
    """Resolve an experiment name or id; unknown names get a did-you-mean."""
    with store.read() as conn:
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            row = conn.execute(sa.select(experiments.c.id).where(experiments.c.id == int(ref))).scalar()
        else:
            row = conn.execute(sa.select(experiments.c.id).where(experiments.c.name == ref)).scalar()
        if row is None:
            names = list(conn.execute(sa.select(experiments.c.name)).scalars())
            raise NotFoundError(f"No experiment named {ref!r}." + did_you_mean(str(ref), names), hint="List them with `keel experiments ls`.")
    return int(row)


_experiment_override: str | None = None


def set_experiment(name: str) -> int:
    """Make ``name`` the experiment of the next runs (created if missing); returns its id."""
    global _experiment_override
    from keel.store.remote import client

    remote = client()
    if remote is not None:
        exp_id = int(remote.post_json("/v1/experiments", {"name": name})["id"])
    else:
        exp_id = get_or_create_experiment(get_metadata_store(), name)
    _experiment_override = name
    return exp_id


# -- runs -------------------------------------------------------------------

class Run:
    """An open run. Use as a context manager; its methods mirror the ``keel.log_*`` functions."""

    def __init__(self, store: MetadataStore, run_id: str, experiment_id: int, name: str, parent_id: str | None) -> None:
        self.store = store
        self.id = run_id
        self.experiment_id = experiment_id
        self.name = name
        self.parent_id = parent_id
        self.ended = False
        s = settings()
        self._writer = _writer.get_writer(store, float(s.flush_interval), float(s.heartbeat_timeout))
        self._writer.watch(run_id)
        self._steps: dict[str, int] = {}
        self._params: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<keel.Run {self.id} name={self.name!r}>"

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None:
            self.end("finished")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.end("killed", error="KeyboardInterrupt")
        else:
            self.end("failed", error="".join(traceback.format_exception(exc_type, exc, tb)))

    # -- logging --
    def log_metric(self, key: str, value: Any, step: int | None = None, timestamp: float | None = None) -> None:
        """Buffer one metric value. ``step`` defaults to one past this key's last step; NaN/inf are kept."""
        if key not in _checked_names:
            check_name("metric", key)
        v = _writer.clean_value(key, value)
        if step is None:
            step = self._steps.get(key, -1) + 1
        elif not isinstance(step, int) or isinstance(step, bool):
            raise ValidationError(f"Metric '{key}' step {step!r} is not an integer.", hint="Pass step=<int>.")
        self._steps[key] = step
        ts = time.time_ns() // 1_000_000 if timestamp is None else int(timestamp * 1000)
        self._writer.append((self.id, key, step, ts, v))

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None, timestamp: float | None = None) -> None:
        rows = []
        ts = time.time_ns() // 1_000_000 if timestamp is None else int(timestamp * 1000)
        for key, value in metrics.items():
            check_name("metric", key)
            st = self._steps.get(key, -1) + 1 if step is None else step
            rows.append((self.id, key, st, ts, _writer.clean_value(key, value)))
        for r in rows:  # validate everything before buffering anything
            self._steps[r[1]] = r[2]
        self._writer.extend(rows)

    def log_param(self, key: str, value: Any) -> None:
        self.log_params({key: value})

    def log_params(self, values: Mapping[str, Any]) -> None:
        """Record params; re-logging a param with a different value is an error (all or nothing)."""
        todo = {k: v for k, v in clean_params(values).items() if self._params.get(k) != v}
        if not todo:
            return
        self._write_params(todo)
        self._params.update(todo)

    def _write_params(self, values: dict[str, str]) -> None:
        write_params(self.store, self.id, values)

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def set_tags(self, values: Mapping[str, Any]) -> None:
        cleaned = clean_tags(values)
        if cleaned:
            self._write_tags(cleaned)

    def _write_tags(self, values: dict[str, str]) -> None:
        write_tags(self.store, self.id, values)

    def flush(self) -> None:
        """Write buffered metrics now (runs flush by themselves every second and on end)."""
        self._writer.flush()

    # -- end --
    def end(self, status: str = "finished", error: str | None = None) -> None:
        if self.ended:
            return
        check_status(status)
        # The buffered values are written first: if the store fails, the error (with the count of
        # values still buffered) reaches the caller and the run stays open, so ending it again writes all.
        self._writer.flush()
        self._write_end(status, error)
        self.ended = True
        self._writer.unwatch(self.id)
        _pop(self)


    def _write_end(self, status: str, error: str | None) -> None:
        write_end(self.store, self.id, status, error)


# -- the writes of a run, by id (the Run methods and the server's routes call these) ------------

def clean_params(values: Mapping[str, Any]) -> dict[str, str]:
    limit = _value_limit()
    return {check_name("param", k): _value_str("param", k, v, limit) for k, v in values.items()}


def clean_tags(values: Mapping[str, Any]) -> dict[str, str]:
    limit = _value_limit()
    return {check_name("tag", k): _value_str("tag", k, v, limit) for k, v in values.items()}


def check_status(status: str) -> str:
    if status not in STATUSES[1:]:
        raise ValidationError(f"Run status {status!r} is not one of finished, failed, killed.")
    return status


def write_params(store: MetadataStore, run_id: str, todo: dict[str, str]) -> None:
    """Store params of ``run_id``; the same value again is a no-op, a different one an error (all or nothing)."""
    with store.write() as conn:
        existing = dict(
            conn.execute(sa.select(params.c.key, params.c.value).where(params.c.run_id == run_id, params.c.key.in_(list(todo)))).all()
        )
        for k, v in todo.items():
            if k in existing and existing[k] != v:
                raise ValidationError(
                    f"Param '{k}' of run {run_id} is already {existing[k]!r}; cannot change it to {v!r}.",
                    hint="Params are immutable: start a new run, or log the changing value as a metric or tag.",
                )
        rows = [{"run_id": run_id, "key": k, "value": v, "num": _as_number(v)} for k, v in todo.items() if k not in existing]
        if rows:
            conn.execute(sa.insert(params), rows)


def write_tags(store: MetadataStore, run_id: str, values: dict[str, str]) -> None:
    """Set tags of ``run_id`` (last writer wins)."""
    rows = [{"run_id": run_id, "key": k, "value": v} for k, v in values.items()]
    with store.write() as conn:
        conn.execute(sa.delete(tags).where(tags.c.run_id == run_id, tags.c.key.in_([r["key"] for r in rows])))
        conn.execute(sa.insert(tags), rows)


def write_end(store: MetadataStore, run_id: str, status: str, error: str | None) -> None:
    check_status(status)
    with store.write() as conn:
        conn.execute(
            sa.update(runs).where(runs.c.id == run_id).values(status=status, end_ms=now_ms(), heartbeat_ms=now_ms(), error=error)
        )


def reopen(store: MetadataStore, run_id: str) -> Any:
    """Mark an existing run running again; returns its row."""
    with store.write() as conn:
        row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
        if row is None:
            raise NotFoundError(f"No run with id {run_id!r}.", hint="List runs with `keel runs ls`.")
        conn.execute(sa.update(runs).where(runs.c.id == run_id).values(status="running", end_ms=None, heartbeat_ms=now_ms()))
    return row


def create_run(
    store: MetadataStore, *, run_id: str, experiment_id: int, name: str, parent_id: str | None,
    env: dict[str, Any], env_artifacts: list[dict[str, Any]], user: str, host: str,
) -> bool:
    """Insert a new run (id chosen by the caller); True when this call created it.

    Idempotent: a retried creation with the same id (a client that lost the
    answer) finds the run and creates nothing.
    """
    start = now_ms()
    with store.write() as conn:
        created = insert_ignore(
            conn, runs,
            {"id": run_id, "experiment_id": experiment_id, "name": name, "parent_id": parent_id,
             "status": "running", "start_ms": start, "end_ms": None, "heartbeat_ms": start,
             "user": user, "host": host, "error": None, "env": json.dumps(env, default=str)},
            ["id"],
        )
        if created and env_artifacts:
            conn.execute(sa.insert(artifacts), env_artifacts)
    return created


def check_run_name(run_name: Any) -> str:
    if not isinstance(run_name, str) or len(run_name) > 255:
        raise ValidationError(f"Invalid run name {run_name!r}.", hint="Use a string of at most 255 characters.")
    return run_name


_stack: list[Run] = []
_stack_lock = threading.Lock()


def _pop(run: Run) -> None:
    with _stack_lock:
        if run in _stack:
            _stack.remove(run)


def active_run() -> Run | None:
    """The innermost open run, or None."""
    return _stack[-1] if _stack else None


def _require_run() -> Run:
    run = active_run()
    if run is None:
        return start_run()
    return run


def start_run(
    name: str | None = None,
    experiment: str | None = None,
    *,
    nested: bool = False,
    tags: Mapping[str, Any] | None = None,
    run_id: str | None = None,
    description: str | None = None,
    parent: Run | None = None,
    activate: bool = True,
) -> Run:
    """Open a run (a context manager). ``nested=True`` makes it a child of the active run.

    ``run_id`` reopens an existing run, e.g. to add evaluation metrics later.
    ``parent`` makes it a child of that run whether or not it is active, and
    ``activate=False`` opens it without making it the active run, so that
    several children (parallel steps, tuning trials) can be open side by side;
    log into such a run through its own methods. A child run shares its
    parent's reproducibility record instead of capturing it again.
    """
    from keel.store.remote import client

    remote = client()
    if remote is not None:  # KEEL_TRACKING_URI: through the server
        from keel.tracking.remote import start_remote_run

        return start_remote_run(remote, name, experiment, nested=nested, tags=tags, run_id=run_id,
                                description=description, parent=parent, activate=activate)
    store = get_metadata_store()
    if parent is not None:
        nested = True
    else:
        parent = active_run()
    if parent is not None and not nested and run_id is None:
        raise ConflictError(
            f"Run {parent.id} ({parent.name}) is already active.",
            hint="Pass nested=True for a child run, or end the active run first (keel.end_run()).",
        )
    s = settings()
    if run_id is not None:
        row = reopen(store, run_id)
        run = Run(store, run_id, row.experiment_id, row.name, row.parent_id)
    else:
        if experiment is None and parent is not None and nested:
            exp_id = parent.experiment_id  # a child run lives with its parent
        else:
            exp_id = get_or_create_experiment(store, experiment or _experiment_override or str(s.experiment))
        rid = uuid.uuid4().hex
        run_name = check_run_name(name or _default_name(rid))
        env: dict[str, Any] = {}
        env_artifacts: list[dict[str, Any]] = []
        if parent is not None and nested:
            env, env_artifacts = _inherit_environment(store, parent.id, rid)
        elif s.capture_environment:
            from keel.tracking import environment

            env, env_artifacts = environment.capture(rid)
        create_run(store, run_id=rid, experiment_id=exp_id, name=run_name, parent_id=parent.id if (parent and nested) else None,
                   env=env, env_artifacts=env_artifacts, user=s.acting_user, host=socket.gethostname())
        run = Run(store, rid, exp_id, run_name, parent.id if (parent and nested) else None)
    if activate:
        with _stack_lock:
            _stack.append(run)
    _after_start(run, run_id, parent, nested, description, tags)
    return run


def _after_start(run: Run, run_id: str | None, parent: Run | None, nested: bool,
                 description: str | None, tags: Mapping[str, Any] | None) -> None:
    reproduces = os.environ.get("KEEL_REPRODUCES")  # set by `keel runs reproduce --verify` for its re-run
    if reproduces and run_id is None and not (parent is not None and nested):
        run.set_tag("keel.reproduces", reproduces)
    if description:
        run.set_tag("description", description)
    if tags:
        run.set_tags(tags)


def _inherit_environment(store: MetadataStore, parent_id: str, run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A child run's record: its parent's (same process, same code), with the same lock and diff blobs."""
    with store.read() as conn:
        env_json = conn.execute(sa.select(runs.c.env).where(runs.c.id == parent_id)).scalar()
        rows = conn.execute(
            sa.select(artifacts.c.path, artifacts.c.digest, artifacts.c.size, artifacts.c.media_type).where(
                artifacts.c.owner_kind == "run", artifacts.c.owner_id == parent_id, artifacts.c.path.like("keel/%")
            )
        ).all()
    env = json.loads(env_json) if env_json else {}
    env["inherited_from"] = parent_id
    created = now_ms()
    return env, [
        {"owner_kind": "run", "owner_id": run_id, "path": r.path, "digest": r.digest, "size": r.size, "media_type": r.media_type, "created_ms": created}
        for r in rows
    ]


_ADJ = ["amber", "brisk", "calm", "deft", "eager", "fleet", "gentle", "hardy", "keen", "lucid", "merry", "noble", "proud", "quick", "sly", "tidy", "vivid", "wise"]
_NOUN = ["otter", "heron", "lynx", "falcon", "badger", "marten", "ibis", "wren", "orca", "stoat", "gecko", "kite", "newt", "puffin", "tern", "vole"]


def _default_name(run_id: str) -> str:
    n = int(run_id[:8], 16)
    return f"{_ADJ[n % len(_ADJ)]}-{_NOUN[(n // 31) % len(_NOUN)]}-{n % 1000}"


def end_run(status: str = "finished") -> None:
    """End the active run."""
    run = active_run()
    if run is not None:
        run.end(status)


def log_metric(key: str, value: Any, step: int | None = None, timestamp: float | None = None) -> None:
    """Log a metric value into the active run (one is started if none is active)."""
    (_stack[-1] if _stack else _require_run()).log_metric(key, value, step, timestamp)


def log_metrics(metrics: Mapping[str, Any], step: int | None = None, timestamp: float | None = None) -> None:
    _require_run().log_metrics(metrics, step, timestamp)


def log_param(key: str, value: Any) -> None:
    _require_run().log_param(key, value)


def log_params(values: Mapping[str, Any]) -> None:
    _require_run().log_params(values)


def set_tag(key: str, value: Any) -> None:
    _require_run().set_tag(key, value)


def set_tags(values: Mapping[str, Any]) -> None:
    _require_run().set_tags(values)


def _end_all_at_exit() -> None:
    status, error = ("finished", None)
    if _uncaught is not None:
        status, error = "failed", _uncaught
    for run in reversed(list(_stack)):
        try:
            run.end(status, error=error)
        except Exception as exc:  # reported: the run stays 'running' in the store and shows as crashed later
            from keel.config import redact

            sys.stderr.write(f"keel: run {run.id} ({run.name}) could not be marked {status} at exit: {redact(str(exc))}\n")


_uncaught: str | None = None
_prev_hook = sys.excepthook


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    global _uncaught
    _uncaught = "".join(traceback.format_exception(exc_type, exc, tb))
    _prev_hook(exc_type, exc, tb)


sys.excepthook = _excepthook
atexit.register(_end_all_at_exit)


def _reset_for_tests() -> None:
    """End every open run and close the writers (test fixtures)."""
    global _experiment_override
    for run in reversed(list(_stack)):
        try:
            run.end("killed")
        except Exception:
            _pop(run)
    _experiment_override = None
    _writer.close_all()
