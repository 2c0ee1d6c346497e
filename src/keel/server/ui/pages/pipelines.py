"""UI pages: pipelines — ``/pipelines``, ``/pipelines/runs/{id}``, ``/schedules``.

- ``/pipelines``: the project's pipelines with their parameters, the latest pipeline runs
  with their status and cache hits, and the runs queued for ``keel worker``.
- ``/pipelines/runs/{id}``: the run's graph (:func:`keel.server.ui.svg.dag`: each step's
  status, cache hit and duration), its steps table, and "Resume" on a failed or killed run
  for members: queued with :func:`keel.pipelines.queue.enqueue_resume`, the server's
  pipeline-run queue, so a ``keel worker`` runs it as ``keel pipelines resume`` would
  (finished steps from the cache). Nothing runs inside the request.
- ``/schedules``: schedules and triggers, and what they fired: when, the outcome, the run,
  and how many missed cron minutes coalesced into one run.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from keel.errors import KeelError
from keel.server.auth import Identity, authorize
from keel.server.ui.pages.timing import STARTED, timed_page
from keel.server.ui.render import redirect, ui_identity
from keel.server.ui.svg import GraphNode, dag

router = APIRouter(dependencies=[STARTED])
IDENT = Depends(ui_identity)
RUNS_PAGE = 50
FIRES_PAGE = 100
RESUMABLE = ("failed", "killed", "crashed")
MAX_COALESCED = 10  # missed cron occurrences counted per fire, at most (croniter steps one at a time: a page stays fast)


def _project_pipelines() -> tuple[list[dict[str, Any]], str | None]:
    """The project's pipelines, described; a module that fails to import is an error on the page, not a 500."""
    from keel.pipelines.executors import one_line
    from keel.pipelines.pipeline import describe, project_pipelines

    try:
        return [describe(p) for _, p in sorted(project_pipelines().items())], None
    except KeelError as exc:
        return [], exc.message
    except Exception as exc:  # the project's own code raised while importing: show it, keep the runs listed
        return [], f"The project's pipeline modules could not be imported: {one_line(exc)}"


@router.get("/pipelines", response_class=HTMLResponse)
def pipelines_page(request: Request, pipeline: str | None = Query(None, max_length=255),
                   limit: int = Query(RUNS_PAGE, ge=1, le=500), ident: Identity = IDENT) -> HTMLResponse:
    from keel.pipelines.queue import list_queued
    from keel.pipelines.runner import list_runs

    authorize(ident, "read")
    pipes, problem = _project_pipelines()
    return timed_page(request, ident, "pipelines/list.html", section="pipelines", title="Pipelines", pipelines=pipes, problem=problem,
                runs=list_runs(pipeline or None, limit), queued=list_queued(None, 20), pipeline=pipeline or "", limit=limit)


def _step_nodes(graph: dict[str, Any], steps: dict[str, dict[str, Any]]) -> tuple[list[GraphNode], list[tuple[str, str]]]:
    from keel.server.ui.render import fmt_duration

    nodes, edges = [], []
    for st in graph.get("steps", []):
        s = steps.get(st["name"], {})
        status = "cached" if s.get("cache_hit") else s.get("status", "pending")
        detail = " · ".join(p for p in (status, fmt_duration(s.get("duration_ms")) if s.get("duration_ms") is not None else "") if p)
        href = f"/runs/{s['step_run_id']}" if s.get("step_run_id") else None
        nodes.append(GraphNode(st["name"], st["name"], detail, status, href))
        edges += [(up, st["name"]) for up in st.get("upstream", [])]
    return nodes, edges


@router.get("/pipelines/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str, ident: Identity = IDENT) -> HTMLResponse:
    from keel.pipelines.queue import pending_resume
    from keel.pipelines.runner import decode_params, run_steps
    from keel.tracking.query import get_run

    row, steps = run_steps(run_id)
    tracked = get_run(row.run_id)
    authorize(ident, "read", experiment=tracked.experiment)
    graph = json.loads(row.graph)
    by_name = {s["step"]: s for s in steps}
    order = [st["name"] for st in graph.get("steps", [])]
    nodes, edges = _step_nodes(graph, by_name)
    ordered = [{**by_name.get(n, {"step": n, "status": "pending"}), "where": st.get("where"), "upstream": st.get("upstream", [])}
               for n, st in zip(order, graph.get("steps", []), strict=True)]
    try:
        params = {k: str(v) for k, v in decode_params(row.params).items()}
    except (KeelError, ValueError, TypeError):
        params = {"(stored)": row.params}
    return timed_page(request, ident, "pipelines/run.html", section="pipelines", title=f"{row.name} run {row.run_id[:8]}",
                row=row, run=tracked, params=params, steps=ordered, graph=dag(nodes, edges, title=f"Steps of {row.name}"),
                resumable=tracked.status in RESUMABLE, queued_resume=pending_resume(row.run_id),
                cached=sum(1 for s in steps if s.get("cache_hit")), saved_ms=sum(int(s.get("saved_ms") or 0) for s in steps))


@router.post("/pipelines/runs/{run_id}/resume")
def resume(request: Request, run_id: str, ident: Identity = IDENT) -> Response:
    """Queue a resume of a failed run for ``keel worker`` (as ``keel pipelines resume RUN`` runs it)."""
    from keel.pipelines.queue import enqueue_resume
    from keel.pipelines.runner import run_steps
    from keel.tracking.query import get_run

    row, _steps = run_steps(run_id)
    authorize(ident, "write", experiment=get_run(row.run_id).experiment)
    queued = enqueue_resume(row.run_id)
    return redirect(f"/pipelines/runs/{row.run_id}",
                    flash=f"Resume queued ({queued.id[:8]}); a keel worker runs it, finished steps from the cache.")


def _coalesced(fire: dict[str, Any], cron: str | None) -> int:
    """How many cron occurrences this one run stood for (missed minutes coalesce into one run), at most MAX_COALESCED."""
    if not cron or fire["event"].get("kind") != "cron" or not fire["event"].get("due"):
        return 1
    from croniter import CroniterError, croniter

    claimed = datetime.fromtimestamp(fire["claimed_ms"] / 1000, tz=UTC)
    try:
        steps = croniter(cron.strip(), datetime.fromisoformat(str(fire["event"]["due"])))
        n = 1
        while n < MAX_COALESCED and steps.get_next(datetime) <= claimed:
            n += 1
    except (CroniterError, ValueError, KeyError):
        return 1
    return n


@router.get("/schedules", response_class=HTMLResponse)
def schedules_page(request: Request, schedule: str | None = Query(None, max_length=255), ident: Identity = IDENT) -> HTMLResponse:
    from keel.pipelines.schedule import list_schedules
    from keel.pipelines.triggers import fires

    authorize(ident, "read")
    found = list_schedules()
    crons = {s.name: s.spec for s in found if s.kind == "cron"}
    history = []
    for f in fires(schedule or None, FIRES_PAGE):
        f = {**f, "event": json.loads(f["event"] or "{}")}
        f["coalesced"] = _coalesced(f, crons.get(f["schedule"]))
        history.append(f)
    # Retraining policies (keel.loop.policies) are added to this page at the merge: a section
    # beside the schedules, read through the loop's own listing function.
    return timed_page(request, ident, "pipelines/schedules.html", section="pipelines", title="Schedules", schedules=found,
                fires=history, jobs={s.name: s.job for s in found}, max_coalesced=MAX_COALESCED, schedule=schedule or "", limit=FIRES_PAGE)
