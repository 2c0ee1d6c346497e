"""The model pages in a real browser: models -> a model -> a version -> request promotion -> approve (as an approver) -> the audit trail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.server._api import train
from tests.server.test_routes_registry import _registry_config

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ui")]


def _sign_in(page: Any, url: str, user: str, password: str) -> None:
    page.goto(url + "/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(url + "/")


def test_request_then_approve_a_promotion(project: Path, ui_server: Any, page: Any) -> None:
    import keel
    from keel.store import users as U

    _registry_config(project, {"require_approval": ["production"]})
    train()
    train(C=0.5, seed=1)
    U.add_user("mia", role="member", password="pw-mia-123")
    U.add_user("bob", role="approver", password="pw-bob-123")
    server = ui_server(project, "--auth")

    _sign_in(page, server.url, "mia", "pw-mia-123")
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Models").click()
    page.wait_for_url(server.url + "/models")
    page.get_by_role("link", name="churn", exact=True).click()
    page.get_by_role("link", name="v2", exact=True).first.click()
    page.wait_for_url(server.url + "/models/churn/2")
    assert page.get_by_role("link", name="Lineage of v2").get_attribute("href") == "/lineage/models/churn/2"
    page.get_by_label("Environment").select_option("production")
    page.get_by_label("Reason", exact=True).fill("better recall")
    page.get_by_role("button", name="Request promotion").click()
    page.wait_for_url(server.url + "/models/churn?*")
    assert "waits for an approver" in page.get_by_role("status").inner_text()
    assert page.get_by_role("button", name="Approve").count() == 0  # a member may not approve
    page.get_by_role("button", name="Sign out").click()

    _sign_in(page, server.url, "bob", "pw-bob-123")
    page.goto(server.url + "/models/churn")
    (req,) = keel.registry.list_requests("churn", "pending")
    page.get_by_label(f"Reason for #{req['id']}").fill("checked the slices")
    page.get_by_role("button", name="Approve").click()
    page.wait_for_url(server.url + "/models/churn?*")
    assert f"Approved #{req['id']}" in page.get_by_role("status").inner_text()
    audit = page.get_by_role("table", name="Every registry event of churn, newest first")
    first = audit.get_by_role("row").nth(1).inner_text()
    assert "approve → production" in first and "bob" in first and "checked the slices" in first
    assert keel.registry.get_model("churn").environments == {"production": 2}
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
