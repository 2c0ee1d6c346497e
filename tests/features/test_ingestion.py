"""push(): fresh rows to the online store and the offline store, through the same transformation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

import keel
from keel.errors import NotFoundError, ValidationError
from keel.features.offline import build_training_set
from keel.features.registry import apply
from keel.store.kv import open_kv_store


def _row(customer: int, when: datetime, sessions: int = 4, minutes: float = 10.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [customer],
            "sessions": [sessions],
            "minutes": [minutes],
            "support_tickets": [0],
            "payment_failures": [1],
            "event_timestamp": [pd.Timestamp(when)],
        }
    )


def test_push_updates_online_and_offline_with_the_transformation(churn_project: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    apply()
    store = open_kv_store("memory://push")
    now = datetime.now(UTC)
    res = keel.push("usage", _row(7, now, sessions=4, minutes=10.0), store=store)
    assert res.rows == 1 and res.keys_written == 1 and res.offline_path
    online = keel.get_online_features(["usage:minutes_per_session", "usage:payment_failures"], [{"customer_id": 7}], store=store)
    assert online.values["minutes_per_session"] == [2.5] and online.status["minutes_per_session"] == ["present"]
    # the offline store holds it too, with its ingestion (push) time, so training sees it from then on
    edf = pd.DataFrame({"customer_id": [7], "event_timestamp": [pd.Timestamp(datetime.now(UTC))]})
    train = build_training_set(edf, ["usage:minutes_per_session"], require_applied=False)
    assert train["minutes_per_session"].tolist() == [2.5]


def test_an_older_push_does_not_overwrite_a_newer_value(churn_project: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    apply()
    store = open_kv_store("memory://push-old")
    now = datetime.now(UTC)
    keel.push("usage", _row(7, now - timedelta(hours=1), minutes=20.0), store=store, to="online")
    assert keel.push("usage", _row(7, now - timedelta(hours=2), minutes=99.0), store=store, to="online").keys_written == 0
    got = keel.get_online_features(["usage:minutes"], [{"customer_id": 7}], store=store)
    assert got.values["minutes"] == [20.0]


def test_bad_pushes_name_the_problem(churn_project: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    apply()
    store = open_kv_store("memory://push-bad")
    with pytest.raises(ValidationError, match="lack column 'minutes' of source 'usage'"):
        keel.push("usage", _row(7, datetime.now(UTC)).drop(columns="minutes"), store=store)
    with pytest.raises(ValidationError, match="holds naive timestamps"):
        keel.push("usage", _row(7, datetime(2024, 1, 1)), store=store)
    twice = pd.concat([_row(7, datetime(2024, 1, 1, tzinfo=UTC))] * 2)
    twice["created_timestamp"] = pd.Timestamp("2024-01-02", tz="UTC")
    with pytest.raises(ValidationError, match="customer_id=7"):
        keel.push("usage", twice, store=store)
    with pytest.raises(NotFoundError, match="Did you mean 'usage'"):
        keel.push("usag", _row(7, datetime.now(UTC)), store=store)


def test_push_runs_the_views_row_level_contract_checks(churn_project: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    from keel.contracts.history import history
    from keel.errors import ContractViolation
    from keel.features import push_checks

    root, _ = churn_project
    (root / "contracts").mkdir(exist_ok=True)
    (root / "contracts" / "usage.yaml").write_text(
        "contract: usage\nunexpected_columns: ignore\ncolumns:\n"
        "  minutes: {type: float, nullable: false, checks: [{min: 0}, {max: 1000, severity: warn}]}\n"
        "  minutes_per_session: {type: float, checks: [{between: [0, 100]}]}\n"
    )
    apply()
    store = open_kv_store("memory://push-contract")
    now = datetime.now(UTC)
    with pytest.raises(ContractViolation, match=r"1 of 1 rows fail usage: min\(minutes\) \(e.g. minutes=-5.0\)"):
        keel.push("usage", _row(7, now, minutes=-5.0), store=store, to="online")
    # the check runs on the transformed rows: minutes_per_session = 1000 / 4 = 250
    with pytest.raises(ContractViolation, match="between"):
        keel.push("usage", _row(7, now, sessions=4, minutes=1000.0), store=store, to="online")
    assert store.count(namespace_of("usage")) == 0  # nothing of a rejected push was written
    # a warning does not block, is counted, and stores no report
    assert keel.push("usage", _row(8, now, sessions=20, minutes=1500.0), store=store, to="online").keys_written == 1
    assert push_checks.warnings[("usage", "usage: max(minutes)")] == 1
    with pytest.raises(NotFoundError, match="No validations recorded"):
        history("usage")


def namespace_of(view: str) -> str:
    from keel.features.loader import load_definitions
    from keel.features.materialization import namespace

    return namespace(load_definitions().view(view))
