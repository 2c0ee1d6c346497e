"""`python -m keel` and `python -m keel.cli.main` run the CLI (they used to exit 0 doing nothing)."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["keel", "keel.cli.main"])
def test_python_dash_m_runs_the_cli(module: str) -> None:
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "quickstart" in out.stdout and "Usage:" in out.stdout
    bad = subprocess.run([sys.executable, "-m", module, "no-such-command"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "no-such-command" in (bad.stderr + bad.stdout)
