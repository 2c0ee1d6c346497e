"""The README's first command, end to end: `keel quickstart`, then again from cache."""

import io
import os
from pathlib import Path

import pytest
from rich.console import Console

import keel


@pytest.mark.slow
def test_quickstart_end_to_end_then_from_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from keel import config, registry
    from keel.loop.policies import history as policy_history
    from keel.quickstart.run import run_quickstart
    from keel.store import metadata

    for key in list(os.environ):
        if key.startswith("KEEL_") and key != "KEEL_REQUIRE_SERVICES":
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "qs"))
    out = io.StringIO()
    try:
        first = run_quickstart(tmp_path / "qs", Console(file=out, width=120), n_customers=600)
        assert first.steps == 6 and first.cached_steps == 0  # the 30-day aggregates are definitions, not a step
        assert first.output["promotion"] == "applied"
        # the project's default experiment is the one its runs go to
        assert "experiment: churn" in (tmp_path / "qs" / "keel.yaml").read_text()
        assert len(keel.search_runs(filter="tags.`keel.kind` = 'trial'")) == 12
        # the gate table of the promotion: gate, metric, threshold, champion, result
        text = out.getvalue()
        assert "Promotion gates: churn v1 -> production" in text and "│ roc_auc >= champion - 0.01" in text  # the project's gate policy
        assert first.gates is not None and first.gates["passed"] and first.keys_materialized > 0
        status = registry.status("churn")
        production = next(e for e in status["environments"] if e["environment"] == "production")
        assert production["version"] == first.output["version"] + 1, first.loop  # the loop stage promoted the retrained version
        # the online path scored the two known customers, and the unknown one came back missing
        assert [s["risk"] is not None for s in first.served] == [True, True, False]
        assert "missing" in first.served[2]["status"]
        # keel serve answered on the three protocols with features fetched by customer id, and logged it
        assert [h["endpoint"] for h in first.http] == ["/v1/models/churn/predict", "/invocations", "/v2/models/churn/infer"]
        assert all(h["version"] == str(first.output["version"]) for h in first.http)
        assert first.http[0]["answer"]["missing_features"][0] == [] and "plan" in first.http[0]["answer"]["missing_features"][1]
        logged = keel.predictions("churn")
        assert (~logged["batch_id"].isin(["quickstart-replay", "quickstart-loop"])).sum() == 4
        # monitoring: the production version's baseline, the monitor, yesterday clean and today exactly the faulty feature flagged
        mon = first.monitoring
        assert mon["baseline_built"] and mon["version"] == first.output["version"] and mon["replayed"] == 1200
        yesterday, today = mon["runs"]
        inputs = {c["column"] for c in today["columns"]} - {"prediction", "score"}
        assert not set(yesterday["drifted"]) & inputs and set(today["drifted"]) & inputs == {"minutes_30d"}
        assert today["alerts"] and "minutes_30d: mean" in today["alerts"][0] and "top segments: plan = basic" in today["alerts"][0]
        assert Path(mon["report"]).read_text().startswith("<!doctype html>")
        # the bad batch was blocked by the contract, and its pipeline run is recorded as failed
        assert first.blocked_run is not None and keel.get_run(first.blocked_run).status == "failed"
        assert any("sessions.min" in line for line in first.blocked_checks)
        # the loop: the shift's alert fired the retraining policy through the scheduler, the retrained version passed its gates,
        # went out as the shadow of churn-live beside churn@production, then (the shadow's comparison passed) as a canary at
        # 50 % sticky by customer, and was promoted once the canary's comparison passed
        loop = first.loop
        new = first.output["version"] + 1
        assert loop["alert"] and loop["alert"].startswith("minutes_30d: mean")
        assert [(e["action"], e["outcome"]) for e in loop["events"]] == [
            ("trigger", "accepted"), ("pipeline", "started"), ("pipeline", "finished"), ("gates", "passed"), ("shadow", "started")]
        # every customer replayed through the deployment's router: the champion answered all of them, the shadow scored the same
        # rows under the same request ids off the request path, the labels came back, and the comparison paired them
        shadow = loop["shadow"]
        assert shadow["answered"] == {"champion": 600} and shadow["rows"] == 600 and shadow["labelled"] == 600
        assert shadow["shadow_scored"] == shadow["requests"] and shadow["shadow_dropped"] == shadow["shadow_failed"] == 0, shadow
        c = shadow["comparison"]
        assert c["mode"] == "shadow" and c["revision"] == 2  # revision 1: churn-live sticky by customer, before the rollout
        assert {r: (v["versions"], v["requests"], v["labelled"]) for r, v in c["routes"].items()} == {
            "champion": ([first.output["version"]], 600, 600), "shadow": ([new], 600, 600)}
        assert c["shadow"]["paired_requests"] == 600 and 0 <= c["shadow"]["agreement"] <= 1 and "score_difference" in c["shadow"]
        q = c["quality"]
        assert q["paired"] and q["labelled"] == 600 and q["metric"] == "roc_auc" and q["low"] <= q["difference"] <= q["high"]
        assert c["recommendation"] == "promote" and shadow["judged"]["comparison"] == q  # the policy judged the same comparison
        assert shadow["judged"]["status"] == "advanced" and shadow["judged"]["stage"] == "canary"
        text = out.getvalue()
        assert "keel deploy compare churn-live (revision 2, shadow" in text and "│ shadow   │ churn/2 │ shadow │" in text
        assert f"paired on 600 requests: agreement {c['shadow']['agreement']:.1%}" in text
        assert f"quality (paired, 600 labelled): roc_auc champion {q['champion']:.4f}, shadow {q['challenger']:.4f}" in text
        assert "recommendation: promote" in text
        steps = [s["step"] for s in loop["steps"]]
        judged = next(s for s in steps if s.startswith("the policy judged the shadow: roc_auc shadow"))
        assert judged.endswith("→ advanced: v2 is now the canary at 50 % (revision 3)"), steps
        # the canary: every customer again, each answered by the model it sticks to; its comparison reads only its own stage's rows
        canary = loop["canary"]
        assert set(canary["answered"]) == {"champion", "canary"} and sum(canary["answered"].values()) == 600 and canary["unstuck"] == 0
        assert canary["rows"] == canary["labelled"] == 600 and canary["shadow_scored"] == 0
        cc = canary["comparison"]
        assert cc["mode"] == "canary" and cc["revision"] == 3
        assert {r: (v["versions"], v["requests"], v["labelled"]) for r, v in cc["routes"].items()} == {
            "champion": ([first.output["version"]], canary["answered"]["champion"], canary["answered"]["champion"]),
            "canary": ([new], canary["answered"]["canary"], canary["answered"]["canary"])}
        cq = cc["quality"]
        assert not cq["paired"] and cq["labelled"] == canary["answered"] and cc["recommendation"] == "promote"
        assert "keel deploy compare churn-live (revision 3, canary, since" in text
        assert f"quality (unpaired): roc_auc champion {cq['champion']:.4f}, canary {cq['challenger']:.4f}" in text
        assert canary["judged"]["comparison"] == cq
        assert any(s.startswith("the policy judged the canary: roc_auc canary") and s.endswith("→ promoted") for s in steps), steps
        assert any("sticky by customer_id): " in s and "every customer answered by the model it sticks to" in s for s in steps), steps
        assert loop["judged"]["status"] == "promoted" and loop["judged"]["stage"] == "canary"
        assert loop["after"] == new and loop["before"] == first.output["version"]
        rollout = [(e["action"], e["outcome"]) for e in reversed(policy_history("churn-retrain")) if e["action"] in ("shadow", "canary", "rollout")]
        assert rollout == [("shadow", "started"), ("rollout", "advanced"), ("canary", "started"), ("rollout", "promoted")]
        assert registry.get_version("churn", "production").version == new
        assert 0 < loop["overhead_s"] <= loop["total_s"]  # measured and printed (everything but training and the replayed traffic), never a pass/fail timing
        cause = keel.get_run(registry.get_version("churn", new).run_id).tags
        assert "keel.retraining.cause" in cause or cause.get("keel.pipeline.run")
        assert "The loop: churn-daily alert → churn-retrain → churn v2 in production" in out.getvalue()
        from keel.loop.diagnose import diagnose
        from keel.loop.lineage import model_lineage

        assert model_lineage(f"churn/{new}").to_dict()
        assert diagnose("churn@production")
        # the training set's lineage reached the model version
        lineage = registry.get_version("churn", first.output["version"]).lineage if hasattr(registry, "get_version") else {}
        if lineage:
            assert lineage.get("feature_service") == "churn_v1"

        second = run_quickstart(tmp_path / "qs", Console(file=out, width=120), n_customers=600)
        assert second.cached_steps == second.steps == 6
        assert second.output == first.output  # nothing new registered
        assert "6 of 6 steps from cache" in out.getvalue()
        assert second.keys_materialized == 0 and "Online store: already up to date" in out.getvalue()
        assert second.gates == first.gates  # the cached rerun shows the same promotion's gates
        assert not second.monitoring["baseline_built"] and second.monitoring["runs"][1]["drifted"] == today["drifted"]
        # the replay rewrote its parts: one replay per version in the log, not two (the first run's by v1, the rerun's by
        # the version the loop promoted), whatever the hour
        logged = keel.predictions("churn")
        replays = logged[logged["batch_id"] == "quickstart-replay"].groupby("version").size().to_dict()
        assert replays == {first.output["version"]: 1200, new: 1200}
        if second.monitoring["runs"][1]["window_end"] == today["window_end"]:
            # both runs in one hour: the rerun's window holds the two replays and nothing else (across an hour boundary it
            # also holds the first run's loop traffic of the hour before, which is real traffic of that window)
            assert second.monitoring["runs"][1]["rows"] == 2 * today["rows"]
        # the rerun's alert finds the policy in its cooldown: recorded as skipped, nothing retrained
        assert [(e["action"], e["outcome"]) for e in second.loop["events"]] == [("trigger", "skipped")]
        assert second.loop["after"] == new and [v.version for v in registry.list_versions("churn")] == [1, new]

        # `keel ci pipelines:training` on the quickstart project: the smoke run passes, checks the
        # registration and the gates, and stores no version that could never be promoted
        from keel.pipelines.smoke import run_ci

        rep = run_ci("pipelines:training")
        assert rep.ok, rep.smoke_error or rep.contracts
        assert len(rep.promotions) == 1 and rep.promotions[0].startswith(f"would promote churn v{new + 1} -> production: ")
        assert [v.version for v in registry.list_versions("churn")] == [first.output["version"], new]
    finally:
        import sys

        sys.modules.pop("pipelines", None)
        metadata.reset_stores()
        config.reset()


def test_quickstart_without_its_extra_stops_in_one_line_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from keel.errors import DependencyError
    from keel.quickstart.run import run_quickstart

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lightgbm" else real(name, *a))
    with pytest.raises(DependencyError) as exc:
        run_quickstart(tmp_path / "qs", Console(file=io.StringIO()))
    assert "'lightgbm'" in str(exc.value) and "pip install 'keel[quickstart]'" in str(exc.value)
    assert "\n" not in str(exc.value) and not (tmp_path / "qs").exists()


def test_text_keeps_whole_lines_without_a_terminal_and_wraps_on_one() -> None:
    from keel.cli._common import _Console

    line = "✓ Run pipelines:training (contract → features → training set → tuning → registry) (9.3s) " * 2
    piped = _Console(file=io.StringIO(), width=80)
    piped.print(line)
    assert piped.file.getvalue().count("\n") == 1  # one line, for the log viewer to wrap
    tty = _Console(file=io.StringIO(), width=80, force_terminal=True)
    tty.print(line)
    assert tty.file.getvalue().count("\n") > 1
    # a tree's long labels wrap inside the width instead of being cut off
    from rich.tree import Tree

    tree = Tree("training run 1598e1c27d924840a8d6096483ed0370 (pipelines:training, smoke; started by ci)")
    tree.add("validate_usage cached 0.00 s cache hit /tmp/some/long/project/folder/keel-quickstart/pipelines.py:24")
    piped = _Console(file=io.StringIO(), width=80)
    piped.print(tree)
    assert "started by ci" in piped.file.getvalue() and "pipelines.py:24" in piped.file.getvalue()
