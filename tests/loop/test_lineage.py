"""keel lineage: a prediction back to its deployment, version, run, features, sources and code; and forward, who uses a view."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from keel.errors import NotFoundError
from keel.loop.lineage import feature_usage, model_lineage, prediction_lineage, render_image


@pytest.fixture
def fs_model(project: Path) -> Any:
    from keel.features import loader, online
    from tests.serving.conftest import make_feature_model

    online.reset_context()
    version = make_feature_model(project)
    yield version
    from keel.store.prediction_log import close_prediction_log

    close_prediction_log()
    loader.clear_cache()
    online.reset_context()


def kinds(node: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for n in node.walk():
        out.setdefault(n.kind, []).append(n.label)
    return out


def test_model_lineage_reaches_features_sources_code_and_packages(fs_model: Any) -> None:
    from keel.deployments.specs import build_spec, deploy

    deploy(build_spec("churn-live", model="churn_fs@live"))
    tree = model_lineage("churn_fs/1")
    k = kinds(tree)
    assert k["model_version"] == ["churn_fs v1"] and len(k["run"]) == 1
    assert any(label.startswith("churn_v1") for label in k["feature_service"])
    assert {label.split(" v")[0] for label in k["feature_view"]} >= {"usage", "profile"}
    assert {label.split(" v")[0] for label in k["source"]} >= {"usage", "customers"}
    assert k["code"] and k["packages"] and any("train" in d for d in k["dataset"])
    assert k["deployment"] == ["deployment churn-live (champion, 100%)"]
    assert json.loads(json.dumps(tree.to_dict()))["kind"] == "model_version"


def test_prediction_lineage_starts_at_the_logged_request(fs_model: Any) -> None:
    from keel.serving.predictor import Predictor
    from keel.store.prediction_log import active_log

    p = Predictor("models:/churn_fs@live")
    p.predict([{"customer_id": 3, "discount": 0.1}], request_id="req-lineage-1")
    active_log().flush()  # type: ignore[union-attr]
    tree = prediction_lineage("req-lineage-1")
    assert tree.kind == "prediction" and tree.detail["rows"][0]["version"] == 1
    assert "churn_fs v1" in kinds(tree)["model_version"]
    with pytest.raises(NotFoundError, match="No logged prediction"):
        prediction_lineage("nope")


def test_feature_usage_lists_services_and_models(fs_model: Any, tmp_path: Path) -> None:
    tree = feature_usage("usage")
    k = kinds(tree)
    assert any(s.startswith("churn_v1") for s in k["feature_service"]) and "churn_fs v1" in k["model_version"]
    src = feature_usage("customers")  # a source: the views reading it, then their users
    assert "churn_fs v1" in kinds(src)["model_version"]
    with pytest.raises(NotFoundError, match="Did you mean 'usage'"):
        feature_usage("usag")
    svg = render_image(tree, tmp_path / "usage.svg")
    assert svg.read_text().lstrip().startswith("<?xml") and "churn_fs v1" in svg.read_text()


def test_cli_lineage(fs_model: Any, tmp_path: Path) -> None:
    from keel.cli.main import app

    r = CliRunner()
    out = r.invoke(app, ["lineage", "model", "churn_fs@live", "-o", str(tmp_path / "m.png")])
    assert out.exit_code == 0, out.output
    assert "churn_fs v1" in out.output and (tmp_path / "m.png").stat().st_size > 1000
    out = r.invoke(app, ["lineage", "feature", "usage", "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["kind"] == "feature_view"
    bad = r.invoke(app, ["lineage", "model", "churn_fs"])
    assert bad.exit_code == 1 and "NAME/VERSION" in bad.output


def test_diagnose_shows_changes_log_health_and_findings(fs_model: Any, tmp_path: Path) -> None:
    from keel.cli.main import app
    from keel.deployments.specs import build_spec, deploy
    from keel.loop.diagnose import diagnose
    from keel.serving.predictor import Predictor
    from keel.store.prediction_log import active_log

    deploy(build_spec("churn-live", model="churn_fs@live"), reason="first")
    p = Predictor("models:/churn_fs@live")
    for i in range(20):
        p.predict([{"customer_id": i % 7, "discount": 0.1}], request_id=f"d{i}")
    active_log().flush()  # type: ignore[union-attr]
    d = diagnose("churn_fs@live")
    assert d["version"] == 1 and d["prediction_log"]["rows"] == 20 and d["prediction_log"]["versions"][0]["version"] == 1
    assert any(c["what"] == "deployment" for c in d["changes"]) and any(c["what"] == "registry" for c in d["changes"])
    assert any("no monitor" in f for f in d["findings"])
    out = CliRunner().invoke(app, ["models", "diagnose", "churn_fs@live", "-o", str(tmp_path / "d.html")])
    assert out.exit_code == 0, out.output
    page = (tmp_path / "d.html").read_text()
    assert "Findings" in page and "data:image/png;base64," in page
    bad = CliRunner().invoke(app, ["models", "diagnose", "nope@live"])
    assert bad.exit_code == 1 and "Traceback" not in bad.output


def test_diagnose_drift_and_performance_sql_match_the_series(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sections read monitor results in SQL; they say what the pandas series of keel.monitoring.results says."""
    from types import SimpleNamespace

    from keel.loop import diagnose as D
    from keel.monitoring.results import series
    from keel.store.metadata import get_metadata_store
    from keel.store.schema.monitoring import monitor_results

    rows = []
    for w, end in enumerate((1_700_000_000_000, 1_700_086_400_000, 1_700_172_800_123)):
        for i, col in enumerate(("age", "plan", "spend", "tenure")):
            value = None if (w, i) == (2, 3) else 0.05 * (i + 1) * (w + 1)
            rows.append({"run_id": w, "monitor": "mon", "version": 1 + w % 2, "window_end_ms": end, "kind": "drift", "column": col,
                         "statistic": "psi", "value": value, "threshold": None if i == 2 else 0.2, "level": "alert" if i == 1 else "ok"})
        rows.append({"run_id": w, "monitor": "mon", "version": None if w == 0 else 2, "window_end_ms": end, "kind": "performance",
                     "column": "", "statistic": "roc_auc", "value": 0.8 - w / 10, "threshold": None, "level": "ok"})
        rows.append({"run_id": w, "monitor": "mon", "version": 2, "window_end_ms": end, "kind": "estimated", "column": "",
                     "statistic": "roc_auc", "value": float("nan") if w == 1 else 0.7, "threshold": None, "level": "ok"})
    with get_metadata_store().write() as conn:
        conn.execute(monitor_results.insert(), rows)
    monkeypatch.setattr(D, "_monitors", lambda mv: [SimpleNamespace(name="mon")])
    mv = SimpleNamespace(model="m")

    def drift_by_pandas(top: int) -> list[dict[str, Any]]:
        s = series("mon", kind="drift")
        last = s[s["window_end"] == s["window_end"].max()]
        last = last.assign(ratio=last["value"] / last["threshold"].where(last["threshold"] > 0))
        out = [{"monitor": "mon", "column": r["column"], "statistic": r["statistic"], "value": float(r["value"]),
                "threshold": None if r["threshold"] != r["threshold"] else float(r["threshold"]), "level": r["level"],
                "window_end": r["window_end"].isoformat()} for _, r in last.sort_values("ratio", ascending=False).head(top).iterrows()]
        out.sort(key=lambda d: (d["value"] / d["threshold"]) if d["threshold"] else 0.0, reverse=True)
        return out[:top]

    def same(a: Any, b: Any) -> bool:
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # NaN == NaN here

    for top in (2, 5):
        assert same(D._drift(mv, top), drift_by_pandas(top))
    perf = [{"monitor": "mon", "kind": kind, "metric": r["statistic"], "value": None if r["value"] != r["value"] else float(r["value"]),
             "version": None if r["version"] != r["version"] else int(r["version"]), "window_end": r["window_end"].isoformat()}
            for kind in ("performance", "estimated") for _, r in series("mon", kind=kind).iterrows()]
    assert same(D._performance(mv), perf) and len(perf) == 6
