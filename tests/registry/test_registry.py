"""Registered models, versions with lineage, environments, aliases, audit, rollback, status, events."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

import keel
from keel import registry
from keel.errors import ConflictError, NotFoundError, ValidationError
from keel.registry import events

pytestmark = pytest.mark.slow  # many small end-to-end cases, each on SQLite and PostgreSQL


def test_register_records_lineage_and_artifact_rows(proj: Path, train: Callable[..., Any]) -> None:
    from keel.store.metadata import get_metadata_store
    from keel.store.schema import artifacts

    v1 = train()
    v2 = train(C=0.1)
    assert (v1.version, v2.version) == (1, 2)
    assert v2.lineage["params"]["C"] == "0.1"
    assert v2.lineage["training_fingerprint"] == v2.lineage["data"][0]["fingerprint"]
    assert v2.lineage["package_lock_sha256"] and v2.lineage["python"]
    assert v2.meta["flavor"] == "sklearn"
    # registering the same run again is idempotent
    assert keel.register_model(f"runs:/{v2.run_id}/model", "churn").version == 2
    with get_metadata_store().read() as conn:
        rows = conn.execute(sa.select(artifacts.c.path, artifacts.c.digest).where(artifacts.c.owner_kind == "model_version")).all()
    assert {p for p, _d in rows} >= {"model/model.pkl", "model/keel-model.json", "model/input_example.parquet", "model/MLmodel"}
    assert len(rows) == 8
    m = registry.get_model("churn")
    assert m.latest_version == 2 and m.owner


def test_environments_aliases_and_rollback(proj: Path, train: Callable[..., Any]) -> None:
    v1, v2, v3 = train(), train(C=0.5), train(C=0.2)
    for v in (v1, v2, v3):
        keel.promote("churn", v.version, to="staging", policy={"smoke": True})
    assert registry.get_model("churn").environments == {"staging": 3}
    registry.set_alias("churn", "champion", 2)
    assert keel.load_model("models:/churn@champion").source.version == 2
    assert registry.rollback_target("churn", "staging") == 2
    t = registry.rollback("churn", "staging", reason="bad latency")
    assert (t.from_version, t.to_version) == (3, 2)
    assert registry.rollback_target("churn", "staging") == 1
    registry.rollback("churn", "staging")
    with pytest.raises(ValidationError, match=r"no earlier version"):
        registry.rollback("churn", "staging")
    assert registry.get_model("churn").environments == {"staging": 1}
    actions = [(e["action"], e["target"], e["from_version"], e["to_version"]) for e in registry.history("churn") if e["action"] != "register"]
    assert actions == [
        ("promote", "staging", None, 1), ("promote", "staging", 1, 2), ("promote", "staging", 2, 3),
        ("alias", "champion", None, 2), ("rollback", "staging", 3, 2), ("rollback", "staging", 2, 1),
    ]


def test_bad_input_names_problem_and_fix_without_partial_transition(proj: Path, train: Callable[..., Any], data: pd.DataFrame) -> None:
    v1 = train()
    other = train(name="fraud")
    with pytest.raises(NotFoundError, match=r"Unknown environment 'prod'.*Did you mean 'production'"):
        keel.promote("churn", 1, to="prod")
    with pytest.raises(ValidationError, match=r"belongs to model 'fraud', not 'churn'"):
        keel.promote("churn", other, to="production")
    with pytest.raises(ValidationError, match=r"belongs to model 'fraud'"):
        keel.promote("churn", "models:/fraud/1", to="production")
    with pytest.raises(ValidationError, match=r"metric 'auc'.*Did you mean 'roc_auc'"):
        keel.promote("churn", v1.version, to="production", data=data, target="y", policy={"gates": ["auc >= 0.8"]})
    with pytest.raises(ValidationError, match=r"metric gates but no evaluation data"):
        keel.promote("churn", v1.version, to="production", policy={"gates": ["roc_auc >= 0.8"]})
    with pytest.raises(NotFoundError, match=r"no version 9"):
        keel.promote("churn", 9, to="production")
    with pytest.raises(ValidationError, match=r"is an environment"):
        registry.set_alias("churn", "production", 1)
    assert registry.get_model("churn").environments == {}
    assert [e["action"] for e in registry.history("churn")] == ["register"]


@pytest.mark.parametrize("occupied", [False, True], ids=["empty", "occupied"])
def test_concurrent_promotions_exactly_one_wins(proj: Path, train: Callable[..., Any], occupied: bool) -> None:
    train()
    train(C=0.3)
    if occupied:  # an UPDATE race on the environment's row, instead of an INSERT race
        train(C=0.1)
        keel.promote("churn", 3, to="production")
    barrier = threading.Barrier(2, timeout=30)

    def both_have_read_the_environment(candidate: Any, champion: Any) -> bool:
        barrier.wait()  # each promotion has read the (empty) environment before either writes
        return True

    policy = registry.Policy(gates=[both_have_read_the_environment])
    outcomes: dict[int, Any] = {}

    def go(version: int) -> None:
        try:
            outcomes[version] = keel.promote("churn", version, to="production", policy=policy)
        except Exception as exc:
            outcomes[version] = exc

    threads = [threading.Thread(target=go, args=(v,)) for v in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [v for v, o in outcomes.items() if not isinstance(o, Exception)]
    losers = [o for o in outcomes.values() if isinstance(o, Exception)]
    assert len(winners) == 1 and len(losers) == 1
    assert isinstance(losers[0], ConflictError) and "changed while this promote" in str(losers[0])
    assert registry.get_model("churn").environments == {"production": winners[0]}
    attempts = [(e["to_version"], e["outcome"]) for e in registry.history("churn") if e["action"] == "promote" and e["to_version"] != 3]
    assert sorted(attempts) == sorted([(winners[0], "applied"), (3 - winners[0], "conflict")])
    assert registry.rollback_target("churn", "production") == (3 if occupied else None)


def test_status_answers_the_five_questions(proj: Path, train: Callable[..., Any], data: pd.DataFrame) -> None:
    v1 = train(columns=("a",))
    v2 = train(columns=("a", "b"), C=0.5)
    keel.promote("churn", v1.version, to="production")
    keel.promote("churn", v2.version, to="production", data=data, target="y")
    st = registry.status("churn")
    prod = next(e for e in st["environments"] if e["environment"] == "production")
    assert prod["version"] == 2 and prod["run_id"] == v2.run_id and prod["trained_time"] is not None
    assert prod["rollback_to"] == 1 and prod["previous_version"] == 1
    auc = next(r for r in prod["metrics"] if r["metric"] == "roc_auc")
    assert auc["current"] > auc["previous"] > 0.5  # both versions evaluated on the same rows by the default gate
    assert {(c["key"], c["previous"], c["current"]) for c in prod["changes"]["params"]} == {("C", "1.0", "0.5"), ("columns", "a", "a,b")}
    assert any(c["key"] == "inputs" and c["current"] == "b" for c in prod["changes"]["features"])
    staging = next(e for e in st["environments"] if e["environment"] == "staging")
    assert staging["version"] is None


def test_events_subscribers_and_polling(proj: Path, train: Callable[..., Any]) -> None:
    seen: list[dict[str, Any]] = []
    unsubscribe = events.subscribe(seen.append)
    events.subscribe(lambda e: 1 / 0)  # a failing subscriber never blocks a transition
    try:
        train()
        keel.promote("churn", 1, to="production")
    finally:
        unsubscribe()
        events._subscribers.clear()
    assert [(e["action"], e["to_version"]) for e in seen] == [("register", 1), ("promote", 1)]
    last = seen[0]["id"]
    polled = events.poll(since_id=last)
    assert [(e["action"], e["target"]) for e in polled] == [("promote", "production")]


def test_configured_environments(proj: Path, train: Callable[..., Any], configure: Callable[..., None]) -> None:
    configure({"environments": ["dev", "canary", "prod"]})
    train()
    keel.promote("churn", 1, to="canary")
    with pytest.raises(NotFoundError, match=r"Unknown environment 'production'"):
        keel.promote("churn", 1, to="production")


def test_versions_outlive_their_runs_through_gc(proj: Path, train: Callable[..., Any], data: pd.DataFrame) -> None:
    from keel.store.blobs import get_artifact_store
    from keel.store.gc import collect
    from keel.store.metadata import get_metadata_store
    from keel.tracking.query import delete_runs

    v1, v2 = train(columns=("a",)), train()
    keel.promote("churn", 1, to="production")
    keel.promote("churn", 2, to="production", data=data, target="y")
    delete_runs([v1.run_id, v2.run_id])
    report = collect(get_metadata_store(), get_artifact_store(), grace_seconds=0)
    assert report.deleted  # the runs' own blobs (package lock...) went away
    m = keel.load_model("models:/churn/1", cache=False)
    assert len(m.predict(data)) == len(data)
    prod = next(e for e in registry.status("churn")["environments"] if e["environment"] == "production")
    assert prod["version"] == 2 and {c["key"] for c in prod["changes"]["params"]} == {"columns"}  # from the recorded lineage


def test_audit_log_is_append_only_in_the_database(proj: Path, train: Callable[..., Any]) -> None:
    from keel.store.metadata import get_metadata_store
    from keel.store.schema.registry import model_events

    train()
    with pytest.raises(Exception, match="append-only"), get_metadata_store().write() as conn:
        conn.execute(sa.update(model_events).values(user="mallory"))
    with pytest.raises(Exception, match="append-only"), get_metadata_store().write() as conn:
        conn.execute(sa.delete(model_events))
    assert [e["user"] for e in registry.history("churn")] != ["mallory"]
