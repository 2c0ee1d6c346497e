"""In a real browser: deployments → a deployment → monitoring → an alert → acknowledge it → the lineage of the version."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ui._ops import OpsStore, build

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ui")]


@pytest.fixture
def ops(project: Path) -> Iterator[OpsStore]:
    yield build()
    from keel.store.prediction_log import close_prediction_log

    close_prediction_log()


def test_deployment_to_alert_to_lineage(ops: OpsStore, project: Path, ui_server: Any, page: Any) -> None:
    from keel.monitoring.alerts import get_alert
    from keel.store import users as U

    U.add_user("mia", role="member", password="password-mia")
    server = ui_server(project, "--auth")
    page.goto(server.url + "/deployments")
    page.get_by_label("User name").fill("mia")
    page.get_by_label("Password").fill("password-mia")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(server.url + "/deployments")
    assert page.get_by_role("heading", name="Deployments").is_visible()

    page.get_by_role("link", name="churn-live").click()
    page.wait_for_url(server.url + "/deployments/churn-live")
    assert page.get_by_role("heading", name="Deployment churn-live").is_visible()
    page.locator("select#window").select_option("7d")  # the select submits its form (keel.js)
    page.wait_for_url("**/deployments/churn-live?window=7d")
    assert page.get_by_role("img", name="Requests per minute, per route").is_visible()
    assert page.get_by_role("table", name="Shadow: the challenger on the champion's requests").is_visible()
    assert page.get_by_role("table", name="Quality on labelled requests (paired)").is_visible()

    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Monitoring").click()
    page.wait_for_url(server.url + "/monitoring")
    page.get_by_role("link", name="churn-hourly").first.click()
    page.wait_for_url(server.url + "/monitoring/churn-hourly")
    heat = page.get_by_role("img", name="Drift of churn-hourly: statistic / threshold per feature and window")
    assert heat.is_visible()
    page.locator("select#feature").select_option("tenure")
    page.wait_for_url("**feature=tenure**")
    assert page.get_by_role("img", name="tenure: reference vs current", exact=False).is_visible()

    page.get_by_role("main").get_by_role("listitem").get_by_role("link", name="charges").first.click()  # an open alert
    page.wait_for_url("**/alerts/*")
    alert_id = int(page.url.rsplit("/", 1)[-1])
    assert page.get_by_role("heading", name="Top segments").is_visible()
    page.get_by_role("button", name="Acknowledge").click()
    page.wait_for_url(f"**/alerts/{alert_id}?flash=*")
    assert "acknowledged by mia" in page.get_by_role("status").inner_text()
    assert page.get_by_role("button", name="Acknowledge").count() == 0
    assert get_alert(alert_id)["acked_by"] == "mia"

    page.get_by_role("main").get_by_role("link", name="lineage", exact=True).first.click()
    page.wait_for_url("**/lineage/models/churn/*")
    graph = page.get_by_role("img", name="Lineage of churn v1")
    assert graph.is_visible() and graph.locator("rect").count() >= 6
    graph.locator('a[href="/models/churn/1"]').click()
    page.wait_for_url(server.url + "/models/churn/1")
