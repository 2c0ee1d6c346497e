"""Project commands: init, config, db."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from keel.cli._common import JSON_OPTION, console, print_json, run_guarded, table

db_app = typer.Typer(help="Manage the metadata database schema.\n\nExample: keel db upgrade", no_args_is_help=True)


def init(
    path: Path = typer.Argument(Path("."), help="Folder to make a keel project."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing keel.yaml (and workflow)."),
    ci: str = typer.Option(None, "--ci", help="Also write a CI workflow: 'github' (smoke pipeline on every push, full on main)."),
    pipeline: str = typer.Option("pipelines:training", "--pipeline", help="MODULE:pipeline the CI workflow runs."),
) -> None:
    """Create keel.yaml and the .keel/ state folder; with --ci github, also a CI workflow (in an existing project, only that).

    Example: keel init my-project --ci github --pipeline pipelines:training
    """
    from keel.config import CONFIG_FILE, init_project

    if ci is not None and ci != "github":
        from keel.cli._common import fail

        fail(f"--ci {ci!r} is not supported; use --ci github.")
    if ci and (path / CONFIG_FILE).is_file() and not force:  # an existing project: add the workflow, keep keel.yaml
        written = (path / CONFIG_FILE).resolve()
    else:
        written = run_guarded(lambda: init_project(path, force=force))
        console.print(f"Created {written} and {written.parent / '.keel'}/")
    if ci == "github":
        from keel.pipelines.smoke import project_extras, write_github_workflow

        wf = run_guarded(lambda: write_github_workflow(written.parent, pipeline=pipeline, force=force))
        extras = project_extras(written.parent)
        what = f"keel[{','.join(extras)}]" if extras else "keel (the project imports no optional package)"
        console.print(f"Wrote {wf}: `keel ci {pipeline}` on every push, the full pipeline on main; it installs {escape(what)}.")


def _shown(value: object) -> object:
    """A setting as printed: passwords and tokens in URIs masked (postgresql://bob:***@db/keel)."""
    if not isinstance(value, str) or "://" not in value:
        return value
    # the store's redaction of URIs, shared with its error messages
    from keel.store.metadata import _redact

    return _redact(value)


def config(json: bool = JSON_OPTION) -> None:
    """Print every effective setting and where it came from (env, keel.yaml, default); passwords and tokens are masked.

    Example: keel config --json
    """
    from keel.config import settings

    s = run_guarded(settings)
    from keel.config import is_secret_key
    from keel.errors import MASK

    # a secret setting (KEEL_TRACKING_TOKEN) is never printed, only whether it is set
    rows = [(st.name, (MASK if v.value else "") if is_secret_key(st.name) else _shown(v.value), v.source, st.env) for st, v in s.items()]
    if json:
        print_json({"project": str(s.root), "settings": [dict(zip(("name", "value", "source", "env"), r, strict=True)) for r in rows]})
        return
    console.print(f"Project: [bold]{s.root}[/] ({s.config_file or 'no keel.yaml: using defaults'})")
    console.print(table(None, ["setting", "value", "source"], [r[:3] for r in rows]))
    console.print("Each setting can be overridden by the environment variable KEEL_<SETTING>, e.g. KEEL_METADATA_URI; `keel config --json` lists them.")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Migrate the metadata database to this keel's schema.

    Example: KEEL_METADATA_URI=postgresql+psycopg://me@localhost/keel keel db upgrade
    """
    from keel.store.metadata import get_metadata_store

    def go() -> tuple[set[str], set[str]]:
        store = get_metadata_store()
        before = store.revisions()
        store.upgrade()
        return before, store.revisions()

    before, after = run_guarded(go)
    console.print(f"Metadata store at revision {', '.join(sorted(after))} (was {', '.join(sorted(before)) or 'empty'}).")


@db_app.command("current")
def db_current() -> None:
    """Print the schema revision of the metadata database.

    Example: keel db current
    """
    from keel.store.metadata import get_metadata_store

    store = run_guarded(get_metadata_store)
    current = ", ".join(sorted(run_guarded(store.revisions))) or "empty"
    console.print(f"{current} (this keel's heads: {', '.join(sorted(store.head_revisions()))})")


def register(app: typer.Typer) -> None:
    app.command()(init)
    app.command()(config)
    app.add_typer(db_app, name="db")
