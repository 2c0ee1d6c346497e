"""The reproducibility record every run captures without being asked, and ``keel.seed``.

Captured: git commit, branch, dirty flag and the uncommitted diff (stored as an
artifact with its hash); the untracked source files (each hashed, small ones
stored; a run with untracked files is dirty too); entry point and argv
(passwords and tokens redacted); Python version and platform; the package lock
(stored as an artifact, with its hash) and keel's own version and source;
seeds set through :func:`seed`; host and user.

The lock is installable with ``pip install -r``: ``name==version`` of every
distribution installed from an index. keel itself and distributions installed
from a local folder or in editable mode are left out of it (pip cannot fetch
them by version) and recorded beside it, with their source, in ``packages_local``.
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
UNTRACKED_PREFIX = "keel/untracked/"
UNTRACKED_STORE_MAX = 1 << 20  # untracked files up to 1 MiB are stored, larger ones only hashed
UNTRACKED_HASH_MAX = 64 << 20  # files above 64 MiB are listed with their size, not hashed
UNTRACKED_HASH_BUDGET = 256 << 20  # and no more than this much is hashed per run start
UNTRACKED_MAX_FILES = 2000

_seeds: dict[str, int] = {}
_hash_cache: dict[tuple[str, int, int], str] = {}  # untracked files by (path, size, mtime): hashed once per process
_lock_cache: tuple[str, str, list[dict[str, Any]]] | None = None


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
    """An installable lock: ``name==version`` of every distribution pip can fetch by version, sorted."""
    return _lock()[0]


def local_packages() -> list[dict[str, Any]]:
    """keel and the distributions installed from a folder or editable: name, version, source, editable."""
    return _lock()[1]


def _lock() -> tuple[str, list[dict[str, Any]]]:
    global _lock_cache
    key = ";".join(sys.path)
    if _lock_cache is not None and _lock_cache[0] == key:
        return _lock_cache[1], _lock_cache[2]
    import json
    from importlib.metadata import distributions

    seen: dict[str, str] = {}
    local: dict[str, dict[str, Any]] = {}
    for dist in distributions():
        name = dist.metadata["Name"]
        if not name or name.lower() in seen or name.lower() in local:
            continue
        direct: dict[str, Any] = {}
        try:
            text = dist.read_text("direct_url.json")
            direct = json.loads(text) if text else {}
        except (OSError, ValueError):
            direct = {}
        url = str(direct.get("url", ""))
        editable = bool((direct.get("dir_info") or {}).get("editable"))
        if name.lower() == "keel" or editable or url.startswith("file:"):
            local[name.lower()] = {"name": name, "version": dist.version, "source": url or None, "editable": editable}
        elif url:  # a VCS or archive URL: pip installs it from there
            seen[name.lower()] = f"{name} @ {url}"
        else:
            seen[name.lower()] = f"{name}=={dist.version}"
    text = "\n".join(sorted(seen.values(), key=str.lower)) + "\n"
    packages = sorted(local.values(), key=lambda d: str(d["name"]).lower())
    _lock_cache = (key, text, packages)
    return text, packages


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.decode("utf-8", "replace")


def git_state(cwd: Path) -> tuple[dict[str, Any], bytes | None]:
    """(record, diff bytes or None) for the repository containing ``cwd``.

    The record lists the untracked files (``git ls-files --others --exclude-standard``:
    what .gitignore does not exclude) with their sha256 under ``untracked``; they make
    the run dirty as uncommitted changes do.
    """
    top = _git(["rev-parse", "--show-toplevel"], cwd)
    if top is None:
        return {"repo": None}, None
    root = Path(top.strip())
    commit = (_git(["rev-parse", "HEAD"], root) or "").strip() or None
    branch = (_git(["rev-parse", "--abbrev-ref", "HEAD"], root) or "").strip() or None
    status = _git(["status", "--porcelain", "--untracked-files=no"], root) or ""
    untracked = untracked_files(root)
    record: dict[str, Any] = {
        "repo": str(root), "commit": commit, "branch": branch,
        "dirty": bool(status.strip()) or bool(untracked), "untracked": untracked,
    }
    diff: bytes | None = None
    if status.strip() and commit:
        try:
            diff = subprocess.run(["git", "diff", "--binary", "HEAD"], cwd=root, capture_output=True, timeout=30, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            diff = None
    return record, diff


def untracked_files(root: Path) -> list[dict[str, Any]]:
    """Untracked, not ignored files of the repository at ``root`` (keel's own state folder left out)."""
    from keel.config import STATE_DIR
    from keel.store.blobs import sha256_file

    out = _git(["ls-files", "--others", "--exclude-standard", "-z"], root)
    if not out:
        return []
    names = sorted(n for n in out.split("\0") if n and not (n == STATE_DIR or n.startswith(STATE_DIR + "/") or f"/{STATE_DIR}/" in f"/{n}"))
    files: list[dict[str, Any]] = []
    budget = UNTRACKED_HASH_BUDGET
    for name in names[:UNTRACKED_MAX_FILES]:
        path = root / name
        try:
            stat = path.stat()
        except OSError:
            continue
        digest = None
        if stat.st_size <= min(UNTRACKED_HASH_MAX, budget):
            key = (str(path), stat.st_size, stat.st_mtime_ns)
            digest = _hash_cache.get(key)
            if digest is None:
                digest = _hash_cache[key] = sha256_file(path)
                budget -= stat.st_size
        files.append({"path": name, "size": stat.st_size, "sha256": digest})
    if len(names) > UNTRACKED_MAX_FILES:
        files.append({"path": None, "size": None, "sha256": None, "more": len(names) - UNTRACKED_MAX_FILES})
    return files


def redact_argv(argv: list[str]) -> list[str]:
    """argv with secrets masked: ``--password=x``, ``--token x``, URIs with passwords."""
    from keel.config import redact

    out: list[str] = []
    mask_next = False
    for arg in argv:
        if mask_next:
            out.append("***")
            mask_next = False
            continue
        out.append(redact(arg))
        if arg.startswith("-") and "=" not in arg:
            name = arg.lstrip("-")
            mask_next = bool(name) and redact(f"{name}=x") != f"{name}=x"  # a flag that names a secret
    return out


def capture(run_id: str, blobs: Any = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The record and the artifact rows (lock file, git diff) to store with a new run.

    ``blobs`` is where the files go (anything with ``put_bytes``/``put_file``; default
    the artifact store; a keel server's uploads for a remote run).
    """
    store = blobs if blobs is not None else get_artifact_store()
    rows: list[dict[str, Any]] = []
    git, diff = git_state(Path.cwd())
    if diff:
        digest, size = store.put_bytes(diff)
        git["diff_sha256"] = digest
        rows.append(_row(run_id, DIFF_ARTIFACT, digest, size, "text/x-diff"))
    for f in git.get("untracked") or []:
        if f.get("sha256") and f["size"] <= UNTRACKED_STORE_MAX:
            digest, size = store.put_file(Path(git["repo"]) / f["path"])
            f["stored"] = True
            rows.append(_row(run_id, UNTRACKED_PREFIX + f["path"], digest, size, "application/octet-stream"))
    lock = package_lock().encode()
    lock_digest, lock_size = store.put_bytes(lock)
    rows.append(_row(run_id, LOCK_ARTIFACT, lock_digest, lock_size, "text/plain"))
    main = sys.modules.get("__main__")
    entry = getattr(main, "__file__", None)
    record = {
        "git": git,
        "entry_point": os.path.abspath(entry) if entry else None,
        "argv": redact_argv(list(sys.argv)),
        "cwd": os.getcwd(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "lock_sha256": lock_digest,
        "packages": lock.count(b"\n"),
        "packages_local": local_packages(),
        "keel_version": keel_version(),
        "seeds": dict(_seeds),
    }
    return record, rows


def keel_version() -> str:
    """The running keel's version (read from the loaded root package: importing it here would
    make this layer import, for the import linter, every stage the root re-exports)."""
    return str(sys.modules["keel"].__version__)


def _row(run_id: str, path: str, digest: str, size: int, media_type: str) -> dict[str, Any]:
    return {
        "owner_kind": "run", "owner_id": run_id, "path": path, "digest": digest,
        "size": size, "media_type": media_type, "created_ms": now_ms(),
    }
