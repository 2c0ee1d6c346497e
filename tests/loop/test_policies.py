"""Retraining policies: declaration checks, dry runs, a retrain through the gates, failure and back-off, coalescing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.errors import KeelError, NotFoundError, ValidationError
from keel.loop import policies as P
from keel.loop.policies import RetrainingPolicy, declare_policy
from keel.loop.retraining import advance, run_policy
from tests.loop.policy_project import append_labelled, labelled, write_pipes
from tests.monitoring.conftest import make_data

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


@pytest.fixture
def champion(project: Path) -> dict[str, Any]:
    """labelled.parquet (3 days up to now), a champion v1 made by the module's `retrain` pipeline, in production, and a monitor."""
    from keel.monitoring import define_monitor
    from keel.pipelines.runner import run

    mod = write_pipes(project)
    append_labelled(project, labelled(make_data(3000, 1), NOW - timedelta(days=3), 86.4))
    out = run(f"{mod}:retrain", {"window_start": (NOW - timedelta(days=3)).isoformat(), "window_end": NOW.isoformat()}).output
    keel.promote("churn", out["version"], to="production", data=out["data"], target="churn")
    define_monitor("churn-daily", "churn", window="1d", checks=["drift", "performance"], alerts=[])
    return {"module": mod, "version": out["version"], "folder": project}


def policy(champion: dict[str, Any], **kw: Any) -> RetrainingPolicy:
    base: dict[str, Any] = {"triggers": [{"alert": "churn-daily"}], "window": "2d", "window_source": "labelled.parquet", "window_column": "ts",
                            "cooldown": "1s"}
    return RetrainingPolicy("churn-retrain", "churn", **(base | kw))


def test_declaration_is_checked_whole(champion: dict[str, Any]) -> None:
    mod = champion["module"]
    with pytest.raises(NotFoundError, match=r"Monitor 'churn-daly' does not exist\. Did you mean 'churn-daily'"):
        declare_policy(policy(champion, triggers=[{"alert": "churn-daly"}]))
    with pytest.raises(ValidationError, match=rf"Pipeline {mod}:no_window .* takes no 'window_start' and no 'window_end' parameter"):
        declare_policy(policy(champion, pipeline=f"{mod}:no_window"))
    with pytest.raises(KeelError, match="no_such_pipes"):
        declare_policy(policy(champion, pipeline="no_such_pipes:retrain"))
    _old(champion["folder"])
    with pytest.raises(ValidationError, match=r"selects no rows of old.parquet by ts"):
        declare_policy(policy(champion, window_source="old.parquet"))
    with pytest.raises(ValidationError, match="would trigger itself: its trigger model 'churn' fires on 'model:churn'"):
        declare_policy(policy(champion, triggers=[{"model": "churn"}]))
    with pytest.raises(ValidationError, match="would trigger itself: its trigger source 'exports'"):
        declare_policy(policy(champion, pipeline=f"{mod}:exporting", triggers=[{"data": "exports"}]))
    with pytest.raises(ValidationError, match=r"promotion\.production 'canry:10' is not known"):
        declare_policy(policy(champion, promotion={"production": "canry:10"}))
    with pytest.raises(ValidationError, match="has an unknown setting 'cooldwn'"):
        RetrainingPolicy.from_dict("x", {"model": "churn", "cooldwn": "1h"})
    assert P.list_policies() == []  # nothing half-written


def _old(folder: Path) -> None:
    """An old.parquet whose rows are a year old (so no 2-day window selects any), labelled by ts."""
    labelled(make_data(50, 3), NOW - timedelta(days=400), 60).to_parquet(folder / "old.parquet")


def test_declare_is_versioned_owned_and_scheduled(champion: dict[str, Any]) -> None:
    from keel.pipelines.schedule import list_schedules
    from keel.store.owners import owners_of

    first = declare_policy(policy(champion))
    assert first["version"] == 1 and first["pipeline"] == f"{champion['module']}:retrain"  # the champion's own pipeline
    assert declare_policy(policy(champion))["changed"] is False
    again = declare_policy(policy(champion, triggers=[{"alert": "churn-daily"}, {"schedule": "0 3 * * *"}]))
    assert again["version"] == 2
    shown = P.describe_policy("churn-retrain")
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    assert shown["owners"] == owners_of("retraining", "churn-retrain") and shown["owners"]
    scheds = {s.name: s for s in list_schedules()}
    assert scheds["retraining.churn-retrain.0"].kind == "alert" and scheds["retraining.churn-retrain.1"].kind == "cron"
    assert [e["action"] for e in P.history("churn-retrain")] == ["declare", "declare"]


def test_dry_run_then_retrain_promotes_through_the_gates(champion: dict[str, Any]) -> None:
    _registry_conf(champion["folder"])
    declare_policy(policy(champion))
    dry = run_policy("churn-retrain", dry_run=True)
    assert dry["status"] == "dry-run" and dry["window_rows"] > 0
    assert dry["would"][0].startswith(f"run {champion['module']}:retrain with window_start=")
    assert keel.registry.status("churn")["environments"][-1]["version"] == champion["version"]  # nothing moved
    out = run_policy("churn-retrain", trigger={"kind": "manual", "why": "test"})
    assert out["status"] == "promoted" and out["version"] == champion["version"] + 1, out
    assert [r["name"] for r in out["gates"]["results"]][:1] == ["roc_auc >= 0.6"]
    prod = next(e for e in keel.registry.status("churn")["environments"] if e["environment"] == "production")
    assert prod["version"] == out["version"]
    run = keel.get_run(out["run_id"])
    assert run.tags["keel.trigger"] == "retraining:churn-retrain" and '"why": "test"' in run.tags["keel.retraining.cause"]
    assert run.params["window_start"] < run.params["window_end"]
    actions = [(e["action"], e["outcome"]) for e in reversed(P.history("churn-retrain"))]
    assert actions[:4] == [("declare", "applied"), ("dry_run", "dry-run"), ("trigger", "accepted"), ("pipeline", "started")]
    assert ("pipeline", "finished") in actions
    assert all(e["user"] for e in P.history("churn-retrain"))


def test_failing_pipeline_keeps_the_champion_alerts_and_backs_off(champion: dict[str, Any]) -> None:
    from keel.monitoring.alerts import list_alerts

    declare_policy(policy(champion, pipeline=f"{champion['module']}:broken", backoff="1h"))
    out = run_policy("churn-retrain")
    assert out["status"] == "failed" and "the feature store is down" in out["error"]
    assert out["backoff_s"] == 3600
    prod = next(e for e in keel.registry.status("churn")["environments"] if e["environment"] == "production")
    assert prod["version"] == champion["version"]
    alert = next(a for a in list_alerts() if a["monitor"] == "retraining:churn-retrain")
    assert "champion stays" in alert["message"]
    events = [(e["action"], e["outcome"]) for e in P.history("churn-retrain")]
    assert ("pipeline", "failed") in events and ("backoff", "applied") in events
    again = run_policy("churn-retrain")
    assert again["status"] == "skipped" and "backing off after 1 failure" in again["reason"]


def test_two_triggers_at_once_make_one_retrain(champion: dict[str, Any]) -> None:
    from keel.monitoring import run_monitor
    from keel.pipelines import triggers as T
    from tests.monitoring.conftest import log_rows

    declare_policy(policy(champion, triggers=[{"alert": "churn-daily"}, {"schedule": "* * * * *"}]), now=NOW)
    log_rows("churn", champion["version"], make_data(1500, 9, shift=25.0), NOW - timedelta(hours=20), step_s=40)
    assert run_monitor("churn-daily", end=NOW).drifted  # a drift alert opens
    fired = T.tick(NOW + timedelta(minutes=2))
    assert sorted(f.schedule for f in fired) == ["retraining.churn-retrain.0", "retraining.churn-retrain.1"]
    outcomes = [(e["action"], e["outcome"]) for e in P.history("churn-retrain") if e["action"] == "trigger"]
    assert sorted(outcomes) == [("trigger", "accepted"), ("trigger", "coalesced")]
    assert len([e for e in P.history("churn-retrain") if e["action"] == "pipeline" and e["outcome"] == "started"]) == 1


def test_pause_and_resume(champion: dict[str, Any]) -> None:
    from keel.pipelines.schedule import get_schedule

    declare_policy(policy(champion))
    P.set_paused("churn-retrain", True)
    assert get_schedule("retraining.churn-retrain.0").enabled is False
    assert run_policy("churn-retrain")["status"] == "skipped"
    P.set_paused("churn-retrain", False)
    assert get_schedule("retraining.churn-retrain.0").enabled is True


def _registry_conf(folder: Path, **registry: Any) -> None:
    import yaml

    from keel import config

    conf = yaml.safe_load((folder / "keel.yaml").read_text()) or {}
    conf["registry"] = {"policies": {"churn": {"gates": ["roc_auc >= 0.6"]}}, **registry}
    (folder / "keel.yaml").write_text(yaml.safe_dump(conf))
    config.reset()


def test_canary_rollout_waits_for_labels_and_is_never_retriggered_by_itself(champion: dict[str, Any]) -> None:
    from keel.deployments.specs import get_deployment

    _registry_conf(champion["folder"])
    declare_policy(policy(champion, promotion={"production": "canary:20"}, deployment="churn-live", live={"min_labels": 50}))
    out = run_policy("churn-retrain")
    assert out["status"] == "rollout" and out["deployment"] == "churn-live", out
    dep = get_deployment("churn-live").spec
    assert dep.mode == "canary" and dep.route("canary").ref == str(out["version"]) and dep.route("canary").weight == 20
    again = run_policy("churn-retrain", trigger={"kind": "alert", "monitor": "churn-daily", "version": out["version"]})
    assert again["status"] == "skipped" and "still rolling out" in again["reason"]
    assert advance("churn-retrain")["status"] == "waiting"  # no labelled traffic yet: the champion keeps production
    prod = next(e for e in keel.registry.status("churn")["environments"] if e["environment"] == "production")
    assert prod["version"] == champion["version"]
    assert ("rollout", "waiting") in [(e["action"], e["outcome"]) for e in P.history("churn-retrain")]


def test_approval_leaves_a_pending_request(champion: dict[str, Any]) -> None:
    _registry_conf(champion["folder"], require_approval=["production"])
    declare_policy(policy(champion, promotion={"production": "approval"}))
    out = run_policy("churn-retrain")
    assert out["status"] == "pending" and out["request_id"], out
    assert keel.registry.get_request(out["request_id"])["status"] == "pending"
    _registry_conf(champion["folder"])
    with pytest.raises(ValidationError, match="production needs no approval"):
        declare_policy(policy(champion, promotion={"production": "approval"}))


def test_staging_only_and_at_most_n_per_period(champion: dict[str, Any]) -> None:
    _registry_conf(champion["folder"])
    declare_policy(policy(champion, promotion={"staging": "auto", "production": "none"}, max_retrains=1, per="1d"))
    out = run_policy("churn-retrain")
    assert out["status"] == "registered" and out["environment"] == "staging", out
    envs = {e["environment"]: e["version"] for e in keel.registry.status("churn")["environments"]}
    assert envs == {"staging": out["version"], "production": champion["version"]}
    import time

    time.sleep(1.1)  # past the 1 s cooldown
    again = run_policy("churn-retrain")
    assert again["status"] == "skipped" and "at most 1 retrains per 1d" in again["reason"]


def test_shadow_rollout(champion: dict[str, Any]) -> None:
    from keel.deployments.specs import get_deployment

    _registry_conf(champion["folder"])
    declare_policy(policy(champion, promotion={"production": "shadow"}))
    out = run_policy("churn-retrain")
    assert out["status"] == "rollout" and out["mode"] == "shadow", out
    spec = get_deployment("churn-live").spec
    assert spec.mode == "shadow" and spec.route("shadow").ref == str(out["version"])
    assert P.describe_policy("churn-retrain")["state"]["rollout"]["version"] == out["version"]
