"""Smoke runs: the same pipeline on a sample of the data with shrunken parameters.

``--smoke`` runs every step with ``keel.pipelines.sample(df)`` returning a small
sample, the output of steps marked ``sample=True`` sampled, and each step's
``shrink`` values (fewer trees, fewer epochs) in place of its parameters. The
run goes to the experiment ``<experiment>-smoke``, tagged ``keel.smoke=true``,
which the registry refuses to promote.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

SMOKE_TAG = "keel.smoke"
PROMOTION_TAG = "keel.smoke.promotion"  # set by the registry's dry-run promote: "would promote ...: yes/no (why)"
SAMPLE_ROWS = 200
_smoke: contextvars.ContextVar[bool] = contextvars.ContextVar("keel_smoke", default=False)


def is_smoke() -> bool:
    """True inside a step of a ``--smoke`` run."""
    return _smoke.get()


@contextmanager
def smoke_mode(on: bool) -> Iterator[None]:
    token = _smoke.set(on)
    try:
        yield
    finally:
        _smoke.reset(token)


def sample(data: Any, n: int = SAMPLE_ROWS, *, seed: int = 0) -> Any:
    """``data`` itself in a normal run; at most ``n`` rows of it (seeded) in a smoke run.

    Works on pandas DataFrames/Series, Arrow tables, NumPy arrays and lists.
    """
    if not _smoke.get():
        return data
    return _take(data, n, seed)


def _take(data: Any, n: int, seed: int) -> Any:
    length = _len(data)
    if length is None or length <= n:
        return data
    import numpy as np

    idx = np.sort(np.random.default_rng(seed).choice(length, size=n, replace=False))
    mod = type(data).__module__
    if mod.startswith("pandas"):
        return data.iloc[idx]
    if mod.startswith("pyarrow"):
        return data.take(idx)
    if mod == "numpy":
        return data[idx]
    if isinstance(data, list):
        return [data[i] for i in idx]
    if isinstance(data, tuple):
        return tuple(_take(d, n, seed) for d in data)
    return data


def _len(data: Any) -> int | None:
    if isinstance(data, tuple):
        return None if not data else _len(data[0]) and max((_len(d) or 0) for d in data)
    try:
        return len(data)
    except TypeError:
        return None


def sample_output(data: Any, n: int = SAMPLE_ROWS) -> Any:
    """The output of a ``sample=True`` step in a smoke run: sampled, tuples member-wise."""
    if isinstance(data, tuple):
        return tuple(_take(d, n, 0) for d in data)
    if isinstance(data, dict):
        return {k: _take(v, n, 0) for k, v in data.items()}
    return _take(data, n, 0)


# -- keel ci -----------------------------------------------------------------------

@dataclass
class CiReport:
    """What ``keel ci`` checked: the smoke run and each attached contract."""

    pipeline: str | None
    run_id: str | None = None
    smoke_ok: bool = False
    smoke_error: str | None = None
    summary: str = ""
    promotions: list[str] = field(default_factory=list)
    contracts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.smoke_ok and all(c["passed"] for c in self.contracts)


def promotion_verdicts(run_id: str) -> list[str]:
    """What the dry-run promotions of a smoke pipeline run found, one line each ("would promote ...: yes/no (why)")."""
    from keel.tracking.query import get_run

    out = []
    pending = list(get_run(run_id).children)
    while pending:  # steps, and runs the steps started
        child = get_run(pending.pop(0))
        source = child.tags.get("keel.cache.source_run")
        if PROMOTION_TAG in child.tags:
            out.append(str(child.tags[PROMOTION_TAG]))
        elif source:  # a cached step: the verdict of the run its output came from
            verdict = get_run(str(source)).tags.get(PROMOTION_TAG)
            if verdict:
                out.append(f"{verdict} (cached from run {str(source)[:12]})")
        pending.extend(child.children)
    return out


def run_ci(pipeline: str | None, params: dict[str, Any] | None = None, *, engine: str | None = None, contracts: bool = True) -> CiReport:
    """Run the smoke pipeline (when ``pipeline`` is given), then validate every attached contract."""
    from keel.errors import KeelError
    from keel.pipelines.runner import StepFailed, run

    report = CiReport(pipeline)
    if pipeline is not None:
        try:
            result = run(pipeline, params, smoke=True, engine=engine, trigger="ci")
            report.run_id, report.smoke_ok, report.summary = result.run_id, True, result.summary()
            report.promotions = promotion_verdicts(result.run_id)
        except StepFailed as exc:
            report.run_id, report.smoke_error = exc.result.run_id, str(exc)
        except KeelError as exc:
            report.smoke_error = str(exc)
    else:
        report.smoke_ok = True  # nothing to smoke-test: only the contracts
    if contracts:
        report.contracts = _validate_contracts()
    return report


def _validate_contracts() -> list[dict[str, Any]]:
    try:
        import keel.features  # noqa: F401  (registers the project's sources and feature views as targets)
        from keel.contracts import validate
        from keel.contracts.targets import attached_targets, resolve_data
    except ImportError:
        return []
    from keel.errors import KeelError

    out = []
    for target in attached_targets():
        try:
            rep = validate(resolve_data(target), target=target, stage="ci")
            out.append({"target": target, "passed": bool(rep.passed), "errors": len(rep.errors), "detail": rep.summary()})
        except KeelError as exc:
            out.append({"target": target, "passed": False, "errors": 1, "detail": str(exc)})
    return out


WORKFLOW = """\
# Written by `keel init --ci github`. Smoke run on every push; the full pipeline on main.
name: keel
on:
  push:
  pull_request:
jobs:
  smoke:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
{install}
      - run: keel ci {pipeline}
  full:
    if: github.ref == 'refs/heads/main'
    needs: smoke
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
{install}
      - run: keel pipelines run {pipeline}
"""

# keel extra -> the top-level modules whose import in the project's code needs it
EXTRA_MODULES = {
    "tuning": ("optuna",), "lightgbm": ("lightgbm",), "xgboost": ("xgboost",), "ray": ("ray",),
    "s3": ("boto3", "botocore"), "redis": ("redis",), "postgres": ("psycopg", "psycopg2"),
}
_SKIP_DIRS = {".keel", ".git", ".venv", "venv", "node_modules", "__pycache__", "site-packages", ".github"}


def project_extras(folder: Any) -> list[str]:
    """The keel extras a project needs: from what its Python files import (``@keel.tune`` needs
    optuna) and from its settings (a PostgreSQL metadata store, Redis online store, S3, Ray)."""
    import ast
    from pathlib import Path

    from keel.config import load_settings

    root = Path(folder)
    modules: set[str] = set()
    for path in root.rglob("*.py"):
        if _SKIP_DIRS & set(path.relative_to(root).parts[:-1]):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module.split(".")[0])
            elif isinstance(node, ast.Attribute) and node.attr == "tune" and isinstance(node.value, ast.Name) and node.value.id == "keel":
                modules.add("optuna")
    extras = {extra for extra, mods in EXTRA_MODULES.items() if modules & set(mods)}
    s = load_settings(root)
    uris = {str(s.metadata_uri), str(s.online_uri), str(s.artifacts_uri), str(s.lake_uri)}
    if str(s.metadata_uri).startswith("postgresql"):
        extras.add("postgres")
    if str(s.online_uri).startswith("redis"):
        extras.add("redis")
    if any(u.startswith("s3://") for u in uris):
        extras.add("s3")
    if str(s.engine) == "ray":
        extras.add("ray")
    return sorted(extras)


def _install_steps(folder: Any) -> str:
    from pathlib import Path

    extras = project_extras(folder)
    spec = f"keel[{','.join(extras)}]" if extras else "keel"
    lines = [f'      - run: pip install "{spec}"']
    root = Path(folder)
    if (root / "requirements.txt").is_file():
        lines.append("      - run: pip install -r requirements.txt")
    if (root / "pyproject.toml").is_file() or (root / "setup.py").is_file():
        lines.append("      - run: pip install -e .")
    return "\n".join(lines)


def write_github_workflow(folder: Any, pipeline: str = "pipelines:training", *, force: bool = False) -> Any:
    """Write ``.github/workflows/keel.yml`` under ``folder`` (for ``keel init --ci github``); returns its path.

    The workflow installs keel with the extras the project needs (:func:`project_extras`),
    then the project's own requirements.txt or package, if it has one.
    """
    from pathlib import Path

    from keel.errors import ConflictError

    path = Path(folder) / ".github" / "workflows" / "keel.yml"
    if path.exists() and not force:
        raise ConflictError(f"{path} already exists.", hint="Pass force=True (--force) to overwrite it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".yml.tmp")
    tmp.write_text(WORKFLOW.format(pipeline=pipeline, install=_install_steps(folder)))
    tmp.replace(path)
    return path
