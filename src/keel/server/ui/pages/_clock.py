"""The server time of a page's data, so ``X-Render-Ms`` counts the queries and not only the template.

``page()`` adds ``request.state.ui_ms`` to its rendering time; a route takes ``_t: None = CLOCK``
(the request's start) and calls :func:`spent` just before it renders.
"""

from __future__ import annotations

import time

from fastapi import Depends, Request


def _start(request: Request) -> None:
    request.state.ui_started = time.perf_counter()


CLOCK = Depends(_start)


def spent(request: Request) -> None:
    """Record the time since the route started as the page's data time."""
    started = getattr(request.state, "ui_started", None)
    if started is not None:
        request.state.ui_ms = (time.perf_counter() - started) * 1000
