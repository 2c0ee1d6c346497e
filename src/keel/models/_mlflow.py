"""The MLflow flavor: an MLflow model directory (``MLmodel`` and its files) as a keel model.

    model = MlflowModel.from_directory("downloaded/model")   # or from_files({"MLmodel": b"...", ...})
    model.predict(frame)

What MLflow clients log through ``keel server`` becomes a keel package of this
flavor, so ``keel.load_model`` opens it and the registry's gates evaluate and
promote it like any other. The directory's files travel inside the package
(``model.pkl`` holds them, verified by its sha256 like every package). A model
with MLflow's ``sklearn`` flavor (skops, pickle or cloudpickle) loads without
mlflow installed; any other flavor is opened with ``mlflow.pyfunc`` when mlflow
is importable.

The reverse direction: :func:`mlmodel_text` is the ``MLmodel`` file keel writes
into each of its packages, so ``mlflow.pyfunc.load_model`` opens a keel package.
scikit-learn, LightGBM and XGBoost packages load through ``mlflow.sklearn``
(``model.pkl`` is a plain pickle of the estimator) without keel installed;
other flavors load through :func:`_load_pyfunc` here, with keel installed.
"""

from __future__ import annotations

import io
import json
import pickle
import tempfile
from pathlib import Path
from typing import Any

from keel.errors import DependencyError, ValidationError

MLMODEL = "MLmodel"
# MLflow's column types -> keel's signature types
_TYPES = {"double": "double", "float": "double", "long": "integer", "integer": "integer", "boolean": "boolean",
          "string": "string", "datetime": "datetime"}
_SKLEARN_LOADABLE = ("sklearn", "lightgbm", "xgboost")


def parse_mlmodel(text: bytes | str) -> dict[str, Any]:
    """The MLmodel file as a dict; a ValidationError when it is not one."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationError(f"The MLmodel file is not valid YAML: {exc}.", hint="Log the model again with mlflow.") from None
    if not isinstance(data, dict) or not isinstance(data.get("flavors"), dict):
        raise ValidationError("The MLmodel file names no flavors.", hint="Log the model with mlflow.<flavor>.log_model.")
    return data


class MlflowModel:
    """An MLflow model directory with keel's model interface (``predict``, ``predict_proba``, ``classes_``)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        if MLMODEL not in files:
            raise ValidationError(
                f"An MLflow model needs an MLmodel file; found {', '.join(sorted(files)[:8]) or 'no files'}.",
                hint="Point at the folder mlflow.<flavor>.save_model wrote (the one holding MLmodel).",
            )
        self.files = dict(files)
        self.mlmodel = parse_mlmodel(files[MLMODEL])
        self._inner: Any = None
        self._tmp: Any = None
        if self.loads_without_mlflow:
            self._load()  # fail now, not at the first prediction

    @classmethod
    def from_directory(cls, folder: str | Path) -> MlflowModel:
        root = Path(folder)
        return cls({p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()})

    @classmethod
    def from_files(cls, files: dict[str, bytes]) -> MlflowModel:
        return cls(files)

    def __getstate__(self) -> dict[str, Any]:
        return {"files": self.files, "mlmodel": self.mlmodel}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._inner = None
        self._tmp = None

    @property
    def flavors(self) -> list[str]:
        return sorted(self.mlmodel["flavors"])

    @property
    def loads_without_mlflow(self) -> bool:
        """Whether keel opens this model itself (MLflow's sklearn flavor); others need mlflow at prediction time."""
        return isinstance(self.mlmodel["flavors"].get("sklearn"), dict)

    @property
    def inner(self) -> Any:
        """The loaded model: the scikit-learn estimator, or mlflow's PyFuncModel."""
        if self._inner is None:
            self._load()
        return self._inner

    def _load(self) -> Any:
        sk = self.mlmodel["flavors"].get("sklearn")
        if isinstance(sk, dict):
            self._inner = _load_sklearn(self.files, sk, self.mlmodel["flavors"].get("python_function") or {})
            return self._inner
        try:
            import mlflow.pyfunc
        except ImportError:
            raise DependencyError(
                f"This MLflow model has the flavors {', '.join(self.flavors)}; keel opens the sklearn flavor itself "
                "and the others with mlflow, which is not installed.",
                hint="pip install mlflow (the version that logged it), or log the model with mlflow.sklearn.",
            ) from None
        self._tmp = tempfile.TemporaryDirectory(prefix="keel-mlflow-")
        root = Path(self._tmp.name)
        for rel, data in self.files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        self._inner = mlflow.pyfunc.load_model(str(root))
        return self._inner

    # -- the model interface keel's flavors use --
    def predict(self, frame: Any) -> Any:
        return self.inner.predict(frame)

    def __getattr__(self, name: str) -> Any:
        # predict_proba, classes_, feature_names_in_ ... of the estimator inside, when it has them
        if name.startswith("_") or name in ("files", "mlmodel"):
            raise AttributeError(name)
        if self._inner is None and not self.loads_without_mlflow:
            try:
                self._load()
            except DependencyError:
                raise AttributeError(name) from None  # predict() says what is missing; attributes just are not there
        return getattr(self.inner, name)

    def signature_inputs(self) -> list[tuple[str, str]] | None:
        """[(column, keel type)] from the MLmodel's signature, when it has a column-based one."""
        sig = self.mlmodel.get("signature") or {}
        raw = sig.get("inputs")
        if not raw:
            return None
        try:
            cols = json.loads(raw) if isinstance(raw, str) else raw
            return [(str(c["name"]), _TYPES.get(str(c.get("type")), "any")) for c in cols]
        except (ValueError, KeyError, TypeError):
            return None  # a tensor-based signature has no column names


def _load_sklearn(files: dict[str, bytes], conf: dict[str, Any], pyfunc: dict[str, Any]) -> Any:
    name = conf.get("pickled_model") or pyfunc.get("model_path") or "model.pkl"
    if name not in files:
        raise ValidationError(f"The MLflow model's sklearn flavor names {name!r}, which is not among its files.",
                              hint="Log the model again.")
    data, fmt = files[name], conf.get("serialization_format", "pickle")
    if fmt == "skops":
        try:
            import skops.io
        except ImportError:
            raise DependencyError("This MLflow model is saved in the skops format, and skops is not installed.",
                                  hint="pip install 'keel[mlflow]'") from None
        return skops.io.load(io.BytesIO(data), trusted=conf.get("skops_trusted_types") or [])
    if fmt == "cloudpickle":
        try:
            import cloudpickle
        except ImportError:
            raise DependencyError("This MLflow model is saved with cloudpickle, which is not installed.",
                                  hint="pip install 'keel[mlflow]'") from None
        return cloudpickle.loads(data)
    if fmt == "pickle":
        return pickle.loads(data)
    raise ValidationError(f"Unknown sklearn serialization format {fmt!r} in the MLmodel file.",
                          hint="keel reads skops, pickle and cloudpickle.")


# -- the reverse: keel packages that mlflow opens ------------------------------------------

def mlmodel_text(meta: dict[str, Any]) -> str:
    """The MLmodel file of a keel package whose keel-model.json holds ``meta`` (the same bytes for the same meta)."""
    import yaml

    flavor = str(meta.get("flavor") or "python")
    pyfunc: dict[str, Any] = {"model_path": "model.pkl", "python_version": meta.get("python"), "predict_fn": "predict"}
    flavors: dict[str, Any] = {"python_function": pyfunc}
    if flavor in _SKLEARN_LOADABLE:
        pyfunc["loader_module"] = "mlflow.sklearn"
        flavors["sklearn"] = {"pickled_model": "model.pkl", "serialization_format": "pickle",
                              "sklearn_version": (meta.get("packages") or {}).get("scikit-learn"), "code": None}
    else:
        pyfunc["loader_module"] = "keel.models._mlflow"
    doc: dict[str, Any] = {"artifact_path": "model", "flavors": flavors,
                           "metadata": {"keel_flavor": flavor, "keel_class": meta.get("class")}}
    return yaml.safe_dump(doc, sort_keys=False)


class _PyfuncWrapper:
    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, data: Any, params: Any = None) -> Any:
        return self.model.predict(data)


def _load_pyfunc(path: str) -> _PyfuncWrapper:
    """mlflow.pyfunc's entry point for keel packages of the flavors mlflow does not know."""
    p = Path(path)
    blob = (p if p.is_file() else p / "model.pkl").read_bytes()
    return _PyfuncWrapper(pickle.loads(blob))
