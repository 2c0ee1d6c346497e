"""Tables fit the console: optional columns go before words are broken, and the caption says which."""

from __future__ import annotations

import pytest
from rich.console import Console

from keel.cli._common import table
from keel.contracts.report import format_value


def _render(t: object, width: int) -> str:
    con = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    con.print(t)
    return con.export_text()


ROWS = [("feature_view", "usage", "The latest day of usage; older than 3 days counts as missing.", "team=growth")]


def test_a_narrow_console_drops_optional_columns_and_names_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    out = _render(table("defs", ["kind", "name", "description", "tags"], ROWS, optional=("tags", "description")), 40)
    assert "feature_view" in out and "usage" in out
    assert "The latest" not in out and "team=growth" not in out
    assert "not shown at this width: tags, description" in " ".join(out.split())
    monkeypatch.setenv("COLUMNS", "60")  # room for the description, not for the tags too
    out = _render(table("defs", ["kind", "name", "description", "tags"], ROWS, optional=("tags", "description")), 60)
    assert "The latest" in out and "team=growth" not in out


def test_a_wide_console_shows_every_column(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    out = _render(table("defs", ["kind", "name", "description", "tags"], ROWS, optional=("tags", "description")), 200)
    assert "The latest day of usage" in out and "team=growth" in out and "not shown" not in out


def test_negative_zero_reads_as_zero() -> None:
    assert format_value(-0.0) == "0" and format_value(-1.5) == "-1.5"
