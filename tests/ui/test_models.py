"""The model pages: /models, /models/{name}, /models/{name}/{version}, and their actions with auth off and on."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.server._api import make_data, train
from tests.server.test_routes_registry import _registry_config as _configure

pytestmark = pytest.mark.anyio


def _valid(root: Path) -> str:
    (root / "data").mkdir(exist_ok=True)
    make_data(seed=7).to_parquet(root / "data" / "valid.parquet")
    return "data/valid.parquet"


async def test_models_list_model_and_version_pages(project: Path, ui_client: Any) -> None:
    import keel
    from keel.deployments.specs import build_spec, deploy

    data = _valid(project)
    train()
    train(C=0.5, seed=1)
    keel.promote("churn", 1, to="production", data=data, target="y")
    keel.registry.set_alias("churn", "challenger", 2)
    deploy(build_spec("churn-api", model="churn@production"))

    r = await ui_client.get("/models")
    assert r.status_code == 200 and float(r.headers["x-render-ms"]) >= 0  # timed, never a pass/fail figure (benchmarks/bench_ui.py measures it)
    assert 'href="/models/churn"' in r.text and 'href="/models/churn/2">v2</a>' in r.text  # latest
    assert "challenger → v2" in r.text and 'href="/models/churn/1">v1</a>' in r.text  # production holds v1

    r = await ui_client.get("/models/churn")
    assert r.status_code == 200
    text = r.text
    assert "Audit trail" in text and "promote → production" in text and "alias → challenger" in text
    assert re.search(r"passed</span>\s*<small class=\"muted\">for production", text)  # v1's gates, with the numbers
    assert "Roll back production" not in text and "nothing earlier" in text  # production held nothing before v1

    r = await ui_client.get("/models/churn/2")
    assert r.status_code == 200
    assert 'href="/lineage/models/churn/2"' in r.text and 'href="/diagnose/churn/2"' in r.text
    assert f'href="/runs/{keel.registry.get_version("churn", 2).run_id}"' in r.text
    assert "Request promotion" in r.text  # auth off: the local user may do anything
    r = await ui_client.get("/models/churn/1")
    assert 'href="/deployments/churn-api"' in r.text and "roc_auc" in r.text  # its stored evaluation, and the route using it

    assert (await ui_client.get("/models/nope")).status_code == 404
    assert (await ui_client.get("/models/churn/9")).status_code == 404


async def test_version_page_sets_evaluations_beside_the_champion(project: Path, ui_client: Any) -> None:
    import keel

    data = _valid(project)
    _configure(project, {"policies": {"churn": {"data": data, "target": "y", "gates": ["roc_auc >= 0.5"], "slices": ["a_pos"]}}})
    frame = make_data(seed=7)
    frame["a_pos"] = (frame.a > 0).map({True: "pos", False: "neg"})
    frame.to_parquet(project / data)
    train()
    train(C=0.01, seed=3)
    keel.promote("churn", 1, to="production")
    keel.promote("churn", 2, to="staging")  # evaluated against production's v1 on the same data
    r = await ui_client.get("/models/churn/2")
    assert "beside the champion (v1)" in r.text and "Champion v1" in r.text and "Difference" in r.text
    assert "a_pos=pos" in r.text and "a_pos=neg" in r.text  # the slices of both


async def test_gate_refusal_shows_the_report(project: Path, ui_client: Any) -> None:
    import keel

    data = _valid(project)
    _configure(project, {"policies": {"churn": {"data": data, "target": "y", "gates": ["roc_auc >= 0.999"]}}})
    train()
    r = await ui_client.post("/models/churn/1/promote", data={"to": "staging", "reason": "try"})
    assert r.status_code == 422 and "text/html" in r.headers["content-type"]
    assert "Refused for staging" in r.text and "roc_auc &gt;= 0.999" in r.text and ">fail<" in r.text
    assert keel.registry.get_model("churn").environments == {}
    assert keel.registry.history("churn")[-1]["outcome"] == "refused"


async def test_actions_without_auth_promote_roll_back(project: Path, ui_client: Any) -> None:
    import keel

    data = _valid(project)
    train()
    train(C=0.5, seed=1)
    for v in (1, 2):
        r = await ui_client.post(f"/models/churn/{v}/promote", data={"to": "staging", "reason": f"v{v} up", "data": data, "target": "y"})
        assert r.status_code == 303, r.text
    assert keel.registry.get_model("churn").environments == {"staging": 2}
    page = (await ui_client.get("/models/churn")).text
    assert "Roll back staging to v1" in page
    r = await ui_client.post("/models/churn/rollback", data={"env": "staging", "reason": "bad canary"})
    assert r.status_code == 303 and "Rolled" in r.headers["location"]
    assert keel.registry.get_model("churn").environments == {"staging": 1}
    assert keel.registry.history("churn")[-1]["reason"] == "bad canary"
    r = await ui_client.post("/models/churn/1/promote", data={"to": "nowhere"})
    assert r.status_code == 404 and "Unknown environment" in r.text  # bad input: a page naming the value
    r = await ui_client.post("/models/churn/1/promote", data={"to": "staging", "data": "../../etc/passwd", "target": "y"})
    assert r.status_code == 422 and "outside the server" in r.text


async def _sign_in(app: Any, user: str, password: str) -> Any:
    import httpx

    c = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://ui", headers={"accept": "text/html"})
    r = await c.post("/login", data={"username": user, "password": password, "next": "/"})
    assert r.status_code == 303, r.text
    return c


async def test_roles_decide_the_buttons_and_the_posts(project: Path) -> None:
    import keel
    from keel.server.app import create_app
    from keel.store import users as U

    data = _valid(project)
    _configure(project, {"require_approval": ["production"]})
    train()
    U.add_user("ann", role="viewer", password="pw-ann-123")
    U.add_user("mia", role="member", password="pw-mia-123")
    U.add_user("bob", role="approver", password="pw-bob-123")
    app = create_app(auth=True)
    viewer, member, approver = (await _sign_in(app, "ann", "pw-ann-123"), await _sign_in(app, "mia", "pw-mia-123"),
                                await _sign_in(app, "bob", "pw-bob-123"))
    try:
        page = (await viewer.get("/models/churn/1")).text
        assert "Request promotion" not in page
        r = await viewer.post("/models/churn/1/promote", data={"to": "production", "csrf_token": viewer.cookies["keel_csrf"]})
        assert r.status_code == 403 and "text/html" in r.headers["content-type"]

        page = (await member.get("/models/churn/1")).text
        assert "Request promotion" in page
        r = await member.post("/models/churn/1/promote", data={"to": "production", "reason": "ship it", "data": data, "target": "y"})
        assert r.status_code == 403 and "CSRF" in r.text  # no token: refused, nothing requested
        assert keel.registry.list_requests("churn") == []
        r = await member.post("/models/churn/1/promote", data={"to": "production", "reason": "ship it", "data": data, "target": "y",
                                                              "csrf_token": member.cookies["keel_csrf"]})
        assert r.status_code == 303 and "waits" in r.headers["location"]
        (req,) = keel.registry.list_requests("churn", "pending")
        assert req["requested_by"] == "mia"

        assert ">Approve</button>" not in (await viewer.get("/models/churn")).text
        assert ">Approve</button>" not in (await member.get("/models/churn")).text
        r = await viewer.post(f"/models/churn/requests/{req['id']}/approve", data={"reason": "lgtm", "csrf_token": viewer.cookies["keel_csrf"]})
        assert r.status_code == 403 and "text/html" in r.headers["content-type"]
        assert keel.registry.get_request(req["id"])["status"] == "pending" and keel.registry.get_model("churn").environments == {}

        page = (await approver.get("/models/churn")).text
        assert ">Approve</button>" in page and ">Reject</button>" in page
        r = await approver.post(f"/models/churn/requests/{req['id']}/approve", data={"reason": "lgtm"})
        assert r.status_code == 403  # CSRF missing
        r = await approver.post(f"/models/churn/requests/{req['id']}/approve", data={"reason": "  ", "csrf_token": approver.cookies["keel_csrf"]})
        assert r.status_code == 422 and "needs a reason" in r.text
        r = await approver.post(f"/models/churn/requests/{req['id']}/approve", data={"reason": "lgtm", "csrf_token": approver.cookies["keel_csrf"]})
        assert r.status_code == 303, r.text
        assert keel.registry.get_model("churn").environments == {"production": 1}
        last = keel.registry.history("churn")[-1]
        assert (last["action"], last["outcome"], last["user"], last["reason"]) == ("approve", "applied", "bob", f"request #{req['id']}: lgtm")
        page = (await viewer.get("/models/churn")).text
        assert "request #" in page and "lgtm" in page and "<td>bob</td>" in page  # the audit trail shows who and why
    finally:
        for c in (viewer, member, approver):
            await c.aclose()


async def test_the_audit_trail_pages_back(project: Path, ui_client: Any) -> None:
    import keel

    train()
    train(C=0.5, seed=1)
    for k in range(60):  # 2 registrations + 60 alias moves: two pages of 50
        keel.registry.set_alias("churn", "challenger", 1 + k % 2)
    first = (await ui_client.get("/models/churn")).text
    m = re.search(r'href="/models/churn\?before=(\d+)#audit">Older events', first)
    assert m is not None and first.count("alias → challenger") == 50
    older = (await ui_client.get(f"/models/churn?before={m.group(1)}")).text
    assert older.count("alias → challenger") == 10 and older.count("<td>register</td>") == 2 and "Older events" not in older
