"""`keel serve` as a real process over HTTP: SIGKILL and SIGTERM under load lose no answered request; hot reload fails none."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving.conftest import train_model

pytestmark = pytest.mark.slow
ROW = {"a": 1.0, "b": 2.0, "plan": "pro"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(root: Path, *args: str, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = port or free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    out = open(root / f"serve-{port}.log", "wb")  # noqa: SIM115 - the server writes it until it exits
    proc = subprocess.Popen([sys.executable, "-c", "from keel.cli.main import main; main()", "serve", *args, "--port", str(port)],
                            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    proc.log_path = root / f"serve-{port}.log"  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"keel serve exited: {(root / f'serve-{port}.log').read_text()}")
        try:
            if httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("keel serve did not become ready")


class Load:
    """Client threads posting single rows; keeps the request ids that got a 200 and every failure."""

    def __init__(self, url: str, threads: int = 4, path: str = "/v1/models/churn/predict") -> None:
        self.url, self.path = url, path
        self.ok: list[str] = []
        self.versions: list[str] = []
        self.failed: list[Any] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, t: int) -> None:
        i = 0
        with httpx.Client(base_url=self.url, timeout=10) as c:
            while not self.stop.is_set():
                rid = f"t{t}-{i}"
                i += 1
                try:
                    r = c.post(self.path, json={"records": [ROW]}, headers={"x-request-id": rid})
                except httpx.HTTPError as exc:
                    self.failed.append(exc)
                    continue
                if r.status_code == 200:
                    self.ok.append(rid)
                    self.versions.append(r.headers["keel-model-version"])
                else:
                    self.failed.append(r.status_code)

    def __enter__(self) -> Load:
        for th in self.threads:
            th.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for th in self.threads:
            th.join()


@pytest.fixture
def served(local: Path) -> Iterator[Path]:
    train_model()
    yield local


def _logged_ids(model: str = "churn") -> set[str]:
    from keel.store import predictions

    return set(predictions.read(model, columns=["request_id"])["request_id"].to_pylist())


def test_sigkill_under_load_loses_no_answered_request(served: Path) -> None:
    proc, url = start_server(served, "models:/churn@live")
    with Load(url) as load:
        while len(load.ok) < 300:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    answered = set(load.ok)
    assert len(answered) >= 300
    # a restarted server adopts the dead writer's segments and compacts them
    proc, url = start_server(served, "models:/churn@live")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    assert answered <= _logged_ids(), f"{len(answered - _logged_ids())} answered requests are not in the log"
    assert not list((served / ".keel" / "predictions").glob("*/*.seg"))


def test_sigterm_drains_in_flight_requests_and_flushes_the_log(served: Path) -> None:
    # micro-batching with a long wait keeps requests in flight (received, not yet answered) when SIGTERM arrives
    proc, url = start_server(served, "models:/churn@live", "--batch-max-rows", "64", "--batch-max-wait-ms", "1500")
    with Load(url, threads=6) as load:
        while len(load.ok) < 12:
            time.sleep(0.05)
        time.sleep(0.5)  # every thread has a request waiting in the batch queue
        at_signal = len(load.ok)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    assert len(load.ok) >= at_signal + 6, "the requests in flight at SIGTERM were not all answered"
    assert "Finished server process" in proc.log_path.read_text()  # type: ignore[attr-defined]
    # after the listener closed, new requests cannot connect (or race a closing keep-alive connection)
    assert all(isinstance(f, httpx.TransportError) for f in load.failed), load.failed[:5]
    assert set(load.ok) <= _logged_ids()


def test_hot_reload_under_load_fails_no_request(served: Path) -> None:
    from keel.registry.transitions import set_alias

    v2 = train_model(C=0.01, alias=None)
    proc, url = start_server(served, "models:/churn@live")
    try:
        with Load(url) as load:
            while len(load.ok) < 100:
                time.sleep(0.05)
            set_alias("churn", "live", v2.version)
            deadline = time.time() + 20
            while time.time() < deadline and (not load.versions or load.versions[-1] != str(v2.version)):
                time.sleep(0.1)
            n = len(load.ok)
            while len(load.ok) < n + 100:
                time.sleep(0.05)
        assert load.failed == []
        assert load.versions[0] == "1" and load.versions[-1] == str(v2.version)
        # once swapped, every later answer comes from v2
        first = load.versions.index(str(v2.version))
        assert set(load.versions[first:]) == {str(v2.version)}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_two_workers_aggregate_metrics_and_serve_grpc(served: Path) -> None:
    import grpc

    from keel.serving.grpc_oip import SERVICE, messages

    grpc_port = free_port()
    proc, url = start_server(served, "models:/churn@live", "--workers", "2", "--grpc-port", str(grpc_port))
    try:
        m = messages()
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            ready = channel.unary_unary(f"/{SERVICE}/ModelReady", request_serializer=m["ModelReadyRequest"].SerializeToString,
                                        response_deserializer=m["ModelReadyResponse"].FromString)
            assert ready(m["ModelReadyRequest"](name="churn"), timeout=10).ready
        with httpx.Client(base_url=url, timeout=10) as c:
            for _ in range(40):
                assert c.post("/v1/models/churn/predict", json={"records": [ROW]}).status_code == 200
            text = c.get("/metrics").text
        line = next(x for x in text.splitlines() if x.startswith("keel_requests_total{") and 'status="200"' in x)
        assert float(line.rsplit(" ", 1)[1]) == 40.0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert len(_logged_ids()) == 40
