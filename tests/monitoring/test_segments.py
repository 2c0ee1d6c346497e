"""The segments driving a shift: a segment whose share moved, and one whose values moved."""

from __future__ import annotations

import numpy as np
import pandas as pd

import keel


def _frame(n: int, seed: int, *, pro_share: float = 0.2, pro_shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "plus", "pro"], n, p=[0.8 - pro_share, 0.2, pro_share])
    charges = rng.normal(60, 10, n) + np.where(plan == "pro", 20 + pro_shift, 0.0)
    return pd.DataFrame({"charges": charges, "plan": plan, "control": rng.normal(size=n)})


def test_a_shift_within_one_plan_is_traced_to_that_plan() -> None:
    report = keel.drift(_frame(20_000, 1), _frame(20_000, 2, pro_shift=-25.0))  # pro customers' charges fall; the plan's share is unchanged
    assert report.drifted == ["charges"]
    top = report.top_segments("charges", by=["plan"])
    assert top[0]["segment"] == "plan = pro" and abs(top[0]["current_share"] - top[0]["reference_share"]) < 0.02
    assert top[0]["contribution"] > 0.5 * top[0]["statistic_binned"]


def test_a_segment_whose_share_moved_is_named() -> None:
    report = keel.drift(_frame(20_000, 1), _frame(20_000, 3, pro_share=0.4))  # twice as many pro customers, who pay more
    assert "charges" in report.drifted and "plan" in report.drifted
    top = report.top_segments("charges", by=["plan"])
    assert top[0]["segment"] == "plan = pro" and top[0]["current_share"] > 0.35 and top[0]["reference_share"] < 0.25
