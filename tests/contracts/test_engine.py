"""The fused engine against the same checks computed directly with pandas."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keel.contracts import Column, Contract, register_check, unregister_check, validate
from keel.contracts import checks as c

N = 5_000
NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


def clean_frame(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": np.arange(N, dtype="int64"),
            "amount": rng.uniform(1, 1000, N),
            "qty": rng.integers(1, 50, N),
            "country": rng.choice(["US", "DE", "FR"], N),
            "code": rng.choice(["AB12", "CD34", "EF56"], N),
            "seq": np.arange(N, dtype="float64"),
            "ts": pd.Timestamp("2026-11-23", tz="UTC") + pd.to_timedelta(np.arange(N), unit="s"),
            "score": rng.normal(0, 1, N),
        }
    )


CONTRACT = Contract(
    "orders",
    columns={
        "id": Column("int", nullable=False, checks=[c.unique()]),
        "amount": Column("float", checks=[c.not_null(), c.between(0, 1000), c.positive()]),
        "qty": Column("int", checks=[c.min(1), c.max(49)]),
        "country": Column("string", checks=[c.allowed_values(["US", "DE", "FR"])]),
        "code": Column("string", checks=[c.regex(r"^[A-Z]{2}\d{2}$"), c.length(4, 4)]),
        "seq": Column("float", checks=[c.monotonic()]),
        "ts": Column("timestamp", checks=[c.freshness("1d")]),
        "score": Column("float", checks=[c.max_null_fraction(0.01)]),
    },
    checks=[c.row_count(min=100, max=10_000), c.duplicate_keys(["country", "id"]), c.sql("qty * amount < 50000", name="order_value")],
)


def inject(df: pd.DataFrame, seed: int = 1) -> dict[str, set[int]]:
    """Break rows at random; returns the rows each check must find."""
    rng = np.random.default_rng(seed)
    rows = iter(rng.permutation(N)[:400].tolist())

    def take(k: int) -> list[int]:
        return [next(rows) for _ in range(k)]

    bad: dict[str, set[int]] = {}
    r = take(3)
    df.loc[r, "amount"] = np.nan
    bad["amount.not_null"] = set(r)
    r = take(4)
    df.loc[r, "amount"] = -5.0
    bad["amount.between"] = set(r)
    bad["amount.positive"] = set(r)
    r = take(2)
    df.loc[r, "amount"] = 0.0
    bad["amount.positive"] |= set(r)
    r = take(5)
    df.loc[r, "qty"] = 0
    bad["qty.min"] = set(r)
    r = take(3)
    df.loc[r, "qty"] = 60
    df.loc[r, "amount"] = 999.0
    bad["qty.max"] = set(r)
    bad["order_value"] = set(r)
    r = take(6)
    df.loc[r, "country"] = "XX"
    bad["country.allowed_values"] = set(r)
    r = take(3)
    df.loc[r, "code"] = "abc1"
    bad["code.regex"] = set(r)
    r = take(2)
    df.loc[r, "code"] = "AB123"
    bad["code.regex"] |= set(r)
    bad["code.length"] = set(r)
    r = take(2)
    df.loc[r, "seq"] = -1.0
    r2 = take(2)
    df.loc[r2, "id"] = df.loc[[x for x in range(N) if x not in r2][:2], "id"].to_numpy()
    r3 = take(200)
    df.loc[r3, "score"] = np.nan
    return bad


def pandas_truth(df: pd.DataFrame) -> dict[str, int]:
    """Failing counts of each check, computed the obvious way with pandas."""
    a = df["amount"]
    nn = a.notna()
    seq = df["seq"].dropna()
    return {
        "id.not_null": int(df["id"].isna().sum()),
        "id.unique": int(df["id"].duplicated(keep=False).sum()),
        "amount.not_null": int(a.isna().sum()),
        "amount.between": int((nn & ((a < 0) | (a > 1000))).sum()),
        "amount.positive": int((nn & (a <= 0)).sum()),
        "qty.min": int((df["qty"] < 1).sum()),
        "qty.max": int((df["qty"] > 49).sum()),
        "country.allowed_values": int((~df["country"].isin(["US", "DE", "FR"])).sum()),
        "code.regex": int((~df["code"].str.contains(r"^[A-Z]{2}\d{2}$", regex=True)).sum()),
        "code.length": int(((df["code"].str.len() < 4) | (df["code"].str.len() > 4)).sum()),
        "seq.monotonic": int((seq.diff().dropna() < 0).sum()),
        "score.max_null_fraction": int(df["score"].isna().sum()),
        "duplicate_keys:country,id": int(df.duplicated(["country", "id"], keep=False).sum()),
        "order_value": int((~(df["qty"] * df["amount"] < 50000) & df["amount"].notna()).sum()),
    }


def test_every_injected_violation_is_found_and_nothing_else(project: Path) -> None:
    df = clean_frame()
    clean = validate(df, CONTRACT, now=NOW, store=False)
    assert clean.passed and not clean.failures, clean.summary()

    bad = inject(df)
    truth = pandas_truth(df)
    report = validate(df, CONTRACT, now=NOW, store=False)
    failed = {r.check_id for r in report.failures}
    expected_failed = {k for k, v in truth.items() if v and k != "score.max_null_fraction"} | {"score.max_null_fraction"}
    assert failed == expected_failed
    for check_id, count in truth.items():
        assert report[check_id].failing_count == count, check_id
    for check_id, rows in bad.items():
        assert report[check_id].failing_count == len(rows), check_id
    # failing fractions use the non-null values of the column, like `mostly`
    assert report["amount.between"].failing_fraction == pytest.approx(4 / (N - 3))
    # samples are capped and hold real failing values
    # (a column of few distinct values is checked per value: its sample lists distinct values)
    assert report["country.allowed_values"].sample == ["XX"]
    assert set(report["code.regex"].sample) <= {"abc1", "AB123"}
    assert report["seq.monotonic"].failing_count == 2
    assert report.num_rows == N


def test_same_results_from_pandas_arrow_parquet_and_csv(project: Path, tmp_path: Path) -> None:
    df = clean_frame()
    inject(df)
    pq_path = tmp_path / "orders.parquet"
    csv_path = tmp_path / "orders.csv"
    df.to_parquet(pq_path)
    df.drop(columns=["ts"]).to_csv(csv_path, index=False)
    want = {r.check_id: (r.status, r.failing_count) for r in validate(df, CONTRACT, now=NOW, store=False).results}
    for data in (pa.Table.from_pandas(df), str(pq_path)):
        got = {r.check_id: (r.status, r.failing_count) for r in validate(data, CONTRACT, now=NOW, store=False).results}
        assert got == want
    from_csv = validate(str(csv_path), CONTRACT, now=NOW, store=False)
    assert from_csv["schema.required_columns"].status == "fail"
    assert from_csv["ts.freshness"].status == "error"
    assert from_csv["amount.between"].failing_count == want["amount.between"][1]


def test_validation_never_modifies_the_data(project: Path, tmp_path: Path) -> None:
    df = clean_frame()
    inject(df)
    before = df.copy(deep=True)
    table = pa.Table.from_pandas(df)
    table_before = table.to_pydict()
    path = tmp_path / "orders.parquet"
    df.to_parquet(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()

    @register_check("mutating")
    def mutating(frame: pd.DataFrame) -> bool:
        frame["amount"] = 0.0  # a careless custom check
        del frame["qty"]
        return True

    try:
        contract = Contract("m", columns=CONTRACT.columns, checks=[*CONTRACT.table_checks, c.custom("mutating")])
        for data in (df, table, str(path)):
            validate(data, contract, now=NOW)
    finally:
        unregister_check("mutating")
    pd.testing.assert_frame_equal(df, before)
    assert table.to_pydict() == table_before
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_mostly_and_severity(project: Path) -> None:
    df = clean_frame()
    df.loc[:9, "qty"] = 0  # 10 of 5000 rows = 0.2 %
    tolerant = Contract("t", columns={"qty": Column("int", checks=[c.min(1, mostly=0.995)])}, unexpected_columns="ignore")
    strict = Contract("t", columns={"qty": Column("int", checks=[c.min(1, mostly=0.999)])}, unexpected_columns="ignore")
    warn = Contract("t", columns={"qty": Column("int", checks=[c.min(1, severity="warn")])}, unexpected_columns="ignore")
    assert validate(df, tolerant, store=False).passed
    r = validate(df, tolerant, store=False)["qty.min"]
    assert r.status == "pass" and r.failing_count == 10
    assert not validate(df, strict, store=False).passed
    w = validate(df, warn, store=False)
    assert w.passed and [x.check_id for x in w.warnings] == ["qty.min"]


def test_schema_types_missing_and_unexpected_columns(project: Path) -> None:
    df = pd.DataFrame({"id": [1, 2], "amount": ["1", "2"], "extra": [0, 0]})
    contract = Contract(
        "s",
        columns={"id": Column("int"), "amount": Column("float", checks=[c.min(0)]), "missing": Column("string", checks=[c.not_null()])},
    )
    r = validate(df, contract, store=False)
    assert r["schema.required_columns"].status == "fail" and "missing" in r["schema.required_columns"].observed
    assert r["schema.unexpected_columns"].status == "fail" and r["schema.unexpected_columns"].sample == ["extra"]
    assert r["amount.type"].status == "fail" and r["amount.type"].observed == "VARCHAR"
    assert r["id.type"].status == "pass"
    assert r["amount.min"].status == "error" and "numeric" in r["amount.min"].message
    assert r["missing.not_null"].status == "error" and "missing" in r["missing.not_null"].message
    relaxed = Contract("s", columns={"id": "int"}, unexpected_columns="warn")
    rr = validate(df, relaxed, store=False)
    assert rr.passed and rr["schema.unexpected_columns"].severity == "warn" and rr.warnings
    optional = Contract("s", columns={"id": "int", "opt": Column("float", required=False, checks=[c.min(0)])}, unexpected_columns="ignore")
    ro = validate(df, optional, store=False)
    assert ro.passed and ro["opt.min"].status == "skip"


def test_freshness_and_naive_timestamps(project: Path) -> None:
    df = pd.DataFrame({"ts": [pd.Timestamp("2026-11-22 12:00", tz="UTC")]})
    contract = Contract("f", columns={"ts": Column("timestamp", checks=[c.freshness("6h")])})
    assert validate(df, contract, now=NOW + timedelta(hours=-20), store=False).passed
    stale = validate(df, contract, now=NOW, store=False)
    assert stale["ts.freshness"].status == "fail" and "1.0d old" in stale["ts.freshness"].observed
    naive = validate(pd.DataFrame({"ts": [pd.Timestamp("2026-11-22")]}), contract, now=NOW, store=False)
    assert naive["ts.freshness"].status == "error" and "tz_localize('UTC')" in naive["ts.freshness"].message


def test_custom_checks_python_and_sql(project: Path) -> None:
    df = clean_frame()
    df.loc[:4, "amount"] = 2000.0
    register_check("amount_below", sql="amount < {limit}")

    @register_check("even_ids_only")
    def even_ids_only(frame: pd.DataFrame, every: int = 2) -> pd.Series:
        return frame["id"] % every == 0

    try:
        contract = Contract(
            "x",
            checks=[
                c.custom("amount_below", limit=1000),
                c.custom("even_ids_only", every=1),
                c.custom("even_ids_only", every=2, name="even", severity="warn"),
            ],
        )
        r = validate(df, contract, store=False)
    finally:
        unregister_check("amount_below")
        unregister_check("even_ids_only")
    assert r["custom:amount_below"].failing_count == 5 and r["custom:amount_below"].status == "fail"
    assert r["custom:even_ids_only"].status == "pass"
    assert r["even"].failing_count == N // 2 and r["even"].sample[:2] == ["row 1", "row 3"]
    unknown = validate(df, Contract("y", checks=[c.custom("nope")]), store=False)
    assert unknown["custom:nope"].status == "error" and "register" in unknown["custom:nope"].message


def test_referential_check(project: Path, tmp_path: Path) -> None:
    users = pd.DataFrame({"user_id": [1, 2, 3]})
    users.to_parquet(tmp_path / "users.parquet")
    orders = pd.DataFrame({"user": [1, 2, 2, 4, None, 5]})
    contract = Contract("o", checks=[c.referential("user", str(tmp_path / "users.parquet"), "user_id")])
    r = validate(orders, contract, store=False)
    res = r[f"referential:user->{tmp_path / 'users.parquet'}"]
    assert res.failing_count == 2 and sorted(res.sample) == [4.0, 5.0]


def test_collects_every_failure_in_one_pass(project: Path) -> None:
    """A broken batch reports each broken check, not only the first."""
    df = clean_frame()
    inject(df)
    report = validate(df, CONTRACT, now=NOW, store=False)
    assert len(report.errors) >= 10


def test_nan_in_parquet_counts_as_null(project: Path, tmp_path: Path) -> None:
    """Parquet statistics ignore NaN; the engine must still see them (and not as out-of-range values)."""
    x = np.arange(10_000, dtype="float64")
    x[::100] = np.nan  # real NaN, not Arrow nulls
    path = tmp_path / "nan.parquet"
    pq.write_table(pa.table({"x": x}), path, row_group_size=1000)
    contract = Contract("n", columns={"x": Column("float", checks=[c.not_null(), c.between(0, 20_000), c.max_null_fraction(0.02)])})
    for data in (str(path), pa.table({"x": x}), pd.DataFrame({"x": x})):
        r = validate(data, contract, store=False)
        assert r["x.not_null"].failing_count == 100, type(data)
        assert r["x.between"].failing_count == 0 and r["x.max_null_fraction"].status == "pass"


@pytest.mark.parametrize("pattern", [r"^[A-Z]{2}\d{2}$", r"^a|b$", r"\d$", r"^AB", "^$"])
def test_regex_agrees_with_python_search(project: Path, pattern: str) -> None:
    s = pd.Series(["AB12", "ab", "xb", "a1", "", "AB123", "b", "zz9"])
    contract = Contract("r", columns={"s": Column("string", checks=[c.regex(pattern)])})
    r = validate(pd.DataFrame({"s": s}), contract, store=False)
    assert r["s.regex"].failing_count == int((~s.str.contains(pattern, regex=True)).sum())


@pytest.mark.parametrize("kind", ["parquet", "pandas"])
def test_string_checks_per_value_and_per_row_agree_with_pandas(project: Path, tmp_path: Path, kind: str) -> None:
    """Few distinct values: checked once per value (weighted by counts); many: once per row. Same answers."""
    rng = np.random.default_rng(5)
    n = 20_000
    few = pd.Series(rng.choice(["AB-12", "CD-34", "EF-56", "bad", "XY-999"], n, p=[0.3, 0.3, 0.3, 0.05, 0.05]))
    many = pd.Series([f"AB-{i:02d}" if i % 97 else f"zz{i}" for i in range(n)])
    few[rng.random(n) < 0.01] = None
    df = pd.DataFrame({"few": few, "many": many, "alone": few.copy()})
    checks = [c.allowed_values(["AB-12", "CD-34", "EF-56"]), c.regex(r"^[A-Z]{2}-\d{2}$"), c.length(5, 5)]
    contract = Contract(
        "s",
        columns={
            "few": Column("string", checks=list(checks)),
            "many": Column("string", checks=list(checks)),
            "alone": Column("string", checks=[c.allowed_values(["AB-12", "CD-34", "EF-56"])]),  # filtered, no value table
        },
    )
    data: object = df
    if kind == "parquet":
        data = str(tmp_path / "s.parquet")
        df.to_parquet(data, row_group_size=4096)
    r = validate(data, contract, store=False)
    for col in ("few", "many"):
        s = df[col].dropna()
        expected = {
            "allowed_values": int((~s.isin(["AB-12", "CD-34", "EF-56"])).sum()),
            "regex": int((~s.str.contains(r"^[A-Z]{2}-\d{2}$", regex=True)).sum()),
            "length": int((s.str.len() != 5).sum()),
        }
        for rule, count in expected.items():
            res = r[f"{col}.{rule}"]
            assert res.failing_count == count, (col, rule)
            assert res.failing_fraction == pytest.approx(count / len(s))
            assert res.status == ("fail" if count else "pass")
            assert res.sample and all(v in set(s) for v in res.sample)
    # the few-valued columns list distinct failing values, the most frequent first
    assert r["few.allowed_values"].sample[:2] in (["XY-999", "bad"], ["bad", "XY-999"])
    alone = r["alone.allowed_values"]
    assert (alone.failing_count, alone.sample) == (r["few.allowed_values"].failing_count, r["few.allowed_values"].sample)


def test_range_checks_on_parquet_statistics_and_rows(project: Path, tmp_path: Path) -> None:
    """A range inside the bounds passes from statistics; one outside is counted row by row, exactly."""
    x = np.tile(np.arange(100, dtype="int64"), 100)
    y = np.linspace(0.0, 1.0, x.size)
    x[-7:] = 500  # only the last row group goes out of range
    y[::50] = np.nan
    path = tmp_path / "r.parquet"
    pq.write_table(pa.table({"x": x, "y": y}), path, row_group_size=1000)
    contract = Contract(
        "r",
        columns={
            "x": Column("int", checks=[c.between(0, 99), c.min(0), c.max(1000), c.between(0.5, 600.5, name="half")]),
            "y": Column("float", checks=[c.between(0, 1), c.max(0.5)]),
        },
    )
    for data in (str(path), pd.DataFrame({"x": x, "y": y})):
        r = validate(data, contract, store=False)
        assert r["x.between"].failing_count == 7 and r["x.between"].sample == [500.0] * 5
        assert r["x.min"].status == r["x.max"].status == "pass" and r["x.max"].observed == 500
        # 0.5 <= x <= 600.5 on integers: only the zeros fail
        assert r["half"].failing_count == 100
        assert r["y.between"].failing_count == 0 and r["y.between"].status == "pass"
        nonnan = y[~np.isnan(y)]
        assert r["y.max"].failing_count == int((nonnan > 0.5).sum())


def test_unique_and_monotonic_on_every_numeric_and_time_type(project: Path) -> None:
    """Values fetched for uniqueness and order keep their exact type (ids above 2**53, times, NaN, nulls)."""
    big = 2**60
    df = pd.DataFrame(
        {
            "big": pd.array([big, big + 1, big + 1, big + 3, None], dtype="Int64"),  # a repeat and a null
            "f": [0.5, np.nan, 0.25, 1.0, 1.0],  # NaN is missing; 0.25 steps back, 1.0 repeats
            "ts": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-02", "2026-01-01", "2026-01-05"], utc=True),
            "d": pd.to_datetime(["2026-01-01", "2026-01-03", "2026-01-02", "2026-01-04", "2026-01-05"]).date,
        }
    )
    contract = Contract(
        "u",
        columns={
            "big": Column(checks=[c.unique(), c.monotonic(strict=True)]),
            "f": Column(checks=[c.unique(), c.monotonic()]),
            "ts": Column(checks=[c.unique(), c.monotonic()]),
            "d": Column(checks=[c.unique(), c.monotonic()]),
        },
    )
    for data in (df, pa.Table.from_pandas(df, preserve_index=False)):
        r = validate(data, contract, store=False)
        assert (r["big.unique"].failing_count, r["big.unique"].sample) == (2, [str(big + 1)])
        assert r["big.monotonic"].failing_count == 1  # big+1 -> big+1 is not strictly increasing
        assert r["f.unique"].failing_count == 2 and r["f.monotonic"].failing_count == 1
        assert r["ts.unique"].failing_count == 4 and r["ts.monotonic"].failing_count == 1
        assert r["ts.unique"].sample == ["2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00"]
        assert r["d.unique"].failing_count == 0 and r["d.monotonic"].failing_count == 1
