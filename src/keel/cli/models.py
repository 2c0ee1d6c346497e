"""``keel models``: the registry from the command line (a thin layer over keel.registry)."""

from __future__ import annotations

from typing import Any

import typer

from keel.cli._common import JSON_OPTION, console, fail, print_json, run_guarded, table

models_app = typer.Typer(help="Registered models: versions, evaluation, promotion gates, approvals, rollback.", no_args_is_help=True)


def _num(v: Any) -> str:
    from datetime import datetime

    if v is None:
        return ""
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(v, float):
        if v != v:
            return "nan"
        text = f"{v:.4f}"
        return text[1:] if text.startswith("-") and float(text) == 0 else text  # never '-0.0000'
    return str(v)


def _version_arg(version: str) -> Any:
    return int(version) if version.isdigit() else version


@models_app.command("ls")
def ls(as_json: bool = JSON_OPTION) -> None:
    """List registered models with their environments and aliases.

    Example: keel models ls --json
    """
    from keel.registry import list_models

    def go() -> None:
        models = list_models()
        if as_json:
            print_json([m.to_dict() for m in models])
            return
        console.print(table("Registered models", ["name", "owners", "latest", "environments", "aliases", "description"], [
            (m.name, ", ".join(m.owners), m.latest_version, ", ".join(f"{k}=v{v}" for k, v in m.environments.items()),
             ", ".join(f"{k}=v{v}" for k, v in m.aliases.items()), m.description or "")
            for m in models
        ]))

    run_guarded(go)


@models_app.command("show")
def show(name: str, version: str = typer.Argument(None, help="A version number or alias; all versions when omitted."), as_json: bool = JSON_OPTION) -> None:
    """Show a model's versions, or one version with its package, lineage and evaluations.

    Example: keel models show churn 3
    """
    from keel.registry import evaluations, get_model, get_version, list_versions

    def go() -> None:
        if version is None:
            versions = list_versions(name)
            if as_json:
                print_json([v.to_dict() for v in versions])
                return
            console.print(f"[bold]{name}[/]  owners: {', '.join(get_model(name).owners) or 'none'}", highlight=False)
            console.print(table(f"Versions of {name}", ["version", "run", "flavor", "created", "by", "environments", "aliases", "status"], [
                (v.version, v.run_id[:12], v.flavor, _num(v.created_time), v.created_by, ", ".join(v.environments), ", ".join(v.aliases),
                 "" if v.status == "active" else v.status) for v in versions
            ]))
            return
        mv = get_version(name, _version_arg(version))
        evals = evaluations(name, mv.version)
        if as_json:
            print_json({**mv.to_dict(), "evaluations": evals})
            return
        console.print(f"[bold]{name} v{mv.version}[/]  {mv.uri}  flavor={mv.flavor}  run={mv.run_id}"
                      + ("" if mv.status == "active" else f"  [yellow]{mv.status} {_num(mv.deleted_time or mv.archived_time)}[/]"))
        lin = mv.lineage
        console.print(table("Lineage", ["what", "value"], [
            ("run", f"{lin.get('run_name')} ({mv.run_id})"), ("training data", lin.get("training_fingerprint")),
            ("feature service", f"{lin.get('feature_service')} v{lin.get('feature_service_version')}" if lin.get("feature_service") else None),
            ("definitions version", lin.get("definitions_version")), ("code commit", (lin.get("code") or {}).get("commit")),
            ("package lock", lin.get("package_lock_sha256")), ("python", lin.get("python")),
        ]))
        sig = (mv.meta.get("signature") or {}).get("inputs", [])
        console.print(table("Signature", ["column", "type", "nullable"], [(c["name"], c["type"], c["nullable"]) for c in sig]))
        if evals:
            e = evals[0]
            console.print(table(f"Latest evaluation ({e['dataset']}, {e['num_rows']} rows)", ["metric", "value"], [(k, _num(v)) for k, v in e["metrics"].items()]))

    run_guarded(go)


@models_app.command("register")
def register_cmd(
    source: str = typer.Argument(..., help="runs:/<run_id>/model, or a run id"),
    name: str = typer.Argument(...),
    description: str = typer.Option(None, "--description", "-d"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Register a logged model as the next version of NAME.

    Example: keel models register runs:/4f2c.../model churn
    """
    from keel.registry import register_model

    def go() -> None:
        mv = register_model(source, name, description=description)
        if as_json:
            print_json(mv.to_dict())
        else:
            console.print(f"Registered {name} v{mv.version} ({mv.uri}) from run {mv.run_id}")

    run_guarded(go)


@models_app.command("evaluate")
def evaluate_cmd(
    name: str,
    version: str,
    data: str = typer.Option(..., "--data", help="Parquet or CSV file with the target column"),
    target: str = typer.Option(..., "--target"),
    task: str = typer.Option("binary", "--task", help="binary, multiclass or regression"),
    slices: list[str] = typer.Option([], "--slice", help="Column to slice by (repeatable)"),
    threshold: float = typer.Option(0.5, "--threshold"),
    against: str = typer.Option("auto", "--against", help="Version or alias to compare with; 'auto' is the production version, 'none' for none"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Evaluate a version on a dataset beside the champion (results stored on both versions).

    Example: keel models evaluate churn 3 --data data/valid.parquet --target churned --slice region
    """
    from keel.evaluation.evaluate import evaluate
    from keel.registry import get_version

    def go() -> None:
        mv = get_version(name, _version_arg(version))
        baseline: Any = None if against == "none" else ("auto" if against == "auto" else get_version(name, _version_arg(against)).uri)
        with console.status(f"Evaluating {name} v{mv.version}..."):
            res = evaluate(mv.uri, data, target=target, task=task, slices=slices, threshold=threshold, baseline=baseline)
        if as_json:
            print_json(res.to_dict())
            return
        if res.baseline is not None:
            console.print(table(f"{name} v{mv.version} vs {res.baseline.model} on {res.dataset} ({res.num_rows} rows)",
                                ["metric", f"v{mv.version}", "baseline", "delta", "95% interval"],
                                [(r["metric"], _num(r["model"]), _num(r["baseline"]), _num(r["delta"]),
                                  f"[{_num(r.get('low'))}, {_num(r.get('high'))}]" if "low" in r else "") for r in res.comparison]))
        else:
            console.print(table(f"{name} v{mv.version} on {res.dataset} ({res.num_rows} rows)", ["metric", "value"], [(k, _num(v)) for k, v in res.metrics.items()]))
        if res.slices:
            keys = list(res.slices[0]["metrics"])[:5]
            console.print(table("Slices", ["slice", "rows", *keys], [(s["slice"], s["num_rows"], *(_num(s["metrics"].get(k)) for k in keys)) for s in res.slices]))

    run_guarded(go)


def _gate_table(report: Any) -> Any:
    return table(
        f"Gates for {report.model} v{report.version} -> {report.environment}"
        + (f" (vs v{report.champion_version})" if report.champion_version else "") + f"  policy: {report.policy}",
        ["gate", "result", "value", "required", "champion", "detail"],
        [(r.name, {"pass": "[green]pass[/]", "fail": "[red]FAIL[/]", "skip": "[yellow]skip[/]"}.get(r.status, r.status),
          _num(r.value), _num(r.required), _num(r.champion), r.detail) for r in report.results],
    )


@models_app.command("promote")
def promote_cmd(
    name: str,
    version: str,
    to: str = typer.Option("production", "--to", help="Target environment"),
    data: str = typer.Option(None, "--data", help="Evaluation data (Parquet/CSV); default: the policy's"),
    target: str = typer.Option(None, "--target"),
    task: str = typer.Option(None, "--task"),
    force: bool = typer.Option(False, "--force", help="Override failed gates (admins only, with --reason)"),
    reason: str = typer.Option(None, "--reason"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Promote a version into an environment through its gates; exits 1 when refused.

    Example: keel models promote churn 3 --to production --data data/valid.parquet --target churned
    """
    import keel.deployments  # noqa: F401  (registers the "live" gate kind)
    from keel.errors import KeelError
    from keel.registry import GatesFailed, promote

    try:
        with console.status(f"Evaluating the gates for {name} v{version} -> {to}..."):
            t = promote(name, _version_arg(version), to=to, data=data, target=target, task=task, force=force, reason=reason)
    except GatesFailed as exc:
        if as_json:
            print_json({"status": "refused", "message": str(exc), "gates": exc.report.to_dict()})
        else:
            console.print(_gate_table(exc.report))
        fail(str(exc))
        return
    except KeelError as exc:
        if as_json:
            print_json(exc.to_dict())
        fail(str(exc).replace("\n", " "))
        return
    if as_json:
        print_json(t.to_dict())
        return
    if t.gates is not None:
        console.print(_gate_table(t.gates))
    if t.status == "unchanged":
        console.print(f"{name} v{t.to_version} is already in {to}.")
    elif t.status == "pending":
        console.print(f"{to} requires approval: request #{t.request_id} is pending (keel models approve {t.request_id} --reason ...).")
    else:
        console.print(f"[green]{name} v{t.to_version} is now in {to}[/] (was {('v' + str(t.from_version)) if t.from_version else 'empty'}; {t.status}).")


@models_app.command("approve")
def approve_cmd(request_id: int, reason: str = typer.Option(..., "--reason"), as_json: bool = JSON_OPTION) -> None:
    """Approve a pending promotion request (not your own) and apply it.

    Example: keel models approve 4 --reason "reviewed the slice metrics"
    """
    from keel.registry import approve

    def go() -> None:
        t = approve(request_id, reason)
        if as_json:
            print_json(t.to_dict())
        else:
            console.print(f"Approved #{request_id}: {t.model} v{t.to_version} is now in {t.environment}.")

    run_guarded(go)


@models_app.command("reject")
def reject_cmd(request_id: int, reason: str = typer.Option(..., "--reason"), as_json: bool = JSON_OPTION) -> None:
    """Reject a pending promotion request.

    Example: keel models reject 4 --reason "wait for the October data"
    """
    from keel.registry import reject

    def go() -> None:
        e = reject(request_id, reason)
        if as_json:
            print_json(e)
        else:
            console.print(f"Rejected #{request_id}.")

    run_guarded(go)


@models_app.command("requests")
def requests_cmd(
    name: str = typer.Argument(None),
    status: str = typer.Option(None, "--status", help="pending, approved or rejected"),
    as_json: bool = JSON_OPTION,
) -> None:
    """List approval requests.

    Example: keel models requests churn --status pending
    """
    from keel.registry import list_requests

    def go() -> None:
        rows = list_requests(name, status)
        if as_json:
            print_json(rows)
            return
        console.print(table("Approval requests", ["id", "model", "version", "env", "status", "requested by", "when", "decided by", "reason"], [
            (r["id"], r["model"], r["version"], r["environment"], r["status"], r["requested_by"], _num(r["requested_time"]), r["decided_by"] or "",
             r["decision_reason"] or r["reason"] or "") for r in rows
        ]))

    run_guarded(go)


@models_app.command("rollback")
def rollback_cmd(name: str, env: str = typer.Option("production", "--env"), reason: str = typer.Option(None, "--reason"), as_json: bool = JSON_OPTION) -> None:
    """Restore the version an environment held before its current one.

    Example: keel models rollback churn --env production --reason "latency regression"
    """
    from keel.registry import rollback

    def go() -> None:
        t = rollback(name, env, reason=reason)
        if as_json:
            print_json(t.to_dict())
        else:
            console.print(f"Rolled back {name} in {env}: v{t.from_version} -> v{t.to_version}.")

    run_guarded(go)


@models_app.command("alias")
def alias_cmd(
    name: str, alias: str, version: str = typer.Argument(None, help="Version to point at; omit with --delete"),
    delete: bool = typer.Option(False, "--delete"), as_json: bool = JSON_OPTION,
) -> None:
    """Set (or delete) a free alias such as champion or challenger.

    Example: keel models alias churn challenger 4
    """
    from keel.registry import delete_alias, set_alias

    def go() -> None:
        if delete:
            e = delete_alias(name, alias)
        elif version is None:
            fail("Give a VERSION, or --delete to remove the alias.")
            return
        else:
            e = set_alias(name, alias, _version_arg(version))
        if as_json:
            print_json(e)
        else:
            console.print(f"{name}@{alias} -> {('v' + str(e['to_version'])) if e['to_version'] else 'deleted'}")

    run_guarded(go)


@models_app.command("archive")
def archive_cmd(
    name: str, version: str = typer.Argument(None, help="A version number; the whole model when omitted."),
    restore: bool = typer.Option(False, "--restore", help="Undo an earlier archive."),
    reason: str = typer.Option(None, "--reason"), as_json: bool = JSON_OPTION,
) -> None:
    """Archive a model or version (no more promotions or aliases; still loadable by number), or --restore it.

    Refused for anything an environment or alias holds. Audited.
    Example: keel models archive churn 3 --reason "superseded by v5"
    """
    from keel import registry

    def go() -> None:
        v = None if version is None else _version_arg(version)
        if v is None:
            e = registry.restore_model(name, reason=reason) if restore else registry.archive_model(name, reason=reason)
        else:
            e = registry.restore_version(name, v, reason=reason) if restore else registry.archive_version(name, v, reason=reason)
        if as_json:
            print_json(e)
        else:
            console.print(f"{name}{'' if v is None else f' v{v}'} {'restored' if restore else 'archived'}.")

    run_guarded(go)


@models_app.command("delete")
def delete_cmd(
    name: str, version: str = typer.Argument(None, help="A version number; the whole model when omitted."),
    reason: str = typer.Option(None, "--reason"), yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Delete a model or version as a tombstone: its record and lineage keep resolving, its files are released
    (`keel gc` reclaims blobs no run holds). Refused for anything an environment or alias holds. Audited.

    Example: keel models delete churn 3 --reason "trained on leaked labels" --yes
    """
    from keel import registry

    def go() -> None:
        v = None if version is None else _version_arg(version)
        what = f"{name} v{v}" if v is not None else f"model {name} and all its versions"
        if not yes and not as_json and not typer.confirm(f"Delete {what}?"):
            fail("Nothing deleted.")
        e = registry.delete_model(name, reason=reason) if v is None else registry.delete_version(name, v, reason=reason)
        if as_json:
            print_json(e)
        else:
            console.print(f"Deleted {what} (a tombstone: its lineage stays in `keel models show`).")

    run_guarded(go)


@models_app.command("history")
def history_cmd(name: str, as_json: bool = JSON_OPTION) -> None:
    """The audit log of a model: every transition attempt, who, when, why.

    Example: keel models history churn
    """
    from keel.registry import history

    def go() -> None:
        rows = history(name)
        if as_json:
            print_json(rows)
            return
        console.print(table(f"Audit log of {name}", ["id", "time", "user", "action", "target", "from", "to", "outcome", "reason"], [
            (e["id"], _num(e["time"]), e["user"], e["action"], e["target"] or "", e["from_version"] or "", e["to_version"] or "", e["outcome"], e["reason"] or "")
            for e in rows
        ]))

    run_guarded(go)


@models_app.command("status")
def status_cmd(name: str, as_json: bool = JSON_OPTION) -> None:
    """What runs in each environment, when and by which run it was trained, its metrics beside
    the previous version's, what changed, and what a rollback would restore.

    Example: keel models status churn
    """
    from keel.registry import status

    def go() -> None:
        st = status(name)
        if as_json:
            print_json(st)
            return
        console.print(f"[bold]{name}[/]  owners {', '.join(st['owners'])}  latest v{st['latest_version']}"
                      + (f"  aliases: {', '.join(f'{k}=v{v}' for k, v in st['aliases'].items())}" if st["aliases"] else ""))
        for e in st["environments"]:
            if e["version"] is None:
                console.print(f"\n[bold]{e['environment']}[/]: empty")
                continue
            console.print(f"\n[bold]{e['environment']}[/]: v{e['version']} since {_num(e['since'])} ({e['how']} by {e['moved_by']})")
            console.print(f"  trained {_num(e['trained_time'])} by {e['trained_by']} in run {e['run_name']} ({e['run_id']})")
            console.print(f"  data {e['training_data'] or '-'}  features {e['feature_service'] or '-'}"
                          + (f" v{e['feature_service_version']}" if e["feature_service_version"] is not None else "") + f"  commit {e['code_commit'] or '-'}")
            prev = e["previous_version"]
            console.print(table(f"Metrics ({e['metrics_source']})", ["metric", f"v{e['version']}", f"v{prev}" if prev else "previous"],
                                [(r["metric"], _num(r["current"]), _num(r["previous"])) for r in e["metrics"]]))
            if e["changes"]:
                rows = [(kind, c["key"], c["previous"], c["current"]) for kind, items in e["changes"].items() for c in items]
                console.print(table(f"Changed since v{prev}", ["what", "key", f"v{prev}", f"v{e['version']}"], rows) if rows else "  nothing changed since the previous version")
            console.print(f"  rollback restores: {('v' + str(e['rollback_to'])) if e['rollback_to'] else 'nothing (no earlier version)'}")
        if st["pending_requests"]:
            console.print(table("Pending approvals", ["id", "version", "env", "requested by"], [(r["id"], r["version"], r["environment"], r["requested_by"]) for r in st["pending_requests"]]))

    run_guarded(go)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
