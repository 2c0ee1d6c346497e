"""The UI's shell: overview, login and logout, errors as pages, static files, the OpenAPI document untouched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.anyio


async def test_overview_counts_what_the_store_holds(ui_client: Any) -> None:
    import keel

    with keel.start_run(experiment="exp-a"):
        keel.log_metric("loss", 0.5)
    r = await ui_client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "<strong>1</strong> experiments" in r.text and "<strong>1</strong> runs" in r.text
    assert float(r.headers["x-render-ms"]) >= 0
    assert 'aria-current="page"' not in r.text  # the overview is no section


async def test_errors_on_pages_are_pages_and_the_api_keeps_json(ui_client: Any) -> None:
    r = await ui_client.get("/no/such/page")
    assert r.status_code == 404 and "text/html" in r.headers["content-type"] and "Not found" in r.text
    r = await ui_client.get("/v1/no/such/route")
    assert r.status_code == 404 and r.json()["error"] == "NotFound"
    r = await ui_client.get("/ui/static/../app.py")
    assert r.status_code == 404
    r = await ui_client.get("/ui/static/keel.js")
    assert r.status_code == 200 and "text/javascript" in r.headers["content-type"]
    spec = (await ui_client.get("/openapi.json")).json()
    assert not [p for p in spec["paths"] if p in ("/", "/login", "/logout") or p.startswith("/ui/")]


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil"])
async def test_login_never_redirects_off_the_server(project: Path, target: str) -> None:
    import httpx

    from keel.server.app import create_app
    from keel.store import users as U

    U.add_user("ann", role="viewer", password="correct horse")
    app = create_app(auth=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://ui") as c:
        r = await c.post("/login", data={"username": "ann", "password": "correct horse", "next": target})
        assert r.status_code == 303 and r.headers["location"] == "/"


async def test_login_session_csrf_and_logout(project: Path) -> None:
    import httpx

    from keel.server.app import create_app
    from keel.store import users as U

    U.add_user("ann", role="viewer", password="correct horse")
    app = create_app(auth=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://ui", headers={"accept": "text/html"}) as c:
        r = await c.get("/?x=1")
        assert r.status_code == 303 and r.headers["location"] == "/login?next=%2F%3Fx%3D1"
        r = await c.post("/login", data={"username": "ann", "password": "wrong", "next": "/"})
        assert r.status_code == 401 and "Sign in" in r.text and "correct horse" not in r.text
        r = await c.post("/login", data={"username": "ann", "password": "correct horse", "next": "/"})
        assert r.status_code == 303 and "keel_session" in r.cookies and "keel_csrf" in r.cookies
        r = await c.get("/")
        assert r.status_code == 200 and "ann · viewer" in r.text
        r = await c.post("/logout")  # no CSRF token: refused, and still signed in
        assert r.status_code == 403 and "text/html" in r.headers["content-type"]
        r = await c.post("/logout", data={"csrf_token": c.cookies["keel_csrf"]})
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert [t.revoked for t in U.list_tokens("ann")] == [True]  # the session's token is gone, not only the cookie
        c.cookies.clear()
        assert (await c.get("/")).status_code == 303


def test_svg_downsampling_keeps_the_peaks() -> None:
    import numpy as np

    from keel.server.ui.svg import downsample, line_chart

    x = np.arange(100_000)
    y = np.sin(x / 500.0)
    y[31_337] = 9.0  # a spike the drawing must keep
    dx, dy = downsample(x, y, 400)
    assert len(dx) <= 800 and dy.max() == 9.0 and dx[np.argmax(dy)] == 31_337
    svg = str(line_chart({"loss": (x, y)}, title="loss"))
    assert svg.startswith("<svg") and svg.count("<polyline") == 1 and "loss: 31,337 → 9" in svg  # the spike is drawn and hoverable


def test_dag_lays_out_layers_and_escapes_labels() -> None:
    from keel.server.ui.svg import GraphNode, dag

    svg = str(dag([GraphNode("a", "load <data>"), GraphNode("b", "train", status="failed"), GraphNode("c", "eval")],
                  [("a", "b"), ("b", "c")]))
    assert "load &lt;data&gt;" in svg and "<data>" not in svg and svg.count("marker-end") == 2
