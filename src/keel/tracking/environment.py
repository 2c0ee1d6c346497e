"""The reproducibility record every run captures without being asked, and ``keel.seed``.

Captured: git commit, branch, dirty flag and the uncommitted diff (stored as an
artifact with its hash); entry point and argv; Python version and platform; the
full package lock (name==version of every installed distribution, stored as an
artifact) and its hash; seeds set through :func:`seed`; host and user.
"""

from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from keel.store.blobs import get_artifact_store
from keel.store.metadata import now_ms

LOCK_ARTIFACT = "keel/requirements.lock"
DIFF_ARTIFACT = "keel/git.diff"

_seeds: dict[str, int] = {}
_lock_cache: tuple[str, str] | None = None


def seed(value: int) -> int:
    """Seed Python's, NumPy's (and torch's, when imported) generators and record it on runs."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        from keel.errors import ValidationError

        raise ValidationError(f"Seed {value!r} is not a non-negative integer.", hint="Call keel.seed(42).")
    random.seed(value)
    _seeds["python"] = value
    os.environ["PYTHONHASHSEED"] = str(value)  # inherited by subprocesses
    try:
        import numpy as np

        np.random.seed(value % 2**32)
        _seeds["numpy"] = value
    except ImportError:
        pass
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(value)
        _seeds["torch"] = value
    from keel.tracking.runs import active_run

    run = active_run()
    if run is not None:
        run.set_tag("keel.seed", str(value))
    return value


def package_lock() -> str:
    """name==version of every installed distribution, sorted, one per line."""
    global _lock_cache
    key = ";".join(sys.path)
    if _lock_cache is not None and _lock_cache[0] == key:
        return _lock_cache[1]
    from importlib.metadata import distributions

    seen: dict[str, str] = {}
    for dist in distributions():
        name = dist.metadata["Name"]
        if name and name.lower() not in seen:
            seen[name.lower()] = f"{name}=={dist.version}"
    text = "\n".join(sorted(seen.values(), key=str.lower)) + "\n"
    _lock_cache = (key, text)
    return text


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.decode("utf-8", "replace")


def git_state(cwd: Path) -> tuple[dict[str, Any], bytes | None]:
    """(record, diff bytes or None) for the repository containing ``cwd``."""
    top = _git(["rev-parse", "--show-toplevel"], cwd)
    if top is None:
        return {"repo": None}, None
    root = Path(top.strip())
    commit = (_git(["rev-parse", "HEAD"], root) or "").strip() or None
    branch = (_git(["rev-parse", "--abbrev-ref", "HEAD"], root) or "").strip() or None
    status = _git(["status", "--porcelain", "--untracked-files=no"], root) or ""
    record: dict[str, Any] = {"repo": str(root), "commit": commit, "branch": branch, "dirty": bool(status.strip())}
    diff: bytes | None = None
    if record["dirty"] and commit:
        try:
            diff = subprocess.run(["git", "diff", "--binary", "HEAD"], cwd=root, capture_output=True, timeout=30, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            diff = None
    return record, diff


def capture(run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The record and the artifact rows (lock file, git diff) to store with a new run."""
    store = get_artifact_store()
    rows: list[dict[str, Any]] = []
    git, diff = git_state(Path.cwd())
    if diff:
        digest, size = store.put_bytes(diff)
        git["diff_sha256"] = digest
        rows.append(_row(run_id, DIFF_ARTIFACT, digest, size, "text/x-diff"))
    lock = package_lock().encode()
    lock_digest, lock_size = store.put_bytes(lock)
    rows.append(_row(run_id, LOCK_ARTIFACT, lock_digest, lock_size, "text/plain"))
    main = sys.modules.get("__main__")
    entry = getattr(main, "__file__", None)
    record = {
        "git": git,
        "entry_point": os.path.abspath(entry) if entry else None,
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "lock_sha256": lock_digest,
        "packages": lock.count(b"\n"),
        "seeds": dict(_seeds),
    }
    return record, rows


def _row(run_id: str, path: str, digest: str, size: int, media_type: str) -> dict[str, Any]:
    return {
        "owner_kind": "run", "owner_id": run_id, "path": path, "digest": digest,
        "size": size, "media_type": media_type, "created_ms": now_ms(),
    }
