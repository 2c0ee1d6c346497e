"""What every command shares: the console, JSON output and error handling."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import typer
from rich.console import Console
from rich.table import Table


class _Console(Console):
    """Wraps text at the terminal's width; piped or redirected, each line of text stays whole.

    Rich hard-wraps at 80 columns when it cannot see a terminal, which breaks
    sentences and file paths in logs and CI output; there plain text is
    soft-wrapped (left to the reader's pager or log viewer). Tables and trees
    keep the width and wrap inside their cells.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Rich freezes COLUMNS/LINES as they are when the console is made (at import); read them
        # when printing instead, as rich does when they are unset (so COLUMNS=140 keel ... works
        # in-process too).
        if kwargs.get("width") is None:
            self._width = None
        if kwargs.get("height") is None:
            self._height = None

    def print(self, *objects: Any, soft_wrap: bool | None = None, **kwargs: Any) -> None:
        if soft_wrap is None:
            soft_wrap = not self.is_terminal and all(isinstance(o, str) for o in objects)
        super().print(*objects, soft_wrap=soft_wrap, **kwargs)


console = _Console()
err_console = _Console(stderr=True)

JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, float) and value != value:
        return None
    return str(value)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=_default, indent=2) + "\n")


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    t = Table(title=title, show_lines=False, header_style="bold")
    for c in columns:
        t.add_column(str(c), overflow="fold")
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    return t


def fail(message: str, code: int = 1) -> None:
    """One error line on stderr (plus, for filter errors, the caret lines under it) and exit ``code``."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def run_guarded(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a KeelError becomes a one-line message and exit status 1."""
    from keel.errors import KeelError

    try:
        return fn()
    except KeelError as exc:
        fail(str(exc))
