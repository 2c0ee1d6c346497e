"""``keel.log_model``: package a trained model with the active run.

The package is a folder of artifacts (default name ``model``)::

    model/model.pkl               the pickled model (loaded after its sha256 is verified)
    model/model.txt|model.json    LightGBM / XGBoost native format
    model/input_example.parquet   the input example, for smoke tests and docs
    model/keel-model.json         flavor, python, packages, signature, feature names, class,
                                  feature service (+ version), training-set fingerprint
    model/MLmodel                 the same model described for mlflow.pyfunc.load_model

:func:`write_package` writes that folder anywhere; ``log_model`` stores it with
the run, and pipelines store step outputs that are models with it.
"""

from __future__ import annotations

import json
import platform
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keel.errors import ValidationError
from keel.models import flavors
from keel.models.signature import ColSpec, Signature, as_frame, describe_output, infer_signature

META_FILE = "keel-model.json"
PICKLE_FILE = "model.pkl"
EXAMPLE_FILE = "input_example.parquet"


@dataclass
class ModelInfo:
    """What :func:`log_model` stored."""

    run_id: str
    name: str
    flavor: str
    signature: Signature
    meta: dict[str, Any]

    @property
    def uri(self) -> str:
        return f"runs:/{self.run_id}/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "name": self.name, "uri": self.uri, "flavor": self.flavor, "meta": self.meta}


def accepts_nan(model: Any) -> bool:
    """Whether the model takes NaN inputs itself (LightGBM, XGBoost, sklearn estimators tagged allow_nan).

    For a scikit-learn Pipeline the last step decides: earlier steps pass numbers through.
    """
    est = model
    steps = getattr(est, "steps", None)
    if isinstance(steps, list) and steps:
        est = steps[-1][1]
    module = type(est).__module__
    if module.startswith(("lightgbm", "xgboost")):
        return True
    tags = getattr(est, "__sklearn_tags__", None)
    if tags is not None:
        try:
            return bool(tags().input_tags.allow_nan)
        except Exception:
            return False
    return False


def _signature(model: Any, signature: Any, example: Any, run_id: str) -> Signature:
    if isinstance(signature, Signature):
        return signature
    if isinstance(signature, dict):
        return Signature.from_dict(signature)
    if signature is not None:
        return infer_signature(signature, allow_nan=accepts_nan(model))  # training data given as the signature source
    if example is not None:
        return infer_signature(example, allow_nan=accepts_nan(model))
    graph = getattr(model, "tensor_signature", None)  # a graph that declares its input tensors (ONNX)
    sig = graph() if callable(graph) else None
    if sig is not None:
        return sig
    names = flavors.feature_names(model)
    if names:
        return Signature([ColSpec(n, "any", True) for n in names])
    raise ValidationError(
        f"Cannot infer a signature for the model of run {run_id}: no input_example and the model records no feature names.",
        hint="Pass input_example=X.head(5) (or signature=X_train) to keel.log_model.",
    )


def _training_dataset(run_id: str) -> dict[str, Any] | None:
    from keel.tracking.query import get_run

    found = [d for d in get_run(run_id).datasets if d["context"] == "training"]
    with_service = [d for d in found if (d.get("extra") or {}).get("feature_service")]
    chosen = with_service or found
    return chosen[0] if chosen else None


def _lineage(run_id: str, feature_service: Any = None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(the run's training dataset, the package's lineage fields: training fingerprint, feature service)."""
    training = _training_dataset(run_id)
    return training, {
        "training_fingerprint": None if training is None else training["fingerprint"],
        **_feature_service(feature_service, training),
    }


def _feature_service(feature_service: Any, training: dict[str, Any] | None) -> dict[str, Any]:
    extra = (training or {}).get("extra") or {}
    name = getattr(feature_service, "name", feature_service) or extra.get("feature_service")
    out: dict[str, Any] = {"feature_service": name, "feature_service_version": None, "definitions_version": extra.get("definitions_version")}
    if name is None:
        return out
    if extra.get("feature_service") == name:
        out["feature_service_version"] = extra.get("feature_service_version")
    else:
        try:
            from keel.features.registry import get_object

            out["feature_service_version"] = get_object(str(name), kind="feature_service")["version"]
        except Exception:  # the service was never applied: keep its name only
            out["feature_service_version"] = None
    return out


def prepare(model: Any, signature: Any, input_example: Any, run_id: str, *, what: str = "model") -> tuple[str, Signature, Any]:
    """(flavor, signature, example frame) for packaging ``model``, checked: the model predicts on the example."""
    flavor = flavors.detect(model)
    tensor = getattr(model, "frame_of_tensor", None)  # neural-network flavors take an example tensor [rows, features]
    if input_example is not None and callable(tensor):
        input_example = tensor(input_example)
    example = None if input_example is None else as_frame(input_example)
    sig = _signature(model, signature, example, run_id)
    if example is not None:
        checked = sig.check(example, what=f"{what} (input_example)")
        try:
            output = flavors.predict(model, flavor, checked)
        except Exception as exc:
            raise ValidationError(
                f"The model cannot predict on its input_example: {type(exc).__name__}: {exc}.",
                hint="Pass an example with the columns and types the model was trained on.",
            ) from None
        sig.outputs = sig.outputs or describe_output(output)
    return flavor, sig, example


def write_package(
    model: Any,
    folder: Path,
    *,
    flavor: str | None = None,
    signature: Signature | None = None,
    example: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``model`` as a package into ``folder`` (created); returns the meta written to keel-model.json.

    The folder gets ``model.pkl``, the flavor's native file(s), the input example
    (a DataFrame, when given) and ``keel-model.json``: flavor, class, python,
    packages, signature, feature names, has_predict_proba, plus ``extra``.
    Without a ``signature`` the model's own feature names are used (types
    unknown); a model that records none gets no signature. The same model
    always gives the same bytes, so a pipeline can store the package by content.
    """
    flavor = flavor or flavors.detect(model)
    blob = flavors.dumps(model)
    if signature is None:
        names = flavors.feature_names(model)
        signature = Signature([ColSpec(n, "any", True) for n in names]) if names else None
    meta: dict[str, Any] = {
        "format": 1,
        "flavor": flavor,
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "python": platform.python_version(),
        "packages": flavors.packages_for(flavor, flavors.pickled_modules(blob) | flavors.class_modules(model)),
        "signature": None if signature is None else signature.to_dict(),
        "feature_names": [] if signature is None else signature.names,
        "has_predict_proba": callable(getattr(model, "predict_proba", None)),
        "input_example": EXAMPLE_FILE if example is not None else None,
        **(extra or {}),
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PICKLE_FILE).write_bytes(blob)
    meta["native"] = flavors.save_native(model, flavor, folder)
    if example is not None:
        example.to_parquet(folder / EXAMPLE_FILE, index=False)
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    if flavor != "mlflow":  # so that mlflow.pyfunc.load_model opens the package too
        from keel.models._mlflow import MLMODEL, mlmodel_text

        (folder / MLMODEL).write_text(mlmodel_text(meta))
    return meta


def log_model(
    model: Any,
    name: str = "model",
    signature: Any = None,
    input_example: Any = None,
    feature_service: Any = None,
) -> ModelInfo:
    """Package ``model`` with the active run (one is started if none is active).

    ``signature`` is a :class:`Signature`, its dict form, or a DataFrame to infer
    it from (the training data); by default it is inferred from ``input_example``.
    ``feature_service`` (a name or FeatureService) defaults to the one recorded
    with the run's training set.
    """
    from keel.store.blobs import check_artifact_path
    from keel.tracking.artifacts import put_path
    from keel.tracking.runs import _require_run

    name = check_artifact_path(name)
    run = _require_run()
    flavor, sig, example = prepare(model, signature, input_example, run.id, what=f"model '{name}'")
    training, extra = _lineage(run.id, feature_service)
    if extra["feature_service"] and training is not None:
        trained_on = ((training.get("extra") or {}).get("features")) or []
        unknown = [c for c in sig.names if trained_on and c not in trained_on]
        if unknown:
            raise ValidationError(
                f"Model input column '{unknown[0]}' is not a feature of service '{extra['feature_service']}' "
                f"(features: {', '.join(trained_on[:8])}).",
                hint="Train on the columns of the feature service, or pass the right feature_service=.",
            )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pkg"
        meta = write_package(model, folder, flavor=flavor, signature=sig, example=example, extra=extra)
        put_path(run, folder, name)  # uploaded, streamed, when the run is on a keel server
    return ModelInfo(run.id, name, flavor, sig, meta)


def write_autologged(model: Any, folder: Path, training_data: Any, run_id: str) -> dict[str, Any]:
    """The package of an autologged fit: the same writer and metadata as :func:`log_model`.

    The signature (with types) comes from the training DataFrame and its first
    rows are the input example; a fit on a bare array gets the model's own
    feature names (types unknown) and no example.
    """
    import pandas as pd

    example = None
    if isinstance(training_data, pd.DataFrame) and len(training_data.columns):
        names = flavors.feature_names(model)
        if names is None or [str(c) for c in training_data.columns] == names:
            example = training_data.head(5)
    extra = _lineage(run_id)[1]
    if example is not None and callable(getattr(model, "predict", None)):
        flavor, sig, example = prepare(model, training_data, example, run_id, what="autologged model")
        return write_package(model, folder, flavor=flavor, signature=sig, example=example, extra=extra)
    if example is not None:  # a transformer: its inputs are known, there is no prediction to describe
        sig = infer_signature(training_data, allow_nan=accepts_nan(model))
        return write_package(model, folder, flavor="sklearn", signature=sig, example=example, extra=extra)
    return write_package(model, folder, flavor=None if callable(getattr(model, "predict", None)) else "sklearn", extra=extra)


def _register_with_autolog() -> None:
    """Autolog (in tracking, below this layer) writes its model packages with this module's writer."""
    from keel.tracking import autolog

    autolog.register_package_writer(write_autologged)


_register_with_autolog()
