"""Restore what can be restored of a run into a folder, and say plainly what cannot."""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from keel.errors import ConflictError
from keel.store.blobs import get_artifact_store
from keel.tracking.environment import DIFF_ARTIFACT, LOCK_ARTIFACT
from keel.tracking.query import get_run


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
    elif git.get("dirty") and not diff:
        out.missing.append("the uncommitted changes (the diff was not stored)")

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
