"""The deployments, monitoring and lineage pages (httpx) over a store built through the library (tests/ui/_ops.py)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ui._ops import ROWS, WINDOWS, OpsStore, build

pytestmark = pytest.mark.anyio


@pytest.fixture
def ops(project: Path) -> Iterator[OpsStore]:
    yield build()
    from keel.store.prediction_log import close_prediction_log

    close_prediction_log()


def _html(r: Any) -> str:
    assert r.headers["content-type"].startswith("text/html"), r.headers["content-type"]
    return str(r.text)


async def test_deployments_list_and_a_deployment(ops: OpsStore, ui_client: Any) -> None:
    from keel.config import settings

    r = await ui_client.get("/deployments")
    body = _html(r)
    assert r.status_code == 200 and '<a href="/deployments/churn-live">churn-live</a>' in body
    assert ">shadow</span>" in body and 'href="/models/churn/1">churn v1</a>' in body and 'href="/models/churn/2">churn v2</a>' in body
    r = await ui_client.get("/deployments/churn-live?window=24h")
    body = _html(r)
    assert r.status_code == 200 and float(r.headers["x-render-ms"]) > 1  # the queries counted, not only the template
    # routes with the traffic each answered (every window's rows on both routes) and their latency
    n = f"{WINDOWS * ROWS:,}"
    routes = body[body.index('id="routes"'):body.index('id="traffic"')]
    assert routes.count(f'<td class="num">{n}</td>') == 2 and "9 ms</td>" in routes and "11 ms</td>" in routes  # p99 of v1 and v2
    for chart in ("Requests per minute, per route", "Latency p50 and p99, per route", "Error rate, per route"):
        svg = re.search(rf'<svg class="chart"[^>]*aria-label="{chart}".*?</svg>', body, re.S)
        assert svg and svg.group(0).count("<polyline") >= 2, chart
    # the shadow comparison: paired requests, agreement, score differences, paired quality and the verdict
    assert "Paired requests</th><td class=\"num\">" + n in body and "Agreement" in body and "Score difference" in body
    assert "Quality on labelled requests (paired)" in body and "roc_auc" in body
    assert re.search(r"Recommendation: <strong[^>]*>(promote|keep|not enough data)</strong>", body)
    # the change history, newest first, with who and why
    assert body.index("objectives checked") < body.index("shadow the retrained model")
    assert f"<td>{settings().acting_user}</td>" in body
    r = await ui_client.get("/deployments/churn-live")  # the last hour by default
    assert r.status_code == 200 and '<option value="1h" selected>' in r.text and "logged requests in the window" in r.text
    r = await ui_client.get("/deployments/churn-live?window=5y")
    assert r.status_code == 422 and "window=&#39;5y&#39;" in _html(r)
    r = await ui_client.get("/deployments/churn-liv")
    assert r.status_code == 404 and "Did you mean" in _html(r) and "churn-live" in r.text


async def test_monitoring_overview_and_monitor_page(ops: OpsStore, ui_client: Any) -> None:
    from keel.monitoring.alerts import list_alerts

    n_open = len(list_alerts(status="open"))
    assert n_open > 0
    r = await ui_client.get("/monitoring")
    body = _html(r)
    assert r.status_code == 200 and 'href="/monitoring/churn-hourly">churn-hourly</a>' in body
    assert f'<strong class="bad">{n_open}</strong> open alerts' in body
    assert f'href="/alerts?status=open&amp;monitor=churn-hourly">{n_open}</a>' in body
    r = await ui_client.get("/monitoring?model=other")
    assert "No monitor of other yet" in r.text

    r = await ui_client.get("/monitoring/churn-hourly")
    body = _html(r)
    assert r.status_code == 200
    heat = re.search(r'<svg class="chart"[^>]*aria-label="Drift of churn-hourly[^"]*".*?</svg>', body, re.S)
    assert heat, "no heat map"
    cells = re.findall(r'<a href="/monitoring/churn-hourly\?feature=([a-z]+)&amp;window=(\d+)#distribution">', heat.group(0))
    assert len(cells) >= WINDOWS * 3 and {"charges", "tenure", "control"} <= {f for f, _ in cells}
    # the default distribution: the most drifted feature in the last window (charges, shifted there)
    assert '<option value="charges" selected>' in body and "level\n  <span class=\"bad\">alert</span>" in body
    bars = re.search(r'<svg class="chart"[^>]*aria-label="charges: reference vs current.*?</svg>', body, re.S)
    assert bars and 'data-title="reference · ' in bars.group(0) and 'data-title="current · ' in bars.group(0)
    assert "roc_auc: realized vs estimated" in body and "Label coverage" in body
    # a cell's link: the first window, before the shift, is no drift
    first = min(int(w) for _, w in cells)
    r = await ui_client.get(f"/monitoring/churn-hourly?feature=charges&window={first}")
    assert r.status_code == 200 and '<span class="good">ok</span>' in r.text and f'<option value="{first}" selected>' in r.text
    r = await ui_client.get("/monitoring/churn-hourly?feature=charge")
    assert r.status_code == 200 and "Did you mean &#39;charges&#39;" in r.text
    r = await ui_client.get("/monitoring/churn-hourli")
    assert r.status_code == 404 and "Did you mean" in _html(r)


async def test_alerts_timeline_filters_and_detail(ops: OpsStore, ui_client: Any) -> None:
    from markupsafe import escape

    from keel.monitoring.alerts import list_alerts

    alerts = list_alerts()
    r = await ui_client.get("/alerts")
    body = _html(r)
    assert r.status_code == 200 and "Alerts opened per hour" in body
    assert set(re.findall(r'<th scope="row"><a href="/alerts/(\d+)">', body)) == {str(a["id"]) for a in alerts}
    r = await ui_client.get("/alerts?status=resolved&monitor=churn-hourly")
    assert r.status_code == 200 and "No alert resolved for churn-hourly." in r.text
    r = await ui_client.get("/alerts?status=opened")
    assert r.status_code == 422 and "Did you mean &#39;open&#39;" in _html(r)

    charges = next(a for a in alerts if a["subject"] == "charges")
    r = await ui_client.get(f"/alerts/{charges['id']}")
    body = _html(r)
    assert r.status_code == 200 and str(escape(charges["message"][:60])) in body
    assert "<th scope=\"row\">method</th><td>ks</td>" in body and "Summary statistics, reference vs current" in body
    assert re.search(r"<th scope=\"row\">charges in \[[^<]+\)</th>", body), "no top segment"
    assert 'href="/monitoring/churn-hourly?feature=charges&amp;window=' in body
    assert ">Acknowledge</button>" in body and ">Resolve</button>" in body  # auth off: the local user is admin
    assert 'href="/lineage/models/churn/1"' in body and 'href="/diagnose/churn/1"' in body
    r = await ui_client.get("/alerts/99999")
    assert r.status_code == 404 and "keel alerts ls" in _html(r)


async def _sign_in(app: Any, user: str) -> AsyncIterator[Any]:
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://ui", headers={"accept": "text/html"}) as c:
        r = await c.post("/login", data={"username": user, "password": "password-" + user, "next": "/"})
        assert r.status_code == 303
        yield c


async def test_ack_and_resolve_by_role_with_csrf(ops: OpsStore) -> None:
    from keel.monitoring.alerts import get_alert, list_alerts
    from keel.server.app import create_app
    from keel.store import users as U

    U.add_user("vic", role="viewer", password="password-vic")
    U.add_user("mia", role="member", password="password-mia")
    app = create_app(auth=True)
    aid = next(a["id"] for a in list_alerts(status="open") if a["subject"] == "charges")
    async for viewer in _sign_in(app, "vic"):
        r = await viewer.get(f"/alerts/{aid}")
        assert r.status_code == 200 and "Acknowledge" not in r.text and "Resolve</button>" not in r.text
        r = await viewer.post(f"/alerts/{aid}/ack", data={"csrf_token": viewer.cookies["keel_csrf"]})
        assert r.status_code == 403 and "text/html" in r.headers["content-type"]
        assert get_alert(aid)["status"] == "open"
    async for member in _sign_in(app, "mia"):
        r = await member.get(f"/alerts/{aid}")
        assert ">Acknowledge</button>" in r.text and 'name="csrf_token"' in r.text
        r = await member.post(f"/alerts/{aid}/ack")  # no CSRF token
        assert r.status_code == 403 and get_alert(aid)["status"] == "open"
        r = await member.post(f"/alerts/{aid}/ack", data={"csrf_token": member.cookies["keel_csrf"]})
        assert r.status_code == 303 and r.headers["location"].startswith(f"/alerts/{aid}?flash=")
        a = get_alert(aid)
        assert a["status"] == "acked" and a["acked_by"] == "mia"
        r = await member.get(r.headers["location"])
        assert "acknowledged by mia" in r.text and ">Acknowledge</button>" not in r.text and ">Resolve</button>" in r.text
        r = await member.post(f"/alerts/{aid}/resolve", data={"csrf_token": member.cookies["keel_csrf"]})
        a = get_alert(aid)
        assert r.status_code == 303 and a["status"] == "resolved" and a["resolved_by"] == "mia"
        r = await member.get(f"/alerts/{aid}")
        assert "Resolve</button>" not in r.text and "by mia" in r.text
        r = await member.post(f"/alerts/{aid}/resolve", data={"csrf_token": member.cookies["keel_csrf"]})
        assert r.status_code == 422 and "already resolved" in r.text


async def test_lineage_form_graphs_and_unknown_ids(ops: OpsStore, ui_client: Any) -> None:
    from keel.registry.versions import get_version

    r = await ui_client.get("/lineage")
    body = _html(r)
    assert r.status_code == 200 and all(f'<label for="{f}">' in body for f in ("request_id", "model", "view"))
    r = await ui_client.get("/lineage?model=churn@champion")
    assert r.status_code == 303 and r.headers["location"] == "/lineage/models/churn/champion"
    r = await ui_client.get("/lineage?request_id=w0-1")
    assert r.status_code == 303 and r.headers["location"] == "/lineage/predictions/w0-1"
    r = await ui_client.get("/lineage?model=churn")
    assert r.status_code == 422 and "NAME/VERSION" in _html(r)

    run_id = get_version("churn", 1).run_id
    for url in ("/lineage/models/churn/1", "/lineage/models/churn/champion"):
        r = await ui_client.get(url)
        body = _html(r)
        assert r.status_code == 200 and "Lineage of churn v1" in body
        graph = re.search(r'<svg class="chart"[^>]*aria-label="Lineage of churn v1".*?</svg>', body, re.S)
        assert graph, "no graph"
        for href in (f"/runs/{run_id}", "/deployments/churn-live", "/monitoring/churn-hourly", "/models/churn/1"):
            assert f'<a href="{href}">' in graph.group(0), href
        assert "<details open><summary>" in body and "train (training)" in body  # the same tree as a list
    r = await ui_client.get(f"/lineage/predictions/{ops.request_ids[0]}")
    body = _html(r)
    assert r.status_code == 200 and f'<a href="/lineage/predictions/{ops.request_ids[0]}">' in body
    assert '<a href="/deployments/churn-live">' in body and '<a href="/models/churn/1">' in body and '<a href="/models/churn/2">' in body
    r = await ui_client.get("/lineage/predictions/no-such-request")
    assert r.status_code == 404 and "Request ids are in each response" in _html(r)
    r = await ui_client.get("/lineage/models/churn/9")
    assert r.status_code == 404 and "Not found" in _html(r)
    r = await ui_client.get("/lineage/features/usage")
    assert r.status_code == 404 and "No applied feature view or source named" in _html(r)


async def test_diagnose_page(ops: OpsStore, ui_client: Any) -> None:
    from keel.monitoring.alerts import list_alerts

    r = await ui_client.get("/diagnose/churn/champion")
    body = _html(r)
    assert r.status_code == 200 and "Diagnose churn v1" in body
    findings = body[body.index('id="findings"'):body.index('id="alerts"')]
    assert "open alert(s)" in findings and "drifted: charges" in findings
    for a in list_alerts(status="open"):
        assert f'<a href="/alerts/{a["id"]}">#{a["id"]}</a>' in body
    assert "Most drifted features, latest run" in body and "charges in [" in body  # with the alert's top segments
    assert f"{2 * WINDOWS * ROWS:,} logged predictions of churn" in body and "Predictions per day" in body
    assert "churn-live: create by" in body and "shadow the retrained model" in body
    assert re.search(r'aria-label="Lineage of churn v1".*?<a href="/models/churn/1">', body, re.S)
    r = await ui_client.get("/diagnose/churn/1")
    assert r.status_code == 200
    r = await ui_client.get("/diagnose/nope/production")
    assert r.status_code == 404 and "text/html" in r.headers["content-type"]


@pytest.fixture
def fs_model(project: Path) -> Iterator[Any]:
    from keel.features import loader, online
    from tests.serving.conftest import make_feature_model

    online.reset_context()
    yield make_feature_model(project)
    from keel.store.prediction_log import close_prediction_log

    close_prediction_log()
    loader.clear_cache()
    online.reset_context()


async def test_feature_lineage_links_views_sources_and_versions(fs_model: Any, ui_client: Any) -> None:
    r = await ui_client.get("/lineage?view=usage")
    assert r.status_code == 303 and r.headers["location"] == "/lineage/features/usage"
    r = await ui_client.get("/lineage/features/usage")
    body = _html(r)
    assert r.status_code == 200 and "Who uses usage" in body
    graph = re.search(r'<svg class="chart"[^>]*aria-label="Who uses usage".*?</svg>', body, re.S)
    assert graph and '<a href="/features/usage">' in graph.group(0) and '<a href="/models/churn_fs/1">' in graph.group(0)
    r = await ui_client.get("/lineage/models/churn_fs/1")
    body = _html(r)
    assert '<a href="/features/usage">' in body and '<a href="/lineage/features/customers">' in body  # a view, and a source's users
    r = await ui_client.get("/lineage/features/usag")
    assert r.status_code == 404 and "Did you mean &#39;usage&#39;" in _html(r)
