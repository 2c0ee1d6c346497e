"""The web UI, served by ``keel server`` at ``/`` (and ``keel ui`` for a local server).

Server-rendered HTML (Jinja2 templates in ``templates/``) with progressive
enhancement (``static/keel.js``, our own, small); plots are drawn on the server as
SVG (:mod:`keel.server.ui.svg`), so no third-party JavaScript is served. Each page
module in :data:`PAGES` exposes ``router`` (a ``fastapi.APIRouter`` whose routes are
left out of the OpenAPI document); its templates live in ``templates/<module>/``.

Pages use the same identity and roles as the API: ``ident: Identity = Depends(ui_identity)``
(:mod:`keel.server.ui.render`) and :func:`keel.server.auth.authorize`; with auth on, a
browser without a session is sent to ``/login``; forms carry the CSRF token.
"""

from __future__ import annotations

import importlib
from typing import Any

# One module per section; each owns its URL prefix (see the docstring of each).
PAGES = [
    "keel.server.ui.pages.home",         # /, /login, /logout, /ui/static/...
    "keel.server.ui.pages.runs",         # /experiments, /runs, /runs/{id}, /compare
    "keel.server.ui.pages.models",       # /models, /models/{name}, /models/{name}/{version}
    "keel.server.ui.pages.features",     # /features, /features/{view}
    "keel.server.ui.pages.pipelines",    # /pipelines, /pipelines/runs/{id}, /schedules
    "keel.server.ui.pages.deployments",  # /deployments, /deployments/{name}
    "keel.server.ui.pages.monitoring",   # /monitoring, /monitoring/{monitor}, /alerts/{id}
    "keel.server.ui.pages.lineage",      # /lineage/..., /diagnose/{model}/{version}
]


def install(app: Any) -> None:
    """Mount every page's router and the UI's error and login-redirect handlers on ``app``."""
    from keel.server.ui import render

    for name in PAGES:
        app.include_router(importlib.import_module(name).router, include_in_schema=False)
    render.install(app)
