"""Tracking commands: experiments, runs, gc."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer

from keel.cli._common import JSON_OPTION, console, print_json, run_guarded, table

experiments_app = typer.Typer(help="List experiments.\n\nExample: keel experiments ls", no_args_is_help=True)
runs_app = typer.Typer(help="List, inspect, compare, reproduce and delete runs.\n\nExample: keel runs ls --filter \"metrics.auc > 0.8\"", no_args_is_help=True)


def _local_only(command: str) -> None:
    """Stop before anything is written when a server is configured and ``command`` has no route there."""
    from keel.cli._common import fail
    from keel.config import settings
    from keel.store.remote import NOT_AVAILABLE

    if run_guarded(lambda: settings().tracking_uri):
        fail(f"{command} is {NOT_AVAILABLE}; unset it to work on the local stores.")


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return "0" if v == 0 else f"{v:.6g}"  # never '-0'
    if hasattr(v, "strftime"):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    return str(v)


@experiments_app.command("ls")
def experiments_ls(json: bool = JSON_OPTION) -> None:
    """List experiments with their run counts.

    Example: keel experiments ls --json
    """
    from keel.tracking.query import list_experiments

    rows = run_guarded(list_experiments)
    if json:
        print_json(rows)
        return
    console.print(table("Experiments", ["id", "name", "runs", "last run", "created"], [(r["id"], r["name"], r["runs"], _fmt(r["last_run"]), _fmt(r["created"])) for r in rows]))


@runs_app.command("ls")
def runs_ls(
    experiment: str = typer.Option(None, "--experiment", "-e", help="Experiment name or id (default: the project's, keel.yaml experiment:)."),
    filter: str = typer.Option(None, "--filter", "-f", help="e.g. \"metrics.valid_roc_auc > 0.9 and params.num_leaves > 16\""),
    order_by: list[str] = typer.Option(None, "--order-by", "-o", help="e.g. 'metrics.valid_roc_auc DESC' (repeatable); default: newest first."),
    limit: int = typer.Option(50, "--limit", "-n", help="Most runs to show."),
    columns: list[str] = typer.Option(None, "--column", "-c", help="Also show this column, e.g. params.num_leaves or metrics.* (repeatable)."),
    json: bool = JSON_OPTION,
) -> None:
    """List runs, filtered and ordered, in a table that fits the terminal.

    The table shows each run's id, name, status and start, the sort keys, the
    columns given with -c, then the most informative other params and metrics
    that fit; columns empty for every run are left out and the caption names
    the rest. --json prints every column.

    Example: keel runs ls -e churn -f "metrics.valid_roc_auc > 0.9" -o "metrics.valid_roc_auc DESC" -c params.num_leaves
    """
    from keel.cli.runs_table import choose
    from keel.tracking.search import search_runs

    df = run_guarded(lambda: search_runs(experiment, filter=filter, order_by=order_by or None, max_results=limit))
    if json:
        print_json(df.astype(object).where(df.notna(), None).to_dict(orient="records"))
        return
    view = run_guarded(lambda: choose(df, console.width, order_by or [], columns or []))
    console.print(view.table(f"{len(df)} run{'s' if len(df) != 1 else ''}"))


@runs_app.command("show")
def runs_show(run: str = typer.Argument(..., help="Run id, id prefix or name."), json: bool = JSON_OPTION) -> None:
    """Show everything recorded about a run.

    Example: keel runs show 3f2a9c
    """
    from keel.tracking.query import get_run

    info = run_guarded(lambda: get_run(run))
    if json:
        print_json(info.to_dict())
        return
    git = info.env.get("git") or {}
    console.print(f"[bold]{info.name}[/] {info.id}  experiment={info.experiment}  status=[bold]{info.status}[/]")
    console.print(f"started {_fmt(info.start_time)}  ended {_fmt(info.end_time)}  by {info.user}@{info.host}")
    if info.parent_id:
        console.print(f"parent {info.parent_id}")
    if git.get("commit"):
        console.print(f"code {git['commit'][:12]} ({git.get('branch')}){' + uncommitted changes' if git.get('dirty') else ''}")
    console.print(f"python {info.env.get('python', '?')}  {info.env.get('platform', '')}  lock {str(info.env.get('lock_sha256', ''))[:12]}")
    for title, data in (("Params", info.params), ("Metrics (latest)", info.metrics), ("Tags", info.tags)):
        if data:
            console.print(table(title, ["key", "value"], [(k, _fmt(v)) for k, v in sorted(data.items())]))
    if info.datasets:
        console.print(table("Datasets", ["name", "context", "rows", "fingerprint", "source"], [(d["name"], d["context"], d["num_rows"], d["fingerprint"][:16], d["source"]) for d in info.datasets]))
    if info.artifacts:
        console.print(table("Artifacts", ["path", "size", "sha256"], [(a["path"], a["size"], a["digest"][:16]) for a in info.artifacts]))
    if info.children:
        console.print(f"child runs: {', '.join(c[:12] for c in info.children)}")
    if info.error:
        console.print("[red]error:[/]\n" + info.error)


@runs_app.command("diff")
def runs_diff(a: str = typer.Argument(..., help="First run."), b: str = typer.Argument(..., help="Second run."), json: bool = JSON_OPTION) -> None:
    """Show what changed between two runs: params, metrics, code, data, packages.

    Example: keel runs diff 3f2a9c 7b1d04
    """
    from keel.tracking.diff import diff_runs

    d = run_guarded(lambda: diff_runs(a, b))
    if json:
        print_json(d.to_dict())
        return
    if d.identical:
        console.print("The runs match: same params, metrics, code, data and packages.")
        return
    for title, items in (("Params", d.params), ("Metrics", d.metrics), ("Code", d.code), ("Data fingerprints", d.data), ("Packages", d.packages), ("Platform", d.platform)):
        if items:
            console.print(table(title, ["key", d.a[:12], d.b[:12]], [(k, _fmt(x), _fmt(y)) for k, x, y in items]))


@runs_app.command("compare")
def runs_compare(runs: list[str] = typer.Argument(..., help="Two or more runs."), json: bool = JSON_OPTION) -> None:
    """Compare params and metrics of several runs side by side.

    Example: keel runs compare 3f2a9c 7b1d04 9e8f11
    """
    from keel.tracking.query import get_run

    infos = run_guarded(lambda: [get_run(r) for r in runs])
    keys = [("param", k) for k in sorted({k for i in infos for k in i.params})] + [("metric", k) for k in sorted({k for i in infos for k in i.metrics})]
    if json:
        print_json({"runs": [i.id for i in infos], "rows": [{"kind": kind, "key": k, "values": [(i.params if kind == "param" else i.metrics).get(k) for i in infos]} for kind, k in keys]})
        return
    rows = [(kind, k, *(_fmt((i.params if kind == "param" else i.metrics).get(k)) for i in infos)) for kind, k in keys]
    console.print(table("Comparison", ["", "key", *(f"{i.name} ({i.id[:8]})" for i in infos)], rows))


@runs_app.command("reproduce")
def runs_reproduce(
    run: str = typer.Argument(..., help="Run id, prefix or name."),
    dest: Path = typer.Argument(..., help="New folder to write into."),
    verify: bool = typer.Option(False, "--verify", help="Rebuild the environment in a fresh venv, re-run, and compare the metrics."),
    rtol: float = typer.Option(1e-6, "--rtol", help="With --verify: relative tolerance per metric."),
    atol: float = typer.Option(1e-9, "--atol", help="With --verify: absolute tolerance per metric."),
    json: bool = JSON_OPTION,
) -> None:
    """Restore a run's code, package lock and command into a folder; --verify re-runs it and compares.

    Example: keel runs reproduce 3f2a9c ./repro && bash ./repro/run.sh
    Example: keel runs reproduce 3f2a9c ./repro --verify --rtol 1e-4
    """
    from keel.tracking.reproduce import reproduce

    _local_only("keel runs reproduce")
    if verify:
        _verify(run, dest, rtol, atol, json)
        return
    out = run_guarded(lambda: reproduce(run, dest))
    if json:
        print_json({"folder": str(out.folder), "restored": out.restored, "missing": out.missing, "command": out.command})
        return
    console.print(f"Wrote {out.folder}")
    for r in out.restored:
        console.print(f"  [green]restored[/] {r}")
    for m in out.missing:
        console.print(f"  [yellow]not restored[/] {m}")


def _verify(run: str, dest: Path, rtol: float, atol: float, json: bool) -> None:
    from keel.tracking.reproduce import verify

    with console.status("verifying") as status:
        result = run_guarded(lambda: verify(run, dest, rtol=rtol, atol=atol, echo=lambda msg: status.update(msg)))
    if json:
        print_json(result.to_dict())
    else:
        rows = [(r["key"], _fmt(r["original"]), _fmt(r["rerun"]), "ok" if r["ok"] else "[red]differs[/]") for r in result.rows]
        console.print(table(f"Run {result.run_id[:12]} re-run as {str(result.rerun_id)[:12]}", ["metric", "original", "re-run", ""], rows))
        verdict = "[green]reproduced[/]" if result.ok else "[red]not reproduced[/]"
        console.print(f"{verdict}: {sum(r['ok'] for r in result.rows)}/{len(result.rows)} metrics within rtol={rtol:g}, atol={atol:g} (log: {result.log})")
    if not result.ok:
        raise typer.Exit(1)


@runs_app.command("delete")
def runs_delete(
    runs: list[str] = typer.Argument(..., help="Runs to delete (ids, prefixes or names)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    json: bool = JSON_OPTION,
) -> None:
    """Delete runs, their child runs and all their rows (run `keel gc` to free artifact space).

    Example: keel runs delete 3f2a9c --yes
    """
    from keel.tracking.query import delete_runs

    if not yes and not typer.confirm(f"Delete {len(runs)} run(s) and their child runs for good?"):
        raise typer.Exit(1)
    ids = run_guarded(lambda: delete_runs(runs))
    if json:
        print_json({"deleted": ids})
        return
    console.print(f"Deleted {len(ids)} run(s): {', '.join(i[:12] for i in ids)}")


def gc(
    grace: float = typer.Option(3600.0, "--grace", help="Keep unreferenced blobs younger than this many seconds."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only report what would be deleted."),
    json: bool = JSON_OPTION,
) -> None:
    """Delete stored artifacts that no run, model version or cache entry references.

    Example: keel gc --grace 0 --dry-run
    """
    from keel.store.blobs import get_artifact_store
    from keel.store.gc import collect
    from keel.store.metadata import get_metadata_store

    report = run_guarded(lambda: collect(get_metadata_store(), get_artifact_store(), grace_seconds=grace, dry_run=dry_run))
    if json:
        print_json({"deleted": report.deleted, "kept": report.kept, "too_young": report.too_young, "dry_run": dry_run})
        return
    verb = "Would delete" if dry_run else "Deleted"
    console.print(f"{verb} {len(report.deleted)} unreferenced blob(s); kept {report.kept} referenced and {report.too_young} younger than {grace:g}s.")


def register(app: typer.Typer) -> None:
    app.add_typer(experiments_app, name="experiments")
    app.add_typer(runs_app, name="runs")
    app.command()(gc)
