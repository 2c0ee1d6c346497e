"""Deployments as declared objects: routes, weights, stickiness and objectives, stored and audited.

    keel deploy churn-live --model churn@production --shadow churn@challenger
    keel deploy churn-live --model churn@production --canary churn/7 --weight 10 --max-error-rate 0.02
    keel deploy churn-live --ab churn/7=50,churn/6=50 --sticky-by customer_id

A deployment names its routes: ``champion`` answers (or, for A/B, ``a``, ``b``, ...
answer by weight); a ``shadow`` route sees every request off the request path and
never answers; a ``canary`` answers its weight's share. Each route points at a
model version by alias or number, resolved when the deployment is served (an
alias that moves is followed). Every change is checked before anything is
written (weights, aliases, signatures, the sticky column) and recorded as an
event with who, what and why; ``rollback`` restores the spec before the last
change, ``promote`` moves the challenger's version through ``registry.promote``
(so gates and approvals apply) and makes it the champion.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import sqlalchemy as sa

from keel.errors import ConflictError, NotFoundError, ValidationError, did_you_mean
from keel.store.metadata import get_metadata_store, insert_ignore, now_ms
from keel.store.owners import seed_owners
from keel.store.schema.deployments import deployment_events, deployments

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
SYSTEM_USER = "keel"  # the identity on events keel makes itself (an objective breached)


@dataclass(frozen=True)
class Route:
    name: str  # champion | shadow | canary | a, b, c ... (A/B)
    model: str
    ref: str  # an alias / environment, or a version number, as declared
    weight: float  # share of requests it answers, in percent (0 for a shadow)
    shadow: bool = False

    @property
    def uri(self) -> str:
        return f"models:/{self.model}/{self.ref}" if self.ref.isdigit() else f"models:/{self.model}@{self.ref}"

    def label(self) -> str:
        return f"{self.model}/{self.ref}" if self.ref.isdigit() else f"{self.model}@{self.ref}"


@dataclass(frozen=True)
class Objectives:
    """What a canary must keep to; a breach rolls it back (recorded as an event)."""

    max_error_rate: float | None = None  # share of the route's requests that failed (5xx), e.g. 0.02
    max_p99_ms: float | None = None  # the route's p99 latency
    min_requests: int = 100  # requests the route must have answered before it is judged


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    routes: tuple[Route, ...]
    sticky_by: str | None = None  # an input column, or header:<name>
    objectives: Objectives = field(default_factory=Objectives)

    @property
    def mode(self) -> str:
        kinds = {r.name for r in self.routes}
        if "shadow" in kinds:
            return "shadow"
        if "canary" in kinds:
            return "canary"
        if len(self.routes) > 1:
            return "ab"
        return "single"

    @property
    def answering(self) -> list[Route]:
        return [r for r in self.routes if not r.shadow]

    @property
    def champion(self) -> Route:
        return self.routes[0]

    @property
    def challenger(self) -> Route | None:
        return next((r for r in self.routes[1:]), None)

    def route(self, name: str) -> Route:
        for r in self.routes:
            if r.name == name:
                return r
        raise NotFoundError(f"Deployment {self.name!r} has no route {name!r}." + did_you_mean(name, [r.name for r in self.routes]))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "mode": self.mode, "routes": [asdict(r) for r in self.routes], "sticky_by": self.sticky_by,
                "objectives": asdict(self.objectives)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeploymentSpec:
        return cls(str(data["name"]), tuple(Route(**r) for r in data["routes"]), data.get("sticky_by"),
                   Objectives(**(data.get("objectives") or {})))

    def describe(self) -> str:
        parts = []
        for r in self.routes:
            share = "shadow" if r.shadow else f"{r.weight:g}%"
            parts.append(f"{r.name} {r.label()} ({share})")
        return ", ".join(parts) + (f"; sticky by {self.sticky_by}" if self.sticky_by else "")


@dataclass(frozen=True)
class Deployment:
    name: str
    spec: DeploymentSpec
    revision: int
    created_by: str
    created_ms: int
    updated_by: str
    updated_ms: int

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "spec"}
        out["spec"] = self.spec.to_dict()
        return out


# ---- parsing -------------------------------------------------------------------

def parse_model_ref(text: Any, *, what: str = "--model") -> tuple[str, str]:
    """(model, alias or version) from ``churn@production``, ``churn/7`` or ``models:/churn@production``."""
    raw = str(text or "").strip()
    s = raw.removeprefix("models:/")
    m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9_.\-]*)(?:@([A-Za-z0-9_.\-]+)|/([0-9]+))", s)
    if not m:
        raise ValidationError(f"{what} {raw!r} is not a model reference.",
                              hint="Use NAME@ALIAS or NAME/VERSION, e.g. churn@production or churn/7.")
    return m.group(1), m.group(2) or m.group(3)


def _weight(value: Any, what: str) -> float:
    try:
        w = float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{what} {value!r} is not a number.", hint="Give a percentage, e.g. 10.") from None
    if not 0 < w < 100:
        raise ValidationError(f"{what} {w:g} is not between 0 and 100 (exclusive).", hint="e.g. --weight 10 sends 10% of requests to the canary.")
    return w


def build_spec(
    name: str,
    *,
    model: str | None = None,
    shadow: str | None = None,
    canary: str | None = None,
    weight: float | None = None,
    ab: str | Sequence[str] | dict[str, float] | None = None,
    sticky_by: str | None = None,
    max_error_rate: float | None = None,
    max_p99_ms: float | None = None,
    min_requests: int = 100,
) -> DeploymentSpec:
    """A spec from the ``keel deploy`` options (checked for shape; :func:`validate` checks it against the registry)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValidationError(f"Deployment name {name!r} is not valid.", hint="Use letters, digits, '.', '_' and '-', e.g. churn-live.")
    modes = [k for k, v in (("--shadow", shadow), ("--canary", canary), ("--ab", ab)) if v]
    if len(modes) > 1:
        raise ValidationError(f"{' and '.join(modes)} cannot be combined.", hint="A deployment is a shadow, a canary or an A/B split.")
    if weight is not None and not canary:
        raise ValidationError("--weight is the canary's share.", hint="Use it with --canary NAME/VERSION.")
    routes: list[Route] = []
    if ab:
        items = _ab_items(ab)
        total = sum(w for _, w in items)
        if abs(total - 100) > 1e-9:
            raise ValidationError(f"The A/B weights add up to {total:g}, not 100.",
                                  hint="e.g. --ab churn/7=50,churn/6=50.", weights={ref: w for ref, w in items})
        for i, (ref, w) in enumerate(items):
            m, r = parse_model_ref(ref, what="--ab")
            routes.append(Route(chr(ord("a") + i), m, r, w))
        if model:
            champ = parse_model_ref(model)
            if not any((r.model, r.ref) == champ for r in routes):
                raise ValidationError(f"--model {model!r} is not one of the A/B routes.", hint="Leave --model out, or list it in --ab.")
    else:
        if not model:
            raise ValidationError("A deployment needs its champion.", hint="Pass --model NAME@ALIAS, e.g. --model churn@production.")
        m, r = parse_model_ref(model)
        if shadow:
            sm, sr = parse_model_ref(shadow, what="--shadow")
            routes = [Route("champion", m, r, 100.0), Route("shadow", sm, sr, 0.0, shadow=True)]
        elif canary:
            w = _weight(10 if weight is None else weight, "--weight")
            cm, cr = parse_model_ref(canary, what="--canary")
            routes = [Route("champion", m, r, 100.0 - w), Route("canary", cm, cr, w)]
        else:
            routes = [Route("champion", m, r, 100.0)]
    if len({(r.model, r.ref) for r in routes}) != len(routes):
        raise ValidationError("Two routes of the deployment point at the same model version reference.",
                              hint="Give the challenger another alias or version.")
    if sticky_by is not None and not str(sticky_by).strip():
        sticky_by = None
    if max_error_rate is not None and not 0 <= float(max_error_rate) <= 1:
        raise ValidationError(f"--max-error-rate {max_error_rate!r} is not a share between 0 and 1.", hint="e.g. --max-error-rate 0.02.")
    if max_p99_ms is not None and float(max_p99_ms) <= 0:
        raise ValidationError(f"--max-p99-ms {max_p99_ms!r} must be positive.", hint="e.g. --max-p99-ms 50.")
    if int(min_requests) < 1:
        raise ValidationError(f"--min-requests {min_requests!r} must be at least 1.")
    objectives = Objectives(None if max_error_rate is None else float(max_error_rate), None if max_p99_ms is None else float(max_p99_ms),
                            int(min_requests))
    return DeploymentSpec(name, tuple(routes), sticky_by, objectives)


def _ab_items(ab: str | Sequence[str] | dict[str, float]) -> list[tuple[str, float]]:
    if isinstance(ab, dict):
        return [(str(k), float(v)) for k, v in ab.items()]
    parts = [p.strip() for p in (ab.split(",") if isinstance(ab, str) else ab) if p.strip()]
    items = []
    for p in parts:
        if "=" not in p:
            raise ValidationError(f"--ab item {p!r} is not NAME/VERSION=WEIGHT.", hint="e.g. --ab churn/7=50,churn/6=50.")
        ref, w = p.rsplit("=", 1)
        try:
            items.append((ref.strip(), float(w)))
        except ValueError:
            raise ValidationError(f"--ab weight {w!r} of {ref!r} is not a number.", hint="e.g. --ab churn/7=50,churn/6=50.") from None
    if len(items) < 2:
        raise ValidationError("An A/B split needs at least two routes.", hint="e.g. --ab churn/7=50,churn/6=50.")
    if any(w <= 0 for _, w in items):
        raise ValidationError("Every A/B route needs a positive weight.", hint="e.g. --ab churn/7=90,churn/6=10.")
    return items


# ---- checking against the registry ----------------------------------------------

def _inputs(mv: Any) -> list[tuple[str, str]]:
    sig = (mv.meta or {}).get("signature") or {}
    return [(str(c["name"]), str(c["type"])) for c in sig.get("inputs") or []]


def validate(spec: DeploymentSpec) -> dict[str, Any]:
    """Resolve every route (unknown aliases and versions fail) and check that the challengers take the
    champion's inputs and that the sticky column is one of them; ``{route: ModelVersion}``."""
    from keel.registry.versions import resolve_version

    resolved = {r.name: resolve_version(r.model, int(r.ref) if r.ref.isdigit() else r.ref) for r in spec.routes}
    champ = resolved[spec.champion.name]
    want = _inputs(champ)
    for r in spec.routes[1:]:
        got = _inputs(resolved[r.name])
        if want and got and got != want:
            missing = sorted({n for n, _ in want} - {n for n, _ in got})
            extra = sorted({n for n, _ in got} - {n for n, _ in want})
            typed = sorted(n for (n, t) in got for (m, u) in want if n == m and t != u)
            raise ValidationError(
                f"Route {r.name} ({r.label()}) takes other inputs than {spec.champion.label()}: "
                + "; ".join(x for x in (f"missing {missing}" if missing else "", f"extra {extra}" if extra else "",
                                        f"other types {typed}" if typed else "") if x) + ".",
                hint="Every route of a deployment must accept the same requests; deploy the challenger on its own.",
            )
        if (champ.meta or {}).get("feature_service") != (resolved[r.name].meta or {}).get("feature_service"):
            raise ValidationError(f"Route {r.name} ({r.label()}) uses another feature service than {spec.champion.label()}.",
                                  hint="Every route of a deployment must take the same entity keys.")
    if spec.sticky_by and not spec.sticky_by.startswith("header:"):
        columns = _request_columns(champ)
        if spec.sticky_by not in columns:
            raise ValidationError(f"--sticky-by {spec.sticky_by!r} is not an input of {spec.champion.label()}." + did_you_mean(spec.sticky_by, columns),
                                  hint=f"Use one of {', '.join(columns)}, or header:NAME to stick by a request header.")
    if spec.sticky_by and spec.sticky_by.startswith("header:") and not spec.sticky_by[len("header:"):].strip():
        raise ValidationError("--sticky-by header: names no header.", hint="e.g. --sticky-by header:x-user.")
    return resolved


def _request_columns(mv: Any) -> list[str]:
    names = [n for n, _ in _inputs(mv)]
    if (mv.meta or {}).get("feature_service"):
        from keel.serving.predictor import Predictor

        names = [c.name for c in Predictor(mv.uri, log=False).request_columns]
    return names


# ---- the store ------------------------------------------------------------------

def _user() -> str:
    from keel.config import settings

    return str(settings().acting_user)


def _row(row: Any) -> Deployment:
    return Deployment(row.name, DeploymentSpec.from_dict(json.loads(row.spec)), row.revision, row.created_by, row.created_ms,
                      row.updated_by, row.updated_ms)


def _event(conn: sa.Connection, name: str, revision: int, action: str, user: str, reason: str | None,
           before: DeploymentSpec | None, after: DeploymentSpec | None, detail: dict[str, Any] | None = None) -> None:
    conn.execute(sa.insert(deployment_events).values(
        deployment=name, revision=revision, action=action, user=user, reason=reason,
        spec_before=None if before is None else json.dumps(before.to_dict()),
        spec_after=None if after is None else json.dumps(after.to_dict()),
        detail=None if detail is None else json.dumps(detail, default=str), created_ms=now_ms()))


def get_deployment(name: str) -> Deployment:
    with get_metadata_store().read() as conn:
        row = conn.execute(sa.select(deployments).where(deployments.c.name == name, deployments.c.deleted_ms.is_(None))).first()
        if row is None:
            known = [r[0] for r in conn.execute(sa.select(deployments.c.name).where(deployments.c.deleted_ms.is_(None)))]
            raise NotFoundError(f"No deployment named {name!r}." + did_you_mean(name, known),
                                hint="List them with keel deploy ls; create one with keel deploy NAME --model MODEL@ALIAS.")
    return _row(row)


def list_deployments() -> list[Deployment]:
    with get_metadata_store().read() as conn:
        rows = conn.execute(sa.select(deployments).where(deployments.c.deleted_ms.is_(None)).order_by(deployments.c.name)).fetchall()
    return [_row(r) for r in rows]


def _write(spec: DeploymentSpec, action: str, reason: str | None, *, expected: int | None, user: str | None = None,
           detail: dict[str, Any] | None = None) -> Deployment:
    """Store ``spec`` as the deployment's new revision; ``expected``: the revision it replaces (None: create or replace)."""
    who = user or _user()

    def txn(conn: sa.Connection) -> Deployment:
        now = now_ms()
        current = conn.execute(sa.select(deployments).where(deployments.c.name == spec.name)).first()
        before = None if current is None or current.deleted_ms is not None else DeploymentSpec.from_dict(json.loads(current.spec))
        if expected is not None and (current is None or current.revision != expected):
            raise ConflictError(f"Deployment {spec.name!r} changed while this change was being made (revision "
                                f"{None if current is None else current.revision}, expected {expected}).", hint="Look at keel deploy status and try again.")
        if current is None:
            insert_ignore(conn, deployments, {"name": spec.name, "spec": json.dumps(spec.to_dict()), "revision": 1, "created_by": who,
                                              "created_ms": now, "updated_by": who, "updated_ms": now}, ["name"])
            revision = 1
        if current is None or current.deleted_ms is not None:  # who creates a deployment owns it (keel owners)
            seed_owners(conn, "deployment", spec.name, [who])
        else:
            revision = current.revision + 1
            done = conn.execute(sa.update(deployments).where(deployments.c.name == spec.name, deployments.c.revision == current.revision).values(
                spec=json.dumps(spec.to_dict()), revision=revision, updated_by=who, updated_ms=now, deleted_ms=None))
            if done.rowcount != 1:
                raise ConflictError(f"Deployment {spec.name!r} was changed by someone else at the same moment.", hint="Try again.")
        _event(conn, spec.name, revision, action if before is not None or action != "set" else "create", who, reason, before, spec, detail)
        return Deployment(spec.name, spec, revision, who if current is None else current.created_by,
                          now if current is None else current.created_ms, who, now)

    return get_metadata_store().transact(txn)


def deploy(spec: DeploymentSpec, *, reason: str | None = None) -> Deployment:
    """Create or replace the deployment ``spec.name`` after :func:`validate` passes."""
    validate(spec)
    return _write(spec, "set", reason, expected=None)


def set_deployment(name: str, *, reason: str | None = None, **changes: Any) -> Deployment:
    """Change some options of a stored deployment (those not given stay as they are)."""
    current = get_deployment(name)
    s = current.spec
    champ = s.champion.label()
    opts: dict[str, Any] = {"model": changes.pop("model", None) or (champ if s.mode != "ab" else None),
                            "sticky_by": changes.pop("sticky_by", s.sticky_by),
                            "max_error_rate": changes.pop("max_error_rate", s.objectives.max_error_rate),
                            "max_p99_ms": changes.pop("max_p99_ms", s.objectives.max_p99_ms),
                            "min_requests": changes.pop("min_requests", s.objectives.min_requests)}
    mode = {k: v for k, v in changes.items() if k in ("shadow", "canary", "weight", "ab") and v is not None}
    if changes.pop("single", False):
        mode = {}
    elif not mode and s.mode == "shadow":
        mode = {"shadow": s.route("shadow").label()}
    elif not mode and s.mode == "canary":
        mode = {"canary": s.route("canary").label(), "weight": s.route("canary").weight}
    elif mode.keys() == {"weight"} and s.mode == "canary":
        mode["canary"] = s.route("canary").label()
    elif not mode and s.mode == "ab":
        mode = {"ab": {r.label(): r.weight for r in s.routes}}
    unknown = set(changes) - {"shadow", "canary", "weight", "ab"}
    if unknown:
        raise ValidationError(f"Unknown deployment option {sorted(unknown)[0]!r}.")
    spec = build_spec(name, **opts, **mode)
    validate(spec)
    return _write(spec, "set", reason, expected=current.revision)


def history(name: str) -> list[dict[str, Any]]:
    """Every change of the deployment, oldest first."""
    with get_metadata_store().read() as conn:
        rows = conn.execute(sa.select(deployment_events).where(deployment_events.c.deployment == name).order_by(deployment_events.c.id)).fetchall()
    if not rows:
        get_deployment(name)  # the not-found error with suggestions
    return [{"id": r.id, "revision": r.revision, "action": r.action, "user": r.user, "reason": r.reason, "time_ms": r.created_ms,
             "before": None if r.spec_before is None else json.loads(r.spec_before),
             "after": None if r.spec_after is None else json.loads(r.spec_after),
             "detail": None if r.detail is None else json.loads(r.detail)} for r in rows]


def rollback_deployment(name: str, *, reason: str | None = None) -> Deployment:
    """Restore the spec the last change replaced."""
    current = get_deployment(name)
    events = [e for e in history(name) if e["revision"] == current.revision]
    before = events[-1]["before"] if events else None
    if before is None:
        raise ConflictError(f"Deployment {name!r} has no earlier spec to roll back to (revision {current.revision} created it).",
                            hint="Change it with keel deploy set, or delete it.")
    spec = DeploymentSpec.from_dict(before)
    validate(spec)
    return _write(spec, "rollback", reason, expected=current.revision)


def end_challenger(name: str, *, detail: dict[str, Any], reason: str) -> Deployment:
    """Take the challenger out (an objective was breached): the champion answers everything. Recorded as auto_rollback."""
    current = get_deployment(name)
    s = current.spec
    if s.mode not in ("canary", "shadow"):
        return current
    spec = replace(s, routes=(replace(s.champion, weight=100.0),))
    return _write(spec, "auto_rollback", reason, expected=current.revision, user=SYSTEM_USER, detail=detail)


def promote_deployment(name: str, *, to: str = "production", reason: str | None = None, force: bool = False,
                       data: Any = None, target: str | None = None) -> dict[str, Any]:
    """Move the challenger's version into ``to`` through ``registry.promote`` (gates, approvals) and make it the champion.

    With an environment that needs approval, the request is left pending and the
    deployment unchanged (promote again once it is approved). Returns the transition
    and the deployment.
    """
    from keel.registry.transitions import promote

    current = get_deployment(name)
    s = current.spec
    challenger = s.challenger
    if challenger is None:
        raise ConflictError(f"Deployment {name!r} has no challenger to promote ({s.describe()}).",
                            hint="Add one with keel deploy set NAME --shadow|--canary MODEL/VERSION.")
    resolved = validate(s)
    mv = resolved[challenger.name]
    transition = promote(mv.model, mv.version, to, reason=reason, force=force, data=data, target=target)
    out: dict[str, Any] = {"transition": transition.to_dict(), "deployment": current.to_dict()}
    if transition.status not in ("applied", "forced", "unchanged"):  # pending approval: the deployment stays
        with get_metadata_store().write() as conn:
            _event(conn, name, current.revision, "promote_requested", _user(), reason, s, s,
                   {"model": mv.model, "version": mv.version, "environment": to, "status": transition.status,
                    "request_id": transition.request_id})
        return out
    champ = Route("champion", mv.model, to, 100.0)
    spec = DeploymentSpec(name, (champ,), s.sticky_by, s.objectives)
    dep = _write(spec, "promote", reason, expected=current.revision,
                 detail={"model": mv.model, "version": mv.version, "environment": to, "status": transition.status})
    out["deployment"] = dep.to_dict()
    return out


def delete_deployment(name: str, *, reason: str | None = None) -> None:
    current = get_deployment(name)
    who = _user()

    def txn(conn: sa.Connection) -> None:
        from keel.store.schema.services import services

        if conn.execute(sa.select(services.c.desired).where(services.c.name == name)).scalar() == "running":
            raise ConflictError(f"Deployment {name!r} is running (keel deploy start): deleting it would leave its replicas without a deployment.",
                                hint=f"Stop it first: keel deploy stop {name}.")
        done = conn.execute(sa.update(deployments).where(deployments.c.name == name, deployments.c.revision == current.revision).values(
            deleted_ms=now_ms(), revision=current.revision + 1, updated_by=who, updated_ms=now_ms()))
        if done.rowcount != 1:
            raise ConflictError(f"Deployment {name!r} changed while it was being deleted.", hint="Try again.")
        _event(conn, name, current.revision + 1, "delete", who, reason, current.spec, None)

    get_metadata_store().transact(txn)


def apply_config(section: dict[str, Any] | None = None, *, reason: str | None = None) -> list[Deployment]:
    """Create or update every deployment of keel.yaml's ``deployments:`` block (unchanged ones are left alone)."""
    from keel.config import settings

    block = settings().section("deployments") if section is None else section
    out = []
    specs = []
    for name, opts in (block or {}).items():
        if not isinstance(opts, dict):
            raise ValidationError(f"keel.yaml deployments.{name} is not a mapping.", hint="e.g. deployments: {churn-live: {model: churn@production}}.")
        allowed = {"model", "shadow", "canary", "weight", "ab", "sticky_by", "max_error_rate", "max_p99_ms", "min_requests"}
        unknown = set(opts) - allowed
        if unknown:
            key = sorted(unknown)[0]
            raise ValidationError(f"keel.yaml deployments.{name}: unknown key {key!r}." + did_you_mean(key, allowed),
                                  hint=f"Keys: {', '.join(sorted(allowed))}.")
        spec = build_spec(str(name), **opts)
        validate(spec)  # every spec is checked before any is written
        specs.append(spec)
    for spec in specs:
        try:
            current = get_deployment(spec.name)
        except NotFoundError:
            current = None
        if current is not None and current.spec == spec:
            out.append(current)
            continue
        out.append(_write(spec, "set", reason or "keel.yaml", expected=None if current is None else current.revision))
    return out
