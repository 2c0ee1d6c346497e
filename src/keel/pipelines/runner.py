"""Running a pipeline: one tracked run, a child run per step, outputs cached by content.

Steps run in a topological order; with the process pool or Ray every step
whose inputs are ready runs at once. A step that raises marks its child run
and the pipeline run failed (with the traceback), leaves every finished step's
output cached, and skips what depends on it; ``resume`` runs the pipeline
again with the same parameters and takes the finished steps from the cache.
"""

from __future__ import annotations

import concurrent.futures as cf
import inspect
import json
import time
import traceback
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from keel.errors import NotFoundError, StepFailed, ValidationError, did_you_mean
from keel.pipelines import cache
from keel.pipelines.executors import (
    BlobRef,
    Executor,
    Outcome,
    StepTask,
    call_step,
    get_executor,
    load_blob,
    missing_package,
    one_line,
    run_task,
    store_output,
    worker_context,
)
from keel.pipelines.graph import Graph, Handle, handles_in, select, substitute
from keel.pipelines.smoke import SMOKE_TAG
from keel.store.metadata import MetadataStore, get_metadata_store, now_ms
from keel.store.schema.pipelines import pipeline_runs, pipeline_steps

MODELS_TAG = "keel.output.models"  # {package name: runs:/<run>/<name>} of a step's "model" output

if TYPE_CHECKING:
    from keel.pipelines.pipeline import Pipeline
    from keel.pipelines.step import Step
    from keel.tracking.runs import Run


@dataclass
class StepResult:
    name: str
    status: str  # finished | cached | failed | skipped
    cache_hit: bool = False
    run_id: str | None = None
    key: str | None = None
    digest: str | None = None
    serializer: str | None = None
    duration_s: float = 0.0
    saved_s: float = 0.0
    source_run_id: str | None = None
    error: str | None = None
    models: dict[str, str] = field(default_factory=dict)  # package name -> runs:/<run>/<name>, for "model" outputs


@dataclass
class PipelineResult:
    """What a pipeline run did: its run id, each step's result, the output (loaded on first use)."""

    run_id: str
    pipeline: str
    status: str
    smoke: bool
    steps: dict[str, StepResult] = field(default_factory=dict)
    duration_s: float = 0.0
    _graph: Graph | None = None
    _outcomes: dict[str, Outcome] = field(default_factory=dict)

    @property
    def cached(self) -> int:
        """How many steps came from the cache."""
        return sum(1 for s in self.steps.values() if s.cache_hit)

    @property
    def time_saved_s(self) -> float:
        """The time the cached steps took when they ran."""
        return sum(s.saved_s for s in self.steps.values() if s.cache_hit)

    def summary(self) -> str:
        return f"{self.cached} of {len(self.steps)} steps from cache, saved {self.time_saved_s:.1f} s ({self.duration_s:.2f} s run)"

    def load(self, step: str) -> Any:
        """The output of one step."""
        if step not in self._outcomes:
            raise NotFoundError(f"Step {step!r} produced no output in run {self.run_id}." + did_you_mean(step, list(self._outcomes)))
        return _value(self._outcomes[step])

    def model_uri(self, step: str, name: str | None = None) -> str:
        """``runs:/<run id>/<name>`` of a model a step returned, for ``keel.load_model`` and ``keel.register_model``.

        The run is the step's run, or on a cache hit the run that produced the
        output. ``name`` is the key of a dict output (``{"model": m, ...}``);
        it may be left out when the step returned one model.
        """
        res = self.steps.get(step)
        if res is None:
            raise NotFoundError(f"Pipeline run {self.run_id} has no step {step!r}." + did_you_mean(step, list(self.steps)), hint=f"Its steps: {', '.join(self.steps)}.")
        if not res.models:
            raise NotFoundError(
                f"Step {step!r} of pipeline run {self.run_id} stored no model package (status {res.status}, serializer {res.serializer}).",
                hint="Return a scikit-learn, LightGBM or XGBoost model (or a dict holding one), or declare @keel.step(serializer='model').",
            )
        if name is None:
            if len(res.models) == 1:
                return next(iter(res.models.values()))
            raise ValidationError(
                f"Step {step!r} returned {len(res.models)} models: {', '.join(res.models)}.",
                hint=f"Name one: result.model_uri({step!r}, {next(iter(res.models))!r}).",
            )
        if name not in res.models:
            raise NotFoundError(f"Step {step!r} returned no model {name!r}." + did_you_mean(name, list(res.models)), hint=f"Its models: {', '.join(res.models)}.")
        return res.models[name]

    @property
    def output(self) -> Any:
        """The pipeline function's return value, with step outputs loaded."""
        if self._graph is None:
            return None
        return substitute(self._graph.output, lambda h: select(self.load(h.node), h.selector))


def _value(outcome: Outcome) -> Any:
    if not outcome.has_value:
        outcome.value = load_blob(BlobRef(outcome.digest, outcome.serializer))
        outcome.has_value = True
    return outcome.value


# -- parameters as stored JSON ------------------------------------------------------

def encode_params(params: Mapping[str, Any]) -> str:
    def enc(v: Any) -> Any:
        if isinstance(v, cache.FileRef):
            return {"__fileref__": str(v)}
        if isinstance(v, Path):
            return {"__path__": str(v)}
        if v is None or isinstance(v, bool | int | float | str):
            return v
        if isinstance(v, list | tuple):
            return [enc(x) for x in v]
        if isinstance(v, dict) and all(isinstance(k, str) for k in v):
            return {k: enc(x) for k, x in v.items()}
        return {"__repr__": repr(v)}

    return json.dumps({k: enc(v) for k, v in params.items()}, sort_keys=True)


def decode_params(text: str) -> dict[str, Any]:
    def dec(v: Any) -> Any:
        if isinstance(v, dict):
            if "__fileref__" in v:
                return cache.FileRef(v["__fileref__"])
            if "__path__" in v:
                return Path(v["__path__"])
            if "__repr__" in v:
                raise ValidationError(f"Parameter value {v['__repr__']} was not stored and cannot be replayed.", hint="Run the pipeline again with the value.")
            return {k: dec(x) for k, x in v.items()}
        if isinstance(v, list):
            return [dec(x) for x in v]
        return v

    return {k: dec(v) for k, v in json.loads(text).items()}


def _param_text(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v, default=str)
    return text[:5000]


def _path_typed(step: Step) -> set[str]:
    try:
        hints = typing.get_type_hints(step.fn)
    except Exception:
        return set()
    out = set()
    for k, t in hints.items():
        options = typing.get_args(t) or (t,)
        if any(o is Path or o is cache.FileRef for o in options):
            out.add(k)
    return out


# -- one run ---------------------------------------------------------------------

class _Run:
    def __init__(self, graph: Graph, *, smoke: bool, refresh: set[str], executor: Executor, store: MetadataStore, prun: Run) -> None:
        from keel.config import settings

        self.graph = graph
        self.smoke = smoke
        self.refresh = refresh
        self.executor = executor
        self.store = store
        self.prun = prun
        self.root = Path(settings().root)
        cache.refresh_environment()  # what is installed now, read once per run
        self.outcomes: dict[str, Outcome] = {}
        self.results: dict[str, StepResult] = {n: StepResult(n, "pending") for n in graph.nodes}
        self.running: dict[cf.Future[Any], tuple[str, Run, str, float, Any]] = {}
        self.failed: tuple[str, BaseException, str] | None = None
        self.failed_hint: str | None = None
        self._ctx: dict[str, Any] | None = None
        self._deferred: list[tuple[str, dict[str, Any]]] = []
        self._lineage = "{}"
        from keel.store.blobs import get_artifact_store

        self.blobs = get_artifact_store()
        self.on_step: Callable[[StepResult], None] | None = None

    def _report(self, name: str) -> None:
        if self.on_step is not None:
            self.on_step(self.results[name])

    # inputs
    def _fingerprint(self, h: Handle) -> dict[str, Any]:
        return {"in": self.outcomes[h.node].digest, "sel": [repr(s) for s in h.selector]}

    def _value(self, h: Handle) -> Any:
        return select(_value(self.outcomes[h.node]), h.selector)

    def _blobref(self, h: Handle) -> BlobRef:
        o = self.outcomes[h.node]
        return BlobRef(o.digest, o.serializer, h.selector)

    def _key(self, name: str) -> tuple[str, inspect.BoundArguments]:
        node = self.graph.nodes[name]
        step = node.step
        bound = step.signature.bind(*node.args, **node.kwargs)
        bound.apply_defaults()
        if self.smoke:
            for k, v in step.shrink.items():
                if not handles_in(bound.arguments.get(k)):
                    bound.arguments[k] = v
        paths = _path_typed(step)
        params: dict[str, Any] = {}
        inputs: dict[str, Any] = {}
        for k, v in bound.arguments.items():
            if handles_in(v):
                inputs[k] = substitute(v, self._fingerprint)
            else:
                params[k] = cache.canonical(v, path_typed=k in paths)
        code = cache.code_key(step.fn, self.root)
        key = cache.step_key(
            code=code.digest, params=params, inputs=inputs, options=step.options(),
            deps=cache.dependency_versions(code.modules), smoke=self.smoke,
        )
        return key, bound

    def _tags(self, name: str, extra: Mapping[str, str]) -> dict[str, str]:
        node = self.graph.nodes[name]
        tags = {"keel.kind": "step", "keel.step": name, "keel.step.where": node.where, "keel.pipeline.run": self.prun.id,
                "keel.inputs": self._lineage, **extra}
        if self.smoke:
            tags[SMOKE_TAG] = "true"
        return tags

    def _update(self, name: str, *, defer: bool = False, **values: Any) -> None:
        """Record a step's state; cache hits are deferred and written together (they need no resume)."""
        self._deferred.append((name, values))
        if not defer:
            self.flush()

    def flush(self) -> None:
        if not self._deferred:
            return
        with self.store.write() as conn:
            for name, values in self._deferred:
                conn.execute(sa.update(pipeline_steps).where(pipeline_steps.c.run_id == self.prun.id, pipeline_steps.c.step == name).values(**values))
        self._deferred.clear()

    # one step
    def start(self, name: str) -> None:
        from keel.tracking.runs import start_run

        node = self.graph.nodes[name]
        step = node.step
        res = self.results[name]
        try:
            key, bound = self._key(name)
        except Exception as exc:
            self._fail(name, None, exc, time.perf_counter())
            return
        res.key = key
        self._lineage = json.dumps({
            k: [{"step": h.node, "digest": self.outcomes[h.node].digest} for h in handles_in(v)]
            for k, v in bound.arguments.items() if handles_in(v)
        })[:5000]
        use_cache = step.cache and name not in self.refresh
        if use_cache:
            entry = cache.lookup(self.store, key, blobs=self.blobs)
            if entry is not None:
                try:
                    self._hit(name, key, entry)
                except Exception as exc:  # e.g. the packages of a model output could not be recorded again
                    self._fail(name, None, exc, time.perf_counter())
                return
        mode = "off" if not step.cache else ("refresh" if name in self.refresh else "miss")
        started = now_ms()
        self._update(name, status="running", cache_key=key, started_ms=started)
        t0 = time.perf_counter()
        if self.executor.parallel and step.kind == "step":
            # open but not active: other steps start beside it
            child = start_run(name=name, nested=True, activate=False, tags=self._tags(name, {"keel.cache": mode, "keel.cache.key": key}))
            if self._ctx is None:
                self._ctx = worker_context(ship_path=self.executor.name != "ray")
            task = StepTask(
                name, step.ref, substitute(tuple(bound.args), self._blobref), substitute(dict(bound.kwargs), self._blobref),
                run_id=child.id, smoke=self.smoke, context=self._ctx,
            )
            fut = self.executor.submit(run_task, task)
            self.running[fut] = (name, child, key, t0, None)
            return
        child = start_run(name=name, nested=True, tags=self._tags(name, {"keel.cache": mode, "keel.cache.key": key}))
        try:
            with child:
                t0 = time.perf_counter()
                args = substitute(tuple(bound.args), self._value)
                kwargs = substitute(dict(bound.kwargs), self._value)
                if step.kind == "tune":
                    value = step.run_study(args, kwargs, executor=self.executor, smoke=self.smoke, run=child)  # type: ignore[attr-defined]
                else:
                    value = call_step(step, args, kwargs, self.smoke)
                digest, ser, size = store_output(value, step.serializer, (args, kwargs))
                outcome = Outcome(digest, ser, size, int((time.perf_counter() - t0) * 1000), value, True)
                self._finished(name, child, key, outcome)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            self._fail(name, child, exc, t0)

    def _hit(self, name: str, key: str, entry: cache.Entry) -> None:
        from keel.tracking.runs import start_run

        t = now_ms()
        # The output stays owned by the cache entry; the tags link it and the run that made it.
        tags = {"keel.cache": "hit", "keel.cache.key": key, "keel.output.digest": entry.digest, "keel.output.serializer": entry.serializer}
        if entry.run_id:
            tags["keel.cache.source_run"] = entry.run_id
        models = self._source_models(entry.run_id) if entry.serializer == "model" else {}
        if models:
            tags[MODELS_TAG] = json.dumps(models)
        with start_run(name=name, nested=True, tags=self._tags(name, tags)) as child:
            if models is None:  # the producing run or its packages are gone: record them with this run
                models = self._record_models(child.id, entry.digest)
                child.set_tags({MODELS_TAG: json.dumps(models)})
        self.outcomes[name] = Outcome(entry.digest, entry.serializer, entry.size, 0)
        self.results[name] = StepResult(
            name, "cached", True, child.id, key, entry.digest, entry.serializer, 0.0, entry.duration_ms / 1000, entry.run_id,
            models=models or {},
        )
        self._update(
            name, status="cached", step_run_id=child.id, cache_key=key, cache_hit=True, source_run_id=entry.run_id,
            digest=entry.digest, serializer=entry.serializer, duration_ms=0, saved_ms=entry.duration_ms, started_ms=t, ended_ms=now_ms(),
            defer=True,
        )
        self._report(name)

    def _source_models(self, run_id: str | None) -> dict[str, str] | None:
        """{name: URI} of the packages the producing run recorded, or None when any is missing."""
        from keel.models.package import META_FILE, PICKLE_FILE
        from keel.store.schema import artifacts, tags

        if not run_id:
            return None
        with self.store.read() as conn:
            text = conn.execute(sa.select(tags.c.value).where(tags.c.run_id == run_id, tags.c.key == MODELS_TAG)).scalar()
            if not text:
                return None
            try:
                models: dict[str, str] = dict(json.loads(text))
            except (ValueError, TypeError):
                return None
            wanted = {f"{n}/{f}" for n in models for f in (META_FILE, PICKLE_FILE)}
            have = set(conn.execute(
                sa.select(artifacts.c.path).where(artifacts.c.owner_kind == "run", artifacts.c.owner_id == run_id, artifacts.c.path.in_(wanted))
            ).scalars())
        return models if have == wanted else None

    def _record_models(self, run_id: str, digest: str) -> dict[str, str]:
        from keel.pipelines.executors import record_models

        return record_models(self.store, run_id, digest)

    def _finished(self, name: str, child: Run, key: str, outcome: Outcome) -> None:
        from keel.tracking.artifacts import record

        step = self.graph.nodes[name].step
        # packages and tags first: a run that hits the cache entry finds them with the run that produced it
        models = self._record_models(child.id, outcome.digest) if outcome.serializer == "model" else {}
        record(self.store, "run", child.id, [("output", outcome.digest, outcome.size, None)])
        out_tags = {"keel.output.digest": outcome.digest, "keel.output.serializer": outcome.serializer}
        if models:
            out_tags[MODELS_TAG] = json.dumps(models)
        child.set_tags(out_tags)
        if step.cache:
            expires = None if step.expire is None else now_ms() + int(step.expire * 1000)
            cache.save(
                self.store,
                cache.Entry(key, name, outcome.digest, outcome.serializer, outcome.size, child.id, outcome.duration_ms, now_ms(), expires),
                replace=name in self.refresh,
            )
        child.log_metric("keel.duration_s", outcome.duration_ms / 1000)
        self.outcomes[name] = outcome
        self.results[name] = StepResult(
            name, "finished", False, child.id, key, outcome.digest, outcome.serializer, outcome.duration_ms / 1000, models=models,
        )
        self._update(
            name, status="finished", step_run_id=child.id, digest=outcome.digest, serializer=outcome.serializer,
            duration_ms=outcome.duration_ms, ended_ms=now_ms(),
        )
        self._report(name)

    def _fail(self, name: str, child: Run | None, exc: BaseException, t0: float) -> None:
        node = self.graph.nodes[name]
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if child is not None and not child.ended:
            child.end("failed", error=text)
        dep = missing_package(exc)
        summary = one_line(exc)
        self.results[name] = StepResult(name, "failed", False, child.id if child else None, self.results[name].key,
                                        duration_s=time.perf_counter() - t0, error=summary)
        self._update(name, status="failed", step_run_id=child.id if child else None, ended_ms=now_ms(), error=text[-20000:],
                     duration_ms=int((time.perf_counter() - t0) * 1000))
        if self.failed is None:
            self.failed = (name, exc, f"Step {name} ({node.where}) failed: {dep.message if dep else summary}")
            if dep is not None:
                self.failed_hint = f"{dep.hint}, then run `keel pipelines resume {self.prun.id}`."
        self._report(name)

    def collect(self, fut: cf.Future[Any]) -> None:
        name, child, key, t0, _ = self.running.pop(fut)
        try:
            outcome = fut.result()
        except BaseException as exc:
            self._fail(name, child, exc, t0)
            return
        self._finished(name, child, key, outcome)
        child.end("finished")

    def execute(self) -> None:
        pending = self.graph.order()
        while pending or self.running:
            if self.failed is None:
                ready = [n for n in pending if all(u in self.outcomes for u in self.graph.nodes[n].upstream())]
                for name in ready:
                    pending.remove(name)
                    self.start(name)
                    if self.failed is not None:
                        break
            if self.running:
                done, _ = cf.wait(list(self.running), return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    self.collect(fut)
            elif self.failed is not None or not any(
                all(u in self.outcomes for u in self.graph.nodes[n].upstream()) for n in pending
            ):
                break
        self.flush()
        for name in pending:
            self.results[name].status = "skipped"
        if pending:
            with self.store.write() as conn:
                conn.execute(sa.update(pipeline_steps).where(pipeline_steps.c.run_id == self.prun.id, pipeline_steps.c.step.in_(pending)).values(status="skipped"))


def run(
    pipe: Pipeline | str,
    params: Mapping[str, Any] | None = None,
    *,
    smoke: bool = False,
    refresh: bool | Iterable[str] = False,
    engine: str | None = None,
    experiment: str | None = None,
    tags: Mapping[str, str] | None = None,
    trigger: str = "manual",
    from_step: str | None = None,
    resume_of: str | None = None,
    max_workers: int | None = None,
    on_step: Callable[[StepResult], None] | None = None,
) -> PipelineResult:
    """Run a pipeline (a :class:`Pipeline` or its ``module:name``); raises :class:`StepFailed` when a step fails.

    ``refresh=True`` (or a list of step names) re-runs steps whatever the cache
    holds; ``from_step`` re-runs that step and everything after it.
    """
    from keel.config import settings
    from keel.pipelines.lint import lint
    from keel.pipelines.pipeline import load_pipeline
    from keel.tracking.runs import active_run, start_run

    ref = pipe if isinstance(pipe, str) else None
    if isinstance(pipe, str):
        pipe = load_pipeline(pipe)
    bound = pipe.bind(params)
    for k, v in bound.items():
        if isinstance(v, cache.FileRef | Path) and not Path(v).exists():
            raise NotFoundError(f"Pipeline {pipe.name} parameter {k!r}: {str(v)!r} does not exist.", hint="Pass the path of an existing file or folder.")
    graph = pipe.graph(**bound)
    engine = engine or str(settings().engine or "local")
    lint(graph, engine=engine)
    names = list(graph.nodes)
    refresh_set: set[str] = set()
    if refresh is True:
        refresh_set = set(names)
    elif refresh and not isinstance(refresh, bool):
        for n in refresh:
            if n not in graph.nodes:
                raise ValidationError(f"Pipeline {pipe.name} has no step {n!r} to refresh." + did_you_mean(n, names))
            refresh_set.add(n)
    if from_step is not None:
        if from_step not in graph.nodes:
            raise ValidationError(f"Pipeline {pipe.name} has no step {from_step!r}." + did_you_mean(from_step, names), hint=f"Its steps: {', '.join(names)}.")
        refresh_set |= graph.downstream(from_step)
    executor = get_executor(engine, max_workers=max_workers)
    store = get_metadata_store()
    exp = (experiment or pipe.experiment) + ("-smoke" if smoke else "")
    run_tags = {"keel.kind": "pipeline", "keel.pipeline": ref or pipe.ref, "keel.trigger": trigger, "keel.engine": engine, **(tags or {})}
    if smoke:
        run_tags[SMOKE_TAG] = "true"
    if resume_of:
        run_tags["keel.resume_of"] = resume_of
    t0 = time.perf_counter()
    try:
        with start_run(name=pipe.name, experiment=exp, nested=active_run() is not None, tags=run_tags) as prun:
            if bound:
                prun.log_params({k: _param_text(v) for k, v in bound.items()})
            created = now_ms()
            with store.write() as conn:
                conn.execute(sa.insert(pipeline_runs).values(
                    run_id=prun.id, pipeline=ref or pipe.ref, name=pipe.name, params=encode_params(bound),
                    graph=json.dumps(graph.to_dict()), smoke=smoke, engine=engine, trigger=trigger[:255],
                    resume_of=resume_of, created_ms=created,
                ))
                conn.execute(sa.insert(pipeline_steps), [
                    {"run_id": prun.id, "step": n, "status": "pending", "cache_hit": False} for n in names
                ])
            state = _Run(graph, smoke=smoke, refresh=refresh_set, executor=executor, store=store, prun=prun)
            state.on_step = on_step
            result = PipelineResult(prun.id, pipe.name, "running", smoke, state.results, _graph=graph, _outcomes=state.outcomes)
            state.execute()
            result.duration_s = time.perf_counter() - t0
            if state.failed is not None:
                name, exc, message = state.failed
                result.status = "failed"
                hint = state.failed_hint or f"Fix it and run `keel pipelines resume {prun.id}`; finished steps come from the cache."
                raise StepFailed(message, step=name, result=result, hint=hint) from exc
            prun.log_metrics({"keel.steps": len(names), "keel.steps_cached": result.cached, "keel.time_saved_s": result.time_saved_s, "keel.duration_s": result.duration_s})
            result.status = "finished"
            return result
    finally:
        if executor.name == "process":
            executor.shutdown()


def _pipeline_row(run_ref: str) -> Any:
    from keel.tracking.query import resolve_run_id

    store = get_metadata_store()
    with store.read() as conn:
        run_id = resolve_run_id(conn, run_ref)
        row = conn.execute(sa.select(pipeline_runs).where(pipeline_runs.c.run_id == run_id)).first()
    if row is None:
        raise NotFoundError(f"Run {run_ref!r} is not a pipeline run.", hint="List pipeline runs with `keel pipelines ls`.")
    return row


def resume(run_ref: str, *, from_step: str | None = None, engine: str | None = None, on_step: Callable[[StepResult], None] | None = None,
           tags: Mapping[str, str] | None = None) -> PipelineResult:
    """Run a pipeline again with the parameters of run ``run_ref``; finished steps come from the cache.

    ``from_step`` re-runs that step and everything downstream of it; ``tags`` go on the new run
    (the queue's id when a worker resumes it).
    """
    row = _pipeline_row(run_ref)
    return run(
        row.pipeline, decode_params(row.params), smoke=bool(row.smoke), from_step=from_step,
        engine=engine or row.engine, resume_of=row.run_id, trigger=f"resume:{row.run_id}", on_step=on_step, tags=tags,
    )


def run_steps(run_ref: str) -> tuple[Any, list[dict[str, Any]]]:
    """The pipeline run row and its steps (for ``keel pipelines show``)."""
    row = _pipeline_row(run_ref)
    store = get_metadata_store()
    with store.read() as conn:
        steps = [dict(r._mapping) for r in conn.execute(sa.select(pipeline_steps).where(pipeline_steps.c.run_id == row.run_id))]
    return row, steps


def list_runs(pipeline: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Recent pipeline runs with their status and cache counts (for ``keel pipelines ls``)."""
    from keel.store.schema import runs
    from keel.tracking.runs import effective_status_sql

    store = get_metadata_store()
    cached = sa.func.sum(sa.case((pipeline_steps.c.cache_hit, 1), else_=0))
    q = (
        sa.select(
            pipeline_runs.c.run_id, pipeline_runs.c.name, pipeline_runs.c.pipeline, pipeline_runs.c.smoke, pipeline_runs.c.trigger,
            pipeline_runs.c.created_ms, effective_status_sql().label("status"), runs.c.end_ms,
            sa.func.count(pipeline_steps.c.step).label("steps"), cached.label("cached"),
        )
        .join(runs, runs.c.id == pipeline_runs.c.run_id)
        .join(pipeline_steps, pipeline_steps.c.run_id == pipeline_runs.c.run_id, isouter=True)
        .group_by(pipeline_runs.c.run_id, pipeline_runs.c.name, pipeline_runs.c.pipeline, pipeline_runs.c.smoke,
                  pipeline_runs.c.trigger, pipeline_runs.c.created_ms, runs.c.status, runs.c.heartbeat_ms, runs.c.end_ms)
        .order_by(pipeline_runs.c.created_ms.desc())
        .limit(limit)
    )
    if pipeline:
        q = q.where(sa.or_(pipeline_runs.c.name == pipeline, pipeline_runs.c.pipeline == pipeline))
    with store.read() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]
