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

# The app includes these one by one (keel.server.app): each level of nesting is one more
# pass over its routes per request in FastAPI's matching. ``router`` holds all three.
ROUTERS = [tracking.router, models.router, artifacts.router]
router = APIRouter()
for _r in ROUTERS:
    router.include_router(_r)

__all__ = ["ROUTERS", "router"]
