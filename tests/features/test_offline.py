"""Point-in-time training sets: a brute-force reference, ordering, TTL, created time and bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.errors import ValidationError
from keel.features import Entity, FeatureService, FeatureView, Field, Float64, Int64, Source, String
from keel.features.loader import Definitions
from keel.features.offline import build_training_set

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def hours(h: int) -> datetime:
    return T0 + timedelta(hours=h)


def make_defs(rows: pd.DataFrame, *, ttl: int | None = None, created: bool = True, transformation: object = None) -> Definitions:
    user = Entity("user", join_keys=["user_id"])
    src = Source("events", df=rows, created_timestamp_field="created" if created else None)
    view = FeatureView(
        "stats",
        entities=[user],
        source=src,
        schema=[Field("value", Int64)],
        ttl=None if ttl is None else timedelta(hours=ttl),
        transformation=transformation,  # type: ignore[arg-type]
    )
    return Definitions([user, src, view, FeatureService("svc", features=[view])])


def reference(feats: list[tuple[int, int, int, int]], entity: list[tuple[int, int]], ttl: int | None, respect: bool) -> list[int | None]:
    """For each (key, t): value of the max (event, created) row with event <= t (and created <= t), within TTL."""
    out: list[int | None] = []
    for key, t in entity:
        best = None
        for k, ev, cr, val in feats:
            if k == key and ev <= t and (cr <= t or not respect) and (best is None or (ev, cr) > best[:2]):
                best = (ev, cr, val)
        if best is None or (ttl is not None and best[0] < t - ttl):
            out.append(None)
        else:
            out.append(best[2])
    return out


feature_rows = st.lists(
    st.tuples(st.integers(1, 3), st.integers(0, 20), st.integers(0, 10)),  # key, event hour, ingestion delay
    min_size=0,
    max_size=40,
    unique_by=lambda r: (r[0], r[1], r[1] + r[2]),
)
entity_rows = st.lists(st.tuples(st.integers(1, 4), st.integers(0, 32)), min_size=1, max_size=30)


@pytest.mark.slow
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=feature_rows, entity=entity_rows, ttl=st.none() | st.integers(0, 12).map(lambda x: x + 1), respect=st.booleans())
def test_matches_brute_force_reference(project: Path, rows: list[tuple[int, int, int]], entity: list[tuple[int, int]], ttl: int | None, respect: bool) -> None:
    feats = [(k, ev, ev + delay, i) for i, (k, ev, delay) in enumerate(rows)]
    frame = pd.DataFrame(
        {
            "user_id": pd.Series([f[0] for f in feats], dtype="int64"),
            "event_timestamp": pd.Series([hours(f[1]) for f in feats], dtype="datetime64[us, UTC]"),
            "created": pd.Series([hours(f[2]) for f in feats], dtype="datetime64[us, UTC]"),
            "value": pd.Series([f[3] for f in feats], dtype="int64"),
        }
    )
    edf = pd.DataFrame({"user_id": [e[0] for e in entity], "event_timestamp": [hours(e[1]) for e in entity]})
    out = build_training_set(edf, "svc", definitions=make_defs(frame, ttl=ttl), respect_created_time=respect, require_applied=False)
    got = [None if pd.isna(v) else int(v) for v in out["value"]]
    assert got == reference(feats, entity, ttl, respect)
    assert out["user_id"].tolist() == [e[0] for e in entity]  # one row per input row, in input order


def _rows(data: list[tuple[int, int, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [d[0] for d in data],
            "event_timestamp": [hours(d[1]) for d in data],
            "created": [hours(d[2]) for d in data],
            "value": [d[3] for d in data],
        }
    )


def test_duplicate_input_rows_keep_their_rows_and_index_is_ignored(project: Path) -> None:
    defs = make_defs(_rows([(1, 0, 0, 10), (1, 5, 5, 20)]))
    edf = pd.DataFrame({"user_id": [1, 1, 1, 9], "event_timestamp": [hours(6), hours(6), hours(1), hours(6)]}, index=[7, 3, 3, 0])
    out = build_training_set(edf, "svc", definitions=defs, require_applied=False)
    assert out["value"].tolist() == [20, 20, 10, pd.NA]
    assert list(out.index) == [0, 1, 2, 3]


def test_late_arriving_row_is_invisible_before_ingestion_unless_asked(project: Path) -> None:
    # the value for hour 5 was only ingested at hour 9 (a backfill)
    defs = make_defs(_rows([(1, 0, 0, 10), (1, 5, 9, 20)]))
    edf = pd.DataFrame({"user_id": [1, 1], "event_timestamp": [hours(7), hours(9)]})
    assert build_training_set(edf, "svc", definitions=defs, require_applied=False)["value"].tolist() == [10, 20]
    leaky = build_training_set(edf, "svc", definitions=defs, require_applied=False, respect_created_time=False)
    assert leaky["value"].tolist() == [20, 20]


def test_ttl_edge_is_inclusive(project: Path) -> None:
    defs = make_defs(_rows([(1, 0, 0, 10)]), ttl=3)
    edf = pd.DataFrame({"user_id": [1, 1], "event_timestamp": [hours(3), hours(3) + timedelta(microseconds=1)]})
    assert build_training_set(edf, "svc", definitions=defs, require_applied=False)["value"].tolist() == [10, pd.NA]


def test_same_key_and_event_time_resolved_by_created_time(project: Path) -> None:
    defs = make_defs(_rows([(1, 0, 1, 10), (1, 0, 2, 11)]))
    edf = pd.DataFrame({"user_id": [1, 1], "event_timestamp": [hours(1), hours(3)]})
    assert build_training_set(edf, "svc", definitions=defs, require_applied=False)["value"].tolist() == [10, 11]


def test_duplicates_without_created_time_are_rejected_naming_the_keys(project: Path) -> None:
    defs = make_defs(_rows([(1, 0, 0, 10), (7, 4, 4, 11), (7, 4, 4, 12), (7, 6, 6, 13)]).drop(columns="created"), created=False)
    edf = pd.DataFrame({"user_id": [1, 7], "event_timestamp": [hours(5), hours(5)]})
    with pytest.raises(ValidationError, match=r"stats.*user_id=7 at 2024-01-01 04:00:00.*created_timestamp_field"):
        build_training_set(edf, "svc", definitions=defs, require_applied=False)
    # ties that decide no value (here: superseded by the hour-6 row) are not an error
    later = pd.DataFrame({"user_id": [7], "event_timestamp": [hours(7)]})
    assert build_training_set(later, "svc", definitions=defs, require_applied=False)["value"].tolist() == [13]


def test_tied_created_times_are_rejected_too(project: Path) -> None:
    defs = make_defs(_rows([(3, 1, 2, 10), (3, 1, 2, 11)]))
    edf = pd.DataFrame({"user_id": [3], "event_timestamp": [hours(5)]})
    for respect in (True, False):
        with pytest.raises(ValidationError, match=r"same created time: user_id=3 at 2024-01-01 01:00:00.*distinct created times"):
            build_training_set(edf, "svc", definitions=defs, require_applied=False, respect_created_time=respect)


def test_entity_df_errors_name_the_column_and_the_fix(project: Path) -> None:
    defs = make_defs(_rows([(1, 0, 0, 10)]))
    with pytest.raises(ValidationError, match=r"no timestamp column 'event_timestamp'.*Did you mean 'event_timestmp'"):
        build_training_set(pd.DataFrame({"user_id": [1], "event_timestmp": [hours(1)]}), "svc", definitions=defs, require_applied=False)
    naive = pd.DataFrame({"user_id": [1], "event_timestamp": [datetime(2024, 1, 1)]})
    with pytest.raises(ValidationError, match=r"'event_timestamp' holds naive timestamps.*tz_localize"):
        build_training_set(naive, "svc", definitions=defs, require_applied=False)
    with pytest.raises(ValidationError, match=r"no column 'user_id'"):
        build_training_set(pd.DataFrame({"uid": [1], "event_timestamp": [hours(1)]}), "svc", definitions=defs, require_applied=False)
    with pytest.raises(ValidationError, match=r"already has a column 'value'"):
        build_training_set(pd.DataFrame({"user_id": [1], "event_timestamp": [hours(1)], "value": [0]}), "svc", definitions=defs, require_applied=False)
    with pytest.raises(ValidationError, match=r"Join key 'user_id' is VARCHAR in the entity DataFrame but BIGINT"):
        build_training_set(pd.DataFrame({"user_id": ["1"], "event_timestamp": [hours(1)]}), "svc", definitions=defs, require_applied=False)


def test_source_errors_name_view_column_and_fix(project: Path) -> None:
    edf = pd.DataFrame({"user_id": [1], "event_timestamp": [hours(1)]})
    naive = _rows([(1, 0, 0, 10)]).assign(event_timestamp=[datetime(2024, 1, 1)])
    with pytest.raises(ValidationError, match=r"'stats' \(source 'events'\): column 'event_timestamp' holds naive"):
        build_training_set(edf, "svc", definitions=make_defs(naive), require_applied=False)
    wrong_type = _rows([(1, 0, 0, 10)]).assign(value=["ten"])
    with pytest.raises(ValidationError, match=r"feature 'value' is declared int64 but the data holds VARCHAR.*Field\('value'"):
        build_training_set(edf, "svc", definitions=make_defs(wrong_type), require_applied=False)
    missing = _rows([(1, 0, 0, 10)]).rename(columns={"value": "valu"})
    with pytest.raises(ValidationError, match=r"feature 'value' is not in the data. Did you mean 'valu'"):
        build_training_set(edf, "svc", definitions=make_defs(missing), require_applied=False)
    no_ts = _rows([(1, 0, 0, 10)]).drop(columns="event_timestamp")
    with pytest.raises(ValidationError, match=r"timestamp_field column 'event_timestamp' is not in the data"):
        build_training_set(edf, "svc", definitions=make_defs(no_ts), require_applied=False)


def test_duplicate_feature_names_across_views_in_a_service_are_rejected() -> None:
    user = Entity("user", join_keys=["user_id"])
    a = FeatureView("a", entities=[user], source=Source("sa", path="a.parquet"), schema=[Field("x", Float64)])
    b = FeatureView("b", entities=[user], source=Source("sb", path="b.parquet"), schema=[Field("x", Float64), Field("y", String)])
    with pytest.raises(ValidationError, match=r"FeatureService 'svc': feature 'x' comes from both 'a' and 'b'.*b\[\[\.\.\.\]\]"):
        FeatureService("svc", features=[a, b])
    FeatureService("svc", features=[a, b[["y"]]])  # projecting the clash away is the fix


def test_sql_and_pandas_transformations_give_the_same_result(project: Path) -> None:
    rows = _rows([(1, 0, 0, 10), (1, 5, 5, 20), (2, 1, 1, 3)])
    edf = pd.DataFrame({"user_id": [1, 2, 1], "event_timestamp": [hours(6), hours(6), hours(2)]})
    sql = make_defs(rows, transformation="SELECT * REPLACE (value * 2 AS value) FROM source")

    def double(df: pd.DataFrame) -> pd.DataFrame:
        return df.assign(value=df["value"] * 2)

    py = make_defs(rows, transformation=double)
    a = build_training_set(edf, "svc", definitions=sql, require_applied=False)
    b = build_training_set(edf, "svc", definitions=py, require_applied=False)
    assert a["value"].tolist() == b["value"].tolist() == [40, 6, 20]
    assert a.attrs["keel"]["fingerprint"] == b.attrs["keel"]["fingerprint"]


def test_fingerprint_changes_with_any_value(project: Path) -> None:
    defs = make_defs(_rows([(1, 0, 0, 10), (1, 5, 5, 20)]))
    edf = pd.DataFrame({"user_id": [1, 1], "event_timestamp": [hours(1), hours(6)]})
    one = build_training_set(edf, "svc", definitions=defs, require_applied=False).attrs["keel"]
    two = build_training_set(edf.iloc[::-1], "svc", definitions=defs, require_applied=False).attrs["keel"]
    assert one["fingerprint"] != two["fingerprint"]
    assert one["features"] == ["value"] and one["feature_service"] == "svc" and one["kind"] == "training_set"


def test_multiple_views_and_feature_references(project: Path) -> None:
    user = Entity("user", join_keys=["user_id"])
    s1 = Source("s1", df=_rows([(1, 0, 0, 10)]), created_timestamp_field="created")
    s2 = Source("s2", df=pd.DataFrame({"user_id": [1], "event_timestamp": [hours(2)], "name": ["ann"]}))
    v1 = FeatureView("v1", entities=[user], source=s1, schema=[Field("value", Int64)])
    v2 = FeatureView("v2", entities=[user], source=s2, schema=[Field("name", String)])
    defs = Definitions([v1, v2])
    edf = pd.DataFrame({"user_id": [1, 1], "event_timestamp": [hours(1), hours(3)]})
    out = build_training_set(edf, ["v2:name", "v1:value"], definitions=defs, require_applied=False)
    assert out["value"].tolist() == [10, 10]
    assert out["name"].tolist() == [pd.NA, "ann"]
    with pytest.raises(ValidationError, match="'view:feature'"):
        build_training_set(edf, ["name"], definitions=defs, require_applied=False)


@pytest.mark.postgres
def test_sql_source_on_postgresql(project: Path, pg_uri: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(pg_uri)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE stats (user_id BIGINT, event_timestamp TIMESTAMPTZ, value BIGINT)"))
        conn.execute(sa.text("INSERT INTO stats VALUES (1, '2024-01-01 00:00+00', 10), (1, '2024-01-01 05:00+00', 20)"))
    engine.dispose()
    user = Entity("user", join_keys=["user_id"])
    src = Source("pg", query="SELECT * FROM stats", connection=pg_uri)
    view = FeatureView("stats", entities=[user], source=src, schema=[Field("value", Int64)])
    edf = pd.DataFrame({"user_id": [1, 1], "event_timestamp": [hours(1), hours(6)]})
    out = build_training_set(edf, ["stats:value"], definitions=Definitions([view]), require_applied=False)
    assert out["value"].tolist() == [10, 20]
