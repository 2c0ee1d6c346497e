"""schemathesis over keel server's whole OpenAPI document, every check: no 5xx, no response outside the schema.

It runs the schemathesis CLI against a real `keel server` on a free port, in a project
holding a registered model with versions, a pipeline, a queued run and a monitor, so
the generated requests reach the library and not only 404s. It covers every route the
app mounts, so the other routers' routes are held to the same rules.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server._api import Server, train
from tests.server._flows import write_pipelines

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent


@pytest.fixture(params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    from keel.monitoring import define_monitor
    from keel.pipelines import queue

    project: Path = request.getfixturevalue("project" if request.param == "sqlite" else "pg_project")
    train()
    train(seed=1)
    write_pipelines(project)
    queue.enqueue("training", {"n": 2}, run_id="queued-1")
    define_monitor("daily", "churn")
    srv = Server(project)
    yield srv
    srv.stop()
    sys.modules.pop("pipelines", None)


def test_schemathesis_all_checks(server: Server) -> None:
    cli = Path(sys.executable).with_name("schemathesis")
    proc = subprocess.run(
        [str(cli), "--config-file", str(HERE / "schemathesis.toml"), "run", f"{server.url}/openapi.json",
         "--checks", "all", "--phases", "examples,coverage,fuzzing", "--max-examples", "4", "--workers", "1",
         "--seed", "20261203", "--max-failures", "50", "--no-color",
         # MLflow's protocol routes read untyped bodies, as MLflow's own server does: the real mlflow client's tests and
         # the bad-input sweep over every MLflow route (tests/server/test_mlflow.py) cover them, not this schema run
         "--exclude-path-regex", "^/api/2\\.0/mlflow"],
        cwd=server.root, env={**os.environ, "SCHEMATHESIS_HOOKS": ""}, capture_output=True, text=True, timeout=300,
    )
    report = proc.stdout[-20000:] + proc.stderr[-5000:]
    assert proc.returncode == 0, report
    assert "Server error" not in report
    assert "failed:" not in server.log_path.read_text()  # the app logged no unexpected error
