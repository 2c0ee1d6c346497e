"""`keel runs reproduce RUN DIR --verify`: a fresh venv from the record, a re-run, the metrics compared."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import keel
from keel.tracking.reproduce import compare_metrics, verify

SCRIPT = """\
import keel
from helpers import SCALE  # an untracked file: restored from the record

with keel.start_run(name="tiny"):
    keel.log_param("n", 5)
    keel.log_metric("score", sum(i * i for i in range(5)) / SCALE)
"""


def test_compare_metrics_uses_the_tolerance_and_flags_missing_keys() -> None:
    rows = compare_metrics({"a": 1.0, "b": 2.0, "c": float("nan"), "d": 1.0}, {"a": 1.0 + 1e-9, "b": 2.1, "c": float("nan")}, rtol=1e-6, atol=0)
    assert [(r["key"], r["ok"]) for r in rows] == [("a", True), ("b", False), ("c", True), ("d", False)]


@pytest.mark.slow
@pytest.mark.timeout(1200)  # two real installs of keel's dependencies into fresh venvs
def test_verify_rebuilds_the_environment_reruns_and_compares(
    project: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_NO_COMPILE", "1")  # faster installs; the venvs are thrown away
    source = Path(keel.__file__).resolve().parents[2]  # the keel under test, installed from its folder
    assert (source / "pyproject.toml").exists()
    (project / "train.py").write_text(SCRIPT)
    (project / ".gitignore").write_text(".keel/\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run([*git, "init", "-q"], cwd=project, check=True)
    subprocess.run([*git, "add", "train.py", ".gitignore"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "tiny"], cwd=project, check=True)
    (project / "helpers.py").write_text("SCALE = 7\n")

    # the original run, in a small venv of its own (so its lock is small)
    venv = tmp_path_factory.mktemp("orig") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)], check=True, env=env, timeout=900)
    subprocess.run([str(venv / "bin/python"), "train.py"], cwd=project, check=True, env=env, timeout=300)
    original = keel.search_runs()
    assert len(original) == 1
    run_id = str(original["run_id"].iloc[0])
    assert keel.get_run(run_id).env["git"]["dirty"] is True  # helpers.py is untracked

    result = verify(run_id, tmp_path_factory.mktemp("repro") / "r", rtol=1e-9)
    assert result.ok, (result.rows, result.log.read_text()[-3000:] if result.log else "")
    assert result.rerun_id and result.rerun_id != run_id
    rerun = keel.get_run(result.rerun_id)
    assert rerun.tags["keel.reproduces"] == run_id
    assert rerun.metrics["score"] == pytest.approx(30 / 7)
    assert [r["key"] for r in result.rows] == ["score"]
    fresh = result.folder / ".venv"
    assert not (fresh / "pyvenv.cfg").read_text().count("include-system-site-packages = true")
