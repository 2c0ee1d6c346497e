"""MLflow REST compatibility: /api/2.0/mlflow/ and /api/2.0/mlflow-artifacts/."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["mlflow"])
