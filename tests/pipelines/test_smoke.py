"""Smoke runs: sampled data, shrunken params, a separate never-promotable namespace; keel ci."""

from __future__ import annotations

from pathlib import Path

import pytest

import keel
from keel.pipelines.smoke import run_ci, sample, write_github_workflow

SMOKY = '''
import numpy as np
import pandas as pd
import keel
from keel.pipelines import sample


@keel.step(sample=True)
def load(n: int) -> pd.DataFrame:
    return pd.DataFrame({"x": np.arange(n)})


@keel.step
def features(df: pd.DataFrame) -> pd.DataFrame:
    return sample(df, 50).assign(y=lambda d: d["x"] * 2)


@keel.step(shrink={"n_estimators": 3})
def train(df: pd.DataFrame, n_estimators: int = 300) -> dict:
    if {fail}:
        raise ValueError("training broke")
    return {"rows": len(df), "trees": n_estimators}


@keel.pipeline(experiment="churn")
def training(n: int = 1000):
    return train(features(load(n)))
'''


def test_smoke_run_samples_shrinks_and_lands_in_its_own_namespace(write_module) -> None:
    mod = write_module("smoky_mod", SMOKY.replace("{fail}", "False"))
    full = mod.training.run()
    assert full.output == {"rows": 1000, "trees": 300}
    smoke = mod.training.run(smoke=True)
    assert smoke.output == {"rows": 50, "trees": 3}
    assert smoke.cached == 0  # smoke and full runs never share cache entries
    info = keel.get_run(smoke.run_id)
    assert info.experiment == "churn-smoke" and info.tags["keel.smoke"] == "true"
    assert all(keel.get_run(s.run_id).tags["keel.smoke"] == "true" for s in smoke.steps.values())
    assert keel.get_run(full.run_id).experiment == "churn" and "keel.smoke" not in keel.get_run(full.run_id).tags
    assert len(smoke.load("load")) == 200  # a sample=True step's output is sampled


def test_sample_is_identity_outside_smoke_runs() -> None:
    data = list(range(1000))
    assert sample(data) is data


def test_ci_passes_and_fails_with_the_smoke_run(write_module) -> None:
    write_module("smoky_ok", SMOKY.replace("{fail}", "False"))
    ok = run_ci("smoky_ok:training")
    assert ok.ok and ok.smoke_ok and ok.run_id
    write_module("smoky_bad", SMOKY.replace("{fail}", "True"))
    bad = run_ci("smoky_bad:training")
    assert not bad.ok and "training broke" in (bad.smoke_error or "")


def test_ci_validates_attached_contracts(write_module, project: Path) -> None:
    pytest.importorskip("keel.contracts")
    write_module("smoky_ok2", SMOKY.replace("{fail}", "False"))
    (project / "contracts").mkdir()
    (project / "batch.csv").write_text("amount\n1\n-5\n")
    (project / "contracts" / "batch.csv.yaml").write_text("name: batch\ncolumns:\n  amount:\n    type: int\n    checks:\n      - min: 0\n")
    rep = run_ci("smoky_ok2:training")
    assert rep.smoke_ok
    assert [c["target"] for c in rep.contracts] == ["batch.csv"] and not rep.contracts[0]["passed"]
    assert not rep.ok


def test_github_workflow_runs_smoke_on_push_and_full_on_main(project: Path) -> None:
    path = write_github_workflow(project, "pipelines:training")
    text = path.read_text()
    assert path == project / ".github" / "workflows" / "keel.yml"
    assert "keel ci pipelines:training" in text and "github.ref == 'refs/heads/main'" in text
    assert "keel pipelines run pipelines:training" in text
    with pytest.raises(keel.KeelError, match="already exists"):
        write_github_workflow(project)


REGISTERING = '''
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
import keel
from keel.pipelines import sample


@keel.step(sample=True)
def load(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.normal(size=n)
    return pd.DataFrame({"x": x, "y": (x + rng.normal(scale=0.5, size=n) > 0).astype(int)})


@keel.step
def register(df: pd.DataFrame) -> dict:
    keel.log_model(LogisticRegression().fit(df[["x"]], df["y"]), input_example=df[["x"]].head(3))
    run = keel.active_run()
    version = keel.register_model(f"runs:/{run.id}/model", "smoky")
    moved = keel.promote("smoky", version.version, to="production", data=df, target="y")
    return {"version": version.version, "status": moved.status}


@keel.pipeline(experiment="smoky")
def training(n: int = 2000):
    return register(load(n))
'''


def test_smoke_run_checks_registration_and_gates_without_creating_versions(write_module) -> None:
    from keel import registry

    mod = write_module("smoky_reg", REGISTERING)
    full = mod.training.run()
    assert full.output == {"version": 1, "status": "applied"}
    rep = run_ci("smoky_reg:training")
    assert rep.ok, rep.smoke_error
    # the registration and the promotion were checked, but nothing was stored or moved
    assert [v.version for v in registry.list_versions("smoky")] == [1]
    assert registry.status("smoky")["environments"][-1]["version"] == 1
    assert len(rep.promotions) == 1
    assert rep.promotions[0].startswith("would promote smoky v2 -> production: ")
    assert "roc_auc" in rep.promotions[0] and "champion v1" in rep.promotions[0]
