"""Routes of the platform API: features."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["features"])
