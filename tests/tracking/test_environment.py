"""The reproducibility record: untracked files, an installable lock, redacted argv; run references."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import keel
from keel.errors import NotFoundError
from keel.tracking import environment


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@localhost", *args], cwd=root, check=True, capture_output=True)


@pytest.fixture
def repo(project: Path) -> Path:
    (project / "train.py").write_text("print('hi')\n")
    (project / ".gitignore").write_text(".keel/\n*.log\n")
    _git(project, "init", "-q")
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "init")
    return project


def test_untracked_source_files_are_hashed_stored_and_make_the_run_dirty(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    (repo / "helpers.py").write_text("SCALE = 3\n")
    (repo / "ignored.log").write_text("not source\n")
    with keel.start_run() as run:
        pass
    info = keel.get_run(run.id)
    git = info.env["git"]
    assert git["dirty"] is True  # nothing tracked changed: the untracked file alone makes it dirty
    assert [f["path"] for f in git["untracked"]] == ["helpers.py"]  # .gitignore'd files and .keel/ are left out
    from keel.store.blobs import sha256_file

    assert git["untracked"][0]["sha256"] == sha256_file(repo / "helpers.py") and git["untracked"][0]["stored"]
    assert any(a["path"] == "keel/untracked/helpers.py" for a in info.artifacts)

    from keel.tracking.reproduce import reproduce

    out = reproduce(run.id, tmp_path_factory.mktemp("repro") / "r")
    assert (out.folder / "code" / "helpers.py").read_text() == "SCALE = 3\n"
    assert any("untracked" in r for r in out.restored)


def test_a_clean_checkout_is_not_dirty(repo: Path) -> None:
    with keel.start_run() as run:
        pass
    git = keel.get_run(run.id).env["git"]
    assert git["dirty"] is False and git["untracked"] == []


def test_the_package_lock_is_installable(project: Path) -> None:
    """No editable paths, no keel itself: every line is name==version or name @ url, and pip accepts it."""
    lock = environment.package_lock()
    lines = [line for line in lock.splitlines() if line]
    assert lines and all(("==" in line or " @ " in line) for line in lines)
    assert not any(line.lower().startswith("keel==") or line.lower().startswith("keel @") for line in lines)
    assert not any("file:" in line or line.startswith("-e") for line in lines)
    local = {p["name"].lower(): p for p in environment.local_packages()}
    assert local["keel"]["version"] == keel.__version__
    with keel.start_run() as run:
        pass
    env = keel.get_run(run.id).env
    assert env["keel_version"] == keel.__version__ and env["packages_local"]
    # every line is a requirement pip accepts (the slow reproduce test really installs one)
    from packaging.requirements import Requirement

    for line in lines:
        req = Requirement(line)
        assert req.url or str(req.specifier).startswith("=="), line


def test_secrets_in_argv_are_redacted(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [
        "train.py", "--lr", "0.1", "--password", "hunter2", "--api-token=abc123",
        "postgresql://bob:s3cret@db/x", "--name", "plain",
    ])
    with keel.start_run() as run:
        pass
    argv = keel.get_run(run.id).env["argv"]
    assert "hunter2" not in str(argv) and "abc123" not in str(argv) and "s3cret" not in str(argv)
    assert argv[:3] == ["train.py", "--lr", "0.1"] and argv[-2:] == ["--name", "plain"]
    assert argv[4] == "***" and "postgresql://bob:***@db/x" in argv


def test_run_references_are_not_like_patterns(project: Path) -> None:
    """'%' and '_' in a reference are literal: before, '%%%%%%' resolved to any run."""
    with keel.start_run() as run:
        pass
    assert keel.get_run(run.id[:8]).id == run.id
    with pytest.raises(NotFoundError):
        keel.get_run("%%%%%%")
    with pytest.raises(NotFoundError):
        keel.get_run(run.id[:6] + "_" + "%")
