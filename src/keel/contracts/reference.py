"""References of relative checks, resolved from keel's own stored history.

A reference spec is ``KIND`` or ``KIND:ARG``:

- ``last_accepted``: the profile of the newest batch of the target that passed
  its contract (stored automatically when a validation passes);
- ``same_weekday_last_week``: the newest accepted batch from the same UTC day
  one week earlier (for data with a weekly rhythm);
- ``snapshot:NAME``: a profile pinned by name with :func:`pin_snapshot`
  (``keel contracts suggest`` pins the data it profiled this way);
- any kind registered with :func:`register_reference_resolver`, e.g. the model
  registry registers ``production_training_set`` ("the training set of the
  production model").

A resolver is ``fn(target, arg, now) -> Profile | tuple[str, Profile] | None``;
the optional string describes the reference in reports. None means "no
reference yet": relative checks are then skipped, not failed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from keel.contracts.profile import Profile
from keel.errors import NotFoundError, ValidationError, did_you_mean

Resolver = Callable[[str, "str | None", datetime], "Profile | tuple[str, Profile] | None"]
_RESOLVERS: dict[str, Resolver] = {}


def register_reference_resolver(kind: str, fn: Resolver) -> None:
    """Make ``reference: KIND[:ARG]`` resolve through ``fn(target, arg, now)``."""
    if not kind or ":" in kind:
        raise ValidationError(f"A reference kind must be a non-empty name without ':', got {kind!r}.")
    _RESOLVERS[kind] = fn


def known_reference_kinds() -> list[str]:
    return list(_RESOLVERS)


def resolve(spec: str, target: str, now: datetime) -> tuple[str, Profile | None]:
    """(description, profile) of the reference ``spec`` for ``target``."""
    kind, _, arg = spec.partition(":")
    fn = _RESOLVERS.get(kind)
    if fn is None:
        raise ValidationError(
            f"Unknown reference {spec!r}.{did_you_mean(kind, _RESOLVERS)}",
            hint=f"Use one of {', '.join(_RESOLVERS)}, or register a resolver with register_reference_resolver().",
        )
    found = fn(target, arg or None, now)
    if found is None:
        return spec, None
    if isinstance(found, tuple):
        return found
    return spec, found


def _last_accepted(target: str, arg: str | None, now: datetime) -> Any:
    from keel.contracts.history import find_profile, load_profile

    row = find_profile(target, kind="batch", end_ms=int(now.timestamp() * 1000) + 1)
    if row is None:
        return None
    return f"last accepted batch ({_when(row.batch_ms)})", load_profile(row)


def _same_weekday_last_week(target: str, arg: str | None, now: datetime) -> Any:
    from keel.contracts.history import find_profile, load_profile

    day = (now - timedelta(days=7)).replace(hour=0, minute=0, second=0, microsecond=0)
    start = int(day.timestamp() * 1000)
    row = find_profile(target, kind="batch", start_ms=start, end_ms=start + 86_400_000)
    if row is None:
        return None
    return f"accepted batch of {day:%a %Y-%m-%d}", load_profile(row)


def _snapshot(target: str, arg: str | None, now: datetime) -> Any:
    from keel.contracts.history import find_profile, load_profile, snapshot_names

    if not arg:
        raise ValidationError("A snapshot reference needs a name: 'snapshot:NAME'.")
    row = find_profile(name=arg)
    if row is None:
        names = snapshot_names()
        raise NotFoundError(
            f"No pinned snapshot named {arg!r}.{did_you_mean(arg, names)}",
            hint="Pin one with keel.contracts.pin_snapshot(name, data) or `keel contracts suggest`.",
        )
    return f"snapshot {arg} ({_when(row.batch_ms)})", load_profile(row)


def _when(ms: int) -> str:
    from keel.store.metadata import ms_to_datetime

    dt = ms_to_datetime(ms)
    return dt.strftime("%Y-%m-%d %H:%M UTC") if dt else "?"


register_reference_resolver("last_accepted", _last_accepted)
register_reference_resolver("same_weekday_last_week", _same_weekday_last_week)
register_reference_resolver("snapshot", _snapshot)
