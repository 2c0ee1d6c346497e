"""`apply`: content-hashed immutable versions, diffs and breaking-change detection."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from keel.errors import ConflictError, ValidationError
from keel.features import loader
from keel.features.offline import build_training_set
from keel.features.registry import (
    apply,
    consumers,
    get_object,
    list_versions,
    pinned,
    record_consumer,
)


def _rewrite(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_apply_versions_only_what_changed(churn_project: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    root, _ = churn_project
    first = apply()
    assert first.changed and first.definitions_version == 1
    assert {(c.kind, c.name, c.action) for c in first.changes} >= {("feature_view", "usage", "added"), ("feature_service", "churn_v1", "added")}
    again = apply()
    assert not again.changed and again.definitions_version == 1 and again.changes == []

    # a transformation change (code only, same schema) is a new version
    _rewrite(root / "features.py", "minutes / nullif(sessions, 0)", "minutes / nullif(sessions, 0) * 1.0")
    second = apply()
    assert second.definitions_version == 2
    (change,) = second.changes
    assert (change.kind, change.name, change.action, change.old_version, change.new_version) == ("feature_view", "usage", "changed", 1, 2)
    assert "~ transformation code changed" in change.details
    assert [r["version"] for r in list_versions("feature_view", "usage")] == [1, 2]
    assert get_object("usage", kind="feature_view", version=1)["spec"]["transformation"].startswith("SELECT *, minutes / nullif(sessions, 0) AS")


def test_breaking_change_is_refused_unless_allowed(churn_project: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    root, _ = churn_project
    apply()
    _rewrite(root / "features.py", 'Field("support_tickets", Int64),', 'Field("support_tickets", Float64),')
    with pytest.raises(ConflictError, match=r"feature service 'churn_v1' v1 uses usage.support_tickets: type int64 -> float64.*--allow-breaking"):
        apply(validate=False)
    plan = apply(dry_run=True, validate=False)
    assert plan.breaking and not plan.changed
    done = apply(allow_breaking=True, validate=False)
    assert done.definitions_version == 2 and done.breaking


def test_removed_feature_is_breaking(churn_project: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    root, _ = churn_project
    apply()
    _rewrite(root / "features.py", '        Field("payment_failures", Int64),\n', "")
    with pytest.raises(ConflictError, match=r"usage.payment_failures: removed"):
        apply()


def test_apply_validates_definitions_against_the_data(churn_project: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    root, _ = churn_project
    _rewrite(root / "features.py", 'Field("sessions", Int64),', 'Field("session", Int64),')
    with pytest.raises(ValidationError, match=r"FeatureView 'usage' \(source 'usage'\): feature 'session' is not in the data. Did you mean 'sessions'"):
        apply()
    _rewrite(root / "features.py", 'Field("session", Int64),', 'Field("sessions", String),')
    with pytest.raises(ValidationError, match=r"feature 'sessions' is declared string but the data holds BIGINT"):
        apply()


def test_training_set_needs_applied_definitions_and_pins_versions(churn_project: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    _, data = churn_project
    with pytest.raises(ConflictError, match="keel features apply"):
        build_training_set(data["labels"], "churn_v1")
    apply()
    ts = build_training_set(data["labels"], "churn_v1")
    assert ts.attrs["keel"]["definitions_version"] == 1 and ts.attrs["keel"]["feature_service_version"] == 1
    assert pinned(loader.load_definitions()).version_of("feature_view", "usage") == 1


def test_consumers_are_recorded_once(churn_project: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    apply()
    record_consumer("churn_v1", 1, "model", "churn@1")
    record_consumer("churn_v1", 1, "model", "churn@1")
    assert consumers() == {"churn_v1": ["model:churn@1 (v1)"]}


@pytest.mark.postgres
def test_apply_on_postgresql(churn_project: tuple[Path, dict[str, pd.DataFrame]], pg_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from keel import config

    monkeypatch.setenv("KEEL_METADATA_URI", pg_uri)
    config.reset()
    assert apply().definitions_version == 1
    assert apply().changed is False
    record_consumer("churn_v1", 1, "model", "m@1")
    assert consumers() == {"churn_v1": ["model:m@1 (v1)"]}
