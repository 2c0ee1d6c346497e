"""The issue's "done when" scenario, on the prediction log.

Eight days of a churn model's predictions: a covariate shift in ``charges`` from
day 5, a concept change from day 3 (the label's relation to ``charges`` flips;
the inputs do not move, so only delayed labels can show it), and a ``control``
feature that never moves.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest

import keel
from keel.monitoring import alerts as A
from keel.monitoring import monitors as M
from keel.monitoring import results as R
from tests.monitoring.conftest import log_rows, make_data

T0 = pd.Timestamp("2026-04-01", tz="UTC")
DAYS, PER_DAY, SHIFT_FROM, CONCEPT_FROM = 8, 1500, 5, 3
INPUTS = {"charges", "tenure", "control", "plan"}


@pytest.mark.slow
def test_shift_concept_change_and_control(registered: Callable[..., Any]) -> None:
    registered()
    M.define_monitor("churn-daily", "churn", window="1d", segments=["plan", "charges"], checks=["drift", "quality", "performance"])
    labels: dict[int, tuple[list[str], Any]] = {}
    for day in range(DAYS):
        data = make_data(PER_DAY, 100 + day, shift=20.0 if day >= SHIFT_FROM else 0.0, concept=1.0 if day >= CONCEPT_FROM else 0.0)
        ids = log_rows("churn", 1, data, T0 + pd.Timedelta(days=day), step_s=50, prefix=f"day{day}")
        labels[day] = (ids, data["churn"])

    def run_all() -> list[M.MonitorResult]:
        return [M.run_monitor("churn-daily", end=T0 + pd.Timedelta(days=day + 1)) for day in range(DAYS)]

    before = run_all()
    for day, r in enumerate(before):
        flagged = set(r.drifted) & INPUTS
        assert flagged == ({"charges"} if day >= SHIFT_FROM else set()), (day, r.drifted)
        v = r.versions[0]
        assert v.performance["coverage"] == 0.0 and v.performance["metrics"] == {}  # labels never arrived (yet): a clear result
        assert v.estimated["roc_auc"] > 0.8
    assert not [a for a in A.list_alerts() if a["subject"].startswith("performance:")]

    shifted = next(a for a in A.list_alerts(status="open") if a["subject"] == "charges")
    assert re.match(r"charges: mean 64\.9 → 8\d\.\d \(\+3\d %\), ks 0\.\d+ > 0\.0\d+ — churn v1, window 2026-04-0\d", shifted["message"])
    assert "top segments: charges in [" in shifted["message"]
    top = shifted["context"]["top_segments"][0]
    assert top["current_share"] > 0.5 and top["reference_share"] < 0.2
    assert "control" not in {a["subject"] for a in A.list_alerts()}

    for ids, y in labels.values():  # the labels arrive, a month late
        report = keel.log_feedback(ids, y, model="churn")
        assert report.matched == PER_DAY and report.unknown == 0

    after = run_all()
    auc = [r.versions[0].performance["metrics"]["roc_auc"] for r in after]
    base = after[0].versions[0].baseline_performance["roc_auc"]
    assert all(abs(a - base) < 0.05 for a in auc[:CONCEPT_FROM])
    assert all(a < base - 0.1 for a in auc[CONCEPT_FROM:SHIFT_FROM])  # the concept change, visible only through labels
    assert all(r.versions[0].performance["coverage"] == 1.0 for r in after)
    assert [r.versions[0].estimated["roc_auc"] > 0.8 for r in after[CONCEPT_FROM:SHIFT_FROM]] == [True, True]  # the estimate could not see it
    perf = [a for a in A.list_alerts() if a["subject"] == "performance:roc_auc"]
    assert len(perf) == 1 and "label coverage 100 %" in perf[0]["message"]
    series = R.series("churn-daily", kind="performance", statistic="roc_auc")
    assert len(series) == DAYS  # reruns replaced their windows: one point per day
