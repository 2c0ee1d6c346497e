"""schemathesis (every check) against a real `keel serve`: no 5xx and no response outside the OpenAPI document."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serving.conftest import train_model
from tests.serving.test_server import start_server

pytestmark = pytest.mark.slow
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def test_schemathesis_all_checks_pass_against_keel_serve(local: Path) -> None:
    train_model()
    proc, url = start_server(local, "models:/churn@live")
    try:
        env = {**os.environ, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"}
        run = subprocess.run([str(SCHEMATHESIS), "run", f"{url}/openapi.json", "--checks", "all", "--max-examples", "25", "--seed", "7",
                              "--phases", "examples,coverage,fuzzing", "--no-color"],
                             cwd=local, env=env, capture_output=True, text=True, timeout=900)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-6000:]
    assert "passed" in report and "failed" not in report, report[-3000:]
