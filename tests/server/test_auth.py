"""Authentication on the platform server: tokens, basic auth, login, rate limits, CSRF, the refusal audit."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.server.auth_fixtures import PASSWORD, bearer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_auth_off_is_the_local_user_as_admin(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from keel import config
    from keel.server.app import create_app

    monkeypatch.setenv("KEEL_USER", "local-alice")
    config.reset()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(create_app(auth=False)), base_url="http://t") as c:
        r = await c.get("/v1/whoami")
        assert r.status_code == 200 and r.json() | {"token_id": None} == {
            "user": "local-alice", "role": "admin", "authenticated": False, "token_id": None, "scope": "admin"}
        assert (await c.post("/v1/users", json={"name": "bob", "role": "viewer"})).status_code == 201


async def test_no_credentials_is_401_with_a_challenge(auth_client: Any) -> None:
    for method, path in [("GET", "/v1/whoami"), ("GET", "/v1/users"), ("POST", "/v1/users"), ("DELETE", "/v1/tokens/abc")]:
        r = await auth_client.request(method, path)
        assert r.status_code == 401, (method, path, r.text)
        assert "Bearer" in r.headers["www-authenticate"] and "Basic" in r.headers["www-authenticate"]
        assert r.json()["error"] == "AuthenticationError"
    bad = await auth_client.get("/v1/whoami", headers={"Authorization": "Digest abc"})
    assert bad.status_code == 401 and "Unsupported Authorization scheme" in bad.text


async def test_bearer_tokens_identify_the_user_with_their_role(auth_client: Any, auth_people: dict[str, str]) -> None:
    for role, token in auth_people.items():
        me = (await auth_client.get("/v1/whoami", headers=bearer(token))).json()
        assert (me["user"], me["role"], me["authenticated"]) == (f"r_{role}", role, True)


async def test_basic_auth_is_verified_once_then_cached_by_hash(auth_client: Any, auth_people: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.server import auth
    from keel.store import users as U

    calls = []
    real = U.verify_password
    monkeypatch.setattr(U, "verify_password", lambda h, p: calls.append(1) or real(h, p))
    for _ in range(3):
        r = await auth_client.get("/v1/whoami", auth=("r_admin", PASSWORD))
        assert r.status_code == 200 and r.json()["user"] == "r_admin"
    assert len(calls) == 1  # argon2 ran once; the next two hit the cache
    assert not any(PASSWORD in k for k in auth._basic_cache)  # keyed by a hash, never the plaintext
    assert (await auth_client.get("/v1/whoami", auth=("r_admin", "wrong password"))).status_code == 401
    # a password change invalidates the cached pair at once (the key includes the stored hash)
    U.set_password("r_admin", "another password")
    assert (await auth_client.get("/v1/whoami", auth=("r_admin", PASSWORD))).status_code == 401
    assert (await auth_client.get("/v1/whoami", auth=("r_admin", "another password"))).status_code == 200
    U.disable_user("r_admin")
    assert (await auth_client.get("/v1/whoami", auth=("r_admin", "another password"))).status_code == 401
    # a token as the basic password (git-style clients) works for its own user only
    assert (await auth_client.get("/v1/whoami", auth=("r_viewer", auth_people["viewer"]))).json()["user"] == "r_viewer"
    assert (await auth_client.get("/v1/whoami", auth=("r_member", auth_people["viewer"]))).status_code == 401
    garbage = {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()}
    assert (await auth_client.get("/v1/whoami", headers=garbage)).status_code == 401


async def test_tokens_expire_are_revocable_scoped_and_stored_hashed(auth_client: Any, auth_people: dict[str, str], project: Path) -> None:
    from keel.store import users as U
    from keel.store.metadata import get_metadata_store

    created = await auth_client.post("/v1/tokens", json={"name": "ci", "scope": "read"}, headers=bearer(auth_people["member"]))
    assert created.status_code == 201, created.text
    body = created.json()
    token, tid = body["token"], body["id"]
    assert token.startswith(f"keel_{tid}_")
    listed = (await auth_client.get("/v1/tokens", headers=bearer(auth_people["member"]))).json()
    assert tid in [t["id"] for t in listed] and all("token" not in t for t in listed)
    # a read-scoped token reads but does not write, whatever its user's role
    assert (await auth_client.get("/v1/whoami", headers=bearer(token))).status_code == 200
    refused = await auth_client.post("/v1/owners/contract/orders", json={"users": ["r_member"]}, headers=bearer(token))
    assert refused.status_code == 403 and "scope 'read'" in refused.text
    # nor can it mint a broader one
    assert (await auth_client.post("/v1/tokens", json={"scope": "write"}, headers=bearer(token))).status_code == 403
    # stored hashed: the secret is nowhere in the database
    secret = token.split("_", 2)[2]
    db = Path(str(get_metadata_store().uri).removeprefix("sqlite:///"))
    assert secret.encode() not in db.read_bytes() and secret.encode() not in (db.with_name(db.name + "-wal").read_bytes() if db.with_name(db.name + "-wal").exists() else b"")
    # revoking (one's own) stops it at once; another member's token is not theirs to revoke
    assert (await auth_client.delete(f"/v1/tokens/{tid}", headers=bearer(auth_people["viewer"]))).status_code == 403
    assert (await auth_client.delete(f"/v1/tokens/{tid}", headers=bearer(auth_people["member"]))).json()["revoked"] is True
    gone = await auth_client.get("/v1/whoami", headers=bearer(token))
    assert gone.status_code == 401 and "revoked" in gone.text
    _, expired = U.create_token("r_member", expires_days=1e-9)
    late = await auth_client.get("/v1/whoami", headers=bearer(expired))
    assert late.status_code == 401 and "expired" in late.text
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert (await auth_client.get("/v1/whoami", headers=bearer(forged))).status_code == 401
    assert (await auth_client.get("/v1/whoami", headers=bearer("not-a-keel-token"))).status_code == 401
    U.disable_user("r_viewer")
    assert (await auth_client.get("/v1/whoami", headers=bearer(auth_people["viewer"]))).status_code == 401


async def test_login_gives_a_token_and_failed_logins_are_rate_limited(auth_client: Any, auth_people: dict[str, str]) -> None:
    from keel.server import auth

    ok = await auth_client.post("/v1/login", json={"username": "r_admin", "password": PASSWORD})
    assert ok.status_code == 200, ok.text
    assert (await auth_client.get("/v1/whoami", headers=bearer(ok.json()["token"]))).json()["user"] == "r_admin"
    for _ in range(auth.MAX_FAILURES_PER_USER):
        assert (await auth_client.post("/v1/login", json={"username": "r_admin", "password": "guess"})).status_code == 401
    limited = await auth_client.post("/v1/login", json={"username": "r_admin", "password": PASSWORD})
    assert limited.status_code == 429 and 0 < int(limited.headers["retry-after"]) <= auth.FAILURE_WINDOW_SECONDS
    assert "Too many failed logins for 'r_admin'" in limited.text
    # basic auth counts against the same limit
    assert (await auth_client.get("/v1/whoami", auth=("r_admin", PASSWORD))).status_code == 429
    # per client address too: guessing many user names from one address is stopped
    for i in range(auth.MAX_FAILURES_PER_CLIENT):
        await auth_client.post("/v1/login", json={"username": f"nobody{i}", "password": "guess"})
    other = await auth_client.post("/v1/login", json={"username": "r_viewer", "password": "guess"})
    assert other.status_code == 429
    # a token still works: the limit applies to password guessing
    assert (await auth_client.get("/v1/whoami", headers=bearer(auth_people["viewer"]))).status_code == 200


async def test_login_scope_never_exceeds_the_role(auth_client: Any) -> None:
    from keel.store import users as U

    U.add_user("vera", role="viewer", password="viewer password")
    r = await auth_client.post("/v1/login", json={"username": "vera", "password": "viewer password", "scope": "admin"})
    assert r.status_code == 200 and r.json()["scope"] == "read"


async def test_cookie_sessions_need_the_double_submit_csrf_token(auth_client: Any) -> None:
    r = await auth_client.post("/v1/login", json={"username": "r_admin", "password": PASSWORD, "cookie": True})
    assert r.status_code == 200
    csrf = auth_client.cookies.get("keel_csrf")
    assert auth_client.cookies.get("keel_session") and csrf
    assert (await auth_client.get("/v1/whoami")).json()["user"] == "r_admin"  # reads need no CSRF token
    refused = await auth_client.post("/v1/users", json={"name": "carl"})
    assert refused.status_code == 403 and "CSRF" in refused.text
    wrong = await auth_client.post("/v1/users", json={"name": "carl"}, headers={"X-CSRF-Token": "forged"})
    assert wrong.status_code == 403
    ok = await auth_client.post("/v1/users", json={"name": "carl"}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 201, ok.text
    # a form post carries it as a field
    form = await auth_client.post("/v1/users", data={"csrf_token": csrf, "name": "dora"})
    assert form.status_code != 403, form.text
    # a bearer-token request is not cookie-authenticated: no CSRF token needed
    auth_client.cookies.clear()


async def test_every_refusal_is_audited_and_no_token_reaches_logs_or_errors(
    auth_client: Any, auth_people: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    from keel.store import users as U

    caplog.set_level(logging.DEBUG)
    _, revoked = U.create_token("r_member")
    U.revoke_token(U.token_id_of(revoked) or "")
    unknown = "keel_0123456789abcdef_" + "x" * 43
    secrets_sent = [*auth_people.values(), revoked, unknown, PASSWORD, "wrong-password-123"]
    bodies = []
    bodies.append(await auth_client.post("/v1/users", json={"name": "eve"}, headers=bearer(auth_people["viewer"])))
    bodies.append(await auth_client.post("/v1/users", json={"name": "eve"}, headers=bearer(auth_people["approver"])))
    bodies.append(await auth_client.get("/v1/users", headers=bearer(revoked)))
    bodies.append(await auth_client.get("/v1/users", headers=bearer(unknown)))
    bodies.append(await auth_client.get("/v1/users", auth=("r_admin", "wrong-password-123")))
    bodies.append(await auth_client.post("/v1/login", json={"username": "r_admin", "password": "wrong-password-123"}))
    bodies.append(await auth_client.get("/v1/users"))
    assert [b.status_code for b in bodies] == [403, 403, 401, 401, 401, 401, 401]
    rows = (await auth_client.get("/v1/auth/refusals", headers=bearer(auth_people["admin"]))).json()
    assert len(rows) == 7
    newest_first = list(reversed(rows))
    assert [(r["status"], r["user"], r["method"], r["route"]) for r in newest_first[:2]] == [
        (403, "r_viewer", "POST", "/v1/users"), (403, "r_approver", "POST", "/v1/users")]
    assert all(r["time"] and r["client"] == "127.0.0.1" and r["reason"] for r in rows)
    assert newest_first[4]["user"] == "r_admin" and newest_first[5]["user"] == "r_admin"  # the claimed name of a failed login
    text = caplog.text + "".join(b.text for b in bodies) + str(rows)
    assert "refused 403 POST /v1/users user=r_viewer" in caplog.text
    for s in secrets_sent:
        assert s not in text
        secret = s.split("_", 2)[-1] if s.startswith("keel_") else s  # keel_<id>_<secret>: the secret may hold "_" itself
        assert secret not in text


async def test_identity_is_visible_in_sync_and_async_routes(auth_people: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """acting_as is set in a yield dependency; sync routes run in the threadpool and must see it too."""
    from fastapi import APIRouter, Depends

    from keel import config
    from keel.config import settings
    from keel.server.app import create_app
    from keel.server.auth import Identity, authorize, identity

    monkeypatch.setenv("KEEL_USER", "client-supplied-name")
    config.reset()
    extra = APIRouter()

    @extra.get("/probe/sync")
    def sync_probe(ident: Identity = Depends(identity)) -> dict[str, str]:
        authorize(ident, "read")
        return {"acting": settings().acting_user, "ident": ident.user}

    @extra.get("/probe/async")
    async def async_probe(ident: Identity = Depends(identity)) -> dict[str, str]:
        authorize(ident, "read")
        return {"acting": settings().acting_user, "ident": ident.user}

    app = create_app(auth=True)
    app.include_router(extra)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        for kind in ("sync", "async"):
            for role in ("viewer", "admin"):
                r = await c.get(f"/probe/{kind}", headers=bearer(auth_people[role]))
                assert r.json() == {"acting": f"r_{role}", "ident": f"r_{role}"}, (kind, r.text)
    assert settings().acting_user == "client-supplied-name"  # nothing leaks out of the request


async def test_audit_events_record_the_authenticated_user(auth_client: Any, auth_people: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from keel import config
    from keel.store import users as U

    monkeypatch.setenv("KEEL_USER", "spoofed")
    config.reset()
    r = await auth_client.post("/v1/users", json={"name": "newbie", "role": "viewer"}, headers=bearer(auth_people["admin"]))
    assert r.json()["created_by"] == "r_admin"
    assert U.get_user("newbie").created_by == "r_admin"


def test_refusal_audit_never_blocks_on_a_token_in_the_route(project: Path) -> None:
    from keel.store import users as U
    from keel.store.metadata import get_metadata_store
    from keel.store.schema.auth import auth_refusals

    U.record_refusal(status=401, method="GET", route="/v1/x?token=keel_0123456789abcdef_secretsecretsecretsecret", reason="Bearer abcdefghijkl")
    with get_metadata_store().read() as conn:
        row = conn.execute(sa.select(auth_refusals)).one()
    assert "secretsecret" not in row.route and "abcdefghijkl" not in row.reason
