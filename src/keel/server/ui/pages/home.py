"""UI pages: the overview at ``/``, the login page, logout, and the UI's own static files.

``/`` counts what the store holds along the lifecycle (experiments and runs, models and
what is in production, feature views, deployments, monitors and open alerts) and lists
the latest registry events, each linking to its page. ``/login`` exchanges a user name
and password for the session and CSRF cookies (the same check, rate limit and token as
``POST /v1/login``); ``/logout`` revokes that token and clears the cookies.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from keel.errors import AuthenticationError, KeelError, TooManyAttempts
from keel.server.auth import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    Identity,
    action,
    authorize,
    login,
    new_csrf_token,
)
from keel.server.ui.render import page, ui_identity
from keel.store import users as U

router = APIRouter()
IDENT = Depends(ui_identity)
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
SESSION_DAYS = 7.0


def _counts() -> dict[str, int]:
    from keel.store.metadata import get_metadata_store
    from keel.store.schema import deployments as D
    from keel.store.schema import features as F
    from keel.store.schema import monitoring as M
    from keel.store.schema import registry as R
    from keel.store.schema import tracking as T

    def n(conn: Any, query: Any) -> int:
        return int(conn.execute(query).scalar() or 0)

    count = sa.func.count()
    with get_metadata_store().read() as conn:
        return {
            "experiments": n(conn, sa.select(count).select_from(T.experiments)),
            "runs": n(conn, sa.select(count).select_from(T.runs)),
            "models": n(conn, sa.select(count).select_from(R.registered_models)),
            "in_production": n(conn, sa.select(count).select_from(R.model_aliases).where(R.model_aliases.c.name == "production")),
            "feature_views": n(conn, sa.select(sa.func.count(sa.distinct(F.feature_objects.c.name))).where(F.feature_objects.c.kind == "feature_view")),
            "deployments": n(conn, sa.select(count).select_from(D.deployments)),
            "monitors": n(conn, sa.select(count).select_from(M.monitors)),
            "open_alerts": n(conn, sa.select(count).select_from(M.alerts).where(M.alerts.c.status == "open")),
        }


def _recent_events(limit: int = 15) -> list[dict[str, Any]]:
    from keel.store.metadata import get_metadata_store
    from keel.store.schema.registry import model_events as E

    with get_metadata_store().read() as conn:
        rows = conn.execute(sa.select(E.c.model, E.c.action, E.c.target, E.c.from_version, E.c.to_version, E.c.outcome,
                                      E.c.user, E.c.ts_ms, E.c.reason).order_by(E.c.id.desc()).limit(limit)).mappings().all()
    return [dict(r) for r in rows]


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, ident: Identity = IDENT) -> HTMLResponse:
    authorize(ident, "read")
    return page(request, ident, "home/overview.html", title="keel", counts=_counts(), events=_recent_events())


def _safe_next(next_url: str | None) -> str:
    """Only a path on this server (no //host, no scheme): an open redirect would help phishing."""
    if not next_url or not next_url.startswith("/") or next_url.startswith("//") or "\\" in next_url:
        return "/"
    return next_url


def _anonymous() -> Identity:
    return Identity(user="", role="viewer", authenticated=False, scope="read")


@router.get("/login", response_class=HTMLResponse, openapi_extra=action("public"))
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return page(request, _anonymous(), "home/login.html", title="Sign in", next=_safe_next(next), error="", username="")


@router.post("/login", openapi_extra=action("public"))
def login_submit(request: Request, username: str = Form(..., max_length=255), password: str = Form(..., max_length=1024),
                 next: str = Form("/")) -> Response:
    target = _safe_next(next)
    try:
        p = login(username, password, request.client.host if request.client else None)
    except (AuthenticationError, TooManyAttempts) as exc:
        status = exc.http_status
        return page(request, _anonymous(), "home/login.html", title="Sign in", next=target, username=username,
                    error=exc.message, status_code=status)
    _token, plain = U.create_token(p.user, name="keel ui", scope=U.SCOPES[U.rank(p.role) - 1], expires_days=SESSION_DAYS)
    response = RedirectResponse(target, status_code=303)
    secure = request.url.scheme == "https"
    max_age = int(SESSION_DAYS * 86400)
    response.set_cookie(SESSION_COOKIE, plain, max_age=max_age, httponly=True, samesite="strict", secure=secure)
    response.set_cookie(CSRF_COOKIE, new_csrf_token(), max_age=max_age, httponly=False, samesite="strict", secure=secure)
    return response


@router.post("/logout", openapi_extra=action("read"))  # any signed-in user may sign out (CSRF still applies)
def logout(request: Request, ident: Identity = IDENT) -> Response:
    if ident.token_id:
        try:
            U.revoke_token(ident.token_id)
        except KeelError:  # already revoked: the cookies go anyway
            pass
    response = RedirectResponse("/login" if getattr(request.app.state, "auth", False) else "/", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    response.delete_cookie(CSRF_COOKIE)
    return response


@router.get("/ui/static/{name}", openapi_extra=action("public"))
def static(name: str) -> Response:
    """The UI's own CSS and JavaScript (files of this package; nothing third-party)."""
    suffix = name[name.rfind("."):] if "." in name else ""
    if "/" in name or name.startswith(".") or suffix not in STATIC_TYPES:
        return Response("Not found", status_code=404, media_type="text/plain")
    try:
        data = resources.files("keel.server.ui").joinpath("static", name).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return Response("Not found", status_code=404, media_type="text/plain")
    return Response(data, media_type=STATIC_TYPES[suffix], headers={"Cache-Control": "public, max-age=3600"})
