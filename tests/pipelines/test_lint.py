"""The graph is checked before anything runs; each problem names the step's file and line."""

from __future__ import annotations

import inspect

import pytest

import keel
from keel.errors import ValidationError
from keel.pipelines.graph import Handle


def line_of(obj) -> str:
    fn = getattr(obj, "fn", obj)
    return f"{inspect.getsourcefile(fn)}:{inspect.getsourcelines(fn)[1]}"


def test_duplicate_names_cite_both_definitions(write_module) -> None:
    mod = write_module("dup_mod", """
    import keel

    @keel.step(name="prep")
    def prep_a(n: int) -> int:
        return n

    @keel.step(name="prep")
    def prep_b(n: int) -> int:
        return n

    @keel.pipeline
    def p():
        return prep_b(prep_a(1))
    """)
    with pytest.raises(ValidationError) as err:
        mod.p.lint()
    msg = str(err.value)
    assert "Duplicate step name 'prep'" in msg
    assert line_of(mod.prep_a) in msg and line_of(mod.prep_b) in msg


def test_missing_and_unknown_inputs_cite_the_call_and_the_step(write_module) -> None:
    mod = write_module("missing_mod", """
    import keel

    @keel.step
    def train(df: list, n_estimators: int = 10) -> int:
        return 1

    @keel.pipeline
    def p():
        return train(n_trees=3)
    """)
    with pytest.raises(ValidationError) as err:
        mod.p.run()
    msg = str(err.value)
    assert line_of(mod.train) in msg
    assert "missing_mod.py:10" in msg  # the call site
    assert "n_trees" in msg or "missing a required argument" in msg
    from keel.pipelines.runner import list_runs

    assert list_runs() == []


def test_unserializable_outputs_and_inputs_are_refused(write_module) -> None:
    mod = write_module("gen_mod", """
    import threading
    from collections.abc import Iterator
    import keel

    @keel.step
    def stream(n: int):
        yield from range(n)

    @keel.step
    def rows(n: int) -> Iterator[int]:
        return iter(range(n))

    @keel.step
    def use(x, lock) -> int:
        return 1

    @keel.pipeline
    def p():
        return use(rows(stream(3)), threading.Lock())
    """)
    with pytest.raises(ValidationError) as err:
        mod.p.lint()
    msg = str(err.value)
    assert f"Step stream ({line_of(mod.stream)}) is a generator" in msg
    assert f"Step rows ({line_of(mod.rows)}) returns a Iterator" in msg
    assert "input lock cannot be fingerprinted" in msg
    assert "3 problems" in msg


def test_cycles_are_refused(write_module) -> None:
    mod = write_module("cycle_mod", """
    import keel

    @keel.step
    def a(x) -> int:
        return 1

    @keel.step
    def b(x) -> int:
        return 1

    @keel.pipeline
    def p():
        return b(a(0))
    """)
    g = mod.p.graph()
    g.nodes["a"].args = (Handle("b"),)  # wire a cycle by hand: data flow alone cannot make one
    with pytest.raises(ValidationError, match=r"cycle: a -> b -> a|cycle: b -> a -> b") as err:
        g.order()
    assert line_of(mod.a) in str(err.value) or line_of(mod.b) in str(err.value)


def test_lazy_outputs_cannot_be_used_as_values_while_wiring(write_module) -> None:
    mod = write_module("lazy_mod", """
    import keel

    @keel.step
    def n() -> int:
        return 1

    @keel.pipeline
    def p():
        x = n()
        if x:
            return x
    """)
    with pytest.raises(ValidationError, match="not computed yet"):
        mod.p.graph()


def test_process_engine_needs_importable_steps(project) -> None:
    @keel.step
    def local_step() -> int:
        return 1

    @keel.pipeline
    def p():
        return local_step()

    with pytest.raises(ValidationError, match="defined inside a function; the process engine"):
        p.run(engine="process")
    assert p.run().output == 1


def test_unknown_param_wrong_type_and_missing_module_fail_before_running(flow) -> None:
    from keel.pipelines.pipeline import load_pipeline

    with pytest.raises(ValidationError, match="has no parameter 'm'"):
        flow.flow.run({"m": 3})
    with pytest.raises(ValidationError, match="parameter 'n' = 'x' is not a valid int"):
        flow.flow.run({"n": "x"})
    assert flow.flow.bind({"n": "4"}, coerce=True) == {"n": 4}
    with pytest.raises(keel.KeelError, match="No module named 'nope_mod'"):
        load_pipeline("nope_mod:flow")
    with pytest.raises(keel.KeelError, match=r"has no pipeline 'flwo'\. Did you mean 'flow'"):
        load_pipeline("flowmod:flwo")


def test_missing_file_parameter_fails_before_running(write_module) -> None:
    mod = write_module("file_param_mod", """
    import keel
    from keel.pipelines import FileRef

    @keel.step
    def size(path: FileRef) -> int:
        return 1

    @keel.pipeline
    def p(data: FileRef):
        return size(data)
    """)
    from keel.pipelines.runner import list_runs

    with pytest.raises(keel.KeelError, match=r"parameter 'data': 'nope\.csv' does not exist"):
        mod.p.run({"data": "nope.csv"})
    assert list_runs() == []
