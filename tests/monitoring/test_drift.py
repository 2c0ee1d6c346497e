"""keel.drift: flags, defaults by type and size, the report object, and awkward data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import keel
from keel.errors import ValidationError


def _frame(rng: np.random.Generator, n: int, *, shift: float = 0.0, plan_p: tuple[float, ...] = (0.5, 0.3, 0.2)) -> pd.DataFrame:
    return pd.DataFrame({
        "charges": rng.normal(65 + shift, 10, n),
        "control": rng.normal(0, 1, n),
        "tenure": rng.integers(0, 72, n),
        "plan": pd.Categorical(rng.choice(["basic", "plus", "pro"], n, p=list(plan_p))),
    })


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_shifted_columns_are_flagged_and_the_control_is_not(rng: np.random.Generator) -> None:
    ref = _frame(rng, 20_000)
    cur = _frame(rng, 5_000, shift=3.0, plan_p=(0.35, 0.35, 0.3))
    report = keel.drift(ref, cur)
    assert sorted(report.drifted) == ["charges", "plan"]
    frame = report.to_frame()
    assert list(frame.columns[:8]) == ["column", "kind", "method", "statistic", "threshold", "warn_threshold", "threshold_kind", "level"]
    row = frame.set_index("column").loc["charges"]
    assert row["method"] == "ks" and row["threshold_kind"] == "learned" and row["statistic"] > row["threshold"]
    assert frame.set_index("column").loc["plan", "method"] == "js"
    assert frame.set_index("column").loc["control", "level"] == "ok"
    assert report["charges"].describe().startswith("charges: mean 64.9 → 68.1 (+5 %), ks 0.1")
    for stat in ("ks", "wasserstein", "psi", "kl", "js"):
        assert row[stat] == row[stat]  # every statistic of the type is computed in the same pass


def test_no_change_gives_no_flag(rng: np.random.Generator) -> None:
    report = keel.drift(_frame(rng, 20_000), _frame(rng, 5_000))
    assert report.drifted == []
    assert report.multivariate is not None and report.multivariate["level"] != "alert"


def test_small_reference_uses_the_tests(rng: np.random.Generator) -> None:
    report = keel.drift(_frame(rng, 300), _frame(rng, 300, shift=8.0))
    assert report["charges"].threshold_kind == "test" and report["charges"].drifted
    assert report["plan"].threshold_kind in ("fixed", "learned", "test")


def test_method_and_fixed_threshold_overrides(rng: np.random.Generator) -> None:
    ref, cur = _frame(rng, 5_000), _frame(rng, 2_000, shift=1.0)
    report = keel.drift(ref, cur, columns=["charges", "plan"], method={"numeric": "psi", "plan": "chi2"}, thresholds={"psi": 0.5})
    c = report["charges"]
    assert c.method == "psi" and c.threshold == 0.5 and c.threshold_kind == "fixed" and not c.drifted and c.approximate
    assert report["plan"].method == "chi2" and report["plan"].threshold_kind == "learned"
    assert [r.column for r in report.columns] == ["charges", "plan"]


def test_bad_arguments_are_clear_errors(rng: np.random.Generator) -> None:
    ref = _frame(rng, 500)
    with pytest.raises(ValidationError, match=r"chi2.*numeric column 'charges'"):
        keel.drift(ref, ref, method={"charges": "chi2"})
    with pytest.raises(ValidationError, match="Did you mean 'charges'"):
        keel.drift(ref, ref, columns=["charge"])
    with pytest.raises(ValidationError, match="does not exist"):
        keel.drift("/no/such/file.parquet", ref)
    with pytest.raises(ValidationError, match="not a number"):
        keel.drift(ref, ref, thresholds="high")


def test_parquet_paths_and_arrow_tables(tmp_path: Path, rng: np.random.Generator) -> None:
    import pyarrow as pa

    ref, cur = _frame(rng, 3_000), _frame(rng, 1_000, shift=5.0)
    ref.to_parquet(tmp_path / "ref.parquet")
    report = keel.drift(tmp_path / "ref.parquet", pa.Table.from_pandas(cur))
    assert "charges" in report.drifted


def test_awkward_data_gives_clear_results_not_exceptions(rng: np.random.Generator) -> None:
    ref = _frame(rng, 5_000)
    ref["constant"] = 1.5
    ref["gone"] = rng.normal(size=5_000)
    ref["nulls"] = np.nan
    cur = _frame(rng, 1_000).assign(constant=1.5, extra=1.0, nulls=np.nan)
    cur["plan"] = cur["plan"].cat.add_categories(["enterprise"])
    cur.loc[:99, "plan"] = "enterprise"
    cur.loc[:199, "control"] = np.nan
    report = keel.drift(ref, cur)
    assert report["gone"].level == "missing" and "missing" in report["gone"].note
    assert report.schema["added"] == ["extra"] and report.schema["dropped"] == ["gone"]
    assert report["constant"].level == "ok" and "constant" in report["constant"].note
    assert report["nulls"].level == "insufficient" and "all null" in report["nulls"].note
    plan = report["plan"]
    assert plan.new_categories == {"enterprise": 100} and plan.drifted and "new categories" in plan.note
    assert report["control"].null_rate_current == pytest.approx(0.2)
    moved = keel.drift(ref, cur.assign(constant=2.0))
    assert moved["constant"].drifted
    empty = keel.drift(ref, cur.iloc[:0])
    assert empty.n_current == 0 and empty.drifted == [] and "empty" in empty.notes[0]
    assert all(c.level in ("insufficient", "missing") for c in empty.columns)
    assert empty.to_html().startswith("<!doctype html>")


def test_multivariate_catches_a_correlation_change_per_column_tests_miss(rng: np.random.Generator) -> None:
    def frame(n: int, rho: float) -> pd.DataFrame:
        x = rng.normal(size=n)
        y = rho * x + np.sqrt(1 - rho**2) * rng.normal(size=n)
        return pd.DataFrame({"x": x, "y": y, "z": rng.normal(size=n)})

    report = keel.drift(frame(20_000, 0.9), frame(5_000, -0.9))
    assert report.drifted == []
    assert report.multivariate is not None and report.multivariate["drifted"]
    assert report.multivariate["statistic"] > report.multivariate["upper"]


def test_html_and_plot(rng: np.random.Generator) -> None:
    report = keel.drift(_frame(rng, 3_000), _frame(rng, 1_000, shift=5.0))
    page = report.to_html(title="weekly")
    assert page.count("<svg") == 4 and "weekly" in page and "charges" in page
    h = report.histogram("plan")
    assert h["labels"][:3] == ["basic", "plus", "pro"] and sum(h["current"]) == pytest.approx(1.0)
    fig = report.plot("charges")
    assert fig.axes[0].get_title().startswith("charges")
    import matplotlib.pyplot as plt

    plt.close(fig)
    with pytest.raises(ValidationError):
        report.plot("nope")


def test_prediction_drift_on_scores_and_labels(rng: np.random.Generator) -> None:
    ref = pd.DataFrame({"score": rng.beta(2, 5, 5_000), "prediction": rng.integers(0, 2, 5_000)})
    cur = pd.DataFrame({"score": rng.beta(4, 4, 2_000), "prediction": (rng.random(2_000) < 0.7).astype(int)})
    report = keel.drift(ref, cur)
    assert report["prediction"].kind == "categorical"  # an integer label with two values
    assert sorted(report.drifted) == ["prediction", "score"]


def test_a_window_in_many_chunks_gives_the_report_of_one_chunk(rng: np.random.Generator) -> None:
    """A window read from the log arrives in DuckDB's chunks, with nulls: every figure is the one of the same rows in one chunk."""
    import pyarrow as pa

    from keel.monitoring.drift import as_table, compare
    from keel.monitoring.reference import fit_reference

    ref = fit_reference(as_table(_frame(rng, 5_000), "reference"))
    cur = _frame(rng, 3_000, shift=1.0)
    cur.loc[::17, "control"] = np.nan
    whole = pa.Table.from_pandas(cur, preserve_index=False)
    chunked = pa.Table.from_batches(whole.to_batches(max_chunksize=700))
    assert chunked["charges"].num_chunks > 1
    one, many = compare(ref, whole.combine_chunks()), compare(ref, chunked)
    assert one.to_dict() == many.to_dict()
    assert chunked["charges"].to_numpy()[:5].tolist() == cur["charges"].head().tolist()  # the caller's table is left as it was
