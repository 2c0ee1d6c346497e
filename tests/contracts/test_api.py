"""enforce(): attached contracts, blocking failures, stored results and history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

import keel
from keel.contracts import enforce, load_report, register_target_resolver, resolve_data, validate
from keel.contracts.history import history
from keel.contracts.targets import unregister_target_resolver
from keel.errors import ConfigError, ContractViolation, NotFoundError

CONTRACT = """\
contract: payments
columns:
  id: {type: int, nullable: false}
  amount:
    type: float
    checks:
      - min: 0
      - max: 100
        severity: warn
checks:
  - row_count: {min: 3}
"""


def frame(amounts: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"id": np.arange(len(amounts)), "amount": np.asarray(amounts, dtype="float64")})


def test_enforce_with_conventional_file(project: Path) -> None:
    assert enforce("payments", frame([1, 2, 3]), stage="training_set") is None  # nothing attached
    (project / "contracts").mkdir()
    (project / "contracts" / "payments.yaml").write_text(CONTRACT)
    report = enforce("payments", frame([1, 2, 300]), stage="training_set", run_id="a" * 32)
    assert report is not None and report.passed and [w.check_id for w in report.warnings] == ["amount.max"]
    with pytest.raises(ContractViolation) as exc:
        enforce("payments", frame([1, -2, -3, 4]), stage="materialize")
    err = exc.value
    assert err.http_status == 422
    assert err.report.errors[0].check_id == "amount.min" and err.report.errors[0].failing_count == 2
    assert "amount.min" in str(err) and "keel contracts history payments" in str(err)
    # both results are stored and linked to their stage and run
    stored = load_report(report.validation_id)
    assert stored.run_id == "a" * 32 and stored.stage == "training_set"
    assert stored["amount.max"].status == "fail" and stored["amount.max"].observed == 300
    blocked = load_report(err.report.validation_id)
    assert blocked.stage == "materialize" and not blocked.passed
    assert sorted(blocked["amount.min"].sample) == [-3.0, -2.0]


def test_enforce_with_keel_yaml_mapping(project: Path) -> None:
    (project / "specs").mkdir()
    (project / "specs" / "pay.yaml").write_text(CONTRACT)
    (project / "specs" / "extra.yaml").write_text("contract: extra\nchecks:\n  - row_count: {max: 3}\n")
    with open(project / "keel.yaml", "a") as f:
        f.write("\ncontracts:\n  payments: [specs/pay.yaml, specs/extra.yaml]\n  broken: specs/missing.yaml\n")
    from keel import config

    config.reset()
    report = enforce("payments", frame([1, 2, 3]), stage="log_dataset")
    assert report is not None and {r.check_id for r in report.results} >= {"payments:amount.min", "extra:row_count"}
    with pytest.raises(ContractViolation, match=r"extra:row_count"):
        enforce("payments", frame([1, 2, 3, 4]), stage="log_dataset")
    with pytest.raises(ConfigError, match=r"specs/missing\.yaml"):
        enforce("broken", frame([1]), stage="log_dataset")


def test_history_shows_when_checks_started_failing(project: Path) -> None:
    (project / "contracts").mkdir()
    (project / "contracts" / "payments.yaml").write_text(CONTRACT)
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    batches = [[1, 2, 3], [1, 2, 3], [-1, 2, 3], [-1, 2, 300], [1, 2, 3]]
    for day, amounts in enumerate(batches):
        validate(frame(amounts), target="payments", now=t0 + timedelta(days=day))
    validations, checks = history("payments")
    assert [v["passed"] for v in validations] == [True, False, False, True, True]  # newest first
    by_id = {h.check_id: h for h in checks}
    assert by_id["amount.min"].statuses == ["pass", "pass", "fail", "fail", "pass"]
    assert by_id["amount.min"].first_failed == t0 + timedelta(days=2)
    assert by_id["amount.min"].failing_since is None and by_id["amount.min"].failures == 2
    assert by_id["amount.max"].first_failed == t0 + timedelta(days=3)
    validate(frame([-5, 2, 3]), target="payments", now=t0 + timedelta(days=5))
    validate(frame([-5, 2, 3]), target="payments", now=t0 + timedelta(days=6))
    _, checks = history("payments")
    assert checks[0].check_id == "amount.min" and checks[0].failing_since == t0 + timedelta(days=5)
    with pytest.raises(NotFoundError, match="Did you mean 'payments'"):
        history("payment")


def test_target_resolver_hook(project: Path, tmp_path: Path) -> None:
    df = frame([1, 2, 3])
    with pytest.raises(NotFoundError, match="neither a Parquet/CSV path nor a known source"):
        resolve_data("payments_source")

    def fs(name: str) -> pd.DataFrame | None:
        return df if name == "payments_source" else None

    register_target_resolver(fs)
    try:
        assert resolve_data("payments_source") is df
    finally:
        unregister_target_resolver(fs)
    df.to_parquet(tmp_path / "p.parquet")
    assert resolve_data(str(tmp_path / "p.parquet")) == str(tmp_path / "p.parquet")


def test_top_level_names(project: Path) -> None:
    assert keel.validate is validate
    assert keel.Contract.__name__ == "Contract"


def test_results_stored_in_postgres(pg_project: Path) -> None:
    (pg_project / "contracts").mkdir()
    (pg_project / "contracts" / "payments.yaml").write_text(CONTRACT)
    with pytest.raises(ContractViolation):
        enforce("payments", frame([-1, 2, 3]), stage="training_set")
    report = enforce("payments", frame([1, 2, 3]), stage="training_set")
    assert report is not None
    from keel.store.metadata import get_metadata_store
    from keel.store.schema.contracts import contract_results, contract_validations

    store = get_metadata_store()
    assert store.dialect == "postgresql"
    with store.read() as conn:
        n_val = conn.execute(sa.select(sa.func.count()).select_from(contract_validations)).scalar()
        failed = conn.execute(sa.select(contract_results.c.check_id).where(contract_results.c.status == "fail")).scalars().all()
    assert n_val == 2 and failed == ["amount.min"]
    validations, _ = history("payments")
    assert [v["passed"] for v in validations] == [True, False]
