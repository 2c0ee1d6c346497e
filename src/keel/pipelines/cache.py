"""Content-addressed step caching.

A step's key is the sha256 of: its own source and the source of the project
code it reaches (functions, classes with their methods, and modules defined
under the project root, found through its globals, closure and containers),
the module-level constants it reads (by value: lists, dicts, dataclass
instances included), its parameters in canonical form (sorted JSON; files by
content), the fingerprints of its inputs (the sha256 of each upstream output),
every serializer version, Python's and keel's versions, and the versions of
the distributions that own the modules its code loads, with what those
require (not the whole environment: installing an unrelated package changes
no key). The
output is stored once, as a blob named by its hash, and referenced from the
``artifacts`` table (owner_kind "cache") so that ``keel gc`` keeps it.

The key is the primary key of ``pipeline_cache``: when two runs race to store
the same key, the first insert wins and the second reuses it.
"""

from __future__ import annotations

import dataclasses
import dis
import enum
import functools
import hashlib
import importlib.metadata
import inspect
import json
import os
import platform
import re
import sys
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from keel.errors import NotFoundError, ValidationError, WriteConflict
from keel.store.metadata import MetadataStore, now_ms
from keel.store.schema import artifacts
from keel.store.schema.pipelines import pipeline_cache

KEY_VERSION = "2"


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


# Code objects and classes never change once created, so what is read from them is kept (a
# re-imported module makes new ones). Globals are read on every key: constants may change.
@functools.lru_cache(maxsize=8192)
def _names(code: types.CodeType) -> frozenset[str]:
    out = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            out |= _names(const)
    return frozenset(out)


@functools.lru_cache(maxsize=8192)
def _imports(code: types.CodeType) -> frozenset[str]:
    """The modules an ``import`` statement in ``code`` (or a nested function) names."""
    out: set[str] = set()
    for ins in dis.get_instructions(code):
        if ins.opname == "IMPORT_NAME" and isinstance(ins.argval, str):
            out.add(ins.argval)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            out |= _imports(const)
    return frozenset(out)


@functools.lru_cache(maxsize=8192)
def _source_of(key: Any, obj: Any) -> bytes:
    try:
        return inspect.getsource(obj).encode()
    except (OSError, TypeError):
        code = getattr(obj, "__code__", None)
        return code.co_code if code is not None else repr(obj).encode()


def _source(obj: Any) -> bytes:
    """The source text of a function (by its code object) or a class."""
    code = getattr(obj, "__code__", None)
    try:
        return _source_of(code if code is not None else obj, obj)
    except TypeError:  # unhashable
        return _source_of.__wrapped__(None, obj)


def _root(module: Any) -> str | None:
    return module.partition(".")[0] or None if isinstance(module, str) else None


@dataclass(frozen=True)
class CodeKey:
    """What a step's code is, for its cache key: a digest and the top-level modules it loads."""

    digest: str
    modules: frozenset[str]


_PRIMITIVES = (int, float, str, bytes, bool, complex, type(None), type(Ellipsis))


class _Walk:
    """One pass over a function and the project code and constants it reaches."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.h = hashlib.sha256()
        self.seen: set[int] = set()
        self.modules: set[str] = set()

    def source(self, obj: Any) -> None:
        self.h.update(_source(obj))

    def function(self, f: Any) -> None:
        f = inspect.unwrap(f)
        if id(f) in self.seen:
            return
        self.seen.add(id(f))
        self.source(f)
        code = getattr(f, "__code__", None)
        if code is None:
            return
        self.modules.update(r for r in map(_root, _imports(code)) if r)
        g = getattr(f, "__globals__", {})
        for name in sorted(_names(code)):
            if name in g:
                self.value(name, g[name])
        for i, cell in enumerate(f.__closure__ or ()):
            try:
                self.value(f"<closure {i}>", cell.cell_contents)
            except ValueError:  # an empty cell
                pass

    def module(self, m: types.ModuleType) -> None:
        if id(m) in self.seen:
            return
        self.seen.add(id(m))
        file = getattr(m, "__file__", None)
        if file and os.path.exists(file):
            self.h.update(Path(file).read_bytes())
        for v in list(vars(m).values()):
            if isinstance(v, types.ModuleType):
                if _is_local(v, self.root):
                    self.module(v)
                elif r := _root(v.__name__):
                    self.modules.add(r)
            elif isinstance(v, type | types.FunctionType) and not _is_local(v, self.root) and (r := _root(getattr(v, "__module__", None))):
                self.modules.add(r)

    def klass(self, cls: type) -> None:
        """A project class: its source and every method's code, so helpers its methods call count."""
        if id(cls) in self.seen:
            return
        self.seen.add(id(cls))
        for c in cls.__mro__:
            if c is object:
                continue
            if not _is_local(c, self.root):
                if r := _root(c.__module__):
                    self.modules.add(r)
                continue
            if c is not cls:
                self.seen.add(id(c))
            self.source(c)
            for attr, member in sorted(vars(c).items(), key=lambda kv: kv[0]):
                if attr.startswith("__") and attr.endswith("__") and not isinstance(member, types.FunctionType):
                    continue
                for fn in _callables(member):
                    self.function(fn)
                if isinstance(member, (*_PRIMITIVES, list, dict, set, frozenset, tuple)):
                    self.h.update(f"{c.__qualname__}.{attr}={self.token(member)}\n".encode())

    def value(self, name: str, v: Any) -> None:
        from keel.pipelines.step import Step

        if isinstance(v, Step):
            self.function(v.fn)
        elif isinstance(v, types.FunctionType | types.MethodType | types.BuiltinFunctionType):
            if _is_local(v, self.root):
                self.function(v)
            elif r := _root(getattr(v, "__module__", None)):
                self.modules.add(r)
        elif isinstance(v, types.ModuleType):
            if _is_local(v, self.root):
                self.module(v)
            elif r := _root(v.__name__):
                self.modules.add(r)
        elif isinstance(v, type):
            if _is_local(v, self.root):
                self.klass(v)
            elif r := _root(v.__module__):
                self.modules.add(r)
        else:
            self.h.update(f"{name}={self.token(v)}\n".encode())

    def token(self, v: Any, depth: int = 0) -> str:
        """Stable text for a constant: primitives by repr, containers and dataclasses by their parts, the rest by content."""
        if isinstance(v, _PRIMITIVES):
            return repr(v)
        if depth > 20 or (id(v) in self.seen and isinstance(v, list | dict | set)):
            return "<cycle>"
        t = type(v)
        tname = f"{t.__module__}.{t.__qualname__}"
        if isinstance(v, type | types.FunctionType | types.MethodType | types.ModuleType):
            self.value("", v)  # code inside a container (a dict of handlers) counts as code
            return f"<code {getattr(v, '__qualname__', getattr(v, '__name__', ''))}>"
        if isinstance(v, list | tuple | set | frozenset | dict):
            self.seen.add(id(v))
            try:
                if isinstance(v, dict):
                    items = sorted(f"{self.token(k, depth + 1)}:{self.token(x, depth + 1)}" for k, x in v.items())
                elif isinstance(v, set | frozenset):
                    items = sorted(self.token(x, depth + 1) for x in v)
                else:
                    items = [self.token(x, depth + 1) for x in v]
            finally:
                self.seen.discard(id(v))
            return f"{tname}[{','.join(items)}]"
        if isinstance(v, enum.Enum):
            return f"{tname}.{v.name}"
        if isinstance(v, os.PathLike):
            return f"{tname}({os.fspath(v)!r})"
        if _is_local(t, self.root):
            self.klass(t)
        elif r := _root(t.__module__):
            self.modules.add(r)
        if dataclasses.is_dataclass(v):
            fields = ",".join(f"{f.name}={self.token(getattr(v, f.name), depth + 1)}" for f in dataclasses.fields(v))
            return f"{tname}({fields})"
        try:
            from keel.pipelines import serializers

            data = serializers.choose(v).dumps(v)
        except Exception:  # not serializable (a lock, a connection): its type stands for it
            return f"<{tname}>"
        return f"{tname}#{hashlib.sha256(data).hexdigest()}"


def _callables(member: Any) -> list[Any]:
    if isinstance(member, staticmethod | classmethod):
        return [member.__func__]
    if isinstance(member, property):
        return [f for f in (member.fget, member.fset, member.fdel) if f is not None]
    if isinstance(member, functools.cached_property):
        return [member.func]
    if isinstance(member, types.FunctionType):
        return [member]
    return []


def code_key(fn: Any, root: Path) -> CodeKey:
    """The digest of ``fn``'s source and of the project code and constants it reaches, and the modules it loads.

    Reached: functions, classes (with their methods, so helpers a method calls
    count) and modules defined under ``root``, found through globals, closures
    and containers; module-level constants by value (primitives, lists, dicts,
    sets, dataclass instances, arrays and frames by content). Modules outside
    the project are not hashed: their distributions' versions go in the key
    instead (see :func:`dependency_versions`).
    """
    walk = _Walk(root)
    walk.function(fn)
    return CodeKey(walk.h.hexdigest(), frozenset(walk.modules))


def code_fingerprint(fn: Any, root: Path) -> str:
    """Hash of ``fn``'s source and of the project-local code and constants it reaches."""
    return code_key(fn, root).digest


# -- environment ----------------------------------------------------------------

_dist_index: tuple[Any, dict[str, list[str]]] | None = None


def _environment_stamp() -> tuple[tuple[str, int], ...]:
    """The modification times of the import path's folders: an install or uninstall changes one."""
    out = []
    for p in sys.path:
        try:
            out.append((p, os.stat(p or ".").st_mtime_ns))
        except OSError:
            continue
    return tuple(out)


def refresh_environment() -> None:
    """Read what is installed again when the import path's folders changed (each pipeline run starts with this)."""
    global _dist_index
    stamp = _environment_stamp()
    if _dist_index is None or _dist_index[0] != stamp:
        _dist_index = (stamp, dict(importlib.metadata.packages_distributions()))
        _closure.cache_clear()


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.lru_cache(maxsize=4096)
def _closure(dist: str) -> tuple[tuple[str, str], ...]:
    """(name, version) of ``dist`` and every installed distribution it requires, transitively."""
    out: dict[str, str] = {}
    todo = [dist]
    while todo:
        name = _normalize(todo.pop())
        if name in out:
            continue
        try:
            d = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        out[name] = d.version
        for req in d.requires or []:
            if "extra ==" in req.partition(";")[2].replace("extra==", "extra =="):
                continue  # only what an extra pulls in
            m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
            if m:
                todo.append(m.group(1))
    return tuple(sorted(out.items()))


def dependency_versions(modules: Iterable[str]) -> dict[str, str]:
    """{distribution: version} of the distributions that own ``modules``, and what they require (installed ones)."""
    if _dist_index is None:
        refresh_environment()
    assert _dist_index is not None
    out: dict[str, str] = {}
    for module in sorted(set(modules)):
        for dist in _dist_index[1].get(module, ()):
            out.update(_closure(dist))
    return out


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


def step_key(*, code: str, params: Any, inputs: Any, options: Any, deps: Mapping[str, str], smoke: bool) -> str:
    """The cache key: code digest, params, input digests, step options, dependency versions, serializers, Python, keel."""
    from keel import __version__
    from keel.pipelines import serializers

    doc = {
        "v": KEY_VERSION, "code": code, "params": params, "inputs": inputs, "options": options,
        "serializers": serializers.versions(), "deps": dict(sorted(deps.items())), "smoke": smoke,
        "python": platform.python_version(), "keel": __version__,
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


