"""The shell in a real browser: the overview renders with no console error, sign-in and sign-out work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ui")]


def test_overview_and_keyboard_navigation(project: Path, ui_server: Any, page: Any) -> None:
    server = ui_server(project)
    page.goto(server.url + "/")
    assert page.title() == "keel · keel"
    assert page.get_by_role("navigation", name="Sections").get_by_role("link").count() == 7
    page.keyboard.press("Tab")  # the first stop is the skip link
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"


def test_sign_in_then_out(project: Path, ui_server: Any, page: Any) -> None:
    from keel.store import users as U

    U.add_user("ann", role="approver", password="correct horse")
    server = ui_server(project, "--auth")
    page.goto(server.url + "/")
    assert page.url.endswith("/login?next=%2F")
    page.get_by_label("User name").fill("ann")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text().startswith("Wrong user name or password") or "password" in page.get_by_role("alert").inner_text()
    page.get_by_label("Password").fill("correct horse")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(server.url + "/")
    assert "ann · approver" in page.inner_text("header")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(server.url + "/login")
