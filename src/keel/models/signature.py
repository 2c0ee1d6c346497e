"""Model signatures: the input columns (name, type, nullability) and the output a model produces.

A signature is inferred from an input example or the training data and
checked every time a packaged model is loaded and asked to predict, so a
missing column, a column of the wrong type or a null where the model never
saw one fails with a :class:`~keel.errors.ValidationError` naming the column,
instead of a wrong prediction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keel.errors import ValidationError, did_you_mean

TYPES = ("integer", "double", "boolean", "string", "datetime", "category", "any")
# what each declared type accepts
_ACCEPTS: dict[str, set[str]] = {
    "integer": {"integer"},
    "double": {"double", "integer"},
    "boolean": {"boolean"},
    "string": {"string", "category"},
    "category": {"category", "string"},
    "datetime": {"datetime"},
    "any": {"integer", "double", "boolean", "string", "datetime", "category"},
}


def type_of(dtype: Any) -> str:
    """The signature type of a pandas/NumPy/Arrow dtype."""
    import pandas as pd
    from pandas.api import types as pt

    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    if pt.is_bool_dtype(dtype):
        return "boolean"
    if pt.is_integer_dtype(dtype):
        return "integer"
    if pt.is_float_dtype(dtype):
        return "double"
    if pt.is_datetime64_any_dtype(dtype):
        return "datetime"
    text = str(dtype)
    if text.startswith("timestamp"):
        return "datetime"
    return "string"


@dataclass(frozen=True)
class ColSpec:
    name: str
    type: str
    nullable: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "nullable": self.nullable}


@dataclass
class Signature:
    """Input columns in the order the model wants them, and the output's description."""

    inputs: list[ColSpec]
    outputs: dict[str, Any] = field(default_factory=dict)
    _accepted: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.inputs]

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [c.to_dict() for c in self.inputs], "outputs": self.outputs}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        try:
            inputs = [ColSpec(str(c["name"]), str(c["type"]), bool(c.get("nullable", True))) for c in data["inputs"]]
        except (KeyError, TypeError) as exc:
            raise ValidationError(
                f"Signature {data!r} is malformed ({exc}).",
                hint='Give {"inputs": [{"name": "age", "type": "double", "nullable": false}, ...]} or let keel infer it.',
            ) from None
        for c in inputs:
            if c.type not in TYPES:
                raise ValidationError(f"Signature column '{c.name}' has type {c.type!r}." + did_you_mean(c.type, TYPES), hint=f"Use one of {', '.join(TYPES)}.")
        return cls(inputs, dict(data.get("outputs") or {}))

    def check(self, data: Any, *, what: str = "model") -> Any:
        """Validate a DataFrame against the inputs; returns it restricted to them, in order.

        Extra columns are dropped (a training set carries entity keys and labels).
        The dtypes of the last accepted input are remembered, so a stream of
        same-shaped requests pays for the type check once and for one null scan.
        """
        df = as_frame(data)
        if not self.inputs:  # nothing recorded about the inputs (e.g. an autologged model without names)
            return df
        names = self.names
        present = set(df.columns)
        missing = [n for n in names if n not in present]
        if missing:
            extra = [str(c) for c in df.columns if c not in set(names)]
            raise ValidationError(
                f"Input to {what} is missing column '{missing[0]}'"
                + (f" (and {len(missing) - 1} more: {', '.join(missing[1:6])})" if len(missing) > 1 else "")
                + "."
                + did_you_mean(missing[0], extra),
                hint=f"The model's signature needs columns {', '.join(names)}.",
                column=missing[0],
            )
        sub = df if list(df.columns) == names else df[names]
        dtypes = tuple(sub.dtypes)
        if dtypes != self._accepted and self._check_types(sub, what):
            self._accepted = dtypes
        strict = self._not_nullable
        if strict:
            nulls = sub[strict].isna().to_numpy().sum(axis=0)
            if nulls.any():
                i = int(nulls.nonzero()[0][0])
                raise ValidationError(
                    f"Input column '{strict[i]}' to {what} has {int(nulls[i])} null value(s); the signature says it is not nullable.",
                    hint=f"Fill or drop the nulls in '{strict[i]}', or log the model with a signature marking it nullable.",
                    column=strict[i],
                )
        return numpy_backed(sub)

    @property
    def _not_nullable(self) -> list[str]:
        return [c.name for c in self.inputs if not c.nullable]

    def _check_types(self, df: Any, what: str) -> bool:
        """Raise on a column of the wrong type; False when acceptance depended on the values."""
        by_dtype = True
        for c in self.inputs:
            col = df[c.name]
            found = type_of(col.dtype)
            if found in _ACCEPTS[c.type]:
                continue
            # an integer column that holds nulls arrives as float: accept it when the values are whole numbers
            if c.type == "integer" and found == "double" and c.nullable:
                values = col.dropna().to_numpy(dtype="float64")
                if (values == values.round()).all():
                    by_dtype = False
                    continue
            if found == "string" and col.dtype == object and len(col) and col.isna().all() and c.nullable:
                by_dtype = False
                continue
            raise ValidationError(
                f"Input column '{c.name}' to {what} has type {found} ({col.dtype}); the signature wants {c.type}.",
                hint=f"Cast it, e.g. df['{c.name}'] = df['{c.name}'].astype(...), or log the model with a signature that allows it.",
                column=c.name,
            )
        return by_dtype


def numpy_backed(df: Any) -> Any:
    """Arrow-backed columns (keel's training sets and online lookups) as NumPy ones.

    Models are mostly fit on NumPy-backed data, and scikit-learn cannot take
    ``pd.NA``: numbers become float64 with NaN where null (ints stay ints when
    complete), strings and others become objects with None.
    """
    import pandas as pd
    import pyarrow as pa

    arrow = [c for c, t in df.dtypes.items() if isinstance(t, pd.ArrowDtype)]
    if not arrow:
        return df
    out = df.copy(deep=False)
    for c in arrow:
        col = df[c]
        t = col.dtype.pyarrow_dtype
        has_null = bool(col.isna().any())
        if pa.types.is_floating(t) or (pa.types.is_integer(t) and has_null):
            out[c] = col.astype("float64")
        elif pa.types.is_integer(t):
            out[c] = col.astype(t.to_pandas_dtype())
        elif pa.types.is_boolean(t) and not has_null:
            out[c] = col.astype(bool)
        else:
            out[c] = col.astype(object).where(col.notna(), None)
    return out


def as_frame(data: Any) -> Any:
    """A pandas DataFrame from a DataFrame, Arrow table, dict of columns, or list of row dicts."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return data
    if hasattr(data, "to_pandas") and hasattr(data, "schema"):
        return data.to_pandas()
    if isinstance(data, dict):
        return pd.DataFrame({k: v if isinstance(v, list | tuple) or (hasattr(v, "__len__") and not isinstance(v, str)) else [v] for k, v in data.items()})
    if isinstance(data, list) and (not data or isinstance(data[0], dict)):
        return pd.DataFrame(data)
    raise ValidationError(
        f"Model input is a {type(data).__name__}, not a table.",
        hint="Pass a pandas DataFrame, a pyarrow Table, a dict of columns or a list of row dicts.",
    )


def infer_signature(data: Any, output: Any = None, *, allow_nan: bool = False) -> Signature:
    """Infer input columns (nullable when the data holds nulls) and describe ``output``.

    With ``allow_nan`` (a model that takes NaN itself) float columns are nullable
    whatever the sample holds: a training set without a NaN says little about the next batch.
    """
    df = as_frame(data)
    nulls = df.isna().any()
    inputs = []
    for c in df.columns:
        kind = type_of(df[c].dtype)
        inputs.append(ColSpec(str(c), kind, bool(nulls[c]) or (allow_nan and kind == "double")))
    return Signature(inputs, describe_output(output) if output is not None else {})


def describe_output(output: Any) -> dict[str, Any]:
    import numpy as np

    arr = np.asarray(output)
    return {"type": type_of(arr.dtype), "shape": [-1, *arr.shape[1:]]}
