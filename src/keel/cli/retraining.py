"""``keel retraining``: declare, inspect and run retraining policies (:mod:`keel.loop.policies`)."""

from __future__ import annotations

from functools import partial
from typing import Any

import typer

from keel.cli._common import JSON_OPTION, console, print_json, run_guarded, table

retraining_app = typer.Typer(
    no_args_is_help=True,
    help="Retraining policies: what retrains a model (alert, performance, schedule, new data), on which window, and how the new version "
    "reaches production.\n\nExample: keel retraining history churn-retrain",
)


def _when(v: Any) -> str:
    return "" if v is None else f"{v:%Y-%m-%d %H:%M:%S}"


def _outcome(e: dict[str, Any] | None) -> str:
    if not e:
        return ""
    reason = (e.get("detail") or {}).get("reason") or (e.get("detail") or {}).get("error") or ""
    version = f" v{e['model_version']}" if e.get("model_version") else ""
    return f"{e['action']} {e['outcome']}{version}" + (f": {reason}" if reason else "")


@retraining_app.command("ls")
def ls(json: bool = JSON_OPTION) -> None:
    """List the retraining policies: model, triggers, production mode, last event.

    Example: keel retraining ls --json
    """
    from keel.loop.policies import list_policies

    found = run_guarded(list_policies)
    if json:
        print_json(found)
        return
    rows = [(p["name"], p["model"], f"v{p['version']}", "paused" if p["paused"] else "active", "; ".join(p["triggers"]), p["production"],
             _when((p["last"] or {}).get("time")), _outcome(p["last"])) for p in found]
    console.print(table("Retraining policies", ["policy", "model", "version", "state", "triggers", "production", "last event", "outcome"], rows,
                        optional=["outcome", "last event", "production"]))
    if not found:
        console.print("No retraining policy yet: declare one under retraining: in keel.yaml, then `keel retraining declare`.")


@retraining_app.command("show")
def show(name: str = typer.Argument(..., help="The policy's name."), json: bool = JSON_OPTION) -> None:
    """Show a policy: its declaration and versions, owners, schedules, state (back-off, rollout) and recent events.

    Example: keel retraining show churn-retrain
    """
    from keel.loop.policies import describe_policy, describe_trigger

    d = run_guarded(lambda: describe_policy(name))
    if json:
        print_json(d)
        return
    spec, state = d["spec"], d["state"]
    console.print(f"[bold]{d['name']}[/] retrains [bold]{d['model']}[/] (declaration v{d['version']}, {d['origin']}; "
                  f"{'paused' if d['paused'] else 'active'}; owners {', '.join(d['owners']) or 'none'})", highlight=False)
    console.print(f"  triggers: {'; '.join(describe_trigger(t) for t in spec['triggers'])}", highlight=False)
    console.print(f"  pipeline: {spec['pipeline'] or 'the one that produced the champion'}; window {spec['window']}"
                  + (f" of {spec['window_source']} by {spec['window_column']}" if spec.get("window_source") else ""), highlight=False)
    console.print(f"  promotion: staging {spec['promotion'].get('staging', 'none')}, production {spec['promotion'].get('production', 'auto')}"
                  + (f" in deployment {spec['deployment']}" if spec.get("deployment") else ""), highlight=False)
    console.print(f"  guards: cooldown {spec['cooldown']}, at most {spec['max_retrains']} per {spec['per']}, back-off {spec['backoff']} doubling"
                  + (f"; {state['failures']} failure(s) in a row" if state.get("failures") else ""), highlight=False)
    if state.get("rollout"):
        r = state["rollout"]
        console.print(f"  rolling out: v{r['version']} in deployment {r['deployment']}", highlight=False)
    console.print(table("Schedules", ["schedule", "trigger", "enabled", "last fired"],
                        [(s["name"], s["trigger"], "yes" if s["enabled"] else "no", _when(s["last_fired"])) for s in d["schedules"]]))
    _events(d["history"], f"Recent events of {name}")


def _events(events: list[dict[str, Any]], title: str) -> None:
    rows = [(e["id"], _when(e["time"]), e["action"], e["outcome"], f"v{e['model_version']}" if e.get("model_version") else "",
             (e.get("run_id") or "")[:12], e["user"], _outcome(e).split(": ", 1)[1] if ": " in _outcome(e) else "") for e in events]
    console.print(table(title, ["id", "time", "action", "outcome", "version", "run", "user", "detail"], rows, optional=["detail", "run"]))


@retraining_app.command("history")
def history(name: str = typer.Argument(..., help="The policy's name."), limit: int = typer.Option(50, "--limit", help="Most events shown."),
            json: bool = JSON_OPTION) -> None:
    """What fired, when, what ran and with what outcome (newest first), with the acting user.

    Example: keel retraining history churn-retrain --limit 20
    """
    from keel.loop.policies import history as policy_history

    events = run_guarded(lambda: policy_history(name, limit=limit))
    if json:
        print_json(events)
        return
    _events(events, f"History of {name}")


@retraining_app.command("declare")
def declare(
    name: str = typer.Argument(None, help="Only this policy of keel.yaml (or the name of the one the options declare)."),
    model: str = typer.Option(None, "--model", "-m", help="Declare from options: the model it retrains (else keel.yaml's retraining: block)."),
    on_alert: list[str] = typer.Option(None, "--on-alert", help="MONITOR[:warn|alert]: retrain on the monitor's alert."),
    on_performance: list[str] = typer.Option(None, "--on-performance",
                                             help="MONITOR:METRIC<THRESHOLD:N, e.g. churn-daily:roc_auc<0.75:2 (N windows in a row)."),
    cron: list[str] = typer.Option(None, "--cron", help='A schedule, five cron fields in UTC, e.g. "0 3 * * 0".'),
    on_data: list[str] = typer.Option(None, "--on-data", help="Retrain when new data arrives at this file or folder."),
    pipeline: str = typer.Option(None, "--pipeline", help="MODULE:NAME (default: the pipeline that produced the champion)."),
    window: str = typer.Option("30d", "--window", help="The data window passed as window_start / window_end."),
    window_source: str = typer.Option(None, "--window-source", help="The data the window selects (checked: it must select rows)."),
    window_column: str = typer.Option("event_timestamp", "--window-column", help="Its timestamp column."),
    production: str = typer.Option("auto", "--production", help="auto | approval | canary:<weight> | shadow | shadow,canary:<weight> (shadow first, then the canary) | none."),
    staging: str = typer.Option("none", "--staging", help="auto | none."),
    deployment: str = typer.Option(None, "--deployment", help="The deployment a canary or shadow goes out in (default MODEL-live)."),
    cooldown: str = typer.Option("6h", "--cooldown", help="No retrain this soon after the last one."),
    max_retrains: int = typer.Option(3, "--max-retrains", help="At most this many retrains ..."),
    per: str = typer.Option("7d", "--per", help="... per this period."),
    json: bool = JSON_OPTION,
) -> None:
    """Check and store retraining policies: keel.yaml's retraining: block, or one from options. Nothing is stored unless all pass.

    Example: keel retraining declare churn-retrain --model churn --on-alert churn-daily --window-source data/labels.parquet --production canary:10
    """
    from keel.loop.policies import RetrainingPolicy, declare_from_config, declare_policy

    if model is None:
        done = run_guarded(lambda: declare_from_config(name))
    else:
        if not name:
            from keel.cli._common import fail

            fail("Name the policy: keel retraining declare NAME --model MODEL ...")
        triggers: list[dict[str, Any]] = [{"alert": a.partition(":")[0], "severity": a.partition(":")[2] or "alert"} for a in on_alert or []]
        triggers += [run_guarded(partial(_performance_option, spec)) for spec in on_performance or []]
        triggers += [{"schedule": c} for c in cron or []] + [{"data": d} for d in on_data or []]
        pol = RetrainingPolicy(name, model, triggers=triggers, pipeline=pipeline, window=window, window_source=window_source,
                               window_column=window_column, promotion={"staging": staging, "production": production}, deployment=deployment,
                               cooldown=cooldown, max_retrains=max_retrains, per=per)
        done = [run_guarded(lambda: declare_policy(pol))]
    if json:
        print_json(done)
        return
    for d in done:
        what = f"declared as v{d['version']}" if d["changed"] else f"unchanged (v{d['version']})"
        console.print(f"Retraining policy [bold]{d['name']}[/] for {d['model']}: {what}; pipeline {d['pipeline']}; "
                      f"schedules {', '.join(d['schedules'])}" + ("" if d["window_rows"] is None else f"; the window holds {d['window_rows']:,} rows"),
                      highlight=False)


def _performance_option(text: str) -> dict[str, Any]:
    import re

    from keel.errors import ValidationError

    m = re.match(r"^([^:]+):(estimated\.)?([A-Za-z0-9_]+)\s*([<>])\s*([-0-9.]+)(?::(\d+))?$", text.strip())
    if not m:
        raise ValidationError(f"--on-performance {text!r} is not understood.", hint="Write MONITOR:METRIC<THRESHOLD[:N], e.g. churn-daily:roc_auc<0.75:2.")
    out: dict[str, Any] = {"performance": m[1], "metric": m[3], "windows": int(m[6] or 1), ("below" if m[4] == "<" else "above"): float(m[5])}
    if m[2]:
        out["estimated"] = True
    return out


@retraining_app.command("run")
def run(
    name: str = typer.Argument(..., help="The policy's name."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would happen (guards, pipeline, window, gates, promotion); change nothing."),
    advance_rollout: bool = typer.Option(False, "--advance", help="Judge the policy's pending canary / shadow on its live comparison instead."),
    json: bool = JSON_OPTION,
) -> None:
    """Retrain now, as if a trigger fired (the guards apply): pipeline on the window, gates against the champion, promotion.

    Example: keel retraining run churn-retrain --dry-run
    """
    from keel.loop.retraining import advance, run_policy

    if advance_rollout:
        out = run_guarded(lambda: advance(name))
    elif dry_run:
        out = run_guarded(lambda: run_policy(name, dry_run=True))
    else:
        with console.status(f"[bold]retraining policy {name}[/]: pipeline, gates, promotion ..."):
            out = run_guarded(lambda: run_policy(name))
    if json:
        print_json(out)
        return
    if dry_run:
        console.print(f"Dry run of {name} (nothing changed):", highlight=False)
        for i, step in enumerate(out["would"], 1):
            console.print(f"  {i}. {step}", highlight=False)
        return
    detail = out.get("reason") or out.get("error") or ""
    version = f" v{out['version']}" if out.get("version") else ""
    console.print(f"{name}: {out['status']}{version}" + (f" ({detail})" if detail else "")
                  + (f"; run {out['run_id']}" if out.get("run_id") else ""), highlight=False)
    if out["status"] == "failed":
        raise typer.Exit(1)


@retraining_app.command("pause")
def pause(name: str = typer.Argument(..., help="The policy's name."), reason: str = typer.Option(None, "--reason", help="Why (audited).")) -> None:
    """Pause a policy: its triggers stop firing and runs are skipped until it is resumed.

    Example: keel retraining pause churn-retrain --reason "label feed broken"
    """
    from keel.loop.policies import set_paused

    run_guarded(lambda: set_paused(name, True, reason=reason))
    console.print(f"Retraining policy {name} is paused.", highlight=False)


@retraining_app.command("resume")
def resume(name: str = typer.Argument(..., help="The policy's name."), reason: str = typer.Option(None, "--reason", help="Why (audited).")) -> None:
    """Resume a paused policy.

    Example: keel retraining resume churn-retrain
    """
    from keel.loop.policies import set_paused

    run_guarded(lambda: set_paused(name, False, reason=reason))
    console.print(f"Retraining policy {name} is active again.", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(retraining_app, name="retraining")
