"""keel validate and keel contracts suggest|history|show."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from keel.cli.main import app


def write(path: Path, seed: int, *, shift: float = 0.0, bad_ids: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    n = 3000
    ids = np.arange(n)
    if bad_ids:
        ids[:2] = 7
    pd.DataFrame({"id": ids, "amount": rng.normal(100 + shift, 10, n), "plan": rng.choice(["a", "b"], n)}).to_parquet(path)
    return path


def test_suggest_validate_history_show(project: Path) -> None:
    runner = CliRunner()
    good = write(project / "day1.parquet", 1)
    res = runner.invoke(app, ["contracts", "suggest", str(good), "-o", "contracts/orders.yaml"])
    assert res.exit_code == 0, res.output
    assert (project / "contracts" / "orders.yaml").is_file()
    again = runner.invoke(app, ["contracts", "suggest", str(good), "-o", "contracts/orders.yaml"])
    assert again.exit_code == 1 and "--force" in again.output

    # contracts/orders.yaml is attached to target "orders" by its name
    ok = runner.invoke(app, ["validate", str(write(project / "day2.parquet", 2)), "--target", "orders", "-c", "contracts/orders.yaml"])
    assert ok.exit_code == 0, ok.output
    assert "checks passed" in ok.output

    bad = runner.invoke(app, ["validate", str(write(project / "day3.parquet", 3, shift=20, bad_ids=True)), "-c", "contracts/orders.yaml", "--json"])
    assert bad.exit_code == 1
    report = json.loads(bad.stdout)
    failed = {r["check_id"] for r in report["results"] if r["status"] == "fail"}
    assert {"id.unique", "amount.psi", "amount.ks", "amount.mean_change"} <= failed
    unique = next(r for r in report["results"] if r["check_id"] == "id.unique")
    assert unique["failing_count"] == 3 and unique["sample"] == ["7"]

    hist = runner.invoke(app, ["contracts", "history", "orders", "--json"])
    assert hist.exit_code == 0, hist.output
    data = json.loads(hist.stdout)
    assert [v["passed"] for v in data["validations"]] == [False, True]
    started = {c["check_id"]: c["failing_since"] for c in data["checks"] if c["status"] == "fail"}
    assert "id.unique" in started and started["id.unique"] == data["validations"][0]["created"]
    table = runner.invoke(app, ["contracts", "history", "orders"])
    assert table.exit_code == 0 and "blocked" in table.output

    shown = runner.invoke(app, ["contracts", "show", "contracts/orders.yaml", "--json"])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["contract"] == "orders"


def test_validate_errors_are_one_line(project: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["validate", "nowhere.parquet"])
    assert res.exit_code == 1 and "File 'nowhere.parquet' does not exist" in res.output
    write(project / "x.parquet", 0)
    res = runner.invoke(app, ["validate", "x.parquet"])
    assert res.exit_code == 1 and "No contract is attached" in res.output
    (project / "bad.yaml").write_text("columns:\n  id:\n    checks:\n      - uniqe\n")
    res = runner.invoke(app, ["validate", "x.parquet", "-c", "bad.yaml"])
    assert res.exit_code == 1 and "bad.yaml:4" in res.output and "Did you mean 'unique'" in res.output
    res = runner.invoke(app, ["contracts", "show", "bad.yaml"])
    assert res.exit_code == 1 and "bad.yaml:4" in res.output


def test_validate_attached_target_through_a_resolver(project: Path) -> None:
    from keel.contracts import register_target_resolver
    from keel.contracts.targets import unregister_target_resolver

    (project / "contracts").mkdir()
    (project / "contracts" / "payments.yaml").write_text("contract: payments\ncolumns:\n  amount:\n    type: float\n    checks: [positive]\n")
    frames = {"payments": pd.DataFrame({"amount": [1.0, 2.0, -3.0]})}
    register_target_resolver(frames.get)
    try:
        res = CliRunner().invoke(app, ["validate", "payments", "--json"])
    finally:
        unregister_target_resolver(frames.get)
    assert res.exit_code == 1, res.output
    report = json.loads(res.stdout)
    assert report["target"] == "payments" and report["errors"] == 1
    assert next(r for r in report["results"] if r["check_id"] == "amount.positive")["sample"] == [-3.0]


def test_suggest_then_keel_ci_finds_the_data_by_the_contract(project: Path) -> None:
    runner = CliRunner()
    (project / "data").mkdir()
    write(project / "data" / "orders.parquet", 1)
    res = runner.invoke(app, ["contracts", "suggest", "data/orders.parquet", "-o", "contracts/orders.yaml"])
    assert res.exit_code == 0, res.output
    assert "data: data/orders.parquet" in (project / "contracts" / "orders.yaml").read_text()
    ci = runner.invoke(app, ["ci"])
    assert ci.exit_code == 0, ci.output
    assert "contract orders: passed" in ci.output
    by_name = runner.invoke(app, ["validate", "orders"])
    assert by_name.exit_code == 0 and "checks passed" in by_name.output
    # bad data at that path fails CI
    write(project / "data" / "orders.parquet", 3, bad_ids=True)
    assert runner.invoke(app, ["ci"]).exit_code == 1


def test_a_contract_without_data_says_so_and_a_missing_file_says_it_is_missing(project: Path) -> None:
    runner = CliRunner()
    write(project / "orders.parquet", 1)
    assert runner.invoke(app, ["contracts", "suggest", "orders.parquet", "-o", "contracts/orders.yaml"]).exit_code == 0
    text = (project / "contracts" / "orders.yaml").read_text()
    (project / "contracts" / "orders.yaml").write_text("\n".join(line for line in text.splitlines() if not line.startswith("data:")))
    res = runner.invoke(app, ["validate", "orders"])
    assert res.exit_code == 1
    assert "has a contract (contracts/orders.yaml), but keel does not know where its data is" in res.output
    assert "Did you mean" not in res.output
    missing = runner.invoke(app, ["contracts", "suggest", "data/orders.parquet", "-o", "contracts/o2.yaml"])
    assert missing.exit_code == 1 and "File 'data/orders.parquet' does not exist" in missing.output
    assert not (project / "contracts" / "o2.yaml").exists()
