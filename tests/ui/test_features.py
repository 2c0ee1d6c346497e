"""The feature pages: /features (views, entities, services) and /features/{view} (definition, versions, freshness, users, contracts)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.server.test_routes_features import features_project

pytestmark = pytest.mark.anyio
__all__ = ["features_project"]  # the fixture, shared with the API tests

CONTRACT = """\
contract: usage
columns:
  sessions:
    type: int
    checks:
      - min: 0
checks:
  - row_count: {min: 2}
"""


async def test_features_page_lists_every_kind(features_project: Path, ui_client: Any) -> None:
    r = await ui_client.get("/features")
    assert r.status_code == 200 and float(r.headers["x-render-ms"]) >= 0  # timed, never a pass/fail figure (benchmarks/bench_ui.py measures it)
    for title in ("Feature views", "On-demand feature views", "Feature services", "Entities", "Sources"):
        assert f">{title}</h2>" in r.text
    assert 'href="/features/usage"' in r.text and 'href="/features/pricing"' in r.text
    assert "growth@example.com" in r.text and "churn_v1" in r.text and "never" in r.text  # nothing materialized yet


async def test_view_page_definition_versions_freshness_users_contracts(features_project: Path, ui_client: Any) -> None:
    from keel.contracts import validate
    from keel.features.materialization import materialize
    from keel.features.registry import apply, record_consumer

    text = (features_project / "features.py").read_text().replace('description="Latest daily usage', 'description="Daily usage')
    (features_project / "features.py").write_text(text)
    from keel.features import loader

    loader.clear_cache()
    apply()  # a second version of the view
    materialize(["usage"])
    record_consumer("churn_v1", 2, "model", "churn@v3")
    (features_project / "contracts").mkdir()
    (features_project / "contracts" / "usage.yaml").write_text(CONTRACT)
    t0 = datetime.now(UTC) - timedelta(days=3)
    for day, sessions in enumerate(([1, 2, 3], [1, -2, 3], [4, 5, 6])):
        validate(pd.DataFrame({"sessions": sessions}), target="usage", now=t0 + timedelta(days=day))

    r = await ui_client.get("/features/usage")
    assert r.status_code == 200 and float(r.headers["x-render-ms"]) >= 0  # timed, never a pass/fail figure (benchmarks/bench_ui.py measures it)
    page = r.text
    assert "feature view v2" in page and "Daily usage" in page and "minutes_per_session" in page and "data/usage.parquet" in page
    assert page.count("<td class=\"num\">v") >= 2  # both versions, with hash and who
    assert "Keys written" in page and "Never materialized" not in page
    assert 'href="/models/churn/3">churn v3</a>' in page and 'href="/lineage/features/usage"' in page
    assert "Contract results of usage over time" in page and "<polyline" in page  # the chart
    assert page.count(">passed<") == 2 and page.count(">failed<") == 1 and "sessions.min" in page

    r = await ui_client.get("/features/profile")
    assert r.status_code == 200 and "Never materialized" in r.text and "No contract validations of profile or customers yet" in r.text
    r = await ui_client.get("/features/usag")
    assert r.status_code == 404 and "usage" in r.text  # did you mean
    r = await ui_client.get("/features/customer")  # an entity has no page of its own
    assert r.status_code == 404


async def test_a_project_without_features(project: Path, ui_client: Any) -> None:
    r = await ui_client.get("/features")
    assert r.status_code == 200 and "keel features apply" in r.text
