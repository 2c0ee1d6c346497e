"""Routes of the platform API: pipelines."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["pipelines"])
