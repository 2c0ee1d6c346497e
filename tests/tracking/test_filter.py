"""The filter language on its own: tokens, precedence, error positions, SQL shape."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from keel.errors import ValidationError
from keel.store.schema import runs
from keel.tracking._filter import (
    BoolOp,
    Compare,
    Compiler,
    Not,
    _like_to_glob,
    parse_column,
    parse_filter,
    parse_order_by,
    tokenize,
)


def test_tokens_and_literals() -> None:
    toks = tokenize("metrics.`val loss` >= -1.5e-3 and params.x in ('it''s', \"q\\\"d\")")
    kinds = [t.kind for t in toks]
    assert kinds == ["ident", "backtick", "op", "number", "ident", "ident", "ident", "lparen", "string", "comma", "string", "rparen", "eof"]
    assert toks[3].value == -1.5e-3
    assert toks[8].value == "it's"
    assert toks[10].value == 'q"d'


def test_and_binds_tighter_than_or() -> None:
    node = parse_filter("metrics.a > 1 or metrics.b > 2 and metrics.c > 3")
    assert isinstance(node, BoolOp) and node.op == "or"
    assert isinstance(node.items[1], BoolOp) and node.items[1].op == "and"
    node = parse_filter("(metrics.a > 1 or metrics.b > 2) and not metrics.c > 3")
    assert isinstance(node, BoolOp) and node.op == "and"
    assert isinstance(node.items[0], BoolOp) and node.items[0].op == "or"
    assert isinstance(node.items[1], Not)


def test_operands() -> None:
    node = parse_filter("METRICS.auc > 0.8")
    assert isinstance(node, Compare) and (node.ref.kind, node.ref.key) == ("metric", "auc")
    node = parse_filter('params."learning rate" = 0.1')
    assert isinstance(node, Compare) and (node.ref.kind, node.ref.key) == ("param", "learning rate")
    node = parse_filter("tags.a/b:c-d.e = 'x'")
    assert isinstance(node, Compare) and node.ref.key == "a/b:c-d.e"
    node = parse_filter("attributes.run_name = 'x'")
    assert isinstance(node, Compare) and (node.ref.kind, node.ref.key) == ("attribute", "run_name")
    node = parse_filter("Status IS NOT NULL")
    assert isinstance(node, Compare) and node.op == "null" and node.negated
    node = parse_filter("params.m NOT IN ('a', 'b')")
    assert isinstance(node, Compare) and node.op == "in" and node.negated and len(node.values) == 2
    node = parse_filter("run_name not ilike 'A%'")
    assert isinstance(node, Compare) and node.op == "ilike" and node.negated
    node = parse_filter("metrics.a == 1 and metrics.b <> 2")
    assert isinstance(node, BoolOp) and [c.op for c in node.items if isinstance(c, Compare)] == ["=", "!="]
    assert parse_filter("   ") is None


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("metrics.auc >> 0.8", 13, "expected a number or a quoted string, found '>'"),
        ("metrics.auc > 0.8 and", 21, "found the end of the text"),
        ("metrics.auc > 0.8 params.x = 1", 18, "join conditions with 'and' or 'or'"),
        ("(metrics.auc > 0.8", 18, "expected ')' to close the '(' at position 0"),
        ("metrics.auc > 0.8)", 17, "unexpected ')'"),
        ("params.model = 'lgbm", 15, "never closed"),
        ("params.model = lgbm", 15, "quote strings: 'lgbm'"),
        ("params.model lgbm", 13, "expected an operator"),
        ("params.model in 'a'", 16, "expected '(' after 'in'"),
        ("params.model in ('a' 'b')", 21, "expected ',' or ')'"),
        ("params.model like 3", 18, "quoted pattern"),
        ("metrics.auc is 3", 15, "expected 'null'"),
        ("metrics.auc not = 3", 16, "expected 'in', 'like' or 'ilike' after 'not'"),
        ("metrics. > 1", 8, "expected a key after 'metrics.'"),
        ("metrics.auc > 1.5x", 14, "is not a number"),
        ("metrics.auc ~ 1", 12, "unexpected character '~'"),
        ("()", 1, "empty parentheses"),
        ("'lgbm' = params.model", 0, "starts with a key"),
    ],
)
def test_syntax_errors_point_at_the_position(text: str, position: int, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_filter(text)
    err = info.value
    assert err.detail["position"] == position
    assert err.detail["filter"] == text
    assert fragment in str(err)
    lines = str(err).split("\n")
    assert lines[1] == "  " + text
    assert lines[2] == "  " + " " * position + "^"


def test_caret_on_the_right_line_of_a_multiline_filter() -> None:
    text = "metrics.auc > 0.8\n  and params.m = x"
    with pytest.raises(ValidationError) as info:
        parse_filter(text)
    assert info.value.detail["position"] == 35
    assert str(info.value).split("\n")[1:] == ["    and params.m = x", "  " + " " * 17 + "^"]


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        ("metric.auc > 0.8", "metrics"),
        ("param.model = 'x'", "params"),
        ("tag.team = 'x'", "tags"),
        ("staus = 'finished'", "status"),
        ("run_nme = 'x'", "run_name"),
        ("attributes.strat_time > 0", "start_time"),
    ],
)
def test_unknown_prefixes_and_attributes_get_a_suggestion(text: str, suggestion: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_filter(text)
    assert info.value.detail["suggestion"] == suggestion
    assert f"Did you mean '{suggestion}'?" in str(info.value)
    assert info.value.detail["position"] == 0


def test_order_by_and_columns() -> None:
    ref, desc = parse_order_by("metrics.auc DESC")
    assert (ref.kind, ref.key, desc) == ("metric", "auc", True)
    ref, desc = parse_order_by("start_time")
    assert (ref.kind, ref.key, desc) == ("attribute", "start_time", False)
    ref, desc = parse_order_by("params.`my lr` asc")
    assert (ref.key, desc) == ("my lr", False)
    with pytest.raises(ValidationError) as info:
        parse_order_by("metrics.auc downward")
    assert info.value.detail["position"] == 12 and info.value.detail["order_by"] == "metrics.auc downward"
    assert (parse_column("metrics.*").kind, parse_column("metrics.*").key) == ("metric", "*")
    assert parse_column("tags.`a b`").key == "a b"
    with pytest.raises(ValidationError, match="Did you mean 'params'"):
        parse_column("parms.x")


def _sql(filter: str, dialect: str = "sqlite") -> str:
    compiler = Compiler(dialect, runs.c.status)
    node = parse_filter(filter)
    assert node is not None
    where = compiler.where(node)  # before from_clause(): compiling registers the joins
    stmt = sa.select(runs.c.id).select_from(compiler.from_clause()).where(where)
    d = sqlite.dialect() if dialect == "sqlite" else postgresql.dialect()
    return str(stmt.compile(dialect=d, compile_kwargs={"literal_binds": True}))


def test_one_join_per_distinct_key_and_the_condition_in_where() -> None:
    sql = _sql("metrics.auc > 0.8 or (metrics.auc < 0.1 and params.m = 'a') or params.lr > 0.5")
    assert sql.count("LEFT OUTER JOIN metrics") == 1
    assert sql.count("LEFT OUTER JOIN params") == 2  # params.m and params.lr
    assert " OR " in sql.split("WHERE", 1)[1]


def test_params_use_num_for_numbers_and_value_for_strings() -> None:
    sql = _sql("params.lr > 0.5 and params.m = 'a'")
    where = sql.split("WHERE", 1)[1]
    assert ".num > 0.5" in where
    assert ".value = 'a'" in where


def test_like_is_case_sensitive_on_sqlite_through_glob() -> None:
    assert "GLOB 'lg*'" in _sql("params.m like 'lg%'")
    assert "value LIKE 'lg%" in _sql("params.m like 'lg%'", "postgresql")
    assert "ILIKE" in _sql("params.m ilike 'lg%'", "postgresql")
    assert _like_to_glob("a_%*?[b]") == "a?*[*][?][[]b]"


def test_compile_errors_for_literals_of_the_wrong_type() -> None:
    with pytest.raises(ValidationError, match="is a number") as info:
        _sql("metrics.auc = 'x'")
    assert info.value.detail["position"] == 14
    with pytest.raises(ValidationError, match="'like' compares text"):
        _sql("metrics.auc like '1%'")
    with pytest.raises(ValidationError, match="integer id"):
        _sql("experiment_id = 'abc'")
    with pytest.raises(ValidationError, match="not a timestamp"):
        _sql("start_time > 'yesterday'")
