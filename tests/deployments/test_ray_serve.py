"""keel serve --engine ray: the model server as a Ray Serve deployment of 2 replicas on a cluster the test starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.deployments.ray_serve import app_name_for, ray_address, replica_middleware
from keel.errors import ConfigError
from tests.deployments.conftest import free_port
from tests.deployments.test_specs import two  # noqa: F401  (fixture: churn v1 @production and @live, v2 @challenger)
from tests.serving.test_batch_ray import ray_cluster  # noqa: F401  (fixture: `ray start --head` on free ports)

ROW = {"a": 0.3, "b": -0.1, "plan": "pro"}
SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture
def ray_serve_installed() -> None:
    """Ray Serve is the `ray` extra (ray[serve]); a venv with ray[default] only cannot run a replica."""
    pytest.importorskip("ray.serve", reason="needs ray[serve]: pip install 'keel[ray]'", exc_type=ImportError)


def _oip(rid: str) -> dict[str, Any]:
    return {"id": rid, "inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [0.3]},
                                  {"name": "b", "shape": [1], "datatype": "FP64", "data": [-0.1]},
                                  {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["pro"]}]}


def _start(argv: list[str], cwd: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": SRC}
    out = open(log, "wb")  # noqa: SIM115  (closed with the process)
    proc = subprocess.Popen([str(Path(sys.executable).with_name("keel")), "serve", *argv, "--port", str(port)], cwd=cwd, env=env,
                            stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"keel serve exited {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            # ready, and the command has said so (it handles Ctrl-C from then on)
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200 and "keel serve" in log.read_text():
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.kill()
    pytest.fail(f"keel serve --engine ray was not ready in 240 s: {log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    proc.send_signal(signal.SIGINT)  # the process this test started
    try:
        assert proc.wait(timeout=180) == 0, log.read_text()[-3000:]
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.mark.slow
@pytest.mark.xdist_group("ray")
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")
def test_two_replicas_answer_every_protocol_and_log_every_answer(ray_serve_installed: None, two: tuple[Any, Any],  # noqa: F811
                                                                 project: Path, ray_cluster: str,  # noqa: F811
                                                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    import keel
    from keel.deployments.specs import build_spec, deploy

    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    proc = _start(["models:/churn@live", "--engine", "ray", "--replicas", "2", "--ray-address", ray_cluster], project, port, log)
    base = f"http://127.0.0.1:{port}"
    try:
        def call(i: int) -> tuple[str, httpx.Response]:
            rid = f"req-{i}"
            with httpx.Client(base_url=base, timeout=60) as c:
                if i % 3 == 0:
                    return rid, c.post("/v1/models/churn/predict", json={"records": [ROW, ROW]}, headers={"x-request-id": rid})
                if i % 3 == 1:
                    return rid, c.post("/invocations", json={"dataframe_records": [ROW]}, headers={"x-request-id": rid})
                return rid, c.post("/v2/models/churn/infer", json=_oip(rid))

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(call, range(60)))
        # Serve keeps the HTTP port it started with: another --port is one line, and the app is untouched
        other = subprocess.run([str(Path(sys.executable).with_name("keel")), "serve", "models:/churn@live", "--engine", "ray",
                                "--ray-address", ray_cluster, "--port", str(free_port())], cwd=project, capture_output=True, text=True,
                               env={**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": SRC}, timeout=300)
        assert other.returncode == 1 and f"--port {port}" in other.stdout + other.stderr, other.stderr[-2000:]
        bad = httpx.post(f"{base}/v1/models/churn/predict", json={"records": [{"a": "x", "b": 1, "plan": "pro"}]}, timeout=60)
    finally:
        _stop(proc, log)
    assert all(r.status_code == 200 for _, r in answers), [r.text for _, r in answers if r.status_code != 200][:3]
    assert bad.status_code == 422 and bad.json()["error"] == "InputError"
    assert answers[0][1].json()["predictions"] and "predictions" in answers[1][1].json() and answers[2][1].json()["outputs"]
    # one x-request-id each: the caller's; where the id came in the body (OIP), that id is in keel-request-id and the body
    assert all(r.headers["x-request-id"] == rid for rid, r in answers if "/v2/" not in str(r.url))
    assert all(r.headers["keel-request-id"] == r.json()["id"] == rid for rid, r in answers if "/v2/" in str(r.url))
    replicas = {r.headers["keel-replica"] for _, r in answers}
    assert len(replicas) == 2  # both replicas answered
    # the app is gone: every 200 is in the prediction log, written by the replica that answered it
    logged = keel.predictions("churn")
    ids = logged["request_id"].str.split(":").str[0]  # a row of a 2-row request is <request id>:<row>
    want = {rid: (2 if i % 3 == 0 else 1) for i, (rid, _) in enumerate(answers)}
    assert ids.value_counts().to_dict() == want
    parts = [p.name for p in (project / ".keel" / "lake").rglob("part-*.parquet") if "predictions" in p.parts]
    assert {r for r in replicas if any(f"ray-keel-churn-{r}" in p for p in parts)} == replicas
    with httpx.Client(timeout=2) as c, pytest.raises(httpx.HTTPError):
        c.get(f"{base}/v2/health/ready").raise_for_status()

    # a deployment on the same cluster: its routes answer through the replicas, each logged with its route
    deploy(build_spec("live", model="churn@production", canary="churn@challenger", weight=50))
    proc = _start(["--deployment", "live", "--engine", "ray", "--replicas", "2", "--ray-address", ray_cluster], project, port, log)
    try:
        with httpx.Client(base_url=base, timeout=60) as c:
            routed = [c.post("/v1/models/churn/predict", json={"records": [ROW]}, headers={"x-request-id": f"dep-{i}"}) for i in range(30)]
    finally:
        _stop(proc, log)
    assert all(r.status_code == 200 for r in routed)
    assert {r.headers["keel-route"] for r in routed} == {"champion", "canary"} and all(r.headers["keel-replica"] for r in routed)
    rows = keel.predictions("churn")
    rows = rows[rows["request_id"].str.startswith("dep-")]
    assert dict(zip(rows["request_id"], rows["route"], strict=True)) == {f"dep-{i}": r.headers["keel-route"] for i, r in enumerate(routed)}


def test_without_a_cluster_the_error_says_how_to_start_one(monkeypatch: pytest.MonkeyPatch, project: Path) -> None:
    from keel import config

    monkeypatch.delenv("KEEL_RAY_ADDRESS", raising=False)
    config.reset()
    with pytest.raises(ConfigError, match="needs a running Ray cluster") as err:
        ray_address()
    assert "ray start --head" in (err.value.hint or "")
    assert ray_address("10.0.0.5:6379") == "10.0.0.5:6379"
    monkeypatch.setenv("KEEL_RAY_ADDRESS", "10.0.0.6:6379")
    config.reset()
    assert ray_address() == "10.0.0.6:6379"


def test_the_cli_says_so_in_one_line(model: Any, project: Path) -> None:
    from typer.testing import CliRunner

    from keel.cli.main import app

    out = CliRunner().invoke(app, ["serve", "models:/churn@live", "--engine", "ray"], env={"KEEL_RAY_ADDRESS": ""})
    assert out.exit_code != 0 and "ray start --head" in out.output
    closed = free_port()  # nothing listens there: one line at once, not minutes of Ray's retries
    out = CliRunner().invoke(app, ["serve", "models:/churn@live", "--engine", "ray", "--ray-address", f"127.0.0.1:{closed}"])
    assert out.exit_code != 0 and "No Ray cluster answers" in out.output and "ray start --head" in out.output, out.output
    out = CliRunner().invoke(app, ["serve", "models:/churn@live", "--engine", "ray", "--workers", "2"])
    assert out.exit_code != 0 and "--replicas" in out.output
    out = CliRunner().invoke(app, ["serve", "models:/churn@live", "--engine", "kube"])
    assert out.exit_code != 0 and "local or ray" in out.output


def test_replica_header_and_app_names() -> None:
    import asyncio

    sent: list[Any] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def record(message: Any) -> None:
        sent.append(message)

    asyncio.run(replica_middleware(inner, "abc123")({"type": "http"}, None, record))
    assert (b"keel-replica", b"abc123") in sent[0]["headers"] and sent[1]["body"] == b"ok"
    sent.clear()

    async def with_id(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-request-id", scope["path"].encode())]})

    app = replica_middleware(with_id, "r1")
    asyncio.run(app({"type": "http", "path": "same", "headers": [(b"x-request-id", b"same")]}, None, record))
    asyncio.run(app({"type": "http", "path": "body-id", "headers": [(b"x-request-id", b"ray-made")]}, None, record))
    assert [h for h, _ in sent[0]["headers"]] == [b"keel-replica"]  # the proxy adds x-request-id: never twice
    assert (b"keel-request-id", b"body-id") in sent[1]["headers"] and all(h != b"x-request-id" for h, _ in sent[1]["headers"])
    assert app_name_for(["models:/churn@production", "models:/fraud/3"], None) == "keel-churn-fraud"
    assert app_name_for([], "churn live") == "keel-churn-live"
