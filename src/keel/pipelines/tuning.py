"""``@keel.tune``: a step that searches hyperparameters with Optuna.

The search space is declared beside the step; the function is called once per
trial with ``params`` (this trial's values) and, when it accepts it, ``trial``
(report intermediate values, ask whether to prune). Each trial is a child run
of the step's run. Trials run through the pipeline's executor: one after the
other in-process, or several at once on the process pool or Ray, sharing one
Optuna journal kept in the metadata store (:mod:`keel.pipelines.journal`), so
that pruning sees every trial wherever it runs. The step's output is a
dict: ``params``, ``value``, ``model`` (what the best trial returned),
``best_trial``, ``best_run_id``, ``trials``, ``pruned``, ``failed``.

Example::

    @keel.tune(space={"n_estimators": (10, 300), "max_depth": [3, 5, 8], "lr": (1e-3, 0.3, "log")},
               n_trials=50, direction="maximize")
    def train(df, *, params, trial):
        model = ...
        for epoch in range(10):
            trial.report(score, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return score, model
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import inspect
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from keel.errors import ValidationError, missing_extra
from keel.pipelines.step import Step


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise missing_extra("optuna", "tuning") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def distributions(space: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """Optuna distributions from the shorthand: (lo, hi), (lo, hi, "log"), (lo, hi, step), [choices]."""
    optuna = _optuna()
    D = optuna.distributions
    out: dict[str, Any] = {}
    for name, spec in space.items():
        if isinstance(spec, D.BaseDistribution):
            out[name] = spec
        elif isinstance(spec, list) and spec:
            out[name] = D.CategoricalDistribution(spec)
        elif isinstance(spec, tuple) and len(spec) in (2, 3) and all(isinstance(v, int | float) for v in spec[:2]):
            lo, hi = spec[0], spec[1]
            log = len(spec) == 3 and spec[2] == "log"
            step = spec[2] if len(spec) == 3 and not isinstance(spec[2], str) else None
            if lo >= hi:
                raise ValidationError(f"Search space {name!r}{where}: low {lo} is not below high {hi}.")
            if isinstance(lo, int) and isinstance(hi, int) and not isinstance(step, float):
                out[name] = D.IntDistribution(lo, hi, log=log, step=step or 1)
            else:
                out[name] = D.FloatDistribution(float(lo), float(hi), log=log, step=step)
        else:
            raise ValidationError(
                f"Search space {name!r}{where} is {spec!r}.",
                hint="Use (low, high), (low, high, 'log'), (low, high, step), a list of choices, or an optuna distribution.",
            )
    return out


class Trial:
    """What the tuned function sees: this trial's ``params``, ``report`` and ``should_prune``."""

    def __init__(self, trial: Any, run: Any) -> None:
        self._trial = trial
        self._run = run
        self.params: dict[str, Any] = dict(trial.params)
        self.number: int = trial.number

    def report(self, value: float, step: int) -> None:
        """An intermediate value (e.g. the validation score after each epoch); pruning compares these."""
        self._trial.report(float(value), int(step))
        if self._run is not None:
            self._run.log_metric("intermediate", float(value), step=int(step))

    def should_prune(self) -> bool:
        return bool(self._trial.should_prune())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)


@dataclass
class TrialTask:
    step_ref: str
    number: int
    trial_id: int
    params: dict[str, Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    run_id: str
    study_name: str
    journal: str | None
    smoke: bool
    context: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrialOutcome:
    number: int
    state: str  # complete | pruned | failed
    value: float | None = None
    model_digest: str | None = None
    model_serializer: str | None = None
    error: str | None = None
    duration_ms: int = 0


def run_trial(task: TrialTask, trial: Any = None, step: Any = None, run: Any = None) -> TrialOutcome:
    """One trial, in this process (``trial`` given) or in a worker (rebuilt from the journal)."""
    from keel.pipelines import executors
    from keel.pipelines.smoke import smoke_mode
    from keel.tracking.runs import start_run

    executors.enter_context(task.context)
    optuna = _optuna()
    if step is None:
        step = executors.import_step(task.step_ref)
    if trial is None:
        from keel.pipelines import journal

        assert task.journal is not None
        study = optuna.load_study(study_name=task.study_name, storage=journal.storage(task.journal))
        trial = optuna.trial.Trial(study, task.trial_id)
    t0 = time.perf_counter()
    args, kwargs = executors.resolve(task.args, memo=True), executors.resolve(task.kwargs, memo=True)
    with start_run(run_id=task.run_id) if run is None else contextlib.nullcontext(run) as run:
        run.log_params({k: v if isinstance(v, str | int | float | bool) else str(v) for k, v in task.params.items()})
        extra: dict[str, Any] = {"params": dict(task.params)}
        if step.accepts_trial:
            extra["trial"] = Trial(trial, run)
        try:
            with smoke_mode(task.smoke):
                out = step.fn(*args, **kwargs, **extra)
        except optuna.TrialPruned:
            run.set_tags({"keel.trial.state": "pruned"})
            return TrialOutcome(task.number, "pruned", duration_ms=int((time.perf_counter() - t0) * 1000))
        value, model = _split(out, step.where)
        run.log_metric("value", value)
        run.set_tags({"keel.trial.state": "complete"})
        digest = ser = None
        if model is not None:
            # a model is packaged as keel.log_model does (keel.load_model("runs:/<trial run>/model")); anything else is the trial's output
            digest, ser, size = executors.store_output(model, None, (args, kwargs))
            if ser == "model":
                executors.record_models(run.store, run.id, digest)
            else:
                from keel.tracking.artifacts import record

                record(run.store, "run", run.id, [("output", digest, size, None)])
    return TrialOutcome(task.number, "complete", value, digest, ser, duration_ms=int((time.perf_counter() - t0) * 1000))


def _split(out: Any, where: str) -> tuple[float, Any]:
    if isinstance(out, dict) and "value" in out:
        return float(out["value"]), out.get("model")
    if isinstance(out, tuple) and len(out) == 2:
        return float(out[0]), out[1]
    if isinstance(out, int | float):
        return float(out), None
    raise ValidationError(
        f"The tuned function at {where} returned a {type(out).__name__}.",
        hint="Return the objective value, or (value, model), or {'value': ..., 'model': ...}.",
    )


class TuneStep(Step):
    """A step that runs an Optuna study; see :func:`tune`."""

    kind = "tune"

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        space: Mapping[str, Any],
        n_trials: int = 20,
        direction: str = "maximize",
        pruner: Any = "median",
        seed: int = 0,
        parallel: int | None = None,
        smoke_trials: int = 2,
        **options: Any,
    ) -> None:
        super().__init__(fn, **options)
        sig = inspect.signature(fn)
        if "params" not in sig.parameters:
            raise ValidationError(f"Tuned step {self.name} at {self.where} takes no `params` argument.", hint="Add a `params` keyword: def train(df, *, params, trial=None).")
        self.accepts_trial = "trial" in sig.parameters
        self.signature = sig.replace(parameters=[p for k, p in sig.parameters.items() if k not in ("params", "trial")])
        if direction not in ("maximize", "minimize"):
            raise ValidationError(f"Tuned step {self.name} at {self.where}: direction {direction!r} is not maximize or minimize.")
        if not isinstance(n_trials, int) or n_trials < 1:
            raise ValidationError(f"Tuned step {self.name} at {self.where}: n_trials={n_trials!r} is not a positive integer.")
        self.space = dict(space)
        distributions(self.space, f" of step {self.name} at {self.where}")  # checked now, at import
        self.n_trials = n_trials
        self.direction = direction
        self.pruner = pruner
        self.seed = seed
        self.parallel = parallel
        self.smoke_trials = smoke_trials

    def options(self) -> dict[str, Any]:
        return {
            **super().options(), "space": repr(sorted(self.space.items())), "n_trials": self.n_trials,
            "direction": self.direction, "pruner": self.pruner if isinstance(self.pruner, str | None) else type(self.pruner).__qualname__, "seed": self.seed, "smoke_trials": self.smoke_trials,
        }

    def _pruner(self) -> Any:
        optuna = _optuna()
        if self.pruner in (None, "none"):
            return optuna.pruners.NopPruner()
        if self.pruner == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
        if isinstance(self.pruner, str):
            raise ValidationError(f"Tuned step {self.name}: unknown pruner {self.pruner!r}.", hint="Use 'median', None or an optuna pruner.")
        return self.pruner

    def run_study(self, args: tuple[Any, ...], kwargs: dict[str, Any], *, executor: Any, smoke: bool, run: Any) -> dict[str, Any]:
        """Run every trial under ``run`` (the step's run) and return the best trial's params and model."""
        from keel.pipelines import journal as journals

        # trials on other processes or machines share the study through the metadata store
        journal = journals.new_journal_id() if executor.parallel else None
        try:
            return self._study(args, kwargs, executor=executor, smoke=smoke, run=run, journal=journal)
        finally:
            if journal:
                journals.drop(journal)

    def _study(self, args: tuple[Any, ...], kwargs: dict[str, Any], *, executor: Any, smoke: bool, run: Any, journal: str | None) -> dict[str, Any]:
        from keel.pipelines import executors
        from keel.pipelines import journal as journals
        from keel.tracking import runs as _runs

        optuna = _optuna()
        n_trials = min(self.n_trials, self.smoke_trials) if smoke else self.n_trials
        dists = distributions(self.space)
        study_name = f"keel-{run.id}"
        if journal:
            storage: Any = journals.storage(journal)
        else:
            storage = optuna.storages.InMemoryStorage()
        study = optuna.create_study(
            study_name=study_name, storage=storage, direction=self.direction,
            sampler=optuna.samplers.TPESampler(seed=self.seed), pruner=self._pruner(),
        )
        ctx = executors.worker_context(ship_path=executor.name != "ray") if executor.parallel else {}
        width: int = (self.parallel or int(getattr(executor, "max_workers", 4))) if executor.parallel else 1
        blob_args = args if not executor.parallel else _to_blobs(args)
        blob_kwargs = kwargs if not executor.parallel else _to_blobs(kwargs)
        outcomes: dict[int, TrialOutcome] = {}
        trial_runs: dict[int, str] = {}
        in_flight: dict[cf.Future[Any], tuple[Any, Any]] = {}
        asked = 0

        missing: list[Any] = []  # a package a trial needs is not installed: every trial would fail the same way

        def tell(trial: Any, trial_run: Any, out: TrialOutcome | None, exc: BaseException | None) -> None:
            if exc is not None:
                dep = executors.missing_package(exc)
                if dep is not None:
                    missing.append(dep)
                out = TrialOutcome(trial.number, "failed", error=executors.one_line(exc))
                if not trial_run.ended:
                    trial_run.end("failed", error=out.error)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                assert out is not None
                if out.state == "pruned":
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                else:
                    study.tell(trial, out.value)
                trial_run.end("finished")
            outcomes[trial.number] = out

        while (asked < n_trials and not missing) or in_flight:
            while asked < n_trials and len(in_flight) < width and not missing:
                trial = study.ask(dists)
                asked += 1
                # in parallel the trial run is open but not active: the next trial starts beside it
                trial_run = _runs.start_run(name=f"{self.name}-trial-{trial.number}", nested=True, activate=not executor.parallel,
                                            tags={"keel.kind": "trial", "keel.trial.number": str(trial.number), "keel.step": self.name})
                trial_runs[trial.number] = trial_run.id
                task = TrialTask(self.ref, trial.number, trial._trial_id, dict(trial.params), blob_args, blob_kwargs,
                                 trial_run.id, study_name, journal, smoke, ctx)
                if executor.parallel:
                    in_flight[executor.submit(run_trial, task)] = (trial, trial_run)
                else:
                    try:
                        out = run_trial(task, trial=trial, step=self, run=trial_run)
                        tell(trial, trial_run, out, None)
                    except Exception as exc:
                        tell(trial, trial_run, None, exc)
            if in_flight:
                done, _ = cf.wait(list(in_flight), return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    trial, trial_run = in_flight.pop(fut)
                    try:
                        tell(trial, trial_run, fut.result(), None)
                    except Exception as exc:
                        tell(trial, trial_run, None, exc)
        if missing:
            dep = missing[0]
            first = min(o.number for o in outcomes.values() if o.state == "failed")
            raise type(dep)(f"Trial {first} {dep.message}", hint=dep.hint, **dep.detail)
        complete = [o for o in outcomes.values() if o.state == "complete"]
        if not complete:
            errors = sorted({o.error for o in outcomes.values() if o.error})
            raise ValidationError(
                f"Tuned step {self.name} ({self.where}): none of its {n_trials} trials completed."
                + (f" First error: {errors[0]}" if errors else ""),
                hint="Look at the failed trial runs (keel runs ls)." if errors else "Every trial was pruned: loosen pruning (pruner=None, or more warm-up steps).",
            )
        best = study.best_trial
        best_out = outcomes[best.number]
        model = None
        if best_out.model_digest:
            model = executors.load_blob(executors.BlobRef(best_out.model_digest, best_out.model_serializer or "pickle"))
        run.log_params({f"best.{k}": v if isinstance(v, str | int | float | bool) else str(v) for k, v in best.params.items()})
        run.log_metrics({"best_value": float(best.value), "trials": len(outcomes), "pruned": sum(o.state == "pruned" for o in outcomes.values())})
        run.set_tags({"keel.tune.best_run": trial_runs[best.number]})
        return {
            "params": dict(best.params), "value": float(best.value), "model": model, "best_trial": best.number,
            "best_run_id": trial_runs[best.number], "trials": len(outcomes),
            "pruned": sum(o.state == "pruned" for o in outcomes.values()),
            "failed": sum(o.state == "failed" for o in outcomes.values()),
        }


def _to_blobs(value: Any) -> Any:
    """Large inputs go to workers by content digest rather than by pickle."""
    from keel.pipelines import executors

    if isinstance(value, tuple):
        return tuple(_to_blobs(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_blobs(v) for k, v in value.items()}
    if type(value).__module__.split(".")[0] in ("pandas", "numpy", "pyarrow"):
        digest, ser, _ = executors.store_output(value, None)
        return executors.BlobRef(digest, ser)
    return value


def tune(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    space: Mapping[str, Any],
    n_trials: int = 20,
    direction: str = "maximize",
    pruner: Any = "median",
    seed: int = 0,
    parallel: int | None = None,
    smoke_trials: int = 2,
    **options: Any,
) -> Any:
    """Make a function a tuning step (an Optuna study); see the module docstring."""
    kw = dict(space=space, n_trials=n_trials, direction=direction, pruner=pruner, seed=seed, parallel=parallel, smoke_trials=smoke_trials, **options)
    if fn is not None:
        return TuneStep(fn, **kw)
    return lambda f: TuneStep(f, **kw)
