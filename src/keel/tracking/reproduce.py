"""Restore what can be restored of a run into a folder, and say plainly what cannot.

:func:`reproduce` writes the code (commit, uncommitted diff, untracked files),
the installable package lock and the command; :func:`verify` then rebuilds the
environment in a fresh virtual environment (keel at the recorded version, from
its recorded source or the index), runs the command again and compares the
new run's metrics with the original's.
"""

from __future__ import annotations

import math
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keel.errors import ConflictError, KeelError, ValidationError
from keel.store.blobs import get_artifact_store
from keel.tracking.environment import DIFF_ARTIFACT, LOCK_ARTIFACT, UNTRACKED_PREFIX, keel_version
from keel.tracking.query import RunInfo, get_run

REPRODUCES_ENV = "KEEL_REPRODUCES"  # set for the re-run: its run gets the tag keel.reproduces=<original id>


@dataclass
class Reproduction:
    folder: Path
    restored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    command: str | None = None


def reproduce(run_ref: str, dest: str | Path) -> Reproduction:
    """Write code (commit + stored diff), requirements.txt (the lock) and run.sh for a run."""
    run = get_run(run_ref)
    folder = Path(dest).resolve()
    if folder.exists() and any(folder.iterdir()):
        raise ConflictError(f"{folder} is not empty.", hint="Pass a new or empty folder.")
    folder.mkdir(parents=True, exist_ok=True)
    out = Reproduction(folder)
    blobs = get_artifact_store()
    by_path = {a["path"]: a for a in run.artifacts}
    env = run.env
    git = env.get("git") or {}

    lock = by_path.get(LOCK_ARTIFACT)
    if lock:
        blobs.get_file(lock["digest"], folder / "requirements.txt", what=f"package lock of run {run.id}")
        out.restored.append(f"requirements.txt: the exact package lock ({env.get('packages', '?')} packages, sha256 {lock['digest'][:12]})")
    else:
        out.missing.append("the package lock (the run was recorded without environment capture)")

    code = folder / "code"
    repo, commit = git.get("repo"), git.get("commit")
    if repo and commit and Path(repo, ".git").exists():
        try:
            archive = subprocess.run(["git", "-C", repo, "archive", "--format=tar", commit], capture_output=True, check=True, timeout=120).stdout
            code.mkdir()
            subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True, timeout=120)
            # code/ becomes its own repository at that commit, so `git diff` there shows the
            # uncommitted changes applied below (and git apply never looks at an enclosing repo)
            ident = ["-c", "user.name=keel", "-c", "user.email=keel@localhost"]
            subprocess.run(["git", "init", "-q"], cwd=code, check=True, capture_output=True)
            subprocess.run(["git", "add", "-A"], cwd=code, check=True, capture_output=True)
            subprocess.run(["git", *ident, "commit", "-q", "--allow-empty", "-m", f"{commit} ({git.get('branch')})"], cwd=code, check=True, capture_output=True)
            out.restored.append(f"code/: {repo} at commit {commit[:12]} ({git.get('branch')})")
        except subprocess.CalledProcessError as exc:
            out.missing.append(f"the code at commit {commit}: git could not export it ({exc.stderr.decode(errors='replace').strip()[:200]})")
    elif commit:
        out.missing.append(f"the code: repository {repo} is not on this machine; check out commit {commit} by hand")
    else:
        out.missing.append("the code: the run was not started inside a git repository")

    diff = by_path.get(DIFF_ARTIFACT)
    if diff and code.exists():
        patch = folder / "uncommitted.diff"
        blobs.get_file(diff["digest"], patch, what=f"git diff of run {run.id}")
        applied = subprocess.run(["git", "apply", "--whitespace=nowarn", str(patch)], cwd=code, capture_output=True)
        if applied.returncode == 0:
            out.restored.append("the uncommitted changes (uncommitted.diff, applied to code/)")
        else:
            out.missing.append(f"the uncommitted changes did not apply cleanly: {applied.stderr.decode(errors='replace').strip()[:200]}")
    elif git.get("dirty") and not diff and not git.get("untracked"):
        out.missing.append("the uncommitted changes (the diff was not stored)")

    untracked = [f for f in git.get("untracked") or [] if f.get("path")]
    if untracked and code.exists():
        restored = 0
        for f in untracked:
            target = (code / f["path"]).resolve()
            if not target.is_relative_to(code.resolve()):  # never write outside code/
                out.missing.append(f"untracked file {f['path']!r}: not a path inside the repository")
                continue
            art = by_path.get(UNTRACKED_PREFIX + f["path"])
            if art is None:
                out.missing.append(f"untracked file {f['path']} ({f['size']} bytes, sha256 {str(f.get('sha256'))[:12]}): too large to store")
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            blobs.get_file(art["digest"], target, what=f"untracked file {f['path']} of run {run.id}")
            restored += 1
        if restored:
            out.restored.append(f"{restored} untracked file(s) into code/")
    elif untracked:
        out.missing.append(f"{len(untracked)} untracked file(s): code/ could not be restored")

    local = env.get("packages_local") or []
    if lock:
        notes = [f"{p['name']}=={p['version']} (not in requirements.txt: installed from {p.get('source') or 'a local folder'})" for p in local]
        if notes:
            out.missing.extend(notes)

    argv = env.get("argv") or []
    entry = env.get("entry_point")
    if argv:
        script = argv[0]
        if entry and repo and entry.startswith(repo):
            script = str(Path(entry).relative_to(repo))
        out.command = shlex.join(["python", script, *argv[1:]])
        seeds = env.get("seeds") or {}
        lines = ["#!/usr/bin/env bash", f"# Reproduces run {run.id} ({run.name}).", "set -euo pipefail",
                 'cd "$(dirname "$0")/code"' if code.exists() else "# code/ could not be restored: run from your checkout"]
        if seeds.get("python") is not None:
            lines.append(f"export PYTHONHASHSEED={seeds['python']}")
        lines.append(out.command)
        (folder / "run.sh").write_text("\n".join(lines) + "\n")
        (folder / "run.sh").chmod(0o755)
        out.restored.append(f"run.sh: {out.command}")
    else:
        out.missing.append("the command (no argv recorded)")

    for d in run.datasets:
        out.missing.append(
            f"input data '{d['name']}' ({d['context']}): keel keeps its fingerprint {d['fingerprint'][:12]}, not a copy; "
            f"verify a copy with `keel.log_dataset` gives the same fingerprint" + (f" (source: {d['source']})" if d.get("source") else "")
        )
    out.missing.append(f"the machine: {env.get('platform', '?')} with Python {env.get('python', '?')} (create it yourself: python -m venv .venv && pip install -r requirements.txt)")
    notes = ["# Reproducing run " + run.id, "", "Restored:", *[f"- {r}" for r in out.restored], "", "Not restored:", *[f"- {m}" for m in out.missing], ""]
    (folder / "REPRODUCE.md").write_text("\n".join(notes))
    return out


@dataclass
class Verification:
    """The outcome of :func:`verify`: each metric of the original beside the re-run's."""

    run_id: str
    rerun_id: str | None
    folder: Path
    rows: list[dict[str, Any]] = field(default_factory=list)  # key, original, rerun, ok
    ok: bool = False
    log: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "rerun_id": self.rerun_id, "folder": str(self.folder), "ok": self.ok,
                "metrics": self.rows, "log": None if self.log is None else str(self.log)}


def verify(
    run_ref: str,
    dest: str | Path,
    *,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    python: str | None = None,
    echo: Callable[[str], None] | None = None,
    timeout: float = 3600.0,
) -> Verification:
    """Reproduce ``run_ref`` into ``dest``, rebuild its environment, re-run it and compare metrics.

    A fresh virtual environment (``dest/.venv``, no system site packages) gets
    the recorded lock (``pip install -r requirements.txt``) and keel at the
    recorded version: from its recorded source folder when it still exists,
    else from the package index. ``run.sh`` then runs in that environment
    against the same metadata and artifact stores; its run is tagged
    ``keel.reproduces=<original id>``. Each metric matches when
    ``|new - old| <= atol + rtol * |old|`` (NaN matches NaN).
    """
    say = echo or (lambda _msg: None)
    if rtol < 0 or atol < 0:
        raise ValidationError(f"Tolerances must be >= 0, got rtol={rtol!r}, atol={atol!r}.", hint="Pass e.g. --rtol 1e-6 --atol 1e-9.")
    original = get_run(run_ref)
    out = reproduce(original.id, dest)
    folder = out.folder
    log_path = folder / "verify.log"
    result = Verification(original.id, None, folder, log=log_path)
    if out.command is None or not (folder / "code").exists():
        raise ConflictError(
            f"Run {original.id} cannot be re-run: " + "; ".join(m for m in out.missing if m.startswith(("the code", "the command"))),
            hint="A run can be verified when it was started from a script inside a git repository.",
        )
    if not (folder / "requirements.txt").exists():
        raise ConflictError(f"Run {original.id} has no package lock.", hint="Record runs with KEEL_CAPTURE_ENVIRONMENT on (the default).")
    venv = folder / ".venv"
    with open(log_path, "w") as log:
        say(f"creating a fresh virtual environment in {venv}")
        _call([python or sys.executable, "-m", "venv", str(venv)], log, folder, timeout)
        vpython = str(venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))
        pip = [vpython, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
        say("installing the recorded package lock (pip install -r requirements.txt)")
        _call([*pip, "-r", str(folder / "requirements.txt")], log, folder, timeout)
        spec = _keel_spec(original)
        say(f"installing keel {original.env.get('keel_version', '')} from {spec}")
        _call([*pip, "--no-deps", spec], log, folder, timeout)
        for extra in _other_local(original):
            say(f"installing {extra}")
            _call([*pip, "--no-deps", extra], log, folder, timeout)
        say(f"re-running: {out.command}")
        started = time.time()
        env = _rerun_env(original, venv)
        _call(["bash", str(folder / "run.sh")], log, folder, timeout, env=env)
    result.rerun_id = _find_rerun(original, started)
    if result.rerun_id is None:
        raise ConflictError(
            f"The re-run of {original.id} finished but recorded no run.", hint=f"See {result.log} for its output."
        )
    rerun = get_run(result.rerun_id)
    result.rows = compare_metrics(original.metrics, rerun.metrics, rtol=rtol, atol=atol)
    result.ok = all(r["ok"] for r in result.rows)
    return result


def compare_metrics(old: dict[str, float], new: dict[str, float], *, rtol: float, atol: float) -> list[dict[str, Any]]:
    """One row per metric of ``old``: its value, the new one and whether they match within the tolerance."""
    rows = []
    for key in sorted(old):
        a, b = old[key], new.get(key)
        if b is None:
            ok = False
        elif math.isnan(a) or math.isnan(b):
            ok = math.isnan(a) and math.isnan(b)
        else:
            ok = abs(b - a) <= atol + rtol * abs(a)
        rows.append({"key": key, "original": a, "rerun": b, "ok": ok})
    return rows


def _call(cmd: list[str], log: Any, cwd: Path, timeout: float, env: dict[str, str] | None = None) -> None:
    log.write(f"$ {shlex.join(cmd)}\n")
    log.flush()
    try:
        done = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise KeelError(f"`{shlex.join(cmd)[:200]}` did not finish in {timeout:g} s.", hint=f"See {log.name}.") from None
    if done.returncode != 0:
        raise KeelError(
            f"`{shlex.join(cmd)[:200]}` failed with exit code {done.returncode}.", hint=f"See {log.name} for its output."
        )


def _keel_spec(run: RunInfo) -> str:
    """What pip installs for keel: the recorded source folder if it still exists, else keel==version."""
    version = run.env.get("keel_version")
    for p in run.env.get("packages_local") or []:
        if str(p.get("name", "")).lower() != "keel":
            continue
        source = _local_path(p.get("source"))
        if source is not None:
            return str(source)
        version = version or p.get("version")
    return f"keel=={version or keel_version()}"


def _other_local(run: RunInfo) -> list[str]:
    """Folders of the other locally installed distributions that still exist."""
    out = []
    for p in run.env.get("packages_local") or []:
        if str(p.get("name", "")).lower() == "keel":
            continue
        source = _local_path(p.get("source"))
        if source is not None:
            out.append(str(source))
    return out


def _local_path(url: Any) -> Path | None:
    if not isinstance(url, str) or not url.startswith("file://"):
        return None
    from urllib.parse import unquote, urlparse

    path = Path(unquote(urlparse(url).path))
    return path if path.exists() else None


def _rerun_env(run: RunInfo, venv: Path) -> dict[str, str]:
    """The environment of the re-run: the fresh venv first on PATH, the same stores, the same experiment."""
    from keel.config import settings

    s = settings()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    for name in ("metadata_uri", "artifacts_uri", "lake_uri", "online_uri"):
        env[f"KEEL_{name.upper()}"] = str(getattr(s, name))
    env["KEEL_EXPERIMENT"] = run.experiment
    env[REPRODUCES_ENV] = run.id
    return env


def _find_rerun(run: RunInfo, started: float) -> str | None:
    import pandas as pd

    from keel.tracking.search import search_runs

    try:
        found = search_runs(
            experiment=run.experiment_id, filter=f"tags.`keel.reproduces` = '{run.id}'",
            order_by=["start_time DESC"], max_results=10,
        )
    except KeelError:  # no run carries the tag (yet)
        return None
    found = found[pd.isna(found["parent_id"]) & (found["start_time"] >= pd.Timestamp(started - 1, unit="s", tz="UTC"))]
    return None if found.empty else str(found["run_id"].iloc[0])
