"""SQL transformations on the push path: compiled to Arrow kernels, equal to DuckDB (the offline engine)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keel
from keel.errors import ValidationError
from keel.features import fast_push, push_sql
from keel.features.materialization import namespace
from keel.features.offline import connect
from keel.features.registry import apply
from keel.store.kv import open_kv_store

# Every construct of the compiled subset, each over columns with NULLs, NaN, ±inf and -0.0.
COMPILED = [
    "SELECT *, f / nullif(i, 0) AS r FROM source",
    "SELECT * REPLACE (f * 2 AS f), i + 1 AS k FROM source",
    "SELECT * EXCLUDE (s) FROM source WHERE f > 0.5 OR i IS NULL",
    "SELECT i, f, i - j AS d, -i AS n, i * 3 AS m, f - 2.5 AS g, i / 2 AS h, 7 / 0.5 AS c FROM source",
    "SELECT f = g AS eq, f <> g AS ne, f < g AS lt, f <= g AS le, f > g AS gt, f >= g AS ge, i < f AS mixed FROM source",
    "SELECT s = 'a' AS sa, s < 'b' AS sb, b AND i > 0 AS ab, b OR f < 0 AS ob, NOT b AS nb, s IS NOT NULL AS sn FROM source",
    "SELECT i IN (1, 2, 3) AS i3, i NOT IN (0, 5) AS i5, s IN ('a', 'c') AS sac, f IN (0.5, 1.0) AS fin FROM source",
    "SELECT CASE WHEN i > 2 THEN 'big' WHEN i IS NULL THEN NULL ELSE 'small' END AS k, "
    "CASE WHEN b THEN f ELSE i END AS v, CASE WHEN f > 0 THEN 1 END AS one FROM source",
    "SELECT coalesce(i, j, 0) AS c, coalesce(f, -1.0) AS cf, nullif(s, 'a') AS ns, nullif(f, 0.5) AS nf FROM source",
    "SELECT CAST(i AS DOUBLE) AS d, CAST(i AS VARCHAR) AS v, CAST(b AS INTEGER) AS bi, i::BIGINT AS ib, "
    "CAST(b AS VARCHAR) AS bv, CAST(i AS BOOLEAN) AS ibool FROM source",
    "SELECT abs(i) AS a, abs(f) AS af, lower(s) AS lo, upper(s) AS up, length(s) AS n, s || 'x' AS cat, "
    "concat(s, '-', s) AS c2, greatest(i, j, 1) AS g, least(s, 'b') AS l FROM source",
    "SELECT x.i AS i, x.j FROM source AS x",
    "SELECT source.s, source.b FROM source",
]
# Outside the subset: these run in DuckDB on the view's kept connection, with the same result.
FALLBACK = [
    "SELECT *, i * 1.5 AS dec FROM source",
    "SELECT *, sum(i) OVER () AS tot FROM source",
    "SELECT i, f % 2 AS m FROM source",
    "SELECT DISTINCT s FROM source",
]

floats = st.one_of(
    st.none(), st.sampled_from([0.0, -0.0, 0.5, 1.0, -3.25, math.nan, math.inf, -math.inf]),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
)
ints = st.one_of(st.none(), st.integers(-5, 5), st.integers(-(2**40), 2**40))
strings = st.one_of(st.none(), st.sampled_from(["a", "b", "c", "", "Ä", "ß", "aa"]), st.text(max_size=4))
bools = st.one_of(st.none(), st.booleans())
rows = st.lists(st.tuples(ints, ints, floats, floats, strings, bools), min_size=1, max_size=12)


def _table(data: list[tuple]) -> pa.Table:
    cols = list(zip(*data, strict=True))
    return pa.table({
        "i": pa.array(cols[0], pa.int64()), "j": pa.array(cols[1], pa.int64()), "f": pa.array(cols[2], pa.float64()),
        "g": pa.array(cols[3], pa.float64()), "s": pa.array(cols[4], pa.string()), "b": pa.array(cols[5], pa.bool_()),
    })


def _duckdb(sql: str, table: pa.Table) -> pa.Table | str:
    con = connect()
    con.register("__keel_push", table)
    con.execute("CREATE OR REPLACE TEMP VIEW source AS SELECT * FROM __keel_push")
    try:
        return con.sql(sql).to_arrow_table()
    except Exception as exc:
        return type(exc).__name__
    finally:
        con.close()


@pytest.mark.parametrize("sql", COMPILED)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=rows)
def test_compiled_sql_equals_duckdb_on_any_rows(sql: str, data: list[tuple]) -> None:
    table = _table(data)
    con = connect()
    run = push_sql.compile_select(sql, table.schema, con)  # in the subset: compiles
    con.close()
    expected = _duckdb(sql, table)
    try:
        got: pa.Table | str = run(table)
    except Exception:
        got = "error"
    if isinstance(expected, str):
        assert isinstance(got, str), f"DuckDB failed ({expected}) where the compiled form gave {got}"
        return
    assert isinstance(got, pa.Table), f"the compiled form failed where DuckDB gave {expected.to_pylist()}"
    assert push_sql.same(got, expected), (sql, got.to_pylist(), expected.to_pylist())


@pytest.mark.parametrize("sql", FALLBACK)
def test_sql_outside_the_subset_runs_in_duckdb_with_the_same_result(sql: str) -> None:
    table = _table([(1, 2, 0.5, 1.0, "a", True), (None, 3, 2.5, None, "b", False)])
    con = connect()
    with pytest.raises(push_sql.Unsupported):
        push_sql.compile_select(sql, table.schema, con)
    con.close()
    first = push_sql.run_select("test-fallback", sql, table)
    again = push_sql.run_select("test-fallback", sql, table)
    plan = push_sql._plans[("test-fallback", sql, tuple(zip(table.schema.names, table.schema.types, strict=True)))]
    assert plan.way == "duckdb" and "outside the compiled subset" in plan.reason
    expected = _duckdb(sql, table)
    assert isinstance(expected, pa.Table)
    assert push_sql.same(first, expected) and push_sql.same(again, expected)


def test_a_compiled_error_defers_to_duckdb_and_reads_as_a_validation_error() -> None:
    sql = "SELECT i + 1 AS j FROM source"
    ok = pa.table({"i": pa.array([1], pa.int32())})
    assert push_sql.run_select("test-overflow", sql, ok).column("j").to_pylist() == [2]
    with pytest.raises(ValidationError, match="Overflow"):
        push_sql.run_select("test-overflow", sql, pa.table({"i": pa.array([2**31 - 1], pa.int32())}))


# -- offline == online through keel.push: the hot path against the DuckDB path ------------------
def _usage(data: list[tuple[int, int | None, float | None]], when: datetime) -> pd.DataFrame:
    return pd.DataFrame({
        "customer_id": pd.array([c for c, _, _ in data], dtype="int64"),
        "sessions": pd.array([s for _, s, _ in data], dtype="Int64"),
        "minutes": pd.array([m for _, _, m in data], dtype="Float64"),
        "support_tickets": pd.array([0] * len(data), dtype="int64"),
        "payment_failures": pd.array([1] * len(data), dtype="int64"),
        "event_timestamp": [pd.Timestamp(when) + pd.Timedelta(seconds=i) for i in range(len(data))],
    })


def _stored(store, ns: str, keys: list[str]) -> list[bytes | None]:
    return store.get_many([(ns, keys)])[0]


def test_push_through_the_compiled_sql_stores_what_the_duckdb_path_stores(
    churn_project: tuple[Path, dict[str, pd.DataFrame]], monkeypatch: pytest.MonkeyPatch
) -> None:
    apply()
    view = keel.features.load_definitions().view("usage")
    now = datetime.now(UTC) - timedelta(minutes=5)
    cases = st.lists(
        st.tuples(st.integers(1, 30), st.one_of(st.none(), st.integers(0, 9)), st.one_of(st.none(), st.floats(0, 500), st.just(math.nan))),
        min_size=1, max_size=20, unique_by=lambda r: r[0],
    )
    seen = 0

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(data=cases)
    def check(data: list[tuple[int, int | None, float | None]]) -> None:
        nonlocal seen
        seen += 1
        fast, slow = open_kv_store(f"memory://fast{seen}"), open_kv_store(f"memory://slow{seen}")
        df = _usage(data, now)
        keel.push("usage", df, store=fast, to="online")
        with monkeypatch.context() as m:
            m.setattr(fast_push, "eligible", lambda v, n: False)  # the DuckDB path (larger pushes)
            keel.push("usage", df, store=slow, to="online")
        keys = [str(c) for c, _, _ in data]
        # the same values (each path encodes its JSON itself: 1.9e-06 and 0.0000019 are one double)
        decoded = [[None if v is None else orjson.loads(v) for v in _stored(s, namespace(view), keys)] for s in (fast, slow)]
        assert decoded[0] == decoded[1]

    check()
    table_plan = None
    for key, p in push_sql._plans.items():
        if key[0] == "FeatureView 'usage'":
            table_plan = p
    assert table_plan is not None and table_plan.way == "compiled", table_plan


def test_pushed_values_equal_the_training_set_for_the_same_rows(churn_project: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    from keel.features.offline import build_training_set

    apply()
    store = open_kv_store("memory://pit")
    now = datetime.now(UTC) - timedelta(minutes=1)
    df = _usage([(101, 4, 10.0), (102, 0, 5.0), (103, None, 7.5)], now)
    keel.push("usage", df, store=store)
    fast_push.flush()
    refs = ["usage:minutes_per_session", "usage:sessions", "usage:minutes"]
    ids = [101, 102, 103]
    online = keel.get_online_features(refs, [{"customer_id": i} for i in ids], store=store)
    edf = pd.DataFrame({"customer_id": ids, "event_timestamp": [pd.Timestamp(datetime.now(UTC))] * 3})
    train = build_training_set(edf, refs, require_applied=False).set_index("customer_id").loc[ids]
    for name in ("minutes_per_session", "sessions", "minutes"):
        offline = [None if pd.isna(v) else float(v) for v in train[name]]
        assert [None if v is None else float(v) for v in online.values[name]] == offline, name
