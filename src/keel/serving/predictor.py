"""``keel.serving.Predictor``: a packaged model behind validation, feature fetching and logging, without HTTP.

    predictor = Predictor("models:/churn@production")
    out = predictor.predict([{"customer_id": 42}])
    out.predictions, out.scores, out.missing_features, out.request_id

The server, the batch scorer and (later) the stream consumer are adapters in
front of this one class, so the rules live once:

- the input is checked column by column against the signature (422 with one
  entry per column: missing, wrong type, null where not nullable, unexpected);
- a model trained from a feature service takes its entity keys (and any
  request-time columns of its on-demand features): the features come from the
  online store through :func:`keel.get_online_features`, on-demand transformations
  included, with a per-row report of the features that were missing or stale.
  ``missing_features="reject"`` refuses such rows; ``"default"`` (the default)
  gives them the value a training set holds for a missing feature (null), or the
  value given in ``defaults``;
- a data contract attached to the model's name (``contracts/<model>.yaml``) is
  enforced on the inputs at stage ``serving``;
- every prediction is appended to the prediction log before ``predict`` returns.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keel.errors import ValidationError
from keel.models.signature import ColSpec
from keel.serving.validation import (
    BadRequest,
    ColumnError,
    InputError,
    RowColumns,
    check_columns,
    columns_of,
    to_numpy,
)

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from keel.models.loader import Model

POLICIES = ("default", "reject")
_ids = {"prefix": uuid.uuid4().hex[:20], "next": itertools.count()}


def _new_prefix() -> None:
    _ids["prefix"], _ids["next"] = uuid.uuid4().hex[:20], itertools.count()


os.register_at_fork(after_in_child=_new_prefix)


def new_request_id() -> str:
    """A fresh 32-hex-digit request id: a random per-process prefix and a counter (no system call per request)."""
    return f"{_ids['prefix']}{next(_ids['next']):012x}"  # type: ignore[call-overload]
_KIND = {"int64": "integer", "int32": "integer", "float64": "double", "float32": "double", "string": "string", "bool": "boolean",
         "timestamp": "datetime"}


@dataclass
class Prediction:
    """What one predict call returned, per row."""

    request_id: str
    model: str
    version: int
    predictions: list[Any]
    row_ids: list[str]
    scores: list[float] | None = None
    probabilities: dict[str, list[float]] | None = None
    missing_features: list[list[str]] = field(default_factory=list)
    stale_features: list[list[str]] = field(default_factory=list)
    latency_ms: float = 0.0
    output_name: str = "prediction"

    def __len__(self) -> int:
        return len(self.predictions)

    def to_dict(self) -> dict[str, Any]:
        """keel's /v1 response body."""
        out: dict[str, Any] = {"request_id": self.request_id, "model": self.model, "version": self.version, "predictions": self.predictions}
        if self.scores is not None:
            out["scores"] = self.scores
        if self.probabilities is not None:
            out["probabilities"] = self.probabilities
        if len(self.row_ids) > 1 or (self.row_ids and self.row_ids[0] != self.request_id):
            out["row_ids"] = self.row_ids
        if any(self.missing_features) or any(self.stale_features):
            out["missing_features"] = self.missing_features
            out["stale_features"] = self.stale_features
        return out


@dataclass
class _State:
    """One loaded model version and everything derived from it (swapped whole on reload)."""

    model: Model
    name: str
    version: int
    inputs: list[ColSpec]
    request_specs: list[ColSpec]  # what a caller sends
    fetched: list[str]  # inputs that come from the feature service
    service: str | None
    classes: np.ndarray | None
    proba: bool
    prediction_type: str
    log_key: str | None
    contracts: bool
    matrix: Any  # numeric inputs: the model (its column-name check dropped) to give a float matrix, else None
    input_names: frozenset[str] = frozenset()


class Predictor:
    """A served model: ``predict`` validates, fetches features, predicts and logs (see the module docstring)."""

    def __init__(
        self,
        model_uri: str,
        *,
        log: bool = True,
        route: str = "default",
        missing_features: str = "default",
        defaults: dict[str, Any] | None = None,
    ) -> None:
        if missing_features not in POLICIES:
            raise ValidationError(f"missing_features={missing_features!r} is not a policy.", hint="Use 'default' or 'reject'.")
        self.uri = model_uri
        self.log = log
        self.route = route
        self.missing_features = missing_features
        self.defaults = dict(defaults or {})
        self._reload_lock = threading.Lock()
        self._plog: Any = None
        self._state = self._build(model_uri)

    # ---- loading ----------------------------------------------------------
    def _build(self, uri: str, *, cache: bool = True) -> _State:
        import numpy as np

        from keel.models.loader import load_model

        model = load_model(uri, cache=cache)
        src = model.source
        name = src.model or f"run-{src.run_id[:12]}"
        version = int(src.version or 0)
        inputs = list(model.signature.inputs)
        service = model.feature_service
        request_specs: list[ColSpec] = inputs
        fetched: list[str] = []
        if service:
            request_specs, fetched = self._service_specs(str(service), inputs)
        raw = model.model
        classes = getattr(raw, "classes_", None)
        classes = None if classes is None else np.asarray(classes)
        proba = bool(model.meta.get("has_predict_proba")) and callable(getattr(raw, "predict_proba", None))
        if classes is not None:
            kind = classes.dtype.kind
            ptype = {"i": "int64", "u": "int64", "f": "double", "b": "bool"}.get(kind, "string")
        else:
            ptype = "double"
        numeric = bool(inputs) and all(c.type in ("double", "integer") for c in inputs)
        matrix = _unnamed(raw) if numeric and model.flavor == "sklearn" else None
        state = _State(model, name, version, inputs, request_specs, fetched, str(service) if service else None, classes, proba, ptype,
                       None, _has_contracts(name), matrix, frozenset(c.name for c in inputs))
        if self.log:
            state.log_key = self._register_log(state)
            from keel.store.prediction_log import get_prediction_log

            self._plog = get_prediction_log()
        return state

    def _service_specs(self, service: str, inputs: list[ColSpec]) -> tuple[list[ColSpec], list[str]]:
        from keel.features.loader import load_definitions

        selection = load_definitions().select(service)
        served = set(selection.features)
        key_types: dict[str, str] = {}
        for view in selection.views:
            for entity in getattr(view, "entities", []):
                for k in entity.join_keys:
                    key_types.setdefault(k, _KIND.get(entity.value_type, "any"))
        specs = [ColSpec(k, key_types.get(k, "any"), False) for k in selection.join_keys]
        for odfv in selection.on_demand:
            for f in odfv.request_schema:
                if f.name not in {s.name for s in specs}:
                    specs.append(ColSpec(f.name, _KIND.get(f.dtype, "any"), True))
        taken = {s.name for s in specs}
        specs += [c for c in inputs if c.name not in served and c.name not in taken]
        fetched = [c.name for c in inputs if c.name in served]
        return specs, fetched

    def _register_log(self, state: _State) -> str:
        from keel.store import predictions
        from keel.store.prediction_log import get_prediction_log

        types: dict[str, str | None] = {}
        names = [s.name for s in state.inputs] + [s.name for s in state.request_specs if s.name not in {i.name for i in state.inputs}]
        spec_of = {s.name: s for s in [*state.inputs, *state.request_specs]}
        for n in names:
            t = predictions.arrow_type(spec_of[n].type)
            types[predictions.input_column(n)] = None if t is None else str(t)
        types["prediction"] = state.prediction_type
        if state.proba:
            types["score"] = "double"
            if state.classes is not None and len(state.classes) > 2:
                for c in state.classes:
                    types[f"proba_{c}"] = "double"
        return get_prediction_log().register(state.name, state.version, types)

    def log_key(self) -> str:
        """The prediction log's key of the current version (registered on first use, also when ``log`` is off)."""
        st = self._state
        if st.log_key is None or self._plog is None or self._plog._closed_for_good:
            from keel.store.prediction_log import get_prediction_log

            st.log_key = self._register_log(st)
            self._plog = get_prediction_log()
        return st.log_key

    def reload(self) -> bool:
        """Load the version the URI names now beside the current one and swap it in; True if it changed."""
        from keel.models.loader import locate

        with self._reload_lock:
            src, _files, _stamp = locate(self.uri)
            current = self._state
            if src.version == current.version and src.model == current.model.source.model:
                return False
            self._state = self._build(self.uri)
            return True

    # ---- properties -------------------------------------------------------
    @property
    def name(self) -> str:
        return self._state.name

    @property
    def version(self) -> int:
        return self._state.version

    @property
    def model(self) -> Model:
        return self._state.model

    @property
    def feature_service(self) -> str | None:
        return self._state.service

    @property
    def request_columns(self) -> list[ColSpec]:
        """The columns a caller sends (entity keys and request data for a feature-service model)."""
        return list(self._state.request_specs)

    @property
    def classes(self) -> list[Any] | None:
        c = self._state.classes
        return None if c is None else c.tolist()

    # ---- predicting -------------------------------------------------------
    def predict(self, data: Any, *, request_id: str | None = None, row_ids: list[str] | None = None) -> Prediction:
        """Validate ``data`` (rows, columns, DataFrame or Arrow table), fetch features, predict and log."""
        start = time.perf_counter()
        columns, n = columns_of(data)
        return self.predict_columns(columns, n, request_id=request_id, row_ids=row_ids, start=start)

    def predict_columns(
        self,
        columns: Mapping[str, Any],
        n: int,
        *,
        request_id: str | None = None,
        row_ids: list[str] | None = None,
        batch_id: str | None = None,
        start: float | None = None,
        state: _State | None = None,
    ) -> Prediction:
        """``predict`` on columns already split out of a payload (the HTTP codecs call this)."""
        start = time.perf_counter() if start is None else start
        st = state or self._state
        rid = request_id or new_request_id()
        if n == 0:
            raise BadRequest(f"The request to {st.name} has no rows.", hint='Send at least one row, e.g. {"records": [{...}]}.')
        if row_ids is not None and len(row_ids) != n:
            raise BadRequest(f"{len(row_ids)} request ids for {n} rows.", hint="Give one id per row, or one request id.")
        ids = row_ids or ([rid] if n == 1 else [f"{rid}:{i}" for i in range(n)])
        arrays, missing, stale, out = self._infer(st, columns, n)
        if missing is None or stale is None:
            missing, stale = [[] for _ in range(n)], [[] for _ in range(n)]
        latency = (time.perf_counter() - start) * 1000
        proba = out.get("proba")
        result = Prediction(rid, st.name, st.version, out["prediction"].tolist(), ids,
                            None if "score" not in out else out["score"].tolist(),
                            None if proba is None else {k: v.tolist() for k, v in proba.items()}, missing, stale, latency)
        if self.log and st.log_key is not None:
            self._log(st, arrays, out, result, n, batch_id, numbered=row_ids is None and n > 1)
        return result

    def _infer(self, st: _State, columns: Mapping[str, Any], n: int) -> tuple[dict[str, Any], list[list[str]] | None, list[list[str]] | None, dict[str, Any]]:
        """(checked inputs, missing and stale features per row (None: no feature service), NumPy outputs)."""
        what = f"model {st.name} v{st.version}"
        block = _numeric_block(st, columns, n) if st.matrix is not None and not st.service and not st.contracts else None
        if block is not None:
            arrays: dict[str, Any] = _Block({c.name: block[j] for j, c in enumerate(st.inputs)})
            arrays.block = block  # type: ignore[attr-defined]
            return arrays, None, None, self._predict(st, arrays, n, matrix=block.T)
        missing = stale = None
        if st.service:
            arrays, missing, stale = self._with_features(st, columns, n, what)
            if isinstance(arrays, _Block):
                return arrays, missing, stale, self._predict(st, arrays, n, matrix=arrays.block.T)
        else:
            arrays = check_columns(columns, n, st.inputs, what=what) if st.inputs else {k: _any(v) for k, v in columns.items()}
        if st.contracts:
            _enforce(st.name, arrays)
        return arrays, missing, stale, self._predict(st, arrays, n)

    def predict_batch(self, columns: Mapping[str, Any], n: int) -> tuple[int, dict[str, Any], dict[str, Any], list[list[str]] | None]:
        """(version, checked inputs, NumPy outputs, missing+stale features per row or None) for a chunk, not logged.

        The batch scorer's path: the same checks and model call as :meth:`predict`,
        without building Python objects per row.
        """
        st = self._state
        if n == 0:
            raise BadRequest(f"The chunk for {st.name} has no rows.")
        arrays, missing, stale, out = self._infer(st, columns, n)
        absent = None if missing is None or stale is None else [m + s for m, s in zip(missing, stale, strict=True)]
        return st.version, arrays, out, absent

    def _with_features(self, st: _State, columns: Mapping[str, Any], n: int, what: str) -> tuple[dict[str, pa.Array], list[list[str]], list[list[str]]]:
        import numpy as np
        import pyarrow as pa

        from keel.features.online import OUTSIDE_TTL, PRESENT, get_online_features

        request = check_columns(columns, n, st.request_specs, what=what)
        assert st.service is not None
        online = get_online_features(st.service, {k: v.to_pylist() for k, v in request.items()})
        fetched = st.fetched
        status = np.array([online.status[f] for f in fetched], dtype=object).reshape(len(fetched), n)
        absent = status != PRESENT
        missing: list[list[str]] = [[] for _ in range(n)]
        stale: list[list[str]] = [[] for _ in range(n)]
        for i in np.flatnonzero(absent.any(axis=0)):
            col = status[:, i]
            missing[i] = [fetched[j] for j in np.flatnonzero(absent[:, i]) if col[j] != OUTSIDE_TTL]
            stale[i] = [fetched[j] for j in np.flatnonzero(col == OUTSIDE_TTL)]
        if self.missing_features == "reject" and absent.any():
            bad = [int(i) for i in np.flatnonzero(absent.any(axis=0))]
            raise ValidationError(
                f"{len(bad)} row(s) of the request to {what} lack features: row {bad[0]} has "
                f"missing {missing[bad[0]] or 'none'}, stale {stale[bad[0]] or 'none'}.",
                hint="Materialize the features (`keel features materialize`), or serve with --missing-features default.",
                rows=[{"row": i, "missing": missing[i], "stale": stale[i]} for i in bad[:50]],
            )
        if st.matrix is not None and not st.contracts and {c.name for c in st.inputs} <= set(fetched):
            # all-numeric features: one float block, as for a request that carries them (None: the checks below report)
            raw = {f: online.values[f] if f not in self.defaults else _filled(online.values[f], self.defaults[f]) for f in fetched}
            block = _numeric_block(st, {c.name: list(raw[c.name]) for c in st.inputs}, n)
            if block is not None:
                arrays: dict[str, Any] = _Block({c.name: block[j] for j, c in enumerate(st.inputs)})
                arrays.block = block  # type: ignore[attr-defined]
                arrays.update(request)
                return arrays, missing, stale
        values: dict[str, Any] = dict(request)
        for f in fetched:
            arr = pa.array(online.values[f], from_pandas=True)
            if f in self.defaults and arr.null_count:
                import pyarrow.compute as pc

                default = pa.scalar(self.defaults[f])
                if pa.types.is_null(arr.type):  # every entity unknown: a column of nulls has no type to fill
                    arr = arr.cast(default.type)
                arr = pc.fill_null(arr, default)
            values[f] = arr
        try:
            arrays = check_columns(values, n, st.inputs, what=what, allow_extra=list(request))
        except InputError as exc:
            for e in exc.errors:
                if e.problem == "null" and e.column in fetched:
                    e.message += (f" (the feature was missing or stale for those entities; give it a value with defaults={{'{e.column}': ...}}"
                                  " / --default, or use --missing-features reject)")
            raise InputError(exc.errors, what=what) from None
        for k, v in request.items():
            arrays.setdefault(k, v)
        return arrays, missing, stale

    def _predict(self, st: _State, arrays: dict[str, Any], n: int, matrix: Any = None) -> dict[str, Any]:
        import numpy as np

        from keel.models import flavors

        raw, flavor = st.model.model, st.model.flavor
        names = [c.name for c in st.inputs] if st.inputs else list(arrays)
        if matrix is not None:
            raw, frame = st.matrix, matrix
        elif st.matrix is not None:
            raw = st.matrix
            frame = np.column_stack([to_numpy(arrays[c]).astype("float64", copy=False) for c in names])
        else:
            import pandas as pd

            frame = pd.DataFrame({c: to_numpy(arrays[c]) for c in names}, copy=False)
        out: dict[str, Any] = {}
        try:
            if st.proba:
                proba = np.asarray(flavors.predict_proba(raw, flavor, frame), dtype="float64")
                if st.classes is not None and proba.ndim == 2 and proba.shape[1] == len(st.classes):
                    pred = st.classes[proba.argmax(axis=1)]
                else:
                    pred = np.asarray(flavors.predict(raw, flavor, frame))
                score = np.ascontiguousarray(proba[:, 1]) if proba.shape[1] == 2 else proba.max(axis=1)
                out["score"] = score
                if st.classes is not None and proba.shape[1] > 2:
                    out["proba"] = {str(c): np.ascontiguousarray(proba[:, j]) for j, c in enumerate(st.classes)}
            else:
                pred = np.asarray(flavors.predict(raw, flavor, frame))
        except (ValueError, TypeError, KeyError) as exc:
            # the model refused input the signature accepted (e.g. a category it never saw): the caller's input
            raise ValidationError(f"model {st.name} v{st.version} cannot predict on this input: {type(exc).__name__}: {exc}.",
                                  hint="Check the values against the model's training data.") from None
        if pred.ndim > 1:
            pred = pred.reshape(len(pred), -1)[:, 0] if pred.shape[1] == 1 else pred
        if st.prediction_type == "double" and pred.dtype.kind in "biuf":
            pred = pred.astype("float64")
        out["prediction"] = pred
        return out

    def _log(self, st: _State, arrays: dict[str, pa.Array], out: dict[str, Any], result: Prediction, n: int, batch_id: str | None,
             *, numbered: bool = False) -> None:
        import numpy as np

        from keel.store.prediction_log import get_prediction_log
        from keel.store.predictions import input_column

        same: dict[str, Any] = {"ts": time.time_ns() // 1_000, "latency_ms": result.latency_ms, "status": "ok"}
        columns: dict[Any, Any] = {}
        if numbered:  # rows <request id>:<i>, rebuilt at compaction instead of n strings per frame
            columns["request_id"] = np.arange(n)
            same["request_id_prefix"] = result.request_id
        else:
            columns["request_id"] = result.row_ids
        if any(result.missing_features) or any(result.stale_features):
            columns["missing_features"] = [m + s for m, s in zip(result.missing_features, result.stale_features, strict=True)]
        else:
            same["missing_features"] = []
        block = arrays.block if isinstance(arrays, _Block) else None
        if block is not None:  # the numeric inputs in one piece
            columns[tuple(input_column(c.name) for c in st.inputs)] = block
        for name, arr in arrays.items():
            if block is None or name not in st.input_names:
                columns[input_column(name)] = loggable(arr)
        pred = out["prediction"]
        columns["prediction"] = pred
        if "score" in out:
            columns["score"] = out["score"]
        for c, values in (out.get("proba") or {}).items():
            columns[f"proba_{c}"] = values
        plog = self._plog
        if plog is None or plog._closed_for_good:
            plog = self._plog = get_prediction_log()
            st.log_key = self._register_log(st)
        plog.record(st.log_key or "", columns, n, route=self.route, batch_id=batch_id, same=same)


class _Block(dict[str, Any]):
    """Checked numeric inputs as views of one (columns, rows) float block, which the log writes in one piece."""

    block: Any


def _filled(values: list[Any], default: Any) -> list[Any]:
    """``values`` with missing ones (None, NaN) replaced by ``default``."""
    return [default if v is None or v != v else v for v in values]


def _any(values: Any) -> pa.Array:
    from keel.serving.validation import _arrow

    return _arrow(values)


def loggable(arr: Any) -> Any:
    """What the prediction log's frame takes for a column: NumPy for numbers (raw bytes), lists otherwise."""
    import numpy as np
    import pyarrow as pa

    if isinstance(arr, np.ndarray):
        return arr
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if pa.types.is_floating(t):
        return arr.to_numpy(zero_copy_only=False)
    if pa.types.is_timestamp(t):
        us = arr.cast(pa.timestamp("us", tz=t.tz), safe=False).cast(pa.int64())
        return us.to_numpy(zero_copy_only=False) if us.null_count == 0 else us.to_pylist()
    if (pa.types.is_integer(t) or pa.types.is_boolean(t)) and arr.null_count == 0:
        return arr.to_numpy(zero_copy_only=False)
    return arr.to_pylist()


def _unnamed(model: Any) -> Any:
    """A shallow copy of a scikit-learn model (or a Pipeline of them) without ``feature_names_in_``, or None.

    The signature check has already put the columns in the model's order, so the
    model's own column-name check is redundant; without it a float matrix can be
    passed instead of a DataFrame, which costs ~10x less for a one-row request.
    Pipelines that select columns by name (ColumnTransformer) keep their names: None.
    """
    import copy

    steps = getattr(model, "steps", None)
    if isinstance(steps, list):
        out = copy.copy(model)
        new = []
        for name, est in steps:
            if est in (None, "passthrough"):
                new.append((name, est))
                continue
            stripped = _unnamed(est)
            if stripped is None:
                return None
            new.append((name, stripped))
        out.steps = new
        return out
    if type(model).__name__ in ("ColumnTransformer", "FunctionTransformer", "FeatureUnion") or hasattr(model, "transformers"):
        return None
    if not callable(getattr(model, "predict", None)) and not callable(getattr(model, "transform", None)):
        return None
    out = copy.copy(model)
    if "feature_names_in_" in vars(out):
        del out.feature_names_in_
    return out


def _numeric_block(st: _State, columns: Mapping[str, Any], n: int) -> Any:
    """All-numeric input as one (columns, rows) float64 block, in one Arrow conversion; None for the general path.

    Anything unusual (a missing or extra column, a non-number, a null where not
    nullable, a fraction in an integer column) goes to the column-by-column
    checks, which report it.
    """
    import itertools

    import numpy as np
    import pyarrow as pa

    specs = st.inputs
    if len(columns) != len(specs):
        return None
    if isinstance(columns, RowColumns):  # records: one conversion of every value, then the columns picked in signature order
        try:
            order = [columns.names.index(c.name) for c in specs]
            flat = pa.array(list(itertools.chain.from_iterable(columns.rows)), from_pandas=True)
        except (ValueError, pa.ArrowInvalid, pa.ArrowTypeError):
            return None
        if not (pa.types.is_floating(flat.type) or pa.types.is_integer(flat.type)) or len(flat) != n * len(specs):
            return None
        rows = flat.to_numpy(zero_copy_only=False).astype("float64", copy=False).reshape(n, len(specs))
        block = rows.T[order] if order != list(range(len(specs))) else rows.T
        return _checked_block(np.ascontiguousarray(block), specs)
    try:
        parts = [columns[c.name] for c in specs]
    except KeyError:
        return None
    if all(isinstance(p, list) and len(p) == n for p in parts):
        try:
            flat = pa.array(list(itertools.chain.from_iterable(parts)), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return None
        if not (pa.types.is_floating(flat.type) or pa.types.is_integer(flat.type)):
            return None
        block = flat.to_numpy(zero_copy_only=False).astype("float64", copy=False).reshape(len(specs), n)
    elif all(isinstance(p, np.ndarray) and p.shape == (n,) and p.dtype.kind in "iuf" for p in parts):
        block = np.stack(parts).astype("float64", copy=False)
    elif all(isinstance(p, pa.Array | pa.ChunkedArray) and len(p) == n and (pa.types.is_floating(p.type) or pa.types.is_integer(p.type))
             for p in parts):  # Arrow columns (batch scoring): one copy into the block, NaN for nulls
        block = np.empty((len(specs), n), dtype="float64")
        for j, p in enumerate(parts):
            col = p.cast(pa.float64())
            block[j] = col.to_numpy(zero_copy_only=False) if isinstance(col, pa.Array) else col.to_numpy()
    else:
        return None
    return _checked_block(block, specs)


def _checked_block(block: Any, specs: list[ColSpec]) -> Any:
    """``block`` if no column has a null where not nullable and integer columns hold whole numbers, else None."""
    import numpy as np

    nan = np.isnan(block)
    if nan.any():
        bad = nan.any(axis=1)
        if any(b and not c.nullable for b, c in zip(bad.tolist(), specs, strict=True)):
            return None
    ints = [j for j, c in enumerate(specs) if c.type == "integer"]
    if ints:
        sub = block[ints]
        if not np.array_equal(sub[~np.isnan(sub)], np.round(sub[~np.isnan(sub)])):
            return None
    return np.ascontiguousarray(block)


def _has_contracts(name: str) -> bool:
    try:
        from keel.contracts.targets import contract_files

        return bool(contract_files(name))
    except Exception:  # no project configuration: nothing attached
        return False


def _enforce(name: str, arrays: dict[str, pa.Array]) -> None:
    import pyarrow as pa

    from keel.contracts import enforce

    enforce(name, pa.table(arrays), stage="serving")


__all__ = ["POLICIES", "ColumnError", "InputError", "Prediction", "Predictor"]
