"""The whole server time of a page in its ``X-Render-Ms`` header, the reads before rendering included.

:func:`keel.server.ui.render.page` times the template and adds ``request.state.ui_ms``;
a router built with ``APIRouter(dependencies=[STARTED])`` notes when the request reached
it (before the identity and every read), and :func:`timed_page` hands the time spent
since then to ``page``.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse

from keel.server.ui.render import page


def _started(request: Request) -> None:
    request.state.ui_t0 = time.perf_counter()


STARTED = Depends(_started)


def timed_page(request: Request, *args: Any, **kwargs: Any) -> HTMLResponse:
    """:func:`~keel.server.ui.render.page`, with the reads since the request arrived counted in ``X-Render-Ms``."""
    t0 = getattr(request.state, "ui_t0", None)
    if t0 is not None:
        request.state.ui_ms = (time.perf_counter() - t0) * 1000
    return page(request, *args, **kwargs)
