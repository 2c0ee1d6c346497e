"""Routes of the platform API: login, users, tokens, roles, owners and the refusal audit.

Thin: each calls :mod:`keel.store.users` or :mod:`keel.store.owners`, as the
``keel users``, ``keel tokens`` and ``keel owners`` commands do.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from keel.errors import ForbiddenError
from keel.server.auth import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    Identity,
    action,
    authorize,
    identity,
    login,
    new_csrf_token,
)
from keel.server.schemas import In
from keel.store import owners as O
from keel.store import users as U

# Any route can answer 429 when its HTTP basic credentials hit the failed-login limit.
UserName = Annotated[str, Field(pattern=U.USER_PATTERN, description="letters, digits and . _ - @ +")]

router = APIRouter(tags=["users"], responses={429: {"description": "Too many failed logins; retry after the Retry-After seconds"}})


class LoginBody(In):
    username: str = Field(min_length=1, max_length=255)
    password: str = Field(min_length=1, max_length=1024)
    token_name: str = Field("keel login", max_length=255)
    expires_days: float | None = Field(U.DEFAULT_TOKEN_DAYS, gt=0, le=U.MAX_TOKEN_DAYS, description="Days until the token expires; null: never")
    scope: Literal["read", "write", "approve", "admin"] = "admin"
    cookie: bool = Field(False, description="Also set the session and CSRF cookies (the web UI)")


class TokenOut(BaseModel):
    id: str
    user: str
    name: str
    scope: str
    created_time: str | None
    expires_time: str | None
    revoked: bool
    expired: bool
    last_used_time: str | None


class NewToken(TokenOut):
    token: str = Field(description="The token itself; shown this once, never stored")


class UserOut(BaseModel):
    name: str
    role: str
    has_password: bool
    created_time: str | None
    created_by: str
    disabled: bool


class NewUser(In):
    name: UserName
    role: Literal["viewer", "member", "approver", "admin"] = "member"
    password: str | None = Field(None, min_length=8, max_length=1024)


class UserPatch(In):
    role: Literal["viewer", "member", "approver", "admin"] | None = None
    disabled: bool | None = None
    password: str | None = Field(None, min_length=8, max_length=1024)


class TokenBody(In):
    name: str = Field("token", max_length=255)
    scope: Literal["read", "write", "approve", "admin"] = "write"
    expires_days: float | None = Field(U.DEFAULT_TOKEN_DAYS, gt=0, le=U.MAX_TOKEN_DAYS)
    user: UserName | None = Field(None, description="Another user's token (admins only); default: the caller")


class RoleBody(In):
    user: UserName
    role: Literal["viewer", "member", "approver", "admin"]
    experiment: str | None = None
    model: str | None = None


class OwnersBody(In):
    users: list[UserName] = Field(min_length=1, max_length=100)


class Owners(BaseModel):
    kind: str
    name: str
    owners: list[str]


class WhoAmI(BaseModel):
    user: str
    role: str
    authenticated: bool
    token_id: str | None
    scope: str


@router.post("/v1/login", response_model=NewToken, openapi_extra=action("public"),
             summary="Exchange a user name and password for an API token (rate-limited)")
def login_route(body: LoginBody, request: Request, response: Response, ident: Identity = Depends(identity)) -> dict[str, Any]:
    request.state.keel_claimed = body.username
    p = login(body.username, body.password, request.client.host if request.client else None)
    scope = body.scope if U.scope_rank(body.scope) <= U.rank(p.role) else U.SCOPES[U.rank(p.role) - 1]
    token, plain = U.create_token(p.user, name=body.token_name, scope=scope, expires_days=body.expires_days)
    if body.cookie:
        secure = request.url.scheme == "https"
        max_age = None if body.expires_days is None else int(body.expires_days * 86400)
        response.set_cookie(SESSION_COOKIE, plain, max_age=max_age, httponly=True, samesite="strict", secure=secure)
        response.set_cookie(CSRF_COOKIE, new_csrf_token(), max_age=max_age, httponly=False, samesite="strict", secure=secure)
    return {**token.to_dict(), "token": plain}


@router.get("/v1/whoami", response_model=WhoAmI, summary="The authenticated caller")
def whoami(ident: Identity = Depends(identity)) -> dict[str, Any]:
    authorize(ident, "read")
    return {"user": ident.user, "role": ident.role, "authenticated": ident.authenticated, "token_id": ident.token_id, "scope": ident.scope}


@router.get("/v1/users", response_model=list[UserOut], openapi_extra=action("admin"), summary="List users")
def list_users(ident: Identity = Depends(identity)) -> list[dict[str, Any]]:
    authorize(ident, "admin")
    return [u.to_dict() for u in U.list_users()]


@router.post("/v1/users", response_model=UserOut, status_code=201, openapi_extra=action("admin"), summary="Add a user")
def add_user(body: NewUser, ident: Identity = Depends(identity)) -> dict[str, Any]:
    authorize(ident, "admin")
    return U.add_user(body.name, role=body.role, password=body.password).to_dict()


@router.patch("/v1/users/{name}", response_model=UserOut, openapi_extra=action("admin"),
              summary="Change a user's global role, password, or disable / enable it")
def patch_user(name: str, body: UserPatch, ident: Identity = Depends(identity)) -> dict[str, Any]:
    authorize(ident, "admin")
    U.get_user(name)
    if body.password is not None:
        U.set_password(name, body.password)
    if body.role is not None:
        U.grant(name, body.role)
    if body.disabled is not None:
        U.disable_user(name, disabled=body.disabled)
    return U.get_user(name).to_dict()


@router.get("/v1/users/{name}/roles", summary="A user's global role and roles on experiments and models")
def user_roles(name: str, ident: Identity = Depends(identity)) -> list[dict[str, Any]]:
    authorize(ident, "read")
    if name != ident.user:
        authorize(ident, "admin")
    return U.roles_of(name)


@router.post("/v1/roles", openapi_extra=action("admin"), summary="Grant a role globally or on one experiment or model")
def grant_role(body: RoleBody, ident: Identity = Depends(identity)) -> dict[str, Any]:
    authorize(ident, "admin")
    return U.grant(body.user, body.role, experiment=body.experiment, model=body.model)


@router.delete("/v1/roles/{kind}/{name}/{user}", openapi_extra=action("admin"), summary="Revoke a role on one experiment or model")
def revoke_role(kind: Literal["experiment", "model"], name: str, user: str, ident: Identity = Depends(identity)) -> dict[str, Any]:
    authorize(ident, "admin")
    done = U.revoke_role(user, **{kind: name})
    return {"user": user, kind: name, "revoked": done}


@router.get("/v1/tokens", response_model=list[TokenOut], summary="The caller's tokens (an admin may list anyone's, or all)")
def list_tokens(user: str | None = None, all: bool = False, ident: Identity = Depends(identity)) -> list[dict[str, Any]]:
    authorize(ident, "read")
    if all or (user is not None and user != ident.user):
        authorize(ident, "admin")
        return [t.to_dict() for t in U.list_tokens(None if all else user)]
    return [t.to_dict() for t in U.list_tokens(ident.user)]


# Creating and revoking one's own token is open to every role (a viewer needs a token to read).
@router.post("/v1/tokens", response_model=NewToken, status_code=201, openapi_extra=action("read"),
             summary="Create an API token (shown once); for another user: admins only")
def create_token(body: TokenBody, ident: Identity = Depends(identity)) -> dict[str, Any]:
    authorize(ident, "read")
    owner = body.user or ident.user
    if owner != ident.user:
        authorize(ident, "admin")
    elif ident.authenticated and U.scope_rank(body.scope) > U.scope_rank(ident.scope):
        raise ForbiddenError(f"A token with scope {ident.scope!r} cannot create one with scope {body.scope!r}.")
    token, plain = U.create_token(owner, name=body.name, scope=body.scope, expires_days=body.expires_days)
    return {**token.to_dict(), "token": plain}


@router.delete("/v1/tokens/{token_id}", response_model=TokenOut, openapi_extra=action("read"),
               summary="Revoke a token (one's own; admins: anyone's)")
def revoke_token(token_id: str, ident: Identity = Depends(identity)) -> dict[str, Any]:
    authorize(ident, "read")
    if U.get_token(token_id).user != ident.user:
        authorize(ident, "admin")
    return U.revoke_token(token_id).to_dict()


OwnedKind = Literal["model", "feature_view", "contract", "monitor", "deployment", "retraining"]


def _owned(kind: str, name: str, ident: Identity, act: Any) -> None:
    authorize(ident, act, model=name if kind == "model" else None)


@router.get("/v1/owners/{kind}/{name}", response_model=Owners, summary="The owners of a model, feature view, contract or monitor")
def get_owners(kind: OwnedKind, name: str, ident: Identity = Depends(identity)) -> dict[str, Any]:
    _owned(kind, name, ident, "read")
    return {"kind": kind, "name": name, "owners": O.owners_of(kind, name)}


@router.post("/v1/owners/{kind}/{name}", response_model=Owners, summary="Add owners")
def add_owners(kind: OwnedKind, name: str, body: OwnersBody, ident: Identity = Depends(identity)) -> dict[str, Any]:
    _owned(kind, name, ident, "write")
    return {"kind": kind, "name": name, "owners": O.add_owners(kind, name, body.users)}


@router.delete("/v1/owners/{kind}/{name}/{user}", response_model=Owners, summary="Remove an owner (never the last one)")
def remove_owner(kind: OwnedKind, name: str, user: str, ident: Identity = Depends(identity)) -> dict[str, Any]:
    _owned(kind, name, ident, "write")
    return {"kind": kind, "name": name, "owners": O.remove_owners(kind, name, [user])}


@router.get("/v1/auth/refusals", openapi_extra=action("admin"), summary="Refused requests, newest first (the auth audit)")
def refusals(limit: int = Query(100, ge=1, le=10_000), user: str | None = None, ident: Identity = Depends(identity)) -> list[dict[str, Any]]:
    authorize(ident, "admin")
    return [{**r, "time": r["time"].isoformat() if r["time"] else None} for r in U.refusals(limit, user)]
