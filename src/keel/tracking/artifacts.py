"""Run artifacts: files, folders, dicts, text, figures and tables, stored by content."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from keel.errors import NotFoundError, ValidationError
from keel.store.blobs import ArtifactStore, check_artifact_path, get_artifact_store
from keel.store.metadata import MetadataStore, get_metadata_store, now_ms
from keel.store.remote import client
from keel.store.schema import artifacts
from keel.tracking.runs import Run, _require_run


def record(store: MetadataStore, owner_kind: str, owner_id: str, files: list[tuple[str, str, int, str | None]]) -> None:
    """Point (owner, path) at blobs, replacing earlier ones at the same paths, in one transaction."""
    if not files:
        return
    with store.write() as conn:
        conn.execute(
            sa.delete(artifacts).where(
                artifacts.c.owner_kind == owner_kind, artifacts.c.owner_id == owner_id, artifacts.c.path.in_([f[0] for f in files])
            )
        )
        conn.execute(
            sa.insert(artifacts),
            [
                {"owner_kind": owner_kind, "owner_id": owner_id, "path": p, "digest": d, "size": n, "media_type": m, "created_ms": now_ms()}
                for p, d, n, m in files
            ],
        )


def store_path(blobs: ArtifactStore, local: Path, name: str) -> list[tuple[str, str, int, str | None]]:
    """Put a file, or every file under a folder, into the blob store; returns rows for :func:`record`."""
    import mimetypes

    if local.is_dir():
        out = []
        for f in sorted(p for p in local.rglob("*") if p.is_file()):
            rel = f"{name}/{f.relative_to(local).as_posix()}"
            digest, size = blobs.put_file(f)
            out.append((check_artifact_path(rel), digest, size, mimetypes.guess_type(f.name)[0]))
        return out
    digest, size = blobs.put_file(local)
    return [(name, digest, size, mimetypes.guess_type(local.name)[0])]


def log_artifact(local_path: str | Path, name: str | None = None) -> list[str]:
    """Store a file or a folder with the active run; returns the stored artifact names."""
    run = _require_run()
    local = Path(local_path)
    if not local.exists():
        raise NotFoundError(f"Cannot log artifact: {local} does not exist.", hint="Pass the path of an existing file or folder.")
    target = check_artifact_path(name or local.name)
    return [r[0] for r in put_path(run, local, target)]


def put_path(run: Run, local: Path, name: str) -> list[tuple[str, str, int, str | None]]:
    """Store a file or folder as artifact ``name`` of ``run`` (uploaded when the run is on a server)."""
    log_files = getattr(run, "log_files", None)
    if log_files is not None:
        return log_files(local, name)
    rows = store_path(get_artifact_store(), local, name)
    record(run.store, "run", run.id, rows)
    return rows


def log_artifacts(local_dir: str | Path, name: str | None = None) -> list[str]:
    """Store every file under a folder (under ``name``, default the folder's own name)."""
    if not Path(local_dir).is_dir():
        raise ValidationError(f"log_artifacts needs a folder; {local_dir} is not one.", hint="Use keel.log_artifact for a file.")
    return log_artifact(local_dir, name)


def _log_bytes(data: bytes, name: str) -> str:
    name = check_artifact_path(name)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(name).name
        path.write_bytes(data)
        return log_artifact(path, name)[0]


def log_text(text: str, name: str) -> str:
    return _log_bytes(text.encode("utf-8"), name)


def log_dict(data: dict[str, Any], name: str) -> str:
    """Store a dict as JSON, or YAML when ``name`` ends in .yaml/.yml."""
    if name.endswith((".yaml", ".yml")):
        import yaml

        return log_text(yaml.safe_dump(data, sort_keys=False), name)
    return log_text(json.dumps(data, indent=2, default=str), name)


def log_figure(figure: Any, name: str) -> str:
    """Store a matplotlib figure (or anything with ``savefig``/``write_image``) as an image."""
    import io

    buf = io.BytesIO()
    fmt = Path(name).suffix.lstrip(".") or "png"
    if hasattr(figure, "savefig"):
        figure.savefig(buf, format=fmt, bbox_inches="tight")
    elif hasattr(figure, "write_image"):
        figure.write_image(buf, format=fmt)
    else:
        raise ValidationError(f"log_figure got a {type(figure).__name__}, not a figure.", hint="Pass a matplotlib Figure.")
    return _log_bytes(buf.getvalue(), name)


def log_table(data: Any, name: str) -> str:
    """Store a pandas DataFrame or Arrow table as Parquet (or CSV when ``name`` ends in .csv)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
    buf = io.BytesIO()
    if name.endswith(".csv"):
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, buf)
    else:
        pq.write_table(table, buf)
    return _log_bytes(buf.getvalue(), name)


def list_artifacts(run_id: str, store: MetadataStore | None = None) -> list[dict[str, Any]]:
    if store is None and (remote := client()) is not None:
        from keel.tracking import remote as via

        return via.list_artifacts(remote, run_id)
    store = store or get_metadata_store()
    with store.read() as conn:
        rows = conn.execute(
            sa.select(artifacts.c.path, artifacts.c.digest, artifacts.c.size, artifacts.c.media_type)
            .where(artifacts.c.owner_kind == "run", artifacts.c.owner_id == run_id)
            .order_by(artifacts.c.path)
        ).all()
    return [dict(r._mapping) for r in rows]


def download_artifact(run_id: str, name: str, dest: str | Path) -> Path:
    """Copy an artifact (a file, or every file under a folder name) to ``dest``, verifying hashes."""
    name = check_artifact_path(name)
    items = [a for a in list_artifacts(run_id) if a["path"] == name or a["path"].startswith(name + "/")]
    if not items:
        known = [a["path"] for a in list_artifacts(run_id)]
        from keel.errors import did_you_mean

        raise NotFoundError(f"Run {run_id} has no artifact {name!r}." + did_you_mean(name, known))
    remote = client()
    dest = Path(dest)
    for a in items:
        rel = a["path"][len(name) :].lstrip("/") or Path(name).name
        target = dest / rel if (len(items) > 1 or a["path"] != name) else (dest if dest.suffix else dest / rel)
        what = f"{a['path']} of run {run_id}"
        if remote is not None:  # streamed from the server, sha256-checked on arrival
            from keel.tracking.remote import artifact_path

            remote.download(artifact_path(run_id, a["path"]), target, a["digest"], what=what)
        else:
            get_artifact_store().get_file(a["digest"], target, what=what)
    return dest
