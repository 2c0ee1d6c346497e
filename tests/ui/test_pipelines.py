"""The pipeline pages: /pipelines, /pipelines/runs/{id} (graph, steps, Resume through the queue), /schedules."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.anyio

PIPELINES = '''
import os

import keel


@keel.step
def load(n: int) -> list:
    return list(range(n))


@keel.step
def total(xs: list, k: int = 2) -> int:
    if os.path.exists("fail.flag"):
        raise RuntimeError("the flag says fail")
    return sum(xs) * k


@keel.pipeline(experiment="sums")
def training(n: int = 10, k: int = 2):
    """Sum a range, k times."""
    return total(load(n), k)
'''


@pytest.fixture
def flows(project: Path) -> Iterator[Path]:
    (project / "pipelines.py").write_text(textwrap.dedent(PIPELINES))
    sys.modules.pop("pipelines", None)
    sys.path.insert(0, str(project))
    yield project
    sys.path.remove(str(project))
    sys.modules.pop("pipelines", None)


def _failed_run(root: Path) -> str:
    from keel.errors import StepFailed
    from keel.pipelines import run

    (root / "fail.flag").write_text("1")
    with pytest.raises(StepFailed) as info:
        run("pipelines:training", {"n": 5})
    (root / "fail.flag").unlink()
    return str(info.value.result.run_id)


async def test_pipelines_page_lists_pipelines_and_runs(flows: Path, ui_client: Any) -> None:
    from keel.pipelines import run

    ok = run("pipelines:training", {"n": 4}).run_id
    failed = _failed_run(flows)
    r = await ui_client.get("/pipelines")
    assert r.status_code == 200 and float(r.headers["x-render-ms"]) >= 0  # timed, never a pass/fail figure (benchmarks/bench_ui.py measures it)
    assert "<code>pipelines:training</code>" in r.text and "Sum a range, k times." in r.text and "n: int = 10" in r.text
    assert f'href="/pipelines/runs/{ok}"' in r.text and f'href="/pipelines/runs/{failed}"' in r.text
    assert 'class="status-failed">failed' in r.text and 'class="status-finished">finished' in r.text


async def test_a_project_whose_pipelines_do_not_import(project: Path, ui_client: Any) -> None:
    (project / "pipelines.py").write_text("import no_such_module_here\n")
    sys.modules.pop("pipelines", None)
    try:
        r = await ui_client.get("/pipelines")
    finally:
        sys.modules.pop("pipelines", None)
    assert r.status_code == 200 and 'role="alert"' in r.text and "no_such_module_here" in r.text


async def test_run_page_draws_the_graph_and_the_steps(flows: Path, ui_client: Any) -> None:
    from keel.pipelines import run

    first = run("pipelines:training", {"n": 4}).run_id
    again = run("pipelines:training", {"n": 4}).run_id  # every step from the cache
    r = await ui_client.get(f"/pipelines/runs/{first}")
    assert r.status_code == 200 and "<svg" in r.text and "marker-end" in r.text  # load -> total
    assert "Resume" not in r.text  # a finished run needs none
    assert r.text.count('<td class="status-finished">finished') == 2 and ">miss<" in r.text
    r = await ui_client.get(f"/pipelines/runs/{again}")
    assert "2/2 steps from the cache" in r.text and r.text.count(">hit") == 2 and f'href="/runs/{first}"' not in r.text.split("Steps")[0]
    failed = _failed_run(flows)
    r = await ui_client.get(f"/pipelines/runs/{failed}")
    assert "the flag says fail" in r.text and ">Resume</button>" in r.text and 'class="status-failed">failed' in r.text
    assert (await ui_client.get("/pipelines/runs/nope")).status_code == 404


async def test_resume_is_refused_to_viewers_and_without_csrf(flows: Path) -> None:
    import httpx

    from keel.pipelines.queue import list_queued
    from keel.server.app import create_app
    from keel.store import users as U

    failed = _failed_run(flows)
    U.add_user("ann", role="viewer", password="pw-ann-123")
    app = create_app(auth=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://ui", headers={"accept": "text/html"}) as c:
        assert (await c.post("/login", data={"username": "ann", "password": "pw-ann-123"})).status_code == 303
        page = (await c.get(f"/pipelines/runs/{failed}")).text
        assert ">Resume</button>" not in page and "the flag says fail" in page
        r = await c.post(f"/pipelines/runs/{failed}/resume", data={"csrf_token": c.cookies["keel_csrf"]})
        assert r.status_code == 403 and "text/html" in r.headers["content-type"]
        r = await c.post(f"/pipelines/runs/{failed}/resume")
        assert r.status_code == 403
    assert list_queued() == []


@pytest.mark.slow
async def test_resume_queues_the_run_and_a_worker_resumes_it(flows: Path, ui_client: Any) -> None:
    from keel.pipelines import queue
    from keel.pipelines.runner import run_steps

    failed = _failed_run(flows)
    r = await ui_client.post(f"/pipelines/runs/{failed}/resume")
    assert r.status_code == 303 and "Resume%20queued" in r.headers["location"]
    (item,) = queue.list_queued()
    assert (item.status, item.resume_of, item.name) == ("queued", failed, "training")
    r = await ui_client.post(f"/pipelines/runs/{failed}/resume")  # twice: still one in the queue
    assert r.status_code == 303 and len(queue.list_queued()) == 1
    assert "A resume is queued" in (await ui_client.get(f"/pipelines/runs/{failed}")).text
    (done,) = queue.work(drain=True, poll_seconds=0.05)
    assert done.status == "finished" and done.run_id
    row, steps = run_steps(done.run_id)
    assert row.resume_of == failed and row.trigger == f"resume:{failed}"
    assert {s["step"]: (s["status"], bool(s["cache_hit"])) for s in steps} == {"load": ("cached", True), "total": ("finished", False)}
    r = await ui_client.post(f"/pipelines/runs/{done.run_id}/resume")  # a finished run is not resumed
    assert r.status_code == 409 and "only a failed or killed run" in r.text


async def test_schedules_page_shows_fires_and_coalesced_minutes(flows: Path, ui_client: Any) -> None:
    from keel.pipelines import triggers
    from keel.pipelines.schedule import add_schedule

    now = datetime.now(UTC)
    add_schedule("every-minute", "pipelines:training", cron="* * * * *", params={"n": 3}, now=now - timedelta(minutes=10))
    (fired,) = triggers.tick(now=now)
    assert fired.status == "finished"
    r = await ui_client.get("/schedules")
    assert r.status_code == 200 and "cron * * * * *" in r.text and "n=3" in r.text
    assert 'class="status-finished">finished' in r.text and f'href="/pipelines/runs/{fired.run_id}"' in r.text
    assert " minutes in one run" in r.text  # ten missed minutes, one run
    r = await ui_client.get("/schedules?schedule=other")
    assert "Nothing fired yet." in r.text
