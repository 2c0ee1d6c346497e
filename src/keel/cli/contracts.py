"""Data contract commands: keel validate, keel contracts suggest|history|show."""

from __future__ import annotations

from pathlib import Path

import typer

from keel.cli._common import JSON_OPTION, console, err_console, print_json, run_guarded, table

contracts_app = typer.Typer(
    help="Data contracts: suggest, inspect and follow the checks that guard your data.\n\nExample: keel contracts suggest data/orders.parquet -o contracts/orders.yaml",
    no_args_is_help=True,
)


def validate(
    target: str = typer.Argument(..., help="A Parquet/CSV path, or a target with an attached contract (found by the contract's data: or a feature-store source or view)."),
    contract: Path = typer.Option(None, "--contract", "-c", help="Contract file (default: the contracts attached to TARGET)."),
    name: str = typer.Option(None, "--target", help="Name to keep history and references under (default: TARGET if attached, else the contract's name)."),
    stage: str = typer.Option("manual", "--stage", help="Stage recorded with the result (e.g. ci, training_set)."),
    no_store: bool = typer.Option(False, "--no-store", help="Do not record the result in the metadata store."),
    all_checks: bool = typer.Option(False, "--all", help="Show every check, not only failures."),
    json: bool = JSON_OPTION,
) -> None:
    """Validate data against its contract; exit 1 when an error-level check fails (for CI).

    Example: keel validate data/orders.parquet --contract contracts/orders.yaml
    """
    import keel.features  # noqa: F401  (registers sources and feature views as targets)
    from keel.contracts import validate as run_validation
    from keel.contracts.targets import attached_contracts, resolve_data

    def go():
        data = resolve_data(target)
        attached: list = [] if contract is not None else attached_contracts(target)
        tgt = name or (target if attached else None)
        chosen = contract if contract is not None else (attached or None)
        if chosen is None:
            from keel.errors import ValidationError

            raise ValidationError(
                f"No contract is attached to {target!r}.",
                hint=f"Pass --contract FILE, add contracts/{Path(target).stem}.yaml, or write one with `keel contracts suggest {target} -o FILE`.",
            )
        with console.status(f"Validating {target}...", spinner="dots") if not json else _null():
            return run_validation(data, chosen, target=tgt, stage=stage, store=not no_store)

    report = run_guarded(go)
    if json:
        print_json(report.to_dict())
    else:
        has_failures = bool(report.failures)
        console.print(report.rich_table(failures_only=has_failures and not all_checks))
        if not has_failures:
            console.print(f"[green]All {len(report.results)} checks passed[/] on {report.num_rows:,} rows in {report.duration_s:.2f}s.")
        elif report.passed:
            console.print(f"[yellow]{len(report.warnings)} warning(s)[/], no blocking failure.")
        else:
            err_console.print(f"[bold red]{len(report.errors)} error-level check(s) failed[/]: the data would be blocked.")
    if not report.passed:
        raise typer.Exit(1)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@contracts_app.command("suggest")
def suggest(
    source: str = typer.Argument(..., help="A Parquet/CSV path or a defined source."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the contract YAML."),
    name: str = typer.Option(None, "--name", help="Contract name (default: OUTPUT's stem, so contracts/NAME.yaml attaches to target NAME)."),
    no_pin: bool = typer.Option(False, "--no-pin", help="Do not pin the profiled data as the reference of distribution checks."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUTPUT if it exists."),
) -> None:
    """Profile data and write a starting contract for you to review and commit.

    Example: keel contracts suggest data/orders.parquet -o contracts/orders.yaml
    """
    import keel.features  # noqa: F401  (registers sources and feature views as targets)
    from keel.contracts.suggest import suggest as run_suggest
    from keel.contracts.targets import resolve_data
    from keel.errors import ConflictError

    def go():
        if output.exists() and not force:
            raise ConflictError(f"{output} already exists.", hint="Pass --force to overwrite it.")
        data = resolve_data(source)
        cname = name or output.name.split(".")[0]
        with console.status(f"Profiling {source}...", spinner="dots"):
            contract = run_suggest(data, name=cname, pin=not no_pin)
        if isinstance(data, str):  # a file: the contract says where its data is, for `keel validate NAME` and `keel ci`
            contract.data = _project_relative(data)
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(f".{output.name}.tmp")
        tmp.write_text(f"# Suggested by `keel contracts suggest {source}`: review the margins before committing.\n" + contract.to_yaml())
        tmp.replace(output)
        return contract

    contract = run_guarded(go)
    console.print(f"Wrote {output}: {len(contract.columns)} columns, {len(contract.checks)} checks" + (f", reference {contract.reference}" if not no_pin else "") + ".")


@contracts_app.command("history")
def history(
    target: str = typer.Argument(..., help="The target (or contract name) whose validations to show."),
    limit: int = typer.Option(50, "--limit", "-n", help="How many of the latest validations to consider."),
    json: bool = JSON_OPTION,
) -> None:
    """Show which checks started failing when, over the latest validations of TARGET.

    Example: keel contracts history orders
    """
    from keel.contracts.history import history as load_history

    validations, checks = run_guarded(lambda: load_history(target, limit=limit))
    if json:
        print_json({"validations": validations, "checks": [c.__dict__ for c in checks]})
        return
    rows = [
        (
            f"[red]{c.status}[/]" if c.status in ("fail", "error") else c.status,
            c.severity,
            c.check_id,
            _when(c.failing_since),
            _when(c.first_failed),
            _when(c.last_passed),
            f"{c.failures}/{c.validations}",
            "".join({"pass": ".", "fail": "x", "error": "E", "skip": "-"}[s] for s in c.statuses[-30:]),
        )
        for c in checks
    ]
    console.print(table(f"Checks of {target} over {len(validations)} validation(s)", ["now", "severity", "check", "failing since", "first failed", "last passed", "failed", "timeline (old → new)"], rows))
    vrows = [(_when(v["created"]), v["stage"] or "", "[green]pass[/]" if v["passed"] else "[red]blocked[/]", v["errors"], v["warnings"], f"{v['num_rows']:,}", v["run_id"] or "", v["id"]) for v in validations[:10]]
    console.print(table("Latest validations", ["time", "stage", "result", "errors", "warnings", "rows", "run", "id"], vrows))


@contracts_app.command("show")
def show(
    file: Path = typer.Argument(..., help="A contract YAML file."),
    json: bool = JSON_OPTION,
) -> None:
    """Load a contract (reporting any error with its file and line) and list its checks.

    Example: keel contracts show contracts/orders.yaml
    """
    from keel.contracts.loader import load_contract

    contract = run_guarded(lambda: load_contract(file))
    if json:
        print_json({"contract": contract.name, "hash": contract.digest(), "spec": contract.to_spec(),
                    "checks": [{"id": c.id, "kind": c.kind, "column": c.column, "severity": c.severity, "expected": c.describe(), "where": c.where} for c in contract.checks]})
        return
    rows = [(c.id, c.kind, c.column or "", c.severity, c.describe(), (c.where or "").rsplit(":", 1)[-1]) for c in contract.checks]
    console.print(table(f"Contract {contract.name} ({len(contract.columns)} columns, unexpected columns: {contract.unexpected_columns}, reference: {contract.reference})",
                        ["check", "rule", "column", "severity", "expects", "line"], rows))


def _project_relative(path: str) -> str:
    from keel.config import settings

    p, root = Path(path).resolve(), Path(settings().root).resolve()
    return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)


def _when(dt) -> str:
    return "" if dt is None else dt.strftime("%Y-%m-%d %H:%M")


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
    app.add_typer(contracts_app, name="contracts")
