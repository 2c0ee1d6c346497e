"""Monitoring commands: keel monitor baseline|run|ls|show|report|drift, keel alerts ls|ack|resolve, keel feedback import."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import typer

from keel.cli._common import JSON_OPTION, console, err_console, print_json, run_guarded, table

monitor_app = typer.Typer(help="Baselines, drift and performance monitors.\n\nExample: keel monitor run churn-daily", no_args_is_help=True)
alerts_app = typer.Typer(help="Alerts raised by monitors.\n\nExample: keel alerts ls --status open", no_args_is_help=True)
feedback_app = typer.Typer(help="Ground-truth labels for logged predictions.\n\nExample: keel feedback import labels.csv --model churn", no_args_is_help=True)

LEVEL_STYLE = {"alert": "bold red", "warn": "yellow", "ok": "green", "no_data": "dim", "no_baseline": "yellow"}


def _time(text: str | None) -> datetime | None:
    if text is None:
        return None
    from keel.errors import ValidationError

    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"--end {text!r} is not an ISO-8601 time.", hint="Write e.g. 2026-01-31T00:00:00Z.") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _styled(level: str) -> str:
    return f"[{LEVEL_STYLE.get(level, '')}]{level}[/]" if level in LEVEL_STYLE else level


@monitor_app.command("baseline")
def baseline_cmd(
    model: str = typer.Argument(..., help="Registered model name"),
    data: str = typer.Option(..., "--data", help="Parquet or CSV of the validation data (inputs, and the label with --target)"),
    version: str = typer.Option(None, "--version", "-v", help="Version number or alias (default: the latest)"),
    target: str = typer.Option(None, "--target", help="Label column: adds the validation performance"),
    sample_rows: int = typer.Option(100_000, "--sample-rows", help="Rows kept as the reference sample"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Build and store the baseline of a model version from its validation data.

    Example: keel monitor baseline churn --version 3 --data valid.parquet --target churned
    """

    def go() -> None:
        from keel.monitoring.baselines import build_baseline

        with console.status(f"scoring {data} and fitting the baseline of {model}…") if not as_json else _nothing():
            b = build_baseline(model, data, version=version, target=target, sample_rows=sample_rows)
        if as_json:
            print_json(b.to_dict())
            return
        console.print(f"baseline of [bold]{b.model}[/] v{b.version}: {b.rows} rows ({b.reference.rows} kept), task {b.task}")
        rows = [(n, c["kind"], f"{c['null_rate'] * 100:.1f} %", _summary(c)) for n, c in b.to_dict()["columns"].items()]
        console.print(table(None, ["column", "kind", "null rate", "summary"], rows))
        if b.performance:
            console.print("validation: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(b.performance.items())))

    run_guarded(go)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: Any) -> None:
        return None


def _summary(c: dict[str, Any]) -> str:
    s = c["summary"]
    if c["kind"] == "numeric":
        return "" if s.get("mean") is None else f"mean {s['mean']:.4g}, min {s['min']:.4g}, max {s['max']:.4g}"
    return ", ".join(f"{k} {v * 100:.0f} %" for k, v in (s.get("top") or [])[:4])


@monitor_app.command("run")
def run_cmd(
    name: str = typer.Argument(..., help="Monitor name"),
    end: str = typer.Option(None, "--end", help="End of the window (ISO-8601, UTC; default now)"),
    backfill: int = typer.Option(1, "--backfill", help="Also run the N-1 windows before it (reconciles labels that arrived since)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run a monitor over its latest window (or several), store the results and raise alerts.

    Example: keel monitor run churn-daily --backfill 7
    """

    def go() -> None:
        from keel.monitoring.monitors import get_monitor, run_monitor

        last = _time(end) or datetime.now(UTC)
        spec = get_monitor(name)
        step = spec.window_spec()
        if backfill > 1 and not isinstance(step, timedelta):
            from keel.errors import ValidationError

            raise ValidationError(f"--backfill needs a time window; monitor {name!r} counts predictions.", hint="Run it without --backfill.")
        ends = [last - (step * i if isinstance(step, timedelta) else timedelta(0)) for i in reversed(range(max(backfill, 1)))]
        results = []
        from rich.progress import Progress

        with Progress(console=err_console, transient=True, disable=as_json or len(ends) == 1) as prog:
            task = prog.add_task("windows", total=len(ends))
            for e in ends:
                results.append(run_monitor(name, end=e))
                prog.advance(task)
        if as_json:
            print_json([r.to_dict() for r in results] if backfill > 1 else results[0].to_dict())
            return
        for r in results:
            _print_result(r)

    run_guarded(go)


def _print_result(r: Any) -> None:
    console.print(f"[bold]{r.monitor}[/] {r.window_start:%Y-%m-%d %H:%M} → {r.window_end:%Y-%m-%d %H:%M} UTC: {r.rows} predictions, {_styled(r.status)}")
    for note in r.notes:
        console.print(f"  {note}", style="dim")
    for v in r.versions:
        if v.drift is not None:
            rows = [(c.column, c.method, "" if c.statistic is None else f"{c.statistic:.4g}", "" if c.threshold is None else f"{c.threshold:.4g}",
                     _styled(c.level), c.shift(), c.note) for c in v.drift.columns]
            console.print(table(f"v{v.version} drift", ["column", "method", "statistic", "threshold", "level", "shift", "note"], rows))
        if v.performance:
            perf = v.performance
            realized = ", ".join(f"{k} {x:.4f}" for k, x in sorted(perf.get("metrics", {}).items())) or "no labels yet"
            console.print(f"  v{v.version} realized ({perf['coverage'] * 100:.0f} % labelled): {realized}")
        if v.estimated:
            console.print(f"  v{v.version} estimated (CBPE): " + ", ".join(f"{k} {x:.4f}" for k, x in sorted(v.estimated.items())))
        for k, x in v.business.items():
            console.print(f"  {k}: {'n/a' if x is None else f'{x:.4g}'}")
    for a in r.alerts:
        console.print(f"  [bold red]alert[/] #{a['id']}: {a['message']}")


@monitor_app.command("ls")
def ls_cmd(as_json: bool = JSON_OPTION) -> None:
    """List monitors (keel.yaml and code) with their last run.

    Example: keel monitor ls --json
    """

    def go() -> None:
        from keel.monitoring.results import overview

        out = overview()
        if as_json:
            print_json(out)
            return
        rows = [(m["name"], m["model"], ", ".join(m["owners"]), m["window"], m["schedule"] or "", m["origin"],
                 "" if not m["last_run"] else f"{m['last_run']['window_end']:%Y-%m-%d %H:%M} {m['last_run']['status']}") for m in out]
        console.print(table("monitors", ["name", "model", "owners", "window", "schedule", "declared in", "last run"], rows))

    run_guarded(go)


@monitor_app.command("show")
def show_cmd(name: str = typer.Argument(..., help="Monitor name"), limit: int = typer.Option(10, "--limit", help="Runs to show"), as_json: bool = JSON_OPTION) -> None:
    """Show a monitor's declaration and its recent runs.

    Example: keel monitor show churn-daily
    """

    def go() -> None:
        from keel.monitoring.monitors import get_monitor
        from keel.monitoring.results import runs

        spec = get_monitor(name)
        recent = runs(name, limit=limit)
        if as_json:
            print_json({"monitor": spec.to_dict(), "runs": recent})
            return
        console.print(f"[bold]{spec.name}[/] on {spec.model}: window {spec.window}, checks {', '.join(spec.checks)}, schedule {spec.schedule or '-'}")
        console.print(table("runs", ["window end", "version", "rows", "status"],
                            [(f"{r['window_end']:%Y-%m-%d %H:%M}", r["version"], r["rows"], _styled(r["status"])) for r in recent]))

    run_guarded(go)


@monitor_app.command("report")
def report_cmd(name: str = typer.Argument(..., help="Monitor name"), output: str = typer.Option("report.html", "--output", "-o", help="HTML file to write")) -> None:
    """Write a self-contained HTML report: distributions, drift over time, performance realized vs estimated.

    Example: keel monitor report churn-daily -o report.html
    """

    def go() -> None:
        from keel.monitoring.results import write_report

        console.print(f"wrote {write_report(name, output)}")

    run_guarded(go)


@monitor_app.command("drift")
def drift_cmd(
    reference: str = typer.Argument(..., help="Reference Parquet/CSV"),
    current: str = typer.Argument(..., help="Current Parquet/CSV"),
    columns: list[str] = typer.Option([], "--column", "-c", help="Column to compare (repeatable; default all)"),
    output: str = typer.Option(None, "--output", "-o", help="Also write the HTML report here"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Compare two datasets column by column (the same engine as keel.drift).

    Example: keel monitor drift train.parquet last_week.parquet -o drift.html
    """

    def go() -> None:
        from pathlib import Path

        import keel

        report = keel.drift(reference, current, columns=columns or None)
        if output:
            Path(output).write_text(report.to_html(), encoding="utf-8")
        if as_json:
            print_json(report.to_dict())
            return
        rows = [(c.column, c.method, "" if c.statistic is None else f"{c.statistic:.4g}", "" if c.threshold is None else f"{c.threshold:.4g}",
                 _styled(c.level), c.shift(), c.note) for c in report.columns]
        console.print(table(f"drifted: {', '.join(report.drifted) or 'none'}", ["column", "method", "statistic", "threshold", "level", "shift", "note"], rows))

    run_guarded(go)


@alerts_app.command("ls")
def alerts_ls(
    status: str = typer.Option(None, "--status", help="open, acked or resolved"),
    monitor: str = typer.Option(None, "--monitor", help="Only this monitor's alerts"),
    as_json: bool = JSON_OPTION,
) -> None:
    """List alerts, newest first, with their delivery state.

    Example: keel alerts ls --status open
    """

    def go() -> None:
        from keel.monitoring.alerts import list_alerts, without_image

        found = list_alerts(status=status, monitor=monitor)
        if as_json:
            print_json([without_image(a) for a in found])
            return
        rows = [(a["id"], a["monitor"], a["subject"], a["status"], a["occurrences"], "yes" if a["delivered"] else "[red]no[/]",
                 f"{a['last_time']:%Y-%m-%d %H:%M}", a["message"]) for a in found]
        console.print(table("alerts", ["id", "monitor", "subject", "status", "seen", "delivered", "last", "message"], rows))

    run_guarded(go)


@alerts_app.command("ack")
def alerts_ack(alert_id: int = typer.Argument(..., help="Alert id"), as_json: bool = JSON_OPTION) -> None:
    """Acknowledge an alert: it stays open but sends no more notifications.

    Example: keel alerts ack 12
    """

    def go() -> None:
        from keel.monitoring.alerts import ack_alert

        a = ack_alert(alert_id)
        print_json({"id": a["id"], "status": a["status"]}) if as_json else console.print(f"alert {a['id']} acknowledged by {a['acked_by']}")

    run_guarded(go)


@alerts_app.command("resolve")
def alerts_resolve(alert_id: int = typer.Argument(..., help="Alert id"), as_json: bool = JSON_OPTION) -> None:
    """Resolve an alert: the next occurrence opens a new one.

    Example: keel alerts resolve 12
    """

    def go() -> None:
        from keel.monitoring.alerts import resolve_alert

        a = resolve_alert(alert_id)
        print_json({"id": a["id"], "status": a["status"]}) if as_json else console.print(f"alert {a['id']} resolved by {a['resolved_by']}")

    run_guarded(go)


@feedback_app.command("import")
def feedback_import(
    path: str = typer.Argument(..., help="CSV or Parquet of (request id or entity, label, time) rows"),
    model: str = typer.Option(None, "--model", "-m", help="Model the labels are for (default: found from the ids)"),
    id_column: str = typer.Option("request_id", "--id-column"),
    label_column: str = typer.Option("label", "--label-column"),
    time_column: str = typer.Option(None, "--time-column", help="Event time of each label (default: a 'time' column, else now)"),
    entity_column: str = typer.Option(None, "--entity-column", help="Join by this entity key (a column of the log too) instead of ids"),
    horizon: str = typer.Option(None, "--horizon", help="Labels later than this after their prediction count as late (e.g. 30d)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Import ground-truth labels; reports matched, unknown, duplicate, corrected and late labels.

    Example: keel feedback import labels.csv --model churn --id-column request_id --label-column churned
    """

    def go() -> None:
        from keel.monitoring.feedback import import_feedback

        report = import_feedback(path, model=model, id_column=id_column, label_column=label_column, time_column=time_column,
                                 entity_column=entity_column, horizon=horizon)
        if as_json:
            print_json(report.to_dict())
            return
        console.print(report.summary())
        if report.unknown_examples:
            console.print(f"  unknown ids, e.g. {', '.join(report.unknown_examples)} (kept: they match if their predictions are logged later)", style="dim")

    run_guarded(go)


def register(app: typer.Typer) -> None:
    app.add_typer(monitor_app, name="monitor")
    app.add_typer(alerts_app, name="alerts")
    app.add_typer(feedback_app, name="feedback")
