"""Custom checks, registered by name and used from Python or YAML.

A custom check is either a SQL expression that must hold for each row, or a
Python function that receives the data as a pandas DataFrame (a copy: the
function cannot change the data being validated) plus the check's params, and
returns a boolean per row (True = passes) or a single bool::

    register_check("price_covers_cost", sql="price >= cost")

    @register_check("weekend_share_below")
    def weekend_share_below(df, max_share=0.5):
        return (df["ts"].dt.dayofweek >= 5).mean() <= max_share

and in a contract: ``- custom: {check: weekend_share_below, params: {max_share: 0.4}}``.
SQL expressions may use ``{param}`` placeholders filled from params.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keel.errors import NotFoundError, ValidationError, did_you_mean


@dataclass(frozen=True)
class CustomCheck:
    name: str
    fn: Callable[..., Any] | None = None
    sql: str | None = None

    def sql_for(self, params: dict[str, Any]) -> str:
        assert self.sql is not None
        try:
            return self.sql.format(**params) if params else self.sql
        except (KeyError, IndexError) as exc:
            raise ValidationError(
                f"Custom check '{self.name}' needs the param {exc.args[0]!r} for its SQL {self.sql!r}."
            ) from None


_REGISTRY: dict[str, CustomCheck] = {}


def register_check(name: str, fn: Callable[..., Any] | None = None, *, sql: str | None = None) -> Any:
    """Register a custom check under ``name``: a SQL expression, or a function (also as a decorator)."""
    if not name or not isinstance(name, str):
        raise ValidationError(f"A custom check needs a name, got {name!r}.")
    if sql is not None:
        if fn is not None:
            raise ValidationError(f"Custom check '{name}': give a function or sql=, not both.")
        _REGISTRY[name] = CustomCheck(name, sql=sql)
        return None
    if fn is None:
        def decorator(f: Callable[..., Any]) -> Callable[..., Any]:
            _REGISTRY[name] = CustomCheck(name, fn=f)
            return f

        return decorator
    _REGISTRY[name] = CustomCheck(name, fn=fn)
    return fn


def unregister_check(name: str) -> None:
    _REGISTRY.pop(name, None)


def get_check(name: str) -> CustomCheck:
    found = _REGISTRY.get(name)
    if found is None:
        raise NotFoundError(
            f"No custom check named {name!r} is registered.{did_you_mean(name, _REGISTRY)}",
            hint="Register it with keel.contracts.register_check(name, fn) before validating.",
        )
    return found
