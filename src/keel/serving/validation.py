"""Request payloads to typed columns, checked column by column against the model's signature.

A request's rows become one Arrow array per column (``pyarrow.array`` infers the
JSON values' type in C++, no Python loop over rows), which is checked against the
signature's type and nullability and turned into the NumPy array the model gets.
Every problem is collected, one :class:`ColumnError` per column (missing, wrong
type, null where not nullable, unexpected), and raised together as an
:class:`InputError`: the server answers 422 with that list as its detail.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from keel.errors import KeelError, ValidationError, did_you_mean
from keel.models.signature import ColSpec

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

MAX_ROWS_SHOWN = 10


class BadRequest(KeelError):
    """A body that is not a well-formed request of its protocol (400), as opposed to input the signature refuses (422)."""

    http_status = 400


@dataclass
class ColumnError:
    """One column's problem: ``missing``, ``wrong_type``, ``null`` or ``unexpected``."""

    column: str
    problem: str
    message: str
    expected: str | None = None
    found: str | None = None
    rows: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


class InputError(ValidationError):
    """A request's input does not match the signature; ``errors`` holds one entry per column."""

    def __init__(self, errors: list[ColumnError], *, what: str) -> None:
        first = errors[0]
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        super().__init__(
            f"Input to {what} is not valid: {first.message}{more}.",
            hint="See detail.errors for every column; GET /v2/models/{name} lists the inputs the model takes.",
            errors=[e.to_dict() for e in errors],
        )
        self.errors = errors


class RowColumns(Mapping[str, Any]):
    """Records that all have the same keys, kept as rows (tuples in ``names`` order).

    A column is built only when asked for; the all-numeric fast path of the
    predictor reads the rows directly into one float block instead.
    """

    __slots__ = ("_cols", "_index", "names", "rows")

    def __init__(self, names: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        self.names = names
        self.rows = rows
        self._index = {k: i for i, k in enumerate(names)}
        self._cols: dict[str, list[Any]] = {}

    def __getitem__(self, name: str) -> list[Any]:
        col = self._cols.get(name)
        if col is None:
            i = self._index[name]
            col = self._cols[name] = [r[i] for r in self.rows]
        return col

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def _same_keys(payload: list[Any]) -> RowColumns | None:
    """The records as rows when every one is a dict with the first one's keys (one C-level pass), else None."""
    import operator

    first = payload[0]
    if type(first) is not dict or not first:
        return None
    names = tuple(map(str, first))
    try:
        if sum(map(len, payload)) != len(names) * len(payload):
            return None
        get = operator.itemgetter(*first)
        rows = list(map(get, payload))
    except (TypeError, KeyError):  # a record that is not an object, or lacks a key
        return None
    if len(names) == 1:
        rows = [(v,) for v in rows]
    return RowColumns(names, rows)


def columns_of(payload: Any) -> tuple[Mapping[str, Any], int]:
    """(columns, rows) from a list of row dicts, a dict of columns, a DataFrame or an Arrow table."""
    if hasattr(payload, "schema") and hasattr(payload, "column_names"):  # Arrow table / record batch
        return {name: payload.column(i) for i, name in enumerate(payload.column_names)}, int(payload.num_rows)
    if hasattr(payload, "to_dict") and hasattr(payload, "columns") and hasattr(payload, "dtypes"):  # DataFrame
        return {str(c): payload[c].to_numpy() for c in payload.columns}, len(payload)
    if type(payload) is dict and all(type(v) is list for v in payload.values()):  # the common JSON case, fast
        lengths = {len(v) for v in payload.values()}
        if len(lengths) > 1:
            raise BadRequest(f"The columns have different lengths {sorted(lengths)}.", hint="Give every column one value per row.", lengths=sorted(lengths))
        return {str(k): v for k, v in payload.items()}, (lengths.pop() if lengths else 0)
    if isinstance(payload, Mapping):
        cols: dict[str, Any] = {}
        sizes = set()
        for k, v in payload.items():
            if isinstance(v, str | bytes | int | float | bool) or v is None:
                v = [v]
            elif not isinstance(v, list | tuple) and not hasattr(v, "__len__"):
                raise BadRequest(f"Column {k!r} holds a {type(v).__name__}, not a list of values.", hint='Send {"columns": {"age": [31, 45]}}.')
            cols[str(k)] = v
            sizes.add(len(v))
        if len(sizes) > 1:
            raise BadRequest(f"The columns have different lengths {sorted(sizes)}.", hint="Give every column one value per row.", lengths=sorted(sizes))
        return cols, (sizes.pop() if sizes else 0)
    if isinstance(payload, Sequence) and not isinstance(payload, str | bytes):
        fast = _same_keys(payload) if type(payload) is list and payload else None
        if fast is not None:
            return fast, len(payload)
        names: dict[str, None] = {}
        for i, row in enumerate(payload):
            if not isinstance(row, Mapping):
                raise BadRequest(f"Record {i} is a {type(row).__name__}, not an object.", hint='Send {"records": [{"age": 31, "plan": "pro"}]}.', row=i)
            names.update(dict.fromkeys(row))
        return {str(k): [row.get(k) for row in payload] for k in names}, len(payload)
    raise BadRequest(f"Model input is a {type(payload).__name__}, not rows or columns.",
                          hint='Send {"records": [{...}, ...]} or {"columns": {"name": [...], ...}}.')


def _kind(t: pa.DataType) -> str:
    import pyarrow as pa

    if pa.types.is_null(t):
        return "null"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "double"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        return "string"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "datetime"
    return str(t)


def _arrow(values: Any) -> pa.Array:
    import pyarrow as pa

    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    if isinstance(values, pa.Array):
        return values
    return pa.array(values, from_pandas=True)


def _convert(spec: ColSpec, arr: pa.Array) -> tuple[pa.Array | None, str | None]:
    """The array cast to the signature's type, or (None, the type found)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    found = _kind(arr.type)
    want = spec.type
    if found == "null" or want == "any":
        return arr, None
    if want == "double" and found in ("double", "integer"):
        return arr.cast(pa.float64()), None
    if want == "integer":
        if found == "integer":
            return arr.cast(pa.int64()), None
        if found == "double":
            valid = pc.drop_null(arr)
            if pc.all(pc.equal(valid, pc.round(valid))).as_py() in (True, None):
                return arr.cast(pa.int64(), safe=False), None
        return None, found
    if want == "boolean" and found == "boolean":
        return arr, None
    if want in ("string", "category") and found == "string":
        return arr.cast(pa.string()), None
    if want == "datetime":
        try:
            if found == "string":
                return arr.cast(pa.timestamp("us", tz="UTC")), None
            if found == "datetime":
                if pa.types.is_timestamp(arr.type) and arr.type.tz is None:
                    arr = arr.cast(pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC"))
                return arr.cast(pa.timestamp("us", tz="UTC")), None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None, "string (not an ISO 8601 time)"
    return None, found


def check_columns(
    columns: Mapping[str, Any],
    n: int,
    specs: Sequence[ColSpec],
    *,
    what: str,
    allow_extra: Sequence[str] = (),
    nullable_override: Mapping[str, bool] | None = None,
) -> dict[str, pa.Array]:
    """Typed Arrow arrays, one per spec, in spec order; an InputError listing every bad column.

    A column in ``columns`` that is neither a spec nor in ``allow_extra`` is unexpected.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    errors: list[ColumnError] = []
    out: dict[str, pa.Array] = {}
    known = {s.name for s in specs} | set(allow_extra)
    for name in columns:
        if name not in known:
            errors.append(ColumnError(name, "unexpected", f"column '{name}' is not an input of the model" + did_you_mean(name, known)))
    for spec in specs:
        if spec.name not in columns:
            errors.append(ColumnError(spec.name, "missing", f"column '{spec.name}' is missing", expected=spec.type))
            continue
        try:
            arr = _arrow(columns[spec.name])
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError, OverflowError) as exc:
            errors.append(ColumnError(spec.name, "wrong_type", f"column '{spec.name}' mixes values of different types ({exc})", expected=spec.type, found="mixed"))
            continue
        if len(arr) != n:
            errors.append(ColumnError(spec.name, "wrong_type", f"column '{spec.name}' has {len(arr)} values for {n} rows", expected=spec.type))
            continue
        typed, found = _convert(spec, arr)
        if typed is None:
            errors.append(ColumnError(spec.name, "wrong_type", f"column '{spec.name}' holds {found} values; the signature wants {spec.type}",
                                      expected=spec.type, found=found))
            continue
        if pa.types.is_null(typed.type):
            target = _null_type(spec.type)
            typed = pa.nulls(n, target) if target is not None else typed
        nullable = spec.nullable if nullable_override is None else nullable_override.get(spec.name, spec.nullable)
        if typed.null_count and not nullable:
            rows = pc.indices_nonzero(pc.is_null(typed, nan_is_null=True)).to_pylist()
            errors.append(ColumnError(spec.name, "null", f"column '{spec.name}' has {typed.null_count} null value(s) at row(s) "
                                      f"{', '.join(map(str, rows[:MAX_ROWS_SHOWN]))}; the signature says it is not nullable",
                                      expected=spec.type, rows=rows[:MAX_ROWS_SHOWN]))
            continue
        out[spec.name] = typed
    if errors:
        raise InputError(errors, what=what)
    return out


def _null_type(kind: str) -> pa.DataType | None:
    from keel.store.predictions import arrow_type

    return arrow_type(kind)


def to_numpy(arr: pa.Array) -> np.ndarray:
    """The NumPy array a model gets: float64 with NaN for numbers with nulls, objects with None for text."""
    import numpy as np
    import pyarrow as pa

    t = arr.type
    if pa.types.is_floating(t):
        return arr.to_numpy(zero_copy_only=False)
    if pa.types.is_integer(t):
        return arr.to_numpy(zero_copy_only=False) if arr.null_count == 0 else arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
    if pa.types.is_boolean(t) and arr.null_count == 0:
        return arr.to_numpy(zero_copy_only=False)
    if pa.types.is_timestamp(t):
        return np.asarray(arr.to_pandas())
    return np.asarray(arr.to_pylist(), dtype=object)
