"""``keel quickstart``."""

from __future__ import annotations

from pathlib import Path

import typer

from keel.cli._common import console, print_json, run_guarded


def quickstart(
    folder: Path = typer.Option(Path("keel-quickstart"), "--dir", help="Project folder to create or reuse."),
    customers: int = typer.Option(3000, "--customers", help="Size of the generated data set."),
    json: bool = typer.Option(False, "--json", help="Print a JSON summary at the end."),
) -> None:
    """Run keel's main job on the embedded default: a churn project, end to end.

    Generates a realistic churn data set, trains and tracks several models and
    compares them. Running it again in the same folder reuses the project.

    Example: keel quickstart --dir ./churn
    """
    from keel.quickstart.run import run_quickstart

    result = run_guarded(lambda: run_quickstart(folder, console, n_customers=customers))
    if json:
        print_json({"folder": str(result.folder), "best_run": result.best_run, "timings": result.timings})


def register(app: typer.Typer) -> None:
    app.command()(quickstart)
