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


def table(
    title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, optional: Sequence[str] = (),
    more: str = "--json",
) -> Table:
    """A table of text cells. ``optional`` columns (least wanted first) are left out while the
    table would otherwise break its cells' words, or squeeze text below 20 characters, to fit
    the console; a caption names them and ``more`` (where to see them)."""
    cells = [["" if v is None else str(v) for v in r] for r in rows]
    keep = list(range(len(columns)))
    dropped: list[str] = []

    def needed(idx: list[int]) -> int:  # each column: its longest word, and 20 characters of text if it has them
        widths = [
            max([len(str(columns[i])), min(20, max((len(r[i]) for r in cells), default=0))] + [len(w) for r in cells for w in r[i].split()])
            for i in idx
        ]
        return sum(widths) + 3 * len(idx) + 1

    for name in optional:
        if needed(keep) <= console.width or name not in columns:
            continue
        i = list(columns).index(name)
        if i in keep and any(r[i] for r in cells) and len(keep) > 2:
            dropped.append(name)
        if i in keep:
            keep.remove(i)
    caption = f"not shown at this width: {', '.join(dropped)} (widen the terminal, or {more})" if dropped else None
    t = Table(title=title, show_lines=False, header_style="bold", caption=caption)
    for i in keep:
        t.add_column(str(columns[i]), overflow="fold")
    for r in cells:
        t.add_row(*(r[i] for i in keep))
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
