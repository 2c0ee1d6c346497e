"""Content-addressed step caching.

A step's key is the sha256 of: its own source and the source of the project
code it reaches (functions, classes and modules defined under the project
root, found through its globals and closure), its parameters in canonical form
(sorted JSON; files by content), the fingerprints of its inputs (the sha256 of
each upstream output), every serializer version and the environment lock. The
output is stored once, as a blob named by its hash, and referenced from the
``artifacts`` table (owner_kind "cache") so that ``keel gc`` keeps it.

The key is the primary key of ``pipeline_cache``: when two runs race to store
the same key, the first insert wins and the second reuses it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from keel.errors import NotFoundError, ValidationError, WriteConflict
from keel.store.metadata import MetadataStore, now_ms
from keel.store.schema import artifacts
from keel.store.schema.pipelines import pipeline_cache

KEY_VERSION = "1"


class FileRef(os.PathLike[str]):
    """A file or folder parameter whose content, not its path, is part of cache keys.

    Example: ``train_pipeline(data=keel.pipelines.FileRef("data/churn.csv"))``;
    ``pd.read_csv(ref)`` works since a FileRef is path-like.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"FileRef({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FileRef) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (FileRef, (str(self.path),))

    def __keel_fingerprint__(self) -> str:
        return content_fingerprint(self.path)


def content_fingerprint(path: Path) -> str:
    """sha256 of a file's bytes, or of a folder's (relative path, file hash) list."""
    from keel.store.fingerprint import path_fingerprint

    if not path.exists():
        raise NotFoundError(f"File parameter {str(path)!r} does not exist.", hint="Pass the path of an existing file or folder.")
    return path_fingerprint(path)


# -- code -----------------------------------------------------------------------

def _is_local(obj: Any, root: Path) -> bool:
    try:
        file = inspect.getsourcefile(obj) if not isinstance(obj, types.ModuleType) else getattr(obj, "__file__", None)
    except TypeError:
        return False
    if not file:
        return False
    path = Path(file).resolve()
    if "site-packages" in path.parts or "dist-packages" in path.parts:
        return False
    return path.is_relative_to(root)


def _names(code: types.CodeType) -> set[str]:
    out = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            out |= _names(const)
    return out


def code_fingerprint(fn: Any, root: Path) -> str:
    """Hash of ``fn``'s source and of the project-local code it reaches."""
    h = hashlib.sha256()
    seen: set[int] = set()
    root = root.resolve()

    def add_source(obj: Any) -> None:
        try:
            h.update(inspect.getsource(obj).encode())
        except (OSError, TypeError):
            code = getattr(obj, "__code__", None)
            h.update(code.co_code if code is not None else repr(obj).encode())

    def add_function(f: Any) -> None:
        f = inspect.unwrap(f)
        if id(f) in seen:
            return
        seen.add(id(f))
        add_source(f)
        code = getattr(f, "__code__", None)
        if code is None:
            return
        g = getattr(f, "__globals__", {})
        for name in sorted(_names(code)):
            if name in g:
                add_value(name, g[name])
        for i, cell in enumerate(f.__closure__ or ()):
            try:
                add_value(f"<closure {i}>", cell.cell_contents)
            except ValueError:  # an empty cell
                pass

    def add_module(m: types.ModuleType) -> None:
        if id(m) in seen:
            return
        seen.add(id(m))
        file = getattr(m, "__file__", None)
        if file and os.path.exists(file):
            h.update(Path(file).read_bytes())
        for v in list(vars(m).values()):
            if isinstance(v, types.ModuleType) and _is_local(v, root):
                add_module(v)

    def add_value(name: str, v: Any) -> None:
        from keel.pipelines.step import Step

        if isinstance(v, Step):
            add_function(v.fn)
        elif isinstance(v, types.FunctionType | types.MethodType):
            if _is_local(v, root):
                add_function(v)
        elif isinstance(v, types.ModuleType):
            if _is_local(v, root):
                add_module(v)
        elif isinstance(v, type):
            if id(v) not in seen and _is_local(v, root):
                seen.add(id(v))
                add_source(v)
        elif v is None or isinstance(v, int | float | str | bytes | bool | tuple | frozenset):
            h.update(f"{name}={v!r}\n".encode())

    add_function(fn)
    return h.hexdigest()


# -- values ---------------------------------------------------------------------

def canonical(value: Any, *, path_typed: bool = False) -> Any:
    """A JSON-able form of a parameter or constant input; files by content."""
    if hasattr(value, "__keel_fingerprint__"):
        return {"__ref__": type(value).__name__, "fp": value.__keel_fingerprint__()}
    if isinstance(value, Path) or (path_typed and isinstance(value, str)):
        return {"__file__": str(value), "fp": content_fingerprint(Path(value))}
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else repr(value)
    if isinstance(value, list | tuple):
        return [type(value).__name__, [canonical(v) for v in value]]
    if isinstance(value, dict):
        return {"__dict__": sorted(([json.dumps(canonical(k), sort_keys=True), canonical(v)] for k, v in value.items()))}
    from keel.pipelines import serializers

    ser = serializers.choose(value)
    return {"__blob__": ser.name, "sha256": hashlib.sha256(ser.dumps(value)).hexdigest()}


def lock_hash() -> str:
    from keel.tracking import environment

    return hashlib.sha256(environment.package_lock().encode()).hexdigest()


def step_key(*, code: str, params: Any, inputs: Any, options: Any, lock: str, smoke: bool) -> str:
    from keel.pipelines import serializers

    doc = {
        "v": KEY_VERSION, "code": code, "params": params, "inputs": inputs, "options": options,
        "serializers": serializers.versions(), "lock": lock, "smoke": smoke,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# -- the store --------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    key: str
    step: str
    digest: str
    serializer: str
    size: int
    run_id: str | None
    duration_ms: int
    created_ms: int
    expires_ms: int | None


def _entry(row: Any) -> Entry:
    m = row._mapping
    return Entry(m["key"], m["step"], m["digest"], m["serializer"], m["size"], m["run_id"], m["duration_ms"], m["created_ms"], m["expires_ms"])


def lookup(store: MetadataStore, key: str, *, now: int | None = None, blobs: Any = None) -> Entry | None:
    """The live entry for ``key`` (not expired, blob present), or None."""
    with store.read() as conn:
        row = conn.execute(sa.select(pipeline_cache).where(pipeline_cache.c.key == key)).first()
    if row is None:
        return None
    entry = _entry(row)
    if entry.expires_ms is not None and entry.expires_ms <= (now or now_ms()):
        return None
    if blobs is None:
        from keel.store.blobs import get_artifact_store

        blobs = get_artifact_store()
    if not blobs.exists(entry.digest):
        return None
    return entry


def save(store: MetadataStore, entry: Entry, *, replace: bool = False) -> Entry:
    """Store an entry; a live entry already under the key wins unless ``replace``. Returns the one kept."""
    row = {
        "key": entry.key, "step": entry.step, "digest": entry.digest, "serializer": entry.serializer,
        "size": entry.size, "run_id": entry.run_id, "duration_ms": entry.duration_ms,
        "created_ms": entry.created_ms, "expires_ms": entry.expires_ms,
    }
    art = {
        "owner_kind": "cache", "owner_id": entry.key, "path": "output", "digest": entry.digest,
        "size": entry.size, "media_type": None, "created_ms": entry.created_ms,
    }
    try:
        with store.write() as conn:
            found = conn.execute(sa.select(pipeline_cache).where(pipeline_cache.c.key == entry.key)).first()
            if found is not None:
                old = _entry(found)
                live = old.expires_ms is None or old.expires_ms > now_ms()
                if live and not replace:
                    return old
                conn.execute(sa.delete(pipeline_cache).where(pipeline_cache.c.key == entry.key))
            conn.execute(sa.delete(artifacts).where(artifacts.c.owner_kind == "cache", artifacts.c.owner_id == entry.key))
            conn.execute(sa.insert(pipeline_cache).values(**row))
            conn.execute(sa.insert(artifacts).values(**art))
    except WriteConflict:
        # A concurrent run stored the same key first: first writer wins.
        with store.read() as conn:
            won = conn.execute(sa.select(pipeline_cache).where(pipeline_cache.c.key == entry.key)).first()
        if won is None:
            raise
        return _entry(won)
    return entry


def clear(store: MetadataStore, step: str | None = None) -> int:
    """Forget cache entries (of one step, or all); blobs go with the next ``keel gc``."""
    with store.write() as conn:
        q = sa.select(pipeline_cache.c.key)
        if step is not None:
            q = q.where(pipeline_cache.c.step == step)
        keys = list(conn.execute(q).scalars())
        if keys:
            conn.execute(sa.delete(artifacts).where(artifacts.c.owner_kind == "cache", artifacts.c.owner_id.in_(keys)))
            conn.execute(sa.delete(pipeline_cache).where(pipeline_cache.c.key.in_(keys)))
    return len(keys)


def check_canonical(value: Any, what: str) -> None:
    try:
        canonical(value)
    except ValidationError as exc:
        raise ValidationError(f"{what}: {exc.message}", hint=exc.hint) from None


