"""Which contracts guard a target, and where a target's data is.

A contract is attached to a target (a source, feature view, training set or a
model's inputs, by name) in either of two ways:

- a ``contracts:`` block in ``keel.yaml`` mapping the target to one contract
  file or a list of them, relative to the project root::

      contracts:
        transactions: contracts/transactions.yaml
        churn_training: [contracts/base.yaml, contracts/churn.yaml]

- a file ``contracts/<target>.yaml`` in the project root.

``keel validate TARGET`` needs the target's data too: a Parquet/CSV path is used
as it is; for a name, the ``data:`` of an attached contract (a path relative to
the project root; ``keel contracts suggest PATH -o contracts/NAME.yaml`` writes
it), else the resolvers registered with :func:`register_target_resolver` (the
feature store registers one that returns a defined source's or feature view's
data).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from keel.contracts.model import Contract
from keel.errors import ConfigError, NotFoundError, did_you_mean

TargetResolver = Callable[[str], Any]
_TARGET_RESOLVERS: list[TargetResolver] = []


def register_target_resolver(fn: TargetResolver) -> None:
    """Add ``fn(name) -> data | None`` to the resolvers of named targets.

    The data returned may be a pandas DataFrame, a pyarrow Table or a Parquet/CSV
    path; None means "not mine", and the next resolver is asked.
    """
    if fn not in _TARGET_RESOLVERS:
        _TARGET_RESOLVERS.append(fn)


def unregister_target_resolver(fn: TargetResolver) -> None:
    if fn in _TARGET_RESOLVERS:
        _TARGET_RESOLVERS.remove(fn)


def contract_files(target: str) -> list[Path]:
    """The contract files attached to ``target`` (keel.yaml first, then contracts/<target>.yaml)."""
    from keel.config import settings

    s = settings()
    root = Path(s.root)
    files: list[Path] = []
    section = s.section("contracts")
    entry = section.get(target)
    if entry is not None:
        paths = entry if isinstance(entry, list) else [entry]
        for p in paths:
            if not isinstance(p, str):
                raise ConfigError(f"keel.yaml contracts.{target} must be a file path or a list of them, got {p!r}.")
            path = (root / p).resolve()
            if not path.is_file():
                raise ConfigError(
                    f"keel.yaml attaches {p!r} to {target!r}, but that file does not exist under {root}.",
                    hint="Fix the path in keel.yaml (it is relative to the project root).",
                )
            files.append(path)
    for suffix in (".yaml", ".yml"):
        conventional = (root / "contracts" / f"{target}{suffix}").resolve()
        if conventional.is_file() and conventional not in files:
            files.append(conventional)
    return files


def attached_targets() -> list[str]:
    """Every target with a contract attached."""
    from keel.config import settings

    s = settings()
    names = set(s.section("contracts"))
    folder = Path(s.root) / "contracts"
    if folder.is_dir():
        names.update(p.stem for p in folder.iterdir() if p.suffix in (".yaml", ".yml"))
    return sorted(names)


_LOADED: dict[Path, tuple[int, Contract]] = {}


def attached_contracts(target: str) -> list[Contract]:
    """The contracts attached to ``target``, parsed once per file version (enforce runs per request)."""
    from keel.contracts.loader import load_contract

    out = []
    for path in contract_files(target):
        mtime = path.stat().st_mtime_ns
        cached = _LOADED.get(path)
        if cached is None or cached[0] != mtime:
            cached = _LOADED[path] = (mtime, load_contract(path))
        out.append(cached[1])
    return out


def _looks_like_path(target: str) -> bool:
    from keel.contracts.source import CSV_SUFFIXES, PARQUET_SUFFIXES

    return "/" in target or "\\" in target or target.lower().endswith(PARQUET_SUFFIXES + CSV_SUFFIXES)


def _contract_data(target: str, root: Path) -> str | None:
    """The ``data:`` path of the first attached contract that has one."""
    for contract in attached_contracts(target):
        if contract.data:
            path = Path(contract.data)
            path = path if path.is_absolute() else root / path
            if not path.exists() and not any(ch in contract.data for ch in "*?["):
                raise NotFoundError(
                    f"The contract of {target!r} ({contract.source_file}) says its data is at {contract.data!r}, but there is no file there.",
                    hint=f"Fix 'data:' in {contract.source_file} (relative to the project root {root}).",
                )
            return str(path)
    return None


def resolve_data(target: str) -> Any:
    """The data of ``target``: an existing path as is, an attached contract's ``data:``, else a registered resolver's answer."""
    from keel.config import settings

    p = Path(target)
    if p.exists() or any(ch in target for ch in "*?["):
        return target
    root = Path(settings().root)
    under_root = root / target
    if under_root.exists():
        return str(under_root)
    if _looks_like_path(target):
        raise NotFoundError(
            f"File {target!r} does not exist (looked in {Path.cwd()}" + (f" and {root}" if root != Path.cwd() else "") + ").",
            hint="Check the path; it is relative to the working directory or the project root.",
        )
    found = _contract_data(target, root)
    if found is not None:
        return found
    for fn in _TARGET_RESOLVERS:
        data = fn(target)
        if data is not None:
            return data
    files = contract_files(target)
    if files:
        rel = files[0].relative_to(root) if files[0].is_relative_to(root) else files[0]
        raise NotFoundError(
            f"{target!r} has a contract ({rel}), but keel does not know where its data is.",
            hint=f"Add 'data: path/to/{target}.parquet' to {rel}, pass the file itself (keel validate path/to/file --contract {rel}), "
            f"or define a source named {target!r} in the feature store.",
        )
    known = [t for t in attached_targets() if t != target]
    raise NotFoundError(
        f"{target!r} is neither a Parquet/CSV path nor a known source.{did_you_mean(target, known)}",
        hint="Give a file path, or define the source in the feature store.",
    )
