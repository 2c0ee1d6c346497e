"""The whole permission matrix: role x action over EVERY route of the app, with auth on.

Routes come from ``app.routes``, so every router merged into the app is covered.
A route's action is read (GET/HEAD) or write, unless it declares another with
``openapi_extra=keel.server.auth.action(...)``. For each route: no credentials
-> 401; a role below the action -> 403; a role at or above it -> neither 401
nor 403 (nor a 5xx: requests carry no body, so most writes end in 422/404).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.server.auth_fixtures import ROLES, bearer

pytestmark = pytest.mark.anyio

_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _routes(app: Any) -> list[tuple[str, str, Any]]:
    from keel.server.auth import iter_routes

    out = [(method, path, route) for path, route in iter_routes(app.routes) for method in sorted(route.methods)]
    # nothing is missed: every operation of the OpenAPI document is among them
    documented = {(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops}
    routed = {(m, _PARAM.sub(r"{\1}", p)) for m, p, _ in out}  # {path:path} is {path} in the document
    assert documented <= routed, documented - routed
    return out


def _fill(path: str, user: str) -> str:
    """A concrete URL: user-like parameters get the caller's own name, ids a number, the rest a name."""
    def value(m: re.Match[str]) -> str:
        name = m[1]
        if name in ("user", "name", "username"):
            return user
        if name.endswith("id") or name in ("version", "step"):
            return "1"
        if name == "kind":
            return "model"
        return "matrix-object"

    return _PARAM.sub(value, path)


async def test_every_route_across_every_role(auth_app: Any, auth_client: Any, auth_people: dict[str, str]) -> None:
    from keel.server.auth import route_action
    from keel.store.users import ACTION_ROLE, rank

    routes = _routes(auth_app)
    assert len(routes) >= 16  # this branch's own routes at least; more after the merge
    public = [(m, p) for m, p, r in routes if route_action(r, m) == "public"]
    # signing in, and the stylesheet/script of the sign-in page, are the only routes without an identity
    assert sorted(public) == [("GET", "/login"), ("GET", "/ui/static/{name}"), ("POST", "/login"), ("POST", "/v1/login")]
    documented = set(auth_app.openapi()["paths"])
    problems: list[str] = []
    checked = 0
    for method, path, route in routes:
        act = route_action(route, method)
        if act == "public" or path == "/health" or (method, path) == ("POST", "/logout"):
            continue  # signing out revokes the caller's token: checked last, below
        anon = await auth_client.request(method, _fill(path, "nobody"))
        # the web UI's pages (not in the API document) send a browser without a session to the sign-in page
        page = method == "GET" and _PARAM.sub(r"{\1}", path) not in documented
        if page and not (anon.status_code == 303 and anon.headers["location"].startswith("/login")):
            problems.append(f"{method} {path}: no session -> {anon.status_code}, expected 303 to /login")
        elif not page and anon.status_code != 401:
            problems.append(f"{method} {path}: no token -> {anon.status_code}, expected 401")
        for role in ROLES:
            r = await auth_client.request(method, _fill(path, f"r_{role}"), headers=bearer(auth_people[role]))
            allowed = rank(role) >= rank(ACTION_ROLE[act])
            if r.status_code >= 500:
                problems.append(f"{method} {path} as {role}: {r.status_code} {r.text[:200]}")
            elif allowed and r.status_code in (401, 403):
                problems.append(f"{method} {path} ({act}) as {role}: {r.status_code}, expected to be allowed: {r.text[:200]}")
            elif not allowed and r.status_code != 403:
                problems.append(f"{method} {path} ({act}) as {role}: {r.status_code}, expected 403")
            checked += 1
    for role in ROLES:  # any signed-in user may sign out, and the token is dead afterwards
        headers = bearer(auth_people[role])
        out = await auth_client.post("/logout", headers=headers)
        if out.status_code != 303 or (await auth_client.get("/v1/whoami", headers=headers)).status_code != 401:
            problems.append(f"POST /logout as {role}: {out.status_code}, or the token still works afterwards")
    assert not problems, "\n".join(problems)
    assert checked == 4 * (len(routes) - len(public) - 2)  # every route but the public ones, /health and /logout, as each role


async def test_the_matrix_sees_a_stricter_declared_action(auth_app: Any, auth_client: Any, auth_people: dict[str, str]) -> None:
    """A route declaring approve is refused to a member and allowed to an approver, before it runs."""
    from fastapi import APIRouter, Depends

    from keel.server.auth import Identity, action, authorize, identity

    extra = APIRouter()

    @extra.post("/matrix/approve", openapi_extra=action("approve"))
    def approve(ident: Identity = Depends(identity)) -> dict[str, str]:
        authorize(ident, "approve")
        return {"by": ident.user}

    auth_app.include_router(extra)
    assert (await auth_client.post("/matrix/approve", headers=bearer(auth_people["member"]))).status_code == 403
    assert (await auth_client.post("/matrix/approve", headers=bearer(auth_people["approver"]))).json() == {"by": "r_approver"}


async def test_roles_per_experiment_and_model_and_owners(auth_people: dict[str, str]) -> None:
    """authorize takes the highest of the global role and the role on the object; an owner is a member of its model."""
    from keel.errors import AuthenticationError, ForbiddenError
    from keel.server.auth import Identity, authorize
    from keel.store import users as U
    from keel.store.metadata import get_metadata_store, now_ms
    from keel.store.schema.auth import owners

    viewer = Identity("r_viewer", "viewer", True, "t", "admin")
    U.grant("r_viewer", "member", experiment="churn-exp")
    U.grant("r_viewer", "approver", model="churn")
    authorize(viewer, "read")
    authorize(viewer, "write", experiment="churn-exp")
    authorize(viewer, "approve", model="churn")
    for kw in ({"experiment": "other"}, {"model": "other"}, {}):
        with pytest.raises(ForbiddenError, match=r"'r_viewer' \(viewer\) may not write"):
            authorize(viewer, "write", **kw)
    with pytest.raises(ForbiddenError, match=r"needs the admin role"):
        authorize(viewer, "admin", model="churn")
    with get_metadata_store().write() as conn:
        conn.execute(owners.insert().values(kind="model", name="fraud", user="r_viewer", added_ms=now_ms(), added_by="t"))
    authorize(viewer, "write", model="fraud")
    with pytest.raises(ForbiddenError):
        authorize(viewer, "approve", model="fraud")  # owning is not approving
    read_token = Identity("r_admin", "admin", True, "t", "read")
    with pytest.raises(ForbiddenError, match=r"scope 'read'"):
        authorize(read_token, "write")
    with pytest.raises(AuthenticationError):
        authorize(Identity("anonymous", "viewer", False, None, "read"), "read")
    assert U.revoke_role("r_viewer", model="churn")
    with pytest.raises(ForbiddenError):
        authorize(viewer, "approve", model="churn")
