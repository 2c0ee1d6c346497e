"""Where steps and tuning trials run: in-process, a local process pool, or Ray.

An executor is one method, ``submit(fn, *args) -> Future``; the runner drives
every engine the same way. Workers receive a :class:`StepTask` holding the
step's import reference and its inputs as blob digests, run the function under
the step's own child run, store the output by content and send back its digest.
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from keel.errors import DependencyError, KeelError, ValidationError, did_you_mean, missing_extra

ENGINES = ("local", "process", "ray")


@dataclass(frozen=True)
class BlobRef:
    """An upstream output, by content: what workers load instead of receiving the object."""

    digest: str
    serializer: str
    selector: tuple[Any, ...] = ()


@dataclass
class StepTask:
    node: str
    step_ref: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    run_id: str | None = None
    smoke: bool = False
    context: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    digest: str
    serializer: str
    size: int
    duration_ms: int
    value: Any = None
    has_value: bool = False


def worker_context(*, ship_path: bool = True) -> dict[str, Any]:
    """What a worker needs to see the same project: folder, KEEL_* settings, and the import path.

    ``ship_path=False`` (Ray) leaves the import path out: the code travels in
    Ray's runtime environment instead, so workers on other machines import it too.
    """
    from keel.config import settings

    return {
        "cwd": os.getcwd(),
        "sys_path": list(sys.path) if ship_path else [],
        "env": {k: v for k, v in os.environ.items() if k.startswith("KEEL_")},
        "root": str(settings().root),
    }


def enter_context(ctx: dict[str, Any]) -> None:
    """Take on the parent's project context; its folder only where this machine has it (one host, shared storage)."""
    if not ctx:
        return
    for p in reversed(ctx["sys_path"]):
        if p not in sys.path:
            sys.path.insert(0, p)
    for k, v in ctx["env"].items():
        os.environ[k] = v
    if os.path.isdir(ctx["root"]):
        os.environ.setdefault("KEEL_HOME", ctx["root"])
    if os.getcwd() != ctx["cwd"] and os.path.isdir(ctx["cwd"]):
        os.chdir(ctx["cwd"])


# import name -> the keel extra that installs it (pyproject's optional dependencies)
EXTRAS = {
    "lightgbm": "lightgbm", "xgboost": "xgboost", "optuna": "tuning", "ray": "ray", "redis": "redis",
    "psycopg": "postgres", "psycopg2": "postgres", "boto3": "s3", "botocore": "s3",
}
_NO_MODULE = re.compile(r"No module named '([^']+)'")


def missing_package(exc: BaseException | None, where: str = "") -> DependencyError | None:
    """The one-line error for an exception that comes from a package that is not installed, else None.

    Looks through the exception's causes (a worker's error arrives wrapped), so
    ``ModuleNotFoundError: lightgbm`` raised in a step, a trial, a process-pool
    worker or a Ray task becomes "... pip install 'keel[lightgbm]'".
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DependencyError):
            return exc
        if isinstance(exc, ImportError):
            name = getattr(exc, "name", None)
            m = _NO_MODULE.search(str(exc))
            module = (m.group(1) if m else name) or ""
            if module:
                root = module.partition(".")[0]
                extra = EXTRAS.get(root)
                install = f"pip install 'keel[{extra}]'" if extra else f"pip install {root} (the distribution that provides the {root!r} module)"
                return DependencyError(f"{where}needs the {root!r} package, which is not installed.", hint=f"Install it with: {install}", module=root)
        nxt = getattr(exc, "cause", None)  # Ray's RayTaskError
        exc = nxt if isinstance(nxt, BaseException) else (exc.__cause__ or exc.__context__)
    return None


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line; a missing package as the install command."""
    dep = missing_package(exc)
    if dep is not None:
        return f"{dep.message} {dep.hint}" if dep.hint else dep.message
    if isinstance(exc, KeelError):
        return str(exc).replace("\n", " ")
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text.splitlines()[0]


def import_ref(ref: str) -> Any:
    module, _, qual = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj


def import_step(ref: str) -> Any:
    """The Step object for ``module:qualname`` of its function."""
    from keel.pipelines.step import Step

    obj = import_ref(ref)
    if isinstance(obj, Step):
        return obj
    module = importlib.import_module(ref.partition(":")[0])
    for value in vars(module).values():
        if isinstance(value, Step) and value.fn is obj:
            return value
    return Step(obj)


_loaded: dict[str, Any] = {}  # digest -> object, per worker: trials of one study share their inputs


def load_blob(ref: BlobRef, *, memo: bool = False) -> Any:
    from keel.pipelines import serializers
    from keel.pipelines.graph import select
    from keel.store.blobs import get_artifact_store

    if memo and ref.digest in _loaded:
        return select(_loaded[ref.digest], ref.selector)
    data = get_artifact_store().get_bytes(ref.digest, what=f"step output {ref.digest[:12]}")
    value = serializers.get(ref.serializer).loads(data)
    if memo:
        while len(_loaded) >= 4:
            _loaded.pop(next(iter(_loaded)))
        _loaded[ref.digest] = value
    return select(value, ref.selector)


def resolve(value: Any, *, memo: bool = False) -> Any:
    if isinstance(value, BlobRef):
        return load_blob(value, memo=memo)
    if isinstance(value, list):
        return [resolve(v, memo=memo) for v in value]
    if isinstance(value, tuple):
        return tuple(resolve(v, memo=memo) for v in value)
    if isinstance(value, dict):
        return {k: resolve(v, memo=memo) for k, v in value.items()}
    return value


def store_output(value: Any, serializer: str | None, inputs: Any = None) -> tuple[str, str, int]:
    """Write a step output by content; ``inputs`` (the step's arguments) type the packages of model outputs."""
    from keel.pipelines import serializers
    from keel.store.blobs import get_artifact_store

    ser = serializers.choose(value, serializer)
    data = ser.dumps(value, inputs) if isinstance(ser, serializers.ModelSerializer) else ser.dumps(value)
    digest, size = get_artifact_store().put_bytes(data)
    return digest, ser.name, size


def record_models(store: Any, run_id: str, digest: str) -> dict[str, str]:
    """Record each package of a "model" output with a run, as keel.log_model does; {name: runs:/ URI}.

    A package the run logged itself under the same name (keel.log_model) is kept.
    """
    import mimetypes

    import sqlalchemy as sa

    from keel.models.package import META_FILE
    from keel.pipelines.serializers import ModelSerializer
    from keel.store.blobs import get_artifact_store
    from keel.store.schema import artifacts
    from keel.tracking.artifacts import record

    blobs = get_artifact_store()
    packages = ModelSerializer().packages(blobs.get_bytes(digest, what=f"step output {digest[:12]}"))
    with store.read() as conn:
        logged = set(conn.execute(
            sa.select(artifacts.c.path).where(
                artifacts.c.owner_kind == "run", artifacts.c.owner_id == run_id, artifacts.c.path.in_([f"{p}/{META_FILE}" for p in packages])
            )
        ).scalars())
    rows: list[tuple[str, str, int, str | None]] = []
    for pkg, files in packages.items():
        if f"{pkg}/{META_FILE}" in logged:
            continue
        for rel, body in sorted(files.items()):
            d, size = blobs.put_bytes(body)
            rows.append((f"{pkg}/{rel}", d, size, mimetypes.guess_type(rel)[0]))
    record(store, "run", run_id, rows)
    return {pkg: f"runs:/{run_id}/{pkg}" for pkg in packages}


def call_step(step: Any, args: tuple[Any, ...], kwargs: dict[str, Any], smoke: bool) -> Any:
    """Run the function with its retries, in or out of smoke mode."""
    from keel.pipelines.smoke import sample_output, smoke_mode

    attempt = 0
    while True:
        try:
            with smoke_mode(smoke):
                out = step.fn(*args, **kwargs)
            break
        except Exception:
            attempt += 1
            if attempt > step.retries:
                raise
            time.sleep(min(0.1 * 2**attempt, 5.0))
    if smoke and step.sample:
        out = sample_output(out)
    return out


def run_task(task: StepTask) -> Outcome:
    """The worker side: run one step under its (reopened) child run and store the output."""
    enter_context(task.context)
    step = import_step(task.step_ref)
    from keel.tracking.runs import start_run

    t0 = time.perf_counter()
    with start_run(run_id=task.run_id) if task.run_id else _null():
        args, kwargs = resolve(task.args), resolve(task.kwargs)
        out = call_step(step, args, kwargs, task.smoke)
        digest, ser, size = store_output(out, step.serializer, (args, kwargs))
    return Outcome(digest, ser, size, int((time.perf_counter() - t0) * 1000))


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def call_in_context(ctx: dict[str, Any], fn_ref: str, *args: Any) -> Any:
    """Run ``module:function`` in a worker after entering the parent's project context."""
    enter_context(ctx)
    return import_ref(fn_ref)(*args)


class Executor(Protocol):
    name: str
    parallel: bool

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future[Any]: ...
    def shutdown(self) -> None: ...


class LocalExecutor:
    """Runs each call at once, in this process (the default)."""

    name = "local"
    parallel = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future[Any]:
        fut: cf.Future[Any] = cf.Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            fut.set_exception(exc)
        return fut

    def shutdown(self) -> None:
        return None


class ProcessExecutor:
    """A local pool of spawned processes (safe on every OS; functions go by import reference)."""

    name = "process"
    parallel = True

    def __init__(self, max_workers: int | None = None) -> None:
        import multiprocessing

        self.max_workers = max_workers or max(2, os.cpu_count() or 2)
        self.pool = cf.ProcessPoolExecutor(self.max_workers, mp_context=multiprocessing.get_context("spawn"))
        for _ in range(self.max_workers):  # start every worker now, while the parent prepares the first steps
            self.pool.submit(_warm)

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future[Any]:
        return self.pool.submit(fn, *args)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


# Never shipped to Ray workers: keel's state, version control, virtualenvs, caches, data files
# (data goes through the stores or shared storage).
RAY_EXCLUDES = [".keel", ".git", ".venv*", "venv", "__pycache__", "*.pyc", ".mypy_cache", ".ruff_cache", ".pytest_cache",
                "*.parquet", "*.csv", "*.npy", "*.pkl", "*.zip", "*.tar.gz"]


def ray_runtime_env(root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Ray's runtime environment for keel's tasks: the project folder as ``working_dir`` and the KEEL_* settings.

    Ray uploads the folder once (by content) and every worker, on any node,
    starts in its own copy, so the project's modules import there without the
    driver's ``sys.path``.
    """
    from keel.config import settings

    folder = Path(root or settings().root).resolve()
    env: dict[str, Any] = {"env_vars": {k: v for k, v in os.environ.items() if k.startswith("KEEL_")}}
    if folder != Path(folder.anchor):
        env["working_dir"] = str(folder)
        env["excludes"] = list(RAY_EXCLUDES)
    return env


class RayExecutor:
    """Ray tasks on a cluster (KEEL_RAY_ADDRESS) or a local Ray; the project's code ships in Ray's runtime environment."""

    name = "ray"
    parallel = True

    def __init__(self, address: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise missing_extra("ray", "ray") from None
        self.ray = ray
        self.runtime_env = ray_runtime_env()
        remote = ray.remote(_ray_call)
        if not ray.is_initialized():
            from keel.config import settings

            addr = address or str(settings().ray_address or "") or None
            for attempt in (1, 2):
                try:
                    ray.init(address=addr, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True, runtime_env=self.runtime_env)
                    break
                except Exception as exc:  # a local node given Ray's fixed 30 s to start, on a loaded machine: once more
                    if addr is not None or attempt == 2 or "timed out during startup" not in str(exc):
                        raise
                    ray.shutdown()
        else:  # Ray was started by the caller: the environment goes with each task
            remote = remote.options(runtime_env=self.runtime_env)
        self._remote = remote

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future[Any]:
        ref = self._remote.remote(fn, *args)
        return ref.future()

    def shutdown(self) -> None:
        return None  # Ray stays up for the next run in this process; ray.shutdown() ends it


def _warm() -> None:
    """Import what steps and trials need, once per worker."""
    import keel.pipelines.tuning
    import keel.tracking.runs  # noqa: F401


def _ray_call(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


_ray_executor: RayExecutor | None = None


def shutdown_ray() -> None:
    """Stop the Ray runtime this process started (it also stops when the process exits)."""
    global _ray_executor
    if _ray_executor is not None:
        _ray_executor.ray.shutdown()
        _ray_executor = None


def get_executor(engine: str | None = None, *, max_workers: int | None = None) -> Executor:
    """The executor for ``engine`` (default: KEEL_ENGINE, else local)."""
    global _ray_executor
    if engine is None:
        from keel.config import settings

        engine = str(settings().engine or "local")
    if engine not in ENGINES:
        raise ValidationError(f"Unknown engine {engine!r}." + did_you_mean(engine, ENGINES), hint=f"Use one of {', '.join(ENGINES)}.")
    if engine == "process":
        return ProcessExecutor(max_workers)
    if engine == "ray":
        if _ray_executor is None:
            _ray_executor = RayExecutor()
        return _ray_executor
    return LocalExecutor()
