"""The rules a check can use: their scope, their arguments and how those are read.

Each :class:`Rule` parses the raw argument of a check (from Python or YAML) into
a plain dict, or raises ``ValueError`` with a message naming the bad value; the
caller adds the file and line. Column types are here too: the logical names a
contract uses and the DuckDB type families they accept.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from keel.errors import did_you_mean

# Logical type names a contract may use, and the DuckDB type families they accept.
TYPE_FAMILIES: dict[str, frozenset[str]] = {
    "int": frozenset({"int"}),
    "float": frozenset({"float", "decimal"}),
    "number": frozenset({"int", "float", "decimal"}),
    "decimal": frozenset({"decimal"}),
    "string": frozenset({"string"}),
    "bool": frozenset({"bool"}),
    "timestamp": frozenset({"timestamp", "timestamp_tz"}),
    "timestamp_tz": frozenset({"timestamp_tz"}),
    "date": frozenset({"date"}),
    "binary": frozenset({"binary"}),
    "any": frozenset(),
}
TYPE_ALIASES = {
    "integer": "int", "int64": "int", "int32": "int", "bigint": "int", "long": "int",
    "double": "float", "float64": "float", "float32": "float", "real": "float", "numeric": "number",
    "str": "string", "text": "string", "varchar": "string", "category": "string",
    "boolean": "bool", "datetime": "timestamp", "timestamptz": "timestamp_tz",
    "bytes": "binary", "blob": "binary",
}


def normalize_type(name: str) -> str:
    key = str(name).strip().lower()
    key = TYPE_ALIASES.get(key, key)
    if key not in TYPE_FAMILIES:
        raise ValueError(
            f"unknown column type {name!r}; use one of {', '.join(TYPE_FAMILIES)}.{did_you_mean(key, TYPE_FAMILIES)}"
        )
    return key


def duckdb_family(duck_type: str) -> str:
    """The logical family of a DuckDB type name (``BIGINT`` -> ``int``)."""
    t = duck_type.upper()
    if t in {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"}:
        return "int"
    if t in {"FLOAT", "DOUBLE", "REAL"}:
        return "float"
    if t.startswith("DECIMAL"):
        return "decimal"
    if t in {"VARCHAR", "TEXT", "STRING", "UUID"} or t.startswith("ENUM"):
        return "string"
    if t == "BOOLEAN":
        return "bool"
    if t in {"TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"}:
        return "timestamp_tz"
    if t.startswith("TIMESTAMP"):
        return "timestamp"
    if t == "DATE":
        return "date"
    if t in {"BLOB", "BYTEA"}:
        return "binary"
    return t.lower()


# -- rules ----------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: Any) -> float:
    """Seconds from ``90``, ``"15m"``, ``"2h"``, ``"1d"``, ``"1w"``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '6h' or '1d', got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"expected a duration like '30m', '6h' or '1d', got {value!r}")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def _num(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number, got {value!r}")
    return float(value)


def parse_fraction(value: Any, what: str) -> float:
    v = _num(value, what)
    if not 0 <= v <= 1:
        raise ValueError(f"{what} must be a fraction between 0 and 1, got {value!r}")
    return v


def _nonneg(value: Any, what: str) -> float:
    v = _num(value, what)
    if v < 0:
        raise ValueError(f"{what} must be >= 0, got {value!r}")
    return v


def _as_mapping(kind: str, value: Any, scalar_key: str | None) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    if scalar_key is None:
        raise ValueError(f"'{kind}' takes a mapping of arguments, got {value!r}")
    return {scalar_key: value}


def _only(kind: str, args: Mapping[str, Any], allowed: Iterable[str], required: Iterable[str] = ()) -> None:
    allowed = set(allowed)
    for key in args:
        if key not in allowed:
            raise ValueError(
                f"'{kind}' has no argument {key!r}; it takes {', '.join(sorted(allowed)) or 'none'}.{did_you_mean(str(key), allowed)}"
            )
    for key in required:
        if key not in args:
            raise ValueError(f"'{kind}' needs the argument {key!r}")


@dataclass(frozen=True)
class Rule:
    """One kind of check: where it applies and how its arguments are read."""

    kind: str
    scope: str  # "column" | "table"
    parse: Callable[[Any], dict[str, Any]]
    row_level: bool = False  # counts failing rows, so `mostly` applies
    relative: bool = False  # compares with a reference profile
    help: str = ""


def _p_none(kind: str) -> Callable[[Any], dict[str, Any]]:
    def parse(value: Any) -> dict[str, Any]:
        if value not in (None, True, {}):
            raise ValueError(f"'{kind}' takes no argument, got {value!r}")
        return {}

    return parse


def _p_bound(kind: str) -> Callable[[Any], dict[str, Any]]:
    def parse(value: Any) -> dict[str, Any]:
        args = _as_mapping(kind, value, "value")
        _only(kind, args, {"value", "strict"}, {"value"})
        return {"value": _num(args["value"], f"'{kind}' value"), "strict": bool(args.get("strict", False))}

    return parse


def _p_between(value: Any) -> dict[str, Any]:
    if isinstance(value, list | tuple) and len(value) == 2:
        value = {"min": value[0], "max": value[1]}
    args = _as_mapping("between", value, None)
    _only("between", args, {"min", "max", "strict"})
    if "min" not in args and "max" not in args:
        raise ValueError("'between' needs 'min', 'max' or both")
    out: dict[str, Any] = {"strict": bool(args.get("strict", False))}
    for k in ("min", "max"):
        out[k] = None if args.get(k) is None else _num(args[k], f"'between' {k}")
    if out["min"] is not None and out["max"] is not None and out["min"] > out["max"]:
        raise ValueError(f"'between' min {out['min']} is above max {out['max']}")
    return out


def _p_allowed(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        _only("allowed_values", value, {"values"}, {"values"})
        value = value["values"]
    if not isinstance(value, list | tuple | set | frozenset) or not value:
        raise ValueError(f"'allowed_values' needs a non-empty list, got {value!r}")
    return {"values": list(value)}


def _p_regex(value: Any) -> dict[str, Any]:
    args = _as_mapping("regex", value, "pattern")
    _only("regex", args, {"pattern"}, {"pattern"})
    pattern = str(args["pattern"])
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"'regex' pattern {pattern!r} does not compile: {exc}") from None
    return {"pattern": pattern}


def _p_length(value: Any) -> dict[str, Any]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = {"min": value, "max": value}
    args = _as_mapping("length", value, None)
    _only("length", args, {"min", "max"})
    if "min" not in args and "max" not in args:
        raise ValueError("'length' needs 'min', 'max' or both")
    out = {k: None if args.get(k) is None else int(_nonneg(args[k], f"'length' {k}")) for k in ("min", "max")}
    return out


def _p_monotonic(value: Any) -> dict[str, Any]:
    args = _as_mapping("monotonic", value, "direction")
    _only("monotonic", args, {"direction", "strict"})
    direction = args.get("direction", "increasing")
    if direction not in ("increasing", "decreasing"):
        raise ValueError(f"'monotonic' direction must be 'increasing' or 'decreasing', got {direction!r}")
    return {"direction": direction, "strict": bool(args.get("strict", False))}


def _p_max_fraction(kind: str, key: str) -> Callable[[Any], dict[str, Any]]:
    def parse(value: Any) -> dict[str, Any]:
        args = _as_mapping(kind, value, key)
        _only(kind, args, {key}, {key})
        return {key: parse_fraction(args[key], f"'{kind}' {key}")}

    return parse


def _p_freshness(value: Any) -> dict[str, Any]:
    args = _as_mapping("freshness", value, "max_age")
    _only("freshness", args, {"max_age"}, {"max_age"})
    return {"max_age": parse_duration(args["max_age"])}


def _p_row_count(value: Any) -> dict[str, Any]:
    args = _as_mapping("row_count", value, None)
    _only("row_count", args, {"min", "max"})
    if "min" not in args and "max" not in args:
        raise ValueError("'row_count' needs 'min', 'max' or both")
    out = {k: None if args.get(k) is None else int(_nonneg(args[k], f"'row_count' {k}")) for k in ("min", "max")}
    if out["min"] is not None and out["max"] is not None and out["min"] > out["max"]:
        raise ValueError(f"'row_count' min {out['min']} is above max {out['max']}")
    return out


def _p_keys(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        _only("duplicate_keys", value, {"columns"}, {"columns"})
        value = value["columns"]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"'duplicate_keys' needs a list of column names, got {value!r}")
    return {"columns": list(value)}


def _p_referential(value: Any) -> dict[str, Any]:
    args = _as_mapping("referential", value, None)
    _only("referential", args, {"column", "source", "ref_column"}, {"column", "source"})
    return {"column": str(args["column"]), "source": str(args["source"]), "ref_column": str(args.get("ref_column") or args["column"])}


def _p_pct(kind: str) -> Callable[[Any], dict[str, Any]]:
    def parse(value: Any) -> dict[str, Any]:
        args = _as_mapping(kind, value, "max_pct")
        _only(kind, args, {"max_pct"}, {"max_pct"})
        return {"max_pct": _nonneg(args["max_pct"], f"'{kind}' max_pct")}

    return parse


def _p_psi(value: Any) -> dict[str, Any]:
    args = _as_mapping("psi", value, "max")
    _only("psi", args, {"max"}, {"max"})
    return {"max": _nonneg(args["max"], "'psi' max")}


def _p_ks(value: Any) -> dict[str, Any]:
    args = _as_mapping("ks", value, "min_pvalue")
    _only("ks", args, {"min_pvalue"}, {"min_pvalue"})
    return {"min_pvalue": parse_fraction(args["min_pvalue"], "'ks' min_pvalue")}


def _p_share(value: Any) -> dict[str, Any]:
    args = _as_mapping("category_share", value, "max_points")
    _only("category_share", args, {"max_points", "values"}, {"max_points"})
    values = args.get("values")
    if values is not None and not isinstance(values, list | tuple):
        values = [values]
    return {"max_points": _nonneg(args["max_points"], "'category_share' max_points"), "values": None if values is None else list(values)}


def _p_null_increase(value: Any) -> dict[str, Any]:
    args = _as_mapping("null_rate_increase", value, "max_points")
    _only("null_rate_increase", args, {"max_points"}, {"max_points"})
    return {"max_points": _nonneg(args["max_points"], "'null_rate_increase' max_points")}


def _p_sql(value: Any) -> dict[str, Any]:
    args = _as_mapping("sql", value, "expr")
    _only("sql", args, {"expr"}, {"expr"})
    expr = str(args["expr"]).strip()
    if not expr or ";" in expr:
        raise ValueError(f"'sql' needs one boolean SQL expression (no ';'), got {expr!r}")
    return {"expr": expr}


def _p_custom(value: Any) -> dict[str, Any]:
    args = _as_mapping("custom", value, "check")
    _only("custom", args, {"check", "params"}, {"check"})
    params = args.get("params") or {}
    if not isinstance(params, Mapping):
        raise ValueError(f"'custom' params must be a mapping, got {params!r}")
    return {"check": str(args["check"]), "params": dict(params)}


RULES: dict[str, Rule] = {
    r.kind: r
    for r in [
        Rule("type", "column", lambda v: {"type": normalize_type(v)}, help="column has this type"),
        Rule("not_null", "column", _p_none("not_null"), row_level=True, help="no nulls (NaN counts as null)"),
        Rule("max_null_fraction", "column", _p_max_fraction("max_null_fraction", "max"), help="share of nulls at most max"),
        Rule("unique", "column", _p_none("unique"), row_level=True, help="no value appears twice"),
        Rule("min", "column", _p_bound("min"), row_level=True, help="values >= value (> when strict)"),
        Rule("max", "column", _p_bound("max"), row_level=True, help="values <= value (< when strict)"),
        Rule("between", "column", _p_between, row_level=True, help="min <= value <= max"),
        Rule("positive", "column", _p_none("positive"), row_level=True, help="values > 0"),
        Rule("allowed_values", "column", _p_allowed, row_level=True, help="values among the list"),
        Rule("regex", "column", _p_regex, row_level=True, help="strings match the pattern (search)"),
        Rule("length", "column", _p_length, row_level=True, help="string length within min..max"),
        Rule("monotonic", "column", _p_monotonic, row_level=True, help="values never go down (or up)"),
        Rule("freshness", "column", _p_freshness, help="newest timestamp no older than max_age"),
        Rule("mean_change", "column", _p_pct("mean_change"), relative=True, help="mean within max_pct % of the reference"),
        Rule("psi", "column", _p_psi, relative=True, help="population stability index below max"),
        Rule("ks", "column", _p_ks, relative=True, help="Kolmogorov-Smirnov p-value above min_pvalue"),
        Rule("category_share", "column", _p_share, relative=True, help="each category's share within ±max_points"),
        Rule("null_rate_increase", "column", _p_null_increase, relative=True, help="null rate at most max_points above the reference"),
        Rule("no_new_categories", "column", _p_none("no_new_categories"), relative=True, help="no value unseen in the reference"),
        Rule("row_count", "table", _p_row_count, help="number of rows within min..max"),
        Rule("row_count_change", "table", _p_pct("row_count_change"), relative=True, help="rows within ±max_pct % of the reference"),
        Rule("duplicate_keys", "table", _p_keys, help="no two rows share the key columns"),
        Rule("referential", "table", _p_referential, help="every value exists in another source's column"),
        Rule("sql", "table", _p_sql, row_level=True, help="a boolean SQL expression holds for every row"),
        Rule("custom", "table", _p_custom, row_level=True, help="a check registered with register_check"),
    ]
}
