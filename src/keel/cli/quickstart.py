"""``keel quickstart``."""

from __future__ import annotations

from pathlib import Path

import typer

from keel.cli._common import console, err_console, print_json, run_guarded


def quickstart(
    folder: Path = typer.Option(Path("keel-quickstart"), "--dir", help="Project folder to create or reuse."),
    customers: int = typer.Option(3000, "--customers", help="Size of the generated data set."),
    json: bool = typer.Option(False, "--json", help="Print a JSON summary (the walk-through goes to stderr)."),
) -> None:
    """Run keel's main job on the embedded default: a churn project, end to end.

    Generates a churn data set, runs the project's training pipeline (contract,
    features, point-in-time training set, Optuna-tuned LightGBM, registration and
    gated promotion), serves three customers online and over HTTP, monitors the
    production version against its baseline on two days of replayed traffic (one
    feature faulty on the second), and shows a bad batch blocked by its contract. Running it again in the same folder reuses the project, and
    the pipeline comes from the cache. Needs the quickstart extra:
    pip install 'keel[quickstart]'.

    Example: keel quickstart --dir ./churn
    """
    from keel.quickstart.run import run_quickstart

    if customers < 100:
        from keel.cli._common import fail

        fail(f"--customers {customers} is too few to train on; use at least 100 (default 3000).")
    result = run_guarded(lambda: run_quickstart(folder, err_console if json else console, n_customers=customers))
    if json:
        print_json(result.to_dict())


def register(app: typer.Typer) -> None:
    app.command()(quickstart)
