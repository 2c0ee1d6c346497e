"""The run filter language: a tokenizer, a recursive-descent parser and a SQL compiler.

Grammar (keywords are case-insensitive)::

    filter     := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | "(" or_expr ")" | comparison
    comparison := operand op literal                      op: = == != <> < <= > >=
                | operand ["not"] "in" "(" literal ("," literal)* ")"
                | operand ["not"] ("like" | "ilike") string
                | operand "is" ["not"] "null"
    operand    := ("metrics" | "params" | "tags") "." key  |  ["attributes" "."] attribute
    key        := name | `any key` | "any key"
    literal    := 'string' | "string" | number

A comparison on a key a run does not have is unknown (SQL NULL), so it never
matches, under ``not`` neither; ``is null`` selects runs without the key (and,
for metrics, runs whose latest value is NaN). Params compare numerically when
the literal is a number, as text otherwise. ``like`` is case-sensitive on every
backend, ``ilike`` is not.

The compiler turns the tree into SQLAlchemy Core over the tracking tables: one
LEFT JOIN alias per distinct key referenced, the whole condition in WHERE (so
``or`` works across keys).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from keel.errors import ValidationError, did_you_mean
from keel.store.schema import metrics, params, runs, tags

KINDS = ("param", "metric", "tag")
PREFIXES = {"params": "param", "metrics": "metric", "tags": "tag", "attributes": "attribute", "attribute": "attribute"}
PREFIX_OF = {"param": "params", "metric": "metrics", "tag": "tags"}
TABLES = {"param": params, "metric": metrics, "tag": tags}

# attribute name -> (column of the result frame, kind of value)
ATTRIBUTES: dict[str, tuple[str, str]] = {
    "run_id": ("run_id", "str"),
    "run_name": ("run_name", "str"),
    "name": ("run_name", "str"),
    "status": ("status", "status"),
    "start_time": ("start_time", "time"),
    "end_time": ("end_time", "time"),
    "user": ("user", "str"),
    "parent_id": ("parent_id", "str"),
    "experiment_id": ("experiment_id", "int"),
}
STATUSES = ("running", "finished", "failed", "killed", "crashed")
KEYWORDS = {"and", "or", "not", "in", "like", "ilike", "is", "null", "asc", "desc"}
_OPS = {"=": "=", "==": "=", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-./:]*$")

EXAMPLE = "metrics.auc > 0.8 and (params.model = 'lgbm' or params.model = 'xgb') and tags.team = 'risk'"


# -- errors -------------------------------------------------------------------

def filter_error(
    text: str, pos: int, message: str, *, what: str = "filter", headline: str | None = None, **detail: Any
) -> ValidationError:
    """A ValidationError pointing at ``pos`` of ``text`` with a caret line.

    The first line reads "<headline> at position N: <message>" (headline default "Invalid <what>").
    """
    pos = max(0, min(pos, len(text)))
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    line = text[start : len(text) if end < 0 else end]
    caret = " " * (pos - start) + "^"
    return ValidationError(
        f"{headline or 'Invalid ' + what} at position {pos}: {message}\n  {line}\n  {caret}",
        position=pos,
        **{what.replace(" ", "_"): text},
        **detail,
    )


def format_ref(kind: str, key: str) -> str:
    """How a key is written in a filter: metrics.auc, or metrics.`val loss`."""
    if kind == "attribute":
        return key
    return f"{PREFIX_OF[kind]}.{key}" if _PLAIN_KEY.match(key) else f"{PREFIX_OF[kind]}.`{key}`"


# -- tokens -------------------------------------------------------------------

@dataclass(frozen=True)
class Token:
    kind: str  # ident number string backtick op lparen rparen comma eof
    text: str
    pos: int
    value: Any = None

    @property
    def end(self) -> int:
        return self.pos + len(self.text)

    def is_kw(self, *words: str) -> bool:
        return self.kind == "ident" and self.text.lower() in words


_TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_\-./:]*)
    |(?P<string>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*")
    |(?P<backtick>`[^`]+`)
    |(?P<op>==|!=|<>|<=|>=|=|<|>)
    |(?P<lparen>\()|(?P<rparen>\))|(?P<comma>,)""",
    re.VERBOSE | re.DOTALL,
)


def _unquote(raw: str) -> str:
    quote = raw[0]
    body = raw[1:-1].replace(quote * 2, quote)
    return re.sub(r"\\([\\'\"])", r"\1", body)


def tokenize(text: str, what: str = "filter") -> list[Token]:
    out: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            ch = text[pos]
            if ch in "'\"`":
                raise filter_error(text, pos, f"the quote {ch} is never closed.", what=what)
            raise filter_error(text, pos, f"unexpected character {ch!r}.", what=what)
        kind = m.lastgroup or ""
        raw = m.group()
        if kind == "number" and m.end() < len(text) and (text[m.end()].isalnum() or text[m.end()] == "_"):
            raise filter_error(text, pos, f"{raw + text[m.end()]!r}... is not a number; quote strings ('...').", what=what)
        if kind != "ws":
            value: Any = None
            if kind == "number":
                value = float(raw)
            elif kind == "string":
                value = _unquote(raw)
            elif kind == "backtick":
                value = raw[1:-1]
            out.append(Token(kind, raw, pos, value))
        pos = m.end()
    out.append(Token("eof", "", len(text)))
    return out


# -- syntax tree --------------------------------------------------------------

@dataclass(frozen=True)
class Ref:
    """A key (kind param/metric/tag) or an attribute (kind 'attribute'), where it was written."""

    kind: str
    key: str
    pos: int
    source: str = field(compare=False, repr=False)
    what: str = field(default="filter", compare=False, repr=False)

    @property
    def label(self) -> str:
        return format_ref(self.kind, self.key)


@dataclass(frozen=True)
class Literal:
    value: str | float
    text: str
    pos: int

    @property
    def is_number(self) -> bool:
        return isinstance(self.value, float)


@dataclass(frozen=True)
class Compare:
    ref: Ref
    op: str  # = != < <= > >= in like ilike null
    values: tuple[Literal, ...]
    negated: bool
    op_pos: int


@dataclass(frozen=True)
class BoolOp:
    op: str  # and | or
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


Node = Compare | BoolOp | Not


class _Parser:
    def __init__(self, text: str, what: str = "filter") -> None:
        self.text = text
        self.what = what
        self.tokens = tokenize(text, what)
        self.i = 0

    # helpers
    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def error(self, tok: Token | int, message: str, **detail: Any) -> ValidationError:
        pos = tok if isinstance(tok, int) else tok.pos
        return filter_error(self.text, pos, message, what=self.what, **detail)

    @staticmethod
    def describe(tok: Token) -> str:
        return "the end of the text" if tok.kind == "eof" else repr(tok.text)

    def expect_end(self, hint: str) -> None:
        tok = self.peek()
        if tok.kind != "eof":
            raise self.error(tok, f"unexpected {self.describe(tok)}; {hint}")

    # grammar
    def parse_or(self) -> Node:
        items = [self.parse_and()]
        while self.peek().is_kw("or"):
            self.next()
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else BoolOp("or", tuple(items))

    def parse_and(self) -> Node:
        items = [self.parse_not()]
        while self.peek().is_kw("and"):
            self.next()
            items.append(self.parse_not())
        return items[0] if len(items) == 1 else BoolOp("and", tuple(items))

    def parse_not(self) -> Node:
        tok = self.peek()
        if tok.is_kw("not"):
            self.next()
            return Not(self.parse_not())
        if tok.kind == "lparen":
            self.next()
            if self.peek().kind == "rparen":
                raise self.error(self.peek(), "empty parentheses; put a condition inside.")
            node = self.parse_or()
            close = self.peek()
            if close.kind != "rparen":
                raise self.error(close, f"expected ')' to close the '(' at position {tok.pos}, found {self.describe(close)}.")
            self.next()
            return node
        return self.parse_comparison()

    def parse_operand(self) -> Ref:
        tok = self.next()
        if tok.kind in {"string", "backtick"} and self.peek().kind in {"op", "ident"}:
            raise self.error(tok, f"a condition starts with a key, not the literal {tok.text}; write e.g. params.model = 'lgbm'.")
        if tok.kind != "ident" or tok.text.lower() in KEYWORDS:
            raise self.error(tok, f"expected a key such as metrics.auc, params.model, tags.team or status, found {self.describe(tok)}.")
        prefix, dot, key = tok.text.partition(".")
        if not dot:
            return self._attribute(tok, tok.text)
        kind = PREFIXES.get(prefix.lower())
        if kind is None:
            raise self.error(
                tok,
                f"unknown prefix '{prefix}'.{did_you_mean(prefix.lower(), [*PREFIX_OF.values(), 'attributes'], cutoff=0.5)}"
                " Keys start with metrics., params., tags. or attributes.",
                suggestion=_first_match(prefix.lower(), [*PREFIX_OF.values(), "attributes"]),
            )
        if not key:
            quoted = self.peek()
            if quoted.kind in {"backtick", "string"} and quoted.pos == tok.end and quoted.text[0] in '`"':
                self.next()
                key = str(quoted.value)
            else:
                raise self.error(tok.end, f"expected a key after '{tok.text}'; quote keys with spaces: {tok.text}`my key`.")
        if kind == "attribute":
            return self._attribute(tok, key)
        return Ref(kind, key, tok.pos, self.text, self.what)

    def _attribute(self, tok: Token, name: str) -> Ref:
        if name.lower() not in ATTRIBUTES:
            raise self.error(
                tok,
                f"unknown attribute '{name}'.{did_you_mean(name.lower(), ATTRIBUTES)}"
                f" Attributes are {', '.join(sorted(ATTRIBUTES))}; keys are written metrics.<key>, params.<key>, tags.<key>.",
                suggestion=_first_match(name.lower(), ATTRIBUTES),
            )
        return Ref("attribute", name.lower(), tok.pos, self.text, self.what)

    def parse_literal(self) -> Literal:
        tok = self.next()
        if tok.kind in {"number", "string"}:
            return Literal(tok.value, tok.text, tok.pos)
        if tok.kind == "ident" and tok.text.lower() not in KEYWORDS:
            raise self.error(tok, f"expected a number or a quoted string, found {tok.text}; quote strings: '{tok.text}'.")
        raise self.error(tok, f"expected a number or a quoted string, found {self.describe(tok)}.")

    def parse_comparison(self) -> Compare:
        ref = self.parse_operand()
        tok = self.next()
        if tok.kind == "op":
            return Compare(ref, _OPS[tok.text], (self.parse_literal(),), False, tok.pos)
        negated = False
        if tok.is_kw("not"):
            negated = True
            after = self.next()
            if not after.is_kw("in", "like", "ilike"):
                raise self.error(after, f"expected 'in', 'like' or 'ilike' after 'not', found {self.describe(after)}.")
            tok = after
        if tok.is_kw("in"):
            open_ = self.next()
            if open_.kind != "lparen":
                raise self.error(open_, f"expected '(' after 'in', found {self.describe(open_)}; write e.g. params.model in ('lgbm', 'xgb').")
            values = [self.parse_literal()]
            while self.peek().kind == "comma":
                self.next()
                values.append(self.parse_literal())
            close = self.next()
            if close.kind != "rparen":
                raise self.error(close, f"expected ',' or ')' in the list, found {self.describe(close)}.")
            return Compare(ref, "in", tuple(values), negated, tok.pos)
        if tok.is_kw("like", "ilike"):
            pattern = self.parse_literal()
            if pattern.is_number:
                raise self.error(pattern.pos, f"'{tok.text}' needs a quoted pattern such as '%lgbm%', found {pattern.text}.")
            return Compare(ref, tok.text.lower(), (pattern,), negated, tok.pos)
        if tok.is_kw("is"):
            negated = self.peek().is_kw("not")
            if negated:
                self.next()
            null = self.next()
            if not null.is_kw("null"):
                raise self.error(null, f"expected 'null' after 'is{' not' if negated else ''}', found {self.describe(null)}.")
            return Compare(ref, "null", (), negated, tok.pos)
        raise self.error(
            tok,
            f"expected an operator (=, !=, <, <=, >, >=, in, like, ilike, is null) after {ref.label}, found {self.describe(tok)}.",
        )


def _first_match(value: str, choices: Any) -> str | None:
    import difflib

    found = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.5)
    return found[0] if found else None


def parse_filter(text: str) -> Node | None:
    """The syntax tree of a filter, or None for an empty one."""
    if not isinstance(text, str):
        raise ValidationError(f"filter must be a string, got {type(text).__name__}.", hint=f"Example: {EXAMPLE}")
    parser = _Parser(text)
    if parser.peek().kind == "eof":
        return None
    node = parser.parse_or()
    parser.expect_end("join conditions with 'and' or 'or'.")
    return node


def parse_order_by(text: str) -> tuple[Ref, bool]:
    """An order_by item such as "metrics.auc DESC": (key, descending)."""
    if not isinstance(text, str):
        raise ValidationError(f"order_by items must be strings, got {text!r}.", hint='Example: order_by=["metrics.auc DESC", "start_time"]')
    parser = _Parser(text, "order_by")
    ref = parser.parse_operand()
    desc = False
    tok = parser.peek()
    if tok.is_kw("asc", "desc"):
        desc = tok.text.lower() == "desc"
        parser.next()
    parser.expect_end("an order_by item is a key optionally followed by ASC or DESC, e.g. 'metrics.auc DESC'.")
    return ref, desc


def parse_column(text: str) -> Ref:
    """A `columns` item: metrics.auc, params.model, tags.team, or metrics.* for every metric."""
    if not isinstance(text, str):
        raise ValidationError(f"columns items must be strings, got {text!r}.", hint='Example: columns=["metrics.auc", "params.model"]')
    stripped = text.strip()
    prefix, dot, rest = stripped.partition(".")
    if dot and rest == "*" and prefix.lower() in PREFIXES and PREFIXES[prefix.lower()] in KINDS:
        return Ref(PREFIXES[prefix.lower()], "*", 0, text, "columns")
    parser = _Parser(text, "columns")
    ref = parser.parse_operand()
    parser.expect_end("a column is one key such as 'metrics.auc' or 'params.*'.")
    return ref


# -- compiler -----------------------------------------------------------------

class Compiler:
    """Compiles parsed filters and order_by items into SQL over ``runs`` and LEFT JOINed key aliases."""

    def __init__(self, dialect: str, status: sa.ColumnElement[Any]) -> None:
        self.dialect = dialect
        self.status = status
        self._aliases: dict[tuple[str, str], Any] = {}
        self.refs: list[Ref] = []  # every key referenced, first occurrence each, for the existence check

    def attribute(self, name: str) -> sa.ColumnElement[Any]:
        column = ATTRIBUTES[name][0]
        return {
            "run_id": runs.c.id,
            "run_name": runs.c.name,
            "status": self.status,
            "start_time": runs.c.start_ms,
            "end_time": runs.c.end_ms,
            "user": runs.c.user,
            "parent_id": runs.c.parent_id,
            "experiment_id": runs.c.experiment_id,
        }[column]

    def alias(self, ref: Ref) -> Any:
        k = (ref.kind, ref.key)
        found = self._aliases.get(k)
        if found is None:
            found = TABLES[ref.kind].alias(f"{ref.kind[0]}{len(self._aliases)}")
            self._aliases[k] = found
            self.refs.append(ref)
        return found

    def from_clause(self) -> sa.FromClause:
        joined: sa.FromClause = runs
        for (_kind, key), alias in self._aliases.items():
            joined = joined.outerjoin(alias, sa.and_(alias.c.run_id == runs.c.id, alias.c.key == key))
        return joined

    # -- where --
    def where(self, node: Node) -> sa.ColumnElement[bool]:
        if isinstance(node, BoolOp):
            parts = [self.where(n) for n in node.items]
            return sa.and_(*parts) if node.op == "and" else sa.or_(*parts)
        if isinstance(node, Not):
            return sa.not_(self.where(node.item))
        return self._compare(node)

    def _err(self, ref: Ref, pos: int, message: str) -> ValidationError:
        return filter_error(ref.source, pos, message, what=ref.what)

    def _compare(self, c: Compare) -> sa.ColumnElement[bool]:
        ref = c.ref
        if ref.kind == "attribute":
            kind = ATTRIBUTES[ref.key][1]
            col = self.attribute(ref.key)
            if c.op == "null":
                return col.is_not(None) if c.negated else col.is_(None)
            if kind == "str":
                return self._text_compare(c, col, [lit.value if not lit.is_number else lit.text for lit in c.values])
            if kind == "status":
                if c.op in {"like", "ilike"}:
                    return self._text_compare(c, col, [str(c.values[0].value)])
                return self._text_compare(c, col, [self._status(ref, lit) for lit in c.values])
            if c.op in {"like", "ilike"}:
                raise self._err(ref, c.op_pos, f"'{c.op}' compares text; {ref.key} is a {'time' if kind == 'time' else 'number'}.")
            return self._ordered_compare(c, col, [self._time(ref, lit) if kind == "time" else self._int(ref, lit) for lit in c.values])
        alias = self.alias(ref)
        if c.op == "null":
            return alias.c.value.is_not(None) if c.negated else alias.c.value.is_(None)
        if ref.kind == "metric":
            if c.op in {"like", "ilike"}:
                raise self._err(ref, c.op_pos, f"'{c.op}' compares text; metric '{ref.key}' is a number.")
            for lit in c.values:
                if not lit.is_number:
                    raise self._err(ref, lit.pos, f"metric '{ref.key}' is a number; compare it with a number, not {lit.text}.")
            return self._ordered_compare(c, alias.c.value, [lit.value for lit in c.values])
        if ref.kind == "tag":
            return self._text_compare(c, alias.c.value, [lit.value if not lit.is_number else lit.text for lit in c.values])
        # params: numbers compare with the parsed number, strings with the text
        nums = [lit.value for lit in c.values if lit.is_number]
        strs = [str(lit.value) for lit in c.values if not lit.is_number]
        if c.op in {"like", "ilike"} or not nums:
            return self._text_compare(c, alias.c.value, strs)
        if not strs:
            return self._ordered_compare(c, alias.c.num, nums)
        if c.op != "in":  # pragma: no cover - a single literal is a number or a string
            raise AssertionError(c)
        num = alias.c.num
        inside = sa.or_(sa.and_(num.is_not(None), num.in_(nums)), alias.c.value.in_(strs))
        return sa.and_(alias.c.value.is_not(None), sa.not_(inside)) if c.negated else inside

    def _ordered_compare(self, c: Compare, col: sa.ColumnElement[Any], vals: list[Any]) -> sa.ColumnElement[bool]:
        if c.op == "in":
            return col.not_in(vals) if c.negated else col.in_(vals)
        v = vals[0]
        return {
            "=": lambda: col == v,
            "!=": lambda: col != v,
            "<": lambda: col < v,
            "<=": lambda: col <= v,
            ">": lambda: col > v,
            ">=": lambda: col >= v,
        }[c.op]()

    def _text_compare(self, c: Compare, col: sa.ColumnElement[Any], vals: list[Any]) -> sa.ColumnElement[bool]:
        if c.op == "like":
            cond = col.op("GLOB", is_comparison=True)(_like_to_glob(vals[0])) if self.dialect == "sqlite" else col.like(vals[0])
            return sa.not_(cond) if c.negated else cond
        if c.op == "ilike":
            cond = col.ilike(vals[0])
            return sa.not_(cond) if c.negated else cond
        return self._ordered_compare(c, col, vals)

    def _status(self, ref: Ref, lit: Literal) -> str:
        value = str(lit.value).lower()
        if lit.is_number or value not in STATUSES:
            raise self._err(ref, lit.pos, f"{lit.text} is not a run status.{did_you_mean(value, STATUSES)} Statuses are {', '.join(STATUSES)}.")
        return value

    def _int(self, ref: Ref, lit: Literal) -> int:
        value = lit.value
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise self._err(ref, lit.pos, f"{ref.key} is an integer id, not {lit.text}.")

    def _time(self, ref: Ref, lit: Literal) -> int:
        if lit.is_number:
            return int(lit.value)  # epoch milliseconds
        text = str(lit.value)
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise self._err(ref, lit.pos, f"{lit.text} is not a timestamp; write an ISO time with its zone, e.g. '2024-05-01T12:00:00Z', or epoch milliseconds.") from None
        if when.tzinfo is None:
            raise self._err(ref, lit.pos, f"{lit.text} has no time zone; add one, e.g. '{text}{'T00:00:00' if len(text) == 10 else ''}Z' for UTC.")
        return math.floor(when.timestamp() * 1000)

    # -- order by --
    def order(self, ref: Ref, desc: bool) -> list[sa.ColumnElement[Any]]:
        return [(col.desc() if d else col.asc()).nulls_last() for col, d in self.order_columns(ref, desc)]

    def order_columns(self, ref: Ref, desc: bool) -> list[tuple[sa.ColumnElement[Any], bool]]:
        """The (column, descending) sort keys of one order_by item; missing values sort last."""
        if ref.kind == "attribute":
            cols = [self.attribute(ref.key)]
        elif ref.kind == "param":
            alias = self.alias(ref)
            cols = [alias.c.num, alias.c.value]  # numbers in numeric order, then text
        else:
            cols = [self.alias(ref).c.value]
        return [(col, desc) for col in cols]


def _like_to_glob(pattern: str) -> str:
    """A LIKE pattern as a case-sensitive SQLite GLOB pattern (SQLite's LIKE ignores case)."""
    out = []
    for ch in pattern:
        out.append({"%": "*", "_": "?", "*": "[*]", "?": "[?]", "[": "[[]"}.get(ch, ch))
    return "".join(out)
