"""Check constructors for contracts written in Python.

Column checks go in a :class:`~keel.contracts.model.Column`'s ``checks``; table
checks in the contract's ``checks``. Every constructor accepts ``severity``
(``"error"`` blocks, ``"warn"`` records and continues) and ``name``; row-level
checks also accept ``mostly`` (the fraction of rows that must pass) and relative
checks ``reference``::

    from keel.contracts import checks as c
    c.between(0, 120, mostly=0.999)
    c.psi(max=0.2, reference="same_weekday_last_week")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keel.contracts.model import Check, make_check
from keel.errors import ValidationError


def _col(kind: str, value: Any = None, **common: Any) -> Check:
    # Column checks are built without a column; Column(...) assigns it.
    try:
        return make_check(kind, value, column="", **common)
    except ValueError as exc:
        raise ValidationError(f"Invalid check: {exc}.") from None


def _tbl(kind: str, value: Any = None, **common: Any) -> Check:
    try:
        return make_check(kind, value, **common)
    except ValueError as exc:
        raise ValidationError(f"Invalid check: {exc}.") from None


def not_null(**common: Any) -> Check:
    return _col("not_null", None, **common)


def max_null_fraction(max: float, **common: Any) -> Check:
    return _col("max_null_fraction", {"max": max}, **common)


def unique(**common: Any) -> Check:
    return _col("unique", None, **common)


def min(value: float, *, strict: bool = False, **common: Any) -> Check:
    return _col("min", {"value": value, "strict": strict}, **common)


def max(value: float, *, strict: bool = False, **common: Any) -> Check:
    return _col("max", {"value": value, "strict": strict}, **common)


def between(min: float | None = None, max: float | None = None, *, strict: bool = False, **common: Any) -> Check:
    return _col("between", {"min": min, "max": max, "strict": strict}, **common)


def positive(**common: Any) -> Check:
    return _col("positive", None, **common)


def allowed_values(values: Sequence[Any], **common: Any) -> Check:
    return _col("allowed_values", list(values), **common)


def regex(pattern: str, **common: Any) -> Check:
    return _col("regex", pattern, **common)


def length(min: int | None = None, max: int | None = None, **common: Any) -> Check:
    return _col("length", {"min": min, "max": max}, **common)


def monotonic(direction: str = "increasing", *, strict: bool = False, **common: Any) -> Check:
    return _col("monotonic", {"direction": direction, "strict": strict}, **common)


def freshness(max_age: str | float, **common: Any) -> Check:
    return _col("freshness", max_age, **common)


def mean_change(max_pct: float, **common: Any) -> Check:
    return _col("mean_change", max_pct, **common)


def psi(max: float = 0.2, **common: Any) -> Check:
    return _col("psi", max, **common)


def ks(min_pvalue: float = 0.01, **common: Any) -> Check:
    return _col("ks", min_pvalue, **common)


def category_share(max_points: float, values: Sequence[Any] | None = None, **common: Any) -> Check:
    return _col("category_share", {"max_points": max_points, "values": None if values is None else list(values)}, **common)


def null_rate_increase(max_points: float, **common: Any) -> Check:
    return _col("null_rate_increase", max_points, **common)


def no_new_categories(**common: Any) -> Check:
    return _col("no_new_categories", None, **common)


def row_count(min: int | None = None, max: int | None = None, **common: Any) -> Check:
    return _tbl("row_count", {"min": min, "max": max}, **common)


def row_count_change(max_pct: float, **common: Any) -> Check:
    return _tbl("row_count_change", max_pct, **common)


def duplicate_keys(columns: Sequence[str] | str, **common: Any) -> Check:
    return _tbl("duplicate_keys", [columns] if isinstance(columns, str) else list(columns), **common)


def referential(column: str, source: str, ref_column: str | None = None, **common: Any) -> Check:
    return _tbl("referential", {"column": column, "source": source, "ref_column": ref_column}, **common)


def sql(expr: str, **common: Any) -> Check:
    return _tbl("sql", expr, **common)


def custom(check: str, **params: Any) -> Check:
    """A check registered with :func:`~keel.contracts.custom.register_check`.

    Keyword arguments ``severity``, ``mostly`` and ``name`` configure the check;
    every other keyword argument is passed to the registered function.
    """
    common = {k: params.pop(k) for k in ("severity", "mostly", "name") if k in params}
    return _tbl("custom", {"check": check, "params": params}, **common)
