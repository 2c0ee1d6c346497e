"""Content fingerprints: one definition for tables and one for files and folders.

Everything that identifies data by content calls these: datasets logged with a
run, training sets, evaluations (the registry's gates match stored evaluations
by this fingerprint), pipeline file parameters and source triggers. Two paths
that see the same data must get the same fingerprint, so the table fingerprint
depends on the values and their logical type, not on how a library holds them:
a column gives the same digest as a NumPy ``int64`` or an Arrow ``int64[pyarrow]``
pandas column, as ``string`` or ``large_string``, as a categorical or its values,
and timestamps count by instant (any unit), so a training set written to Parquet
and read back keeps its fingerprint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import NotFoundError

if TYPE_CHECKING:
    import pyarrow as pa


def frame_fingerprint(data: Any) -> str:
    """sha256 over column names, logical types, null masks and every value.

    ``data`` is a pandas DataFrame or a pyarrow Table. Each column is digested
    on its own (vectorized: the value buffers are hashed, no loop over rows),
    two at a time (hashlib releases the GIL on large buffers); the column
    digests in order make the fingerprint. The index of a DataFrame is not part
    of its content.
    """
    from concurrent.futures import ThreadPoolExecutor

    columns = _columns(data)
    h = hashlib.sha256(b"keel-table-1\x1e")
    if len(columns) <= 1:
        digests = [_column_digest(name, col) for name, col in columns]
    else:
        with ThreadPoolExecutor(2) as pool:
            digests = list(pool.map(lambda nc: _column_digest(*nc), columns))
    for d in digests:
        h.update(d)
    return h.hexdigest()


def _columns(data: Any) -> list[tuple[str, Any]]:
    """(name, Arrow array or pandas Series) per column."""
    import pyarrow as pa

    if isinstance(data, pa.Table):
        return [(str(name), data.column(i)) for i, name in enumerate(data.column_names)]
    return [(str(data.columns[i]), data.iloc[:, i]) for i in range(data.shape[1])]


def _as_arrow(col: Any) -> pa.Array:
    import pyarrow as pa

    arr = col if isinstance(col, pa.Array | pa.ChunkedArray) else pa.array(col, from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr


def _logical(arr: pa.Array) -> tuple[str, pa.Array]:
    """(type name, array in a canonical physical form) for hashing."""
    import pyarrow as pa

    t = arr.type
    if pa.types.is_timestamp(t):
        return f"timestamp[{t.tz or ''}]", arr.cast(pa.timestamp("ns", tz=t.tz)).cast(pa.int64())
    if pa.types.is_date(t):
        return "date", arr.cast(pa.date32()).cast(pa.int32())
    if pa.types.is_duration(t):
        return "duration", arr.cast(pa.duration("ns")).cast(pa.int64())
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string", arr.cast(pa.large_string())
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return "binary", arr.cast(pa.large_binary())
    return str(t), arr


def _column_digest(name: str, col: Any) -> bytes:
    import numpy as np
    import pyarrow as pa

    try:
        arr = _as_arrow(col)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        arr = pa.array(col.astype(str).where(col.notna(), None))  # mixed Python objects: by their text
    type_name, arr = _logical(arr)
    h = hashlib.sha256(f"{name}\x1f{type_name}\x1f{len(arr)}\x1e".encode())
    t = arr.type
    if pa.types.is_floating(t):
        values = np.array(arr.to_numpy(zero_copy_only=False), copy=True)  # nulls come back as NaN
        missing = np.isnan(values)
        if missing.any():  # NaN and null are one missing value, as pandas has them
            h.update(np.ascontiguousarray(missing).data)
        values[missing | (values == 0)] = 0.0  # and -0.0 is 0.0
        h.update(np.ascontiguousarray(values).data)
        return h.digest()
    if arr.null_count:
        h.update(np.ascontiguousarray(arr.is_null().to_numpy(zero_copy_only=False)).data)
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        filled = arr.fill_null(False if pa.types.is_boolean(t) else 0) if arr.null_count else arr
        h.update(np.ascontiguousarray(filled.to_numpy(zero_copy_only=False)).data)
    elif pa.types.is_large_string(t) or pa.types.is_large_binary(t):
        filled = arr.fill_null("" if pa.types.is_large_string(t) else b"") if arr.null_count else arr
        _, offsets_buf, data_buf = filled.buffers()
        offsets = np.frombuffer(offsets_buf, dtype="<i8")[filled.offset : filled.offset + len(filled) + 1]
        h.update(np.ascontiguousarray(offsets - offsets[0]).data)
        if data_buf is not None:
            h.update(memoryview(data_buf)[int(offsets[0]) : int(offsets[-1])])
    else:  # nested and other types: their Arrow IPC bytes
        sink = pa.BufferOutputStream()
        batch = pa.record_batch([arr], names=["c"])
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        h.update(memoryview(sink.getvalue()))
    return h.digest()


def path_fingerprint(path: str | Path) -> str:
    """sha256 of a file's bytes, or of a folder's sorted (relative path, file sha256) list."""
    from keel.store.blobs import sha256_file

    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
        return h.hexdigest()
    raise NotFoundError(f"Path {str(path)!r} does not exist.", hint="Pass the path of an existing file or folder.")
