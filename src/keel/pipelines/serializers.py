"""How step outputs become bytes: tables as Parquet, arrays as .npy, JSON, pickle.

Each serializer has a name and a version; both go into cache keys, so a change
in how outputs are written never serves an output written the old way.
Models are pickled for now (the registry's packaging will take over).
"""

from __future__ import annotations

import io
import json
import math
import pickle
import sys
from dataclasses import dataclass
from typing import Any, Protocol

from keel.errors import ValidationError, did_you_mean


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


SERIALIZERS: dict[str, Serializer] = {
    s.name: s for s in (ParquetSerializer(), NumpySerializer(), JsonSerializer(), PickleSerializer())
}
SERIALIZERS["model"] = SERIALIZERS["pickle"]  # models: pickle until the registry packages them

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
        if not ser.accepts(obj):
            raise ValidationError(f"Serializer {name!r} cannot write a {type(obj).__name__}.", hint="Remove serializer= or pick another one.")
        return ser
    for ser in SERIALIZERS.values():
        if ser.accepts(obj):
            return ser
    return SERIALIZERS["pickle"]
