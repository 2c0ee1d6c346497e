"""Write a benchmark's figures into its own section of benchmarks/README.md.

Each script owns the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``;
the file is replaced atomically, so a run killed half-way never leaves it half-written.
"""

from __future__ import annotations

import os
from pathlib import Path

README = Path(__file__).with_name("README.md")


def write_section(name: str, body: str, *, append: bool = False, intro: str = "") -> None:
    """Replace the section's text with ``body`` (or add ``body`` after it with ``append``)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    if start not in text or end not in text:
        text = text.rstrip("\n") + f"\n\n{start}\n{intro}\n{end}\n"
    head, rest = text.split(start, 1)
    old, tail = rest.split(end, 1)
    new = (old.rstrip("\n") + "\n\n" + body.strip("\n") + "\n") if append else ("\n" + body.strip("\n") + "\n")
    tmp = README.with_suffix(".md.tmp")
    tmp.write_text(head + start + new + end + tail)
    os.replace(tmp, README)
