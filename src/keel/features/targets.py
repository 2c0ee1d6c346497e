"""Feature-store names as data-contract targets: `keel validate usage` reads the
defined source (or the rows of the feature view) called ``usage``."""

from __future__ import annotations

from typing import Any


def resolve_target(name: str) -> Any:
    """The data of a defined source, or of a feature view (its transformed rows), else None."""
    from keel.errors import KeelError
    from keel.features.loader import load_definitions

    try:
        defs = load_definitions()
    except KeelError:  # no features module in this project: not ours
        return None
    from keel.features.offline import _source_sql, connect, q, view_relation

    con = connect()
    if name in defs.views:
        view = defs.views[name]
        rel = view_relation(con, view)
        ts = q(view.source.timestamp_field)
        return con.sql(f"SELECT * EXCLUDE (__keel_event, __keel_created), __keel_event AS {ts} FROM {rel}").arrow()
    if name in defs.sources:
        source = defs.sources[name]
        if source.path is not None:  # the engine reads files in place
            from pathlib import Path

            from keel.config import settings

            path = Path(source.path)
            return str(path if path.is_absolute() else settings().root / path)
        return con.sql(f"SELECT * FROM {_source_sql(con, source, 'contract')}").arrow()
    return None


def register() -> None:
    from keel.contracts.targets import register_target_resolver

    register_target_resolver(resolve_target)
