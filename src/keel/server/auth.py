"""Who is calling, and may they: the identity of a request and the permission check.

Every route takes ``ident: Identity = Depends(identity)`` and calls
:func:`authorize` before it acts, inside ``keel.config.acting_as(ident.user)``
(done by :func:`identity` for the request's duration), so every audit event
records the authenticated user.

With auth off (the local single-user default) every caller is the acting user
(``KEEL_USER`` or the OS user) with the admin role. With ``keel server --auth``
a request needs credentials, or it is refused with 401 and ``WWW-Authenticate``:

- ``Authorization: Bearer keel_<id>_<secret>`` (``keel login``, ``keel tokens create``;
  the MLflow client's ``MLFLOW_TRACKING_TOKEN``);
- ``Authorization: Basic`` user:password (``MLFLOW_TRACKING_USERNAME``/``PASSWORD``),
  checked against the argon2 hash; a verified pair is remembered for
  :data:`BASIC_CACHE_SECONDS` under the SHA-256 of the pair and the stored hash
  (never the plaintext), so a password change or a disabled user takes effect at once;
- the ``keel_session`` cookie set by ``POST /v1/login`` with ``cookie: true`` (the web
  UI). A cookie-authenticated request that changes anything must carry the double-submit
  CSRF token: the ``keel_csrf`` cookie's value in the ``X-CSRF-Token`` header or a
  ``csrf_token`` form field.

A route's action is ``read`` for GET/HEAD and ``write`` otherwise, unless it declares
another with ``openapi_extra=action("approve")`` (or ``"admin"``, or ``"public"`` for the
login itself). :func:`identity` refuses (403) a caller whose highest role anywhere is
below the route's action; :func:`authorize` then checks the role on the object acted on
(the highest of the global role, the role on the experiment or model, and ``member``
for a model's owners) and the token's scope. Failed logins are rate-limited per user and
per client address (429 with ``Retry-After``). Every 401, 403 and 429 is recorded in
``auth_refusals`` (who, what, route, when; never a credential) and logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from keel.config import acting_as, settings
from keel.errors import AuthenticationError, ForbiddenError, KeelError, TooManyAttempts
from keel.store import users as U

Role = Literal["viewer", "member", "approver", "admin"]
Action = Literal["read", "write", "approve", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "member", "approver", "admin")
ACTION_KEY = "x-keel-action"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION_COOKIE = "keel_session"
CSRF_COOKIE = "keel_csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
CHALLENGE = 'Bearer realm="keel", Basic realm="keel"'
BASIC_CACHE_SECONDS = 60.0
# Failed logins allowed per window, per user name and per client address.
MAX_FAILURES_PER_USER = 5
MAX_FAILURES_PER_CLIENT = 20
FAILURE_WINDOW_SECONDS = 60.0

log = logging.getLogger("keel.server.auth")


@dataclass(frozen=True)
class Identity:
    """The caller of one request."""

    user: str
    role: Role  # the global role; per-experiment and per-model roles are checked by `authorize`
    authenticated: bool
    token_id: str | None = None
    scope: U.Scope = "admin"  # a token's scope: the most it allows
    cookie: bool = False  # authenticated by the session cookie (CSRF applies)


def action(name: str) -> dict[str, Any]:
    """``openapi_extra`` for a route whose action is not what its method says.

    ``@router.post("/v1/registry/requests/{id}/approve", openapi_extra=action("approve"))``
    """
    if name not in ("read", "write", "approve", "admin", "public"):
        raise ValueError(f"unknown route action {name!r}")
    return {ACTION_KEY: name}


def route_action(route: Any, method: str | None = None) -> str:
    """The action a route needs: its declared ``x-keel-action``, else read (GET/HEAD) or write."""
    declared = (getattr(route, "openapi_extra", None) or {}).get(ACTION_KEY)
    if declared:
        return str(declared)
    methods = {method} if method else set(getattr(route, "methods", None) or {"GET"})
    return "read" if methods <= SAFE_METHODS else "write"


def iter_routes(routes: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(full path, route) of every API route under ``routes`` (``app.routes``), included routers too.

    FastAPI 0.16x keeps an included router as one entry holding ``original_router``
    (with its prefix in ``include_context``) instead of copying its routes.
    """
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            context = getattr(route, "include_context", None)
            yield from iter_routes(inner.routes, prefix + str(getattr(context, "prefix", "") or ""))
        elif hasattr(route, "methods") and hasattr(route, "dependant"):
            yield prefix + route.path, route


def auth_enabled(flag: bool | None) -> bool:
    if flag is not None:
        return flag
    import os

    return os.environ.get("KEEL_SERVER_AUTH", "").lower() in {"1", "true", "yes", "on"}


# -- failed-login rate limit ---------------------------------------------------------------

class FailureLimiter:
    """Counts failed logins per key in a sliding window; :meth:`check` refuses once a key is over."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self._fails: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _live(self, key: str, now: float) -> deque[float]:
        q = self._fails.setdefault(key, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def retry_after(self, key: str) -> int:
        """Seconds until ``key`` may try again (0: now)."""
        now = time.monotonic()
        with self._lock:
            q = self._live(key, now)
            if len(q) < self.limit:
                return 0
            return max(1, int(q[0] + self.window - now + 0.999))

    def fail(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._live(key, now).append(now)
            if len(self._fails) > 100_000:  # bound the memory an attacker can make us spend
                for k in [k for k, q in self._fails.items() if not q][:50_000]:
                    del self._fails[k]

    def reset(self, key: str) -> None:
        with self._lock:
            self._fails.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._fails.clear()


per_user = FailureLimiter(MAX_FAILURES_PER_USER, FAILURE_WINDOW_SECONDS)
per_client = FailureLimiter(MAX_FAILURES_PER_CLIENT, FAILURE_WINDOW_SECONDS)


def _check_rate(user: str | None, client: str | None) -> None:
    by_user = per_user.retry_after(f"u:{user}") if user else 0
    by_client = per_client.retry_after(f"c:{client}") if client else 0
    if by_user or by_client:
        wait = max(by_user, by_client)
        who = f"for {user!r}" if by_user else f"from {client}"
        raise TooManyAttempts(
            f"Too many failed logins {who}; try again in {wait} s.",
            retry_after=wait, hint="Check the user name and password, or use a token (keel login).",
        )


def _failed(user: str | None, client: str | None) -> None:
    if user:
        per_user.fail(f"u:{user}")
    if client:
        per_client.fail(f"c:{client}")


def login(user: str, password: str, client: str | None) -> U.Principal:
    """Check a user name and password, rate-limited per user and client (the login route, basic auth)."""
    _check_rate(user, client)
    record = U.password_record(user)
    stored = record[0] if record else None
    key = hashlib.sha256(f"{user}\0{password}\0{stored}".encode()).hexdigest()
    now = time.monotonic()
    with _basic_lock:
        hit = _basic_cache.get(key)
    if record is not None and hit is not None and hit > now:
        if record[2]:
            raise AuthenticationError(f"User {user!r} is disabled.", hint="Ask an admin to enable it.")
        return U.Principal(user, record[1])
    try:
        principal = U.authenticate_password(user, password)
    except AuthenticationError:
        _failed(user, client)
        raise
    per_user.reset(f"u:{user}")
    with _basic_lock:
        if len(_basic_cache) > 10_000:
            _basic_cache.clear()
        _basic_cache[key] = now + BASIC_CACHE_SECONDS
    return principal


_basic_cache: dict[str, float] = {}  # sha256(user, password, stored hash) -> monotonic expiry
_basic_lock = threading.Lock()


# -- authentication ------------------------------------------------------------------------

def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def _from_token(token: str, client: str | None, *, cookie: bool = False) -> Identity:
    # Not rate-limited: a token's 256 random bits cannot be guessed, and a limit per address
    # would lock out every user behind one proxy with the first bad token.
    p = U.authenticate_token(token)
    return Identity(p.user, p.role, True, p.token_id, p.scope, cookie)


def authenticate(headers: Any, cookies: Any, client: str | None, state: Any = None) -> Identity:
    """The identity of a request's credentials; AuthenticationError (401) without valid ones.

    ``state`` (the request's) gets ``keel_claimed``: the user name basic credentials claim,
    for the audit of a refusal.
    """
    header = headers.get("authorization") or ""
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return _from_token(value, client)
    if scheme.lower() == "basic" and value:
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user, sep, password = "", "", ""
        if not sep or not user:
            raise AuthenticationError("The basic credentials are not valid base64 of 'user:password'.")
        if state is not None:
            state.keel_claimed = user[:255]
        if U.token_id_of(password):  # a token as the password of basic auth (git-style clients)
            ident = _from_token(password, client)
            if ident.user != user:
                raise AuthenticationError(f"The token does not belong to user {user!r}.")
            return ident
        p = login(user, password, client)
        return Identity(p.user, p.role, True)
    if header:
        raise AuthenticationError(f"Unsupported Authorization scheme {scheme[:20]!r}.", hint="Send 'Bearer <token>' or HTTP basic credentials.")
    session = cookies.get(SESSION_COOKIE)
    if session:
        return _from_token(session, client, cookie=True)
    raise AuthenticationError(
        "This keel server requires authentication.",
        hint="Send a token (KEEL_TRACKING_TOKEN, `keel login`; MLflow: MLFLOW_TRACKING_TOKEN) or basic credentials.",
    )


async def _check_csrf(request: Request) -> None:
    expected = request.cookies.get(CSRF_COOKIE) or ""
    sent = request.headers.get(CSRF_HEADER) or ""
    if not sent and "form" in (request.headers.get("content-type") or ""):
        form = await request.form()
        field = form.get(CSRF_FIELD)
        sent = field if isinstance(field, str) else ""
    if not expected or not sent or not hmac.compare_digest(expected.encode(), sent.encode()):
        raise ForbiddenError(
            "Missing or wrong CSRF token on a cookie-authenticated request.",
            hint=f"Send the {CSRF_COOKIE} cookie's value in the {CSRF_HEADER} header or a {CSRF_FIELD} form field.",
        )


def new_csrf_token() -> str:
    """A fresh double-submit token (set it as the ``keel_csrf`` cookie and in forms)."""
    return secrets.token_urlsafe(32)


def _needs(ident: Identity, act: str) -> None:
    """403 when a token's scope is below ``act``."""
    if U.scope_rank(ident.scope) < U.scope_rank(act):
        raise ForbiddenError(f"Token {ident.token_id} has scope {ident.scope!r}; this needs {act!r}.",
                             hint=f"Create a token with --scope {act} (keel tokens create).")


async def identity(request: Request) -> AsyncIterator[Identity]:
    """FastAPI dependency: the caller, with ``acting_as`` set for the rest of the request."""
    if not getattr(request.app.state, "auth", False):
        ident = Identity(user=settings().acting_user, role="admin", authenticated=False)
    else:
        route = request.scope.get("route")
        act = route_action(route, request.method) if route is not None else ("read" if request.method in SAFE_METHODS else "write")
        request.state.keel_action = act
        if act == "public":  # the login itself: no credentials needed, none recorded
            ident = Identity(user="anonymous", role="viewer", authenticated=False, scope="read")
        else:
            ident = await run_in_threadpool(authenticate, request.headers, request.cookies, _client(request), request.state)
            request.state.keel_identity = ident
            if ident.cookie and request.method not in SAFE_METHODS:
                await _check_csrf(request)
            _needs(ident, act)
            needed = U.ACTION_ROLE[act]
            if U.rank(ident.role) < U.rank(needed):
                # The caller may hold the role on some object; `authorize` decides which.
                best = await run_in_threadpool(_best_role, ident)
                if U.rank(best) < U.rank(needed):
                    raise ForbiddenError(f"User {ident.user!r} ({ident.role}) may not {act} here; that needs the {needed} role.",
                                         hint="Ask an admin for the role (keel users set-role).")
    with acting_as(ident.user):
        yield ident


def _best_role(ident: Identity) -> str:
    from keel.store.metadata import get_metadata_store
    from keel.store.schema.auth import owners

    best = U.best_role(ident.user, ident.role)
    if U.rank(best) < U.rank("member"):
        import sqlalchemy as sa

        with get_metadata_store().read() as conn:
            if conn.execute(sa.select(owners.c.user).where(owners.c.kind == "model", owners.c.user == ident.user).limit(1)).first():
                return "member"
    return best


def role_for(ident: Identity, *, experiment: str | None = None, model: str | None = None) -> str:
    """The caller's effective role on the object: global, per object, and ``member`` for a model's owner."""
    if experiment is None and model is None:
        return ident.role
    role = U.role_on(ident.user, global_role=ident.role, experiment=experiment, model=model) or ident.role
    if model is not None and U.rank(role) < U.rank("member"):
        from keel.store.owners import owners_of

        if ident.user in owners_of("model", model):
            role = "member"
    return role


def authorize(ident: Identity, action: Action, *, experiment: str | None = None, model: str | None = None) -> None:
    """Raise AuthenticationError (401) or ForbiddenError (403) unless ``ident`` may do ``action``.

    ``experiment`` / ``model`` name the object acted on, for per-object roles and owners.
    """
    if action not in U.ACTION_ROLE:
        raise ValueError(f"unknown action {action!r}")
    if not ident.authenticated:
        if ident.role == "admin" and ident.scope == "admin":  # auth off: the local user may do anything
            return
        raise AuthenticationError("This needs authentication.", hint="Send a token (keel login).")
    _needs(ident, action)
    needed = U.ACTION_ROLE[action]
    if U.rank(ident.role) >= U.rank(needed):
        return
    role = role_for(ident, experiment=experiment, model=model)
    if U.rank(role) < U.rank(needed):
        what = f" on experiment {experiment!r}" if experiment is not None else f" on model {model!r}" if model is not None else ""
        raise ForbiddenError(f"User {ident.user!r} ({role}) may not {action}{what}; that needs the {needed} role.",
                             hint="Ask an admin for the role (keel users set-role USER ROLE"
                             + (f" --model {model}" if model else f" --experiment {experiment}" if experiment else "") + ").")


# -- refusals: status headers and the audit --------------------------------------------------

def _audit(request: Request, exc: KeelError) -> None:
    ident = getattr(request.state, "keel_identity", None)
    user = ident.user if isinstance(ident, Identity) else getattr(request.state, "keel_claimed", None)
    act = getattr(request.state, "keel_action", None)
    route = getattr(request.scope.get("route"), "path", None) or request.url.path
    reason = exc.message
    try:
        U.record_refusal(status=exc.http_status, method=request.method, route=str(route), reason=reason, user=user,
                         action=act, client=_client(request))
    except KeelError as store_exc:  # the refusal stands even when the audit store is down
        log.error("could not record a refused request: %s", store_exc)
    log.warning("refused %s %s %s user=%s action=%s client=%s: %s", exc.http_status, request.method, route,
                user or "-", act or "-", _client(request) or "-", reason)


def install(app: Any) -> None:
    """The refusal handlers: 401 with WWW-Authenticate, 429 with Retry-After, every refusal audited."""

    async def refused(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, KeelError)
        await run_in_threadpool(_audit, request, exc)
        headers: dict[str, str] = {}
        if isinstance(exc, AuthenticationError):
            headers["WWW-Authenticate"] = CHALLENGE
        if isinstance(exc, TooManyAttempts):
            headers["Retry-After"] = str(exc.retry_after)
        page = getattr(request.app.state, "ui_error", None)  # set by keel.server.ui: a refused page is a page
        html = page(request, exc) if page is not None else None
        if html is not None:
            html.headers.update(headers)
            return html
        return JSONResponse(exc.to_dict(), status_code=exc.http_status, headers=headers)

    for cls in (AuthenticationError, ForbiddenError, TooManyAttempts):
        app.add_exception_handler(cls, refused)
    if getattr(app.state, "auth", False):
        try:
            if not U.has_users():
                log.warning("auth is on and no user exists: nobody can log in. Add one with `keel users add NAME --role admin` "
                            "on this server's metadata store.")
        except KeelError as exc:  # the store is checked again, with a clear error, on the first request
            log.warning("could not check for users: %s", exc)
