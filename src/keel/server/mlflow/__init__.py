"""MLflow REST compatibility: ``/api/2.0/mlflow/`` and ``/api/2.0/mlflow-artifacts/``.

What the official mlflow 3.x client calls, over keel's library: an MLflow run is
a keel run, an MLflow model version a keel model version (of the ``mlflow``
flavor), an uploaded artifact a keel artifact. Errors come back in MLflow's
shape (``error_code``, ``message``) with the status MLflow's server uses, so
the client raises the exceptions it expects. See docs/server.md.
"""

from __future__ import annotations

from fastapi import APIRouter

from keel.server.mlflow import artifacts, models, tracking

router = APIRouter()
router.include_router(tracking.router)
router.include_router(models.router)
router.include_router(artifacts.router)

__all__ = ["router"]
