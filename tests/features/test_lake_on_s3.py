"""Pushed rows kept in a lake on S3-compatible storage (moto) come back in training sets."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pandas as pd
import pytest

import keel
from keel.features.registry import apply


def test_push_to_a_lake_on_s3_feeds_training_sets(
    churn_project: tuple[Path, dict[str, pd.DataFrame]], s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, _ = churn_project
    monkeypatch.setenv("KEEL_LAKE_URI", f"s3://{s3_bucket}/lake")
    monkeypatch.setenv("KEEL_S3_ENDPOINT_URL", s3_endpoint)
    apply()
    pushed_at = datetime.now(UTC)
    rows = pd.DataFrame(
        {
            "customer_id": [7, 8],
            "sessions": [4, 5],
            "minutes": [10.0, 50.0],
            "support_tickets": [0, 0],
            "payment_failures": [1, 0],
            "event_timestamp": [pd.Timestamp(pushed_at)] * 2,
        }
    )
    res = keel.push("usage", rows, to="offline")
    assert res.rows == 2 and str(res.offline_path).startswith(f"s3://{s3_bucket}/lake/features/push/usage/part-")
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert len(keys) == 1 and keys[0].startswith("lake/features/push/usage/part-")
    assert not (project / ".keel" / "lake").exists()

    entities = pd.DataFrame({"customer_id": [8, 7], "event_timestamp": [pd.Timestamp(datetime.now(UTC))] * 2})
    train = keel.get_training_set(entities, ["usage:minutes_per_session"])
    assert train["minutes_per_session"].tolist() == [10.0, 2.5]
    # another machine (an empty cache) reads the same rows from the bucket
    shutil.rmtree(project / ".keel" / "cache")
    train = keel.get_training_set(entities, ["usage:minutes_per_session"])
    assert train["minutes_per_session"].tolist() == [10.0, 2.5]
