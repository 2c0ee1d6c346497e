"""Routes of the platform API: the project's pipelines and queued runs.

``POST /v1/pipeline-runs`` queues a run in the metadata store (:func:`keel.pipelines.queue.enqueue`)
and answers 202 at once; a ``keel worker`` started beside the server runs it with the project's
code. Nothing runs inside a request.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query

from keel.server.auth import Identity, authorize, identity
from keel.server.routes.common import Name
from keel.server.schemas import PipelineOut, PipelineRunDetail, PipelineRunIn, PipelineRunOut

router = APIRouter(tags=["pipelines"])
IDENT = Depends(identity)


@router.get("/v1/pipelines", response_model=list[PipelineOut], summary="The project's pipelines with their parameters")
def list_pipelines(ident: Identity = IDENT) -> list[dict[str, Any]]:
    from keel.pipelines.pipeline import describe, project_pipelines

    authorize(ident, "read")
    return [describe(p) for _, p in sorted(project_pipelines().items())]


@router.post("/v1/pipeline-runs", response_model=PipelineRunOut, status_code=202,
             summary="Queue a run of a project pipeline for `keel worker` (parameters checked now; the same id twice queues once)")
def start_run(body: PipelineRunIn, ident: Identity = IDENT) -> dict[str, Any]:
    from keel.pipelines.pipeline import project_pipeline
    from keel.pipelines.queue import enqueue

    authorize(ident, "write", experiment=project_pipeline(body.pipeline).experiment)
    return enqueue(body.pipeline, body.params, smoke=body.smoke, refresh=body.refresh, engine=body.engine, run_id=body.id).to_dict()


@router.get("/v1/pipeline-runs", response_model=list[PipelineRunOut], summary="Queued pipeline runs, newest first")
def list_runs(status: Literal["queued", "running", "finished", "failed", "crashed"] | None = None,
              limit: int = Query(50, ge=1, le=1000), ident: Identity = IDENT) -> list[dict[str, Any]]:
    from keel.pipelines.queue import list_queued

    authorize(ident, "read")
    return [r.to_dict() for r in list_queued(status, limit)]


@router.get("/v1/pipeline-runs/{run_id}", response_model=PipelineRunDetail, summary="A queued run's status, its pipeline run and its steps")
def get_run(run_id: Name, ident: Identity = IDENT) -> dict[str, Any]:
    from keel.pipelines import queue

    item = queue.get(run_id)
    authorize(ident, "read", experiment=item.experiment)
    return {**item.to_dict(), "steps": queue.steps(item)}
