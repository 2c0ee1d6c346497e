"""A realistic, generated customer-churn data set (nothing is downloaded).

Customers have a plan, region, tenure and monthly fee; every day each one has
usage (sessions, minutes, support tickets, payment failures). Whether a
customer churns at a label date depends on the usage of the weeks before it
(falling minutes, tickets, failed payments), on tenure and on the plan, plus
noise, so a model has real signal to find and the features matter.
Each row also has a created (ingested) time a little after its event time, as
a real pipeline would.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

PLANS = ["basic", "standard", "premium"]
REGIONS = ["north", "south", "east", "west"]


def _start(days: int) -> datetime:
    """The first day of data: ``days`` before today (UTC midnight), so the newest day is yesterday.

    The newest usage is fresh, and at any hour of the day every row of it has arrived (a row
    arrives up to 3 hours after its day starts) and every label (noon of its day) is in the past:
    nothing the quickstart trains, serves or retrains on depends on the time it runs.
    """
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days)


@dataclass
class ChurnData:
    customers: Any  # pandas DataFrame
    usage: Any
    labels: Any


def generate(n_customers: int = 3_000, days: int = 120, seed: int = 7) -> ChurnData:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    start = _start(days)
    ids = np.arange(1, n_customers + 1, dtype="int64")
    plan = rng.choice(PLANS, n_customers, p=[0.5, 0.35, 0.15])
    region = rng.choice(REGIONS, n_customers)
    tenure = rng.integers(1, 72, n_customers)
    fee = np.select([plan == "basic", plan == "standard"], [19.0, 39.0], 69.0) + rng.normal(0, 2, n_customers).round(2)
    signup = start - pd.to_timedelta(tenure * 30, unit="D")
    customers = pd.DataFrame(
        {
            "customer_id": ids,
            "plan": plan,
            "region": region,
            "tenure_months": tenure.astype("int64"),
            "monthly_fee": fee,
            "event_timestamp": signup,
            "created_timestamp": signup + pd.Timedelta(hours=1),
        }
    )

    # latent "unhappiness" drifting over time drives both usage and churn
    base_minutes = rng.gamma(4.0, 25.0, n_customers)
    drift = rng.normal(0, 0.012, n_customers) - 0.004 * (tenure < 12)
    day = np.arange(days)
    trend = np.clip(1 + np.outer(drift, day), 0.05, None)  # customers x days
    sessions = rng.poisson(np.clip(3 * trend, 0.1, None))
    minutes = np.round(sessions * rng.gamma(2.0, np.repeat(base_minutes[:, None] / 6, days, axis=1)), 1)
    tickets = rng.poisson(np.clip(0.03 + 0.15 * (1 - trend), 0.01, None))
    failures = rng.poisson(0.01 + 0.04 * (plan[:, None] == "basic") * np.ones((1, days)))
    ts = pd.Timestamp(start) + pd.to_timedelta(np.tile(day, n_customers), unit="D")
    usage = pd.DataFrame(
        {
            "customer_id": np.repeat(ids, days),
            "sessions": sessions.ravel().astype("int64"),
            "minutes": minutes.ravel(),
            "support_tickets": tickets.ravel().astype("int64"),
            "payment_failures": failures.ravel().astype("int64"),
            "event_timestamp": ts,
        }
    )
    usage["created_timestamp"] = usage["event_timestamp"] + pd.to_timedelta(rng.integers(1, 180, len(usage)), unit="min")

    # two label dates per customer, in the second half of the window
    label_day = rng.integers(days // 2, days, (n_customers, 2))
    recent = [trend[np.arange(n_customers), np.clip(label_day[:, k] - 7, 0, days - 1)] for k in range(2)]
    rows = []
    idx = np.arange(n_customers)
    t_cum = np.concatenate([np.zeros((n_customers, 1)), tickets.cumsum(axis=1)], axis=1)
    f_cum = np.concatenate([np.zeros((n_customers, 1)), failures.cumsum(axis=1)], axis=1)
    for k in range(2):
        d = label_day[:, k]
        t_sum = t_cum[idx, d] - t_cum[idx, np.maximum(0, d - 30)]  # the 30 days before the label
        f_sum = f_cum[idx, d] - f_cum[idx, np.maximum(0, d - 30)]
        logit = -2.6 - 2.5 * (recent[k] - 1) + 0.5 * t_sum + 0.8 * f_sum - 0.02 * tenure + 0.4 * (plan == "basic") + rng.normal(0, 0.5, n_customers)
        churned = rng.random(n_customers) < 1 / (1 + np.exp(-logit))
        rows.append(
            pd.DataFrame(
                {
                    "customer_id": ids,
                    "event_timestamp": pd.Timestamp(start) + pd.to_timedelta(d, unit="D") + pd.Timedelta(hours=12),
                    "churned": churned.astype("int64"),
                }
            )
        )
    labels = pd.concat(rows, ignore_index=True).sort_values(["event_timestamp", "customer_id"], ignore_index=True)
    return ChurnData(customers, usage, labels)


def bad_batch(usage: Any, days: int = 7, seed: int = 11) -> Any:
    """The last ``days`` of usage as a new batch that broke upstream: minutes arrive in hours,
    a third of them null, and sessions negative."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    batch = usage[usage["event_timestamp"] > usage["event_timestamp"].max() - pd.Timedelta(days=days)].copy()
    batch["minutes"] = (batch["minutes"] / 60).round(2)
    batch.loc[rng.random(len(batch)) < 0.33, "minutes"] = np.nan
    batch["sessions"] = -batch["sessions"]
    return batch


def write(data: ChurnData, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"{name}.parquet" for name in ("customers", "usage", "labels")}
    for name, path in paths.items():
        tmp = path.with_suffix(".tmp")
        getattr(data, name).to_parquet(tmp, index=False)
        tmp.replace(path)
    return paths
