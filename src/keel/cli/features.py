"""Feature store commands: apply, ls, show, materialize, skew."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import typer

from keel.cli._common import JSON_OPTION, console, fail, print_json, run_guarded, table

features_app = typer.Typer(
    help="Feature definitions, training sets and the online store.\n\nExample: keel features apply",
    no_args_is_help=True,
)


def _when(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


@features_app.command("apply")
def apply_cmd(
    allow_breaking: bool = typer.Option(False, "--allow-breaking", help="Apply even if a feature service loses a feature or a type changes."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the diff without storing anything."),
    json: bool = JSON_OPTION,
) -> None:
    """Validate the project's feature definitions and store a new version if anything changed.

    Example: keel features apply --dry-run
    """
    from keel.features.registry import apply

    result = run_guarded(lambda: apply(allow_breaking=allow_breaking, dry_run=dry_run))
    if json:
        print_json(result.to_dict())
        return
    if not result.changes:
        console.print(f"No changes. Definitions version {result.definitions_version}.")
        return
    rows = []
    for ch in result.changes:
        version = f"v{ch.old_version} -> v{ch.new_version}" if ch.action == "changed" else f"v{ch.new_version or ch.old_version}"
        rows.append((ch.action, ch.kind, ch.name, version, "\n".join(ch.details)))
    console.print(table("Changes", ["change", "kind", "name", "version", "details"], rows))
    for b in result.breaking:
        console.print(f"[bold yellow]breaking:[/] {b}")
    if dry_run:
        console.print("Dry run: nothing stored.")
    else:
        console.print(f"Stored definitions version [bold]{result.definitions_version}[/].")


def _listing() -> list[dict[str, Any]]:
    from keel.features.registry import listing

    return listing()


@features_app.command("ls")
def ls_cmd(json: bool = JSON_OPTION) -> None:
    """List applied entities, sources, feature views and services with owners, freshness and users.

    Example: keel features ls --json
    """
    rows = run_guarded(_listing)
    if json:
        print_json(rows)
        return
    if not rows:
        console.print("Nothing applied yet. Run `keel features apply`.")
        return
    console.print(
        table(
            "Feature definitions",
            ["kind", "name", "version", "owners", "description", "tags", "materialized until", "used by"],
            [
                (r["kind"], r["name"], f"v{r['version']}", ", ".join(r["owners"]), r["description"],
                 ", ".join(f"{k}={v}" for k, v in r["tags"].items()), r["materialized_until"] or "", ", ".join(r["used_by"]))
                for r in rows
            ],
            optional=("tags", "description", "owner", "materialized until"),
            more="`keel features show NAME` or --json",
        )
    )


@features_app.command("show")
def show_cmd(
    name: str = typer.Argument(..., help="Name of a feature view, service, entity or source."),
    version: int = typer.Option(None, "--version", "-v", help="A past version (default: the latest)."),
    kind: str = typer.Option(None, "--kind", help="feature_view, feature_service, on_demand_feature_view, entity or source."),
    json: bool = JSON_OPTION,
) -> None:
    """Show one applied definition: its spec, version history and users.

    Example: keel features show usage --kind feature_view
    """
    from keel.features.registry import describe_object

    obj = run_guarded(lambda: describe_object(name, kind, version))
    history = obj["history"]
    info = {k: obj[k] for k in ("materialized_until", "used_by")}
    if json:
        print_json(obj)
        return
    spec = obj["spec"]
    console.print(f"[bold]{obj['kind']} {name}[/] v{obj['version']}  hash {obj['hash'][:12]}  by {obj['created_by']} at {_when(obj['created_ms'])}")
    if spec.get("description"):
        console.print(spec["description"])
    if "schema" in spec:
        console.print(table("Schema", ["feature", "type", "description"], [(f["name"], f["dtype"], f["description"]) for f in spec["schema"]]))
    for key in ("source", "entities", "join_keys", "ttl_seconds", "path", "timestamp_field", "created_timestamp_field", "owner", "tags"):
        if spec.get(key) not in (None, "", [], {}):
            console.print(f"{key}: {spec[key]}")
    code = spec.get("transformation") or spec.get("function")
    if code:
        console.print("transformation:")
        console.print(code, markup=False, highlight=False)
    if spec.get("features") and obj["kind"] == "feature_service":
        console.print(table("Features", ["view", "features"], [(i["view"], ", ".join(i["features"])) for i in spec["features"]]))
    if info.get("materialized_until"):
        console.print(f"materialized until: {info['materialized_until']}")
    if info.get("used_by"):
        console.print(f"used by: {', '.join(info['used_by'])}")
    console.print(table("Versions", ["version", "hash", "created", "by"], [(f"v{r['version']}", r["hash"][:12], _when(r["created_ms"]), r["created_by"]) for r in history]))


def _parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option} {value!r} is not an ISO date/time (e.g. 2024-05-01T00:00:00+00:00).")
        raise
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # command-line times without a zone are read as UTC
    return parsed


@features_app.command("materialize")
def materialize_cmd(
    views: list[str] = typer.Argument(None, help="Feature views to materialize (default: every online view)."),
    start: str = typer.Option(None, "--start", help="Only rows with event time >= START (ISO; UTC if no zone)."),
    end: str = typer.Option(None, "--end", help="Only rows up to END (default: now)."),
    incremental: bool = typer.Option(False, "--incremental", help="Start where the last run of each view stopped."),
    json: bool = JSON_OPTION,
) -> None:
    """Write the latest feature values per entity into the online store (idempotent).

    Example: keel features materialize --incremental
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from keel.features.materialization import materialize

    s, e = _parse_time(start, "--start"), _parse_time(end, "--end")
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,} keys"), TimeElapsedColumn(),
                  console=console, transient=True, disable=json) as progress:
        tasks: dict[str, Any] = {}

        def on_progress(view: str, done: int, _total: int) -> None:
            if view not in tasks:
                tasks[view] = progress.add_task(f"materializing {view}", total=None)
            progress.update(tasks[view], completed=done)

        result = run_guarded(lambda: materialize(views or None, start=s, end=e, incremental=incremental, on_progress=on_progress))
    if json:
        print_json(result.to_dict())
        return
    console.print(
        table(
            "Materialized",
            ["view", "from", "until", "rows read", "keys written", "seconds"],
            [(v.view, v.start.isoformat() if v.start else "beginning", v.end.isoformat(), f"{v.rows_read:,}", f"{v.keys_written:,}", f"{v.seconds:.2f}")
             for v in result.views],
        )
    )
    console.print(f"{result.rows_read:,} rows read, {result.keys_written:,} keys written in {result.seconds:.2f} s.")
    for v in result.views:
        if v.reread:
            console.print(f"{v.view}: read again in full (changed since the last run): {', '.join(v.reread)}")


@features_app.command("retire")
def retire_cmd(
    view: str = typer.Argument(..., help="The feature view."),
    version: int = typer.Argument(..., help="The applied version of the view whose online values to delete."),
    json: bool = JSON_OPTION,
) -> None:
    """Delete the online values of an old version of a feature view (models pinned to it then read nothing).

    Each version of a view keeps its own online values, so a model trained on an older
    definitions version keeps being served its own values until that version is retired.

    Example: keel features retire usage 3
    """
    from keel.features.materialization import retire

    ns = run_guarded(lambda: retire(view, version))
    if json:
        print_json({"view": view, "version": version, "namespace": ns})
        return
    console.print(f"Retired {view} v{version}: online values under {ns} deleted.")


@features_app.command("skew")
def skew_cmd(
    service: str = typer.Argument(..., help="Feature service to check."),
    sample: int = typer.Option(100, "--sample", "-n", help="How many entities to compare."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    served: bool = typer.Option(False, "--served", help="Compare with the values actually served (the prediction log), as of each request."),
    json: bool = JSON_OPTION,
) -> None:
    """Recompute features offline for a sample of entities and compare them, value by value, with the online store.

    With --served, compare instead with the feature values served to a sample of the
    requests in the prediction log (every prediction of a model trained from the
    service is logged), recomputed as of each request's time. Exits with status 1
    when any feature differs.

    Example: keel features skew churn_v1 --sample 500
    """
    from keel.features.skew import check_skew

    report = run_guarded(lambda: check_skew(service, sample=sample, seed=seed, served=served))
    if json:
        print_json(report.to_dict())
    else:
        console.print(
            table(
                f"Skew of {service} against {report.against} values ({report.sample} {'requests' if served else 'entities'})",
                ["feature", "compared", "mismatches", "stale " + report.against, "examples"],
                [(f.feature, f.compared, f.mismatches, f.stale, "; ".join(str(x) for x in f.examples[:3])) for f in report.features],
            )
        )
        console.print("[green]No skew.[/]" if report.ok else f"[bold red]Skew in {len(report.mismatched)} feature(s).[/]")
    if not report.ok:
        raise typer.Exit(1)


@features_app.command("ingest")
def ingest_cmd(
    view: str = typer.Argument(..., help="Feature view to push the events into."),
    source: str = typer.Option(..., "--source", help="Events: redis://HOST:PORT/DB/STREAM or nats://HOST:PORT/SUBJECT."),
    group: str = typer.Option("keel-ingest", "--group", help="Consumer group: ingestors of one group share the stream."),
    max_events: int = typer.Option(500, "--max-events", min=1, help="Events per push."),
    max_wait_ms: float = typer.Option(50.0, "--max-wait-ms", help="Longest wait for a batch to fill."),
    dead_letter: str = typer.Option(None, "--dead-letter", help="Stream for events push refuses (default: <source>.dead)."),
    to: str = typer.Option("online_and_offline", "--to", help="online_and_offline, online or offline."),
    metrics_port: int = typer.Option(0, "--metrics-port", help="Serve Prometheus /metrics (freshness) on 127.0.0.1:PORT (0: off)."),
    stop_after: int = typer.Option(0, "--stop-after", help="Stop after this many events (0: run until interrupted)."),
    idle_exit: float = typer.Option(0.0, "--idle-exit", help="Stop after this many seconds without an event (0: never)."),
    json: bool = JSON_OPTION,
) -> None:
    """Push events from a stream into a feature view: its transformation and contracts, online and offline.

    Example: keel features ingest usage --source redis://127.0.0.1:6379/0/usage-events
    """
    import asyncio
    import signal

    from keel.features.stream_ingest import Ingestor

    ing = run_guarded(lambda: Ingestor(view, source=source, group=group, max_events=max_events, max_wait_ms=max_wait_ms,
                                       dead_letter=dead_letter, to=to))
    if metrics_port and ing.metrics is not None:
        import prometheus_client as pc

        pc.start_http_server(metrics_port, addr="127.0.0.1", registry=ing.metrics.registry)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await ing.run(stop=stop, max_events=stop_after or None, idle_exit_s=idle_exit or None,
                      progress=None if json else lambda s: console.print(f"  {s.events} events, {s.rows_pushed} rows pushed, "
                                                                         f"{s.dead_lettered} dead-lettered", highlight=False))

    asyncio.run(main())
    stats = ing.stats.to_dict()
    if json:
        print_json(stats)
        return
    console.print(f"done: {stats['events']} events, {stats['rows_pushed']} rows pushed into {view}, {stats['redelivered']} redelivered "
                  f"(not pushed twice), {stats['dead_lettered']} dead-lettered", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(features_app, name="features")
