"""keel.search_runs on SQLite and PostgreSQL: the same tests over both stores."""

from __future__ import annotations

import math
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

import keel
from keel import config
from keel.errors import NotFoundError, ValidationError
from keel.store import metadata
from keel.store import schema as metadata_schema
from keel.store.metadata import get_metadata_store, now_ms
from keel.store.schema import runs
from keel.tracking import runs as runs_module

BASE_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z


PG_ADMIN = os.environ.get("KEEL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(params=["sqlite", "postgres"])
def store_project(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty project on each backend."""
    path: Path = request.getfixturevalue("project" if request.param == "sqlite" else "pg_project")
    monkeypatch.setenv("KEEL_CAPTURE_ENVIRONMENT", "false")
    config.reset()
    return path


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def data(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One project per backend holding the runs of `_populate`, shared by the read-only tests below.

    Module-scoped (the conftest fixtures are per test) so that the database is
    created and filled once per backend, not once per test.
    """
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("search")
    admin, db = None, None
    try:
        for key in list(os.environ):
            if key.startswith("KEEL_") and key != "KEEL_REQUIRE_SERVICES":
                mp.delenv(key)
        mp.chdir(root)
        mp.setenv("KEEL_CAPTURE_ENVIRONMENT", "false")
        if request.param == "postgres":
            db = f"keel_test_{uuid.uuid4().hex[:12]}"
            try:
                admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
                with admin.connect() as conn:
                    conn.execute(sa.text(f'CREATE DATABASE "{db}"'))
            except Exception as exc:
                if os.environ.get("KEEL_REQUIRE_SERVICES", "") in {"1", "true", "yes"}:
                    pytest.fail(f"PostgreSQL is not reachable: {exc} (KEEL_REQUIRE_SERVICES=1)")
                pytest.skip(f"PostgreSQL is not reachable: {exc}")
            mp.setenv("KEEL_METADATA_URI", sa.engine.make_url(PG_ADMIN).set(database=db).render_as_string(hide_password=False))
        config.init_project(root)
        config.reset()
        yield _populate()
    finally:
        runs_module._reset_for_tests()
        metadata.reset_stores()
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
            admin.dispose()
        mp.undo()
        config.reset()


def _run(name: str, params: dict[str, Any], metrics: dict[str, float], tags: dict[str, str], *, nested: bool = False) -> str:
    with keel.start_run(name=name, experiment="exp", nested=nested) as run:
        if params:
            keel.log_params(params)
        if metrics:
            keel.log_metrics(metrics)
        if tags:
            keel.set_tags(tags)
    return run.id


def _insert_running(name: str, heartbeat_ms: int, start_ms: int) -> str:
    store = get_metadata_store()
    exp_id = keel.set_experiment("exp")
    rid = f"{name:0>32}"[:32]
    with store.write() as conn:
        conn.execute(
            sa.insert(runs).values(
                id=rid, experiment_id=exp_id, name=name, parent_id=None, status="running", start_ms=start_ms,
                end_ms=None, heartbeat_ms=heartbeat_ms, user="alice", host="h", error=None, env=None,
            )
        )
    return rid


def _populate() -> dict[str, str]:
    """Eight runs in experiment 'exp' and one in 'other'; r0..r4-child start one second apart."""
    ids = {
        "r0": _run("r0", {"model": "lgbm", "lr": 0.1, "n_trees": "100"}, {"auc": 0.91, "loss": 0.3}, {"team": "risk"}),
        "r1": _run("r1", {"model": "xgb", "lr": 0.05, "n_trees": "100.0"}, {"auc": 0.85, "loss": math.nan}, {"team": "risk"}),
        "r2": _run("r2", {"model": "rf", "lr": "auto"}, {"auc": 0.7, "loss": 0.5}, {"team": "growth", "note": "good run"}),
        "r3": _run("r3", {"model": "LGBM", "lr": 0.001}, {"loss": math.inf, "val loss": 1.5}, {}),
    }
    with keel.start_run(name="r4", experiment="exp") as parent:
        ids["r4"] = parent.id
        keel.log_params({"model": "lgbm"})
        child = _run("r4-child", {"model": "lgbm"}, {"auc": 0.95}, {"team": "risk"}, nested=True)
    ids["r4-child"] = child
    now = now_ms()
    ids["crashed"] = _insert_running("crashed", heartbeat_ms=now - 3_600_000, start_ms=BASE_MS + 10_000)
    ids["alive"] = _insert_running("alive", heartbeat_ms=now + 3_600_000, start_ms=BASE_MS + 11_000)
    with keel.start_run(name="elsewhere", experiment="other"):
        keel.log_metric("other_metric", 1.0)
    with get_metadata_store().write() as conn:  # deterministic start times: r0 oldest
        for i, name in enumerate(["r0", "r1", "r2", "r3", "r4", "r4-child"]):
            conn.execute(sa.update(runs).where(runs.c.id == ids[name]).values(start_ms=BASE_MS + i * 1000))
    return ids


def names(df: pd.DataFrame) -> list[str]:
    return list(df["run_name"])


def search(filter: str | None = None, **kw: Any) -> pd.DataFrame:
    return keel.search_runs("exp", filter, **kw)


# -- the filter language ------------------------------------------------------

def test_and_or_parentheses(data: dict[str, str]) -> None:
    f = "metrics.auc > 0.8 and (params.model = 'lgbm' or params.model = 'xgb') and tags.team = 'risk'"
    assert set(names(search(f))) == {"r0", "r1", "r4-child"}
    # without the parentheses `and` binds tighter: (auc > 0.8 and model = lgbm) or (model = xgb and team = risk)
    f2 = "metrics.auc > 0.9 and params.model = 'lgbm' or params.model = 'rf'"
    assert set(names(search(f2))) == {"r0", "r4-child", "r2"}
    f3 = "metrics.auc > 0.9 and (params.model = 'lgbm' or params.model = 'rf')"
    assert set(names(search(f3))) == {"r0", "r4-child"}


def test_or_across_kinds_keeps_runs_missing_one_key(data: dict[str, str]) -> None:
    # r3 has no auc and no team tag; `or` must still see its val loss
    assert set(names(search("metrics.auc > 0.9 or metrics.`val loss` > 1"))) == {"r0", "r4-child", "r3"}


def test_not(data: dict[str, str]) -> None:
    assert set(names(search("not params.model = 'lgbm' and params.model != 'LGBM'"))) == {"r1", "r2"}
    assert set(names(search("not (tags.team = 'risk' or tags.team = 'growth')"))) == set()  # missing tag: unknown
    assert set(names(search("tags.team is null"))) == {"r3", "r4", "crashed", "alive"}
    assert set(names(search("tags.team is not null and not tags.team = 'risk'"))) == {"r2"}


def test_in_and_not_in(data: dict[str, str]) -> None:
    assert set(names(search("params.model in ('xgb', 'rf')"))) == {"r1", "r2"}
    assert set(names(search("params.model not in ('lgbm', 'LGBM')"))) == {"r1", "r2"}
    assert set(names(search("metrics.auc in (0.7, 0.95)"))) == {"r2", "r4-child"}
    # mixed numbers and strings: numeric match on num, text match on value
    assert set(names(search("params.lr in (0.1, 'auto')"))) == {"r0", "r2"}
    assert set(names(search("params.lr not in (0.1, 'auto')"))) == {"r1", "r3"}


def test_like_is_case_sensitive_and_ilike_is_not(data: dict[str, str]) -> None:
    assert set(names(search("params.model like 'lg%'"))) == {"r0", "r4", "r4-child"}
    assert set(names(search("params.model ilike 'lg%'"))) == {"r0", "r3", "r4", "r4-child"}
    assert set(names(search("params.model like '_gb'"))) == {"r1"}
    assert set(names(search("params.model not like 'l%'"))) == {"r1", "r2", "r3"}
    assert set(names(search("run_name like 'r4%'"))) == {"r4", "r4-child"}
    assert set(names(search("tags.note like '%d r%'"))) == {"r2"}


def test_params_compare_numerically_with_numbers_and_as_text_with_strings(data: dict[str, str]) -> None:
    assert set(names(search("params.lr > 0.01"))) == {"r0", "r1"}  # 'auto' is not a number
    assert set(names(search("params.lr <= 0.05"))) == {"r1", "r3"}
    assert set(names(search("params.n_trees = 100"))) == {"r0", "r1"}  # '100' and '100.0'
    assert set(names(search("params.n_trees = '100'"))) == {"r0"}
    assert set(names(search("params.lr = 'auto'"))) == {"r2"}
    assert set(names(search("params.lr = 1e-3"))) == {"r3"}


def test_nan_and_inf_metrics(data: dict[str, str]) -> None:
    df = search(columns=["metrics.loss"]).set_index("run_name")
    assert math.isnan(df.loc["r1", "metrics.loss"])
    assert df.loc["r3", "metrics.loss"] == math.inf
    assert df["metrics.loss"].dtype == "float64"
    assert set(names(search("metrics.loss > 1000"))) == {"r3"}
    assert set(names(search("metrics.loss < 1"))) == {"r0", "r2"}
    assert "r1" in set(names(search("metrics.loss is null")))


def test_crashed_status_is_derived_from_the_heartbeat(data: dict[str, str]) -> None:
    assert names(search("status = 'crashed'")) == ["crashed"]
    assert names(search("status = 'RUNNING'")) == ["alive"]
    assert set(names(search("status in ('crashed', 'running')"))) == {"crashed", "alive"}
    assert len(search("status = 'finished'")) == 6
    df = search().set_index("run_name")
    assert df.loc["crashed", "status"] == "crashed"
    assert df.loc["alive", "status"] == "running"


def test_attributes(data: dict[str, str]) -> None:
    assert names(search(f"run_id = '{data['r2']}'")) == ["r2"]
    assert names(search(f"parent_id = '{data['r4']}'")) == ["r4-child"]
    assert "r4-child" not in names(search("parent_id is null"))
    assert set(names(search("user = 'alice'"))) == {"crashed", "alive"}
    assert set(names(search("start_time >= '2023-11-14T22:13:24Z' and start_time < 1700000010000"))) == {"r4", "r4-child"}
    assert set(names(search("attributes.name = 'r1'"))) == {"r1"}
    assert set(names(search("end_time is null"))) == {"crashed", "alive"}
    exp_id = int(search()["experiment_id"].iloc[0])
    assert len(search(f"experiment_id = {exp_id}")) == 8


def test_backticks_and_double_quotes_name_keys_with_spaces(data: dict[str, str]) -> None:
    assert names(search("metrics.`val loss` > 1")) == ["r3"]
    assert names(search('metrics."val loss" = 1.5')) == ["r3"]


# -- order, limit, columns ----------------------------------------------------

def test_default_order_is_newest_first(data: dict[str, str]) -> None:
    assert names(search()) == ["alive", "crashed", "r4-child", "r4", "r3", "r2", "r1", "r0"]


def test_order_by_puts_missing_values_last_both_ways(data: dict[str, str]) -> None:
    desc = names(search(order_by=["metrics.auc DESC"]))
    assert desc[:4] == ["r4-child", "r0", "r1", "r2"]
    assert set(desc[4:]) == {"r3", "r4", "crashed", "alive"}
    asc = names(search(order_by=["metrics.auc"]))
    assert asc[:4] == ["r2", "r1", "r0", "r4-child"]
    # ties (no auc) broken by the next key
    assert names(search(order_by=["metrics.auc ASC", "start_time desc"]))[4:] == ["alive", "crashed", "r4", "r3"]


def test_order_by_param_is_numeric_for_numbers(data: dict[str, str]) -> None:
    order = names(search("params.lr is not null", order_by=["params.lr"]))
    assert order == ["r3", "r1", "r0", "r2"]  # 0.001 < 0.05 < 0.1, then the text 'auto'


def test_max_results_limits_after_ordering(data: dict[str, str]) -> None:
    assert names(search(order_by=["metrics.auc desc"], max_results=2)) == ["r4-child", "r0"]
    assert len(search(max_results=1)) == 1
    with pytest.raises(ValidationError, match="max_results"):
        search(max_results=0)


def test_columns_restrict_what_is_loaded(data: dict[str, str]) -> None:
    df = search(columns=["metrics.auc", "params.model"])
    assert list(df.columns) == [
        "run_id", "experiment_id", "run_name", "status", "start_time", "end_time", "user", "parent_id",
        "params.model", "metrics.auc",
    ]
    df = search(columns=["params.*", "tags.team"])
    assert [c for c in df.columns if "." in c] == ["params.lr", "params.model", "params.n_trees", "tags.team"]
    assert [c for c in search(columns=[]).columns if "." in c] == []


def test_all_columns_and_values(data: dict[str, str]) -> None:
    df = search().set_index("run_name")
    assert {c for c in df.columns if "." in c} == {
        "params.lr", "params.model", "params.n_trees", "metrics.auc", "metrics.loss", "metrics.val loss",
        "tags.team", "tags.note",
    }
    assert df.loc["r0", "params.model"] == "lgbm"
    assert df.loc["r0", "params.lr"] == "0.1"
    assert df.loc["r0", "metrics.auc"] == pytest.approx(0.91)
    assert pd.isna(df.loc["r3", "metrics.auc"])
    assert pd.isna(df.loc["r3", "tags.team"])
    assert df.loc["r4-child", "parent_id"] == data["r4"]
    assert str(df["start_time"].dt.tz) == "UTC"
    assert df.loc["r0", "start_time"] == pd.Timestamp(BASE_MS, unit="ms", tz="UTC")
    assert df.loc["r0", "end_time"] > df.loc["r0", "start_time"] - pd.Timedelta(days=3650)
    assert pd.isna(df.loc["alive", "end_time"])


# -- experiments --------------------------------------------------------------

def test_experiment_by_name_id_list_and_default(data: dict[str, str]) -> None:
    exp_id = int(search()["experiment_id"].iloc[0])
    assert len(keel.search_runs(exp_id)) == 8
    assert len(keel.search_runs(["exp", "other"])) == 9
    assert names(keel.search_runs("other")) == ["elsewhere"]
    keel.set_experiment("other")
    try:
        assert names(keel.search_runs()) == ["elsewhere"]
    finally:
        runs_module._reset_for_tests()
    with pytest.raises(NotFoundError, match="Did you mean 'exp'"):
        keel.search_runs("epx")
    with pytest.raises(NotFoundError):
        keel.search_runs(99999)


def test_default_experiment_without_runs_is_empty(store_project: Path) -> None:
    df = keel.search_runs(filter="metrics.auc > 0.5")
    assert len(df) == 0
    assert list(df.columns)[:3] == ["run_id", "experiment_id", "run_name"]


# -- errors -------------------------------------------------------------------

def test_unknown_key_points_at_it_and_suggests_the_closest(data: dict[str, str]) -> None:
    with pytest.raises(ValidationError) as info:
        search("params.model = 'lgbm' and metrics.acu > 0.8")
    err = info.value
    assert err.detail["position"] == 26
    assert "Did you mean 'metrics.auc'?" in str(err)
    assert "\n  params.model = 'lgbm' and metrics.acu > 0.8\n" + " " * 28 + "^" in str(err)
    assert err.detail["suggestion"] == "metrics.auc"


def test_key_of_another_kind_or_experiment(data: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match=re.escape("Did you mean 'metrics.auc'")):
        search("params.auc > 0.8")
    with pytest.raises(ValidationError, match="Unknown metric 'other_metric' at position 0: no run in experiment 'exp' has it"):
        search("metrics.other_metric > 0")
    assert names(keel.search_runs("other", "metrics.other_metric > 0")) == ["elsewhere"]


def test_unknown_keys_in_order_by_and_columns(data: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match=re.escape("Did you mean 'metrics.loss'")) as info:
        search(order_by=["metrics.los DESC"])
    assert info.value.detail["order_by"] == "metrics.los DESC"
    with pytest.raises(ValidationError, match=re.escape("Did you mean 'tags.team'")):
        search(columns=["tags.teem"])


def test_literal_of_the_wrong_type(data: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="is a number") as info:
        search("metrics.auc > 'high'")
    assert info.value.detail["position"] == 14
    with pytest.raises(ValidationError, match="no time zone"):
        search("start_time > '2024-01-01'")
    with pytest.raises(ValidationError, match="Did you mean 'crashed'"):
        search("status = 'crashd'")


def test_columns_restrict_what_is_fetched(data: dict[str, str]) -> None:
    statements: list[str] = []
    engine = get_metadata_store().engine

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        search("metrics.auc > 0.8", columns=["metrics.auc"])
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    long = [s for s in statements if "UNION" in s or ("FROM metrics" in s and "JOIN" not in s)]
    assert len(long) == 1, statements
    assert "FROM params" not in long[0] and "FROM tags" not in long[0]
    assert "key" in long[0].split("WHERE", 1)[1]  # restricted to the keys asked for


def test_a_large_result_keeps_order_and_values(store_project: Path) -> None:
    """1,500 matches: their ids reach the long-row query as one bound parameter, values land on the right rows."""
    exp = keel.set_experiment("many")
    store = get_metadata_store()
    n = 1500
    ids = [f"{i:032x}" for i in range(n)]
    with store.write() as conn:
        store.insert_many(conn, runs, [(rid, exp, f"r{i}", None, "finished", BASE_MS + i, BASE_MS + i + 1, BASE_MS + i + 1, "u", "h", None, None) for i, rid in enumerate(ids)])
        store.insert_many(conn, metadata_schema.metrics, [(rid, "auc", i / n, 0, BASE_MS) for i, rid in enumerate(ids)])
        store.insert_many(conn, metadata_schema.params, [(rid, "k", str(i % 7), float(i % 7)) for i, rid in enumerate(ids)])
    df = keel.search_runs("many", "metrics.auc >= 0", max_results=n, order_by=["metrics.auc"])
    assert len(df) == n
    assert list(df["run_id"]) == ids
    assert list(df["params.k"]) == [str(i % 7) for i in range(n)]
    assert df["metrics.auc"].to_numpy() == pytest.approx([i / n for i in range(n)])


# -- pages ------------------------------------------------------------------------

def _all_pages(page_token: str | None = None, **kwargs: Any) -> list[list[str]]:
    pages = []
    token = page_token
    while True:
        page = keel.search_runs(page_token=token, **kwargs)
        pages.append(list(page["run_id"]))
        token = page.attrs["next_page_token"]
        if token is None:
            return pages


def test_search_runs_pages_cover_every_run_once(project: Path) -> None:
    ids = []
    for i in range(23):
        with keel.start_run() as run:
            keel.log_metric("auc", float(i % 5))  # many equal keys: the id breaks ties
            if i % 4:
                keel.log_param("model", f"m{i % 3}")
        ids.append(run.id)
    for order in (None, ["metrics.auc DESC"], ["params.model", "metrics.auc"]):
        pages = _all_pages(max_results=5, order_by=order)
        assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
        flat = [r for p in pages for r in p]
        assert flat == list(keel.search_runs(order_by=order)["run_id"])  # the same order as one query
        assert sorted(flat) == sorted(ids)


def test_search_runs_pages_are_stable_under_concurrent_inserts(project: Path) -> None:
    first_ids = []
    for _ in range(6):
        with keel.start_run() as run:
            keel.log_metric("auc", 0.5)
        first_ids.append(run.id)
    page = keel.search_runs(max_results=3)  # newest first
    seen = list(page["run_id"])
    for _ in range(4):  # newer runs arrive between two pages
        with keel.start_run():
            keel.log_metric("auc", 0.5)
    rest = _all_pages(max_results=3, page_token=page.attrs["next_page_token"])
    seen += [r for p in rest for r in p]
    assert seen == list(reversed(first_ids))  # no repeat, no skip


def test_search_runs_rejects_a_token_of_another_query(project: Path) -> None:
    for _ in range(3):
        with keel.start_run():
            keel.log_metric("auc", 0.5)
    token = keel.search_runs(max_results=1).attrs["next_page_token"]
    assert token
    with pytest.raises(ValidationError, match="page_token"):
        keel.search_runs(max_results=1, order_by=["metrics.auc"], page_token=token)
    with pytest.raises(ValidationError, match="page_token"):
        keel.search_runs(max_results=1, page_token="not-a-token")
    assert keel.search_runs(max_results=10).attrs["next_page_token"] is None
