"""Alerts: context, dedup and cooldown, ack/resolve, and real sinks (an HTTP server and an SMTP server)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pandas as pd
import pytest

from keel.errors import NotFoundError, ValidationError
from keel.monitoring import alerts as A
from keel.monitoring import monitors as M
from tests.monitoring.conftest import log_rows, make_data

T0 = pd.Timestamp("2026-03-01", tz="UTC")
END = T0 + pd.Timedelta(days=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Hook:
    """A webhook receiver on 127.0.0.1 that records JSON bodies; fails the first ``fail`` requests with 503."""

    def __init__(self, port: int, fail: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.fail = fail
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.paths.append(self.path)
                if hook.fail > 0:
                    hook.fail -= 1
                    self.send_response(503)
                else:
                    hook.bodies.append(json.loads(body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook(_free_port())
    yield h
    h.close()


@pytest.fixture
def shifted(registered: Callable[..., Any]) -> None:
    registered()
    log_rows("churn", 1, make_data(1500, 60, shift=20.0), T0, step_s=50)


def test_alert_context_names_feature_amount_and_top_segment(shifted: None, hook: Hook) -> None:
    url = f"http://127.0.0.1:{hook.server.server_port}/services/T000/SECRET-TOKEN"
    M.define_monitor("daily", "churn", window="1d", segments=["plan", "charges"],
                     alerts=[{"kind": "log"}, {"kind": "webhook", "url": url, "format": "slack"}, {"kind": "webhook", "url": url}])
    result = M.run_monitor("daily", end=END)
    charges = next(a for a in result.alerts if a["subject"] == "charges")
    assert charges["message"].startswith("charges: mean 64.9 → 8") and "(+3" in charges["message"] and "ks " in charges["message"]
    ctx = charges["context"]
    assert ctx["top_segments"][0]["segment"].startswith("charges in [") and ctx["top_segments"][0]["current_share"] > 0.3
    assert ctx["affected_predictions"] == 1500 and ctx["version"] == 1 and ctx["image_svg"].startswith("<svg")
    assert sum(ctx["distribution"]["current"]) == pytest.approx(1.0) and "keel monitor report daily" in ctx["report"]
    slack = [b for b in hook.bodies if "blocks" in b]
    generic = [b for b in hook.bodies if "context" in b]
    assert any("charges" in b["text"] for b in slack) and any(b["subject"] == "charges" for b in generic)
    assert all(p == "/services/T000/SECRET-TOKEN" for p in hook.paths)
    stored = A.list_alerts(monitor="daily")
    assert all(a["delivered"] for a in stored)
    assert "SECRET-TOKEN" not in json.dumps([a["deliveries"] for a in stored], default=str)
    assert {d["sink"] for d in stored[0]["deliveries"]} == {"log", f"webhook:http://127.0.0.1:{hook.server.server_port}"}


def test_dedup_cooldown_ack_and_resolve(shifted: None, hook: Hook) -> None:
    url = f"http://127.0.0.1:{hook.server.server_port}/x"
    M.define_monitor("daily", "churn", window="1d", checks=["drift"], alerts=[{"kind": "webhook", "url": url}], cooldown="1h")
    M.run_monitor("daily", end=END)
    first = len(hook.bodies)
    M.run_monitor("daily", end=END)
    open_ = A.list_alerts(status="open", monitor="daily")
    assert len(hook.bodies) == first  # within the cooldown: no second notification
    charges = next(a for a in open_ if a["subject"] == "charges")
    assert charges["occurrences"] == 2 and len([a for a in open_ if a["subject"] == "charges"]) == 1
    acked = A.ack_alert(charges["id"], user="ana")
    assert acked["status"] == "acked" and acked["acked_by"] == "ana"
    done = A.resolve_alert(charges["id"])
    assert done["status"] == "resolved" and done["resolved_time"] is not None
    with pytest.raises(ValidationError, match="already resolved"):
        A.resolve_alert(charges["id"])
    with pytest.raises(NotFoundError, match="keel alerts ls"):
        A.ack_alert(99999)
    M.run_monitor("daily", end=END)
    fresh = [a for a in A.list_alerts(status="open") if a["subject"] == "charges"]
    assert len(fresh) == 1 and fresh[0]["id"] != charges["id"]  # after resolve, a new occurrence opens a new alert
    with pytest.raises(ValidationError, match="Did you mean 'open'"):
        A.list_alerts(status="opne")


def test_a_webhook_that_is_down_is_retried_with_backoff_and_shown_undelivered(shifted: None) -> None:
    port = _free_port()
    M.define_monitor("daily", "churn", window="1d", checks=["drift"],
                     alerts=[{"kind": "webhook", "url": f"http://127.0.0.1:{port}/hook", "retries": 3, "backoff": 0.01}])
    M.run_monitor("daily", end=END)
    alert = next(a for a in A.list_alerts(monitor="daily") if a["subject"] == "charges")
    d = alert["deliveries"][0]
    assert not alert["delivered"] and d["attempts"] == 3 and "Connection" in d["error"] and alert["status"] == "open"
    hook = Hook(port, fail=1)  # back up, but the first request fails once more
    try:
        M.run_monitor("daily", end=END)  # the retry of undelivered alerts runs with every monitor run
        again = A.list_alerts(monitor="daily")
        assert all(a["delivered"] for a in again)
        assert sorted(a["deliveries"][0]["attempts"] for a in again)[-1] == 2  # one of them needed the second attempt
        assert any(b["subject"] == "charges" for b in hook.bodies)
    finally:
        hook.close()


def test_email_over_smtp_to_a_real_local_server(shifted: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiosmtpd.controller import Controller

    received: list[Any] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(envelope)
            return "250 OK"

    port = _free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        M.define_monitor("daily", "churn", window="1d", checks=["drift"],
                         alerts=[{"kind": "email", "host": "127.0.0.1", "port": port, "from": "keel@example.com", "to": ["ops@example.com"]}])
        M.run_monitor("daily", end=END)
    finally:
        controller.stop()
    import email

    msgs = [email.message_from_bytes(e.content) for e in received]
    charges = next(m for m in msgs if "charges" in m["Subject"])
    assert charges["To"] == "ops@example.com"
    parts = list(charges.walk())
    text = next(p for p in parts if p.get_content_type() == "text/plain").get_payload(decode=True).decode()
    assert "charges: mean 64.9" in text and "top segments" in text and "distribution (reference → current share)" in text
    assert any(p.get_content_type() == "image/svg+xml" for p in parts)
    png = next(p for p in parts if p.get_content_type() == "image/png").get_payload(decode=True)
    assert png.startswith(b"\x89PNG")
    assert all(a["delivered"] for a in A.list_alerts(monitor="daily"))
