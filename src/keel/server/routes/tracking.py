"""Routes of the platform API: tracking."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["tracking"])
