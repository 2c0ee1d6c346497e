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
        assert first.steps == 7 and first.cached_steps == 0
        assert first.output["promotion"] == "applied"
        status = registry.status("churn")
        production = next(e for e in status["environments"] if e["environment"] == "production")
        assert production["version"] == first.output["version"]
        # the online path scored the two known customers, and the unknown one came back missing
        assert [s["risk"] is not None for s in first.served] == [True, True, False]
        assert "missing" in first.served[2]["status"]
        # keel serve answered on the three protocols with features fetched by customer id, and logged it
        assert [h["endpoint"] for h in first.http] == ["/v1/models/churn/predict", "/invocations", "/v2/models/churn/infer"]
        assert all(h["version"] == str(first.output["version"]) for h in first.http)
        assert first.http[0]["answer"]["missing_features"][0] == [] and "plan" in first.http[0]["answer"]["missing_features"][1]
        assert len(keel.predictions("churn")) == 4
        # the bad batch was blocked by the contract, and its pipeline run is recorded as failed
        assert first.blocked_run is not None and keel.get_run(first.blocked_run).status == "failed"
        assert any("sessions.min" in line for line in first.blocked_checks)
        # the training set's lineage reached the model version
        lineage = registry.get_version("churn", first.output["version"]).lineage if hasattr(registry, "get_version") else {}
        if lineage:
            assert lineage.get("feature_service") == "churn_v1"

        second = run_quickstart(tmp_path / "qs", Console(file=out, width=120), n_customers=600)
        assert second.cached_steps == second.steps == 7
        assert second.output == first.output  # nothing new registered
        assert "7 of 7 steps from cache" in out.getvalue()
    finally:
        import sys

        sys.modules.pop("pipelines", None)
        metadata.reset_stores()
        config.reset()
