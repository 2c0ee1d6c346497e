"""Fixtures of the web UI's tests: the pages in-process (httpx) and in a real browser.

- ``ui_client``: an ``httpx.AsyncClient`` on ``create_app()`` over the test's ``project``
  (auth off), for asserting on rendered HTML and server time without a browser.
- ``quickstart_store``: a project filled by ``keel quickstart`` (once per test process;
  browser tests share one xdist worker through ``xdist_group("ui")``).
- ``ui_server(root, *args)``: ``keel server`` in its own process on a free port.
- ``browser`` / ``page``: Debian's Chromium (/usr/bin/chromium, headless) driven by
  Playwright at 1280x800. A page that logs a JavaScript console error or raises fails its
  test (a page itself answered 4xx, e.g. a refusal the test asserts, is not such an error;
  a missing style sheet, script or image is); each test's last screen is saved as a PNG under the artifacts folder
  (``KEEL_TEST_ARTIFACTS``, default ``/tmp/keel-test-artifacts/ui``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server._api import Server

CHROMIUM = os.environ.get("KEEL_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("KEEL_TEST_ARTIFACTS", "/tmp/keel-test-artifacts")) / "ui"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def ui_client(project: Path) -> AsyncIterator[Any]:
    import httpx

    from keel.server.app import create_app

    app = create_app(auth=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://ui", headers={"accept": "text/html"}) as c:
        yield c


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_") or k == "KEEL_REQUIRE_SERVICES"}
    env["PYTHONPATH"] = SRC
    return env


@pytest.fixture(scope="session")
def quickstart_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder after ``keel quickstart --customers 600`` (trained, registered, served, monitored)."""
    root = tmp_path_factory.mktemp("ui-quickstart")
    folder = root / "keel-quickstart"
    done = subprocess.run([sys.executable, "-c", "from keel.cli.main import main; main()", "quickstart", "--dir", str(folder),
                           "--customers", "600"], cwd=root, env=_clean_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return folder


@pytest.fixture
def ui_server() -> Iterator[Callable[..., Server]]:
    """``start(root, "--auth", env={...})`` -> a running ``keel server`` (stopped after the test)."""
    started: list[Server] = []

    def start(root: Path, *args: str, env: dict[str, str] | None = None) -> Server:
        base = {k: "" for k in os.environ if k.startswith("KEEL_") and k != "KEEL_REQUIRE_SERVICES"}
        server = Server(root, *args, env={**base, **(env or {})})
        started.append(server)
        return server

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    """Chromium for one test. Not session-wide: Playwright's sync API holds an event loop on the
    thread while it runs, which would break the asyncio tests that share the worker."""
    if not Path(CHROMIUM).exists():
        msg = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium; .ci/run does)"
        if os.environ.get("KEEL_REQUIRE_SERVICES", "") in {"1", "true", "yes"}:
            pytest.fail(msg)
        pytest.skip(msg)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context at 1280x800; console errors and page errors fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    errors: list[str] = []
    documents: set[str] = set()  # pages answered 4xx on purpose (a refusal, a failed sign-in): their status is asserted

    def on_response(r: Any) -> None:
        if r.request.resource_type == "document" and r.status >= 400:
            documents.add(r.url)

    def on_console(m: Any) -> None:
        if m.type != "error":
            return
        if m.text.startswith("Failed to load resource") and (m.location or {}).get("url") in documents:
            return
        errors.append(f"console {m.type}: {m.text} ({m.location})")

    pg.on("response", on_response)
    pg.on("console", on_console)
    pg.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    yield pg
    try:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / (re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name) + ".png")), full_page=True)
    finally:
        context.close()
    assert not errors, "JavaScript errors on the page:\n" + "\n".join(errors)


@pytest.fixture
def ops_store(project: Path) -> Iterator[Any]:
    """The test's project filled by ``tests.ui._ops.build()`` (two versions, a shadow deployment, six windows of monitored traffic)."""
    from keel.store.prediction_log import close_prediction_log
    from tests.ui._ops import build

    yield build()
    close_prediction_log()
