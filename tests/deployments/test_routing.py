"""Routing through a deployment: weights, stickiness, shadows off the request path, canary rollback, following changes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from keel.deployments.compare import compare
from keel.deployments.routing import Router, bucket
from keel.deployments.specs import build_spec, deploy, history, set_deployment
from tests.deployments.test_specs import two  # noqa: F401  (fixture)
from tests.serving.conftest import make_data


def rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    df = make_data(n, seed)
    return df[["a", "b", "plan"]].to_dict("records")  # type: ignore[return-value]


def flush() -> None:
    from keel.store.prediction_log import active_log

    log = active_log()
    if log is not None:
        log.flush()


def test_canary_weight_and_stickiness(two: tuple[Any, Any]) -> None:  # noqa: F811
    deploy(build_spec("live", model="churn@production", canary="churn@challenger", weight=20, sticky_by="plan"))
    router = Router("live", log_predictions=False)
    # random draws: about 20% canary
    picks = Counter(router.pick().name for _ in range(4_000))
    assert 0.16 < picks["canary"] / 4_000 < 0.24
    # sticky keys: a key always meets the same route; many keys split about 80/20
    assert len({router.pick("customer-42").name for _ in range(50)}) == 1
    keys = Counter(router.pick(f"c{i}").name for i in range(4_000))
    assert 0.16 < keys["canary"] / 4_000 < 0.24
    assert bucket("c1", "live") == bucket("c1", "live") and bucket("c1", "live") != bucket("c1", "other")
    answer = router.predict([{"a": 0.1, "b": 0.2, "plan": "pro"}])
    assert answer.route == router.pick("pro").name and answer.to_dict()["route"] == answer.route
    router.close()


def test_shadow_logs_both_under_one_request_id_and_never_reaches_the_caller(two: tuple[Any, Any]) -> None:  # noqa: F811
    import keel

    v1, v2 = two
    deploy(build_spec("live", model="churn@production", shadow="churn@challenger"))
    router = Router("live")
    ids = []
    for i, row in enumerate(rows(50)):
        answer = router.predict([row], request_id=f"r{i}")
        assert answer.route == "champion" and answer.version == v1.version
        ids.append(f"r{i}")
    router.drain()
    flush()
    logged = keel.predictions("churn").to_pandas() if hasattr(keel.predictions("churn"), "to_pandas") else keel.predictions("churn")
    by_route = logged.groupby("route")["request_id"].apply(set)
    assert by_route["champion"] == set(ids) and by_route["shadow"] == set(ids)
    assert set(logged[logged.route == "shadow"]["version"]) == {v2.version}
    # a failing shadow: the caller still gets its answer, the failure is counted
    shadow = router.routes["shadow"]
    shadow.predict_columns = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("shadow down"))
    answer = router.predict([rows(1)[0]], request_id="after")
    router.drain()
    assert answer.route == "champion" and router.shadow_failed == 1
    router.close()


def test_the_shadow_scores_what_queued_in_one_call_and_a_bad_request_fails_only_itself(two: tuple[Any, Any]) -> None:  # noqa: F811
    import threading

    import keel

    deploy(build_spec("live", model="churn@production", shadow="churn@challenger"))
    router = Router("live", shadow_wait_ms=0)
    shadow = router.routes["shadow"]
    real, release, calls = shadow.predict_columns, threading.Event(), []

    def held(columns: Any, n: int, **kw: Any) -> Any:
        calls.append(n)
        release.wait(30)  # the worker is busy: what the requests queue meanwhile is scored together
        if any(str(i).startswith("bad") for i in (kw.get("row_ids") or [kw.get("request_id")])):
            raise RuntimeError("the shadow cannot score this request")
        return real(columns, n, **kw)

    shadow.predict_columns = held
    data = rows(30)
    for i, row in enumerate(data[:25]):
        assert router.predict([row], request_id=f"q{i}").route == "champion"
    router.predict(data[25:28], request_id="multi")  # one request of three rows: <id>:0 .. <id>:2
    router.predict([data[28]], request_id="bad")
    router.predict([data[29]], request_id="last")
    release.set()
    router.drain()
    flush()
    # the first request (the worker took it at once), then all that queued meanwhile in one call; that call failed on "bad",
    # so its requests were scored one by one
    assert sum(calls[:2]) == 30 and sum(calls[2:]) == calls[1] and len(calls) > 20
    assert router.shadow_failed == 1 and router.shadow_dropped == 0
    logged = keel.predictions("churn")
    by_route = logged.groupby("route")["request_id"].apply(set)
    expected = {f"q{i}" for i in range(25)} | {"multi:0", "multi:1", "multi:2", "last"}
    assert by_route["champion"] == expected | {"bad"} and by_route["shadow"] == expected
    router.close()


def test_a_canary_breaching_its_error_objective_is_rolled_back_and_recorded(two: tuple[Any, Any]) -> None:  # noqa: F811
    deploy(build_spec("live", model="churn@production", canary="churn@challenger", weight=50, max_error_rate=0.1, min_requests=20))
    router = Router("live", log_predictions=False)

    def broken(*a: Any, **k: Any) -> Any:
        raise RuntimeError("model crashed")

    router.routes["canary"].predict_columns = broken
    failures = 0
    for i, row in enumerate(rows(200)):
        try:
            router.predict([row], request_id=f"x{i}")
        except RuntimeError:
            failures += 1
    assert 20 <= failures < 60  # stopped soon after min_requests
    assert router.spec.mode == "single" and router.pick().name == "champion"
    last = history("live")[-1]
    assert last["action"] == "auto_rollback" and last["user"] == "keel" and last["detail"]["objective"] == "max_error_rate"
    router.close()


def test_bad_input_does_not_count_against_a_route(two: tuple[Any, Any]) -> None:  # noqa: F811
    from keel.errors import KeelError

    deploy(build_spec("live", model="churn@production", canary="churn@challenger", weight=50, max_error_rate=0.01, min_requests=5))
    router = Router("live", log_predictions=False)
    for _ in range(30):
        with pytest.raises(KeelError):
            router.predict([{"a": "oops", "b": 1.0, "plan": "pro"}])
    assert router.spec.mode == "canary"
    router.close()


def test_the_router_follows_changes_without_a_restart(two: tuple[Any, Any]) -> None:  # noqa: F811
    deploy(build_spec("live", model="churn@production", canary="churn@challenger", weight=10))
    router = Router("live", log_predictions=False, refresh_s=0)
    set_deployment("live", weight=90, reason="ramp up")
    router.predict([rows(1)[0]])  # refreshes first
    assert router.deployment.revision == 2 and router.spec.route("canary").weight == 90
    picks = Counter(router.pick().name for _ in range(2_000))
    assert picks["canary"] > 1_600
    router.close()


def test_compare_shadow_pairs_requests_and_recommends_once_labels_arrive(two: tuple[Any, Any], project: Path) -> None:  # noqa: F811
    import keel

    deploy(build_spec("live", model="churn@production", shadow="churn@challenger"))
    router = Router("live")
    data = make_data(400, seed=9)
    for i, row in enumerate(data[["a", "b", "plan"]].to_dict("records")):
        router.predict([row], request_id=f"q{i}")
    router.drain()
    flush()
    before = compare("live", since="1h")
    assert before["routes"]["champion"]["requests"] == 400 and before["routes"]["shadow"]["requests"] == 400
    assert before["shadow"]["paired_requests"] == 400 and 0 <= before["shadow"]["agreement"] <= 1
    assert "score_difference" in before["shadow"] and before["recommendation"] == "not enough data"
    keel.log_feedback([f"q{i}" for i in range(400)], data["y"].tolist(), model="churn")
    after = compare("live", since="1h", min_labels=100)
    q = after["quality"]
    assert q["paired"] and q["labelled"] == 400 and q["metric"] == "roc_auc" and q["low"] <= q["difference"] <= q["high"]
    assert after["recommendation"] in ("promote", "keep", "not enough data")
    router.close()


def test_compare_canary_is_unpaired(two: tuple[Any, Any]) -> None:  # noqa: F811
    import keel

    deploy(build_spec("live", model="churn@production", canary="churn@challenger", weight=50))
    router = Router("live")
    data = make_data(400, seed=5)
    for i, row in enumerate(data[["a", "b", "plan"]].to_dict("records")):
        router.predict([row], request_id=f"k{i}")
    flush()
    keel.log_feedback([f"k{i}" for i in range(400)], data["y"].tolist(), model="churn")
    c = compare("live", since="1h", min_labels=50)
    assert c["quality"] is not None and not c["quality"]["paired"]
    n = c["routes"]["champion"]["requests"] + c["routes"]["canary"]["requests"]
    assert n == 400 and c["routes"]["canary"]["labelled"] > 100
    router.close()


def test_the_live_gate_passes_only_on_the_live_comparison(two: tuple[Any, Any], project: Path) -> None:  # noqa: F811
    import keel
    import keel.deployments  # registers the gate kind
    from keel import config
    from keel.errors import GatesFailed
    from keel.registry.transitions import promote

    _v1, v2 = two
    (project / "keel.yaml").write_text((project / "keel.yaml").read_text()
                                       + "\nregistry:\n  policies:\n    churn:\n      gates: ['live: not worse than champion on >= 100 labelled within 0.2']\n      smoke: false\n")
    config.reset()
    deploy(build_spec("live", model="churn@production", shadow="churn@challenger"))
    with pytest.raises(GatesFailed, match="no labelled requests"):
        promote("churn", v2.version, "production")
    router = Router("live")
    data = make_data(300, seed=3)
    for i, row in enumerate(data[["a", "b", "plan"]].to_dict("records")):
        router.predict([row], request_id=f"g{i}")
    router.drain()
    flush()
    keel.log_feedback([f"g{i}" for i in range(300)], data["y"].tolist(), model="churn")
    t = promote("churn", v2.version, "production")
    live = [r for r in t.gates.results if r.name.startswith("live:")]
    assert live and live[0].status == "pass" and "on 300 labelled" in live[0].detail
    router.close()


def test_an_unregistered_gate_kind_is_a_config_error() -> None:
    from keel.errors import ConfigError
    from keel.registry.gates import Policy

    with pytest.raises(ConfigError, match="not registered"):
        Policy.from_dict({"gates": ["canary_magic: yes"]})
