"""Pipeline commands: run, resume, ls, show; schedule add|ls|rm; scheduler; ci."""

from __future__ import annotations

import json as _json
from datetime import UTC, datetime
from typing import Any

import typer
from rich.markup import escape

from keel.cli._common import JSON_OPTION, console, err_console, fail, print_json, run_guarded, table

pipelines_app = typer.Typer(help="Run pipelines and inspect their runs.\n\nExample: keel pipelines run pipelines:training --param n_estimators=200", no_args_is_help=True)
schedule_app = typer.Typer(help="Schedules and triggers that start pipeline runs.\n\nExample: keel schedule add nightly --cron \"0 3 * * *\" pipelines:training", no_args_is_help=True)

PARAM_OPTION = typer.Option(None, "--param", "-p", help="A pipeline parameter as key=value (repeatable).")
ENGINE_OPTION = typer.Option(None, "--engine", "-e", help="local (in-process, default), process (local pool) or ray.")


def _params(items: list[str] | None) -> dict[str, str]:
    from keel.errors import ValidationError

    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValidationError(f"--param {item!r} is not key=value.", hint="Write e.g. --param n_estimators=200.")
        out[key.strip()] = value
    return out


def _bound(ref: str, params: list[str] | None) -> tuple[Any, dict[str, Any]]:
    from keel.pipelines.pipeline import load_pipeline

    pipe = load_pipeline(ref)
    return pipe, pipe.bind(_params(params), coerce=True)


def _fmt_s(v: Any) -> str:
    return "" if v is None else f"{v / 1000:.2f} s" if isinstance(v, int) else f"{v:.2f} s"


def _progress(total: int) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"), TimeElapsedColumn(), console=err_console, transient=True)


def _run_with_progress(json: bool, go: Any, steps: int) -> Any:
    from keel.pipelines.runner import StepFailed

    if json or steps == 0:
        try:
            return run_guarded(lambda: go(None)), None
        except typer.Exit:
            raise
    with _progress(steps) as prog:
        task = prog.add_task("running", total=steps)

        def on_step(r: Any) -> None:
            prog.update(task, advance=1, description=f"{r.name}: {r.status}")

        try:
            return go(on_step), None
        except StepFailed as exc:
            return exc.result, exc
        except Exception as exc:
            from keel.errors import KeelError

            if isinstance(exc, KeelError):
                fail(str(exc).replace("\n", " "))
            raise


def _cache(status: str | None, hit: Any) -> str:
    """hit, miss (the step ran), or blank (it never started)."""
    if hit:
        return "hit"
    return "miss" if status in ("finished", "failed", "running") else ""


def _print_result(result: Any, error: Any, json: bool) -> None:
    rows = [(s.name, s.status, _cache(s.status, s.cache_hit), f"{s.duration_s:.2f} s", f"{s.saved_s:.2f} s" if s.cache_hit else "", _first_line(s.error)) for s in result.steps.values()]
    verdicts = _verdicts(result) if result.smoke else []
    if json:
        print_json({
            "run_id": result.run_id, "pipeline": result.pipeline, "status": result.status, "smoke": result.smoke,
            "duration_s": result.duration_s, "cached": result.cached, "time_saved_s": result.time_saved_s,
            "steps": [s.__dict__ for s in result.steps.values()], "error": str(error) if error else None,
            **({"promotions": verdicts} if result.smoke else {}),
        })
    else:
        columns = ["step", "status", "cache", "duration", "saved", "error"]
        shown: list[tuple[Any, ...]] = list(rows)
        if not any(r[-1] for r in rows):  # no step failed: no empty error column
            columns, shown = columns[:-1], [r[:-1] for r in rows]
        console.print(table(f"Pipeline {result.pipeline} run {result.run_id}", columns, shown))
        console.print(result.summary())
        for line in verdicts:
            console.print(f"smoke check: {escape(line)}")
    if error is not None:
        fail(str(error).replace("\n", " "))


def _first_line(text: str | None) -> str:
    """A step's error in the table: its first line (the full message follows the table)."""
    return "" if not text else text.strip().splitlines()[0][:120]


def _verdicts(result: Any) -> list[str]:
    """The smoke run's dry-run promotions ("would promote ...: yes/no (why)")."""
    from keel.errors import KeelError
    from keel.pipelines.smoke import promotion_verdicts

    try:
        return promotion_verdicts(result.run_id)
    except KeelError:
        return []


def _pipeline_run(ref: str) -> Any:
    """run_steps(ref), with an unknown run pointing at `keel pipelines ls`."""
    from keel.errors import NotFoundError
    from keel.pipelines.runner import run_steps

    try:
        return run_steps(ref)
    except NotFoundError:
        raise NotFoundError(f"No pipeline run {ref!r}.", hint="List pipeline runs (id, name, status) with `keel pipelines ls`.") from None


@pipelines_app.command("run")
def run_cmd(
    pipeline: str = typer.Argument(..., help="MODULE:NAME or path/to/file.py:NAME of a @keel.pipeline."),
    param: list[str] = PARAM_OPTION,
    smoke: bool = typer.Option(False, "--smoke", help="Run on a data sample with shrunken params, in the <experiment>-smoke namespace; registration and promotion are dry runs."),
    refresh: bool = typer.Option(False, "--refresh", help="Ignore the cache: run every step again."),
    refresh_step: list[str] = typer.Option(None, "--refresh-step", help="Run this step again whatever the cache holds (repeatable)."),
    engine: str = ENGINE_OPTION,
    json: bool = JSON_OPTION,
) -> None:
    """Run a pipeline; steps whose inputs, code and params are unchanged come from the cache.

    Example: keel pipelines run pipelines:training --param n_estimators=200 --engine process
    """
    from keel.pipelines.lint import lint
    from keel.pipelines.runner import run

    def check() -> tuple[Any, dict[str, Any], int]:
        pipe, bound = _bound(pipeline, param)
        graph = pipe.graph(**bound)
        lint(graph, engine=engine or "local")
        return pipe, bound, len(graph.nodes)

    _pipe, bound, n = run_guarded(check)
    refresh_arg: Any = True if refresh else (refresh_step or False)
    result, error = _run_with_progress(json, lambda cb: run(pipeline, bound, smoke=smoke, refresh=refresh_arg, engine=engine, on_step=cb), n)
    _print_result(result, error, json)


@pipelines_app.command("resume")
def resume_cmd(
    run: str = typer.Argument(..., help="The pipeline run (id, id prefix or name)."),
    from_step: str = typer.Option(None, "--from", help="Re-run this step and everything after it."),
    engine: str = ENGINE_OPTION,
    json: bool = JSON_OPTION,
) -> None:
    """Run a failed or killed pipeline run again; its finished steps come from the cache.

    Example: keel pipelines resume 3f2a9c --from train
    """
    from keel.pipelines.runner import resume

    _, steps = run_guarded(lambda: _pipeline_run(run))
    result, error = _run_with_progress(json, lambda cb: resume(run, from_step=from_step, engine=engine, on_step=cb), len(steps))
    _print_result(result, error, json)


@pipelines_app.command("ls")
def ls_cmd(
    pipeline: str = typer.Option(None, "--pipeline", help="Only runs of this pipeline (name or MODULE:NAME)."),
    limit: int = typer.Option(50, "--limit", "-n", help="Most runs to show."),
    json: bool = JSON_OPTION,
) -> None:
    """List pipeline runs, newest first, with their status and how many steps came from cache.

    Example: keel pipelines ls --pipeline training
    """
    from keel.pipelines.runner import list_runs
    from keel.store.metadata import ms_to_datetime

    rows = run_guarded(lambda: list_runs(pipeline, limit))
    if json:
        print_json(rows)
        return
    console.print(table("Pipeline runs (newest first; `keel pipelines show RUN` for one)", ["run", "pipeline", "status", "cached", "smoke", "trigger", "started"], [
        (r["run_id"][:8], r["name"], r["status"], f"{r['cached'] or 0}/{r['steps']}", "yes" if r["smoke"] else "", r["trigger"],
         ms_to_datetime(r["created_ms"]).strftime("%m-%d %H:%M")) for r in rows  # type: ignore[union-attr]
    ]))


_STYLE = {"finished": "green", "cached": "cyan", "failed": "red", "skipped": "dim", "pending": "dim", "running": "yellow"}


@pipelines_app.command("show")
def show_cmd(
    run: str = typer.Argument(None, help="The pipeline run (id, id prefix or name); default: the latest. `keel pipelines ls` lists them."),
    json: bool = JSON_OPTION,
) -> None:
    """Show a pipeline run: its graph as a tree, each step's status, duration and cache hit or miss.

    Example: keel pipelines show 3f2a9c
    """
    from rich.tree import Tree

    from keel.pipelines.runner import list_runs

    if run is None:
        latest = run_guarded(lambda: list_runs(None, 1))
        if not latest:
            fail("No pipeline runs yet: start one with `keel pipelines run MODULE:NAME`, then list them with `keel pipelines ls`.")
        run = latest[0]["run_id"]
        if not json:
            err_console.print("[dim]The latest pipeline run; `keel pipelines ls` lists them all.[/]")
    row, steps = run_guarded(lambda: _pipeline_run(run))
    graph = _json.loads(row.graph)
    by_name = {s["step"]: s for s in steps}
    if json:
        print_json({"run_id": row.run_id, "pipeline": row.pipeline, "params": _json.loads(row.params), "smoke": bool(row.smoke),
                    "trigger": row.trigger, "resume_of": row.resume_of, "graph": graph, "steps": steps})
        return
    root = Tree(f"[bold]{row.name}[/] run {row.run_id} ({row.pipeline}{', smoke' if row.smoke else ''}; started by {row.trigger})")
    nodes: dict[str, Any] = {}
    for st in graph["steps"]:
        s = by_name.get(st["name"], {})
        status = s.get("status", "pending")
        style = _STYLE.get(status, "")
        cache = {"hit": " cache hit", "miss": " cache miss"}.get(_cache(status, s.get("cache_hit")), "")
        dur = _fmt_s(s.get("duration_ms"))
        ups = st["upstream"]
        also = f" [dim](also needs {', '.join(ups[:-1])})[/]" if len(ups) > 1 else ""
        label = f"[{style}]{st['name']}[/] {status} {dur}{cache}{also} [dim]{st['where']}[/]"
        if s.get("error"):
            label += f"\n[red]{s['error'].strip().splitlines()[-1]}[/]"
        parent = nodes.get(ups[-1]) if ups else None
        nodes[st["name"]] = (parent or root).add(label)
    console.print(root)


def _job_kinds() -> None:
    """Import the layers that register job kinds with the scheduler (monitors, retraining policies)."""
    import keel.loop
    import keel.monitoring  # noqa: F401


@schedule_app.command("add")
def schedule_add(
    name: str = typer.Argument(..., help="A name for the schedule."),
    pipeline: str = typer.Argument(..., help="MODULE:NAME of the pipeline to start (or the target of another --job kind)."),
    cron: str = typer.Option(None, "--cron", help='Five-field cron expression in UTC, e.g. "0 3 * * *".'),
    on_source: str = typer.Option(None, "--on-source", help="Start when this file or folder's content changes (new data)."),
    on_model: str = typer.Option(None, "--on-model", help="Start when a version of this model is registered, promoted, rolled back or aliased (MODEL@ENV: only moves of ENV)."),
    job: str = typer.Option("pipeline", "--job", help="The job kind to start (pipeline, or one another keel module registers)."),
    param: list[str] = PARAM_OPTION,
    json: bool = JSON_OPTION,
) -> None:
    """Add a cron schedule or an event trigger; a trigger that would start its own pipeline in a loop is refused.

    Example: keel schedule add nightly --cron "0 3 * * *" pipelines:training
    """
    from keel.pipelines.schedule import add_schedule

    _job_kinds()

    def go() -> Any:
        given = _params(param)
        if job == "pipeline":
            _pipe, bound = _bound(pipeline, param)
            given = {k: bound[k] for k in given}
        return add_schedule(name, pipeline, job=job, cron=cron, on_source=on_source, on_model=on_model, params=given)

    s = run_guarded(go)
    if json:
        print_json(s.__dict__)
        return
    console.print(f"Schedule [bold]{s.name}[/]: {s.pipeline} on {s.describe()}.")


@schedule_app.command("ls")
def schedule_ls(json: bool = JSON_OPTION) -> None:
    """List schedules and triggers with the last run each started.

    Example: keel schedule ls --json
    """
    from keel.pipelines.schedule import list_schedules

    rows = run_guarded(list_schedules)
    if json:
        print_json([r.__dict__ for r in rows])
        return
    console.print(table("Schedules", ["name", "pipeline", "when", "params", "last fired", "last run"], [
        (s.name, s.pipeline, s.describe(), _json.dumps(s.params) if s.params else "", s.last_fired.strftime("%Y-%m-%d %H:%M:%S") if s.last_fired else "", s.last_run_id or "")
        for s in rows
    ]))


@schedule_app.command("rm")
def schedule_rm(name: str = typer.Argument(..., help="The schedule to remove.")) -> None:
    """Remove a schedule or trigger.

    Example: keel schedule rm nightly
    """
    from keel.pipelines.schedule import remove_schedule

    run_guarded(lambda: remove_schedule(name))
    console.print(f"Removed schedule {name}.")


def _when(text: str | None, what: str) -> datetime | None:
    from keel.errors import ValidationError

    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"{what} {text!r} is not an ISO time.", hint="Write e.g. 2026-01-01T03:00:00Z.") from None
    if t.tzinfo is None:
        raise ValidationError(f"{what} {text!r} has no time zone.", hint="Add Z or +00:00.")
    return t.astimezone(UTC)


def scheduler(
    once: bool = typer.Option(False, "--once", help="Check every schedule once and exit."),
    until: str = typer.Option(None, "--until", help="Stop at this UTC time (ISO)."),
    now: str = typer.Option(None, "--now", help="Use this time as the clock (tests; with --once)."),
    poll: float = typer.Option(30.0, "--poll", help="Seconds between checks."),
    workers: int = typer.Option(2, "--workers", help="Jobs that may run at once (each in its own process)."),
    lease: float = typer.Option(60.0, "--lease", help="Seconds a claim on a run lasts unless renewed; a crashed scheduler's runs are marked crashed after it."),
    engine: str = ENGINE_OPTION,
    json: bool = JSON_OPTION,
) -> None:
    """Run the schedules and triggers: start each job when its time or event comes.

    Several schedulers may run at once (on one or more machines): each run is
    claimed in the metadata store first, so none starts twice.

    Example: keel scheduler --poll 60
    """
    from keel.pipelines.schedule import list_schedules
    from keel.pipelines.triggers import run_scheduler

    _job_kinds()

    fixed = run_guarded(lambda: _when(now, "--now"))
    stop = run_guarded(lambda: _when(until, "--until"))
    known = run_guarded(list_schedules)
    if not json:
        names = ", ".join(f"{s.name} ({s.describe()})" for s in known[:5]) + (f" and {len(known) - 5} more" if len(known) > 5 else "")
        when = "once" if once else f"every {poll:g} s" + (f" until {stop:%Y-%m-%d %H:%M} UTC" if stop else " until stopped (Ctrl-C)")
        err_console.print(
            f"keel scheduler: checking {len(known)} schedule(s) {when}" + (f": {names}" if known else "; add one with `keel schedule add`") + "."
        )

    def show(f: Any) -> None:
        if not json:
            console.print(f"{datetime.now(UTC):%H:%M:%S} {f.schedule}: run {f.run_id or '-'} {f.status}{' (' + f.error + ')' if f.error else ''}")

    fired = run_guarded(lambda: run_scheduler(once=once, until=stop, poll_seconds=poll, clock=(lambda: fixed) if fixed else None, engine=engine, on_fire=show,
                                                     workers=workers, lease_seconds=lease))
    if json:
        print_json([f.__dict__ for f in fired])
    elif once and not fired:
        console.print("Nothing due.")
    if any(f.status in ("failed", "crashed") for f in fired):
        raise typer.Exit(1)


def ci(
    pipeline: str = typer.Argument(None, help="MODULE:NAME of the pipeline to smoke-test (default: none, only the contracts)."),
    param: list[str] = PARAM_OPTION,
    engine: str = ENGINE_OPTION,
    no_contracts: bool = typer.Option(False, "--no-contracts", help="Skip validating the attached contracts."),
    json: bool = JSON_OPTION,
) -> None:
    """Smoke-run a pipeline (sample, shrunk params, dry-run promotion) and validate every attached contract; exit 1 on any failure.

    Without PIPELINE only the contracts are validated.

    Example: keel ci pipelines:training
    """
    from keel.pipelines.smoke import run_ci

    def go() -> Any:
        bound = _bound(pipeline, param)[1] if pipeline else None
        if param and not pipeline:
            from keel.errors import ValidationError

            raise ValidationError("--param needs a PIPELINE to pass it to.", hint="e.g. keel ci pipelines:training --param n=100")
        return run_ci(pipeline, bound, engine=engine, contracts=not no_contracts)

    rep = run_guarded(go)
    if json:
        print_json({**rep.__dict__, "ok": rep.ok})
    else:
        if rep.pipeline:
            console.print(f"smoke run {rep.run_id or '-'}: " + ("[green]passed[/] " + rep.summary if rep.smoke_ok else f"[red]failed[/] {escape(str(rep.smoke_error))}"))
        for line in rep.promotions:
            console.print(f"smoke check: {escape(line)}")
        if not rep.contracts and not no_contracts:
            console.print("contracts: none attached (contracts/<target>.yaml or keel.yaml contracts:)")
        for c in rep.contracts:
            console.print(f"contract {c['target']}: " + ("[green]passed[/]" if c["passed"] else f"[red]failed[/] {escape(str(c['detail']))}"))
    if not rep.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(pipelines_app, name="pipelines")
    app.add_typer(schedule_app, name="schedule")
    app.command()(scheduler)
    app.command()(ci)
