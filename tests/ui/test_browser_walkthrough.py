"""The whole lifecycle in a real browser on a store filled by ``keel quickstart``, with ``keel server --auth``.

runs → compare 2 runs → the model → request promotion (a member) → the approval refused for a
viewer → approved by an approver → the deployment → monitoring → an alert, acknowledged → the
lineage of a prediction (the steps are in ``tests/ui/_walk.py``, which ``docs/screenshots.py``
replays for the README). Every page is asserted on what it shows and saved as a screenshot under
``KEEL_TEST_ARTIFACTS`` (else the test's tmp_path); the ``page`` fixture fails the test on any
JavaScript console error or page error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.ui import _walk

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ui")]


def test_lifecycle_walkthrough(quickstart_store: Path, ui_server: Any, page: Any, tmp_path: Path) -> None:
    artifacts = Path(os.environ["KEEL_TEST_ARTIFACTS"]) / "ui" / "walkthrough" if os.environ.get("KEEL_TEST_ARTIFACTS") else tmp_path
    artifacts.mkdir(parents=True, exist_ok=True)
    shots: list[str] = []

    def shoot(name: str) -> None:
        page.screenshot(path=str(artifacts / f"{len(shots) + 1:02d}-{name}.png"), full_page=True)
        shots.append(name)

    _walk.prepare(quickstart_store)
    server = ui_server(quickstart_store, "--auth")
    seen = _walk.walk(page, server.url, shoot, data=_walk.holdout(quickstart_store))

    assert shots == ["overview", "runs", "compare", "model", "approved", "deployment", "monitoring", "alert", "lineage"]
    assert all((artifacts / f"{i + 1:02d}-{n}.png").stat().st_size > 10_000 for i, n in enumerate(shots))
    # what the browser did is what the store now holds, recorded as the CLI records it
    check = ("import json; from keel import registry; from keel.monitoring.alerts import get_alert; "
             f"a = get_alert({seen['alert']}); "
             "print(json.dumps({'envs': registry.get_model('churn').environments, 'acked_by': a['acked_by'], "
             f"'request': [r['status'] for r in registry.list_requests('churn') if r['id'] == {seen['request_id']}]}}))")
    done = subprocess.run([sys.executable, "-c", check], cwd=quickstart_store, env=_walk._env(quickstart_store),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout.strip().splitlines()[-1])
    assert state["envs"]["staging"] == 2 and state["acked_by"] == "bob" and state["request"] == ["approved"], state
