"""The quickstart's 30-day aggregates: Aggregation definitions, trained offline and served online
from one definition with zero skew (issue 12's "done when")."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

import keel
from keel.features import check_skew, loader, online
from keel.features.registry import apply
from keel.quickstart import data as qdata

TEMPLATE = Path(qdata.__file__).parent / "template"


def test_quickstart_aggregates_train_offline_and_serve_online_without_skew(project: Path) -> None:
    online.reset_context()
    shutil.copy(TEMPLATE / "features.py", project / "features.py")
    generated = qdata.generate(n_customers=120, days=60)
    qdata.write(generated, project / "data")
    apply()
    labels = generated.labels
    train = keel.get_training_set(labels[["customer_id", "event_timestamp"]], "churn_v1")
    # by hand, for one label: usage of the 30 days up to the label, arrived by then
    usage = generated.usage
    row = train.iloc[len(train) // 2]
    seen = usage[
        (usage.customer_id == row.customer_id)
        & (usage.event_timestamp <= row.event_timestamp)
        & (usage.event_timestamp > row.event_timestamp - pd.Timedelta(days=30))
        & (usage.created_timestamp <= row.event_timestamp)
    ]
    assert abs(row.minutes_30d - seen.minutes.sum()) < 1e-6 and row.tickets_30d == seen.support_tickets.sum()
    assert train["minutes_trend"].notna().mean() > 0.9

    keel.materialize()
    report = check_skew("churn_v1", sample=120)
    aggregates = {f.feature: f for f in report.features if f.feature.endswith("_30d")}
    assert set(aggregates) == {"sessions_30d", "minutes_30d", "tickets_30d", "failures_30d"}
    assert all(f.compared == 120 and f.mismatches == 0 and f.stale == 0 for f in aggregates.values()), report
    assert report.ok
    served = keel.get_online_features("churn_v1", [{"customer_id": 1}]).to_dict()
    assert served["minutes_30d"][0] is not None and served["minutes_trend"][0] is not None
    import json

    from typer.testing import CliRunner

    from keel.cli.main import app

    listing = json.loads(CliRunner().invoke(app, ["features", "ls", "--json"]).output)
    view = next(r for r in listing if r["name"] == "usage_30d")
    assert view["features"][:2] == ["sessions_30d", "minutes_30d"] and view["used_by"] == ["churn_v1"]
    loader.clear_cache()
    online.reset_context()
