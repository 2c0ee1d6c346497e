"""Suggest a starting contract from a profile of the data.

The margins are chosen so that a fresh batch from the same distribution passes
and a real shift fails:

- types from the data; ``nullable: false`` when no value is missing, otherwise
  a null-fraction ceiling of the observed rate plus 2 points (or +50 %);
- numeric ranges widened by 10 % of the observed range on each side (never
  crossing zero for non-negative data), with ``mostly: 0.999`` so that one
  extreme value among thousands does not block;
- id-like columns (every value distinct) get ``unique`` and no distribution checks;
- categories of low-cardinality string columns are pinned: no category unseen in
  the reference (warn), shares within ±5 points, PSI < 0.2;
- distribution checks on numeric columns (PSI < 0.2, KS p-value > 0.001, mean
  within max(1 %, 0.1 standard deviations)) compare with the profiled data
  itself, pinned as a snapshot, so the reference never drifts unnoticed.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from keel.contracts.model import Check, Column, Contract, make_check
from keel.contracts.profile import CATEGORICAL, NUMERIC, ColumnProfile, compute_profile

FAMILY_TYPE = {"int": "int", "float": "float", "decimal": "number", "string": "string", "bool": "bool",
               "timestamp": "timestamp", "timestamp_tz": "timestamp_tz", "date": "date", "binary": "binary"}
MAX_SUGGESTED_CATEGORIES = 50


def suggest(data: Any, *, name: str | None = None, pin: bool = True, target: str | None = None) -> Contract:
    """Profile ``data`` and return a starting contract (review it before you commit it).

    With ``pin`` (default) the profile is stored as snapshot ``<name>-<UTC time>``
    and the contract's distribution checks use it as their reference.
    """
    from keel.contracts.source import Source

    contract_name = name or (_stem(data) if isinstance(data, str) else "data")
    with Source(data) as src:
        profile = compute_profile(src)
        types = dict(src.types)
        # approx_count_distinct is within a few percent; confirm id-like columns exactly
        maybe_ids = [c for c, cp in profile.columns.items() if cp.distinct and cp.count > 100 and cp.distinct >= 0.9 * cp.count and cp.family in ("int", "string")]
        if maybe_ids:
            from keel.contracts.source import q

            exact = src.con.execute(f"SELECT {', '.join(f'count(DISTINCT {q(c)})' for c in maybe_ids)} FROM t").fetchall()[0]
            for c, d in zip(maybe_ids, exact, strict=True):
                profile.columns[c].distinct = int(d)
    snapshot = f"{contract_name}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    columns: dict[str, Column] = {}
    for col, cp in profile.columns.items():
        logical = FAMILY_TYPE.get(cp.family)
        columns[col] = Column(logical or "any", nullable=cp.nulls > 0, checks=_column_checks(cp, profile.num_rows, pin), description=None if logical else f"type {types[col]}")
    table = [make_check("row_count", {"min": 1})]
    if pin:
        table.append(make_check("row_count_change", {"max_pct": 50}, severity="warn"))
    contract = Contract(
        contract_name,
        columns=columns,
        checks=table,
        reference=f"snapshot:{snapshot}" if pin else "last_accepted",
        description=f"Suggested by keel from {profile.num_rows:,} rows on {datetime.now(UTC):%Y-%m-%d}; review before use.",
    )
    if pin:
        from keel.contracts.history import save_profile

        save_profile(target or contract_name, profile, kind="snapshot", name=snapshot)
    return contract


def _column_checks(cp: ColumnProfile, n: int, pin: bool) -> list[Check]:
    out: list[Check] = []

    def add(kind: str, value: Any = None, **kw: Any) -> None:
        out.append(make_check(kind, value, column="", **kw))

    if cp.nulls:
        rate = cp.null_rate
        add("max_null_fraction", {"max": round(min(1.0, max(rate + 0.02, rate * 1.5)), 4)})
        if pin:
            add("null_rate_increase", {"max_points": 2})
    if not cp.count:
        return out
    id_like = cp.distinct is not None and cp.count > 100 and cp.distinct == cp.count and cp.family in ("int", "string")
    if id_like:
        add("unique")
        return out
    if cp.family in NUMERIC and cp.min is not None and cp.max is not None:
        lo, hi = float(cp.min), float(cp.max)
        span = hi - lo or abs(hi) or 1.0
        low, high = lo - 0.1 * span, hi + 0.1 * span
        if lo >= 0:
            low = max(0.0, low)
        if cp.family == "int":
            low, high = math.floor(low), math.ceil(high)
        add("between", {"min": _round(low), "max": _round(high)}, mostly=0.999)
        if pin and (cp.distinct or 0) > 1:
            add("psi", {"max": 0.2})
            add("ks", {"min_pvalue": 0.001})
            if cp.mean is not None and cp.std is not None and abs(cp.mean) > 0.5 * cp.std and cp.mean:
                pct = max(1.0, 100 * 0.1 * cp.std / abs(cp.mean))
                add("mean_change", {"max_pct": round(pct, 2)})
    elif cp.family in CATEGORICAL and cp.categories is not None and len(cp.categories) <= MAX_SUGGESTED_CATEGORIES:
        if pin:
            add("no_new_categories", severity="warn")
            add("category_share", {"max_points": 5})
            add("psi", {"max": 0.2})
        else:
            add("allowed_values", sorted(cp.categories))
    return out


def _round(x: float) -> float | int:
    if x == int(x):
        return int(x)
    digits = max(0, 4 - math.floor(math.log10(abs(x)))) if x else 0
    return round(x, digits)


def _stem(path: str) -> str:
    from pathlib import Path

    stem = Path(path).name.split(".")[0]
    return stem or "data"
