"""Routes of the platform API: predictions."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["predictions"])
