"""Owners of models, feature views, contracts and monitors; the 0008_auth migration; the store on PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from keel.config import acting_as
from tests.server.auth_fixtures import bearer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgres"])
def store_project(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue("project" if request.param == "sqlite" else "pg_project")


def _register(name: str = "churn", user: str = "tina") -> Any:
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    import keel

    X = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 2)), columns=["a", "b"])
    y = (X.a > 0).astype(int)
    with acting_as(user):
        with keel.start_run():
            info = keel.log_model(LogisticRegression().fit(X, y), input_example=X.head(3))
        return keel.register_model(info.uri, name)


def test_old_single_owners_become_the_one_owner(tmp_path: Path) -> None:
    """0008_auth on a database that has the registry's old schema: registered_models.owner moves to owners."""
    from keel.store.metadata import MetadataStore, now_ms

    store = MetadataStore(f"sqlite:///{tmp_path / 'old.db'}")
    for rev in ("0006_registry_lifecycle", "0007_features_read_start", "0006_scheduler", "0006_monitoring", "0003_contracts"):
        store.upgrade(rev)
    with store.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO registered_models (name, owner, created_ms, updated_ms) VALUES ('churn', 'alice', :t, :t), ('fraud', 'bob', :t, :t)"),
                     {"t": now_ms()})
    store.upgrade()
    with store.engine.connect() as conn:
        assert "owner" not in {c["name"] for c in sa.inspect(conn).get_columns("registered_models")}
        rows = conn.execute(sa.text("SELECT kind, name, user FROM owners ORDER BY name")).all()
    assert [tuple(r) for r in rows] == [("model", "churn", "alice"), ("model", "fraud", "bob")]
    assert store.revisions() == store.head_revisions()
    from alembic import command

    cfg = store._alembic_config()
    with store.engine.connect() as conn:  # and back: the first owner returns to the column
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0008_auth-1")
        conn.commit()
    with store.engine.connect() as conn:
        assert dict(conn.execute(sa.text("SELECT name, owner FROM registered_models")).all()) == {"churn": "alice", "fraud": "bob"}
    store.dispose()


@pytest.mark.slow
def test_model_owners_are_a_list_with_a_library_cli_and_routes(store_project: Path) -> None:
    from keel import registry
    from keel.cli.main import app
    from keel.errors import NotFoundError, ValidationError
    from keel.store import owners as O

    _register()
    m = registry.get_model("churn")
    assert m.owners == ["tina"] and m.owner == "tina" and m.to_dict()["owners"] == ["tina"]
    assert O.add_owners("model", "churn", ["bob", "carol", "bob"]) == ["tina", "bob", "carol"]
    assert registry.update_model("churn", owners=["dan"]).owners == ["tina", "bob", "carol", "dan"]
    assert O.remove_owners("model", "churn", ["tina", "dan"]) == ["bob", "carol"]
    with pytest.raises(ValidationError, match=r"would have no owner left"):
        O.remove_owners("model", "churn", ["bob", "carol"])
    with pytest.raises(NotFoundError, match=r"'zed' is not an owner"):
        O.remove_owners("model", "churn", ["zed"])
    with pytest.raises(NotFoundError, match=r"No model named 'nope'"):
        O.add_owners("model", "nope", ["bob"])
    with pytest.raises(ValidationError, match=r"Unknown owned kind 'modle'. Did you mean 'model'"):
        O.add_owners("modle", "churn", ["bob"])
    assert registry.status("churn")["owners"] == ["bob", "carol"]
    runner = CliRunner()
    ls = runner.invoke(app, ["models", "ls"])
    assert ls.exit_code == 0 and "bob, carol" in ls.output
    show = runner.invoke(app, ["models", "show", "churn"])
    assert show.exit_code == 0 and "owners: bob, carol" in show.output
    added = runner.invoke(app, ["owners", "add", "model", "churn", "erin", "--json"])
    assert added.exit_code == 0 and json.loads(added.stdout)["owners"] == ["bob", "carol", "erin"]
    last = runner.invoke(app, ["owners", "rm", "model", "churn", "bob", "carol", "erin"])
    assert last.exit_code == 1 and "no owner left" in last.output


@pytest.mark.slow
def test_feature_views_and_monitors_get_their_first_owners(project: Path) -> None:
    import pandas as pd

    from keel.features.definitions import Entity, FeatureView, Field, Source
    from keel.features.loader import Definitions
    from keel.features.registry import apply
    from keel.monitoring.monitors import define_monitor
    from keel.store import owners as O

    path = project / "orders.parquet"
    pd.DataFrame({"customer_id": [1, 2], "amount": [1.0, 2.0], "ts": pd.to_datetime(["2026-01-01", "2026-01-02"], utc=True)}).to_parquet(path)
    customer = Entity("customer", join_keys=["customer_id"])
    source = Source("orders", path=str(path), timestamp_field="ts")
    declared = FeatureView("spend", entities=[customer], source=source, schema=[Field("amount", "float64")], owner="ann, ben")
    plain = FeatureView("spend2", entities=[customer], source=source, schema=[Field("amount", "float64")])
    with acting_as("fred"):
        apply(Definitions([customer, source, declared, plain]))
    assert O.owners_of("feature_view", "spend") == ["ann", "ben"]
    assert O.owners_of("feature_view", "spend2") == ["fred"]
    with acting_as("mona"):
        define_monitor("churn-daily", "churn", window="1d")
    assert O.owners_of("monitor", "churn-daily") == ["mona"]
    with acting_as("other"):
        define_monitor("churn-daily", "churn", window="2d")  # redefining keeps the owners
    assert O.owners_of("monitor", "churn-daily") == ["mona"]
    assert O.add_owners("contract", "orders", ["carl"]) == ["carl"]


def test_contracts_get_their_declared_owners_with_their_first_stored_validation(project: Path) -> None:
    import pandas as pd

    from keel.contracts.api import validate
    from keel.contracts.loader import loads_contract
    from keel.store import owners as O

    df = pd.DataFrame({"amount": [1.0, 2.0]})
    declared = loads_contract("contract: payments\nowners: [ann, ben]\ncolumns:\n  amount: {type: float}\n")
    assert declared.owners == ["ann", "ben"]
    with acting_as("ci-bot"):
        validate(df, declared, store=False)
        assert O.owners_of("contract", "payments") == []  # nothing stored, nothing owned
        validate(df, declared)
        validate(df, loads_contract("contract: refunds\ncolumns:\n  amount: {type: float}\n"))
    assert O.owners_of("contract", "payments") == ["ann", "ben"]
    assert O.owners_of("contract", "refunds") == ["ci-bot"]
    assert loads_contract("contract: x\nowners: ann, ben\n").owners == ["ann", "ben"]


async def test_owner_routes_with_auth(auth_client: Any, auth_people: dict[str, str]) -> None:
    from keel.store import owners as O

    _register(user="r_member")
    r = await auth_client.get("/v1/owners/model/churn", headers=bearer(auth_people["viewer"]))
    assert r.status_code == 200 and r.json()["owners"] == ["r_member"]
    refused = await auth_client.post("/v1/owners/model/churn", json={"users": ["r_viewer"]}, headers=bearer(auth_people["viewer"]))
    assert refused.status_code == 403
    ok = await auth_client.post("/v1/owners/model/churn", json={"users": ["r_viewer"]}, headers=bearer(auth_people["member"]))
    assert ok.json()["owners"] == ["r_member", "r_viewer"]
    # now an owner, the viewer is a member of this model and may change its owners
    gone = await auth_client.delete("/v1/owners/model/churn/r_member", headers=bearer(auth_people["viewer"]))
    assert gone.status_code == 200 and gone.json()["owners"] == ["r_viewer"]
    assert (await auth_client.get("/v1/owners/modle/churn", headers=bearer(auth_people["viewer"]))).status_code == 422
    assert O.owners_of("model", "churn") == ["r_viewer"]


def test_users_tokens_and_roles_on_each_store(store_project: Path) -> None:
    from keel.errors import AuthenticationError, ConflictError, NotFoundError, ValidationError
    from keel.store import users as U

    U.add_user("alice", role="admin", password="a long password")
    with pytest.raises(ConflictError, match=r"already exists"):
        U.add_user("alice")
    with pytest.raises(ValidationError, match=r"Unknown role 'aprover'. Did you mean 'approver'"):
        U.add_user("bob", role="aprover")
    with pytest.raises(ValidationError, match=r"at least 8"):
        U.add_user("bob", password="short")
    with pytest.raises(ValidationError, match=r"not valid"):
        U.add_user("bad name!")
    assert U.authenticate_password("alice", "a long password").role == "admin"
    with pytest.raises(AuthenticationError, match=r"Wrong user name or password"):
        U.authenticate_password("alice", "wrong")
    with pytest.raises(AuthenticationError, match=r"Wrong user name or password"):
        U.authenticate_password("nobody", "wrong")
    U.add_user("bob", role="viewer")
    U.grant("bob", "approver", model="churn")
    assert U.role_on("bob", model="churn") == "approver" and U.role_on("bob", model="fraud") == "viewer"
    assert U.roles_of("bob") == [{"scope": "global", "role": "viewer"}, {"scope": "model", "name": "churn", "role": "approver"}]
    token, plain = U.create_token("bob", scope="read", expires_days=None)
    assert U.authenticate_token(plain) == U.Principal("bob", "viewer", token.id, "read")
    assert [t.id for t in U.list_tokens("bob")] == [token.id] and token.expires_time is None
    U.revoke_token(token.id)
    with pytest.raises(AuthenticationError, match=r"revoked"):
        U.authenticate_token(plain)
    with pytest.raises(NotFoundError, match=r"No user 'bobb'. Did you mean 'bob'"):
        U.get_user("bobb")
    assert U.disable_user("bob").disabled and not U.disable_user("bob", disabled=False).disabled


@pytest.mark.slow
def test_cli_admin_commands_on_the_store(project: Path) -> None:
    from keel.cli.main import app

    runner = CliRunner()
    add = runner.invoke(app, ["users", "add", "alice", "--role", "admin"], input="a long password\na long password\n")
    assert add.exit_code == 0, add.output
    assert runner.invoke(app, ["users", "add", "ci-bot", "--no-password"]).exit_code == 0
    users = json.loads(runner.invoke(app, ["users", "ls", "--json"]).stdout)
    assert [(u["name"], u["role"], u["has_password"]) for u in users] == [("alice", "admin", True), ("ci-bot", "member", False)]
    assert runner.invoke(app, ["users", "set-role", "ci-bot", "approver", "--model", "churn"]).exit_code == 0
    roles = json.loads(runner.invoke(app, ["users", "roles", "ci-bot", "--json"]).stdout)
    assert roles[1] == {"scope": "model", "name": "churn", "role": "approver"}
    bad = runner.invoke(app, ["users", "set-role", "ci-bot", "boss"])
    assert bad.exit_code == 1 and "Unknown role 'boss'" in bad.output
    created = runner.invoke(app, ["tokens", "create", "ci-bot", "--name", "ci", "--scope", "write", "--expires", "30d"])
    assert created.exit_code == 0 and "not shown again" in created.output
    token = created.output.strip().splitlines()[-1]
    assert token.startswith("keel_")
    listed = runner.invoke(app, ["tokens", "ls", "--json"])
    rows = json.loads(listed.stdout)
    assert [r["name"] for r in rows] == ["ci"] and token not in listed.output
    assert runner.invoke(app, ["tokens", "revoke", rows[0]["id"]]).exit_code == 0
    assert json.loads(runner.invoke(app, ["tokens", "ls", "--json"]).stdout)[0]["revoked"] is True
    assert runner.invoke(app, ["tokens", "create", "ci-bot", "--expires", "soon"]).exit_code == 1
    assert runner.invoke(app, ["users", "disable", "ci-bot"]).exit_code == 0
    assert json.loads(runner.invoke(app, ["users", "ls", "--json"]).stdout)[1]["disabled"] is True


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_login_and_admin_commands_through_a_real_server(project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, run_server: Callable[..., Any]) -> None:
    import os
    import stat

    from keel import config
    from keel.cli.main import app
    from keel.store import users as U

    U.add_user("alice", role="admin", password="a long password")
    url = run_server()
    creds = tmp_path / "home" / "credentials.json"
    monkeypatch.setenv("KEEL_LOGIN_FILE", str(creds))
    monkeypatch.setenv("KEEL_TRACKING_URI", url)
    config.reset()
    runner = CliRunner()
    wrong = runner.invoke(app, ["login", "-u", "alice", "--password", "nope"])
    assert wrong.exit_code == 1 and "Login refused (401)" in wrong.output
    ok = runner.invoke(app, ["login", "-u", "alice"], input="a long password\n")
    assert ok.exit_code == 0, ok.output
    assert stat.S_IMODE(os.stat(creds).st_mode) == 0o600
    config.reset()
    token = config.settings().tracking_token
    assert token.startswith("keel_") and token not in ok.output
    assert config.settings()._values["tracking_token"].source == "credentials file"
    # the admin commands now go through the server, as alice
    add = runner.invoke(app, ["users", "add", "bob", "--role", "viewer", "--no-password", "--json"])
    assert add.exit_code == 0, add.output
    assert json.loads(add.stdout)["created_by"] == "alice"
    made = json.loads(runner.invoke(app, ["tokens", "create", "bob", "--scope", "read", "--json"]).stdout)
    monkeypatch.setenv("KEEL_TRACKING_TOKEN", made["token"])
    config.reset()
    refused = runner.invoke(app, ["users", "ls"])
    assert refused.exit_code == 1 and refused.output.startswith("error: 403") and made["token"] not in refused.output
    monkeypatch.setenv("KEEL_TRACKING_TOKEN", "keel_0000000000000000_" + "y" * 43)
    config.reset()
    unknown = runner.invoke(app, ["users", "ls"])
    assert unknown.exit_code == 1 and "401" in unknown.output
    log = (project / "server.log").read_text()
    assert "GET /v1/users" in log  # the access log is on
    for secret in (token, made["token"], "y" * 43, "a long password"):
        assert secret not in log and secret.split("_")[-1] not in log


@pytest.fixture
def run_server(project: Path) -> Any:
    """run_server() -> URL of `keel server --auth` in its own process on a free port (stopped by pid)."""
    import os
    import subprocess
    import sys
    import time

    import httpx

    procs: list[subprocess.Popen[bytes]] = []

    def start() -> str:
        port = _free_port()
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
        log = open(project / "server.log", "wb")  # noqa: SIM115 - closed with the process
        keel_bin = str(Path(sys.executable).with_name("keel"))
        p = subprocess.Popen([keel_bin, "server", "--auth", "--access-log", "--port", str(port)],
                             cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(p)
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                time.sleep(0.1)
            if p.poll() is not None:
                break
        raise AssertionError((project / "server.log").read_text())

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(10)
        except Exception:
            p.kill()


def test_keel_config_masks_the_tracking_token(project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from keel import config
    from keel.cli.main import app

    creds = tmp_path / "creds.json"
    monkeypatch.setenv("KEEL_LOGIN_FILE", str(creds))
    monkeypatch.setenv("KEEL_TRACKING_URI", "http://keel.example:5000")
    config.store_credential("http://keel.example:5000/", "keel_0123456789abcdef_storedstoredstoredstored")
    assert config.settings().tracking_token.endswith("storedstored")  # the URI's trailing slash does not matter
    monkeypatch.setenv("KEEL_TRACKING_TOKEN", "keel_fedcba9876543210_fromenvfromenvfromenvfromenv")
    config.reset()
    assert config.settings().tracking_token.endswith("fromenv")  # the environment wins over the file
    out = CliRunner().invoke(app, ["config", "--json"])
    assert out.exit_code == 0 and "fromenv" not in out.output and "stored" not in out.output
    shown = {s["name"]: s["value"] for s in json.loads(out.stdout)["settings"]}
    assert shown["tracking_token"] == "***" and shown["login_file"] == str(creds)
