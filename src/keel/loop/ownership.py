"""Ownership made explicit: who owns what, and the responsibility gaps of what runs in production.

    ownership()            {owner: [{kind, name}, ...]} over every kind of :data:`keel.store.owners.OWNER_KINDS`
    responsibility_gaps()  what is in production with no monitor, no owner or no contract on its inputs,
                           and deployments nobody owns

"In production" means a model version in the production environment (the one named
``production``, else the last of keel.yaml's ``registry.environments``) or answering
traffic on a deployment's route. For each such version the checks are:

- a monitor watches its model (keel.yaml's ``monitors:`` or ``define_monitor``);
- the model has owners, and so do its monitors, the feature views it reads and the
  contracts on its inputs;
- its inputs have a contract: each feature view it reads (a contract on the view or on
  its source), or, for a model without a feature service, a contract on the model's
  request (the contract target named like the model, which serving enforces).

Objects of kinds this module knows nothing of (a kind added to ``OWNER_KINDS`` later)
are listed from the owners table, and from a lister registered with
:func:`register_lister`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from keel.errors import NotFoundError

Lister = Callable[[], Iterable[str]]
_LISTERS: dict[str, Lister] = {}


def register_lister(kind: str, lister: Lister) -> None:
    """``lister()`` names every object of ``kind`` (owned or not), so an object without owners is listed too."""
    _LISTERS[kind] = lister


@dataclass(frozen=True)
class Gap:
    """One thing in production that nobody is responsible for."""

    kind: str  # model_version | deployment | monitor | feature_view | contract
    name: str
    problem: str  # no_monitor | no_owner | no_contract
    detail: str
    fix: str
    model: str | None = None
    version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- what exists ------------------------------------------------------------------

def _models() -> list[str]:
    from keel.registry.versions import list_models

    return [m.name for m in list_models()]


def _views() -> list[str]:
    from keel.features.registry import applied_objects

    return sorted({name for kind, name in applied_objects() if "view" in kind})


def _contracts() -> list[str]:
    return sorted({c.name for contracts, _ in _attached().values() for c in contracts})


def _monitors() -> list[str]:
    from keel.monitoring.monitors import list_monitors

    return [m.name for m in list_monitors()]


def _deployments() -> list[str]:
    from keel.deployments.specs import list_deployments

    return [d.name for d in list_deployments()]


def _policies() -> list[str]:
    import importlib

    try:  # retraining policies, when this install has them
        policies = importlib.import_module("keel.loop.policies")
    except ImportError:
        return []
    listed = getattr(policies, "list_policies", None)
    return [str(p["name"] if isinstance(p, dict) else getattr(p, "name", p)) for p in (listed() if listed else [])]


for _kind, _fn in (("model", _models), ("feature_view", _views), ("contract", _contracts), ("monitor", _monitors),
                   ("deployment", _deployments), ("retraining", _policies)):
    register_lister(_kind, _fn)


def _attached() -> dict[str, tuple[list[Any], list[str]]]:
    """{contract target: (its contracts, their files)} for every target with a contract attached."""
    from keel.contracts.targets import attached_contracts, attached_targets, contract_files

    return {t: (attached_contracts(t), [str(p) for p in contract_files(t)]) for t in attached_targets()}


def _stored_names(kind: str) -> list[str]:
    import sqlalchemy as sa

    from keel.store.metadata import get_metadata_store
    from keel.store.schema.auth import owners

    with get_metadata_store().read() as conn:
        return list(conn.execute(sa.select(owners.c.name).where(owners.c.kind == kind).distinct()).scalars())


class _Owners:
    """Owners by (kind, name), read once per kind; declared owners (a contract's ``owners:``) fill in for stored ones."""

    def __init__(self, declared: dict[tuple[str, str], list[str]] | None = None) -> None:
        self._cache: dict[str, dict[str, list[str]]] = {}
        self.declared = declared or {}

    def of(self, kind: str, name: str) -> list[str]:
        from keel.store.owners import owners_of_many

        if kind not in self._cache:
            names = set(_stored_names(kind))
            self._cache[kind] = owners_of_many(kind, names)
        return self._cache[kind].get(name) or self.declared.get((kind, name), [])


def _declared(attached: dict[str, tuple[list[Any], list[str]]]) -> dict[tuple[str, str], list[str]]:
    """Owners declared in definitions but not stored yet (a contract's ``owners:`` is stored at its first validation)."""
    out: dict[tuple[str, str], list[str]] = {}
    for contracts, _ in attached.values():
        for c in contracts:
            if c.owners:
                out[("contract", c.name)] = list(c.owners)
    from keel.monitoring.monitors import list_monitors

    for m in list_monitors():
        if getattr(m, "owners", None):
            out[("monitor", m.name)] = list(m.owners)
    return out


def ownership(kinds: Iterable[str] | None = None) -> dict[str, Any]:
    """What each owner owns, and what nobody owns, over every kind of ``OWNER_KINDS``.

    ``{"owners": {user: [{"kind", "name"}, ...]}, "unowned": [{"kind", "name"}, ...], "kinds": [...]}``
    """
    from keel.store.owners import OWNER_KINDS, check_kind

    wanted = [check_kind(k) for k in kinds] if kinds else list(OWNER_KINDS)
    attached = _attached() if "contract" in wanted or "monitor" in wanted else {}
    who = _Owners(_declared(attached) if attached or "monitor" in wanted else {})
    by_owner: dict[str, list[dict[str, str]]] = {}
    unowned: list[dict[str, str]] = []
    for kind in wanted:
        lister = _LISTERS.get(kind)
        names = set(lister() if lister else []) | set(_stored_names(kind))
        for name in sorted(names):
            users = who.of(kind, name)
            if not users:
                unowned.append({"kind": kind, "name": name})
            for u in users:
                by_owner.setdefault(u, []).append({"kind": kind, "name": name})
    return {"kinds": wanted, "owners": {u: by_owner[u] for u in sorted(by_owner)}, "unowned": unowned}


# ---- what is in production ---------------------------------------------------------

def production_environment() -> str:
    """The environment that counts as production: ``production`` if declared, else the last of the ladder."""
    from keel.registry.config import environments

    envs = environments()
    return "production" if "production" in envs else envs[-1]


def in_production() -> list[dict[str, Any]]:
    """Every model version in production: ``{model, version, via: [...]}`` (the environment, deployment routes)."""
    from keel.deployments.specs import list_deployments
    from keel.registry.versions import list_models, resolve_version

    env = production_environment()
    found: dict[tuple[str, int], list[str]] = {}
    for m in list_models():
        v = m.environments.get(env)
        if v is not None and m.status == "active":
            found.setdefault((m.name, int(v)), []).append(f"environment {env}")
    for dep in list_deployments():
        for r in dep.spec.answering:
            try:
                mv = resolve_version(r.model, int(r.ref) if r.ref.isdigit() else r.ref)
            except NotFoundError:
                continue  # a route whose alias points nowhere serves nothing
            found.setdefault((mv.model, mv.version), []).append(f"deployment {dep.name} ({r.name})")
    return [{"model": m, "version": v, "via": via} for (m, v), via in sorted(found.items())]


def _views_of(mv: Any) -> list[tuple[str, str | None, bool]]:
    """(feature view, its source, on demand?) of every view a version reads through its feature service (on-demand inputs too)."""
    from keel.features.registry import applied_objects, get_object

    lin = mv.lineage or {}
    service = lin.get("feature_service") or (mv.meta or {}).get("feature_service")
    if not service:
        return []
    try:
        spec = get_object(str(service), "feature_service", lin.get("feature_service_version"))["spec"]
    except NotFoundError:
        return []
    objs = applied_objects()
    out: list[tuple[str, str | None, bool]] = []
    todo = [str(item["view"]) for item in spec.get("features") or []]
    while todo:
        view = todo.pop(0)
        if any(v == view for v, _, _ in out):
            continue
        obj = objs.get(("feature_view", view)) or objs.get(("on_demand_feature_view", view))
        vspec = obj["spec"] if obj else {}
        source = vspec.get("source")
        inputs = [str(d["view"]) for d in vspec.get("sources") or []]
        out.append((view, source if isinstance(source, str) else None, bool(inputs)))
        todo += inputs
    return out


def responsibility_gaps() -> list[Gap]:
    """Everything in production that nobody is responsible for (empty: no gap)."""
    from keel.deployments.specs import list_deployments
    from keel.monitoring.monitors import list_monitors
    from keel.registry.versions import resolve_version

    attached = _attached()
    who = _Owners(_declared(attached))
    monitors = list_monitors()
    gaps: list[Gap] = []
    seen: set[tuple[str, str, str]] = set()

    def gap(g: Gap) -> None:
        if (g.kind, g.name, g.problem) not in seen:
            seen.add((g.kind, g.name, g.problem))
            gaps.append(g)

    for p in in_production():
        model, version, via = p["model"], p["version"], "; ".join(p["via"])
        ref = f"{model}/{version}"
        mv = resolve_version(model, version)
        if not who.of("model", model):
            gap(Gap("model_version", ref, "no_owner", f"model {model} has no owner ({via})",
                    f"keel owners add model {model} USER", model, version))
        watching = [m for m in monitors if m.model == model]
        if not watching:
            gap(Gap("model_version", ref, "no_monitor", f"nothing monitors {model} ({via})",
                    f"declare a monitor for {model} under monitors: in keel.yaml (or keel.monitoring.define_monitor)", model, version))
        for m in watching:
            if not who.of("monitor", m.name):
                gap(Gap("monitor", m.name, "no_owner", f"monitor {m.name} of {model} has no owner",
                        f"keel owners add monitor {m.name} USER", model, version))
        views = _views_of(mv)
        guarded: list[str] = []  # contract targets on this version's inputs
        if views:
            for view, source, on_demand in views:
                if not who.of("feature_view", view):
                    gap(Gap("feature_view", view, "no_owner", f"feature view {view} (read by {ref}) has no owner",
                            f"keel owners add feature_view {view} USER", model, version))
                targets = [t for t in (view, source) if t and t in attached]
                if not targets and not on_demand:  # an on-demand view's inputs are views, checked on their own
                    gap(Gap("model_version", f"{ref}:{view}", "no_contract",
                            f"feature view {view} of {ref}" + (f" and its source {source}" if source else "") + " have no contract",
                            f"attach one: contracts/{source or view}.yaml (keel contracts suggest DATA -o contracts/{source or view}.yaml)",
                            model, version))
                guarded += targets
        elif model in attached:
            guarded.append(model)
        else:
            gap(Gap("model_version", ref, "no_contract", f"the inputs of {ref} have no contract (no feature service, no contract named {model})",
                    f"attach one: contracts/{model}.yaml (serving enforces it on each request)", model, version))
        for target in dict.fromkeys(guarded):
            for c in attached[target][0]:
                if not who.of("contract", c.name):
                    gap(Gap("contract", c.name, "no_owner", f"contract {c.name} (on {target}, input of {ref}) has no owner",
                            f"add owners: [USER] to {attached[target][1][0] if attached[target][1] else 'the contract'}, "
                            f"or keel owners add contract {c.name} USER", model, version))
    for dep in list_deployments():
        if not who.of("deployment", dep.name):
            gap(Gap("deployment", dep.name, "no_owner", f"deployment {dep.name} ({dep.spec.describe()}) has no owner",
                    f"keel owners add deployment {dep.name} USER"))
    return gaps


def report() -> dict[str, Any]:
    """``ownership()`` and ``responsibility_gaps()`` together (``keel owners --json``)."""
    return {**ownership(), "production": in_production(), "gaps": [g.to_dict() for g in responsibility_gaps()]}
