"""The README and docs/ claim only commands and options that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main

from keel.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _commands(text: str) -> list[str]:
    """`keel ...` in inline code, and lines of code blocks that run keel (after env assignments or &&)."""
    found = [m.group(1) for m in re.finditer(r"`(keel [^`]+)`", text)]
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        for line in block.splitlines():
            for part in re.split(r"&&|\|", line.split("#")[0]):
                words = [w for w in part.split() if not re.match(r"^[A-Z_][A-Z0-9_]*=", w)]
                if words[:1] == ["keel"]:
                    found.append(" ".join(words))
    return found


CLAIMS = [(page.name, cmd) for page in PAGES for cmd in _commands(page.read_text())]


def test_the_docs_show_commands() -> None:
    assert len(CLAIMS) > 40


@pytest.mark.parametrize(("page", "command"), CLAIMS, ids=[f"{p}:{c[:60]}" for p, c in CLAIMS])
def test_every_documented_command_and_option_exists(page: str, command: str) -> None:
    node = typer.main.get_command(app)
    words = command.split()[1:]
    while words and hasattr(node, "commands") and words[0] in node.commands:  # a group (typer vendors click)
        node = node.commands[words.pop(0)]
    if hasattr(node, "commands"):
        assert not words or not re.match(r"^[a-z]+$", words[0]), f"{page}: `{command}`: no command `{words[0]}`"
        return
    options = {o for p in node.params for o in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]}
    for word in words:
        flag = word.split("=")[0].strip("'\",;.)")
        if flag.startswith("-") and len(flag) > 1 and not re.match(r"^-\d", flag):
            assert flag in options, f"{page}: `{command}`: `keel {node.name}` has no option {flag}"
