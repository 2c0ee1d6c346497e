"""Applied definitions: immutable, content-hashed versions in the metadata store.

``apply`` compares the project's definitions with the latest applied versions,
stores a new version of each changed object and a new *definitions version*
(the project's whole set), and refuses breaking changes (a removed feature or a
changed type that an applied feature service uses) unless told to go ahead.
Old versions are never changed, so a model pins the version it was trained on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from keel.errors import ConflictError, NotFoundError, did_you_mean
from keel.features.loader import KINDS, Definitions
from keel.store.metadata import get_metadata_store, now_ms
from keel.store.owners import seed_owners
from keel.store.schema.features import feature_consumers, feature_definitions, feature_objects


@dataclass
class Change:
    kind: str
    name: str
    action: str  # added | changed | removed
    old_version: int | None
    new_version: int | None
    details: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ApplyResult:
    definitions_version: int | None  # None: nothing was ever applied (dry run on an empty store)
    changed: bool
    changes: list[Change]
    breaking: list[str]
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "definitions_version": self.definitions_version, "changed": self.changed, "dry_run": self.dry_run,
            "changes": [c.to_dict() for c in self.changes], "breaking": self.breaking,
        }


def _latest(conn: sa.Connection) -> dict[tuple[str, str], dict[str, Any]]:
    """The latest applied version of every object that is part of the latest definitions version."""
    row = conn.execute(sa.select(feature_definitions.c.objects).order_by(feature_definitions.c.version.desc()).limit(1)).first()
    if row is None:
        return {}
    wanted: dict[str, int] = json.loads(row[0])
    out: dict[tuple[str, str], dict[str, Any]] = {}
    rows = conn.execute(sa.select(feature_objects))
    for r in rows.mappings():
        ref = f"{r['kind']}:{r['name']}"
        if wanted.get(ref) == r["version"]:
            out[(r["kind"], r["name"])] = {"version": r["version"], "hash": r["hash"], "spec": json.loads(r["spec"])}
    return out


def _max_versions(conn: sa.Connection) -> dict[tuple[str, str], int]:
    q = sa.select(feature_objects.c.kind, feature_objects.c.name, sa.func.max(feature_objects.c.version)).group_by(
        feature_objects.c.kind, feature_objects.c.name
    )
    return {(k, n): int(v) for k, n, v in conn.execute(q)}


def _field_diff(old: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """Human-readable differences, and {feature: 'removed'|'type a -> b'} for breaking checks."""
    details: list[str] = []
    broken: dict[str, str] = {}
    if "schema" in old and "schema" in new:
        o = {f["name"]: f["dtype"] for f in old["schema"]}
        n = {f["name"]: f["dtype"] for f in new["schema"]}
        for name in o.keys() - n.keys():
            details.append(f"- feature {name} ({o[name]})")
            broken[name] = "removed"
        for name in n.keys() - o.keys():
            details.append(f"+ feature {name} ({n[name]})")
        for name in o.keys() & n.keys():
            if o[name] != n[name]:
                details.append(f"~ feature {name}: type {o[name]} -> {n[name]}")
                broken[name] = f"type {o[name]} -> {n[name]}"
    if "aggregations" in old or "aggregations" in new:
        # an aggregation is a feature: a changed window, function or filter changes its meaning
        o_agg = {a["name"]: a for a in old.get("aggregations", [])}
        n_agg = {a["name"]: a for a in new.get("aggregations", [])}
        for name in o_agg.keys() - n_agg.keys():
            details.append(f"- aggregation {name}")
            broken[name] = "removed"
        for name in n_agg.keys() - o_agg.keys():
            details.append(f"+ aggregation {name}")
        for name in o_agg.keys() & n_agg.keys():
            diff = sorted(k for k in o_agg[name].keys() | n_agg[name].keys() if o_agg[name].get(k) != n_agg[name].get(k))
            if diff:
                details.append(f"~ aggregation {name}: {', '.join(diff)} changed")
                broken[name] = f"aggregation {', '.join(diff)} changed"
    for key in sorted(set(old) | set(new)):
        if key in ("schema", "kind", "name", "aggregations"):
            continue
        if old.get(key) != new.get(key):
            label = "transformation code" if key in ("transformation", "function") else key
            details.append(f"~ {label} changed")
    return sorted(details), broken


def plan(defs: Definitions, conn: sa.Connection) -> tuple[list[Change], list[str], dict[tuple[str, str], dict[str, Any]]]:
    latest = _latest(conn)
    maxv = _max_versions(conn)
    current = {(o.kind, o.name): o for o in defs.objects()}
    changes: list[Change] = []
    breaking: list[str] = []
    broken_features: dict[tuple[str, str], str] = {}  # (view, feature) -> why
    for key in sorted(current.keys() | latest.keys(), key=lambda k: (KINDS.index(k[0]), k[1])):
        kind, name = key
        obj, old = current.get(key), latest.get(key)
        if obj is not None and old is not None and obj.hash == old["hash"]:
            continue
        if obj is None and old is not None:
            changes.append(Change(kind, name, "removed", old["version"], None))
            for f in old["spec"].get("schema", []):
                broken_features[(name, f["name"])] = "view removed"
            continue
        assert obj is not None
        new_version = maxv.get(key, 0) + 1
        if old is None:
            changes.append(Change(kind, name, "added", None, new_version))
            continue
        details, broken = _field_diff(old["spec"], obj.spec())
        changes.append(Change(kind, name, "changed", old["version"], new_version, details))
        if kind in ("feature_view", "on_demand_feature_view"):
            for feat, why in broken.items():
                broken_features[(name, feat)] = why
    for (kind, sname), old in latest.items():
        if kind != "feature_service":
            continue
        for item in old["spec"]["features"]:
            for feat in item["features"]:
                reason = broken_features.get((item["view"], feat))
                if reason:
                    breaking.append(f"feature service '{sname}' v{old['version']} uses {item['view']}.{feat}: {reason}")
    return changes, breaking, latest


def apply(
    definitions: Definitions | str | None = None,
    *,
    allow_breaking: bool = False,
    dry_run: bool = False,
    validate: bool = True,
    user: str | None = None,
) -> ApplyResult:
    """Validate the definitions against their data and store a new version when anything changed.

    Example::

        keel.features.apply()          # what `keel features apply` runs
    """
    from keel.config import settings
    from keel.features.loader import as_definitions
    from keel.features.offline import validate_view

    defs = as_definitions(definitions)
    if validate:
        for view in defs.views.values():
            validate_view(view)

    store = get_metadata_store()
    ctx = store.read() if dry_run else store.write()
    with ctx as conn:
        changes, breaking, _ = plan(defs, conn)
        last = conn.execute(sa.select(sa.func.max(feature_definitions.c.version))).scalar()
        if dry_run or not changes:
            return ApplyResult(last, False, changes, breaking, dry_run)
        if breaking and not allow_breaking:
            raise ConflictError(
                "Breaking change to features that an applied feature service uses: " + "; ".join(breaking) + ".",
                hint="Keep the feature (or its type), release a new feature service, or apply with --allow-breaking.",
                breaking=breaking,
            )
        who = user or settings().acting_user
        ts = now_ms()
        current = {(o.kind, o.name): o for o in defs.objects()}
        rows = []
        for ch in changes:
            if ch.action == "removed":
                continue
            obj = current[(ch.kind, ch.name)]
            rows.append((ch.kind, ch.name, ch.new_version, obj.hash, json.dumps(obj.spec(), sort_keys=True), ts, who))
            if ch.action == "added" and "view" in ch.kind:  # a new view's owners: those it declares, else who applied it
                seed_owners(conn, "feature_view", ch.name, [o for o in str(getattr(obj, "owner", "") or "").split(",") if o.strip()] or [who])
        store.insert_many(conn, feature_objects, rows)
        latest_after = _latest_versions_after(conn, defs)
        version = int(last or 0) + 1
        try:
            conn.execute(
                feature_definitions.insert().values(
                    version=version, hash=defs.hash, objects=json.dumps(latest_after, sort_keys=True), created_ms=ts, created_by=who
                )
            )
        except sa.exc.IntegrityError:
            raise ConflictError("Another `keel features apply` ran at the same time.", hint="Run it again.") from None
    return ApplyResult(version, True, changes, breaking)


def _latest_versions_after(conn: sa.Connection, defs: Definitions) -> dict[str, int]:
    """{"kind:name": version} whose hash matches each current object (the newest such version)."""
    out: dict[str, int] = {}
    hashes = defs.hashes()
    q = sa.select(feature_objects.c.kind, feature_objects.c.name, feature_objects.c.version, feature_objects.c.hash)
    for kind, name, version, h in conn.execute(q):
        ref = f"{kind}:{name}"
        if hashes.get(ref) == h and version > out.get(ref, 0):
            out[ref] = int(version)
    return out


@dataclass
class Pinned:
    """The applied versions matching the definitions in use."""

    definitions_version: int
    versions: dict[str, int]  # "kind:name" -> version

    def version_of(self, kind: str, name: str) -> int | None:
        return self.versions.get(f"{kind}:{name}")


def pinned(defs: Definitions) -> Pinned:
    """The definitions version whose objects are exactly these; raises when they were not applied."""
    store = get_metadata_store()
    with store.read() as conn:
        rows = conn.execute(
            sa.select(feature_definitions.c.version, feature_definitions.c.objects)
            .where(feature_definitions.c.hash == defs.hash)
            .order_by(feature_definitions.c.version.desc())
            .limit(1)
        ).first()
    if rows is None:
        raise ConflictError(
            f"The feature definitions in {defs.origin} have changed since the last `keel features apply` "
            "(or were never applied).",
            hint="Run `keel features apply` so that training sets and models record a definitions version.",
        )
    return Pinned(int(rows[0]), json.loads(rows[1]))


def list_versions(kind: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
    store = get_metadata_store()
    q = sa.select(feature_objects).order_by(feature_objects.c.kind, feature_objects.c.name, feature_objects.c.version)
    if kind:
        q = q.where(feature_objects.c.kind == kind)
    if name:
        q = q.where(feature_objects.c.name == name)
    with store.read() as conn:
        return [dict(r, spec=json.loads(r["spec"])) for r in conn.execute(q).mappings()]


def applied_objects() -> dict[tuple[str, str], dict[str, Any]]:
    """The latest applied definitions: {(kind, name): {"version", "hash", "spec"}}."""
    with get_metadata_store().read() as conn:
        return _latest(conn)


def get_object(name: str, kind: str | None = None, version: int | None = None) -> dict[str, Any]:
    rows = [r for r in list_versions(kind, None) if r["name"] == name]
    if not rows:
        names = {r["name"] for r in list_versions(kind)}
        raise NotFoundError(f"No applied feature definition named '{name}'." + did_you_mean(name, names), hint="Run `keel features ls`.")
    if version is not None:
        rows = [r for r in rows if r["version"] == version]
        if not rows:
            raise NotFoundError(f"'{name}' has no version {version}.")
    return rows[-1]


def record_consumer(service: str, service_version: int, consumer_kind: str, consumer_id: str) -> None:
    """Note that a model / run / deployment uses a feature service version (idempotent)."""
    store = get_metadata_store()
    from keel.store.metadata import insert_ignore

    key = {"service": service, "service_version": service_version, "consumer_kind": consumer_kind, "consumer_id": consumer_id}
    with store.write() as conn:
        insert_ignore(conn, feature_consumers, {**key, "created_ms": now_ms()}, list(key))


def consumers() -> dict[str, list[str]]:
    """{service name: ["model:churn@v3", ...]}."""
    out: dict[str, list[str]] = {}
    with get_metadata_store().read() as conn:
        for r in conn.execute(sa.select(feature_consumers)).mappings():
            out.setdefault(r["service"], []).append(f"{r['consumer_kind']}:{r['consumer_id']} (v{r['service_version']})")
    return out


def definitions_at(version: int) -> Definitions:
    """The definitions of an applied definitions version, rebuilt from the stored specs for
    online lookups: a model pinned to an older version reads that version's values.

    Feature views and services are rebuilt from their specs (sources keep their name and
    kind; their data is not read); an on-demand view is taken from the current features
    module when its stored code matches, since stored code is never executed.
    """
    from keel.features.definitions import Entity, FeatureService, FeatureView, Field, Source
    from keel.features.materialization import value_hash

    with get_metadata_store().read() as conn:
        row = conn.execute(sa.select(feature_definitions.c.objects).where(feature_definitions.c.version == version)).first()
        if row is None:
            last = conn.execute(sa.select(sa.func.max(feature_definitions.c.version))).scalar()
            raise NotFoundError(
                f"There is no definitions version {version}" + (f" (the latest is {last})." if last else " (nothing was applied)."),
                hint="Run `keel features ls` to see the applied versions.",
            )
        wanted: dict[str, int] = json.loads(row[0])
        specs: dict[tuple[str, str], dict[str, Any]] = {}
        for r in conn.execute(sa.select(feature_objects)).mappings():
            if wanted.get(f"{r['kind']}:{r['name']}") == r["version"]:
                specs[(r["kind"], r["name"])] = json.loads(r["spec"])

    def of(kind: str) -> dict[str, dict[str, Any]]:
        return {n: s for (k, n), s in specs.items() if k == kind}

    entities = {n: Entity(n, join_keys=s["join_keys"], value_type=s["value_type"]) for n, s in of("entity").items()}
    sources = {}
    for n, s in of("source").items():
        import pyarrow as pa

        where: dict[str, Any] = (
            {"path": s["path"]} if s.get("path") else ({"query": s["query"], "connection": s["connection"]} if s.get("query") else {"df": pa.table({})})
        )
        sources[n] = Source(n, timestamp_field=s["timestamp_field"], created_timestamp_field=s["created_timestamp_field"], **where)
    views: dict[str, FeatureView] = {}
    for n, s in of("feature_view").items():
        from datetime import timedelta

        from keel.features.aggregations import aggregations_from_spec

        ttl = None if s.get("ttl_seconds") is None else timedelta(seconds=s["ttl_seconds"])
        view = FeatureView(
            n, entities=[entities[e] for e in s["entities"]], source=sources[s["source"]], ttl=ttl,
            schema=[Field(f["name"], f["dtype"]) for f in s["schema"]], online=s.get("online", True),
            aggregations=aggregations_from_spec(s.get("aggregations")), late_events=s.get("late_events") or "respect_created_time",
        )
        view.__dict__["_online_ns"] = f"fv:{n}:{value_hash(s)}"
        views[n] = view
    objects: list[Any] = [*entities.values(), *sources.values(), *views.values()]
    on_demand: dict[str, Any] = {}
    if of("on_demand_feature_view"):
        from keel.features.loader import load_definitions

        current = load_definitions()
        for n, s in of("on_demand_feature_view").items():
            odfv = current.on_demand.get(n)
            if odfv is None or odfv.spec().get("function") != s.get("function"):
                on_demand[n] = None
            else:  # the current code, over this version's views
                from keel.features.definitions import OnDemandFeatureView

                old = object.__new__(OnDemandFeatureView)
                old.__dict__.update(odfv.__dict__)
                old.sources = [views[src["view"]][src["features"]] for src in s["sources"]]
                on_demand[n] = old
    objects += [o for o in on_demand.values() if o is not None]
    for n, s in of("feature_service").items():
        items: list[Any] = []
        for item in s["features"]:
            if item["kind"] == "feature_view":
                items.append(views[item["view"]][item["features"]])
            else:
                odfv = on_demand.get(item["view"])
                if odfv is None:
                    raise ConflictError(
                        f"Feature service '{n}' of definitions version {version} uses on-demand view '{item['view']}', "
                        "whose code has changed since (stored code is never run).",
                        hint="Serve that model with the features module it was trained with, or retrain it on the current version.",
                    )
                items.append(odfv)
        objects.append(FeatureService(n, features=items))
    return Definitions(objects, origin=f"definitions version {version}")


def _when_text(ms: int | None) -> str:
    from datetime import UTC, datetime

    return "" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def listing() -> list[dict[str, Any]]:
    """Every applied object (entities, sources, views, services) with owner, freshness and users (``keel features ls``)."""
    from keel.features.materialization import watermarks
    from keel.store.owners import owners_of_many

    objs = applied_objects()
    marks = watermarks()
    users = consumers()
    owned = owners_of_many("feature_view", [n for k, n in objs if "view" in k])
    used_by: dict[str, list[str]] = {}
    for (kind, name), obj in objs.items():
        if kind == "feature_service":
            for item in obj["spec"]["features"]:
                used_by.setdefault(item["view"], []).append(name)
    out = []
    for (kind, name), obj in sorted(objs.items()):
        spec = obj["spec"]
        mark = marks.get(name) if kind == "feature_view" else None
        out.append(
            {
                "kind": kind, "name": name, "version": obj["version"], "owner": spec.get("owner", ""),
                "owners": owned.get(name, []) if "view" in kind else [o.strip() for o in str(spec.get("owner") or "").split(",") if o.strip()],
                "description": spec.get("description", ""), "tags": spec.get("tags", {}),
                # an aggregating view's features are its aggregations (its schema names their inputs)
                "features": [a["name"] for a in spec["aggregations"]] if spec.get("aggregations") else [f["name"] for f in spec.get("schema", [])],
                "materialized_until": _when_text(mark["watermark_ms"]) if mark else None,
                "used_by": sorted(set(used_by.get(name, []))) if kind != "feature_service" else users.get(name, []),
            }
        )
    return out


def describe_object(name: str, kind: str | None = None, version: int | None = None) -> dict[str, Any]:
    """One applied object with its version history, freshness and users (``keel features show --json``)."""
    obj = get_object(name, kind, version)
    history = list_versions(obj["kind"], name)
    info = {(r["kind"], r["name"]): r for r in listing()}.get((obj["kind"], name), {})
    return {**obj, "history": [{k: r[k] for k in ("version", "hash", "created_ms", "created_by")} for r in history],
            **{k: info.get(k) for k in ("materialized_until", "used_by")}}


def consumer_rows(services: list[str] | None = None, *, limit: int = 500) -> list[dict[str, Any]]:
    """Consumers of feature services (newest first): service, service_version, consumer_kind, consumer_id, created_ms."""
    q = sa.select(feature_consumers).order_by(feature_consumers.c.id.desc()).limit(max(1, min(int(limit), 10_000)))
    if services is not None:
        q = q.where(feature_consumers.c.service.in_(list(services)))
    with get_metadata_store().read() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]
