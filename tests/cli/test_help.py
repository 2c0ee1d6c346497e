"""Every command has help with an example and is documented in docs/."""

from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from keel.cli.main import app

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _commands() -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []

    def walk(prefix: str, cmd: Any) -> None:
        if hasattr(cmd, "commands"):  # a group (typer vendors its own click)
            for name, sub in cmd.commands.items():
                walk(f"{prefix} {name}".strip(), sub)
        else:
            out.append((prefix, cmd))

    walk("", typer.main.get_command(app))
    return out


COMMANDS = _commands()


def test_there_are_commands() -> None:
    names = {n for n, _ in COMMANDS}
    assert {"init", "config", "db upgrade", "runs ls", "runs show", "runs diff", "runs compare", "runs reproduce", "runs delete", "experiments ls", "gc", "quickstart"} <= names


@pytest.mark.parametrize("name,cmd", COMMANDS, ids=[n for n, _ in COMMANDS])
def test_every_command_has_help_and_an_example(name: str, cmd: Any) -> None:
    assert cmd.help and len(cmd.help.strip()) > 10, f"`keel {name}` has no help"
    assert "Example:" in cmd.help and "keel " in cmd.help.split("Example:", 1)[1], f"`keel {name}` help has no example"
    result = CliRunner().invoke(app, [*name.split(), "--help"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("name", [n for n, _ in COMMANDS])
def test_every_command_is_documented(name: str) -> None:
    text = "\n".join(p.read_text() for p in DOCS.glob("*.md"))
    assert f"keel {name}" in text, f"`keel {name}` is not mentioned in docs/"
