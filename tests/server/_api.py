"""A synchronous test client for the platform app (httpx over ASGI on an anyio portal), and the test's model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np
import pandas as pd


class Api:
    """``api.get("/v1/...")`` -> httpx.Response, against the app in this process (no socket)."""

    def __init__(self, app: Any, portal: Any, *, raise_app_exceptions: bool = True) -> None:
        self.portal = portal
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://keel", timeout=60)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.portal.call(lambda: self.client.request(method, url, **kwargs))  # type: ignore[no-any-return]

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)


@contextmanager
def api_client(*, raise_app_exceptions: bool = True, **app_options: Any) -> Iterator[Api]:
    from anyio.from_thread import start_blocking_portal

    from keel.server.app import create_app

    with start_blocking_portal() as portal:
        api = Api(create_app(**app_options), portal, raise_app_exceptions=raise_app_exceptions)
        try:
            yield api
        finally:
            portal.call(api.client.aclose)


def make_data(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    df["y"] = ((df.a + 0.8 * df.b + rng.normal(0, 0.7, n)) > 0).astype(int)
    return df


def train(name: str = "churn", C: float = 1.0, seed: int = 0) -> Any:
    """Register a logistic regression on (a, b) as the next version of ``name``."""
    from sklearn.linear_model import LogisticRegression

    import keel

    data = make_data(seed=seed)
    X = data[["a", "b"]]
    with keel.start_run():
        keel.log_params({"C": C})
        keel.log_dataset(data, "train")
        info = keel.log_model(LogisticRegression(C=C).fit(X, data["y"]), input_example=X.head(5))
    return keel.register_model(info.uri, name)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``keel server`` in a process of its own on a free port, in ``root``, with this tree's sources."""

    def __init__(self, root: Any, *args: str, env: dict[str, str] | None = None) -> None:
        import os
        import subprocess
        import sys
        from pathlib import Path

        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        src = str(Path(__file__).resolve().parents[2] / "src")
        full_env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join([src, str(root)])}
        self.log_path = Path(root) / f"server-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - written until the server exits
        self.proc = subprocess.Popen([sys.executable, "-c", "from keel.cli.main import main; main()", "server", "--port", str(self.port), *args],
                                     cwd=root, env=full_env, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self) -> None:
        import time

        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"keel server exited: {self.log_path.read_text()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"keel server did not become ready: {self.log_path.read_text()}")

    def stop(self) -> None:
        import subprocess

        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
