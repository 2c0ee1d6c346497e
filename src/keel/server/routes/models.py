"""Routes of the platform API: models."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["models"])
