"""Fixtures for the feature store: small churn-shaped data and the example definitions."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "churn" / "features.py"
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def make_churn_data(root: Path, customers: int = 50, days: int = 60, seed: int = 0, start: datetime = T0) -> dict[str, pd.DataFrame]:
    """data/customers.parquet, data/usage.parquet and labels, in the quickstart's shape."""
    rng = np.random.default_rng(seed)
    ids = np.arange(1, customers + 1, dtype=np.int64)
    prof = pd.DataFrame(
        {
            "customer_id": ids,
            "plan": rng.choice(["basic", "pro", "team"], customers),
            "region": rng.choice(["eu", "us", "apac"], customers),
            "tenure_months": rng.integers(1, 60, customers).astype(np.int64),
            "monthly_fee": rng.choice([9.0, 29.0, 99.0], customers),
            "event_timestamp": pd.Timestamp(start) + pd.to_timedelta(rng.integers(0, 5, customers), unit="D"),
        }
    )
    prof["created_timestamp"] = prof["event_timestamp"] + pd.Timedelta(hours=1)
    # a few customers (the last 5) have usage only in the first week: TTL expiries later on
    n = customers * days
    cid = np.repeat(ids, days)
    day = np.tile(np.arange(days), customers)
    keep = (cid <= customers - 5) | (day < 7)
    sessions = rng.integers(0, 10, n)
    usage = pd.DataFrame(
        {
            "customer_id": cid,
            "sessions": sessions.astype(np.int64),
            "minutes": np.round(sessions * rng.uniform(1, 30, n), 2),
            "support_tickets": rng.poisson(0.1, n).astype(np.int64),
            "payment_failures": rng.poisson(0.05, n).astype(np.int64),
            "event_timestamp": pd.Timestamp(start) + pd.to_timedelta(day, unit="D"),
        }
    )[keep].reset_index(drop=True)
    usage["created_timestamp"] = usage["event_timestamp"] + pd.to_timedelta(rng.integers(1, 48, len(usage)), unit="h")
    data = root / "data"
    data.mkdir(exist_ok=True)
    prof.to_parquet(data / "customers.parquet", index=False)
    usage.to_parquet(data / "usage.parquet", index=False)
    m = customers * 2
    labels = pd.DataFrame(
        {
            "customer_id": rng.integers(1, customers + 3, m).astype(np.int64),  # a few unknown customers
            "event_timestamp": pd.Timestamp(start) + pd.to_timedelta(rng.integers(0, (days + 40) * 24, m), unit="h"),
            "churned": rng.integers(0, 2, m).astype(bool),
            "discount": rng.choice([0.0, 0.1], m),
        }
    )
    return {"customers": prof, "usage": usage, "labels": labels}


@pytest.fixture
def churn_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, pd.DataFrame]]:
    """A project with the example churn definitions and generated data.

    The data is from early 2024 and the memory and SQLite online stores expire values
    past their TTL by the clock, so their clock stands at T0: nothing the tests write
    has expired in the store (lookups still apply the TTL as of their ``now_us``).
    Tests of expiry move it with :func:`set_store_clock`.
    """
    from keel.features import loader, online
    from keel.store import kv

    online.reset_context()
    set_store_clock(monkeypatch, T0)

    shutil.copy(EXAMPLE, project / "features.py")
    data = make_churn_data(project)
    yield project, data
    loader.clear_cache()
    online.reset_context()
    kv.reset_kv_stores()


def set_store_clock(monkeypatch: pytest.MonkeyPatch, at: datetime) -> None:
    """Stop the clock by which the memory and SQLite online stores expire values at ``at``."""
    from keel.store import kv

    monkeypatch.setattr(kv, "now_ms", lambda: int(at.timestamp() * 1000))


def now() -> datetime:
    return T0 + timedelta(days=70)


@pytest.fixture
def make_data() -> object:
    """The churn data generator, for tests that need other dates or sizes."""
    return make_churn_data
