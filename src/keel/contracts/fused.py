"""The fused scan's values: one aggregate query over the data, plus what the pre-scan already knows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class FusedQuery:
    """The fused scan's values: SQL aggregates, constants known from the pre-scan, and sums of both.

    Every value has an index into the row :meth:`run` returns. Histograms run as a
    query of their own: beside plain aggregates they slow the whole scan down.
    """

    def __init__(self) -> None:
        self.exprs: list[str] = []  # SQL aggregates, in index order of self._sql
        # ("sql", sql index, None) | ("const", value, None) | ("later", fn, None) | ("plus", (value, sign), entry index)
        self._entries: list[tuple[str, Any, Any]] = []
        self._index: dict[Any, int] = {}

    def _entry(self, key: Any, entry: tuple[str, Any, Any]) -> int:
        i = self._index.get(key)
        if i is None:
            i = self._index[key] = len(self._entries)
            self._entries.append(entry)
        return i

    def add(self, expr: str) -> int:
        i = self._index.get(expr)
        if i is None:
            self.exprs.append(expr)
            i = self._entry(expr, ("sql", len(self.exprs) - 1, None))
        return i

    def const(self, value: Any) -> int:
        return self._entry(("const", type(value).__name__, value), ("const", value, None))

    def later(self, key: str, fn: Callable[[], Any]) -> int:
        """A value computed by ``fn`` after the scan (a query of its own), once per ``key``."""
        return self._entry(("later", key), ("later", fn, None))

    def plus(self, value: int, expr: str, sign: int = 1) -> int:
        """``value`` + ``sign`` x the SQL aggregate ``expr``."""
        return self._entry(("plus", value, sign, expr), ("plus", (value, sign), self.add(expr)))

    def run(self, con: Any) -> tuple[Any, ...]:
        sql_row: list[Any] = [None] * len(self.exprs)
        hist = [i for i, e in enumerate(self.exprs) if e.startswith("histogram(")]
        plain = [i for i in range(len(self.exprs)) if i not in set(hist)]
        for part in (plain, hist):
            if part:
                got = con.execute(f"SELECT {', '.join(self.exprs[i] for i in part)} FROM t").fetchall()[0]
                for i, value in zip(part, got, strict=True):
                    sql_row[i] = value
        out: list[Any] = []
        for kind, a, b in self._entries:
            if kind == "sql":
                out.append(sql_row[a])
            elif kind == "const":
                out.append(a)
            elif kind == "later":
                out.append(a())
            else:
                out.append(a[0] + a[1] * int(out[b] or 0))
        return tuple(out)
