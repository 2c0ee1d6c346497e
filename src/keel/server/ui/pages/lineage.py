"""UI pages: lineage (see keel.server.ui.PAGES for the URLs this module owns)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
