"""What a contract is: columns with types, checks with severities, and their rules.

A :class:`Contract` is plain data. It is written in Python::

    from keel.contracts import Column, Contract, checks as c

    contract = Contract(
        "transactions",
        columns={
            "user_id": Column("int", nullable=False),
            "amount": Column("float", checks=[c.min(0), c.max(10_000, mostly=0.99), c.psi(max=0.2)]),
        },
        checks=[c.row_count(min=1_000), c.duplicate_keys(["user_id", "ts"])],
    )

or in YAML (see :mod:`keel.contracts.loader`). Both build the same objects, and
both are checked when they are built: an unknown rule, a bad argument or a
reference to an undeclared column raises :class:`~keel.errors.ValidationError`
naming the rule (and, from YAML, the file and line).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from keel.contracts.rules import (
    RULES,
    TYPE_FAMILIES,
    Rule,
    duckdb_family,
    normalize_type,
    parse_fraction,
)
from keel.errors import ValidationError, did_you_mean

__all__ = ["RULES", "TYPE_FAMILIES", "Check", "Column", "Contract", "Rule", "duckdb_family", "make_check", "normalize_type"]

SEVERITIES = ("error", "warn")
UNEXPECTED = ("error", "warn", "ignore")

@dataclass(frozen=True)
class Check:
    """One check of a contract. Build it with :mod:`keel.contracts.checks` or from YAML."""

    kind: str
    column: str | None = None
    args: Mapping[str, Any] = field(default_factory=dict)
    severity: str = "error"
    mostly: float = 1.0
    name: str | None = None
    reference: str | None = None
    where: str | None = None  # "file.yaml:12" when loaded from a file

    @property
    def rule(self) -> Rule:
        return RULES[self.kind]

    @property
    def id(self) -> str:
        """A stable id within the contract: the name, else ``column.kind``."""
        if self.name:
            return self.name
        if self.kind == "custom":
            base = f"custom:{self.args['check']}"
        elif self.kind == "sql":
            base = f"sql:{self.args['expr']}"
        elif self.kind == "duplicate_keys":
            base = f"duplicate_keys:{','.join(self.args['columns'])}"
        elif self.kind == "referential":
            base = f"referential:{self.args['column']}->{self.args['source']}"
        else:
            base = self.kind
        return f"{self.column}.{base}" if self.column else base

    def columns(self) -> list[str]:
        """Every data column this check reads."""
        if self.column:
            return [self.column]
        if self.kind == "duplicate_keys":
            return list(self.args["columns"])
        if self.kind == "referential":
            return [self.args["column"]]
        return []

    def describe(self) -> str:
        """The expected condition, for reports."""
        a = self.args
        k = self.kind
        strict = a.get("strict")
        text = {
            "type": lambda: f"type {a.get('type')}",
            "not_null": lambda: "no nulls",
            "max_null_fraction": lambda: f"null fraction <= {a['max']:g}",
            "unique": lambda: "unique values",
            "min": lambda: f"{'>' if strict else '>='} {a['value']:g}",
            "max": lambda: f"{'<' if strict else '<='} {a['value']:g}",
            "between": lambda: _range("", a["min"], a["max"], bool(strict)),
            "positive": lambda: "> 0",
            "allowed_values": lambda: f"in {_short(a['values'])}",
            "regex": lambda: f"matches /{a['pattern']}/",
            "length": lambda: _range("length ", a["min"], a["max"], False),
            "monotonic": lambda: f"{'strictly ' if strict else ''}{a['direction']}",
            "freshness": lambda: f"newest within {_age(a['max_age'])}",
            "mean_change": lambda: f"mean within ±{a['max_pct']:g}% of reference",
            "psi": lambda: f"PSI < {a['max']:g}",
            "ks": lambda: f"KS p-value > {a['min_pvalue']:g}",
            "category_share": lambda: f"shares within ±{a['max_points']:g} points of reference",
            "null_rate_increase": lambda: f"null rate <= reference + {a['max_points']:g} points",
            "no_new_categories": lambda: "no category unseen in reference",
            "row_count": lambda: _range("rows ", a["min"], a["max"], False),
            "row_count_change": lambda: f"rows within ±{a['max_pct']:g}% of reference",
            "duplicate_keys": lambda: f"unique key ({', '.join(a['columns'])})",
            "referential": lambda: f"{a['column']} found in {a['source']}:{a['ref_column']}",
            "sql": lambda: a["expr"],
            "custom": lambda: f"{a['check']}({', '.join(f'{k}={v!r}' for k, v in a['params'].items())})",
        }[k]()
        if self.mostly < 1:
            text += f" (mostly {self.mostly:g})"
        return text

    def to_spec(self) -> Any:
        """The YAML form of this check (inside its column, when it has one)."""
        a = dict(self.args)
        value: Any
        if self.kind in {"not_null", "unique", "positive", "no_new_categories"}:
            value = None
        elif self.kind in {"min", "max"} and not a.get("strict"):
            value = a["value"]
        elif self.kind == "allowed_values":
            value = a["values"]
        elif self.kind == "regex":
            value = a["pattern"]
        elif self.kind == "sql":
            value = a["expr"]
        elif self.kind in {"psi", "ks", "mean_change", "row_count_change", "null_rate_increase", "max_null_fraction"}:
            (value,) = a.values()
        elif self.kind == "duplicate_keys":
            value = a["columns"]
        elif self.kind == "category_share" and a.get("values") is None:
            value = {"max_points": a["max_points"]}
        elif self.kind == "between" and not a.get("strict"):
            value = {k: v for k, v in a.items() if k != "strict" and v is not None}
        elif self.kind in {"length", "row_count"}:
            value = {k: v for k, v in a.items() if v is not None}
        else:
            value = {k: v for k, v in a.items() if not (k == "strict" and not v)}
        out: dict[str, Any] = {self.kind: value}
        if self.severity != "error":
            out["severity"] = self.severity
        if self.mostly < 1:
            out["mostly"] = self.mostly
        if self.name:
            out["name"] = self.name
        if self.reference:
            out["reference"] = self.reference
        if value is None:
            if len(out) == 1:
                return self.kind
            out[self.kind] = True
        return out


def _range(what: str, lo: Any, hi: Any, strict: bool) -> str:
    if lo is not None and hi is not None:
        return f"{what}in {'(' if strict else '['}{_g(lo)}, {_g(hi)}{')' if strict else ']'}"
    if lo is not None:
        return f"{what}{'>' if strict else '>='} {_g(lo)}"
    return f"{what}{'<' if strict else '<='} {_g(hi)}"


def _g(v: Any) -> str:
    return "" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def _short(values: list[Any], n: int = 6) -> str:
    shown = ", ".join(repr(v) for v in values[:n])
    return f"{{{shown}{', ...' if len(values) > n else ''}}}"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def make_check(
    kind: str,
    value: Any = None,
    *,
    column: str | None = None,
    severity: str = "error",
    mostly: float | None = None,
    name: str | None = None,
    reference: str | None = None,
    where: str | None = None,
) -> Check:
    """Build a checked :class:`Check` from a rule name and its raw argument.

    Raises ``ValueError`` with a plain message; callers add the location.
    """
    rule = RULES.get(kind)
    if rule is None or kind == "type":
        raise ValueError(f"unknown check {kind!r}.{did_you_mean(str(kind), [k for k in RULES if k != 'type'])}")
    if rule.scope == "column" and column is None:
        raise ValueError(f"'{kind}' is a column check; put it under a column's checks")
    if rule.scope == "table" and column is not None:
        raise ValueError(f"'{kind}' is a table check; put it under the contract's top-level checks")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 'error' or 'warn', got {severity!r}")
    if mostly is not None:
        if not rule.row_level:
            raise ValueError(f"'mostly' applies to row-level checks only, not to '{kind}'")
        mostly = parse_fraction(mostly, "mostly")
    if reference is not None and not rule.relative:
        raise ValueError(f"'reference' applies to relative checks only, not to '{kind}'")
    args = rule.parse(value)
    return Check(kind, column, args, severity, 1.0 if mostly is None else mostly, name, reference, where)


@dataclass(frozen=True)
class Column:
    """A declared column: its type, whether it may be null or missing, and its checks."""

    type: str | None = None
    nullable: bool = True
    required: bool = True
    checks: tuple[Check, ...] = ()
    description: str | None = None
    where: str | None = None

    def __init__(
        self,
        type: str | None = None,
        *,
        nullable: bool = True,
        required: bool = True,
        checks: Iterable[Check] = (),
        description: str | None = None,
        where: str | None = None,
    ) -> None:
        object.__setattr__(self, "type", None if type is None else normalize_type(type))
        object.__setattr__(self, "nullable", bool(nullable))
        object.__setattr__(self, "required", bool(required))
        object.__setattr__(self, "checks", tuple(checks))
        object.__setattr__(self, "description", description)
        object.__setattr__(self, "where", where)


class Contract:
    """A named set of column declarations and checks that data must satisfy.

    ``unexpected_columns`` says what a column the contract does not declare is:
    ``"error"`` (default when columns are declared), ``"warn"`` or ``"ignore"``.
    ``reference`` is the default reference of relative checks: ``last_accepted``
    (default), ``same_weekday_last_week``, ``snapshot:NAME`` or ``KIND[:ARG]``
    of a resolver registered with
    :func:`~keel.contracts.reference.register_reference_resolver`.
    ``owners`` are the users who own it (recorded with its first stored
    validation; default: whoever ran it). ``data`` says where the guarded data is (a Parquet/CSV path, a folder or a
    glob, relative to the project root), so ``keel validate TARGET`` and ``keel
    ci`` find it; it is not part of :meth:`digest`.
    """

    def __init__(
        self,
        name: str,
        *,
        columns: Mapping[str, Column | str] | None = None,
        checks: Iterable[Check] = (),
        unexpected_columns: str = "error",
        reference: str = "last_accepted",
        description: str | None = None,
        source_file: str | None = None,
        data: str | None = None,
        owners: Iterable[str] = (),
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValidationError(f"A contract needs a non-empty name, got {name!r}.")
        if unexpected_columns not in UNEXPECTED:
            raise ValidationError(
                f"unexpected_columns must be one of {', '.join(UNEXPECTED)}, got {unexpected_columns!r}."
            )
        self.name = name
        self.columns: dict[str, Column] = {
            k: (Column(v) if isinstance(v, str) else v) for k, v in (columns or {}).items()
        }
        self.unexpected_columns = unexpected_columns
        self.reference = reference
        self.description = description
        self.source_file = source_file
        self.data = data
        # who owns it (keel.store.owners); recorded when it is first stored, default: who validated it
        self.owners = [str(o).strip() for o in ([owners] if isinstance(owners, str) else owners) if str(o).strip()]
        self.table_checks: list[Check] = list(checks)
        self.checks: list[Check] = self._all_checks()
        self._verify()

    def _all_checks(self) -> list[Check]:
        out: list[Check] = []
        for col_name, col in self.columns.items():
            if col.type is not None:
                out.append(Check("type", col_name, {"type": col.type}, where=col.where))
            if not col.nullable:
                out.append(Check("not_null", col_name, {}, where=col.where))
            for chk in col.checks:
                if chk.rule.scope != "column":
                    raise ValidationError(
                        f"Contract '{self.name}': '{chk.kind}' is a table check; "
                        f"put it in the contract's checks, not under column {col_name!r}."
                    )
                out.append(chk if chk.column == col_name else replace(chk, column=col_name))
        for chk in self.table_checks:
            if chk.rule.scope != "table":
                raise ValidationError(
                    f"Contract '{self.name}': '{chk.kind}' is a column check; put it in a Column's checks."
                )
        out.extend(self.table_checks)
        return out

    def _verify(self) -> None:
        seen: dict[str, Check] = {}
        for chk in self.checks:
            loc = f" ({chk.where})" if chk.where else ""
            if chk.kind not in RULES:
                raise ValidationError(f"Contract '{self.name}': unknown check {chk.kind!r}{loc}.")
            if self.columns:
                for col in chk.columns():
                    if col not in self.columns:
                        raise ValidationError(
                            f"Contract '{self.name}': check '{chk.id}'{loc} refers to column {col!r}, "
                            f"which the contract does not declare.{did_you_mean(col, self.columns)}",
                            hint="Declare the column under 'columns' or fix the name.",
                        )
            if chk.id in seen:
                raise ValidationError(
                    f"Contract '{self.name}': two checks have the id '{chk.id}'{loc}.",
                    hint="Give one of them a distinct 'name'.",
                )
            seen[chk.id] = chk

    @property
    def relative_checks(self) -> list[Check]:
        return [c for c in self.checks if c.rule.relative]

    def digest(self) -> str:
        """A hash of what the contract checks (not of its formatting)."""
        spec = self.to_spec()
        spec.pop("data", None)  # where the data lives is not what is checked
        payload = json.dumps(spec, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()

    def to_spec(self) -> dict[str, Any]:
        """The contract as plain data, in the YAML layout."""
        spec: dict[str, Any] = {"contract": self.name}
        if self.description:
            spec["description"] = self.description
        if self.data:
            spec["data"] = self.data
        if self.unexpected_columns != "error":
            spec["unexpected_columns"] = self.unexpected_columns
        if self.reference != "last_accepted":
            spec["reference"] = self.reference
        cols: dict[str, Any] = {}
        for name, col in self.columns.items():
            c: dict[str, Any] = {}
            if col.type:
                c["type"] = col.type
            if not col.nullable:
                c["nullable"] = False
            if not col.required:
                c["required"] = False
            if col.description:
                c["description"] = col.description
            if col.checks:
                c["checks"] = [chk.to_spec() for chk in col.checks]
            cols[name] = c
        if cols:
            spec["columns"] = cols
        if self.table_checks:
            spec["checks"] = [chk.to_spec() for chk in self.table_checks]
        return spec

    def to_yaml(self) -> str:
        from keel.contracts.loader import dump_yaml

        return dump_yaml(self)

    @classmethod
    def from_yaml(cls, path: str) -> Contract:
        """Load a contract file (see :func:`keel.contracts.loader.load_contract`)."""
        from keel.contracts.loader import load_contract

        return load_contract(path)

    def validate(self, data: Any, **kwargs: Any) -> Any:
        """Validate ``data`` against this contract; see :func:`keel.contracts.validate`."""
        from keel.contracts.api import validate

        return validate(data, contract=self, **kwargs)

    def __repr__(self) -> str:
        return f"Contract({self.name!r}, columns={len(self.columns)}, checks={len(self.checks)})"

