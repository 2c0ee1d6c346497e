"""The PyTorch flavor (CPU): an ``nn.Module`` served through the same package, predictor and scorer.

    keel.log_model(TorchModel(net, classes=[0, 1]), input_example=X.head(5))    # flavor "pytorch"

The module is stored as TorchScript (``model.pt`` beside ``model.pkl``; a module
TorchScript cannot compile is kept as a pickled module). It takes the
signature's columns as one float32 tensor ``[rows, columns]`` in their order. With
``classes`` its output is read as logits: one column goes through a sigmoid, k
columns through a softmax, and ``predict`` is the most probable class; without
``classes`` the output is the predicted value.
"""

from __future__ import annotations

import io
from typing import Any

from keel.errors import ValidationError, missing_extra


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise missing_extra("torch", "torch") from None
    return torch


class TorchModel:
    """A PyTorch module with keel's model interface (``predict``, ``predict_proba``, ``classes_``)."""

    def __init__(self, module: Any, *, classes: list[Any] | None = None, feature_names: list[str] | None = None) -> None:
        torch = _torch()
        if not isinstance(module, torch.nn.Module):
            raise ValidationError(f"TorchModel needs a torch.nn.Module, got {type(module).__name__}.")
        module = module.eval()
        buf = io.BytesIO()
        try:
            torch.jit.save(torch.jit.script(module), buf)
            self.format = "torchscript"
        except Exception:  # not scriptable: the pickled module (its class must be importable where it is loaded)
            buf = io.BytesIO()
            torch.save(module, buf)
            self.format = "pickle"
        self.module_bytes = buf.getvalue()
        if classes is not None:
            import numpy as np

            self.classes_ = np.asarray(classes)
        self._module: Any = module
        self.feature_names = list(feature_names) if feature_names is not None else None

    def frame_of_tensor(self, example: Any) -> Any:
        """An example tensor ``[rows, features]`` as the frame the signature is inferred from (columns ``feature_names`` or x0, x1, ...)."""
        return frame_of_tensor(example, getattr(self, "feature_names", None))

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_module"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._module = None

    @property
    def module(self) -> Any:
        if self._module is None:
            torch = _torch()
            buf = io.BytesIO(self.module_bytes)
            self._module = (torch.jit.load(buf, map_location="cpu") if self.format == "torchscript"
                            else torch.load(buf, map_location="cpu", weights_only=False)).eval()
        return self._module

    def _forward(self, frame: Any) -> Any:
        import numpy as np

        torch = _torch()
        x = np.ascontiguousarray(frame.to_numpy(dtype="float32") if hasattr(frame, "to_numpy") else np.asarray(frame, dtype="float32"))
        with torch.inference_mode():
            out = self.module(torch.from_numpy(x))
        return out.detach().cpu().numpy().astype("float64")

    @property
    def predict_proba(self) -> Any:
        """Class probabilities from the logits, or None for a model without ``classes``."""
        if getattr(self, "classes_", None) is None:
            return None

        def run(frame: Any) -> Any:
            import numpy as np

            z = self._forward(frame)
            if z.ndim == 1 or z.shape[1] == 1:
                p = 1.0 / (1.0 + np.exp(-z.reshape(-1)))
                return np.column_stack([1.0 - p, p])
            e = np.exp(z - z.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)

        return run

    def predict(self, frame: Any) -> Any:
        proba = self.predict_proba
        if proba is not None:
            return self.classes_[proba(frame).argmax(axis=1)]
        z = self._forward(frame)
        return z.reshape(len(z), -1)[:, 0]


def frame_of_tensor(example: Any, names: list[str] | None = None) -> Any:
    """A 2-D tensor (torch or NumPy) as a DataFrame of columns ``names`` (default ``x0``, ``x1``, ...); anything else unchanged."""
    import numpy as np
    import pandas as pd

    if hasattr(example, "detach") and hasattr(example, "numpy"):  # a torch.Tensor
        example = example.detach().cpu().numpy()
    if not isinstance(example, np.ndarray) or example.ndim != 2:
        return example
    cols = names or [f"x{j}" for j in range(example.shape[1])]
    if len(cols) != example.shape[1]:
        raise ValidationError(f"The example tensor has {example.shape[1]} features for {len(cols)} names.", hint="Give one name per column.")
    return pd.DataFrame(example, columns=cols)
