"""Relative checks against stored references: last accepted batch, last week, snapshots, plug-ins."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from keel.contracts import Column, Contract, pin_snapshot, register_reference_resolver, validate
from keel.contracts import checks as c
from keel.contracts.profile import Profile, ks_2samp, psi
from keel.errors import NotFoundError

MONDAY = datetime(2026, 11, 16, 9, tzinfo=UTC)


def batch(seed: int, n: int = 4000, *, shift: float = 0.0, scale: float = 1.0, null_rate: float = 0.0, shares: tuple[float, float, float] = (0.5, 0.3, 0.2), extra_category: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(100 + shift, 10 * scale, n)
    x[rng.random(n) < null_rate] = np.nan
    cats = rng.choice(["a", "b", "c"], n, p=list(shares))
    if extra_category:
        cats[:50] = "z"
    return pd.DataFrame({"x": x, "cat": cats})


CONTRACT = Contract(
    "feed",
    columns={
        "x": Column("float", checks=[c.mean_change(5), c.psi(0.2), c.ks(0.001), c.null_rate_increase(2)]),
        "cat": Column("string", checks=[c.category_share(3), c.no_new_categories(), c.psi(0.1, name="cat_psi")]),
    },
    checks=[c.row_count_change(10)],
)


def failed(report: object) -> set[str]:
    return {r.check_id for r in report.failures}  # type: ignore[attr-defined]


def test_first_batch_skips_then_later_batches_compare_with_last_accepted(project: Path) -> None:
    first = validate(batch(0), CONTRACT, now=MONDAY)
    assert first.passed and {r.status for r in first.results if r.kind not in ("type", "schema")} == {"skip"}
    same = validate(batch(1), CONTRACT, now=MONDAY + timedelta(hours=1))
    assert same.passed and not same.failures, same.summary()
    assert all(r.status == "pass" for r in same.results)

    cases = {
        "mean": (batch(2, shift=8), {"x.mean_change", "x.psi", "x.ks"}),
        "spread": (batch(3, scale=2.0), {"x.psi", "x.ks"}),
        "nulls": (batch(4, null_rate=0.05), {"x.null_rate_increase"}),
        "shares": (batch(5, shares=(0.4, 0.4, 0.2)), {"cat.category_share"}),
        "new": (batch(6, extra_category=True), {"cat.no_new_categories"}),
        "rows": (batch(7, n=3000), {"row_count_change"}),
    }
    for name, (df, expected) in cases.items():
        report = validate(df, CONTRACT, now=MONDAY + timedelta(hours=2))
        assert failed(report) == expected, (name, report.summary())
    # failing batches are not accepted: the reference is still the last good batch
    again = validate(batch(8), CONTRACT, now=MONDAY + timedelta(hours=3))
    assert again.passed, again.summary()
    share = again["cat.category_share"]
    assert share.status == "pass" and "points" in share.observed


def test_observed_against_reference_is_reported(project: Path) -> None:
    validate(batch(0), CONTRACT, now=MONDAY)
    report = validate(batch(2, shift=8), CONTRACT, now=MONDAY + timedelta(hours=1))
    mean = report["x.mean_change"]
    assert "ref" in mean.observed and "+8" in mean.observed
    new = validate(batch(6, extra_category=True), CONTRACT, now=MONDAY + timedelta(hours=2))["cat.no_new_categories"]
    assert new.sample == ["z"] and new.failing_count == 50


def test_same_weekday_last_week(project: Path) -> None:
    contract = Contract("weekly", columns={"x": Column("float", checks=[c.mean_change(5, reference="same_weekday_last_week")]), "cat": "string"})
    validate(batch(0, shift=50), contract, now=MONDAY)  # last Monday: a high mean
    validate(batch(1), contract, now=MONDAY + timedelta(days=3))  # Thursday: normal
    monday = validate(batch(2, shift=50), contract, now=MONDAY + timedelta(days=7, hours=2))
    assert monday["x.mean_change"].status == "pass", monday.summary()
    tuesday = validate(batch(3, shift=50), contract, now=MONDAY + timedelta(days=8))
    assert tuesday["x.mean_change"].status == "skip"  # nothing accepted last Tuesday
    wrong = validate(batch(4), contract, now=MONDAY + timedelta(days=7, hours=5))
    assert wrong["x.mean_change"].status == "fail"


def test_pinned_snapshot_and_plugin_resolver(project: Path) -> None:
    pin_snapshot("golden", batch(0))
    contract = Contract("s", columns={"x": Column("float", checks=[c.psi(0.2)]), "cat": "string"}, reference="snapshot:golden")
    assert validate(batch(1), contract).passed
    assert not validate(batch(2, shift=8), contract).passed
    with pytest.raises(NotFoundError, match=r"golde.*Did you mean 'golden'"):
        validate(batch(1), Contract("s", columns={"x": Column("float", checks=[c.psi(0.2)])}, reference="snapshot:golde"))

    from keel.contracts.profile import compute_profile
    from keel.contracts.source import Source

    with Source(batch(9, shift=8)) as src:
        shifted = compute_profile(src)
    calls: list[tuple[str, str | None]] = []

    def production_training_set(target: str, arg: str | None, now: datetime) -> tuple[str, Profile]:
        calls.append((target, arg))
        return "training set of churn@production", shifted

    register_reference_resolver("production_training_set", production_training_set)
    plug = Contract("p", columns={"x": Column("float", checks=[c.mean_change(5)]), "cat": "string"}, reference="production_training_set:churn")
    report = validate(batch(10, shift=8), plug)
    assert report.passed and calls == [("p", "churn")]


def test_psi_and_ks_math() -> None:
    assert psi([100, 100], [100, 100]) == 0
    assert psi([50, 50], [90, 10]) == pytest.approx(0.4 * np.log(0.9 / 0.5) + (-0.4) * np.log(0.1 / 0.5))
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 3000), rng.normal(0, 1, 3000)
    d, p = ks_2samp(a, b)
    assert p > 0.01
    d2, p2 = ks_2samp(a, b + 0.3)
    assert d2 > d and p2 < 1e-6
    from scipy import stats

    small = rng.normal(0, 1, 40)
    assert ks_2samp(small, b[:30]) == (stats.ks_2samp(small, b[:30]).statistic, stats.ks_2samp(small, b[:30]).pvalue)  # SciPy's exact test
    assert ks_2samp(np.array([np.nan, 1.0, 2.0]), np.array([1.0, 2.0])) == ks_2samp(np.array([1.0, 2.0]), np.array([1.0, 2.0]))


def test_psi_bins_leave_nan_out(project: Path) -> None:
    import pyarrow as pa

    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, 5000)
    y = x.copy()
    y[:1000] = np.nan  # NaN must be missing, not "above the last edge"
    pin_snapshot("clean", pa.table({"x": x}))
    contract = Contract("nan", columns={"x": Column("float", checks=[c.psi(0.05), c.null_rate_increase(25)])}, reference="snapshot:clean")
    report = validate(pa.table({"x": y}), contract, store=False)
    assert report["x.psi"].status == "pass" and report["x.psi"].observed < 0.01, report.summary()
