"""Cache keys: each component (code, constants, params, inputs, file content, dependency versions) misses when it changes."""

from __future__ import annotations

import functools
import importlib.metadata
from pathlib import Path

import pytest
import sqlalchemy as sa

from keel.pipelines import FileRef, cache
from keel.store.metadata import get_metadata_store
from keel.store.schema import artifacts
from keel.store.schema.pipelines import pipeline_cache


def hits(result) -> dict[str, bool]:
    return {name: s.cache_hit for name, s in result.steps.items()}


def test_second_run_comes_from_cache_with_time_saved(flow) -> None:
    first = flow.flow.run({"n": 5})
    assert first.output == 70 and first.cached == 0
    second = flow.flow.run({"n": 5})
    assert second.output == 70
    assert hits(second) == {"load": True, "double": True, "total": True}
    assert second.steps["total"].source_run_id == first.steps["total"].run_id
    assert second.time_saved_s == pytest.approx(sum(s.duration_s for s in first.steps.values()), abs=0.01)
    assert "3 of 3 steps from cache" in second.summary()


def test_param_change_misses_and_downstream_follows_content(flow) -> None:
    flow.flow.run({"n": 5})
    other = flow.flow.run({"n": 6})
    assert hits(other) == {"load": False, "double": False, "total": False}
    assert other.output == sum(range(6)) * 7
    back = flow.flow.run({"n": 5})
    assert hits(back) == {"load": True, "double": True, "total": True}


def test_code_change_misses_only_changed_step_and_its_dependents(write_module, flow) -> None:
    from .conftest import FLOW

    flow.flow.run({"n": 4})
    changed = write_module("flowmod", FLOW.replace("x * 2 for x in xs", "x * 2 + 0 for x in xs"))
    r = changed.flow.run({"n": 4})
    # double's code changed; its output is the same content, so total is a hit again
    assert hits(r) == {"load": True, "double": False, "total": True}
    changed = write_module("flowmod", FLOW.replace("x * 2 for x in xs", "x * 3 for x in xs"))
    r = changed.flow.run({"n": 4})
    assert hits(r) == {"load": True, "double": False, "total": False}
    assert r.output == 6 + 18 * 3


def test_change_in_an_imported_project_module_misses(write_module) -> None:
    write_module("helpers_mod", "def f(x):\n    return x + 1\n")
    src = """
    import keel
    import helpers_mod
    from helpers_mod import f

    @keel.step
    def a(n: int) -> int:
        return helpers_mod.f(n)

    @keel.step
    def b(n: int) -> int:
        return f(n)

    @keel.pipeline
    def p(n: int = 1):
        return [a(n), b(n)]
    """
    mod = write_module("uses_helpers", src)
    assert mod.p.run().output == [2, 2]
    write_module("helpers_mod", "def f(x):\n    return x + 100\n")
    mod = write_module("uses_helpers", src)
    r = mod.p.run()
    assert hits(r) == {"a": False, "b": False}
    assert r.output == [101, 101]


def test_file_content_change_with_same_path_misses(write_module, project: Path) -> None:
    data = project / "data.csv"
    data.write_text("a\n1\n2\n")
    mod = write_module("files_flow", """
    from pathlib import Path
    import keel
    from keel.pipelines import FileRef

    @keel.step
    def rows(path: FileRef) -> int:
        return len(Path(path).read_text().splitlines()) - 1

    @keel.step
    def rows_by_path(path: Path) -> int:
        return len(Path(path).read_text().splitlines()) - 1

    @keel.pipeline
    def p(data: FileRef, raw: str = "data.csv"):
        return [rows(data), rows_by_path(raw)]
    """)
    assert mod.p.run({"data": FileRef(data)}).output == [2, 2]
    assert hits(mod.p.run({"data": FileRef(data)})) == {"rows": True, "rows_by_path": True}
    data.write_text("a\n1\n2\n3\n")
    r = mod.p.run({"data": FileRef(data)})
    assert hits(r) == {"rows": False, "rows_by_path": False}
    assert r.output == [3, 3]


def test_version_of_a_used_distribution_misses_and_an_unrelated_install_does_not(write_module, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = write_module("deps_flow", """
    import keel

    @keel.step
    def plain(n: int) -> int:
        return n + 1

    @keel.step
    def fit(n: int) -> int:
        from sklearn.linear_model import LinearRegression

        return n + len(type(LinearRegression()).__name__)

    @keel.pipeline
    def p(n: int = 1):
        return [plain(n), fit(n)]
    """)
    mod.p.run()
    real_closure = cache._closure.__wrapped__
    real_index = importlib.metadata.packages_distributions

    def index() -> dict[str, list[str]]:  # a package that nothing here imports was installed
        return {**real_index(), "pytest_newplugin": ["pytest-newplugin"]}

    monkeypatch.setattr(importlib.metadata, "packages_distributions", index)
    monkeypatch.setattr(cache, "_dist_index", None)  # read the environment again
    assert hits(mod.p.run()) == {"plain": True, "fit": True}

    def bumped(dist: str) -> tuple[tuple[str, str], ...]:  # scipy (required by scikit-learn) was upgraded
        return tuple((n, "999.0" if n == "scipy" else v) for n, v in real_closure(dist))

    monkeypatch.setattr(cache, "_closure", functools.lru_cache(bumped))
    assert hits(mod.p.run()) == {"plain": True, "fit": False}


def test_dependency_versions_follow_requirements_transitively() -> None:
    deps = cache.dependency_versions({"sklearn"})
    assert {"scikit-learn", "numpy", "scipy", "joblib"} <= set(deps)
    assert "pytest" not in deps
    assert deps["numpy"] == importlib.metadata.version("numpy")
    key = cache.code_key(_uses_json_and_numpy, Path(__file__).parent)
    assert {"json", "numpy"} <= key.modules
    assert "numpy" in cache.dependency_versions(key.modules)


def _uses_json_and_numpy() -> None:
    import json

    import numpy

    json.dumps(numpy.zeros(1).tolist())


@pytest.mark.parametrize(("before", "after"), [
    ("LABELS = ['a', 'b']", "LABELS = ['a', 'c']"),
    ("LABELS = {'a': 1}", "LABELS = {'a': 2}"),
    ("LABELS = {'a', 'b'}", "LABELS = {'a', 'c'}"),
    ("LABELS = Cfg(k=1)", "LABELS = Cfg(k=2)"),
    ("LABELS = [Cfg(k=1)]", "LABELS = [Cfg(k=2)]"),
])
def test_change_of_a_module_level_constant_that_is_not_a_primitive_misses(write_module, before: str, after: str) -> None:
    src = """
    from dataclasses import dataclass
    import keel

    @dataclass(frozen=True)
    class Cfg:
        k: int

    {CONST}

    @keel.step
    def use(n: int) -> str:
        return repr(LABELS) + str(n)

    @keel.pipeline
    def p(n: int = 1):
        return use(n)
    """
    mod = write_module("const_flow", src.replace("{CONST}", before))
    first = mod.p.run()
    assert hits(mod.p.run()) == {"use": True}  # no false miss: the same constant keeps its key
    mod = write_module("const_flow", src.replace("{CONST}", after))
    r = mod.p.run()
    assert hits(r) == {"use": False}
    assert r.output != first.output


def test_change_of_a_helper_reached_through_a_class_method_misses(write_module) -> None:
    write_module("cls_helpers", "def scale(x):\n    return x * 2\n")
    src = """
    import keel
    from cls_helpers import scale

    class Model:
        def fit(self, n):
            return scale(n)

        @staticmethod
        def make():
            return Model()

    @keel.step
    def train(n: int) -> int:
        return Model.make().fit(n)

    @keel.pipeline
    def p(n: int = 3):
        return train(n)
    """
    mod = write_module("cls_flow", src)
    assert mod.p.run().output == 6
    assert hits(mod.p.run()) == {"train": True}
    write_module("cls_helpers", "def scale(x):\n    return x * 3\n")
    mod = write_module("cls_flow", src)
    r = mod.p.run()
    assert hits(r) == {"train": False}
    assert r.output == 9


def test_unchanged_code_and_constants_keep_the_key_in_a_new_process(write_module, python) -> None:
    mod = write_module("stable_flow", """
    import keel

    TABLE = {"b": [1, 2], "a": {3, 4}}

    @keel.step
    def use(n: int) -> int:
        return n + len(TABLE)

    @keel.pipeline
    def p(n: int = 1):
        return use(n)
    """)
    mod.p.run()
    out = python("import stable_flow; print(stable_flow.p.run().cached)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "1"  # set order differs per process (hash seed); the key does not


def test_refresh_expiry_and_opt_out(write_module, monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.pipelines import runner
    from keel.store.metadata import now_ms

    skew = [0]  # the cache's clock, moved on by hand: a loaded machine must not expire entries early
    monkeypatch.setattr(cache, "now_ms", lambda: now_ms() + skew[0])
    monkeypatch.setattr(runner, "now_ms", lambda: now_ms() + skew[0])
    mod = write_module("opts_flow", """
    import keel
    calls = {"n": 0}

    @keel.step(cache=False)
    def always(n: int) -> int:
        return n

    @keel.step(expire=60)
    def short(n: int) -> int:
        return n + 1

    @keel.pipeline
    def p(n: int = 1):
        return short(always(n))
    """)
    mod.p.run()
    r = mod.p.run()
    assert hits(r) == {"always": False, "short": True}  # the uncached step's output is unchanged content
    assert hits(mod.p.run(refresh=True)) == {"always": False, "short": False}
    skew[0] = 61_000
    assert hits(mod.p.run()) == {"always": False, "short": False}
    assert hits(mod.p.run(refresh=["short"])) == {"always": False, "short": False}
    with pytest.raises(Exception, match=r"no step 'shrt' to refresh\. Did you mean 'short'"):
        mod.p.run(refresh=["shrt"])


def test_outputs_are_blobs_owned_by_cache_and_survive_gc(flow) -> None:
    from keel.store.blobs import get_artifact_store
    from keel.store.gc import collect

    flow.flow.run({"n": 3})
    store = get_metadata_store()
    with store.read() as conn:
        keys = set(conn.execute(sa.select(pipeline_cache.c.key)).scalars())
        owned = {r.owner_id: r.digest for r in conn.execute(sa.select(artifacts).where(artifacts.c.owner_kind == "cache"))}
    assert len(keys) == 3 and set(owned) == keys
    report = collect(store, get_artifact_store(), grace_seconds=0)
    assert not set(owned.values()) & set(report.deleted)
    assert flow.flow.run({"n": 3}).cached == 3


def test_save_keeps_the_first_entry(project: Path) -> None:
    store = get_metadata_store()
    from keel.store.blobs import get_artifact_store

    d1, _ = get_artifact_store().put_bytes(b"one")
    d2, _ = get_artifact_store().put_bytes(b"two")
    e1 = cache.Entry("k" * 64, "s", d1, "json", 3, None, 5, 1, None)
    e2 = cache.Entry("k" * 64, "s", d2, "json", 3, None, 5, 2, None)
    assert cache.save(store, e1) == e1
    assert cache.save(store, e2).digest == d1
    assert cache.lookup(store, "k" * 64).digest == d1  # type: ignore[union-attr]
    assert cache.save(store, e2, replace=True).digest == d2


def test_canonical_params_are_order_independent_and_typed() -> None:
    assert cache.canonical({"b": 1, "a": 2}) == cache.canonical({"a": 2, "b": 1})
    assert cache.canonical([1, 2]) != cache.canonical((1, 2))
    assert cache.step_key(code="c", params={"x": 1}, inputs={}, options={}, deps={"numpy": "2.0"}, smoke=False) != cache.step_key(
        code="c", params={"x": "1"}, inputs={}, options={}, deps={"numpy": "2.0"}, smoke=False
    )


def test_cache_and_first_writer_wins_on_postgres(pg_project: Path, write_module) -> None:
    from .conftest import FLOW

    mod = write_module("flowmod_pg", FLOW)
    first = mod.flow.run({"n": 5})
    assert first.output == 70
    assert hits(mod.flow.run({"n": 5})) == {"load": True, "double": True, "total": True}
    store = get_metadata_store()
    assert store.dialect == "postgresql"
    entry = cache.lookup(store, first.steps["load"].key)  # type: ignore[arg-type]
    assert entry is not None
    loser = cache.Entry(entry.key, "load", "0" * 64, "json", 1, None, 1, 1, None)
    assert cache.save(store, loser).digest == entry.digest
    from keel.pipelines.runner import list_runs, run_steps

    assert [r["cached"] for r in list_runs()] == [3, 0]
    assert len(run_steps(first.run_id)[1]) == 3
