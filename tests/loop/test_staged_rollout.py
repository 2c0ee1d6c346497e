"""The staged rollout shadow,canary:<w>: its declaration, then shadow → canary → promotion, each stage judged on its own rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

import keel
from keel.errors import ValidationError
from keel.loop import policies as P
from keel.loop.policies import RetrainingPolicy
from keel.loop.retraining import advance, run_policy
from tests.loop.test_policies import _registry_conf, champion, policy  # noqa: F401  (fixture)
from tests.monitoring.conftest import log_rows, make_data


@pytest.mark.parametrize(("mode", "stages", "weight"), [
    ("shadow,canary:50", ["shadow", "canary"], 50.0), (" shadow , canary:25 ", ["shadow", "canary"], 25.0),
    ("shadow", ["shadow"], 10.0), ("canary:20", ["canary"], 20.0), ("auto", [], 10.0), ("none", [], 10.0)])
def test_production_modes_and_their_stages(mode: str, stages: list[str], weight: float) -> None:
    p = RetrainingPolicy("x", "churn", triggers=[{"alert": "m"}], promotion={"production": mode})
    P._check_shape(p)
    assert p.stages == stages and p.rollout == (stages[0] if stages else None) and p.canary_weight == weight


@pytest.mark.parametrize(("mode", "message"), [
    ("canary:50,shadow", r"'canary:50,shadow' is not a staged rollout keel runs: the only sequence is shadow,canary:<weight>"),
    ("shadow,shadow", r"'shadow,shadow' is not a staged rollout"),
    ("shadow,canary:50,canary:90", r"is not a staged rollout"),
    ("shadow,auto", r"'shadow,auto' is not a staged rollout"),
    ("auto,canary:10", r"'auto,canary:10' is not a staged rollout"),
    ("shadow,canary:150", r"'canary:150' in promotion.production 'shadow,canary:150' is not a canary weight"),
    ("shadow,canary:x", r"'canary:x' in promotion.production 'shadow,canary:x' is not a canary weight"),
    ("shadow,", r"'shadow,' is not a staged rollout"),
    ("shadw", r"promotion\.production 'shadw' is not known\. Did you mean 'shadow'"),
])
def test_a_bad_sequence_is_refused_with_the_one_that_works(mode: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as exc:
        P._check_shape(RetrainingPolicy("x", "churn", triggers=[{"alert": "m"}], promotion={"production": mode}))
    assert "shadow,canary" in (exc.value.hint or "")


def _traffic(version: int, routes: dict[str, int], n: int, seed: int, prefix: str, *, paired: bool, bad: str | None = None) -> None:
    """``n`` labelled requests logged now: every route on the same requests (paired, a shadow) or each on its own; ``bad`` scores upside down."""
    frame = make_data(n, seed)
    start = datetime.now(UTC)
    ids: list[str] = []
    for route, v in routes.items():
        score = None
        if route == bad:
            score = 1 - keel.load_model(f"models:/churn/{v}").predict_proba(frame.drop(columns=["churn"]))[:, 1]
        got = log_rows("churn", v, frame, start, step_s=0.0, route=route, score=score, prefix=prefix if paired else f"{prefix}-{route}")
        if not paired or not ids:
            ids += got
    labels = [int(y) for y in frame["churn"]] * (1 if paired else len(routes))
    keel.log_feedback(ids, labels, model="churn")


def test_staged_rollout_shadow_then_canary_then_promotion(champion: dict[str, Any]) -> None:  # noqa: F811
    from keel.deployments.compare import compare
    from keel.deployments.specs import get_deployment

    v1 = champion["version"]
    _registry_conf(champion["folder"])
    P.declare_policy(policy(champion, promotion={"production": "shadow,canary:50"}, deployment="churn-live",
                            live={"min_labels": 100, "margin": 0.2}))
    dry = run_policy("churn-retrain", dry_run=True)
    assert "as a shadow in deployment churn-live; once its live comparison passes, send it 50 % of traffic as a canary" in dry["would"][-1]
    out = run_policy("churn-retrain")
    v2 = out["version"]
    assert out["status"] == "rollout" and out["mode"] == "shadow", out
    assert get_deployment("churn-live").spec.mode == "shadow"
    assert advance("churn-retrain")["status"] == "waiting"  # no labelled traffic yet
    # the shadow stage: both versions on the same requests, labelled; its comparison is passed to advance (computed once)
    _traffic(v1, {"champion": v1, "shadow": v2}, 400, 11, "s", paired=True)
    state = P.describe_policy("churn-retrain")["state"]["rollout"]
    began = datetime.fromtimestamp(state["since"] / 1000, tz=UTC)
    c = compare("churn-live", since=began, min_labels=100, margin=0.2)
    assert c["quality"]["paired"] and c["quality"]["labelled"] == 400 and c["recommendation"] == "promote"
    moved = advance("churn-retrain", comparison=c)
    assert moved["status"] == "advanced" and moved["previous"] == "shadow" and moved["stage"] == "canary", moved
    assert moved["comparison"] == c["quality"]
    dep = get_deployment("churn-live")
    assert dep.spec.mode == "canary" and dep.spec.route("canary").ref == str(v2) and dep.spec.route("canary").weight == 50
    assert dep.revision == moved["revision"] == c["revision"] + 1
    # the shadow's comparison is of the old revision: refused for the canary's stage
    with pytest.raises(ValidationError, match=rf"revision {c['revision']} .* not of this stage \('churn-live' revision {dep.revision}"):
        advance("churn-retrain", comparison=c)
    # the canary's stage reads only its own rows: the shadow stage's labelled champion rows are not in it
    waiting = advance("churn-retrain")
    assert waiting["status"] == "waiting" and waiting["stage"] == "canary" and waiting["comparison"] is None, waiting
    assert run_policy("churn-retrain")["status"] == "skipped"  # still rolling out: never retriggered by its own deployment
    _traffic(v1, {"champion": v1, "canary": v2}, 300, 12, "c", paired=False)
    done = advance("churn-retrain")
    assert done["status"] == "promoted" and done["stage"] == "canary", done
    assert done["comparison"]["paired"] is False and done["comparison"]["labelled"] == {"champion": 300, "canary": 300}
    assert keel.registry.get_version("churn", "production").version == v2
    assert get_deployment("churn-live").spec.mode == "single"
    # every step audited, in order, and shown by keel retraining history
    steps = [(e["action"], e["outcome"]) for e in reversed(P.history("churn-retrain")) if e["action"] in ("shadow", "canary", "rollout")]
    assert steps == [("shadow", "started"), ("rollout", "waiting"), ("rollout", "advanced"), ("canary", "started"), ("rollout", "waiting"),
                     ("rollout", "promoted")]
    advanced = next(e for e in P.history("churn-retrain") if e["outcome"] == "advanced")
    assert "the shadow passed its live comparison (roc_auc" in advanced["detail"]["reason"] and "as the canary at 50 %" in advanced["detail"]["reason"]
    promoted = next(e for e in P.history("churn-retrain") if e["outcome"] == "promoted")
    assert promoted["detail"]["reason"].startswith("the canary passed its live comparison (roc_auc") and promoted["detail"]["stage"] == "canary"
    assert advance("churn-retrain")["status"] == "idle"


def test_a_failing_canary_stage_ends_the_staged_rollout(champion: dict[str, Any]) -> None:  # noqa: F811
    from keel.deployments.specs import get_deployment

    v1 = champion["version"]
    _registry_conf(champion["folder"])
    P.declare_policy(policy(champion, promotion={"production": "shadow,canary:50"}, live={"min_labels": 100, "margin": 0.05}))
    v2 = run_policy("churn-retrain")["version"]
    _traffic(v1, {"champion": v1, "shadow": v2}, 400, 21, "s", paired=True)
    assert advance("churn-retrain")["status"] == "advanced"
    _traffic(v1, {"champion": v1, "canary": v2}, 300, 22, "c", paired=False, bad="canary")  # the canary answers upside down
    out = advance("churn-retrain")
    assert out["status"] == "rolled_back" and out["stage"] == "canary", out
    assert get_deployment("churn-live").spec.challenger is None
    assert keel.registry.get_version("churn", "production").version == v1  # the champion stays
    assert P.describe_policy("churn-retrain")["state"].get("rollout") is None
    ended = P.history("churn-retrain")[0]
    assert (ended["action"], ended["outcome"]) == ("rollout", "rolled_back") and "the canary lost its live comparison" in ended["detail"]["reason"]
