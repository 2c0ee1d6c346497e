"""``keel login``, ``keel users``, ``keel tokens`` and ``keel owners``: identities on a keel server.

The admin commands work on the metadata store directly, or through the server
named by KEEL_TRACKING_URI (with KEEL_TRACKING_TOKEN or the token ``keel login``
stored), calling the same routes (``/v1/users``, ``/v1/tokens``, ``/v1/roles``,
``/v1/owners``). Against a server they never open a local database.
"""

from __future__ import annotations

from typing import Any

import typer

from keel.cli._common import JSON_OPTION, console, fail, print_json, run_guarded, table

users_app = typer.Typer(help="Users and their roles (viewer, member, approver, admin), globally or per experiment / model.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens: scoped, expiring, revocable, stored hashed (shown once).", no_args_is_help=True)
owners_app = typer.Typer(help="Owners of registered models, feature views, contracts, monitors and deployments; with no command, "
                         "what each owner owns and what in production nobody is responsible for.\n\n"
                         "Example: keel owners --check  (exit 1 when something in production has no monitor, owner or contract)",
                         invoke_without_command=True, no_args_is_help=False)


# -- through the server, when KEEL_TRACKING_URI is set ----------------------------------------

def _server() -> tuple[str, str] | None:
    from keel.config import settings

    s = settings()
    return (str(s.tracking_uri).rstrip("/"), str(s.tracking_token)) if s.tracking_uri else None


def _call(method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
    """One request to the keel server; a refusal or bad input becomes one line and exit 1."""
    import httpx

    from keel.config import redact

    server = _server()
    assert server is not None
    uri, token = server
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        r = httpx.request(method, uri + path, json=body, params=params, headers=headers, timeout=30.0)
    except httpx.HTTPError as exc:
        fail(f"Cannot reach the keel server at {redact(uri)}: {exc}. Check KEEL_TRACKING_URI.")
    if r.status_code >= 400:
        try:
            message = r.json().get("message") or r.text
        except ValueError:
            message = r.text
        if isinstance(message, list):  # FastAPI's 422 detail
            message = "; ".join(str(m.get("msg", m)) for m in message)
        fail(f"{r.status_code}: {redact(str(message))[:500]}")
    return r.json()


def _done(out: Any, as_json: bool, line: Any) -> None:
    """Print a command's result: JSON, or the one line ``line(out)`` says."""
    if as_json:
        print_json(out)
    else:
        console.print(line(out), highlight=False)


def _expires(text: str) -> float | None:
    """'90d', '12h', '30' (days) or 'never' -> days (None: never)."""
    t = text.strip().lower()
    if t in ("never", "none", "0"):
        return None
    try:
        if t.endswith("d"):
            return float(t[:-1])
        if t.endswith("h"):
            return float(t[:-1]) / 24
        return float(t)
    except ValueError:
        fail(f"--expires {text!r} is not a duration; use e.g. 90d, 12h or never.")
    raise AssertionError("unreachable")


# -- keel login --------------------------------------------------------------------------------

def login(
    uri: str = typer.Option(None, "--uri", help="The keel server (default: KEEL_TRACKING_URI)."),
    username: str = typer.Option(None, "--username", "-u", help="User name (asked when omitted)."),
    password: str = typer.Option(None, "--password", help="Password (asked without echo when omitted; prefer that)."),
    expires: str = typer.Option("90d", "--expires", help="Token lifetime: 90d, 12h or never."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Log in to a keel server: exchange a password for a token, stored for KEEL_TRACKING_URI.

    The token goes to the credentials file (~/.keel/credentials.json, readable
    by you only), which KEEL_TRACKING_TOKEN falls back to.

    Example: keel login --uri http://keel.internal:5000 -u alice
    """
    import httpx

    from keel.config import redact, settings, store_credential

    target = (uri or str(settings().tracking_uri or "")).rstrip("/")
    if not target:
        fail("No server to log in to: pass --uri http://host:port or set KEEL_TRACKING_URI.")
    user = username or typer.prompt("User")
    secret = password if password is not None else typer.prompt("Password", hide_input=True)
    try:
        r = httpx.post(f"{target}/v1/login", json={"username": user, "password": secret, "expires_days": _expires(expires)}, timeout=30.0)
    except httpx.HTTPError as exc:
        fail(f"Cannot reach the keel server at {redact(target)}: {exc}.")
    if r.status_code != 200:
        try:
            message = r.json().get("message", r.text)
        except ValueError:
            message = r.text
        wait = r.headers.get("retry-after")
        fail(f"Login refused ({r.status_code}): {redact(str(message))[:300]}" + (f" Retry after {wait} s." if wait else ""))
    body = r.json()
    path = store_credential(target, body["token"])
    if as_json:
        print_json({k: v for k, v in body.items() if k != "token"} | {"login_file": str(path)})
        return
    console.print(f"Logged in to {target} as [bold]{body['user']}[/] (token {body['id']}, scope {body['scope']}, "
                  f"expires {body['expires_time'] or 'never'}); saved in {path}", highlight=False)


# -- keel users --------------------------------------------------------------------------------

@users_app.command("add")
def users_add(
    name: str,
    role: str = typer.Option("member", "--role", help="Global role: viewer, member, approver or admin."),
    password: bool = typer.Option(True, "--password/--no-password", help="Ask for a password (--no-password: a token-only user)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Add a user with a global role (and a password, asked twice without echo).

    Example: keel users add alice --role approver
    """
    secret = typer.prompt("Password", hide_input=True, confirmation_prompt=True) if password else None

    def go() -> dict[str, Any]:
        if _server():
            return dict(_call("POST", "/v1/users", {"name": name, "role": role, "password": secret}))
        from keel.store.users import add_user

        return add_user(name, role=role, password=secret).to_dict()

    _done(run_guarded(go), as_json, lambda out: f"Added user [bold]{out['name']}[/] ({out['role']}).")


@users_app.command("ls")
def users_ls(as_json: bool = JSON_OPTION) -> None:
    """List users with their global roles.

    Example: keel users ls --json
    """
    def go() -> list[dict[str, Any]]:
        if _server():
            return list(_call("GET", "/v1/users"))
        from keel.store.users import list_users

        return [u.to_dict() for u in list_users()]

    rows = run_guarded(go)
    if as_json:
        print_json(rows)
        return
    console.print(table("Users", ["name", "role", "password", "created", "by", "status"], [
        (u["name"], u["role"], "yes" if u["has_password"] else "no", (u["created_time"] or "")[:19], u["created_by"],
         "disabled" if u["disabled"] else "active") for u in rows
    ]))


@users_app.command("set-role")
def users_set_role(
    name: str,
    role: str,
    model: str = typer.Option(None, "--model", help="The role on this registered model only."),
    experiment: str = typer.Option(None, "--experiment", help="The role on this experiment only."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Set a user's global role, or their role on one registered model or experiment.

    Example: keel users set-role bob approver --model churn
    """
    def go() -> dict[str, Any]:
        if _server():
            if model is None and experiment is None:
                _call("PATCH", f"/v1/users/{name}", {"role": role})
                return {"user": name, "role": role, "scope": "global"}
            return dict(_call("POST", "/v1/roles", {"user": name, "role": role, "model": model, "experiment": experiment}))
        from keel.store.users import grant

        return grant(name, role, experiment=experiment, model=model)

    out = run_guarded(go)
    if as_json:
        print_json(out)
    else:
        where = f" on {out['scope']} {out.get(out['scope'])}" if out["scope"] != "global" else ""
        console.print(f"{name} is now {role}{where}.", highlight=False)


@users_app.command("roles")
def users_roles(name: str, as_json: bool = JSON_OPTION) -> None:
    """Show a user's global role and their roles on models and experiments.

    Example: keel users roles bob
    """
    def go() -> list[dict[str, Any]]:
        if _server():
            return list(_call("GET", f"/v1/users/{name}/roles"))
        from keel.store.users import roles_of

        return roles_of(name)

    rows = run_guarded(go)
    if as_json:
        print_json(rows)
        return
    console.print(table(f"Roles of {name}", ["scope", "name", "role"], [(r["scope"], r.get("name", ""), r["role"]) for r in rows]))


@users_app.command("disable")
def users_disable(
    name: str,
    enable: bool = typer.Option(False, "--enable", help="Enable the user again."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Disable a user: their password and every token stop working at once.

    Example: keel users disable mallory
    """
    def go() -> dict[str, Any]:
        if _server():
            return dict(_call("PATCH", f"/v1/users/{name}", {"disabled": not enable}))
        from keel.store.users import disable_user

        return disable_user(name, disabled=not enable).to_dict()

    _done(run_guarded(go), as_json, lambda out: f"{name} is {'disabled' if out['disabled'] else 'enabled'}.")


# -- keel tokens -------------------------------------------------------------------------------

@tokens_app.command("create")
def tokens_create(
    user: str = typer.Argument(None, help="Whose token (default: the acting user)."),
    name: str = typer.Option("token", "--name", help="What the token is for (shown in `keel tokens ls`)."),
    scope: str = typer.Option("write", "--scope", help="The most it allows: read, write, approve or admin."),
    expires: str = typer.Option("90d", "--expires", help="Lifetime: 90d, 12h or never."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create an API token; it is printed this once and stored only as a hash.

    Example: keel tokens create ci-bot --name ci --scope write --expires 30d
    """
    days = _expires(expires)

    def go() -> dict[str, Any]:
        if _server():
            return dict(_call("POST", "/v1/tokens", {"user": user, "name": name, "scope": scope, "expires_days": days}))
        from keel.config import settings
        from keel.store.users import create_token

        token, plain = create_token(user or settings().acting_user, name=name, scope=scope, expires_days=days)
        return {**token.to_dict(), "token": plain}

    out = run_guarded(go)
    if as_json:
        print_json(out)
        return
    console.print(f"Token {out['id']} for [bold]{out['user']}[/] (scope {out['scope']}, expires {out['expires_time'] or 'never'}). "
                  "Copy it now; it is not shown again:", highlight=False)
    print(out["token"])


@tokens_app.command("ls")
def tokens_ls(
    user: str = typer.Option(None, "--user", help="Only this user's tokens."),
    everyone: bool = typer.Option(False, "--all", help="Against a server: every user's tokens (admins); the store lists all by default."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List tokens (never the tokens themselves): id, user, scope, expiry, last use.

    Example: keel tokens ls --user ci-bot
    """
    def go() -> list[dict[str, Any]]:
        if _server():
            return list(_call("GET", "/v1/tokens", params={"user": user} if user else {"all": everyone}))
        from keel.store.users import list_tokens

        return [t.to_dict() for t in list_tokens(user)]

    rows = run_guarded(go)
    if as_json:
        print_json(rows)
        return
    console.print(table("Tokens", ["id", "user", "name", "scope", "created", "expires", "last used", "status"], [
        (t["id"], t["user"], t["name"], t["scope"], (t["created_time"] or "")[:19], (t["expires_time"] or "never")[:19],
         (t["last_used_time"] or "")[:19], "revoked" if t["revoked"] else "expired" if t["expired"] else "active") for t in rows
    ]))


@tokens_app.command("revoke")
def tokens_revoke(token_id: str = typer.Argument(..., help="The token's id (keel tokens ls)."), as_json: bool = JSON_OPTION) -> None:
    """Revoke a token; it stops working at once.

    Example: keel tokens revoke 3f9c2a1b0d4e5f60
    """
    def go() -> dict[str, Any]:
        if _server():
            return dict(_call("DELETE", f"/v1/tokens/{token_id}"))
        from keel.store.users import revoke_token

        return revoke_token(token_id).to_dict()

    _done(run_guarded(go), as_json, lambda out: f"Token {out['id']} of {out['user']} is revoked.")


# -- keel owners -------------------------------------------------------------------------------

KIND_HELP = "model, feature_view, contract, monitor or deployment"
CHECK_OPTION = typer.Option(False, "--check", help="Exit 1 when there is a responsibility gap (for CI).")


def _report(kinds: list[str] | None) -> dict[str, Any]:
    if _server():
        params = {"kind": kinds} if kinds else None
        return {**_call("GET", "/v1/owners", params=params), **_call("GET", "/v1/owners/gaps")}
    from keel.loop.ownership import in_production, ownership, responsibility_gaps

    return {**ownership(kinds), "production": in_production(), "gaps": [g.to_dict() for g in responsibility_gaps()]}


def _show_report(out: dict[str, Any], as_json: bool, check: bool) -> None:
    gaps = out["gaps"]
    if as_json:
        print_json(out)
    else:
        rows = []
        for user, items in out["owners"].items():
            kinds: dict[str, list[str]] = {}
            for it in items:
                kinds.setdefault(it["kind"], []).append(it["name"])
            rows += [(user, k, ", ".join(names)) for k, names in kinds.items()]
        rows += [("(nobody)", it["kind"], it["name"]) for it in out["unowned"]]
        console.print(table("Owners", ["owner", "kind", "owns"], rows))
        prod = ", ".join(f"{p['model']}/{p['version']} ({'; '.join(p['via'])})" for p in out["production"]) or "nothing"
        console.print(f"In production: {prod}", highlight=False)
        if gaps:
            console.print(table(f"Responsibility gaps ({len(gaps)})", ["problem", "what", "detail", "fix"],
                                [(g["problem"].replace("_", " "), f"{g['kind']} {g['name']}", g["detail"], g["fix"]) for g in gaps],
                                optional=["fix"]))
        else:
            console.print("[green]No responsibility gap[/]: everything in production has owners, a monitor and contracts on its inputs.")
    if check and gaps:
        if not as_json:
            fail(f"{len(gaps)} responsibility gap(s) in production; see the fix column above.")
        raise typer.Exit(1)


@owners_app.callback()
def owners_main(ctx: typer.Context, as_json: bool = JSON_OPTION, check: bool = CHECK_OPTION) -> None:
    """What each owner owns, and the responsibility gaps: anything in production with no monitor, no owner or no contract on its inputs, and deployments nobody owns.

    Example: keel owners --check --json
    """
    if ctx.invoked_subcommand is None:
        _show_report(run_guarded(lambda: _report(None)), as_json, check)


def _owners(method: str, kind: str, name: str, users: list[str] | None, as_json: bool) -> None:
    def go() -> list[str]:
        if _server():
            if method == "GET":
                return list(_call("GET", f"/v1/owners/{kind}/{name}")["owners"])
            if method == "POST":
                return list(_call("POST", f"/v1/owners/{kind}/{name}", {"users": users})["owners"])
            out: list[str] = []
            for u in users or []:
                out = list(_call("DELETE", f"/v1/owners/{kind}/{name}/{u}")["owners"])
            return out
        from keel.store import owners as O

        O.check_kind(kind)
        if method == "GET":
            return O.owners_of(kind, name)
        return O.add_owners(kind, name, users or []) if method == "POST" else O.remove_owners(kind, name, users or [])

    owners = run_guarded(go)
    if as_json:
        print_json({"kind": kind, "name": name, "owners": owners})
    else:
        console.print(f"Owners of {kind} {name}: {', '.join(owners) or 'none'}", highlight=False)


@owners_app.command("ls")
def owners_ls(kind: str = typer.Argument(None, help=KIND_HELP + " (none: every kind)"),
              name: str = typer.Argument(None, help="One object (none: every object of the kind)."),
              as_json: bool = JSON_OPTION, check: bool = CHECK_OPTION) -> None:
    """Show the owners of one object; without NAME, what each owner owns (of KIND) and the responsibility gaps.

    Example: keel owners ls model churn
    """
    if name is None:
        if kind is not None:
            from keel.store.owners import check_kind

            run_guarded(lambda: check_kind(kind))
        _show_report(run_guarded(lambda: _report([kind] if kind else None)), as_json, check)
        return
    _owners("GET", kind, name, None, as_json)


@owners_app.command("add")
def owners_add(kind: str = typer.Argument(..., help=KIND_HELP), name: str = typer.Argument(...),
               users: list[str] = typer.Argument(..., help="Users to add."), as_json: bool = JSON_OPTION) -> None:
    """Add owners to a model, feature view, contract, monitor or deployment.

    Example: keel owners add model churn alice bob
    """
    _owners("POST", kind, name, users, as_json)


@owners_app.command("rm")
def owners_rm(kind: str = typer.Argument(..., help=KIND_HELP), name: str = typer.Argument(...),
              users: list[str] = typer.Argument(..., help="Owners to remove (never the last one)."), as_json: bool = JSON_OPTION) -> None:
    """Remove owners from a model, feature view, contract, monitor or deployment.

    Example: keel owners rm model churn bob
    """
    _owners("DELETE", kind, name, users, as_json)


def register(app: typer.Typer) -> None:
    app.command()(login)
    app.add_typer(users_app, name="users")
    app.add_typer(tokens_app, name="tokens")
    app.add_typer(owners_app, name="owners")
