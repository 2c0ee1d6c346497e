"""The prediction log in the lake: its layout, the writer of compacted rows, and the reader.

Every prediction keel makes (server, embedded predictor, batch scorer) becomes one
row of a typed Parquet dataset, partitioned by model, version and hour::

    <lake>/predictions/<model>/v<version>/<YYYY-MM-DDTHH>/part-<writer>-<seq>.parquet

A row holds the reserved columns (:data:`BASE_SCHEMA`: ``request_id``, ``ts``,
``model``, ``version``, ``route``, ``latency_ms``, ``batch_id``, ``status``,
``missing_features``), then one typed column per signature input (an input named
like a reserved column is stored as ``input_<name>``), then the outputs:
``prediction``, and for classifiers ``score`` (the positive class's probability,
or the top probability for multiclass, with one ``proba_<class>`` column each).

Lower layers (the features' skew check, monitoring) read it here, through
:func:`read`, without importing ``keel.serving``. Online writes go through the
local segments of :mod:`keel.store.prediction_log`; :func:`append` writes
already-compacted rows (batch scoring, tests).
"""

from __future__ import annotations

import base64
import json
import os
import re
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from keel.errors import ValidationError

if TYPE_CHECKING:
    import pyarrow as pa

    from keel.store.lake import Lake

ROOT = "predictions"
BASE_COLUMNS = ("request_id", "ts", "model", "version", "route", "latency_ms", "batch_id", "status", "missing_features")
OUTPUT_COLUMNS = ("prediction", "score")
RESERVED = frozenset((*BASE_COLUMNS, *OUTPUT_COLUMNS))
_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
HOUR_FORMAT = "%Y-%m-%dT%H"


def base_schema() -> pa.Schema:
    """The reserved columns every prediction row starts with."""
    import pyarrow as pa

    return pa.schema([
        ("request_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("model", pa.string()),
        ("version", pa.int64()),
        ("route", pa.string()),
        ("latency_ms", pa.float64()),
        ("batch_id", pa.string()),
        ("status", pa.string()),
        ("missing_features", pa.list_(pa.string())),
    ])


def input_column(name: str) -> str:
    """The log column of signature input ``name`` (reserved names get an ``input_`` prefix)."""
    return f"input_{name}" if name in RESERVED or name.startswith("proba_") else name


def arrow_type(signature_type: str) -> pa.DataType | None:
    """The Arrow type a signature type is logged as (None: inferred from the values)."""
    import pyarrow as pa

    return {
        "integer": pa.int64(),
        "double": pa.float64(),
        "boolean": pa.bool_(),
        "string": pa.string(),
        "category": pa.string(),
        "datetime": pa.timestamp("us", tz="UTC"),
    }.get(signature_type)


def _check_model(model: str) -> str:
    if not isinstance(model, str) or not _SAFE.match(model):
        raise ValidationError(f"Model name {model!r} cannot name a prediction log.", hint="Use letters, digits, '_', '-' and '.'.")
    return model


def dataset(model: str, version: int | None = None, hour: str | None = None) -> str:
    """The lake dataset name of a model's log, one version's, or one hour's partition."""
    name = f"{ROOT}/{_check_model(model)}"
    if version is not None:
        name += f"/v{int(version)}"
        if hour is not None:
            name += f"/{hour}"
    return name


def _utc(value: datetime | None, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ValidationError(f"{what}={value!r} is not a datetime.", hint="Pass a timezone-aware datetime, e.g. datetime.now(UTC) - timedelta(days=1).")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def normalize(table: pa.Table) -> pa.Table:
    """``table`` with the reserved columns first, typed, defaults filled (ts now, route "default", status "ok")."""
    import pyarrow as pa

    n = table.num_rows
    for required in ("model", "version", "request_id"):
        if required not in table.column_names:
            raise ValidationError(f"Prediction rows need a '{required}' column (got {', '.join(table.column_names)}).",
                                  hint="Give request_id, model and version for every row.")
    defaults: dict[str, Any] = {
        "ts": lambda: pa.array([datetime.now(UTC)] * n, pa.timestamp("us", tz="UTC")) if n else pa.array([], pa.timestamp("us", tz="UTC")),
        "route": lambda: pa.array(["default"] * n, pa.string()),
        "latency_ms": lambda: pa.nulls(n, pa.float64()),
        "batch_id": lambda: pa.nulls(n, pa.string()),
        "status": lambda: pa.array(["ok"] * n, pa.string()),
        "missing_features": lambda: pa.array([[]] * n, pa.list_(pa.string())),
    }
    columns: list[pa.Array | pa.ChunkedArray] = []
    fields: list[pa.Field] = []
    for field in base_schema():
        if field.name in table.column_names:
            col = table[field.name]
            if field.name == "ts" and pa.types.is_timestamp(col.type) and col.type.tz is None:
                col = col.cast(pa.timestamp("us")).cast(field.type)  # naive times are UTC
            try:
                col = col.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ValidationError(f"Prediction column '{field.name}' of type {col.type} cannot be {field.type}: {exc}.") from None
        else:
            col = defaults[field.name]()
        columns.append(col)
        fields.append(field)
    for name in table.column_names:
        if name not in BASE_COLUMNS:
            columns.append(table[name])
            fields.append(pa.field(name, table[name].type))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def write(table: pa.Table, *, writer: str | None = None, lake: Lake | None = None) -> list[str]:
    """Write normalized rows as one part per (model, version, hour); returns the parts written.

    With ``writer`` (e.g. ``host-pid-seq``) the part names are deterministic, so
    writing the same rows again replaces the parts instead of duplicating them.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from keel.store.lake import get_lake

    if table.num_rows == 0:
        return []
    lake = lake or get_lake()
    # the hour of each row as a number (strftime on every row costs more than the rest of the write)
    hours = pc.divide(table["ts"].cast(pa.int64()), pa.scalar(3_600_000_000, pa.int64()))
    keyed = table.append_column("__hour", hours)
    groups = keyed.group_by(["model", "version", "__hour"]).aggregate([]).to_pylist()
    written = []
    token = writer or f"{uuid.uuid4().hex}"
    for g in groups:
        if len(groups) == 1:
            part = table
        else:
            mask = pc.and_(pc.and_(pc.equal(keyed["model"], g["model"]), pc.equal(keyed["version"], pa.scalar(g["version"], pa.int64()))),
                           pc.equal(keyed["__hour"], pa.scalar(g["__hour"], pa.int64())))
            part = table.filter(mask)
        hour = datetime.fromtimestamp(g["__hour"] * 3600, UTC).strftime(HOUR_FORMAT)
        part = part.replace_schema_metadata({**(part.schema.metadata or {}), STATS_KEY: json.dumps(part_stats(part)).encode(),
                                             IDS_KEY: base64.b64encode(id_bloom(part["request_id"])).decode().encode()})
        written.append(lake.append(dataset(g["model"], g["version"], hour), part, part=token,
                                   options=parquet_options(part.schema, rows=part.num_rows)))
    return written


STATS_KEY = b"keel.stats"
IDS_KEY = b"keel.request_ids"  # a Bloom filter of the request ids' keys (see :func:`request_key`)
_BLOOM_HASHES = 7


def part_stats(part: pa.Table) -> dict[str, Any]:
    """The summary a part carries in its footer (``keel.stats``): rows, time range, rows per route and status, failures.

    Readers answer counts from it without scanning the part (see :func:`summaries`).
    """
    import pyarrow.compute as pc

    ts = pc.min_max(part["ts"].cast("int64"))
    status = pc.fill_null(part["status"], "ok")
    missing = pc.list_value_length(part["missing_features"]) if "missing_features" in part.column_names else None

    def counts(col: Any) -> dict[str, int]:
        return {str(r["values"]): int(r["counts"]) for r in pc.value_counts(col).to_pylist()}

    day = pc.floor(pc.divide(part["ts"].cast("int64").cast("float64"), 86_400e6)).cast("int64")
    return {"rows": part.num_rows, "ts_min_us": ts["min"].as_py(), "ts_max_us": ts["max"].as_py(),
            "versions": counts(part["version"]), "days": counts(day), "latency_bins": latency_histogram(part["latency_ms"]),
            "routes": counts(pc.fill_null(part["route"], "default")), "status": counts(status),
            "missing_features_rows": 0 if missing is None else int(pc.sum(pc.greater(pc.fill_null(missing, 0), 0)).as_py() or 0)}


def latency_edges() -> Any:
    """The latency histogram's bin edges (ms): 0, then 2^(k/32) from about 1 ns to 12 days (a bin is 2.2 % wide)."""
    import numpy as np

    global _EDGES
    if _EDGES is None:
        _EDGES = np.concatenate([[0.0], np.exp2(np.arange(-32 * 20, 32 * 30 + 1) / 32.0)])
    return _EDGES


_EDGES: Any = None


def latency_bin_counts(values: Any) -> Any:
    """Dense counts of float latencies (NumPy) per slot: 0 below 0 ms, 1 + i for bin i of :func:`latency_edges`
    (the last bin: its top edge or more), and the last slot NaN."""
    import numpy as np

    edges = latency_edges()
    values = np.asarray(values, np.float64)
    nan = np.isnan(values)
    counts = np.bincount(np.searchsorted(edges, values[~nan], side="right"), minlength=len(edges) + 2)
    counts[-1] += int(nan.sum())
    return counts


def latency_histogram(latency: Any) -> dict[str, Any]:
    """The non-null latencies' :func:`latency_bin_counts`, stored compactly: ``{"first": slot, "counts": [...]}``.

    Exact quantiles then need only the few values of the bins that hold the wanted ranks
    (see ``keel.loop.diagnose``); bins are compared with the edges as floats, never logs.
    """
    import numpy as np
    import pyarrow.compute as pc

    counts = latency_bin_counts(pc.drop_null(latency).to_numpy(zero_copy_only=False))
    used = np.flatnonzero(counts)
    if not len(used):
        return {"first": 0, "counts": []}
    return {"first": int(used[0]), "counts": counts[used[0]: used[-1] + 1].tolist()}


def add_histogram(into: Any, stored: dict[str, Any]) -> None:
    """Add a stored :func:`latency_histogram` to dense counts ``into``."""
    first, counts = int(stored["first"]), stored["counts"]
    into[first: first + len(counts)] += counts


def parquet_options(schema: pa.Schema, *, rows: int | None = None) -> dict[str, Any]:
    """How log parts are written: dictionaries only for text other than the request id; LZ4 except for floats;
    a Bloom filter on the request id (a lookup by id skips every part whose filter rules it out).

    Floats (most of a log) gain little from a dictionary or compression but cost
    the most to try them on, and request ids are unique.
    """
    import pyarrow as pa

    text = [f.name for f in schema if (pa.types.is_string(f.type) or pa.types.is_large_string(f.type)) and f.name != "request_id"]
    out: dict[str, Any] = {"use_dictionary": text,
                           "compression": {f.name: "none" if pa.types.is_floating(f.type) else "lz4" for f in schema}}
    if "request_id" in schema.names:
        out["bloom_filter_options"] = {"request_id": {"ndv": max(int(rows or 0), 1024), "fpp": 0.01}}
    return out


def append(table: pa.Table) -> None:
    """Write prediction rows (already compacted: batch scoring, tests) straight to the lake.

    ``request_id``, ``model`` and ``version`` are required; ``ts`` defaults to now,
    ``route`` to "default" and ``status`` to "ok".
    """
    write(normalize(table))


def _hour_of(name: str) -> datetime | None:
    try:
        return datetime.strptime(name.rsplit("/", 1)[-1], HOUR_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def partitions(model: str, *, start: datetime | None = None, end: datetime | None = None, version: int | None = None) -> list[str]:
    """The hour partitions of ``model``'s log that can hold rows in [start, end)."""
    from datetime import timedelta

    from keel.store.lake import get_lake

    start, end = _utc(start, "start"), _utc(end, "end")
    out = []
    for name in get_lake().datasets(dataset(model)):
        parts = name.split("/")
        if len(parts) != 4 or not parts[2].startswith("v"):
            continue
        if version is not None and parts[2] != f"v{int(version)}":
            continue
        hour = _hour_of(name)
        if hour is None:
            continue
        if start is not None and hour + timedelta(hours=1) <= start:
            continue
        if end is not None and hour >= end:
            continue
        out.append(name)
    return out


def files(model: str, *, start: datetime | None = None, end: datetime | None = None, version: int | None = None) -> list[str]:
    """Local paths of the part files that can hold ``model``'s rows in [start, end) (on S3: cached first)."""
    from keel.store.lake import get_lake

    lake = get_lake()
    if lake.remote is not None:
        return [str(p) for name in partitions(model, start=start, end=end, version=version) for p in lake.files(name)]
    return _local_files(lake.path(dataset(model)), _utc(start, "start"), _utc(end, "end"), version)


def _local_files(folder: Any, start: datetime | None, end: datetime | None, version: int | None) -> list[str]:
    """:func:`files` on a local lake: one scan of the version and hour folders (no recursive glob), same order."""
    from datetime import timedelta

    out: list[tuple[str, str]] = []
    try:
        versions = [e for e in os.scandir(folder) if e.name.startswith("v") and e.is_dir()]
    except FileNotFoundError:
        return []
    for v in versions:
        if version is not None and v.name != f"v{int(version)}":
            continue
        for h in os.scandir(v.path):
            hour = _hour_of(h.name)
            if hour is None or not h.is_dir():
                continue
            if (start is not None and hour + timedelta(hours=1) <= start) or (end is not None and hour >= end):
                continue
            partition = f"{v.name}/{h.name}"
            out += [(partition, f.name) for f in os.scandir(h.path) if f.name.endswith(".parquet") and f.is_file()]
    out.sort()
    return [os.path.join(folder, partition, name) for partition, name in out]


# ---- summaries: what a part holds, without scanning it --------------------------------

def request_key(request_id: str) -> str:
    """What the Bloom filter holds of a request id: the part before the first ':' (a batch's rows are ``ID:0``, ``ID:1``...)."""
    return request_id.split(":", 1)[0]


def _hashes(values: Any) -> Any:
    """64-bit hashes (FNV-1a over the UTF-8 bytes, then a splitmix64 finalizer) of a string array, vectorized."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    arr = pc.fill_null(arr.cast(pa.large_binary()), b"")
    n = len(arr)
    if n == 0:
        return np.zeros(0, np.uint64)
    offsets = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset: arr.offset + n + 1]
    data = np.frombuffer(arr.buffers()[2], np.uint8) if arr.buffers()[2] is not None else np.zeros(1, np.uint8)
    lengths = offsets[1:] - offsets[:-1]
    h = np.full(n, 0xCBF29CE484222325, np.uint64)
    prime = np.uint64(0x100000001B3)
    for j in range(int(lengths.max()) if n else 0):
        live = lengths > j
        byte = data[np.minimum(offsets[:-1] + j, len(data) - 1)].astype(np.uint64)
        h = np.where(live, (h ^ byte) * prime, h)
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h


def _hash_one(value: str) -> int:
    """:func:`_hashes` of one string, in plain Python (building an Arrow array for one value costs more than the probe)."""
    mask = (1 << 64) - 1
    h = 0xCBF29CE484222325
    for byte in value.encode():
        h = ((h ^ byte) * 0x100000001B3) & mask
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & mask
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & mask
    return h ^ (h >> 31)


def _bit_positions(h: Any, bits: int) -> Any:
    """The Bloom filter's bit positions of hashes ``h`` (double hashing), shape (len(h), hashes)."""
    import numpy as np

    h1, h2 = h & np.uint64(0xFFFFFFFF), (h >> np.uint64(32)) | np.uint64(1)
    i = np.arange(_BLOOM_HASHES, dtype=np.uint64)
    return (h1[:, None] + i[None, :] * h2[:, None]) & np.uint64(bits - 1)


def id_bloom(request_ids: Any) -> bytes:
    """A Bloom filter (about 1 % false positives) of the request keys of ``request_ids``; a power-of-two number of bits."""
    import numpy as np
    import pyarrow.compute as pc

    keys = pc.list_element(pc.split_pattern(request_ids, ":", max_splits=1), 0) if len(request_ids) else request_ids
    bits = 64
    while bits < 10 * max(len(request_ids), 1):
        bits *= 2
    filt = np.zeros(bits, np.bool_)
    filt[_bit_positions(_hashes(keys), bits).ravel().astype(np.int64)] = True
    return np.packbits(filt, bitorder="little").tobytes()


def _maybe_holding(blooms: list[bytes], request_id: str) -> list[bool]:
    """For each Bloom filter: can it hold ``request_id``'s key (False only when it certainly does not)."""
    import numpy as np

    h = np.array([_hash_one(request_key(request_id))], np.uint64)
    by_size: dict[int, Any] = {}
    out = []
    for bloom in blooms:
        bits = len(bloom) * 8
        if bits not in by_size:
            pos = _bit_positions(h, bits)[0].astype(np.int64)
            by_size[bits] = (pos >> 3, (pos & 7).astype(np.uint8))
        byte, bit = by_size[bits]
        out.append(bool(np.all((np.frombuffer(bloom, np.uint8)[byte] >> bit) & 1)))
    return out


def _summarize(path: str) -> tuple[dict[str, Any], bytes]:
    """A part's stats and request-id Bloom filter: from its footer, or (older parts) computed from its rows once."""
    import pyarrow.parquet as pq

    meta = pq.read_metadata(path).metadata or {}
    if STATS_KEY in meta and IDS_KEY in meta:
        return json.loads(meta[STATS_KEY]), base64.b64decode(meta[IDS_KEY])
    names = set(pq.read_schema(path).names)
    table = normalize(pq.read_table(path, columns=[c for c in BASE_COLUMNS if c in names]))
    return part_stats(table), id_bloom(table["request_id"])


_SUMMARIES: dict[str, tuple[int, int, dict[str, Any] | str, bytes]] = {}  # path -> (size, mtime_ns, stats (JSON until read), bloom)
_LOADED: set[str] = set()  # cache files read in this process


def _cache_file(model: str) -> Any:
    from keel.config import settings

    return settings().state_dir / "cache" / "prediction-summaries" / f"{_check_model(model)}.arrow"


def summaries(model: str, paths: list[str], *, stats: bool = True) -> list[tuple[dict[str, Any], bytes]]:
    """(stats, request-id Bloom filter) of each part in ``paths`` (``stats=False``: the filters only, stats left ``{}``).

    Cached in ``.keel/cache/prediction-summaries/<model>.arrow``, keyed by path, size
    and modification time (parts are written whole and renamed into place, so a
    changed part has another size or time); a stale or missing entry is read again.
    """
    import pyarrow as pa

    cache_file = _cache_file(model)
    if str(cache_file) not in _LOADED:
        _LOADED.add(str(cache_file))
        try:
            with pa.memory_map(str(cache_file)) as source:
                table = pa.ipc.open_file(source).read_all()
            columns = [table[c].to_pylist() for c in ("path", "size", "mtime_ns", "stats", "bloom")]
            for path, size, mtime_ns, text, bloom in zip(*columns, strict=True):
                _SUMMARIES[path] = (size, mtime_ns, text, bloom)  # the JSON is parsed when asked for
        except (OSError, pa.ArrowInvalid, KeyError, ValueError):
            pass  # no cache yet, or an unreadable one: rebuilt below
    out = []
    changed = False
    for path in paths:
        st = os.stat(path)
        hit = _SUMMARIES.get(path)
        if hit is None or hit[0] != st.st_size or hit[1] != st.st_mtime_ns:
            found, bloom = _summarize(path)
            hit = _SUMMARIES[path] = (st.st_size, st.st_mtime_ns, found, bloom)
            changed = True
        if stats and isinstance(hit[2], str):
            hit = _SUMMARIES[path] = (hit[0], hit[1], json.loads(hit[2]), hit[3])
        out.append((hit[2] if isinstance(hit[2], dict) else {}, hit[3]))
    if changed:
        _save_summaries(cache_file, model)
    return out


def _save_summaries(cache_file: Any, model: str) -> None:
    import pyarrow as pa

    root = os.path.join(str(_local_root(model)), "")
    for gone in [p for p in _SUMMARIES if p.startswith(root) and not os.path.exists(p)]:  # parts deleted (retention, gc)
        del _SUMMARIES[gone]
    rows = [(p, v) for p, v in _SUMMARIES.items() if p.startswith(root)]
    table = pa.table({"path": [p for p, _ in rows], "size": [v[0] for _, v in rows], "mtime_ns": [v[1] for _, v in rows],
                      "stats": [v[2] if isinstance(v[2], str) else json.dumps(v[2]) for _, v in rows], "bloom": pa.array([v[3] for _, v in rows], pa.binary())})
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(tmp, cache_file)
    except OSError:
        pass  # a read-only project still answers, only without the cache


def _local_root(model: str) -> Any:
    from keel.store.lake import get_lake

    return get_lake().path(dataset(model))


def files_holding(model: str, request_id: str) -> list[str]:
    """The parts of ``model``'s log that can hold ``request_id`` (or its batch rows ``ID:n``): the others' Bloom filters rule it out."""
    paths = files(model)
    if not paths:
        return []
    maybe = _maybe_holding([bloom for _, bloom in summaries(model, paths, stats=False)], request_id)
    return [p for p, keep in zip(paths, maybe, strict=True) if keep]


def models() -> list[str]:
    """The models that have logged predictions."""
    from keel.store.lake import get_lake

    lake = get_lake()
    if lake.remote is None:
        try:
            folders = [e for e in os.scandir(lake.path(ROOT)) if e.is_dir()]
        except FileNotFoundError:
            return []
        return sorted(e.name for e in folders if _SAFE.match(e.name) and _holds_parts(e.path))
    return sorted({name.split("/")[1] for name in lake.datasets(ROOT) if name.count("/") >= 1})


def _holds_parts(folder: str) -> bool:
    """Whether a model's folder holds a part file at any depth (stops at the first)."""
    for e in os.scandir(folder):
        if (e.is_dir() and _holds_parts(e.path)) or (e.is_file() and e.name.endswith(".parquet")):
            return True
    return False


def read(
    model: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    version: int | None = None,
    route: str | None = None,
    columns: list[str] | None = None,
) -> pa.Table:
    """``model``'s logged predictions with ``start <= ts < end``, oldest first.

    Only the hour partitions that can hold the window are read. No rows (or no log
    yet) give an empty table with the reserved columns, not an error.
    """
    import duckdb
    import pyarrow as pa

    from keel.store.lake import sql_string

    paths = files(model, start=start, end=end, version=version)
    if not paths:
        schema = base_schema()
        if columns:
            schema = pa.schema([schema.field(c) if c in schema.names else pa.field(c, pa.null()) for c in columns])
        return schema.empty_table()
    where: list[str] = []
    params: list[Any] = []
    if start is not None:
        where.append("ts >= ?")
        params.append(_utc(start, "start"))
    if end is not None:
        where.append("ts < ?")
        params.append(_utc(end, "end"))
    if version is not None:
        where.append("version = ?")
        params.append(int(version))
    if route is not None:
        where.append("route = ?")
        params.append(str(route))
    cols = "*" if not columns else ", ".join('"' + c.replace('"', '""') + '"' for c in columns)
    scan = f"read_parquet([{', '.join(sql_string(p) for p in paths)}], union_by_name = true)"
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        sql = f"SELECT {cols} FROM {scan}" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY ts, request_id"
        try:
            out = con.sql(sql, params=params).to_arrow_table()
        except duckdb.BinderException as exc:
            raise ValidationError(f"Cannot read columns {columns} of the prediction log of {model!r}: {exc}.") from None
    finally:
        con.close()
    for name in ("ts", "missing_features"):
        if name in out.column_names:
            out = out.set_column(out.column_names.index(name), name, out[name].cast(base_schema().field(name).type))
    return out
