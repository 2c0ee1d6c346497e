"""One table fingerprint and one file/folder fingerprint, whoever asks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import keel
from keel.errors import NotFoundError
from keel.store.fingerprint import frame_fingerprint, path_fingerprint
from keel.store.sql import quote_ident, sql_string


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"a": [1, 2, 3], "b": [0.5, np.nan, 2.0], "s": ["x", None, "yz"]})


def test_every_value_name_and_order_counts() -> None:
    base = frame_fingerprint(_frame())
    changed = _frame()
    changed.loc[2, "s"] = "yy"
    assert frame_fingerprint(changed) != base
    assert frame_fingerprint(_frame().rename(columns={"a": "A"})) != base
    assert frame_fingerprint(_frame().iloc[::-1].reset_index(drop=True)) != base
    assert frame_fingerprint(_frame()[["b", "a", "s"]]) != base
    assert frame_fingerprint(_frame().astype({"a": "float64"})) != base  # int 1 and float 1.0 are other data
    # strings are hashed by their bytes and boundaries, not concatenated
    assert frame_fingerprint(pd.DataFrame({"s": ["ab", "c"]})) != frame_fingerprint(pd.DataFrame({"s": ["a", "bc"]}))


def test_how_the_data_is_held_does_not_count() -> None:
    base = frame_fingerprint(_frame())
    assert frame_fingerprint(_frame().set_axis([10, 11, 12])) == base  # the index is not content
    assert frame_fingerprint(pa.Table.from_pandas(_frame(), preserve_index=False)) == base
    assert frame_fingerprint(_frame().convert_dtypes(dtype_backend="pyarrow").astype({"a": "int64[pyarrow]"})) == base
    cat = pd.DataFrame({"c": pd.Categorical(["u", "v", "u"])})
    assert frame_fingerprint(cat) == frame_fingerprint(pd.DataFrame({"c": ["u", "v", "u"]}))
    ns = pd.DataFrame({"t": pd.to_datetime(["2024-01-01 10:00"], utc=True).astype("datetime64[ns, UTC]")})
    us = pd.DataFrame({"t": ns["t"].astype("datetime64[us, UTC]")})
    assert frame_fingerprint(ns) == frame_fingerprint(us)
    assert frame_fingerprint(pd.DataFrame({"x": [0.0, 1.0]})) == frame_fingerprint(pd.DataFrame({"x": [-0.0, 1.0]}))


def test_one_folder_fingerprint_for_datasets_and_pipeline_file_parameters(project: Path) -> None:
    from keel.pipelines.cache import content_fingerprint

    folder = project / "raw"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("one")
    (folder / "sub" / "b.txt").write_text("two")
    with keel.start_run():
        logged = keel.log_dataset(str(folder), name="raw")
    assert logged == content_fingerprint(folder) == path_fingerprint(folder)
    (folder / "sub" / "b.txt").write_text("three")
    assert path_fingerprint(folder) != logged
    with pytest.raises(NotFoundError):
        path_fingerprint(project / "missing")


def test_quoting() -> None:
    import duckdb

    con = duckdb.connect()
    name, text = 'we"ird col', "it's"
    rel = con.sql(f"SELECT {sql_string(text)} AS {quote_ident(name)}")
    assert rel.fetchall() == [(text,)] and rel.columns == [name]
