"""The quickstart's feature definitions (examples/churn/features.py), end to end:
apply -> training set -> materialize -> online -> skew."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import keel
from keel.features import check_skew
from keel.features.registry import apply


def test_whole_flow_with_the_example_definitions(churn_project: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    _, data = churn_project
    assert apply().definitions_version == 1

    labels = data["labels"]
    train = keel.get_training_set(labels, "churn_v1")
    assert len(train) == len(labels)
    assert train["customer_id"].tolist() == labels["customer_id"].tolist()
    meta = train.attrs["keel"]
    assert meta["feature_service"] == "churn_v1" and meta["definitions_version"] == 1
    assert meta["features"][-2:] == ["fee_per_minute", "discounted_fee"]
    assert len(meta["fingerprint"]) == 64

    # values: check one row by hand against the raw data
    usage, prof = data["usage"], data["customers"]
    row = train[train["sessions"].notna() & (train["sessions"] > 0)].iloc[0]
    seen = usage[
        (usage.customer_id == row.customer_id)
        & (usage.event_timestamp <= row.event_timestamp)
        & (usage.created_timestamp <= row.event_timestamp)
    ].sort_values(["event_timestamp", "created_timestamp"]).iloc[-1]
    assert row.minutes == seen.minutes and row.minutes_per_session == seen.minutes / seen.sessions
    fee = prof.set_index("customer_id").loc[row.customer_id, "monthly_fee"]
    assert row.fee_per_minute == fee / seen.minutes
    assert row.discounted_fee == fee * (1 - row.discount)
    unknown = train[train.customer_id > 50]
    assert unknown["plan"].isna().all() and unknown["sessions"].isna().all()

    done = keel.materialize()
    assert done.keys_written == 100 and done.rows_read == len(usage) + len(prof)
    assert keel.materialize().keys_written == 0  # idempotent

    online = keel.get_online_features("churn_v1", [{"customer_id": 3, "discount": 0.5}, {"customer_id": 999, "discount": 0.0}])
    values = online.to_dict()
    assert values["plan"][0] == prof.set_index("customer_id").loc[3, "plan"]
    assert values["discounted_fee"][0] == prof.set_index("customer_id").loc[3, "monthly_fee"] * 0.5
    assert online.status["plan"] == ["present", "missing"]
    # usage data ends long ago: older than the 30-day TTL, so null with status outside_ttl
    assert online.status["sessions"] == ["outside_ttl", "missing"] and values["sessions"] == [None, None]

    report = check_skew("churn_v1", sample=20)
    assert report.ok and report.sample == 20
    assert {f.feature for f in report.features} >= {"plan", "minutes_per_session"}
