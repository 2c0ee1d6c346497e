"""Flavors: how a model object is recognised, saved natively and asked to predict.

Every flavor is stored as ``model.pkl`` (what keel loads, after verifying its
sha256); LightGBM and XGBoost also get their native format (``model.txt`` /
``model.json``) so that other tools can read the model without keel.
"""

from __future__ import annotations

import functools
import pickle
import pickletools
from pathlib import Path
from typing import Any

from keel.errors import ValidationError

FLAVORS = ("sklearn", "lightgbm", "xgboost", "onnx", "pytorch", "mlflow", "python")
_FLAVOR_PACKAGE = {"sklearn": "scikit-learn", "lightgbm": "lightgbm", "xgboost": "xgboost", "onnx": "onnxruntime", "pytorch": "torch"}


def _modules_of(obj: Any) -> set[str]:
    return {c.__module__.split(".")[0] for c in type(obj).__mro__ if c is not object}


def class_modules(model: Any) -> set[str]:
    """Top-level modules of the model's classes (XGBRegressor needs scikit-learn too)."""
    return _modules_of(model) - {"builtins"}


def detect(model: Any) -> str:
    """The flavor of ``model``; a ValidationError when keel cannot package it."""
    mods = _modules_of(model)
    if type(model).__name__ == "OnnxModel" and type(model).__module__ == "keel.models._onnx":
        return "onnx"
    if type(model).__name__ == "TorchModel" and type(model).__module__ == "keel.models._torch":
        return "pytorch"
    if type(model).__name__ == "MlflowModel" and type(model).__module__ == "keel.models._mlflow":
        return "mlflow"
    if "lightgbm" in mods:
        return "lightgbm"
    if "xgboost" in mods:
        return "xgboost"
    if "sklearn" in mods:
        return "sklearn"
    if callable(getattr(model, "predict", None)):
        return "python"
    raise ValidationError(
        f"Cannot package a {type(model).__module__}.{type(model).__qualname__}: it has no predict method.",
        hint="Log a scikit-learn, LightGBM or XGBoost model, or a Python object with predict(DataFrame).",
    )


def save_native(model: Any, flavor: str, folder: Path) -> list[str]:
    """Write the flavor's native file(s) next to model.pkl; returns their names."""
    if flavor == "lightgbm":
        booster = getattr(model, "booster_", model)
        if hasattr(booster, "save_model"):
            booster.save_model(str(folder / "model.txt"))
            return ["model.txt"]
    if flavor == "xgboost" and hasattr(model, "save_model"):
        model.save_model(str(folder / "model.json"))
        return ["model.json"]
    if flavor == "onnx":
        (folder / "model.onnx").write_bytes(model.onnx_bytes)
        return ["model.onnx"]
    if flavor == "pytorch":
        (folder / "model.pt").write_bytes(model.module_bytes)
        return ["model.pt"]
    return []


def pickled_modules(data: bytes) -> set[str]:
    """Top-level modules a pickle refers to (to list the packages a model needs)."""
    mods: set[str] = set()
    strings: list[str] = []
    for op, arg, _pos in pickletools.genops(data):
        if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
            mods.add(arg.split(" ")[0].split(".")[0])
        elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
            mods.add(strings[-2].split(".")[0])
        if isinstance(arg, str):
            strings.append(arg)
            del strings[:-2]
    return mods


@functools.lru_cache(maxsize=1)
def _distributions() -> dict[str, list[str]]:
    from importlib.metadata import packages_distributions

    return dict(packages_distributions())


def packages_for(flavor: str, modules: set[str]) -> dict[str, str]:
    """{distribution: exact version} of the packages the pickled model refers to."""
    from importlib.metadata import PackageNotFoundError, version

    dist_of = _distributions()
    wanted: set[str] = set()
    if flavor in _FLAVOR_PACKAGE:
        wanted.add(_FLAVOR_PACKAGE[flavor])
    for mod in modules:
        if mod in ("builtins", "copyreg", "__main__", "_codecs", "collections", "functools"):
            continue
        for dist in dist_of.get(mod, []):
            wanted.add(dist)
    out: dict[str, str] = {}
    for dist in sorted(wanted, key=str.lower):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def dumps(model: Any) -> bytes:
    try:
        return pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise ValidationError(
            f"Cannot pickle the {type(model).__qualname__} model: {exc}.",
            hint="Define the model class at module level in an importable module (not inside a function or a notebook cell).",
        ) from None


def _lightgbm_matrix(model: Any, flavor: str, frame: Any) -> Any | None:
    """A float matrix for the booster, when the sklearn wrapper's pandas handling can be skipped.

    The signature check has already put the columns in order and checked their
    types; for all-numeric inputs the wrapper only converts to a matrix, at a cost
    of ~10x a one-row prediction.
    """
    if flavor != "lightgbm" or type(model).__name__ not in ("LGBMClassifier", "LGBMRegressor"):
        return None
    booster = getattr(model, "_Booster", None)
    if booster is None or getattr(booster, "pandas_categorical", None) or callable(getattr(model, "objective", None)):
        return None
    if not all(getattr(t, "kind", "O") in "biuf" for t in frame.dtypes):
        return None
    return frame.to_numpy(dtype="float64")


def _lightgbm_proba(model: Any, matrix: Any) -> Any:
    import numpy as np

    out = np.asarray(model._Booster.predict(matrix), dtype="float64")
    return np.column_stack([1.0 - out, out]) if out.ndim == 1 else out


def predict(model: Any, flavor: str, frame: Any) -> Any:
    import numpy as np

    matrix = _lightgbm_matrix(model, flavor, frame)
    if matrix is not None:
        if type(model).__name__ == "LGBMRegressor":
            return np.asarray(model._Booster.predict(matrix))
        return np.asarray(model.classes_)[_lightgbm_proba(model, matrix).argmax(axis=1)]
    if flavor == "xgboost" and type(model).__name__ == "Booster":
        import xgboost as xgb

        return np.asarray(model.predict(xgb.DMatrix(frame)))
    return np.asarray(model.predict(frame))


def predict_proba(model: Any, flavor: str, frame: Any) -> Any | None:
    """Class probabilities (n, k), or None when the model has no predict_proba."""
    import numpy as np

    fn = getattr(model, "predict_proba", None)
    if fn is None:
        return None
    matrix = _lightgbm_matrix(model, flavor, frame)
    if matrix is not None and type(model).__name__ == "LGBMClassifier":
        return _lightgbm_proba(model, matrix)
    out = np.asarray(fn(frame), dtype="float64")
    return out.reshape(-1, 1) if out.ndim == 1 else out


def feature_names(model: Any) -> list[str] | None:
    for attr in ("feature_names_in_", "feature_name_", "feature_names", "feature_name"):  # last: lightgbm.Booster
        value = getattr(model, attr, None)
        if callable(value):
            try:
                value = value()
            except Exception:
                value = None
        if value is not None and len(value):
            return [str(v) for v in value]
    return None
