"""Definitions: validation at definition time and loading the project's features module."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from keel.errors import ConfigError, NotFoundError, ValidationError
from keel.features import Entity, FeatureService, FeatureView, Field, Float64, Int64, Source
from keel.features.loader import Definitions, load_definitions


def _view(**kw: object) -> FeatureView:
    args: dict[str, object] = {
        "entities": [Entity("user", join_keys=["user_id"])],
        "source": Source("s", path="s.parquet"),
        "schema": [Field("x", Float64)],
    }
    args.update(kw)
    return FeatureView("v", **args)  # type: ignore[arg-type]


def test_bad_definitions_name_the_object_and_the_fix() -> None:
    with pytest.raises(ValidationError, match="Entity name '1bad' is not valid"):
        Entity("1bad")
    with pytest.raises(ValidationError, match=r"unknown type 'float'.*Did you mean 'float64'"):
        _view(schema=[Field("x", "float")])
    with pytest.raises(ValidationError, match="empty schema"):
        _view(schema=[])
    with pytest.raises(ValidationError, match="ttl"):
        _view(ttl=timedelta(0))
    with pytest.raises(ValidationError, match="'user_id' is a join key or timestamp column"):
        _view(schema=[Field("user_id", Int64)])
    with pytest.raises(ValidationError, match="lists feature 'x' twice"):
        _view(schema=[Field("x", Float64), Field("x", Float64)])
    with pytest.raises(ValidationError, match="exactly one of path=, query= or df="):
        Source("s")
    with pytest.raises(ValidationError, match="no connection"):
        Source("s", query="SELECT 1")
    with pytest.raises(ValidationError, match=r"no feature 'y'. Its features are: x"):
        _view()[["y"]]


def test_spec_hash_covers_schema_and_transformation() -> None:
    a, b = _view(), _view(transformation="SELECT * FROM source")
    c = _view(schema=[Field("x", Int64)])
    assert len({a.hash, b.hash, c.hash}) == 3
    assert _view().hash == a.hash


def test_services_must_use_top_level_views() -> None:
    view = _view()
    svc = FeatureService("svc", features=[view])
    with pytest.raises(ValidationError, match="does not define at top level"):
        Definitions([svc])
    defs = Definitions([view, svc])
    assert set(defs.views) == {"v"} and set(defs.sources) == {"s"} and set(defs.entities) == {"user"}
    with pytest.raises(NotFoundError, match="Did you mean 'svc'"):
        defs.select("svd")


def test_two_objects_with_one_name_are_rejected() -> None:
    with pytest.raises(ValidationError, match="Two different feature views are named 'v'"):
        Definitions([_view(), _view(schema=[Field("z", Float64)])])


def test_loading_the_features_module(project: Path) -> None:
    with pytest.raises(NotFoundError, match=r"features.py does not exist"):
        load_definitions()
    (project / "features.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ConfigError, match="RuntimeError: boom"):
        load_definitions()
    (project / "features.py").write_text(
        "from keel.features import Entity, Field, FeatureView, Float64, Source\n"
        "user = Entity('user', join_keys=['user_id'])\n"
        "v = FeatureView('v', entities=[user], source=Source('s', path='s.parquet'), schema=[Field('x', Float64)])\n"
    )
    defs = load_definitions()
    assert list(defs.views) == ["v"] and load_definitions() is defs
