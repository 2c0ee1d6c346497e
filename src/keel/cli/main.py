"""The ``keel`` command: ``keel <noun> <verb>``, each a thin layer over the library."""

from __future__ import annotations

import importlib
import sys

import typer

from keel import __version__

app = typer.Typer(
    name="keel",
    help="keel: data contracts, a feature store, experiment tracking, pipelines, a gated model registry, serving and monitoring in one package.\n\nExample: keel quickstart",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)

# Each module defines `register(app)`; keep this list in the order of the lifecycle.
COMMAND_MODULES = [
    "keel.cli.project",
    "keel.cli.contracts",
    "keel.cli.features",
    "keel.cli.tracking",
    "keel.cli.models",
    "keel.cli.quickstart",
    "keel.cli.pipelines",
    "keel.cli.serving",
    "keel.cli.monitoring",
    "keel.cli.deployments",
    "keel.cli.loop",
    "keel.cli.retraining",
    "keel.cli.server",
    "keel.cli.users",
]
for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


# Commands that work on the local stores only: with KEEL_TRACKING_URI set they stop in one line
# instead of quietly opening a local database (runs, experiments and models go through the server).
LOCAL_ONLY = {
    "validate", "gc", "quickstart", "scheduler", "ci", "serve", "score", "db", "contracts", "features",
    "pipelines", "schedule", "predictions", "monitor", "alerts", "feedback", "retraining",
}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"keel {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """keel: the ML lifecycle in one package."""
    if ctx.invoked_subcommand in LOCAL_ONLY and "--help" not in sys.argv:
        from keel.cli._common import fail, run_guarded
        from keel.config import settings
        from keel.store.remote import NOT_AVAILABLE

        if run_guarded(lambda: settings().tracking_uri):
            fail(f"keel {ctx.invoked_subcommand} is {NOT_AVAILABLE}; unset it to work on the local stores.")


def main() -> None:
    from keel.errors import KeelError

    try:
        app()
    except KeelError as exc:  # anything a command did not already turn into a message
        from keel.cli._common import fail

        try:
            fail(str(exc))
        except typer.Exit as e:
            raise SystemExit(e.exit_code) from None


if __name__ == "__main__":  # python -m keel.cli.main
    main()
