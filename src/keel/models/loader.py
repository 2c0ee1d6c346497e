"""``keel.load_model``: resolve a model URI, verify every file's sha256, then unpickle.

URIs: ``models:/churn@production`` (an environment or alias), ``models:/churn/3``,
``models:/churn/latest``, ``runs:/<run_id>/model``. A version resolved by alias
is cached and re-resolved only when the alias moves: each call costs one
primary-key read of the alias row.
"""

from __future__ import annotations

import json
import logging
import pickle
import platform
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from keel.errors import IntegrityError, NotFoundError, ValidationError, did_you_mean
from keel.models import flavors
from keel.models.package import EXAMPLE_FILE, META_FILE, PICKLE_FILE
from keel.models.signature import ColSpec, Signature
from keel.store.metadata import MetadataStore, get_metadata_store, like_escape, ms_to_datetime
from keel.store.schema import artifacts
from keel.store.schema.registry import model_aliases, model_versions, registered_models

log = logging.getLogger("keel.models")
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+|latest)|@(?P<alias>[A-Za-z0-9_\-.]+))$")
_RUN_URI = re.compile(r"^runs:/(?P<run>[0-9a-fA-F]{6,32})/(?P<path>.+)$")


@dataclass
class Source:
    """Where a loaded model came from."""

    uri: str
    run_id: str
    path: str
    owner_kind: str  # "run" | "model_version"
    owner_id: str
    model: str | None = None
    version: int | None = None
    alias: str | None = None

    @property
    def label(self) -> str:
        return f"model version {self.model}/{self.version}" if self.model else f"model {self.path} of run {self.run_id}"


@dataclass
class Model:
    """A packaged model: ``predict`` checks its input against the signature first."""

    model: Any
    flavor: str
    signature: Signature
    meta: dict[str, Any]
    source: Source
    input_example: Any = None
    environment_warnings: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"<keel.Model {self.source.label} flavor={self.flavor}>"

    @property
    def feature_service(self) -> str | None:
        return self.meta.get("feature_service")

    def predict(self, data: Any) -> Any:
        """Predictions for a DataFrame (or Arrow table, dict of columns, list of rows)."""
        frame = self.signature.check(data, what=self.source.label)
        return flavors.predict(self.model, self.flavor, frame)

    def predict_proba(self, data: Any) -> Any:
        """Class probabilities (n, k); a ValidationError for models without predict_proba."""
        frame = self.signature.check(data, what=self.source.label)
        out = flavors.predict_proba(self.model, self.flavor, frame)
        if out is None:
            raise ValidationError(f"{self.source.label} ({self.meta.get('class')}) has no predict_proba.", hint="Use predict().")
        return out


def parse_uri(uri: str) -> tuple[str, dict[str, str]]:
    """("models", {name, version|alias}) or ("runs", {run, path})."""
    if not isinstance(uri, str):
        raise ValidationError(f"Model URI {uri!r} is not a string.", hint="Use 'models:/churn@production', 'models:/churn/3' or 'runs:/<run_id>/model'.")
    m = _URI.match(uri)
    if m:
        return "models", {k: v for k, v in m.groupdict().items() if v is not None}
    r = _RUN_URI.match(uri)
    if r:
        return "runs", r.groupdict()
    raise ValidationError(
        f"Model URI {uri!r} is not understood.",
        hint="Use 'models:/NAME@ALIAS', 'models:/NAME/VERSION', 'models:/NAME/latest' or 'runs:/<run_id>/<path>'.",
    )


def model_id(conn: sa.Connection, name: str) -> int:
    found = conn.execute(sa.select(registered_models.c.id).where(registered_models.c.name == name)).scalar()
    if found is None:
        names = list(conn.execute(sa.select(registered_models.c.name)).scalars())
        raise NotFoundError(f"No registered model named {name!r}." + did_you_mean(name, names), hint="List them with `keel models ls`.")
    return int(found)


def resolve_alias(conn: sa.Connection, mid: int, name: str, alias: str) -> tuple[int, int]:
    """(version, revision) held by an environment or alias."""
    row = conn.execute(
        sa.select(model_aliases.c.version, model_aliases.c.revision).where(model_aliases.c.model_id == mid, model_aliases.c.name == alias)
    ).first()
    if row is None:
        held = list(conn.execute(sa.select(model_aliases.c.name).where(model_aliases.c.model_id == mid)).scalars())
        raise NotFoundError(
            f"Model {name!r} has no version in {alias!r}." + did_you_mean(alias, held),
            hint=f"Set one with `keel models promote {name} VERSION --to {alias}` (or `keel models alias`)."
            + (f" It has: {', '.join(sorted(held))}." if held else ""),
        )
    return int(row[0]), int(row[1])


def version_row(conn: sa.Connection, mid: int, name: str, version: int | str) -> Any:
    """The model_versions row of ``version`` (a number, tombstones included, or 'latest': the newest live one)."""
    q = sa.select(model_versions).where(model_versions.c.model_id == mid)
    if version == "latest":
        live = q.where(model_versions.c.deleted_ms.is_(None), model_versions.c.archived_ms.is_(None))
        row = conn.execute(live.order_by(model_versions.c.version.desc()).limit(1)).first()
    else:
        row = conn.execute(q.where(model_versions.c.version == int(version))).first()
    if row is None:
        have = list(conn.execute(sa.select(model_versions.c.version).where(model_versions.c.model_id == mid).order_by(model_versions.c.version)).scalars())
        raise NotFoundError(
            f"Model {name!r} has no version {version}.",
            hint=f"Its versions are {', '.join(map(str, have))}." if have else f"Register one with keel.register_model('runs:/<run_id>/model', {name!r}).",
        )
    return row


def _files(conn: sa.Connection, kind: str, owner: str, path: str) -> dict[str, str]:
    rows = conn.execute(
        sa.select(artifacts.c.path, artifacts.c.digest).where(
            artifacts.c.owner_kind == kind, artifacts.c.owner_id == owner, artifacts.c.path.like(like_escape(path) + "/%", escape="\\")
        )
    ).all()
    return {p[len(path) + 1 :]: d for p, d in rows}


class _Cache:
    def __init__(self, size: int = 16) -> None:
        self.items: OrderedDict[tuple[Any, ...], tuple[Any, Model]] = OrderedDict()
        self.size = size
        self.lock = threading.Lock()

    def get(self, key: tuple[Any, ...], stamp: Any) -> Model | None:
        with self.lock:
            hit = self.items.get(key)
            if hit is None or hit[0] != stamp:
                return None
            self.items.move_to_end(key)
            return hit[1]

    def put(self, key: tuple[Any, ...], stamp: Any, model: Model) -> None:
        with self.lock:
            self.items[key] = (stamp, model)
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.items.clear()


_cache = _Cache()


def clear_cache() -> None:
    _cache.clear()


def locate(uri: str, store: MetadataStore | None = None) -> tuple[Source, dict[str, str], Any]:
    """(source, {file: sha256}, cache stamp) of a model URI, without loading anything."""
    kind, parts = parse_uri(uri)
    store = store or get_metadata_store()
    with store.read() as conn:
        if kind == "runs":
            from keel.tracking.query import resolve_run_id

            run_id = resolve_run_id(conn, parts["run"])
            path = parts["path"].strip("/")
            src = Source(uri, run_id, path, "run", run_id)
            stamp: Any = None
        else:
            name = parts["name"]
            mid = model_id(conn, name)
            alias = parts.get("alias")
            version: int | str
            if alias:
                version, revision = resolve_alias(conn, mid, name, alias)
                stamp = (version, revision)
            else:
                version, stamp = parts["version"], None
            row = version_row(conn, mid, name, version)
            if row.deleted_ms is not None:
                raise NotFoundError(
                    f"Version {row.version} of model {name!r} was deleted on {ms_to_datetime(row.deleted_ms):%Y-%m-%d %H:%M} UTC; its files are gone.",
                    hint=f"Its record and lineage remain (keel models show {name} {row.version}); load another version.",
                )
            src = Source(uri, row.run_id, row.artifact_path, "model_version", str(row.id), name, int(row.version), alias)
            if stamp is None:
                stamp = ("version", int(row.version))
        files = _files(conn, src.owner_kind, src.owner_id, src.path)
    if PICKLE_FILE not in files or META_FILE not in files:
        raise NotFoundError(
            f"{src.label} has no packaged model under '{src.path}/' (found: {', '.join(sorted(files)) or 'nothing'}).",
            hint="Log it with keel.log_model(model, name=...) and use that name in the URI.",
        )
    return src, files, stamp


def _fetch(src: Source, path: str, digest: str) -> bytes:
    from keel.store.blobs import get_artifact_store

    try:
        return get_artifact_store().get_bytes(digest, what=f"{src.path}/{path} of {src.label}")
    except IntegrityError as exc:
        raise IntegrityError(
            f"Refusing to load {src.label}: {src.path}/{path} is corrupted or tampered with: "
            f"expected sha256 {exc.detail.get('expected', digest)}, found {exc.detail.get('found')}.",
            hint="Restore the blob from a backup, or log and register the model again.",
            expected=exc.detail.get("expected", digest),
            found=exc.detail.get("found"),
            model=src.model,
            version=src.version,
        ) from None


def _signature(meta: dict[str, Any]) -> Signature:
    if meta.get("signature"):
        return Signature.from_dict(meta["signature"])
    return Signature([ColSpec(str(n), "any", True) for n in meta.get("feature_names") or []])


def _environment_warnings(meta: dict[str, Any]) -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    py = str(meta.get("python") or "")
    if py and py.rsplit(".", 1)[0] != platform.python_version().rsplit(".", 1)[0]:
        out.append(f"python {py} at packaging, {platform.python_version()} now")
    packages = meta.get("packages") or {}
    if isinstance(packages, list):
        packages = dict(p.split("==", 1) for p in packages if "==" in p)
    for dist, want in packages.items():
        try:
            have = version(dist)
        except PackageNotFoundError:
            out.append(f"{dist}=={want} at packaging, not installed now")
            continue
        if have != want:
            out.append(f"{dist}=={want} at packaging, {have} now")
    return out


def load_model(uri: str, *, cache: bool = True) -> Model:
    """Load a packaged model; every file is verified against its sha256 before unpickling.

    ``models:/churn@production`` is cached and re-resolved only when the alias moves.
    With ``KEEL_TRACKING_URI`` the server resolves the URI and the files are
    streamed from it, each checked against its sha256 on arrival.
    """
    from keel.store.remote import client

    if (remote := client()) is not None:
        return _load_remote(remote, uri, cache)
    store = get_metadata_store()
    kind, parts = parse_uri(uri)
    alias_key = (store.uri, parts.get("name"), parts.get("alias")) if kind == "models" and "alias" in parts else None
    if cache and alias_key is not None:
        # the warm path: one primary-key read of the alias row, the model only if it moved
        with store.read() as conn:
            row = conn.execute(
                sa.select(model_aliases.c.version, model_aliases.c.revision)
                .join(registered_models, registered_models.c.id == model_aliases.c.model_id)
                .where(registered_models.c.name == parts["name"], model_aliases.c.name == parts["alias"])
            ).first()
        if row is not None:
            hit = _cache.get(alias_key, (int(row[0]), int(row[1])))
            if hit is not None:
                return hit
    src, files, stamp = locate(uri, store)
    key = (store.uri, src.owner_kind, src.owner_id, src.path)
    if cache:
        hit = _cache.get(key, stamp if src.owner_kind == "model_version" else tuple(sorted(files.items())))
        if hit is not None:
            return hit
    model = _assemble(src, files, lambda path: _fetch(src, path, files[path]))
    if cache:
        _cache.put(key, stamp if src.owner_kind == "model_version" else tuple(sorted(files.items())), model)
        if alias_key is not None:
            _cache.put(alias_key, stamp, model)
    return model


def _load_remote(remote: Any, uri: str, cache: bool) -> Model:
    """load_model through a keel server: one resolve call, then the files (only when not cached)."""
    parse_uri(uri)  # a malformed URI fails here, in one line, without a round trip
    found = remote.post_json("/v1/models/resolve", {"uri": uri})
    src = Source(**found["source"])
    files = {f: d["digest"] for f, d in found["files"].items()}
    urls = {f: d["url"] for f, d in found["files"].items()}
    key = ("remote", tuple(remote.uris), src.owner_kind, src.owner_id, src.path)
    stamp = tuple(sorted(files.items()))
    if cache and (hit := _cache.get(key, stamp)) is not None:
        return hit

    def fetch(path: str) -> bytes:
        try:
            return bytes(remote.download_bytes(urls[path], files[path], what=f"{src.path}/{path} of {src.label}"))
        except IntegrityError as exc:
            raise IntegrityError(
                f"Refusing to load {src.label}: {src.path}/{path} arrived corrupted: "
                f"expected sha256 {exc.detail.get('expected', files[path])}, found {exc.detail.get('found')}.",
                hint="Retry; if it persists, restore the blob on the server or log and register the model again.",
                expected=exc.detail.get("expected", files[path]), found=exc.detail.get("found"), model=src.model, version=src.version,
            ) from None

    model = _assemble(src, files, fetch)
    if cache:
        _cache.put(key, stamp, model)
    return model


def _assemble(src: Source, files: dict[str, str], fetch: Any) -> Model:
    """The Model from its package files (``fetch(path) -> bytes``, verified), meta first."""
    meta = json.loads(fetch(META_FILE))
    blob = fetch(PICKLE_FILE)
    try:
        raw = pickle.loads(blob)
    except Exception as exc:
        raise ValidationError(
            f"Cannot unpickle {src.label} ({meta.get('class')}): {type(exc).__name__}: {exc}.",
            hint=f"Install the packages it was packaged with: {', '.join(f'{k}=={v}' for k, v in (meta.get('packages') or {}).items())}.",
        ) from None
    example = None
    if EXAMPLE_FILE in files:
        import io

        import pandas as pd

        example = pd.read_parquet(io.BytesIO(fetch(EXAMPLE_FILE)))
    model = Model(raw, str(meta.get("flavor") or flavors.detect(raw)), _signature(meta), meta, src, example)
    model.environment_warnings = _environment_warnings(meta)
    if model.environment_warnings:
        log.warning("%s was packaged in another environment: %s", src.label, "; ".join(model.environment_warnings))
    return model
