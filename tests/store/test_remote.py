"""The HTTP transport (keel.store.remote): retries with backoff, failover, errors, token handling.

A real HTTP server on a free port (http.server in a thread) plays the keel server.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from keel.errors import ConfigError, GatesFailed, NotFoundError, StoreError, ValidationError
from keel.store.remote import RemoteClient, client, not_available, parse_uris


class _Script:
    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, Any]]] = []
        self.seen: list[tuple[str, str, str | None]] = []


@pytest.fixture
def fake() -> Iterator[tuple[str, _Script]]:
    script = _Script()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            script.seen.append((self.command, self.path, self.headers.get("Authorization")))
            status, body = script.answers.pop(0) if script.answers else (200, {"ok": True})
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_503_is_retried_with_backoff_then_succeeds(fake: tuple[str, _Script]) -> None:
    url, script = fake
    script.answers = [(503, {"error": "StoreError", "message": "busy"}), (502, {}), (200, {"id": 7})]
    c = RemoteClient([url], "s3cret", backoff=0.01)
    assert c.json("GET", "/v1/x") == {"id": 7}
    assert c.retried == 2 and len(script.seen) == 3
    assert script.seen[0][2] == "Bearer s3cret"


def test_a_dead_replica_is_failed_over(fake: tuple[str, _Script]) -> None:
    url, _script = fake
    c = RemoteClient([_closed_port(), url], backoff=0.01)
    assert c.json("GET", "/v1/x") == {"ok": True}
    assert c.failovers == 1 and c.base == url
    assert c.json("GET", "/v1/y") == {"ok": True}  # it stays on the replica that answers
    assert c.failovers == 1


def test_nothing_answers_is_a_store_error_without_the_token() -> None:
    c = RemoteClient([_closed_port(), _closed_port()], "s3cret-token", retries=2, backoff=0.01)
    with pytest.raises(StoreError, match="cannot be reached") as info:
        c.json("GET", "/v1/x")
    assert "s3cret" not in str(info.value)


def test_a_call_that_is_not_idempotent_is_not_retried(fake: tuple[str, _Script]) -> None:
    url, script = fake
    script.answers = [(503, {"error": "StoreError", "message": "down"})]
    with pytest.raises(StoreError, match="down"):
        RemoteClient([url], backoff=0.01).json("POST", "/v1/x", idempotent=False)
    assert len(script.seen) == 1


def test_server_errors_come_back_as_their_keel_error(fake: tuple[str, _Script]) -> None:
    url, script = fake
    c = RemoteClient([url], backoff=0.01)
    script.answers = [(404, {"error": "NotFoundError", "message": "No run 'x'."})]
    with pytest.raises(NotFoundError, match="No run 'x'"):
        c.json("GET", "/v1/runs/x")
    script.answers = [(422, {"error": "GatesFailed", "message": "gates failed", "detail": {"report": [1]}})]
    with pytest.raises(GatesFailed) as info:
        c.json("POST", "/v1/p")
    assert info.value.report == [1]
    script.answers = [(422, {"detail": [{"loc": ["body", "name"], "msg": "Field required"}]})]
    with pytest.raises(ValidationError, match=r"body\.name: Field required"):
        c.json("POST", "/v1/p")


def test_tracking_uri_is_checked(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from keel import config

    assert parse_uris("http://a:1, https://b:2/") == ["http://a:1", "https://b:2"]
    with pytest.raises(ConfigError, match="not an http"):
        parse_uris("a:5000")
    with pytest.raises(ConfigError, match="empty"):
        parse_uris(" , ")
    assert client() is None
    monkeypatch.setenv("KEEL_TRACKING_URI", "http://127.0.0.1:1,http://127.0.0.1:2")
    config.reset()
    c = client()
    assert c is not None and c.uris == ["http://127.0.0.1:1", "http://127.0.0.1:2"] and client() is c
    assert "not available against a server (KEEL_TRACKING_URI is set)" in str(not_available("keel gc"))
    from keel.store.remote import reset_clients

    reset_clients()
