"""A suggested contract passes a fresh batch of the same distribution and fails a shifted one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from keel.contracts import loads_contract, validate
from keel.contracts.suggest import suggest


def draw(seed: int, n: int = 5000, *, shift: float = 0.0, nulls: float = 0.01, shares: tuple[float, ...] = (0.6, 0.3, 0.1)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    income = rng.lognormal(10 + shift, 0.5, n)
    income[rng.random(n) < nulls] = np.nan
    return pd.DataFrame(
        {
            "customer_id": rng.permutation(10 * n)[:n],
            "age": rng.integers(18, 90, n),
            "income": income,
            "score": rng.normal(0.5 + shift, 0.1, n),
            "plan": rng.choice(["basic", "plus", "pro"], n, p=list(shares)),
            "active": rng.random(n) < 0.8,
            "signup": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 300, n), unit="D"),
        }
    )


def test_suggested_contract_passes_same_distribution_and_fails_shift(project: Path, tmp_path: Path) -> None:
    contract = suggest(draw(0), name="customers")
    spec = contract.to_spec()
    assert spec["columns"]["customer_id"]["checks"] == ["unique"]
    assert spec["columns"]["age"]["type"] == "int" and spec["columns"]["age"]["nullable"] is False
    assert "nullable" not in spec["columns"]["income"]  # it had nulls
    assert contract.reference.startswith("snapshot:customers-")
    # the YAML it writes loads back into the same contract
    path = tmp_path / "customers.yaml"
    path.write_text(contract.to_yaml())
    reloaded = loads_contract(path.read_text(), str(path))
    assert reloaded.digest() == contract.digest()

    for seed in (1, 2, 3):
        fresh = validate(draw(seed), reloaded)
        assert fresh.passed and not fresh.warnings, fresh.summary()

    shifted = validate(draw(4, shift=0.3), reloaded)
    assert not shifted.passed
    assert {"income.psi", "income.ks", "score.psi", "score.ks", "score.mean_change"} <= {r.check_id for r in shifted.errors}

    mix = validate(draw(5, shares=(0.3, 0.3, 0.4)), reloaded)
    assert {r.check_id for r in mix.errors} == {"plan.category_share", "plan.psi"}

    nulls = validate(draw(6, nulls=0.2), reloaded)
    assert {"income.max_null_fraction", "income.null_rate_increase"} <= {r.check_id for r in nulls.errors}


def test_suggest_without_pinning_uses_allowed_values(project: Path) -> None:
    contract = suggest(draw(0), name="c", pin=False)
    plan = contract.columns["plan"]
    assert [c.kind for c in plan.checks] == ["allowed_values"]
    assert not contract.relative_checks
    assert validate(draw(1), contract, store=False).passed
