"""Batch scoring (``keel score``): Arrow record batches through the predictor, Parquet out, in bounded memory.

    keel.serving.score("models:/churn@production", "data/customers.parquet", "scores.parquet")

The input (a Parquet or CSV file or folder) is read as a stream of record batches
of ``chunk_rows`` rows; each chunk goes through the same :class:`Predictor` path as
a served request (signature checks, feature fetch by entity key, prediction) and
is written at once to the output Parquet file with ``row_id`` (the row's number
in the input), the input's columns that are not model features (ids, entity keys,
passthrough columns), the outputs and ``model_version``. Memory
holds one chunk whatever the input's size.

Bad rows (nulls where the signature says not nullable) are reported with their
row numbers: ``on_error="fail"`` stops at the first bad chunk, ``"skip"`` leaves
them out and counts them; a column of the wrong type makes its whole chunk bad.
With ``log`` (the default) the scored rows go to the prediction log with a
``batch_id``, so batch-scored models are monitored like served ones.

``engine="ray"`` runs the same chunk function on Ray Data, in an actor pool with
one model load per actor (``KEEL_RAY_ADDRESS`` or ``ray_address`` picks the cluster).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import NotFoundError, ValidationError, missing_extra

if TYPE_CHECKING:
    import pyarrow as pa

    from keel.serving.predictor import Predictor

ON_ERROR = ("fail", "skip")
ENGINES = ("local", "ray")
MAX_BAD_SHOWN = 100


@dataclass
class ScoreResult:
    """What a scoring job did."""

    model: str
    version: int
    batch_id: str
    output: str
    rows_in: int = 0
    rows_scored: int = 0
    rows_skipped: int = 0
    chunks: int = 0
    seconds: float = 0.0
    engine: str = "local"
    logged: bool = True
    bad_rows: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _dataset(path: str | Path) -> Any:
    import pyarrow.dataset as ds

    p = Path(path)
    if not p.exists():
        raise NotFoundError(f"Input {str(path)!r} does not exist.", hint="Give a Parquet or CSV file, or a folder of them.")
    suffix = (next((f.suffix for f in sorted(p.rglob("*")) if f.suffix in (".parquet", ".csv")), ".parquet") if p.is_dir() else p.suffix).lower()
    fmt = "csv" if suffix == ".csv" else "parquet"
    return ds.dataset(str(p), format=fmt)


def _batches(data: Any, chunk_rows: int) -> Iterator[Any]:
    """The input's record batches of at most ``chunk_rows`` rows, in order, holding one Parquet row group at a time.

    The dataset scanner (and ``ParquetFile.iter_batches``) keep the buffers of what
    they read ahead: on a 10M-row file that is gigabytes. Row group by row group the
    memory is one row group plus one chunk.
    """
    import pyarrow.parquet as pq

    if getattr(data.format, "default_extname", "") != "parquet":
        yield from data.to_batches(batch_size=chunk_rows, batch_readahead=1, fragment_readahead=1)
        return
    import pyarrow as pa

    pending: list[Any] = []
    size = 0
    for path in data.files:
        f = pq.ParquetFile(path)
        for i in range(f.num_row_groups):
            for batch in f.read_row_group(i).to_batches(max_chunksize=chunk_rows):
                pending.append(batch)
                size += batch.num_rows
                if size >= chunk_rows:  # small row groups are joined into chunks of about chunk_rows
                    yield pending[0] if len(pending) == 1 else pa.Table.from_batches(pending).combine_chunks().to_batches()[0]
                    pending, size = [], 0
    if pending:
        yield pending[0] if len(pending) == 1 else pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


def _bad_mask(predictor: Predictor, table: pa.Table) -> Any:
    """Rows with a null in a column the signature says is not nullable (the row-level errors)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    mask = pa.array([False] * table.num_rows)
    for spec in predictor.request_columns:
        if not spec.nullable and spec.name in table.column_names:
            mask = pc.or_(mask, pc.is_null(table[spec.name], nan_is_null=True))
    return mask


def score_chunk(predictor: Predictor, table: pa.Table, first_row: int, *, batch_id: str, on_error: str, log: bool,
                bad: list[dict[str, Any]] | None = None, direct_log: bool = False) -> tuple[pa.Table | None, int]:
    """(scored rows with row_id, outputs and model_version, rows skipped) of one chunk.

    With ``log`` the rows go to the prediction log: appended to this process's
    local segment (compacted into the lake off the scoring path), or with
    ``direct_log`` written straight to the lake (Ray actors, whose processes and
    disks do not outlive the job).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from keel.serving.validation import InputError

    row_ids = pa.array(np.arange(first_row, first_row + table.num_rows, dtype=np.int64))
    wanted = {c.name for c in predictor.request_columns}
    skipped = 0
    mask = _bad_mask(predictor, table)
    n_bad = int(pc.sum(mask).as_py() or 0)
    if n_bad:
        rows = pc.filter(row_ids, mask).to_pylist()
        if on_error == "fail":
            raise ValidationError(f"{n_bad} input row(s) have nulls where the signature does not allow them; the first is row {rows[0]}.",
                                  hint="Fix the rows, or pass --on-error skip to score the others and report these.", rows=rows[:MAX_BAD_SHOWN])
        if bad is not None and len(bad) < MAX_BAD_SHOWN:
            bad.extend({"row": r, "error": "null in a non-nullable column"} for r in rows[: MAX_BAD_SHOWN - len(bad)])
        keep = pc.invert(mask)
        table, row_ids, skipped = table.filter(keep), row_ids.filter(keep), n_bad
    if table.num_rows == 0:
        return None, skipped
    inputs = table.select([c for c in table.column_names if c in wanted])
    columns = {name: inputs[name] for name in inputs.column_names}
    try:
        version, _arrays, outputs, absent = predictor.predict_batch(columns, table.num_rows)
    except InputError as exc:
        if on_error == "fail":
            raise ValidationError(f"Rows {first_row}-{first_row + table.num_rows - 1} cannot be scored: {exc.message}",
                                  hint="Fix the input, or pass --on-error skip.", errors=[e.to_dict() for e in exc.errors]) from None
        if bad is not None and len(bad) < MAX_BAD_SHOWN:
            bad.append({"rows": [int(row_ids[0].as_py()), int(row_ids[-1].as_py())], "error": exc.message})
        return None, skipped + table.num_rows
    results = _outputs(outputs)
    # the output keeps the row id, the columns that are not model features (ids, keys, passthrough) and the outputs;
    # the features themselves are in the input and, with log on, in the prediction log
    features = {c.name for c in predictor.model.signature.inputs} - {c.name for c in predictor.request_columns if predictor.feature_service}
    out = table.select([c for c in table.column_names if c not in features])
    out = out.append_column("row_id", row_ids) if "row_id" not in out.column_names else out
    for name, arr in results.items():
        out = out.append_column(name, arr)
    out = out.append_column("model_version", pa.array(np.full(out.num_rows, version, dtype=np.int64)))
    if log and direct_log:
        ids = pc.binary_join_element_wise(pa.scalar(batch_id), row_ids.cast(pa.string()), ":")
        _log_chunk(predictor, inputs, results, ids, version, batch_id, absent)
    elif log:
        _record_chunk(predictor, inputs, results, row_ids, batch_id, absent)
    return out, skipped


def _outputs(outputs: dict[str, Any]) -> dict[str, pa.Array]:
    import pyarrow as pa

    res = {"prediction": pa.array(outputs["prediction"])}
    if "score" in outputs:
        res["score"] = pa.array(outputs["score"], pa.float64())
    for c, values in (outputs.get("proba") or {}).items():
        res[f"proba_{c}"] = pa.array(values, pa.float64())
    return res


def _log_chunk(predictor: Predictor, inputs: pa.Table, results: dict[str, pa.Array], ids: pa.Array, version: int, batch_id: str,
               absent: list[list[str]] | None) -> None:
    import numpy as np
    import pyarrow as pa

    from keel.store import predictions
    from keel.store.predictions import input_column

    n = len(ids)
    if absent is None:  # no feature service: nothing can be missing; an empty list per row, built without a loop
        missing = pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], pa.string()))
    else:
        missing = pa.array(absent, pa.list_(pa.string()))
    cols: dict[str, Any] = {
        "request_id": ids,
        "model": pa.repeat(pa.scalar(predictor.name), n),
        "version": pa.repeat(pa.scalar(version, pa.int64()), n),
        "batch_id": pa.repeat(pa.scalar(batch_id), n),
        "missing_features": missing,
    }
    for name in inputs.column_names:
        cols[input_column(name)] = inputs[name]
    cols.update(results)
    predictions.append(pa.table(cols))


def _record_chunk(predictor: Predictor, inputs: pa.Table, results: dict[str, pa.Array], row_ids: pa.Array, batch_id: str,
                  absent: list[list[str]] | None) -> None:
    """The chunk as one frame of the local segment: numbers as raw bytes, request ids as ``<batch id>:<row>``."""
    import time

    from keel.serving.predictor import loggable
    from keel.store.predictions import input_column

    key = predictor.log_key()
    columns: dict[str, Any] = {"request_id": row_ids.to_numpy(zero_copy_only=False)}
    same: dict[str, Any] = {"request_id_prefix": batch_id, "ts": time.time_ns() // 1_000, "status": "ok"}
    if absent is None or not any(absent):
        same["missing_features"] = []
    else:
        columns["missing_features"] = absent
    for name in inputs.column_names:
        columns[input_column(name)] = loggable(inputs[name])
    for name, arr in results.items():
        columns[name] = arr.to_numpy(zero_copy_only=False) if arr.null_count == 0 else arr.to_pylist()
    from keel.store.prediction_log import get_prediction_log

    get_prediction_log().record(key, columns, len(row_ids), batch_id=batch_id, same=same)


def score(
    model_uri: str,
    input: str | Path,
    output: str | Path,
    *,
    chunk_rows: int = 65_536,
    on_error: str = "fail",
    log: bool = True,
    engine: str = "local",
    missing_features: str = "default",
    progress: Callable[[int, int], Any] | None = None,
    concurrency: int = 2,
) -> ScoreResult:
    """Score ``input`` with ``model_uri`` into the Parquet file ``output`` (see the module docstring).

    ``progress(rows_done, rows_total)`` is called after each chunk.
    """
    from keel.serving.predictor import Predictor

    if on_error not in ON_ERROR:
        raise ValidationError(f"on_error={on_error!r} is not a choice.", hint="Use 'fail' or 'skip'.")
    if engine not in ENGINES:
        raise ValidationError(f"engine={engine!r} is not an engine.", hint="Use 'local' or 'ray'.")
    if chunk_rows < 1:
        raise ValidationError(f"chunk_rows must be at least 1, got {chunk_rows}.")
    data = _dataset(input)
    predictor = Predictor(model_uri, log=False, missing_features=missing_features)
    batch_id = f"batch-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    result = ScoreResult(predictor.name, predictor.version, batch_id, str(output), engine=engine, logged=log)
    start = time.perf_counter()
    if engine == "ray":
        from keel.serving.batch_ray import score_on_ray

        score_on_ray(predictor, model_uri, input, output, result, chunk_rows=chunk_rows, on_error=on_error, log=log,
                     missing_features=missing_features, concurrency=concurrency)
    else:
        _score_local(predictor, data, Path(output), result, chunk_rows=chunk_rows, on_error=on_error, log=log, progress=progress)
    result.seconds = round(time.perf_counter() - start, 3)
    return result


def _score_local(predictor: Predictor, data: Any, output: Path, result: ScoreResult, *, chunk_rows: int, on_error: str, log: bool,
                 progress: Callable[[int, int], Any] | None) -> None:
    import pyarrow.parquet as pq

    total = data.count_rows()
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{uuid.uuid4().hex[:6]}.tmp")
    writer: pq.ParquetWriter | None = None
    try:
        for batch in _batches(data, chunk_rows):
            if batch.num_rows == 0:
                continue
            import pyarrow as pa

            table = pa.Table.from_batches([batch])
            scored, skipped = score_chunk(predictor, table, result.rows_in, batch_id=result.batch_id, on_error=on_error, log=log,
                                          bad=result.bad_rows)
            result.rows_in += table.num_rows
            result.rows_skipped += skipped
            result.chunks += 1
            if scored is not None:
                if writer is None:
                    writer = pq.ParquetWriter(tmp, scored.schema)
                elif scored.schema != writer.schema:
                    scored = scored.cast(writer.schema)
                writer.write_table(scored)
                result.rows_scored += scored.num_rows
            if progress is not None:
                progress(result.rows_in, total)
        if writer is None:
            raise ValidationError(f"No row of the input could be scored ({result.rows_in} read, {result.rows_skipped} skipped).",
                                  hint="See the bad rows reported; fix the input.", bad_rows=result.bad_rows[:10])
        writer.close()
        writer = None
        tmp.replace(output)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)


def _require_ray() -> Any:
    try:
        import ray
    except ImportError:  # pragma: no cover
        raise missing_extra("ray", "ray") from None
    return ray
