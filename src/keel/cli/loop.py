"""``keel lineage``: a prediction, a model version or a feature view, traced through what keel recorded."""

from __future__ import annotations

import typer

from keel.cli._common import JSON_OPTION, console, print_json, run_guarded

lineage_app = typer.Typer(no_args_is_help=True, help="Lineage: prediction → deployment → model version → run → data, features, code, packages; "
                          "and forward, who uses a feature view.\n\nExample: keel lineage model churn@production -o lineage.svg")
IMAGE = typer.Option(None, "--output", "-o", help="Also draw it as an image (.svg or .png).")


def _show(node: object, json: bool, image: str | None) -> None:
    from keel.loop.lineage import render_image, render_tree

    if image:
        run_guarded(lambda: render_image(node, image))  # type: ignore[arg-type]
    if json:
        print_json(node.to_dict())  # type: ignore[attr-defined]
        return
    console.print(render_tree(node))  # type: ignore[arg-type]
    if image:
        console.print(f"drawn to {image}", highlight=False)


@lineage_app.command("prediction")
def prediction(request_id: str = typer.Argument(..., help="The request id a response carried."),
               model: str = typer.Option(None, "--model", "-m", help="Only look in this model's log (faster)."),
               image: str = IMAGE, json: bool = JSON_OPTION) -> None:
    """Trace a logged prediction back to its route, deployment, model version, run, data, features and code.

    Example: keel lineage prediction 3f2a9c... --model churn
    """
    from keel.loop.lineage import prediction_lineage

    _show(run_guarded(lambda: prediction_lineage(request_id, model=model)), json, image)


@lineage_app.command("model")
def model(ref: str = typer.Argument(..., help="NAME/VERSION or NAME@ALIAS, e.g. churn/3 or churn@production."),
          image: str = IMAGE, json: bool = JSON_OPTION) -> None:
    """Trace a model version: its run, training data, feature service and views, sources, code, packages; and its deployments and monitors.

    Example: keel lineage model churn/3 --json
    """
    from keel.loop.lineage import model_lineage

    _show(run_guarded(lambda: model_lineage(ref)), json, image)


@lineage_app.command("feature")
def feature(name: str = typer.Argument(..., help="A feature view or source name."),
            image: str = IMAGE, json: bool = JSON_OPTION) -> None:
    """Who uses a feature view or source: feature services, model versions, deployments and monitors.

    Example: keel lineage feature usage
    """
    from keel.loop.lineage import feature_usage

    _show(run_guarded(lambda: feature_usage(name)), json, image)


def diagnose(ref: str = typer.Argument(..., help="NAME@ALIAS or NAME/VERSION, e.g. churn@production."),
             days: int = typer.Option(30, "--days", help="Window of changes, alerts and the prediction log."),
             top: int = typer.Option(5, "--top", help="Most drifted features shown."),
             output: str = typer.Option(None, "--output", "-o", help="Also write a self-contained HTML page with the plots."),
             json: bool = JSON_OPTION) -> None:
    """What is wrong with this model: recent changes, open alerts, drift, performance, prediction-log health, lineage.

    Example: keel models diagnose churn@production -o diagnose.html
    """
    from rich.table import Table

    from keel.loop.diagnose import diagnose as run_diagnose
    from keel.loop.diagnose import write_html

    d = run_guarded(lambda: run_diagnose(ref, days=days, top=top))
    if output:
        write_html(d, output)
    if json:
        print_json(d)
        return
    console.print(f"[bold]{d['model']} v{d['version']}[/] ({ref}; aliases {', '.join(d['aliases']) or '-'}; last {days} days)", highlight=False)
    for f in d["findings"]:
        console.print(f"  • {f}", highlight=False)

    def section(title: str, rows: object, cols: list[str]) -> None:
        if isinstance(rows, dict) and "unavailable" in rows:
            console.print(f"[dim]{title}: unavailable ({rows['unavailable']})[/]", highlight=False)
            return
        if not rows:
            console.print(f"[dim]{title}: none[/]", highlight=False)
            return
        t = Table(title=title, header_style="bold")
        for c in cols:
            t.add_column(c, overflow="fold")
        for r in list(rows)[:15]:  # type: ignore[call-overload]
            t.add_row(*("" if r.get(c) is None else str(r.get(c)) for c in cols))
        console.print(t)

    section("open alerts", d["alerts"], ["id", "monitor", "subject", "level", "status", "message"])
    section("most drifted features", d["drift"], ["monitor", "column", "statistic", "value", "threshold", "level"])
    section("changes", d["changes"], ["time", "what", "detail"])
    log = d["prediction_log"]
    section("prediction log", log.get("versions") if isinstance(log, dict) and "versions" in log else log,
            ["version", "rows", "error_share", "latency_p50_ms", "latency_p99_ms", "missing_features_share"])
    if output:
        console.print(f"wrote {output}", highlight=False)


def register(app: typer.Typer) -> None:
    from keel.cli.models import models_app

    models_app.command("diagnose")(diagnose)
    app.add_typer(lineage_app, name="lineage")
