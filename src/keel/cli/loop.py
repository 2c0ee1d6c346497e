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


def register(app: typer.Typer) -> None:
    app.add_typer(lineage_app, name="lineage")
