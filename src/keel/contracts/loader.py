"""Contracts in YAML, read with every error pointing at its file and line.

::

    contract: transactions
    owners: [alice, bob]             # who owns it (default: whoever first validates it)
    data: data/transactions.parquet  # where the data is (for `keel validate transactions`, `keel ci`)
    unexpected_columns: error        # error | warn | ignore
    reference: last_accepted         # default reference of relative checks
    columns:
      user_id: {type: int, nullable: false}
      amount:
        type: float
        checks:
          - min: 0
          - max: 10000
            mostly: 0.99
            severity: warn
          - psi: 0.2
      country:
        type: string
        checks:
          - allowed_values: [US, DE, FR]
          - no_new_categories
    checks:
      - row_count: {min: 1000}
      - duplicate_keys: [user_id, ts]
      - sql: "price >= cost"
        name: price_covers_cost

A check is a rule name alone (``- not_null``) or a mapping with exactly one rule
key plus the optional ``severity``, ``mostly``, ``name`` and ``reference``.
The file is parsed with :func:`yaml.compose`, so each node keeps its line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from keel.contracts.model import Check, Column, Contract, make_check
from keel.contracts.rules import RULES
from keel.errors import NotFoundError, ValidationError, did_you_mean

COMMON_KEYS = ("severity", "mostly", "name", "reference")
TOP_KEYS = ("contract", "description", "owners", "data", "unexpected_columns", "reference", "columns", "checks")
COLUMN_KEYS = ("type", "nullable", "required", "description", "checks")

_DUCK_TYPES = {
    "int": "BIGINT", "float": "DOUBLE", "number": "DOUBLE", "decimal": "DECIMAL(18,3)",
    "string": "VARCHAR", "bool": "BOOLEAN", "timestamp": "TIMESTAMP", "timestamp_tz": "TIMESTAMPTZ",
    "date": "DATE", "binary": "BLOB", "any": "VARCHAR",
}


class _Doc:
    def __init__(self, path: str) -> None:
        self.path = path
        self._constructor = yaml.constructor.SafeConstructor()

    def where(self, node: yaml.Node) -> str:
        return f"{self.path}:{node.start_mark.line + 1}"

    def fail(self, node: yaml.Node, message: str, hint: str | None = None) -> ValidationError:
        return ValidationError(f"{self.where(node)}: {message}", hint=hint, file=self.path, line=node.start_mark.line + 1)

    def value(self, node: yaml.Node) -> Any:
        return self._constructor.construct_object(node, deep=True)

    def mapping(self, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping.")
        out = []
        seen: set[str] = set()
        for k, v in node.value:
            key = str(self.value(k))
            if key in seen:
                raise self.fail(k, f"{what} has the key {key!r} twice.")
            seen.add(key)
            out.append((key, k, v))
        return out

    def scalar(self, node: yaml.Node, what: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{what} must be a single value.")
        return self.value(node)


def load_contract(path: str | Path) -> Contract:
    """Read and check a contract file; every error names the file and line."""
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"Contract file {str(path)!r} does not exist.", hint="Check the path, or write one with `keel contracts suggest`.")
    return loads_contract(p.read_text(encoding="utf-8"), str(path))


def loads_contract(text: str, path: str = "<string>") -> Contract:
    """Parse a contract from YAML text; ``path`` is used in error messages."""
    doc = _Doc(path)
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        from keel.config import describe_yaml_error

        line, problem, hint = describe_yaml_error(exc)
        raise ValidationError(f"{path}{f':{line}' if line else ''}: not valid YAML: {problem}.", hint=hint, file=path, line=line) from None
    if root is None:
        raise ValidationError(f"{path}: the contract file is empty.", hint="Start from `keel contracts suggest`.")
    top = doc.mapping(root, "A contract")
    fields: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key, knode, vnode in top:
        if key not in TOP_KEYS:
            raise doc.fail(knode, f"unknown contract key {key!r}; use {', '.join(TOP_KEYS)}.{did_you_mean(key, TOP_KEYS)}")
        fields[key] = (knode, vnode)
    name = Path(path).stem
    if "contract" in fields:
        name = str(doc.scalar(fields["contract"][1], "'contract'"))
    columns: dict[str, Column] = {}
    if "columns" in fields:
        cnode = fields["columns"][1]
        if not (isinstance(cnode, yaml.ScalarNode) and cnode.value in ("", "null", "~")):
            for col_name, knode, vnode in doc.mapping(cnode, "'columns'"):
                columns[col_name] = _column(doc, col_name, knode, vnode)
    table_checks: list[Check] = []
    if "checks" in fields:
        table_checks = _checks(doc, fields["checks"][1], None)
    kwargs: dict[str, Any] = {}
    for key in ("description", "data", "unexpected_columns", "reference"):
        if key in fields:
            kwargs[key] = str(doc.scalar(fields[key][1], f"'{key}'"))
    if "owners" in fields:
        onode = fields["owners"][1]
        if isinstance(onode, yaml.SequenceNode):
            kwargs["owners"] = [str(doc.scalar(item, "an owner")) for item in onode.value]
        else:
            kwargs["owners"] = str(doc.scalar(onode, "'owners'")).split(",")
    if "reference" in kwargs:
        _check_reference(doc, fields["reference"][1], kwargs["reference"])
    if "unexpected_columns" in kwargs and kwargs["unexpected_columns"] not in ("error", "warn", "ignore"):
        raise doc.fail(fields["unexpected_columns"][1], f"unexpected_columns must be error, warn or ignore, got {kwargs['unexpected_columns']!r}.")
    try:
        contract = Contract(name, columns=columns, checks=table_checks, source_file=path, **kwargs)
    except ValidationError as exc:
        # Contract-level checks (undeclared columns, duplicate ids) know the check's line already.
        raise ValidationError(f"{path}: {exc.message}", hint=exc.hint, file=path) from None
    _check_sql(contract)
    return contract


def _column(doc: _Doc, name: str, knode: yaml.Node, vnode: yaml.Node) -> Column:
    where = doc.where(knode)
    if isinstance(vnode, yaml.ScalarNode):
        raw = doc.value(vnode)
        try:
            return Column(None if raw is None else str(raw), where=where)
        except ValueError as exc:
            raise doc.fail(vnode, _sentence(f"column {name!r}: {exc}")) from None
    kwargs: dict[str, Any] = {"where": where}
    checks: list[Check] = []
    for key, k, v in doc.mapping(vnode, f"column {name!r}"):
        if key not in COLUMN_KEYS:
            if key in RULES:
                raise doc.fail(k, f"column {name!r}: put the rule {key!r} in the column's 'checks' list.", hint=f"checks:\n  - {key}: ...")
            raise doc.fail(k, f"column {name!r}: unknown key {key!r}; use {', '.join(COLUMN_KEYS)}.{did_you_mean(key, COLUMN_KEYS)}")
        if key == "checks":
            checks = _checks(doc, v, name)
        elif key in ("nullable", "required"):
            val = doc.scalar(v, key)
            if not isinstance(val, bool):
                raise doc.fail(v, f"column {name!r}: {key} must be true or false, got {val!r}.")
            kwargs[key] = val
        else:
            kwargs[key] = doc.scalar(v, key)
    try:
        return Column(kwargs.pop("type", None), checks=checks, **kwargs)
    except ValueError as exc:
        raise doc.fail(vnode, _sentence(f"column {name!r}: {exc}")) from None


def _checks(doc: _Doc, node: yaml.Node, column: str | None) -> list[Check]:
    if isinstance(node, yaml.ScalarNode) and node.value in ("", "null", "~"):
        return []
    if not isinstance(node, yaml.SequenceNode):
        raise doc.fail(node, "'checks' must be a list (each item starts with '- ').")
    return [_check(doc, item, column) for item in node.value]


def _check(doc: _Doc, node: yaml.Node, column: str | None) -> Check:
    where = doc.where(node)
    common: dict[str, Any] = {}
    rule: tuple[str, Any] | None = None
    if isinstance(node, yaml.ScalarNode):
        rule = (str(doc.value(node)), None)
    else:
        for key, k, v in doc.mapping(node, "A check"):
            if key in COMMON_KEYS:
                common[key] = doc.scalar(v, key)
            elif rule is not None:
                raise doc.fail(k, f"a check has two rules, {rule[0]!r} and {key!r}; write each as its own list item.")
            else:
                rule = (key, doc.value(v))
        if rule is None:
            raise doc.fail(node, f"a check needs a rule, e.g. '- not_null' or '- min: 0'; rules: {', '.join(k for k in RULES if k != 'type')}.")
    kind, value = rule
    if kind == "check" and column is None and isinstance(value, str):
        kind, value = "custom", {"check": value}
    if "reference" in common:
        _check_reference(doc, node, str(common["reference"]))
    try:
        if column is not None and kind in RULES and RULES[kind].scope == "table":
            raise ValueError(f"'{kind}' is a table check; put it under the contract's top-level checks")
        return make_check(kind, value, column=column, where=where, **common)
    except ValueError as exc:
        raise doc.fail(node, _sentence(f"{'column ' + repr(column) + ': ' if column else ''}{exc}")) from None
    except TypeError as exc:
        raise doc.fail(node, f"bad check options: {exc}.") from None


def _check_reference(doc: _Doc, node: yaml.Node, ref: str) -> None:
    # Kinds registered later (e.g. by the model registry) are accepted if well-formed;
    # a near-miss of a known kind is a typo.
    import re as _re

    from keel.contracts.reference import known_reference_kinds

    kind, _, arg = ref.partition(":")
    kinds = known_reference_kinds()
    if not _re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", kind):
        raise doc.fail(node, f"reference {ref!r} is not KIND or KIND:ARG; use one of {', '.join(kinds)}.")
    if kind not in kinds and did_you_mean(kind, kinds, cutoff=0.75):
        raise doc.fail(node, f"unknown reference {ref!r}.{did_you_mean(kind, kinds, cutoff=0.75)}")
    if kind == "snapshot" and not arg:
        raise doc.fail(node, "a snapshot reference needs a name: 'snapshot:NAME'.")


def _check_sql(contract: Contract) -> None:
    """Bind each SQL check against an empty table of the declared columns."""
    sql_checks = [c for c in contract.checks if c.kind == "sql"]
    if not sql_checks or not contract.columns:
        return
    import duckdb

    con = duckdb.connect()
    try:
        cols = ", ".join(f'"{n.replace(chr(34), chr(34) * 2)}" {_DUCK_TYPES[c.type or "any"]}' for n, c in contract.columns.items())
        con.execute(f"CREATE TABLE t ({cols})")
        for chk in sql_checks:
            try:
                con.execute(f"SELECT count_if(NOT ({chk.args['expr']})) FROM t").fetchall()
            except duckdb.Error as exc:
                first = str(exc).splitlines()[0]
                raise ValidationError(
                    f"{chk.where or contract.source_file}: SQL check {chk.args['expr']!r} does not run on the declared columns: {first}",
                    hint="Fix the expression or declare the columns it uses.",
                ) from None
    finally:
        con.close()


def dump_yaml(contract: Contract) -> str:
    """The contract as YAML text (leaf arguments in flow style)."""
    return yaml.safe_dump(contract.to_spec(), sort_keys=False, default_flow_style=None, allow_unicode=True, width=100)


def _sentence(text: str) -> str:
    return text if text.endswith((".", "?", "!")) else text + "."
