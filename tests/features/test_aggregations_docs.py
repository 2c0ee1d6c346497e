"""The aggregations example in docs/features.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "features.md"


def _block(marker: str) -> str:
    text = DOC.read_text()
    found = re.search(re.escape(f"<!-- aggregations example: {marker} -->") + r"\s*```python\n(.*?)```", text, re.S)
    assert found, f"docs/features.md has no '{marker}' block"
    return found.group(1)


def test_the_docs_aggregation_example_runs(project: Path) -> None:
    from keel.features import loader, online
    from keel.features.registry import apply

    (project / "features.py").write_text(_block("features.py"))
    try:
        apply()
        exec(compile(_block("use"), str(DOC), "exec"), {})  # its asserts check the values, offline and online
    finally:
        loader.clear_cache()
        online.reset_context()
