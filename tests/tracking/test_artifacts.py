from pathlib import Path

import pytest

import keel
from keel.errors import IntegrityError, NotFoundError, ValidationError


def test_files_folders_dicts_tables_and_figures(project: Path, tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from keel.tracking.artifacts import download_artifact

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"\x00\x01")
    (folder / "sub").mkdir()
    (folder / "sub" / "meta.json").write_text("{}")
    (tmp_path / "notes.md").write_text("hello")
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    with keel.start_run() as run:
        assert keel.log_artifact(tmp_path / "notes.md") == ["notes.md"]
        assert sorted(keel.log_artifact(folder)) == ["model/sub/meta.json", "model/weights.bin"]
        keel.log_dict({"a": 1}, "cfg/params.yaml")
        keel.log_table(pd.DataFrame({"x": [1, 2]}), "preds.parquet")
        keel.log_figure(fig, "plots/curve.png")
        keel.log_text("t", "plain.txt")
    plt.close(fig)
    paths = {a["path"] for a in keel.get_run(run.id).artifacts}
    assert {"notes.md", "model/weights.bin", "model/sub/meta.json", "cfg/params.yaml", "preds.parquet", "plots/curve.png", "plain.txt"} <= paths
    out = download_artifact(run.id, "model", tmp_path / "restored")
    assert (out / "weights.bin").read_bytes() == b"\x00\x01" and (out / "sub" / "meta.json").exists()
    table = download_artifact(run.id, "preds.parquet", tmp_path / "dl")
    assert list(pd.read_parquet(table / "preds.parquet")["x"]) == [1, 2]
    with pytest.raises(NotFoundError, match=r"Did you mean 'notes\.md'"):
        download_artifact(run.id, "note.md", tmp_path / "x")


def test_escaping_names_and_missing_files_are_rejected(project: Path, tmp_path: Path) -> None:
    f = tmp_path / "f.txt"
    f.write_text("x")
    with keel.start_run() as run:
        with pytest.raises(ValidationError, match="escape"):
            keel.log_artifact(f, name="../../outside.txt")
        with pytest.raises(NotFoundError, match="does not exist"):
            keel.log_artifact(tmp_path / "missing.txt")
    assert all(a["path"].startswith("keel/") for a in keel.get_run(run.id).artifacts)


def test_tampered_artifact_is_refused(project: Path, tmp_path: Path) -> None:
    from keel.store.blobs import get_artifact_store
    from keel.tracking.artifacts import download_artifact

    f = tmp_path / "m.pkl"
    f.write_bytes(b"good")
    with keel.start_run() as run:
        keel.log_artifact(f)
    digest = next(a["digest"] for a in keel.get_run(run.id).artifacts if a["path"] == "m.pkl")
    blob = Path(get_artifact_store().backend.root) / "sha256" / digest[:2] / digest[2:]  # type: ignore[attr-defined]
    blob.write_bytes(b"bad!")
    with pytest.raises(IntegrityError, match=f"expected sha256 {digest}"):
        download_artifact(run.id, "m.pkl", tmp_path / "out")


def test_gc_removes_only_unreferenced_blobs(project: Path, tmp_path: Path) -> None:
    from keel.store.blobs import get_artifact_store
    from keel.store.gc import collect
    from keel.store.metadata import get_metadata_store
    from keel.tracking.query import delete_runs

    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("kept")
    b.write_text("dropped")
    with keel.start_run() as keep:
        keel.log_artifact(a)
    with keel.start_run() as drop:
        keel.log_artifact(b)
        keel.log_artifact(a, name="shared.txt")  # same content as the kept run's
    delete_runs([drop.id])
    blobs = get_artifact_store()
    young = collect(get_metadata_store(), blobs)  # within the grace period nothing goes
    assert young.deleted == [] and young.too_young == 1
    dry = collect(get_metadata_store(), blobs, grace_seconds=0, dry_run=True)
    assert len(dry.deleted) == 1 and blobs.exists(dry.deleted[0])
    report = collect(get_metadata_store(), blobs, grace_seconds=0)
    assert report.deleted == dry.deleted and not blobs.exists(report.deleted[0])
    assert (keep_digest := next(x["digest"] for x in keel.get_run(keep.id).artifacts if x["path"] == "a.txt"))
    assert blobs.get_bytes(keep_digest) == b"kept"
