"""Stream fixtures: a registered model, unique Redis stream names and NATS subjects, private brokers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REDIS_URL, _unavailable

NATS_URL = os.environ.get("KEEL_TEST_NATS", "nats://127.0.0.1:4222")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def model(project: Path) -> Iterator[Any]:
    """models:/churn@live (a, b, plan), on a fresh SQLite project; the prediction log closed afterwards."""
    from tests.serving.conftest import train_model

    yield train_model()
    from keel.store.prediction_log import close_prediction_log

    close_prediction_log()


@pytest.fixture
def redis_streams() -> Iterator[tuple[str, str]]:
    """(source, sink) stream URIs with unique names on the machine's Redis; deleted afterwards."""
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL)
        client.ping()
    except Exception as exc:
        _unavailable("Redis", exc)
    tag = f"keeltest-{uuid.uuid4().hex[:10]}"
    yield f"{REDIS_URL}/{tag}.in", f"{REDIS_URL}/{tag}.out"
    for key in client.scan_iter(match=f"*{tag}*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture
def nats_subjects() -> Iterator[tuple[str, str]]:
    """(source, sink) subject URIs with unique names on the machine's NATS; their streams deleted afterwards."""
    import asyncio

    import nats

    tag = f"keeltest_{uuid.uuid4().hex[:10]}"

    async def ping() -> None:
        nc = await nats.connect(NATS_URL, connect_timeout=3, max_reconnect_attempts=0)
        await nc.close()

    try:
        asyncio.run(ping())
    except Exception as exc:
        _unavailable("NATS", exc)
    yield f"{NATS_URL}/{tag}.in", f"{NATS_URL}/{tag}.out"

    async def cleanup() -> None:
        nc = await nats.connect(NATS_URL)
        js = nc.jetstream()
        for info in await js.streams_info():
            if tag in info.config.name:
                await js.delete_stream(info.config.name)
        await nc.close()

    asyncio.run(cleanup())


class Broker:
    """A private broker process (redis-server or nats-server) on a free port, restartable, stopped by pid."""

    def __init__(self, argv: list[str], port: int, folder: Path) -> None:
        self.argv, self.port, self.folder = argv, port, folder
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, cwd=self.folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                time.sleep(0.2)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.argv[0]} did not start on port {self.port}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Broker]:
    exe = shutil.which("redis-server")
    if exe is None:
        _unavailable("redis-server", FileNotFoundError("redis-server"))
    port = free_port()
    folder = tmp_path / "redis"
    folder.mkdir()
    b = Broker([str(exe), "--port", str(port), "--bind", "127.0.0.1", "--appendonly", "yes", "--appendfsync", "always",
                "--save", "", "--dir", str(folder)], port, folder)
    b.start()
    yield b
    b.kill()


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[Broker]:
    exe = shutil.which("nats-server") or ("/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None)
    if exe is None:
        _unavailable("nats-server", FileNotFoundError("nats-server"))
    port = free_port()
    folder = tmp_path / "nats"
    folder.mkdir()
    b = Broker([str(exe), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(folder)], port, folder)
    b.start()
    yield b
    b.kill()
