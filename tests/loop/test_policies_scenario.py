"""The issue's "done when": a covariate shift retrains a drift-based policy and not a performance-based one;
a later concept change, visible only once the delayed labels are in, retrains the performance-based one,
and the retrained model scores better on the later data.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sklearn.metrics import roc_auc_score

import keel
from keel.loop import policies as P
from keel.loop.policies import RetrainingPolicy, declare_policy
from tests.loop.policy_project import append_labelled, labelled, write_pipes
from tests.monitoring.conftest import log_rows, make_data

DAY = timedelta(days=1)
PER_DAY = 1500
COLS = ["charges", "tenure", "control", "plan"]


def _production() -> int:
    return int(next(e for e in keel.registry.status("churn")["environments"] if e["environment"] == "production")["version"])


def _started(policy: str) -> int:
    return len([e for e in P.history(policy) if e["action"] == "pipeline" and e["outcome"] == "started"])


@pytest.mark.slow
def test_covariate_shift_then_concept_change(project: Path) -> None:
    from keel.monitoring import define_monitor, run_monitor
    from keel.pipelines.runner import run
    from keel.pipelines.triggers import tick

    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    day0 = now - 12 * DAY
    mod = write_pipes(project)
    append_labelled(project, labelled(make_data(3 * PER_DAY, 1), day0, 86_400 * 3 / (3 * PER_DAY)))
    out = run(f"{mod}:retrain", {"window_start": day0.isoformat(), "window_end": (day0 + 3 * DAY).isoformat()}).output
    keel.promote("churn", out["version"], to="production", data=out["data"], target="churn")
    define_monitor("churn-daily", "churn", window="1d", checks=["drift", "performance"], alerts=[])
    common = {"window": "2d", "window_source": "labelled.parquet", "window_column": "ts"}
    declare_policy(RetrainingPolicy("on-drift", "churn", triggers=[{"alert": "churn-daily"}], cooldown="30d", **common), now=day0 + 3 * DAY)
    declare_policy(RetrainingPolicy("on-auc", "churn", triggers=[{"performance": "churn-daily", "metric": "roc_auc", "below": 0.7, "windows": 2}],
                                    **common), now=day0 + 3 * DAY)  # declared when the training data was fresh

    def traffic(start: datetime, seed: int, *, concept: float, labels: bool) -> tuple[list[str], object]:
        data = make_data(PER_DAY, seed, shift=20.0, concept=concept)
        ids = log_rows("churn", _production(), data, start, step_s=50, prefix=f"s{seed}")
        if labels:
            keel.log_feedback(ids, data["churn"], model="churn")
            append_labelled(project, labelled(data, start, 50))
        return ids, data

    # a covariate shift (charges +20) with its labels: ranking quality is unchanged
    shifted = [now - 8 * DAY, now - 7 * DAY]
    for i, start in enumerate(shifted):
        traffic(start, 200 + i, concept=0.0, labels=True)
    results = [run_monitor("churn-daily", end=start + DAY) for start in shifted]
    assert all("charges" in r.drifted for r in results)
    assert all(r.versions[0].performance["metrics"]["roc_auc"] > 0.75 for r in results)
    fired = tick(datetime.now(UTC))
    assert _started("on-drift") == 1 and _started("on-auc") == 0, [(e["action"], e["outcome"], e["detail"]) for e in P.history("on-drift")]
    retrained = next(e for e in P.history("on-drift") if e["action"] == "pipeline" and e["outcome"] == "finished")
    assert retrained["model_version"] == out["version"] + 1
    assert P.history("on-auc") and all(e["action"] == "declare" for e in P.history("on-auc"))
    champion = _production()

    # a concept change: the inputs do not move, the labels come a week late
    concept = [now - 5 * DAY, now - 4 * DAY]
    late = [traffic(start, 300 + i, concept=1.0, labels=False) for i, start in enumerate(concept)]
    for start in concept:
        run_monitor("churn-daily", end=start + DAY)
    tick(datetime.now(UTC))
    assert _started("on-auc") == 0  # nothing to see without labels
    for (ids, data), start in zip(late, concept, strict=True):
        keel.log_feedback(ids, data["churn"], model="churn")  # type: ignore[index]
        append_labelled(project, labelled(data, start, 50))  # type: ignore[arg-type]
    for start in concept:
        run_monitor("churn-daily", end=start + DAY)
    tick(datetime.now(UTC))
    assert _started("on-auc") == 1 and _started("on-drift") == 1
    fired = next(e for e in P.history("on-auc") if e["action"] == "trigger" and e["outcome"] == "accepted")
    assert fired["trigger"]["kind"] == "performance" and all(v < 0.7 for v in fired["trigger"]["values"])
    promoted = next(e for e in P.history("on-auc") if e["action"] == "promote")
    assert promoted["outcome"] == "applied"
    new = _production()
    assert new == promoted["model_version"] and new != champion

    later = make_data(4000, 400, shift=20.0, concept=1.0)
    old_auc = roc_auc_score(later["churn"], keel.load_model(f"models:/churn/{champion}").predict_proba(later[COLS])[:, 1])
    new_auc = roc_auc_score(later["churn"], keel.load_model(f"models:/churn/{new}").predict_proba(later[COLS])[:, 1])
    assert new_auc > old_auc + 0.2, (old_auc, new_auc)
