"""keel serve --deployment: every protocol through the deployment's router; the route in each response; stickiness by header."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest

from keel.deployments.serve import create_deployment_app
from keel.deployments.specs import build_spec, deploy, history, set_deployment
from tests.deployments.test_specs import two  # noqa: F401  (fixture)


def call(app: Any, requests: list[tuple[str, str, dict[str, Any], dict[str, str]]]) -> list[httpx.Response]:
    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return [await c.request(m, u, json=b, headers=h) for m, u, b, h in requests]

    return asyncio.run(main())


ROW = {"a": 0.3, "b": -0.1, "plan": "pro"}


def test_canary_over_every_protocol_says_which_route_answered(two: tuple[Any, Any]) -> None:  # noqa: F811
    v1, v2 = two
    deploy(build_spec("live", model="churn@production", canary="churn@challenger", weight=30, sticky_by="header:x-user"))
    app = create_deployment_app("live", log=False)
    reqs = [("POST", "/v1/models/churn/predict", {"records": [ROW]}, {"x-user": f"u{i}"}) for i in range(200)]
    out = call(app, reqs)
    assert all(r.status_code == 200 for r in out)
    routes = Counter(r.headers["keel-route"] for r in out)
    assert set(routes) == {"champion", "canary"} and 30 < routes["canary"] < 95
    versions = {r.headers["keel-route"]: r.json()["version"] for r in out}
    assert versions == {"champion": v1.version, "canary": v2.version}
    # sticky: one user always meets one route
    again = call(app, [("POST", "/v1/models/churn/predict", {"records": [ROW]}, {"x-user": "u7"})] * 20)
    assert len({r.headers["keel-route"] for r in again}) == 1
    mlflow = call(app, [("POST", "/invocations", {"dataframe_records": [ROW]}, {"x-user": "u1"})])[0]
    assert mlflow.status_code == 200 and "predictions" in mlflow.json() and mlflow.headers["keel-route"] in ("champion", "canary")
    oip = call(app, [("POST", "/v2/models/churn/infer", {"inputs": [
        {"name": "a", "shape": [1], "datatype": "FP64", "data": [0.3]}, {"name": "b", "shape": [1], "datatype": "FP64", "data": [-0.1]},
        {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["pro"]}]}, {"x-user": "u1"})])[0]
    assert oip.status_code == 200, oip.text
    bad = call(app, [("POST", "/v1/models/churn/predict", {"records": [{"a": "x", "b": 1, "plan": "pro"}]}, {})])[0]
    assert bad.status_code == 422


def test_the_served_deployment_follows_a_change_without_a_restart(two: tuple[Any, Any]) -> None:  # noqa: F811
    deploy(build_spec("live", model="churn@production", canary="churn@challenger", weight=10))
    app = create_deployment_app("live", log=False)
    app.router.refresh_s = 0  # type: ignore[attr-defined]
    set_deployment("live", single=True, reason="canary done")
    out = call(app, [("POST", "/v1/models/churn/predict", {"records": [ROW]}, {})] * 30)
    assert {r.headers["keel-route"] for r in out} == {"champion"}


@pytest.mark.slow
def test_two_replicas_of_one_deployment_agree_on_routing_stickiness_and_logging(two: tuple[Any, Any], project: Any) -> None:  # noqa: F811
    """`keel deploy start --replicas 2` and a `keel worker`: two `keel serve --deployment` processes on one store.
    The same user meets the same route on both; both log everything they answered; `keel deploy stop` drains them."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from typer.testing import CliRunner

    import keel
    from keel.cli.main import app
    from keel.deployments.services import get_service

    def wait_for(what: str, check: Any, timeout: float = 180.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if got := check():
                return got
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}: {get_service('live').to_dict()}\n{log.read_text()[-3000:]}")

    deploy(build_spec("live", model="churn@production", canary="churn@challenger", weight=40, sticky_by="header:x-user"))
    cli = CliRunner()
    started = cli.invoke(app, ["deploy", "start", "live", "--replicas", "2", "--json"])
    assert started.exit_code == 0, started.output
    ports = json.loads(started.output)["ports"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    log = project / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen([sys.executable, "-c", "from keel.cli.main import main; main()", "worker", "--poll", "0.2", "--lease", "10"],
                                  cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        svc = wait_for("both replicas to be ready", lambda: (s := get_service("live")).state == "running" and s)
        pids = [r.pid for r in svc.replica_state]
        assert len(set(pids)) == 2 and [r.port for r in svc.replica_state] == ports
        seen: dict[str, set[str]] = {}
        ids = []
        for i in range(60):
            user = f"user{i % 15}"
            r = httpx.post(f"http://127.0.0.1:{ports[i % 2]}/v1/models/churn/predict", json={"records": [ROW]},
                           headers={"x-user": user, "x-request-id": f"rep{i}"}, timeout=10)
            assert r.status_code == 200, r.text
            seen.setdefault(user, set()).add(r.headers["keel-route"])
            ids.append(f"rep{i}")
        assert all(len(routes) == 1 for routes in seen.values())  # sticky across replicas
        assert {next(iter(v)) for v in seen.values()} == {"champion", "canary"}
        stopped = cli.invoke(app, ["deploy", "stop", "live", "--reason", "test over"])
        assert stopped.exit_code == 0, stopped.output
        wait_for("the replicas to be drained", lambda: get_service("live").state == "stopped")
        assert all(r.state == "stopped" and r.pid is None for r in get_service("live").replica_state)
        for pid in pids:  # the worker reaped them
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    logged = keel.predictions("churn")
    assert set(ids) <= set(logged["request_id"])  # both replicas logged everything they answered (drained on SIGTERM)
    assert [e["action"] for e in history("live")][-2:] == ["start", "stop"]
