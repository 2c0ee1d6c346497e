"""The project pipelines the pipeline-route and worker tests queue."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

PIPELINES = '''
import keel


@keel.step
def load(n: int, pause: float = 0.0) -> list:
    import time

    if n < 0:
        raise ValueError("n must not be negative")
    time.sleep(pause)
    return list(range(n))


@keel.step
def total(xs: list, k: int = 2) -> int:
    return sum(xs) * k


@keel.pipeline(experiment="queued")
def training(n: int = 10, k: int = 2, pause: float = 0.0):
    """Sum a range, k times."""
    return total(load(n, pause), k)
'''


def write_pipelines(project: Path) -> None:
    """``<project>/pipelines.py``, imported afresh by whoever reads it next."""
    (project / "pipelines.py").write_text(textwrap.dedent(PIPELINES))
    sys.modules.pop("pipelines", None)
