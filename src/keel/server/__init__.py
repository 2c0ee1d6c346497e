"""The platform server: keel's REST API, MLflow REST compatibility, authentication and the web UI.

``keel server`` runs :func:`create_app` on uvicorn. Routes are thin: each calls the
same library function as the matching CLI command, inside ``keel.config.acting_as``
so every event records the authenticated user.
"""

from __future__ import annotations

from keel.server.app import create_app

__all__ = ["create_app"]
