"""Job kinds: what a schedule or trigger can start.

The scheduler starts jobs of registered kinds and imports none of them: a
layer above registers its kind here (monitoring its monitors, the loop its
retraining policies) with the function that runs one job. Pipelines register
the ``pipeline`` kind below.

A kind's ``run`` is named by import reference (``module:function``), since a
scheduler runs each job in a fresh worker process that imports it there::

    from keel.pipelines.jobs import JobOutcome, register_job_kind

    def run_monitor(target, params, event, *, trigger, tags):
        report = run_monitor_now(target, **params)
        return JobOutcome(run_id=report.run_id)

    register_job_kind("monitor", run_monitor, check=check_monitor)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from keel.errors import KeelError, NotFoundError, ValidationError, did_you_mean


@dataclass
class JobOutcome:
    """What one job did: the tracked run it started (if any), and the error when it failed."""

    run_id: str | None = None
    error: str | None = None

    @property
    def status(self) -> str:
        return "failed" if self.error else "finished"


@dataclass(frozen=True)
class JobKind:
    name: str
    run_ref: str  # module:function, called as run(target, params, event, *, trigger, tags) -> JobOutcome
    check: Callable[[str, dict[str, Any], str], dict[str, Any]] | None = None  # (target, params, trigger kind) -> params to store
    products: Callable[[str, Mapping[str, Any]], list[str]] | None = None  # what the job writes (for loop refusal)
    describe: str = "job"


_kinds: dict[str, JobKind] = {}
_lock = threading.Lock()


def register_job_kind(
    name: str,
    run: Callable[..., JobOutcome],
    *,
    check: Callable[[str, dict[str, Any], str], dict[str, Any]] | None = None,
    products: Callable[[str, Mapping[str, Any]], list[str]] | None = None,
    describe: str | None = None,
) -> JobKind:
    """Register (or replace) a job kind; ``run`` must be a module-level function (workers import it)."""
    if not name or not name.replace("_", "").replace("-", "").isalnum() or len(name) > 64:
        raise ValidationError(f"Job kind {name!r} is not a valid name.", hint="Use letters, digits, '-' and '_'.")
    qual = getattr(run, "__qualname__", "")
    if "<" in qual or not getattr(run, "__module__", None):
        raise ValidationError(f"Job kind {name!r}: its run function {run!r} is not a module-level function.", hint="Define it at the top of a module.")
    kind = JobKind(name, f"{run.__module__}:{qual}", check, products, describe or name)
    with _lock:
        _kinds[name] = kind
    return kind


def job_kinds() -> dict[str, JobKind]:
    with _lock:
        return dict(_kinds)


def get_job_kind(name: str) -> JobKind:
    kinds = job_kinds()
    if name not in kinds:
        raise NotFoundError(
            f"Job kind {name!r} is not registered in this process." + did_you_mean(name, kinds),
            hint=f"Registered kinds: {', '.join(sorted(kinds)) or 'none'}. Import the module that registers it before starting the scheduler.",
        )
    return kinds[name]


def run_job(kind_ref: str, target: str, params: dict[str, Any], event: dict[str, Any] | None, trigger: str, tags: dict[str, str], context: dict[str, Any]) -> JobOutcome:
    """Run one job (in a scheduler's worker process): enter the project, import the kind's function, call it."""
    from keel.pipelines import executors

    executors.enter_context(context)
    fn = executors.import_ref(kind_ref)
    try:
        out = fn(target, params, event, trigger=trigger, tags=tags)
    except KeelError as exc:
        return JobOutcome(None, str(exc).replace("\n", " "))
    except Exception as exc:
        return JobOutcome(None, executors.one_line(exc))
    if not isinstance(out, JobOutcome):
        return JobOutcome(None, f"Job kind function {kind_ref} returned {type(out).__name__}, not a JobOutcome.")
    return out


# -- the pipeline kind -------------------------------------------------------------

def run_pipeline_job(target: str, params: dict[str, Any], event: dict[str, Any] | None, *, trigger: str, tags: dict[str, str]) -> JobOutcome:
    """Run a pipeline for a schedule; the event goes in as its ``event`` parameter when it declares one."""
    from keel.pipelines.pipeline import load_pipeline
    from keel.pipelines.runner import StepFailed, run

    pipe = load_pipeline(target)
    call = dict(params)
    if "event" in pipe.signature.parameters:
        call["event"] = event
    try:
        result = run(pipe, call, trigger=trigger, tags=tags)
    except StepFailed as exc:
        return JobOutcome(exc.result.run_id, str(exc).replace("\n", " "))
    return JobOutcome(result.run_id)


def check_pipeline_job(target: str, params: dict[str, Any], trigger_kind: str) -> dict[str, Any]:
    from keel.pipelines.pipeline import load_pipeline

    pipe = load_pipeline(target)
    bound = dict(params)
    pipe.bind(bound | ({"event": None} if trigger_kind != "cron" and "event" in pipe.signature.parameters else {}))
    return bound


def pipeline_products(target: str, params: Mapping[str, Any]) -> list[str]:
    """What a pipeline declares it writes: its own ``produces`` and its steps'."""
    from keel.pipelines.pipeline import load_pipeline

    pipe = load_pipeline(target)
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


register_job_kind("pipeline", run_pipeline_job, check=check_pipeline_job, products=pipeline_products, describe="pipeline")
