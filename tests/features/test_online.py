"""Online retrieval: statuses, ages, the same TTL as offline, one round trip to Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from keel.errors import ValidationError
from keel.features import get_online_features, materialize
from keel.features.loader import load_definitions
from keel.features.offline import build_training_set
from keel.features.online import lookup
from keel.features.registry import apply
from keel.store.kv import open_kv_store


def test_ttl_means_the_same_online_and_offline(churn_project: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    _, data = churn_project
    apply()
    store = open_kv_store("memory://ttl")
    materialize(store=store, end=datetime(2024, 6, 1, tzinfo=UTC))  # everything ingested
    defs = load_definitions()
    ids = list(range(1, 51))
    # at several instants, including around the 30-day edge of the last usage rows
    last = data["usage"].event_timestamp.max()
    ingested = data["usage"].created_timestamp.max()  # online and offline both see every row from here on
    for at in [ingested + timedelta(hours=1), last + timedelta(days=30), last + timedelta(days=30, seconds=1), last + timedelta(days=45)]:
        at = at.to_pydatetime()
        refs = ["usage:minutes", "usage:sessions"]
        online = lookup(defs.select(refs), {"customer_id": ids}, store, now_us=pd.Timestamp(at).value // 1000)
        offline = build_training_set(
            pd.DataFrame({"customer_id": ids, "event_timestamp": [at] * len(ids)}), refs, definitions=defs, require_applied=False
        )
        for f in ("minutes", "sessions"):
            off = [None if pd.isna(v) else v for v in offline[f]]
            assert online.values[f] == off, at
            assert [s == "present" for s in online.status[f]] == [v is not None for v in off]


def test_entity_row_shapes_and_bad_rows(churn_project: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    apply()
    store = open_kv_store("memory://shapes")
    materialize(store=store)
    refs = ["profile:plan", "profile:tenure_months"]
    a = get_online_features(refs, [{"customer_id": 1}, {"customer_id": 2}], store=store).to_dict()
    b = get_online_features(refs, {"customer_id": [1, 2]}, store=store).to_dict()
    c = get_online_features(refs, pd.DataFrame({"customer_id": [1, 2]}), store=store).to_df().to_dict("list")
    assert a == b == c
    res = get_online_features(refs, [{"customer_id": 1}], store=store)
    age = res.age_seconds["plan"][0]
    assert age is not None and age > 0
    assert set(res.to_df(with_status=True).columns) >= {"plan__status", "plan__age_seconds"}
    with pytest.raises(ValidationError, match=r"no 'customer_id'.*Did you mean 'customer_ids'"):
        get_online_features(refs, [{"customer_ids": 1}], store=store)
    with pytest.raises(ValidationError, match="different lengths"):
        get_online_features(refs, {"customer_id": [1, 2], "x": [1]}, store=store)


@pytest.mark.redis
def test_redis_lookup_is_one_round_trip(churn_project: tuple[Path, dict[str, pd.DataFrame]], redis_url: str) -> None:
    apply()
    store = open_kv_store(redis_url)
    materialize(store=store)
    calls: list[str] = []
    real = store._redis.execute_command  # type: ignore[attr-defined]

    def counting(*args: object, **kw: object) -> object:
        calls.append(str(args[0]))
        return real(*args, **kw)

    store._redis.execute_command = counting  # type: ignore[attr-defined]
    res = get_online_features("churn_v1", [{"customer_id": i, "discount": 0.0} for i in range(1, 101)], store=store)
    assert calls == ["MGET"]
    assert res.status["plan"].count("present") == 50 and res.status["plan"].count("missing") == 50
    store.close()
