"""The row-level contract checks of a feature view, compiled once and run on every push.

A push carries a few rows and must stay well under a millisecond, so the checks
that judge each row on its own (not_null, min, max, between, positive,
allowed_values, regex, length, and the column's nullable=False) run as pyarrow
compute kernels over the pushed columns, with no DuckDB query and no stored report.
An error-level check that fails more rows than its ``mostly`` allows rejects the
whole push with :class:`~keel.errors.ContractViolation` naming the check, the
column, the count and an example value; a warn-level failure is counted in
:data:`warnings`. Checks that need the whole data set (unique, monotonic,
freshness, relative and table checks, SQL and custom checks) run where the view's
data is read in bulk: before a training set is built and before materialization.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keel.errors import ContractViolation

if TYPE_CHECKING:
    import pyarrow as pa

ROW_KINDS = ("not_null", "min", "max", "between", "positive", "allowed_values", "regex", "length")

# warn-level failures seen by pushes, per (view, check): counted, never stored per call
warnings: dict[tuple[str, str], int] = {}


@dataclass
class _Compiled:
    label: str
    column: str
    severity: str
    mostly: float
    failing: Callable[[Any], Any]  # column -> boolean array, True where a row fails


def _compile(kind: str, args: dict[str, Any]) -> Callable[[Any], Any] | None:
    import pyarrow.compute as pc

    def bound(arr: Any, lo: Any, hi: Any, strict: bool) -> Any:
        bad = None
        if lo is not None:
            bad = pc.less_equal(arr, lo) if strict else pc.less(arr, lo)
        if hi is not None:
            up = pc.greater_equal(arr, hi) if strict else pc.greater(arr, hi)
            bad = up if bad is None else pc.or_(bad, up)
        return pc.fill_null(bad, False)

    if kind == "not_null":
        return lambda arr: pc.or_(pc.is_null(arr, nan_is_null=True), pc.is_nan(arr)) if _is_float(arr) else pc.is_null(arr)
    if kind == "min":
        return lambda arr: bound(arr, args["value"], None, args.get("strict", False))
    if kind == "max":
        return lambda arr: bound(arr, None, args["value"], args.get("strict", False))
    if kind == "between":
        return lambda arr: bound(arr, args.get("min"), args.get("max"), args.get("strict", False))
    if kind == "positive":
        return lambda arr: bound(arr, 0, None, True)
    if kind == "allowed_values":
        import pyarrow as pa

        values = args["values"]

        def not_allowed(arr: Any) -> Any:
            return pc.fill_null(pc.invert(pc.is_in(arr, value_set=pa.array(values).cast(arr.type))), False)

        return not_allowed
    if kind == "regex":
        return lambda arr: pc.fill_null(pc.invert(pc.match_substring_regex(arr, args["pattern"])), False)
    if kind == "length":
        return lambda arr: bound(pc.utf8_length(arr), args.get("min"), args.get("max"), False)
    return None


def _is_float(arr: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_floating(arr.type))


_plans: dict[str, tuple[tuple[Any, ...], list[_Compiled]]] = {}


def compiled_checks(view: str) -> list[_Compiled]:
    """The row-level checks of the contracts attached to ``view``, compiled once per contract file version."""
    from keel.contracts.targets import attached_contracts

    contracts = attached_contracts(view)
    ident = tuple(id(c) for c in contracts)
    hit = _plans.get(view)
    if hit is not None and hit[0] == ident:
        return hit[1]
    out: list[_Compiled] = []
    for contract in contracts:
        for chk in contract.checks:
            if chk.kind not in ROW_KINDS or chk.column is None or chk.reference is not None:
                continue
            fn = _compile(chk.kind, dict(chk.args))
            if fn is not None:
                label = chk.name or f"{chk.kind}({chk.column})"
                out.append(_Compiled(f"{contract.name}: {label}", chk.column, chk.severity, chk.mostly, fn))
    _plans[view] = (ident, out)
    return out


def check_pushed_rows(view: str, table: pa.Table, timestamp_field: str) -> None:
    """Run the compiled checks of ``view`` on pushed rows (the view's columns, as the contract sees them)."""
    import pyarrow.compute as pc

    checks = compiled_checks(view)
    if not checks or table.num_rows == 0:
        return
    n = table.num_rows
    names = set(table.column_names)
    for chk in checks:
        col = timestamp_field if chk.column == timestamp_field and chk.column not in names else chk.column
        if col not in names:
            continue  # the contract's column checks report missing columns in bulk runs
        bad = chk.failing(table.column(col))
        failed = int(pc.sum(bad).as_py() or 0)
        if failed == 0 or ((n - failed) / n >= chk.mostly and chk.mostly < 1.0):
            continue
        if chk.severity != "error":
            warnings[(view, chk.label)] = warnings.get((view, chk.label), 0) + failed
            continue
        example = table.column(col).filter(bad)[0].as_py()
        raise ContractViolation(
            f"push to '{view}' rejected: {failed} of {n} rows fail {chk.label} (e.g. {chk.column}={example!r}).",
            hint="Fix the rows, or the contract in contracts/; nothing of this push was written.",
        )
