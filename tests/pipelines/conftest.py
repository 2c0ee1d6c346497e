"""Pipeline test helpers: step modules written into the temporary project, imported fresh."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


@pytest.fixture
def write_module(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], ModuleType]]:
    """Write ``<project>/<name>.py`` and import it (again, when rewritten)."""
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    written: list[str] = []

    def write(name: str, source: str) -> ModuleType:
        (project / f"{name}.py").write_text(textwrap.dedent(source))
        sys.modules.pop(name, None)
        importlib.invalidate_caches()
        written.append(name)
        return importlib.import_module(name)

    yield write
    for name in written:
        sys.modules.pop(name, None)


def _run_python(project: Path, code: str, *, wait: bool = True, timeout: float = 120) -> Any:
    """Run Python code in a fresh process inside the project (same KEEL_* environment)."""
    env = {k: v for k, v in os.environ.items()}
    env["PYTHONPATH"] = os.pathsep.join([str(project), *[p for p in sys.path if p]])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    cmd = [sys.executable, "-c", textwrap.dedent(code)]
    if wait:
        return subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=timeout)
    return subprocess.Popen(cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


FLOW = '''
import keel


@keel.step
def load(n: int) -> list:
    return list(range(n))


@keel.step
def double(xs: list) -> list:
    return [x * 2 for x in xs]


@keel.step(shrink={"k": 1})
def total(xs: list, ys: list, k: int = 3) -> int:
    return sum(xs) + sum(ys) * k


@keel.pipeline(experiment="flowexp")
def flow(n: int = 10):
    xs = load(n)
    ys = double(xs)
    return total(xs, ys)
'''


@pytest.fixture
def python(project: Path) -> Callable[..., Any]:
    """``python(code, wait=True)``: run code in a fresh process in the project."""
    return lambda code, **kw: _run_python(project, code, **kw)


@pytest.fixture
def flow(write_module: Callable[[str, str], ModuleType]) -> ModuleType:
    """A three-step pipeline module ``flowmod``: load -> double -> total."""
    return write_module("flowmod", FLOW)
