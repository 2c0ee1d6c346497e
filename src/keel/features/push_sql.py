"""SQL on the push path: a view's transformation compiled once to Arrow kernels, DuckDB for the rest.

A feature view's SQL transformation is one definition for training, materialization
and push. Offline it runs in DuckDB over the whole source; a push of a few rows must
not pay for a DuckDB query (about a millisecond even on a kept connection), so
:func:`transform` parses the SQL once with DuckDB's own parser
(``json_serialize_sql``) and compiles it to pyarrow compute kernels when it stays in
this subset:

- ``SELECT`` items over the table ``source``: ``*`` (with ``REPLACE`` / ``EXCLUDE``),
  columns, and aliased expressions; an optional ``WHERE``;
- literals (integer, string, boolean, ``NULL``; a decimal literal only beside a
  DOUBLE or under ``/``), ``+ - *`` (integer overflow is an error, as in DuckDB),
  ``/`` (always DOUBLE), unary ``-``;
- comparisons (DOUBLE with DuckDB's order: NaN equals NaN and sorts last),
  ``AND`` / ``OR`` / ``NOT`` (three-valued), ``IS [NOT] NULL``, ``[NOT] IN (list)``,
  ``CASE WHEN``, ``COALESCE``, ``NULLIF``;
- ``CAST`` to BIGINT / INTEGER (DOUBLE rounds half to even, as DuckDB does), DOUBLE,
  BOOLEAN and VARCHAR (from integers, booleans and strings);
- ``abs``, ``lower``, ``upper``, ``length``, ``||``, ``concat``, and ``greatest`` /
  ``least`` over integers or strings.

Everything else (joins, ``GROUP BY``, window functions, ``DISTINCT``, ``ORDER BY`` /
``LIMIT``, timestamp arithmetic, DECIMAL arithmetic, other functions and types) runs
in DuckDB on a connection kept per view, with the pushed batch registered as
``source``. The first batch of each (view, column types) runs both ways, and the
compiled form is kept only if its column names, types and values equal DuckDB's;
:func:`plan` says which way a view goes and why.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keel.errors import ValidationError

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from keel.features.definitions import FeatureView

BATCH = "__keel_push"
_CACHE_MAX = 256


class Unsupported(Exception):
    """The SQL leaves the compiled subset; DuckDB runs it."""


# -- the compiled expression tree -----------------------------------------------------------
# A node is (fn, kind, type): fn maps the input table to an Arrow array or scalar; kind is
# one of int, float, dec (a decimal literal, kept as its text), str, bool, ts, null.
@dataclass
class _Node:
    fn: Callable[[Any], Any]
    kind: str
    type: Any = None
    text: str = ""  # a decimal literal's digits


def _kind_of(typ: pa.DataType) -> str:
    import pyarrow as pa

    if typ in (pa.int32(), pa.int64()):
        return "int"
    if typ == pa.float64():
        return "float"
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return "str"
    if pa.types.is_boolean(typ):
        return "bool"
    if pa.types.is_timestamp(typ) and typ.tz is not None:
        return "ts"
    return "other"  # passes through as a column; no operation takes it


def _int_common(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    import pyarrow as pa

    return pa.int64() if pa.int64() in (a, b) else pa.int32()


def _as_float(n: _Node) -> Callable[[Any], Any]:
    """A numeric node's values as DOUBLE (a decimal literal converted exactly once)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if n.kind == "dec":
        value = pa.scalar(float(n.text), pa.float64())
        return lambda t: value
    if n.kind == "float":
        return n.fn
    if n.kind == "int":
        fn = n.fn
        return lambda t: pc.cast(fn(t), pa.float64())
    raise Unsupported(f"{n.kind} is not numeric")


def _unify(nodes: list[_Node]) -> tuple[str, Any, list[Callable[[Any], Any]]]:
    """One kind and type for CASE / COALESCE branches, as DuckDB's implicit casts give them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kinds = {n.kind for n in nodes if n.kind != "null"}
    if not kinds:
        raise Unsupported("only NULLs")
    if kinds == {"int"}:
        typ = pa.int32()
        for n in nodes:
            if n.kind == "int":
                typ = _int_common(typ, n.type)
        kind = "int"
    elif kinds <= {"int", "float", "dec"} and "float" in kinds:
        typ, kind = pa.float64(), "float"
    elif len(kinds) == 1 and next(iter(kinds)) in ("str", "bool", "ts"):
        kind = next(iter(kinds))
        types = {str(n.type) for n in nodes if n.kind == kind}
        if len(types) != 1:
            raise Unsupported("mixed string or timestamp types")
        typ = next(n.type for n in nodes if n.kind == kind)
    else:
        raise Unsupported(f"branches of kinds {sorted(kinds)}")
    def null(t: Any) -> Any:
        return pa.scalar(None, typ)

    def cast(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        return lambda t: pc.cast(fn(t), typ)

    fns: list[Callable[[Any], Any]] = []
    for n in nodes:
        if n.kind == "null":
            fns.append(null)
        elif n.kind == "dec":
            fns.append(_as_float(n))
        else:
            fns.append(n.fn if n.type == typ else cast(n.fn))
    return kind, typ, fns


def _compare(op: str, a: _Node, b: _Node) -> _Node:
    import pyarrow as pa
    import pyarrow.compute as pc

    numeric = {"int", "float", "dec"}
    kinds = {a.kind, b.kind}
    if kinds == {"int"}:
        fa, fb, floats = a.fn, b.fn, False
    elif kinds <= numeric and "float" in kinds:
        fa, fb, floats = _as_float(a), _as_float(b), True
    elif kinds <= numeric:
        raise Unsupported("a decimal literal compared with an integer or a decimal")
    elif a.kind == b.kind and a.kind in ("str", "bool", "ts") and (a.kind != "ts" or a.type == b.type):
        fa, fb, floats = a.fn, b.fn, False
    elif "null" in kinds:
        return _Node(lambda t: pa.scalar(None, pa.bool_()), "bool", pa.bool_())
    else:
        raise Unsupported(f"comparison of {a.kind} with {b.kind}")
    base = {"eq": pc.equal, "ne": pc.not_equal, "lt": pc.less, "le": pc.less_equal, "gt": pc.greater, "ge": pc.greater_equal}
    if not floats:
        f = base[op]
        return _Node(lambda t: f(fa(t), fb(t)), "bool", pa.bool_())

    def nan_aware(t: Any) -> Any:  # DuckDB orders NaN after every number and equal to itself
        x, y = fa(t), fb(t)
        nx, ny = pc.is_nan(x), pc.is_nan(y)
        either = pc.or_(nx, ny)
        if op in ("eq", "ne"):
            eq = pc.if_else(either, pc.and_(nx, ny), pc.equal(x, y))
            return eq if op == "eq" else pc.invert(eq)
        if op in ("gt", "ge"):
            x, y, nx, ny = y, x, ny, nx
        if op in ("lt", "gt"):
            return pc.if_else(either, pc.and_(pc.invert(nx), ny), pc.less(x, y))
        return pc.if_else(either, ny, pc.less_equal(x, y))

    return _Node(nan_aware, "bool", pa.bool_())


_COMPARE = {
    "COMPARE_EQUAL": "eq", "COMPARE_NOTEQUAL": "ne", "COMPARE_LESSTHAN": "lt", "COMPARE_LESSTHANOREQUALTO": "le",
    "COMPARE_GREATERTHAN": "gt", "COMPARE_GREATERTHANOREQUALTO": "ge",
}
_CAST_TARGETS = {
    "BIGINT": "int64", "INT8": "int64", "LONG": "int64", "INTEGER": "int32", "INT": "int32", "INT4": "int32", "SIGNED": "int32",
    "DOUBLE": "float64", "FLOAT8": "float64", "BOOLEAN": "bool", "BOOL": "bool", "LOGICAL": "bool",
    "VARCHAR": "string", "TEXT": "string", "STRING": "string",
}


class _Compiler:
    def __init__(self, schema: pa.Schema, table_names: set[str]) -> None:
        self.schema = schema
        self.tables = table_names

    def column(self, names: list[str]) -> _Node:
        if len(names) == 2 and names[0].lower() in self.tables:
            names = names[1:]
        if len(names) != 1:
            raise Unsupported("a qualified column")
        want = names[0]
        hits = [f.name for f in self.schema if f.name == want] or [f.name for f in self.schema if f.name.lower() == want.lower()]
        if len(hits) != 1:
            raise Unsupported(f"column {want!r}")  # DuckDB names the error
        name = hits[0]
        typ = self.schema.field(name).type
        return _Node(lambda t: t.column(name), _kind_of(typ), typ)

    def constant(self, lit: dict[str, Any]) -> _Node:
        import pyarrow as pa

        kind, text = lit.get("kind"), lit.get("text", "")
        if kind == "INTEGER":
            v = int(text)
            typ = pa.int32() if -(2**31) <= v < 2**31 else pa.int64() if -(2**63) <= v < 2**63 else None
            if typ is None:
                raise Unsupported("a HUGEINT literal")
            s = pa.scalar(v, typ)
            return _Node(lambda t: s, "int", typ)
        if kind == "NUMERIC":
            return _Node(lambda t: None, "dec", None, text)
        if kind == "STRING":
            s = pa.scalar(text, pa.string())
            return _Node(lambda t: s, "str", pa.string())
        if kind == "BOOLEAN":
            b = pa.scalar(text.lower() == "true", pa.bool_())
            return _Node(lambda t: b, "bool", pa.bool_())
        if kind == "NULL_LITERAL":
            return _Node(lambda t: None, "null")
        raise Unsupported(f"a {kind} literal")

    def expr(self, e: dict[str, Any]) -> _Node:
        import pyarrow as pa
        import pyarrow.compute as pc

        cls, typ = e.get("class"), e.get("type")
        if cls == "COLUMN_REF":
            return self.column(list(e["column_names"]))
        if cls == "CONSTANT":
            return self.constant(e["literal"])
        if cls == "COMPARISON" and typ in _COMPARE:
            return _compare(_COMPARE[typ], self.expr(e["left"]), self.expr(e["right"]))
        if cls == "CONJUNCTION" and typ in ("CONJUNCTION_AND", "CONJUNCTION_OR"):
            parts = [self.expr(c) for c in e["children"]]
            if any(p.kind not in ("bool", "null") for p in parts):
                raise Unsupported("AND/OR of non-booleans")
            f = pc.and_kleene if typ == "CONJUNCTION_AND" else pc.or_kleene
            fns = [p.fn if p.kind == "bool" else (lambda t: pa.scalar(None, pa.bool_())) for p in parts]

            def conj(t: Any) -> Any:
                out = fns[0](t)
                for g in fns[1:]:
                    out = f(out, g(t))
                return out

            return _Node(conj, "bool", pa.bool_())
        if cls == "OPERATOR":
            kids = e.get("children", [])
            if typ == "OPERATOR_NOT":
                n = self.expr(kids[0])
                if n.kind != "bool":
                    raise Unsupported("NOT of a non-boolean")
                return _Node(lambda t: pc.invert(n.fn(t)), "bool", pa.bool_())
            if typ in ("OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL"):
                n = self.expr(kids[0])
                if n.kind in ("null", "dec"):
                    raise Unsupported("IS NULL of a literal")
                f = pc.is_null if typ == "OPERATOR_IS_NULL" else pc.is_valid
                return _Node(lambda t: f(n.fn(t)), "bool", pa.bool_())
            if typ in ("COMPARE_IN", "COMPARE_NOT_IN"):
                value, items = self.expr(kids[0]), [self.expr(k) for k in kids[1:]]
                tests = [_compare("eq", value, i) for i in items]

                def member(t: Any) -> Any:  # x IN (a, b) is x = a OR x = b, NULLs included
                    out = tests[0].fn(t)
                    for x in tests[1:]:
                        out = pc.or_kleene(out, x.fn(t))
                    return out if typ == "COMPARE_IN" else pc.invert(out)

                return _Node(member, "bool", pa.bool_())
            if typ == "OPERATOR_COALESCE":
                kind, ctype, fns = _unify([self.expr(k) for k in kids])
                return _Node(lambda t: pc.coalesce(*(g(t) for g in fns)), kind, ctype)
            raise Unsupported(typ or "an operator")
        if cls == "CASE":
            checks = e["case_checks"]
            conds = [self.expr(c["when_expr"]) for c in checks]
            if any(c.kind != "bool" for c in conds):
                raise Unsupported("CASE WHEN on a non-boolean")
            kind, ctype, fns = _unify([self.expr(c["then_expr"]) for c in checks] + [self.expr(e["else_expr"])])
            cfns = [c.fn for c in conds]

            def case(t: Any) -> Any:
                n = t.num_rows
                whens = pa.StructArray.from_arrays([_array(f(t), n, pa.bool_()) for f in cfns], [f"c{i}" for i in range(len(cfns))])
                return pc.case_when(whens, *(_array(g(t), n, ctype) for g in fns))

            return _Node(case, kind, ctype)
        if cls == "CAST":
            return self.cast(e)
        if cls == "FUNCTION":
            return self.function(e)
        raise Unsupported(f"{cls} {typ}")

    def cast(self, e: dict[str, Any]) -> _Node:
        import pyarrow as pa
        import pyarrow.compute as pc

        spec = e["type_expr"]
        if e.get("try_cast") or spec.get("children") or spec.get("schema") or spec.get("catalog"):
            raise Unsupported("TRY_CAST or a parametrized type")
        target = _CAST_TARGETS.get(str(spec.get("type_name", "")).upper())
        if target is None:
            raise Unsupported(f"CAST to {spec.get('type_name')}")
        n = self.expr(e["child"])
        typ = pa.type_for_alias(target)
        if n.kind == "null":
            return _Node(lambda t: pa.scalar(None, typ), _kind_of(typ), typ)
        if n.kind == "dec":
            if target != "float64":
                raise Unsupported("CAST of a decimal literal")
            return _Node(_as_float(n), "float", typ)
        src = n.fn
        if target in ("int64", "int32"):
            if n.kind in ("int", "bool"):
                return _Node(lambda t: pc.cast(src(t), typ), "int", typ)
            if n.kind == "float":  # DuckDB rounds half to even; NaN and overflow fail in both
                return _Node(lambda t: pc.cast(pc.round(src(t), round_mode="half_to_even"), typ), "int", typ)
        elif target == "float64" and n.kind in ("int", "float", "bool"):
            return _Node(lambda t: pc.cast(src(t), typ), "float", typ)
        elif target == "bool" and n.kind in ("bool", "int"):
            return _Node(lambda t: pc.cast(src(t), typ), "bool", typ)
        elif target == "string" and n.kind in ("str", "int", "bool"):
            return _Node(lambda t: pc.cast(src(t), typ), "str", typ)
        raise Unsupported(f"CAST of {n.kind} to {target}")

    def function(self, e: dict[str, Any]) -> _Node:
        import pyarrow as pa
        import pyarrow.compute as pc

        if e.get("distinct") or e.get("filter") or e.get("schema") or e.get("catalog") or (e.get("order_bys") or {}).get("orders"):
            raise Unsupported("a function with DISTINCT, FILTER, ORDER BY or a schema")
        name = str(e["function_name"]).lower()
        args = [self.expr(a["expression"]) for a in e["arguments"]]
        if any(a.get("name") for a in e["arguments"]):
            raise Unsupported("named arguments")
        if name in ("+", "-", "*") and len(args) == 2:
            a, b = args
            if a.kind == b.kind == "int":
                f = {"+": pc.add_checked, "-": pc.subtract_checked, "*": pc.multiply_checked}[name]
                typ = _int_common(a.type, b.type)
                return _Node(lambda t: f(a.fn(t), b.fn(t)), "int", typ)
            if {a.kind, b.kind} <= {"int", "float", "dec"} and "float" in (a.kind, b.kind):
                f = {"+": pc.add, "-": pc.subtract, "*": pc.multiply}[name]
                fa, fb = _as_float(a), _as_float(b)
                return _Node(lambda t: f(fa(t), fb(t)), "float", pa.float64())
            raise Unsupported(f"{a.kind} {name} {b.kind}")
        if name == "-" and len(args) == 1:
            (a,) = args
            if a.kind == "int":
                return _Node(lambda t: pc.negate_checked(a.fn(t)), "int", a.type)
            if a.kind == "float":
                return _Node(lambda t: pc.negate(a.fn(t)), "float", a.type)
            raise Unsupported(f"-{a.kind}")
        if name == "/" and len(args) == 2:
            a, b = args
            if {a.kind, b.kind} <= {"int", "float", "dec"} and not (a.kind == b.kind == "dec"):
                fa, fb = _as_float(a), _as_float(b)
                return _Node(lambda t: pc.divide(fa(t), fb(t)), "float", pa.float64())
            raise Unsupported(f"{a.kind} / {b.kind}")
        if name == "nullif" and len(args) == 2:
            a, b = args
            eq = _compare("eq", a, b)
            kind, typ, (fa, _) = _unify([a, b])
            return _Node(lambda t: pc.if_else(pc.fill_null(eq.fn(t), False), pa.scalar(None, typ), fa(t)), kind, typ)
        if name == "abs" and len(args) == 1 and args[0].kind in ("int", "float"):
            (a,) = args
            f = pc.abs_checked if a.kind == "int" else pc.abs
            return _Node(lambda t: f(a.fn(t)), a.kind, a.type)
        if name in ("lower", "upper", "lcase", "ucase") and len(args) == 1 and args[0].kind == "str":
            (a,) = args
            f = pc.utf8_lower if name in ("lower", "lcase") else pc.utf8_upper
            return _Node(lambda t: f(a.fn(t)), "str", pa.string())
        if name in ("length", "len") and len(args) == 1 and args[0].kind == "str":
            (a,) = args
            return _Node(lambda t: pc.cast(pc.utf8_length(a.fn(t)), pa.int64()), "int", pa.int64())
        if name in ("||", "concat") and len(args) >= 2 and all(a.kind == "str" for a in args):
            fns = [a.fn for a in args]
            nulls = "emit_null" if name == "||" else "skip"
            return _Node(
                lambda t: pc.binary_join_element_wise(*(f(t) for f in fns), "", null_handling=nulls), "str", pa.string()
            )
        if name in ("greatest", "least") and args and all(a.kind in ("int", "str", "null") for a in args):
            kind, typ, fns = _unify(args)
            if kind not in ("int", "str"):
                raise Unsupported(f"{name} of {kind}")
            f = pc.max_element_wise if name == "greatest" else pc.min_element_wise
            return _Node(lambda t: f(*(g(t) for g in fns), skip_nulls=True), kind, typ)
        raise Unsupported(f"function {name}")


def _array(value: Any, n: int, typ: Any) -> Any:
    """An array of ``n`` values from an array or a scalar (constants broadcast)."""
    import pyarrow as pa

    if isinstance(value, pa.ChunkedArray):
        value = value.combine_chunks()
    if isinstance(value, pa.Array):
        return value if typ is None or value.type == typ else value.cast(typ)
    if value is None:
        return pa.nulls(n, typ or pa.null())
    if not isinstance(value, pa.Scalar):
        value = pa.scalar(value, typ)
    elif typ is not None and value.type != typ:
        value = value.cast(typ)
    return pa.repeat(value, n)


def compile_select(sql: str, schema: pa.Schema, con: duckdb.DuckDBPyConnection) -> Callable[[pa.Table], pa.Table]:
    """``sql`` (a SELECT over ``source``) as a function of an Arrow table; raises :class:`Unsupported`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0])
    if tree.get("error") or len(tree.get("statements", [])) != 1:
        raise Unsupported("not one statement DuckDB parses")
    node = tree["statements"][0]["node"]
    if node.get("type") != "SELECT_NODE" or node.get("modifiers") or (node.get("cte_map") or {}).get("map"):
        raise Unsupported("a set operation, CTE, DISTINCT, ORDER BY or LIMIT")
    if node.get("group_expressions") or node.get("group_sets") or node.get("having") or node.get("qualify") or node.get("sample"):
        raise Unsupported("GROUP BY, HAVING, QUALIFY or SAMPLE")
    if node.get("aggregate_handling") != "STANDARD_HANDLING":
        raise Unsupported("GROUP BY ALL")
    src = node.get("from_table") or {}
    if (
        src.get("type") != "BASE_TABLE" or str(src.get("table_name", "")).lower() != "source" or src.get("schema_name")
        or src.get("catalog_name") or src.get("sample") or src.get("at_clause") or src.get("column_name_alias")
    ):
        raise Unsupported("a FROM other than `source`")
    tables = {str(src["alias"]).lower()} if src.get("alias") else {"source"}
    comp = _Compiler(schema, tables)
    outputs: list[tuple[str, _Node]] = []
    for item in node["select_list"]:
        if item.get("class") == "STAR":
            if item.get("columns") or item.get("expr") or item.get("qualified_exclude_list") or item.get("rename_list"):
                raise Unsupported("COLUMNS(...) or a qualified EXCLUDE/RENAME")
            if item.get("relation_name") and str(item["relation_name"]).lower() not in tables:
                raise Unsupported("a star of another relation")
            excluded = {str(x).lower() for x in item.get("exclude_list", [])}
            replaced = {str(r["key"]).lower(): r["value"] for r in item.get("replace_list", [])}
            names = {f.name.lower() for f in schema}
            if not excluded <= names or not set(replaced) <= names:
                raise Unsupported("EXCLUDE/REPLACE of an unknown column")
            for f in schema:
                low = f.name.lower()
                if low in excluded:
                    continue
                outputs.append((f.name, comp.expr(replaced[low]) if low in replaced else comp.column([f.name])))
            continue
        n = comp.expr(item)
        alias = item.get("alias") or (item["column_names"][-1] if item.get("class") == "COLUMN_REF" else "")
        if not alias:
            raise Unsupported("an expression without an alias")
        outputs.append((alias, n))
    if len({name.lower() for name, _ in outputs}) != len(outputs):
        raise Unsupported("two output columns of one name")
    for name, n in outputs:
        if n.kind in ("dec", "null"):
            raise Unsupported(f"column {name!r} is a bare decimal or NULL literal")
    where = comp.expr(node["where_clause"]) if node.get("where_clause") else None
    if where is not None and where.kind != "bool":
        raise Unsupported("a WHERE that is not boolean")

    def run(table: pa.Table) -> pa.Table:
        if where is not None:
            table = table.filter(_array(where.fn(table), table.num_rows, pa.bool_()))
        n = table.num_rows
        cols = []
        for _, node_ in outputs:
            arr = _array(node_.fn(table), n, None if node_.type is None else node_.type)
            if pa.types.is_large_string(arr.type):
                arr = pc.cast(arr, pa.string())
            cols.append(arr)
        return pa.Table.from_arrays(cols, names=[name for name, _ in outputs])

    return run


def same(a: pa.Table, b: pa.Table) -> bool:
    """Equal names, types and values (NULL where NULL, NaN where NaN)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if a.column_names != b.column_names or a.num_rows != b.num_rows:
        return False
    for x, y in zip(a.columns, b.columns, strict=True):
        if x.type != y.type:
            return False
        if not len(x):
            continue
        if not pc.all(pc.equal(pc.is_null(x), pc.is_null(y))).as_py():
            return False
        eq = pc.equal(x, y)
        if pa.types.is_floating(x.type):
            eq = pc.or_(eq, pc.and_(pc.is_nan(x), pc.is_nan(y)))
        if not pc.all(pc.fill_null(eq, True)).as_py():
            return False
    return True


# -- one prepared transformation per (view, SQL, pushed column types) -----------------------
@dataclass
class Plan:
    """How a view's SQL runs on push: ``compiled`` (Arrow kernels) or ``duckdb``, and why."""

    way: str
    reason: str
    run: Callable[[pa.Table], pa.Table] | None = None
    _con: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def duckdb(self, sql: str, table: pa.Table) -> pa.Table:
        with self._lock:
            self._con.register(BATCH, table)
            return self._con.sql(sql).to_arrow_table()


_plans: dict[tuple[str, str, tuple[Any, ...]], Plan] = {}
_plans_lock = threading.Lock()


def _prepare(owner: str, sql: str, table: pa.Table, check: Callable[[dict[str, str]], None] | None) -> tuple[Plan, pa.Table]:
    from keel.features.offline import _describe, connect

    con = connect()
    con.register(BATCH, table)
    con.execute(f"CREATE OR REPLACE TEMP VIEW source AS SELECT * FROM {BATCH}")
    try:
        if check is not None:
            check(_describe(con, sql))
        reference = con.sql(sql).to_arrow_table()
    except ValidationError:
        con.close()
        raise
    except Exception as exc:
        con.close()
        raise ValidationError(
            f"{owner}: the SQL transformation failed: {str(exc).splitlines()[0]}",
            hint="It must be a DuckDB SELECT over the table `source`.",
        ) from None
    plan = Plan("duckdb", "", _con=con)
    try:
        run = compile_select(sql, table.schema, con)
        mine = run(table)
    except Unsupported as why:
        plan.reason = f"DuckDB runs it: {why} is outside the compiled subset"
        return plan, reference
    except Exception as exc:  # an Arrow kernel refused the first batch: DuckDB decides
        plan.reason = f"DuckDB runs it: the compiled form failed on the first batch ({type(exc).__name__})"
        return plan, reference
    if not same(mine, reference):
        plan.reason = "DuckDB runs it: the compiled form differed from DuckDB on the first batch"
        return plan, reference
    plan.way, plan.reason, plan.run = "compiled", "compiled to Arrow kernels", run
    return plan, reference


def run_select(owner: str, sql: str, table: pa.Table, check: Callable[[dict[str, str]], None] | None = None) -> pa.Table:
    """``sql`` over ``table`` as ``source``: compiled where it can be, else DuckDB; same result either way."""
    key = (owner, sql, tuple(zip(table.schema.names, table.schema.types, strict=True)))
    plan = _plans.get(key)
    if plan is None:
        with _plans_lock:
            plan = _plans.get(key)
            if plan is None:
                plan, out = _prepare(owner, sql, table, check)
                if len(_plans) >= _CACHE_MAX:
                    for old in _plans.values():
                        if old._con is not None:
                            old._con.close()
                    _plans.clear()
                _plans[key] = plan
                return out
    if plan.run is not None:
        try:
            return plan.run(table)
        except Exception:  # e.g. an overflow: DuckDB gives this batch its own answer or error
            pass
    try:
        return plan.duckdb(sql, table)
    except Exception as exc:
        raise ValidationError(
            f"{owner}: the SQL transformation failed: {str(exc).splitlines()[0]}",
            hint="It must be a DuckDB SELECT over the table `source`.",
        ) from None


def transform(view: FeatureView, table: pa.Table) -> pa.Table:
    """The view's SQL transformation over pushed rows, with the columns checked as offline."""
    from keel.features.offline import _check_columns

    sql = view.transformation_code()
    assert sql is not None
    return run_select(f"FeatureView '{view.name}'", sql, table, lambda cols: _check_columns(view, cols))


def plan(view: FeatureView, table: pa.Table) -> Plan | None:
    """The plan a push of rows shaped like ``table`` uses (after one has run), or None."""
    key = tuple(zip(table.schema.names, table.schema.types, strict=True))
    return _plans.get((f"FeatureView '{view.name}'", view.transformation_code() or "", key))
