"""``keel score --engine ray``: the batch scorer's chunk function on Ray Data, in an actor pool.

The driver lists the input's Parquet row groups (metadata only) with the number
of the first row of each, so every row keeps its row number as ``row_id``
wherever it is scored. Ray Data maps the list of row groups over an actor pool
(``concurrency`` actors); each actor loads the model once and runs
:func:`keel.serving.batch.score_chunk` — the same code path as local scoring —
on each row group it is given, writes the scored rows as one part of the output
folder and appends them to the prediction log with the job's batch id. Memory
holds one row group per actor. The actors run in the project's folder with its
settings, so they read the same metadata store, artifacts, lake and online store.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import ValidationError

if TYPE_CHECKING:
    from keel.serving.batch import ScoreResult
    from keel.serving.predictor import Predictor


def _row_groups(input: str | Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    p = Path(input)
    files = sorted(p.rglob("*.parquet")) if p.is_dir() else [p]
    if not files or any(f.suffix != ".parquet" for f in files):
        raise ValidationError(f"--engine ray scores Parquet input; {str(input)!r} is not Parquet.", hint="Convert it, or use --engine local.")
    out, first = [], 0
    for f in files:
        meta = pq.ParquetFile(f).metadata
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            out.append({"path": str(f.resolve()), "group": g, "first_row": first, "rows": n})
            first += n
    return out


class _Scorer:
    """A Ray actor: one model load, then one row group per call."""

    def __init__(self, root: str, env: dict[str, str], model_uri: str, output: str, batch_id: str, on_error: str, log: bool,
                 missing_features: str) -> None:
        os.environ.update(env)
        os.chdir(root)
        from keel import config
        from keel.serving.predictor import Predictor

        config.reset()
        self.predictor = Predictor(model_uri, log=False, missing_features=missing_features)
        self.output, self.batch_id, self.on_error, self.log = output, batch_id, on_error, log

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import pyarrow.parquet as pq

        from keel.serving.batch import score_chunk

        done: dict[str, list[Any]] = {"first_row": [], "rows_in": [], "rows_scored": [], "rows_skipped": [], "bad_rows": []}
        for path, group, first in zip(batch["path"], batch["group"], batch["first_row"], strict=True):
            table = pq.ParquetFile(str(path)).read_row_group(int(group))
            bad: list[dict[str, Any]] = []
            scored, skipped = score_chunk(self.predictor, table, int(first), batch_id=self.batch_id, on_error=self.on_error,
                                          log=self.log, bad=bad, direct_log=True)
            if scored is not None:
                part = Path(self.output) / f"part-{int(first):012d}.parquet"
                tmp = part.with_name(f".{part.name}.tmp")
                pq.write_table(scored, tmp)
                tmp.replace(part)
            done["first_row"].append(int(first))
            done["rows_in"].append(table.num_rows)
            done["rows_scored"].append(0 if scored is None else scored.num_rows)
            done["rows_skipped"].append(skipped)
            done["bad_rows"].append(str(bad[:10]))
        return done


def worker_env() -> dict[str, str]:
    """The KEEL_* settings a Ray worker needs to find this project's store, artifacts, lake and online store."""
    from keel.config import settings

    s = settings()
    env = {k: v for k, v in os.environ.items() if k.startswith("KEEL_")}
    env.update({"KEEL_METADATA_URI": str(s.metadata_uri), "KEEL_ARTIFACTS_URI": str(s.artifacts_uri), "KEEL_LAKE_URI": str(s.lake_uri),
                "KEEL_ONLINE_URI": str(s.online_uri)})
    return env


def connect_ray(address: str | None) -> Any:
    """Connect this driver to the Ray cluster at ``address`` (a local Ray when empty), once; returns the ``ray`` module."""
    from keel.serving.batch import _require_ray

    ray = _require_ray()
    if not ray.is_initialized():
        from keel.pipelines.executors import ray_runtime_env

        # the project ships as Ray's working_dir, as for pipeline steps: no driver paths reach the workers
        ray.init(address=address or None, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False,
                 runtime_env=ray_runtime_env())
    return ray


def score_on_ray(predictor: Predictor, model_uri: str, input: str | Path, output: str | Path, result: ScoreResult, *, chunk_rows: int,
                 on_error: str, log: bool, missing_features: str, concurrency: int) -> None:
    """Run the scoring job on the Ray cluster ``settings().ray_address`` names (local Ray when empty); ``output`` is a folder."""
    from keel.config import settings

    s = settings()
    groups = _row_groups(input)
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ValidationError(f"--engine ray writes a folder of Parquet parts; {str(output)!r} is a file.", hint="Give a folder path.")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part-*.parquet"):
        old.unlink()
    env = worker_env()
    connect_ray(str(s.ray_address))
    import ray.data

    ds = ray.data.from_items(groups)
    scored = ds.map_batches(
        _Scorer, fn_constructor_args=(str(s.root), env, model_uri, str(out.resolve()), result.batch_id, on_error, log, missing_features),
        batch_size=1, concurrency=max(1, concurrency), batch_format="numpy",
    )
    try:
        rows = scored.take_all()
    except Exception as exc:  # a chunk's ValidationError comes back wrapped by Ray
        cause = getattr(exc, "cause", None) or exc.__cause__
        if isinstance(cause, ValidationError):
            raise cause from None
        text = str(exc)
        if "ValidationError" in text:
            raise ValidationError(text.split("ValidationError:", 1)[-1].strip().splitlines()[0],
                                  hint="Fix the input, or pass --on-error skip.") from None
        raise
    for r in rows:
        result.rows_in += int(r["rows_in"])
        result.rows_scored += int(r["rows_scored"])
        result.rows_skipped += int(r["rows_skipped"])
        result.chunks += 1
    result.output = str(out)
