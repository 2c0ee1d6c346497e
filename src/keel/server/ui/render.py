"""Rendering a UI page: the Jinja2 environment, the page's identity, roles and CSRF, errors as HTML.

A page route looks like::

    @router.get("/models/{name}", response_class=HTMLResponse)
    def model_page(request: Request, name: str, ident: Identity = Depends(ui_identity)) -> HTMLResponse:
        authorize(ident, "read", model=name)
        return page(request, ident, "models/model.html", section="models", title=name, model=...)

and a form that changes something::

    @router.post("/models/{name}/approve", openapi_extra=action("approve"))
    def approve(request: Request, name: str, reason: str = Form(...), ident: Identity = Depends(ui_identity)) -> Response:
        authorize(ident, "approve", model=name)
        ...  # the same library call as the CLI
        return redirect(f"/models/{name}", flash="Approved.")

Templates extend ``base.html`` and get ``user``, ``role``, ``auth`` (is auth on),
``csrf_token`` (put ``{{ csrf_field() }}`` in every POST form), ``can(action, model=...,
experiment=...)`` (show a button only to a role that may use it; the route checks again),
``section`` (the active nav entry), ``flash`` and the helpers in :data:`FILTERS`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup, escape

from keel.errors import AuthenticationError, KeelError
from keel.server.auth import CSRF_COOKIE, CSRF_FIELD, SAFE_METHODS, Identity, identity, role_for
from keel.store import users as U

# The nav bar: (section, label, href).
NAV = [
    ("runs", "Runs", "/experiments"),
    ("models", "Models", "/models"),
    ("features", "Features", "/features"),
    ("pipelines", "Pipelines", "/pipelines"),
    ("deployments", "Deployments", "/deployments"),
    ("monitoring", "Monitoring", "/monitoring"),
    ("lineage", "Lineage", "/lineage"),
]
UI_PREFIXES_NOT = ("/v1/", "/api/", "/health", "/openapi.json", "/docs", "/redoc")


class LoginRequired(Exception):
    """A browser without a session asked for a page: send it to ``/login?next=...``."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


async def ui_identity(request: Request) -> AsyncIterator[Identity]:
    """The UI's identity dependency: the API's :func:`~keel.server.auth.identity`, but a GET
    without credentials is redirected to the login page instead of answered with 401."""
    request.state.ui_started = time.perf_counter()  # X-Render-Ms counts from here: identity, the route's reads, the template
    gen: AsyncGenerator[Identity, None] = identity(request)  # type: ignore[assignment]
    try:
        ident = await gen.__anext__()
    except AuthenticationError:
        if request.method in SAFE_METHODS:
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise LoginRequired(path) from None
        raise
    try:
        yield ident
    finally:
        await gen.aclose()


def fmt_time(ms: Any) -> str:
    """Epoch milliseconds (or a datetime) as 'YYYY-MM-DD HH:MM:SS' UTC; '' for None."""
    if ms is None or ms == "":
        return ""
    if isinstance(ms, datetime):
        dt = ms if ms.tzinfo else ms.replace(tzinfo=UTC)
    else:
        dt = datetime.fromtimestamp(float(ms) / 1000, tz=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def fmt_duration(ms: Any) -> str:
    """Milliseconds as '850 ms', '12.3 s', '4 min 5 s', '2 h 3 min'."""
    if ms is None:
        return ""
    ms = float(ms)
    if ms < 1000:
        return f"{ms:.0f} ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


def fmt_num(v: Any, digits: int = 4) -> str:
    """A number short and exact enough to read: 0.8731, 1,234, 1.2e-05; other values as text."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != v:
            return "NaN"
        if v == 0 or 1e-3 <= abs(v) < 1e6:
            if abs(v) < 1:
                return f"{v:.{digits}g}"
            text = f"{v:,.{max(0, digits - len(str(int(abs(v)))))}f}"
            return text.rstrip("0").rstrip(".") if "." in text else text  # 3,260 keeps its zero; 2.500 -> 2.5
        return f"{v:.{digits - 1}e}"
    return str(v)


FILTERS = {"time": fmt_time, "duration": fmt_duration, "num": fmt_num, "urlquote": lambda s: quote(str(s), safe="")}


@cache
def environment() -> Any:
    """The Jinja2 environment over this package's ``templates/`` (autoescaped, strict undefined)."""
    try:
        import jinja2
    except ImportError as exc:  # pragma: no cover - depends on the install
        from keel.errors import missing_extra

        raise missing_extra("jinja2", "server") from exc
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("keel.server.ui", "templates"),
        autoescape=jinja2.select_autoescape(["html", "svg"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    env.globals["nav"] = NAV
    return env


def csrf_token(request: Request) -> str:
    return request.cookies.get(CSRF_COOKIE, "")


def can(ident: Identity, action: str, *, model: str | None = None, experiment: str | None = None) -> bool:
    """Whether ``ident`` may do ``action`` (read, write, approve, admin): for showing buttons."""
    if not ident.authenticated:
        return ident.role == "admin" and ident.scope == "admin"
    if U.scope_rank(ident.scope) < U.scope_rank(action):
        return False
    role = ident.role if model is None and experiment is None else role_for(ident, model=model, experiment=experiment)
    return U.rank(role) >= U.rank(U.ACTION_ROLE[action])


def page(request: Request, ident: Identity, template: str, *, section: str = "", title: str = "keel",
         status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render ``template`` with the page's common context; ``X-Render-Ms`` says how long the server took
    (from the page's identity dependency on: the route's reads and the rendering)."""
    started = getattr(request.state, "ui_started", None) or time.perf_counter()
    token = csrf_token(request)
    env = environment()
    body = env.get_template(template).render(
        request=request, ident=ident, user=ident.user, role=ident.role,
        auth=bool(getattr(request.app.state, "auth", False)), csrf_token=token,
        csrf_field=lambda: Markup(f'<input type="hidden" name="{CSRF_FIELD}" value="{escape(token)}">'),
        can=lambda action, **kw: can(ident, action, **kw),
        section=section, title=title, flash=request.query_params.get("flash", ""), **context,
    )
    # From the identity check on (ui_identity sets ui_started); a route's own clock (ui_ms) only where that is missing
    extra = 0.0 if getattr(request.state, "ui_started", None) else float(getattr(request.state, "ui_ms", 0.0))
    server_ms = (time.perf_counter() - started) * 1000 + extra
    return HTMLResponse(body, status_code=status_code, headers={"X-Render-Ms": f"{server_ms:.1f}"})


def redirect(url: str, flash: str | None = None) -> RedirectResponse:
    """A 303 to ``url`` after a form post (with a one-line message shown on the next page)."""
    if flash:
        url += ("&" if "?" in url else "?") + "flash=" + quote(flash)
    return RedirectResponse(url, status_code=303)


def wants_html(request: Request) -> bool:
    """A UI request (not the API's): its errors are rendered as pages."""
    path = request.url.path
    return not path.startswith(UI_PREFIXES_NOT) and "text/html" in (request.headers.get("accept") or "")


def error_page(request: Request, status: int, title: str, message: str, hint: str | None = None,
               headers: Mapping[str, str] | None = None) -> HTMLResponse:
    ident = getattr(request.state, "keel_identity", None)
    if not isinstance(ident, Identity):
        ident = Identity(user="", role="viewer", authenticated=False, scope="read")
    body = environment().get_template("error.html").render(
        request=request, ident=ident, user=ident.user, role=ident.role, auth=bool(getattr(request.app.state, "auth", False)),
        csrf_token="", csrf_field=lambda: "", can=lambda *a, **k: False, section="", title=title, flash="",
        status=status, message=message, hint=hint,
    )
    return HTMLResponse(body, status_code=status, headers=dict(headers or {}))


def install(app: Any) -> None:
    """Login redirects, and KeelErrors on UI pages as HTML (the API keeps its JSON bodies)."""

    async def to_login(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoginRequired)
        return RedirectResponse("/login?next=" + quote(exc.next_url, safe=""), status_code=303)

    app.add_exception_handler(LoginRequired, to_login)
    app.state.ui_error = keel_error_page


def keel_error_page(request: Request, exc: KeelError) -> HTMLResponse | None:
    """The HTML page for a KeelError on a UI route (None on the API's routes)."""
    if not wants_html(request):
        return None
    title = {401: "Sign in needed", 403: "Not allowed", 404: "Not found", 429: "Too many attempts"}.get(exc.http_status, "Error")
    return error_page(request, exc.http_status, title, exc.message, getattr(exc, "hint", None))
