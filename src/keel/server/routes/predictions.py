"""Routes of the platform API: SQL over the prediction log (``keel predictions query``) and feedback labels.

A query runs in DuckDB with external access off and only the log's part files
readable (:func:`keel.serving.sql.query`), so it can read nothing else of the
server's machine: ``read_csv('/etc/passwd')`` is a 422.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from keel.server.auth import Identity, authorize, identity
from keel.server.schemas import FeedbackIn, FeedbackOut, QueryIn, QueryOut

router = APIRouter(tags=["predictions"])
IDENT = Depends(identity)


@router.post("/v1/predictions/query", response_model=QueryOut,
             summary="One read-only SELECT over the view `predictions` (every model's log, or one model's)")
def query(body: QueryIn, ident: Identity = IDENT) -> dict[str, Any]:
    from keel.serving.sql import query as run_query
    from keel.serving.sql import rows

    authorize(ident, "read", model=body.model)
    table = run_query(body.sql, model=body.model)
    return {"columns": table.column_names, "rows": rows(table.slice(0, body.limit)), "num_rows": table.num_rows,
            "truncated": table.num_rows > body.limit}


@router.post("/v1/feedback", response_model=FeedbackOut,
             summary="Ground-truth labels for logged predictions, by request id or entity (keel.log_feedback)")
def feedback(body: FeedbackIn, ident: Identity = IDENT) -> dict[str, Any]:
    from keel.monitoring.feedback import log_feedback

    authorize(ident, "write", model=body.model)
    report = log_feedback(body.request_ids, body.labels, model=body.model, timestamps=body.timestamps, entities=body.entities,
                          entity_column=body.entity_column, horizon=body.horizon)
    return report.to_dict()
