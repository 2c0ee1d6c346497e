"""The ONNX flavor: an ONNX graph served with onnxruntime (CPU) through the same package, predictor and scorer.

    model = OnnxModel(open("model.onnx", "rb").read(), classes=[0, 1])
    keel.log_model(model, input_example=X.head(5))      # flavor "onnx"; model.onnx is stored beside model.pkl

A graph with one 2-D input takes the signature's columns as one float matrix in
their order; a graph with one input per column takes each column by name. The
probability output (the first 2-D float output, or ``proba_output``) makes
``predict_proba``; ``predict`` is the ``label_output`` when given, else the class
of the highest probability, else the first output. The session is created on
first use and never pickled: the package holds the graph's bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keel.errors import ValidationError, missing_extra

_NUMPY = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64", "tensor(int32)": "int32",
          "tensor(bool)": "bool", "tensor(string)": "object"}


class OnnxModel:
    """An ONNX graph with keel's model interface (``predict``, ``predict_proba``, ``classes_``)."""

    def __init__(self, model: bytes | str | Path | Any, *, classes: list[Any] | None = None, label_output: str | None = None,
                 proba_output: str | None = None) -> None:
        if isinstance(model, str | Path):
            model = Path(model).read_bytes()
        elif not isinstance(model, bytes) and hasattr(model, "SerializeToString"):
            model = model.SerializeToString()
        if not isinstance(model, bytes) or not model:
            raise ValidationError("OnnxModel needs the graph as bytes, a path to a .onnx file or an onnx.ModelProto.")
        self.onnx_bytes = model
        self.label_output = label_output
        self.proba_output = proba_output
        if classes is not None:
            import numpy as np

            self.classes_ = np.asarray(classes)
        self._session: Any = None
        self._load()  # fail now, not at the first request, on a graph onnxruntime cannot load

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_session"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._session = None

    def _load(self) -> Any:
        return self.session

    @property
    def session(self) -> Any:
        if self._session is None:
            try:
                import onnxruntime as ort
            except ImportError:
                raise missing_extra("onnxruntime", "onnx") from None
            try:
                self._session = ort.InferenceSession(self.onnx_bytes, providers=["CPUExecutionProvider"])
            except Exception as exc:
                raise ValidationError(f"onnxruntime cannot load the graph: {exc}.") from None
        return self._session

    def frame_of_tensor(self, example: Any) -> Any:
        """An example tensor ``[rows, features]`` as a frame named as :meth:`tensor_signature` names the columns."""
        from keel.models._torch import frame_of_tensor

        sig = self.tensor_signature()
        return frame_of_tensor(example, [c.name for c in sig.inputs] if sig is not None else None)

    def tensor_signature(self) -> Any:
        """The signature the graph's input tensors declare, or None (a 2-D input without a fixed width).

        One 2-D input ``[rows, k]`` gives columns ``<input>_0`` ... ``<input>_<k-1>``; one input per column gives its name.
        """
        from keel.models.signature import ColSpec, Signature

        inputs = self.session.get_inputs()
        kinds = {"tensor(float)": "double", "tensor(double)": "double", "tensor(float16)": "double", "tensor(int64)": "integer",
                 "tensor(int32)": "integer", "tensor(bool)": "boolean", "tensor(string)": "string"}
        if len(inputs) == 1 and len(inputs[0].shape or []) == 2:
            width = inputs[0].shape[1]
            if not isinstance(width, int):
                return None
            kind = kinds.get(inputs[0].type, "double")
            return Signature([ColSpec(f"{inputs[0].name}_{j}", kind, False) for j in range(width)])
        return Signature([ColSpec(i.name, kinds.get(i.type, "any"), False) for i in inputs])

    def _feed(self, frame: Any) -> dict[str, Any]:
        import numpy as np

        inputs = self.session.get_inputs()
        if len(inputs) == 1 and len(inputs[0].shape or []) == 2:
            dtype = _NUMPY.get(inputs[0].type, "float32")
            return {inputs[0].name: np.ascontiguousarray(frame.to_numpy(dtype=dtype) if hasattr(frame, "to_numpy") else np.asarray(frame, dtype=dtype))}
        feed = {}
        for i in inputs:
            if i.name not in getattr(frame, "columns", []):
                raise ValidationError(f"The ONNX graph's input '{i.name}' is not a column of the input.", hint="Name the columns as the graph's inputs.")
            col = frame[i.name].to_numpy().astype(_NUMPY.get(i.type, "float32"))
            feed[i.name] = col.reshape(-1, 1) if len(i.shape or []) == 2 else col
        return feed

    def _run(self, frame: Any) -> dict[str, Any]:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(None, self._feed(frame)), strict=True))

    def _proba_name(self) -> str | None:
        if self.proba_output:
            return self.proba_output
        for o in self.session.get_outputs():
            if o.type in ("tensor(float)", "tensor(double)") and len(o.shape or []) == 2 and o.name != self.label_output:
                return str(o.name)
        return None

    @property
    def predict_proba(self) -> Any:
        """Class probabilities (n, k), or None when the graph has no probability output."""
        name = self._proba_name()
        if name is None:
            return None

        def run(frame: Any) -> Any:
            import numpy as np

            out = np.asarray(self._run(frame)[name], dtype="float64")
            return np.column_stack([1.0 - out[:, 0], out[:, 0]]) if out.ndim == 2 and out.shape[1] == 1 else out

        return run

    def predict(self, frame: Any) -> Any:
        import numpy as np

        outputs = self._run(frame)
        if self.label_output:
            return np.asarray(outputs[self.label_output]).reshape(-1)
        proba = self.predict_proba
        if proba is not None and getattr(self, "classes_", None) is not None:
            return self.classes_[proba(frame).argmax(axis=1)]
        return np.asarray(next(iter(outputs.values()))).reshape(len(frame), -1)[:, 0]


def is_onnx(model: Any) -> bool:
    return isinstance(model, OnnxModel)
