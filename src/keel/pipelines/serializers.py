"""How step outputs become bytes: tables as Parquet, arrays as .npy, JSON, models as packages, pickle.

The first serializer that accepts an output writes it, in this order:

- ``parquet``: pandas DataFrames (string column names) and Arrow tables;
- ``numpy``: NumPy arrays that hold no Python objects (``.npy``, no pickle);
- ``json``: plain JSON values that come back identical (no tuples, no NaN);
- ``model``: scikit-learn, LightGBM and XGBoost models, and dicts holding some
  (``{"model": m, "metrics": {...}}``), written as keel model packages (the
  same folder :func:`keel.log_model` writes) inside one zip with fixed
  timestamps and sorted names, so the same model always gives the same bytes.
  The runner also records each package with the step's run, where
  ``keel.load_model`` and ``keel.register_model`` find it. Each package has a
  signature with column types and an input example, taken from the step's
  input DataFrame that holds the model's features (or from a DataFrame the
  output holds under ``input_example``). Other objects with a
  ``predict`` method are packaged (flavor ``python``) only when the step
  declares ``serializer="model"``, or in a dict beside a model packaged anyway;
- ``pickle``: anything else (protocol 5).

Each serializer has a name and a version; both go into cache keys, so a change
in how outputs are written never serves an output written the old way.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
import re
import sys
import zipfile
from dataclasses import dataclass
from typing import Any, Protocol

from keel.errors import IntegrityError, ValidationError, did_you_mean


class Serializer(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...

    def accepts(self, obj: Any) -> bool: ...
    def dumps(self, obj: Any) -> bytes: ...
    def loads(self, data: bytes) -> Any: ...


@dataclass(frozen=True)
class ParquetSerializer:
    name: str = "parquet"
    version: str = "1"

    def accepts(self, obj: Any) -> bool:
        mod = type(obj).__module__
        if mod.startswith("pandas") and type(obj).__name__ == "DataFrame":
            return all(isinstance(c, str) for c in obj.columns)
        return mod.startswith("pyarrow") and type(obj).__name__ == "Table"

    def dumps(self, obj: Any) -> bytes:
        import pyarrow as pa
        import pyarrow.parquet as pq

        is_arrow = isinstance(obj, pa.Table)
        table = obj if is_arrow else pa.Table.from_pandas(obj)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"keel.kind": b"arrow" if is_arrow else b"pandas"})
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return buf.getvalue()

    def loads(self, data: bytes) -> Any:
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data))
        if (table.schema.metadata or {}).get(b"keel.kind") == b"arrow":
            return table.replace_schema_metadata({k: v for k, v in (table.schema.metadata or {}).items() if k != b"keel.kind"})
        return table.to_pandas()


@dataclass(frozen=True)
class NumpySerializer:
    name: str = "numpy"
    version: str = "1"

    def accepts(self, obj: Any) -> bool:
        return type(obj).__module__ == "numpy" and type(obj).__name__ == "ndarray" and obj.dtype != object

    def dumps(self, obj: Any) -> bytes:
        import numpy as np

        buf = io.BytesIO()
        np.save(buf, obj, allow_pickle=False)
        return buf.getvalue()

    def loads(self, data: bytes) -> Any:
        import numpy as np

        return np.load(io.BytesIO(data), allow_pickle=False)


def _plain_json(obj: Any) -> bool:
    """True when JSON gives the very same object back (no tuples, no non-str keys, no NaN)."""
    if obj is None or isinstance(obj, bool | str):
        return True
    if isinstance(obj, int):
        return type(obj) is int
    if isinstance(obj, float):
        return type(obj) is float and math.isfinite(obj)
    if type(obj) is list:
        return all(_plain_json(v) for v in obj)
    if type(obj) is dict:
        return all(isinstance(k, str) and _plain_json(v) for k, v in obj.items())
    return False


@dataclass(frozen=True)
class JsonSerializer:
    name: str = "json"
    version: str = "1"

    def accepts(self, obj: Any) -> bool:
        return _plain_json(obj)

    def dumps(self, obj: Any) -> bytes:
        return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


@dataclass(frozen=True)
class PickleSerializer:
    name: str = "pickle"
    version: str = f"5-py{sys.version_info.major}.{sys.version_info.minor}"

    def accepts(self, obj: Any) -> bool:
        return True

    def dumps(self, obj: Any) -> bytes:
        try:
            return pickle.dumps(obj, protocol=5)
        except Exception as exc:
            raise ValidationError(
                f"A {type(obj).__name__} output cannot be pickled: {exc}.",
                hint="Return data (tables, arrays, dicts, models), not open files, generators or locks.",
            ) from None

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)  # blobs are verified against their sha256 before this


# Flavors packaged whenever a step returns one; other objects with predict() only when declared.
AUTO_FLAVORS = ("sklearn", "lightgbm", "xgboost")
INDEX_FILE = "keel-output.json"
_PACKAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]{0,127}$")
_RESERVED = ("output",)  # the step run's own artifact for the output blob
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def _flavor(obj: Any, declared: bool) -> str | None:
    """The flavor ``obj`` is packaged as, or None when it is not a model (for this mode)."""
    from keel.models import flavors

    try:
        if not callable(getattr(obj, "predict", None)):
            return None
        flavor = flavors.detect(obj)
    except Exception:
        return None
    return flavor if declared or flavor in AUTO_FLAVORS else None


def _plan(obj: Any, declared: bool) -> tuple[dict[str, str], str | None]:
    """({package name: flavor}, None) for an output the model serializer can write, else ({}, why not)."""
    flavor = _flavor(obj, declared)
    if flavor is not None:
        return {"model": flavor}, None
    if type(obj) is not dict:
        return {}, "it has no predict method"
    if not all(isinstance(k, str) for k in obj):
        return {}, "it is a dict with keys that are not strings"
    found: dict[str, str] = {}
    for key, value in obj.items():
        flavor = _flavor(value, declared)
        if flavor is None:
            continue
        if not _PACKAGE_NAME.match(key) or key in _RESERVED or key.startswith("keel-"):
            return {}, f"its key {key!r} cannot name a model package (use letters, digits, '_', '-', '.'; not 'output' or 'keel-*')"
        found[key] = flavor
    if not found:
        return {}, "none of the dict's values has a predict method"
    return found, None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ModelSerializer:
    """Models as keel model packages, one zip per output (a dict's other values by their own serializer)."""

    name: str = "model"
    version: str = f"2-py{sys.version_info.major}.{sys.version_info.minor}"

    def accepts(self, obj: Any) -> bool:
        return _plan(obj, declared=False)[1] is None

    def check(self, obj: Any) -> None:
        """Refuse, with the reason, an output a step declared ``serializer="model"`` for."""
        why = _plan(obj, declared=True)[1]
        if why is not None:
            raise ValidationError(
                f"Serializer 'model' cannot package a {type(obj).__module__}.{type(obj).__qualname__} output: {why}.",
                hint="Return a fitted scikit-learn, LightGBM or XGBoost model, an object with predict(DataFrame), "
                "or a dict holding some; or remove serializer='model'.",
            )

    def dumps(self, obj: Any, inputs: Any = None) -> bytes:
        """The zip of packages; ``inputs`` (the step's arguments) give each model its typed signature and input example.

        A DataFrame under ``input_example`` in a dict output is used first; else
        the first input DataFrame that holds every feature the model was fit on.
        """
        import tempfile
        from pathlib import Path

        from keel.models.package import write_package

        self.check(obj)
        plan = _plan(obj, declared=True)[0]  # in a dict, every value with predict() is packaged
        frames = _frames(inputs)
        if type(obj) is dict and _is_frame(obj.get("input_example")):
            frames.insert(0, obj["input_example"])
        files: dict[str, bytes] = {}
        entries: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory() as tmp:
            for name, flavor in plan.items():
                folder = Path(tmp) / name
                model = obj if type(obj) is not dict else obj[name]
                signature, example = typed_signature(model, flavor, frames)
                write_package(model, folder, flavor=flavor, signature=signature, example=example)
                for f in sorted(p for p in folder.rglob("*") if p.is_file()):
                    files[f"{name}/{f.relative_to(folder).as_posix()}"] = f.read_bytes()
        if type(obj) is dict:
            for i, (key, value) in enumerate(obj.items()):
                if key in plan:
                    entries.append({"key": key, "model": key, "flavor": plan[key]})
                    continue
                ser = next(s for s in SERIALIZERS.values() if s.name != self.name and s.accepts(value))
                path = f"keel-values/{i}.{ser.name}"
                files[path] = ser.dumps(value)
                entries.append({"key": key, "serializer": ser.name, "path": path})
        index = {
            "format": 1,
            "kind": "dict" if type(obj) is dict else "model",
            "entries": entries if type(obj) is dict else [{"model": "model", "flavor": plan["model"]}],
            "files": {p: _sha256(b) for p, b in sorted(files.items())},
        }
        files[INDEX_FILE] = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
            for path in sorted(files):
                info = zipfile.ZipInfo(path, date_time=_ZIP_TIME)
                info.create_system = 3
                info.external_attr = 0o644 << 16
                zf.writestr(info, files[path])
        return buf.getvalue()

    def _read(self, data: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
        """The index and every file, each verified against the sha256 the index records."""
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile:
            raise IntegrityError("A step output stored as 'model' is not a zip file.", hint="Re-run the step (refresh it).") from None
        with zf:
            names = set(zf.namelist())
            if INDEX_FILE not in names:
                raise IntegrityError(f"A step output stored as 'model' has no {INDEX_FILE}.", hint="Re-run the step (refresh it).")
            try:
                index = json.loads(zf.read(INDEX_FILE))
                fmt, recorded, _entries = index.get("format"), dict(index["files"]), list(index["entries"])
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise IntegrityError(f"The {INDEX_FILE} of a model step output is not readable: {exc}.", hint="Re-run the step (refresh it).") from None
            if fmt != 1:
                raise IntegrityError(f"A model step output has format {fmt!r}; this keel reads format 1.", hint="Upgrade keel.")
            stray = sorted(names - set(recorded) - {INDEX_FILE})
            missing = sorted(set(recorded) - names)
            if stray or missing:
                raise IntegrityError(
                    f"A model step output holds files its index does not list ({', '.join(stray) or 'none'}) "
                    f"or lacks files it lists ({', '.join(missing) or 'none'}).",
                    hint="Re-run the step (refresh it).",
                )
            files: dict[str, bytes] = {}
            for path, digest in recorded.items():
                body = zf.read(path)
                if _sha256(body) != digest:
                    raise IntegrityError(
                        f"{path} in a model step output does not match its recorded sha256 {digest}.",
                        hint="Re-run the step (refresh it).", expected=digest, found=_sha256(body),
                    )
                files[path] = body
        return index, files

    def packages(self, data: bytes) -> dict[str, dict[str, bytes]]:
        """{package name: {file name: bytes}} of an output written by :meth:`dumps`, verified."""
        index, files = self._read(data)
        out: dict[str, dict[str, bytes]] = {}
        for entry in index["entries"]:
            if "model" in entry:
                prefix = entry["model"] + "/"
                out[entry["model"]] = {p[len(prefix):]: b for p, b in files.items() if p.startswith(prefix)}
        return out

    def loads(self, data: bytes) -> Any:
        from keel.models.package import META_FILE, PICKLE_FILE

        index, files = self._read(data)
        values: dict[str, Any] = {}
        for entry in index["entries"]:
            if "model" not in entry:
                values[entry["key"]] = get(entry["serializer"]).loads(files[entry["path"]])
                continue
            name = entry["model"]
            meta = json.loads(files[f"{name}/{META_FILE}"])
            try:
                model = pickle.loads(files[f"{name}/{PICKLE_FILE}"])  # verified against the index's sha256 above
            except Exception as exc:
                raise ValidationError(
                    f"Cannot unpickle model {name!r} of a step output ({meta.get('class')}): {type(exc).__name__}: {exc}.",
                    hint=f"Install the packages it was packaged with: {', '.join(f'{k}=={v}' for k, v in (meta.get('packages') or {}).items())}.",
                ) from None
            found = f"{type(model).__module__}.{type(model).__qualname__}"
            if found != meta.get("class") or meta.get("flavor") != entry["flavor"]:
                raise IntegrityError(
                    f"Model {name!r} of a step output is a {found} ({entry['flavor']}); its package says {meta.get('class')} ({meta.get('flavor')}).",
                    hint="Re-run the step (refresh it).",
                )
            values[entry.get("key", name)] = model
        return values if index["kind"] == "dict" else values["model"]


def _is_frame(obj: Any) -> bool:
    return type(obj).__module__.startswith("pandas") and type(obj).__name__ == "DataFrame"


def _frames(value: Any, depth: int = 0) -> list[Any]:
    """The DataFrames among a step's arguments (also inside tuples, lists and dicts)."""
    if _is_frame(value):
        return [value]
    if depth >= 3:
        return []
    if isinstance(value, list | tuple):
        return [f for v in value for f in _frames(v, depth + 1)]
    if isinstance(value, dict):
        return [f for v in value.values() for f in _frames(v, depth + 1)]
    return []


def typed_signature(model: Any, flavor: str, frames: list[Any]) -> tuple[Any, Any]:
    """(signature with column types, input example of 5 rows) from the first frame the model can predict on; (None, None) without one.

    The frame must hold every feature the model was fit on (its own feature
    names); types and nullability are inferred from the whole frame, as
    :func:`keel.log_model` does with ``signature=X_train``, and the output is
    described from a prediction on the example.
    """
    from keel.models import flavors
    from keel.models.package import accepts_nan
    from keel.models.signature import describe_output, infer_signature

    names = flavors.feature_names(model)
    if not names:
        return None, None
    for frame in frames:
        if not all(n in frame.columns for n in names):
            continue
        x = frame[list(names)]
        if len(x) == 0:
            continue
        sig = infer_signature(x, allow_nan=accepts_nan(model))
        example = x.head(5).reset_index(drop=True)
        try:
            out = flavors.predict(model, flavor, sig.check(example, what="model input example"))
        except Exception:  # not what the model was fit on (e.g. features it derives first): try the next frame
            continue
        sig.outputs = describe_output(out)
        return sig, example
    return None, None


SERIALIZERS: dict[str, Serializer] = {
    s.name: s for s in (ParquetSerializer(), NumpySerializer(), JsonSerializer(), ModelSerializer(), PickleSerializer())
}

# Types that can never be a step output; the graph lint refuses them before a run.
UNSERIALIZABLE = ("Generator", "Iterator", "AsyncIterator", "AsyncGenerator", "Lock", "RLock", "TextIOWrapper", "BufferedReader", "BufferedWriter", "socket", "Connection", "Engine", "Coroutine")


def versions() -> str:
    """One string naming every serializer version (part of every cache key)."""
    return ",".join(f"{s.name}={s.version}" for s in SERIALIZERS.values())


def get(name: str) -> Serializer:
    try:
        return SERIALIZERS[name]
    except KeyError:
        raise ValidationError(f"Unknown serializer {name!r}." + did_you_mean(name, SERIALIZERS), hint=f"Use one of {', '.join(SERIALIZERS)}.") from None


def choose(obj: Any, name: str | None = None) -> Serializer:
    """The declared serializer, else the first that accepts the object."""
    if name is not None:
        ser = get(name)
        if isinstance(ser, ModelSerializer):
            ser.check(obj)  # says which value cannot be packaged, and why
            return ser
        if not ser.accepts(obj):
            raise ValidationError(f"Serializer {name!r} cannot write a {type(obj).__name__}.", hint="Remove serializer= or pick another one.")
        return ser
    for ser in SERIALIZERS.values():
        if ser.accepts(obj):
            return ser
    return SERIALIZERS["pickle"]
