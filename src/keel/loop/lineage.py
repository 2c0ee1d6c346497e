"""Lineage, end to end, from what is already recorded.

    model_lineage("churn", 3)        version → run → data → feature service → views → sources; code; packages
    prediction_lineage("req-42")     prediction → route and deployment → version → (the above)
    feature_usage("usage")           a view (or source) → services → model versions → deployments, monitors

Each returns a :class:`Node` tree (``to_dict()`` for ``--json``); :func:`render_tree`
draws it in the terminal and :func:`render_image` as an SVG or PNG.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keel.errors import NotFoundError, ValidationError


@dataclass
class Node:
    kind: str  # prediction | deployment | route | model_version | run | dataset | feature_service | feature_view | source | code | packages | monitor
    label: str
    detail: dict[str, Any] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)

    def add(self, child: Node) -> Node:
        self.children.append(child)
        return child

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "label": self.label, "detail": self.detail, "children": [c.to_dict() for c in self.children]}

    def walk(self) -> list[Node]:
        out = [self]
        for c in self.children:
            out += c.walk()
        return out


def _ms(ms: Any) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _split_ref(ref: str) -> tuple[str, str]:
    s = ref.removeprefix("models:/")
    for sep in ("@", "/"):
        if sep in s:
            name, v = s.split(sep, 1)
            return name, v
    raise ValidationError(f"{ref!r} is not a model version.", hint="Use NAME/VERSION or NAME@ALIAS, e.g. churn/3 or churn@production.")


# ---- features -----------------------------------------------------------------

def _service_node(service: str, version: int | None, definitions_version: int | None) -> Node:
    from keel.features.registry import get_object

    node = Node("feature_service", f"{service}" + (f" v{version}" if version else ""), {"definitions_version": definitions_version})
    try:
        spec = get_object(service, "feature_service", version)["spec"]
    except NotFoundError:
        node.detail["note"] = "not found in the applied definitions"
        return node
    for item in spec.get("features") or []:
        node.add(_view_node(str(item["view"]), item.get("features") or []))
    return node


def _view_node(view: str, features: list[str]) -> Node:
    from keel.features.registry import get_object

    obj = None
    for kind in ("feature_view", "on_demand_feature_view"):  # a source may share the view's name
        try:
            obj = get_object(view, kind)
            break
        except NotFoundError:
            continue
    if obj is None:
        return Node("feature_view", view, {"features": features, "note": "not applied"})
    spec = obj["spec"]
    node = Node("feature_view", f"{view} v{obj['version']}", {"features": features, "hash": obj.get("hash"), "kind": obj.get("kind")})
    source = spec.get("source")
    if isinstance(source, str):
        try:
            s = get_object(source, "source")
            ss = s["spec"]
            node.add(Node("source", f"{source} v{s['version']}", {k: ss.get(k) for k in ("source_kind", "path", "query", "timestamp_field") if ss.get(k)}))
        except NotFoundError:
            node.add(Node("source", source))
    for dep in spec.get("sources") or []:  # an on-demand view's inputs
        node.add(_view_node(str(dep["view"]), dep.get("features") or []))
    return node


# ---- models -------------------------------------------------------------------

def model_lineage(name: str, version: Any = None) -> Node:
    """The tree behind a model version: its run, training data, features, code and packages (and who uses it)."""
    from keel.registry.versions import resolve_version
    from keel.tracking.artifacts import list_artifacts

    if version is None:
        name, version = _split_ref(name)
    mv = resolve_version(name, int(version) if str(version).isdigit() else version)
    lin = mv.lineage or {}
    root = Node("model_version", f"{mv.model} v{mv.version}", {
        "status": mv.status, "flavor": mv.flavor, "aliases": mv.aliases, "environments": mv.environments, "registered_by": mv.created_by,
        "registered": None if mv.created_time is None else mv.created_time.isoformat(timespec="seconds")})
    run = root.add(Node("run", f"run {lin.get('run_id') or mv.run_id}", {
        "name": lin.get("run_name"), "experiment": lin.get("experiment"), "trained_by": lin.get("trained_by"),
        "started": _ms(lin.get("trained_start_ms")), "ended": _ms(lin.get("trained_end_ms")), "params": lin.get("params") or {},
        "metrics": lin.get("metrics") or {}}))
    for d in lin.get("data") or []:
        run.add(Node("dataset", f"{d['name']} ({d['context']})", {"fingerprint": d.get("fingerprint"), "rows": d.get("num_rows")}))
    if lin.get("training_fingerprint"):
        run.detail["training_fingerprint"] = lin["training_fingerprint"]
    if lin.get("feature_service"):
        run.add(_service_node(str(lin["feature_service"]), lin.get("feature_service_version"), lin.get("definitions_version")))
    code = lin.get("code") or {}
    untracked = [a["path"] for a in list_artifacts(mv.run_id) if a["path"].startswith("keel/untracked/")]
    run.add(Node("code", f"commit {str(code.get('commit') or 'none')[:12]}" + (" (dirty)" if code.get("dirty") else ""), {
        **code, "untracked_files": len(untracked)}))
    run.add(Node("packages", f"python {lin.get('python') or '?'}", {"lock_sha256": lin.get("package_lock_sha256")}))
    _users_of_model(root, mv)
    return root


def _users_of_model(root: Node, mv: Any) -> None:
    """Deployments routing to the version and monitors watching its model, as children of ``root``."""
    from keel.deployments.specs import list_deployments
    from keel.registry.versions import resolve_version

    for dep in list_deployments():
        for r in dep.spec.routes:
            if r.model != mv.model:
                continue
            try:
                v = resolve_version(r.model, int(r.ref) if r.ref.isdigit() else r.ref).version
            except NotFoundError:
                continue
            if v == mv.version:
                root.add(Node("deployment", f"deployment {dep.name} ({r.name}, {'shadow' if r.shadow else f'{r.weight:g}%'})",
                              {"revision": dep.revision, "mode": dep.spec.mode}))
    for m in _monitors(mv.model):
        root.add(Node("monitor", f"monitor {m}"))


def _monitors(model: str) -> list[str]:
    import sqlalchemy as sa

    from keel.store.metadata import get_metadata_store
    from keel.store.schema.monitoring import monitors

    with get_metadata_store().read() as conn:
        return [r[0] for r in conn.execute(sa.select(monitors.c.name).where(monitors.c.model == model).order_by(monitors.c.name))]


# ---- predictions ----------------------------------------------------------------

def find_prediction(request_id: str, model: str | None = None) -> dict[str, Any]:
    """The logged row(s) of ``request_id``: {model, version, route, ts, prediction, score}.

    Only the parts whose request-id Bloom filter may hold the id are read (the
    filter never rules out a part that holds it, so the answer is the full scan's).
    """
    import duckdb

    from keel.store import predictions as P
    from keel.store.lake import sql_string

    models = [model] if model else P.models()
    for m in models:
        paths = P.files_holding(m, request_id)
        if not paths:
            continue
        con = duckdb.connect()
        try:
            con.execute("SET enable_progress_bar = false")  # a long query must not draw into --json output
            rows = con.execute(
                f"SELECT model, version, route, ts, prediction::VARCHAR, request_id FROM read_parquet([{', '.join(sql_string(p) for p in paths)}], "
                "union_by_name = true) WHERE request_id = ? OR starts_with(request_id, ? || ':') ORDER BY ts", [request_id, request_id]).fetchall()
        finally:
            con.close()
        if rows:
            return {"rows": [{"model": r[0], "version": int(r[1]), "route": r[2], "ts": r[3].isoformat() if r[3] else None,
                              "prediction": r[4], "request_id": r[5]} for r in rows]}
    raise NotFoundError(f"No logged prediction has request id {request_id!r}" + (f" in model {model!r}'s log." if model else "."),
                        hint="Request ids are in each response (request_id) and in keel predictions query; logs reach the lake within seconds.")


def prediction_lineage(request_id: str, *, model: str | None = None) -> Node:
    """A prediction back to its route, deployment, model version and everything behind it."""
    from keel.deployments.specs import list_deployments

    found = find_prediction(request_id, model)["rows"]
    root = Node("prediction", f"prediction {request_id}", {"rows": found})
    answering = [r for r in found if r["route"] != "shadow"] or found
    for row in answering[:1] + [r for r in found if r is not answering[0]]:
        deps = [d for d in list_deployments() if any(rt.name == row["route"] and rt.model == row["model"] for rt in d.spec.routes)]
        parent = root
        if deps:
            parent = root.add(Node("deployment", f"deployment {deps[0].name}", {"route": row["route"], "revision": deps[0].revision}))
        elif row["route"] not in (None, "default"):
            parent = root.add(Node("route", f"route {row['route']}"))
        parent.add(model_lineage(row["model"], row["version"]))
    return root


# ---- forward: who uses a feature view or source -----------------------------------

def feature_usage(name: str) -> Node:
    """Which services, model versions, deployments and monitors use feature view (or source) ``name``."""
    import sqlalchemy as sa

    from keel.features.registry import applied_objects
    from keel.registry.versions import list_models, list_versions
    from keel.store.metadata import get_metadata_store
    from keel.store.schema.features import feature_consumers

    objs = applied_objects()
    kinds = {k for (k, n) in objs if n == name}
    if not kinds:
        from keel.errors import did_you_mean

        raise NotFoundError(f"No applied feature view or source named {name!r}." + did_you_mean(name, sorted({n for _, n in objs})),
                            hint="List them with keel features ls.")
    views = {name} if "feature_view" in kinds or "on_demand_feature_view" in kinds else set()
    if "source" in kinds:  # a source: the views reading it
        views |= {n for (k, n), o in objs.items() if k == "feature_view" and o["spec"].get("source") == name}
    root = Node("source" if "source" in kinds and name not in views else "feature_view", name)
    services = {n: o for (k, n), o in objs.items() if k == "feature_service"
                and any(str(f["view"]) in views for f in o["spec"].get("features") or [])}
    with get_metadata_store().read() as conn:
        consumers = conn.execute(sa.select(feature_consumers)).mappings().all()
    versions_by_service: dict[str, list[tuple[str, int]]] = {}
    for registered in list_models():
        for mv in list_versions(registered.name):
            svc = (mv.meta or {}).get("feature_service")
            if svc in services:
                versions_by_service.setdefault(str(svc), []).append((mv.model, mv.version))
    for svc in sorted(services):
        snode = root.add(Node("feature_service", f"{svc} v{services[svc]['version']}",
                              {"consumers": [f"{c['consumer_kind']}:{c['consumer_id']}" for c in consumers if c["service"] == svc]}))
        for model_name, version in versions_by_service.get(svc, []):
            from keel.registry.versions import resolve_version

            mv = resolve_version(model_name, version)
            mnode = snode.add(Node("model_version", f"{model_name} v{version}", {"aliases": mv.aliases, "environments": mv.environments}))
            _users_of_model(mnode, mv)
    return root


# ---- rendering --------------------------------------------------------------------

_STYLE = {"prediction": "bold magenta", "deployment": "bold cyan", "route": "cyan", "model_version": "bold green", "run": "yellow",
          "dataset": "white", "feature_service": "bold blue", "feature_view": "blue", "source": "dim", "code": "magenta",
          "packages": "dim", "monitor": "red"}


def _brief(node: Node) -> str:
    d = node.detail
    bits = []
    for key in ("aliases", "environments", "trained_by", "fingerprint", "rows", "features", "route", "status"):
        v = d.get(key)
        if v not in (None, [], {}, ""):
            bits.append(f"{key}={','.join(map(str, v)) if isinstance(v, list) else str(v)[:16] if key == 'fingerprint' else v}")
    return ("  [dim]" + " ".join(bits) + "[/]") if bits else ""


def render_tree(node: Node) -> Any:
    """A rich Tree of ``node``."""
    from rich.markup import escape
    from rich.tree import Tree

    def build(n: Node, tree: Any) -> None:
        for c in n.children:
            build(c, tree.add(f"[{_STYLE.get(c.kind, 'white')}]{escape(c.label)}[/]{_brief(c)}"))

    tree = Tree(f"[{_STYLE.get(node.kind, 'white')}]{escape(node.label)}[/]{_brief(node)}")
    build(node, tree)
    return tree


def render_image(node: Node, path: str | Path) -> Path:
    """Draw ``node`` left to right (one column per depth) as SVG or PNG, by ``path``'s suffix."""
    path = Path(path)
    if path.suffix.lower() not in (".svg", ".png"):
        raise ValidationError(f"{path.name!r}: the image is drawn as .svg or .png.", hint="e.g. -o lineage.svg")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        from keel.errors import missing_extra

        raise missing_extra("matplotlib", "plots") from exc
    rows: list[tuple[Node, int, int]] = []  # (node, depth, row)

    def place(n: Node, depth: int) -> int:
        first = len(rows)
        rows.append((n, depth, first))
        for c in n.children:
            place(c, depth + 1)
        return first

    place(node, 0)
    index = {id(n): (d, r) for n, d, r in rows}
    depth = max(d for _, d, _ in rows) + 1
    colors = {"prediction": "#c2185b", "deployment": "#00838f", "route": "#00838f", "model_version": "#2e7d32", "run": "#f9a825",
              "dataset": "#616161", "feature_service": "#1565c0", "feature_view": "#1e88e5", "source": "#9e9e9e", "code": "#8e24aa",
              "packages": "#9e9e9e", "monitor": "#c62828"}
    fig, ax = plt.subplots(figsize=(3.2 * depth, 0.45 * len(rows) + 0.6))
    for n, d, r in rows:
        for c in n.children:
            cd, cr = index[id(c)]
            ax.plot([d + 0.9, cd], [-r, -cr], color="#bdbdbd", linewidth=1, zorder=1)
        ax.text(d, -r, n.label, fontsize=9, va="center", ha="left", zorder=2,
                bbox={"boxstyle": "round,pad=0.3", "facecolor": "white", "edgecolor": colors.get(n.kind, "#757575")})
    ax.set_xlim(-0.1, depth + 0.2)
    ax.set_ylim(-len(rows), 1)
    ax.axis("off")
    ax.set_title(f"lineage of {node.label}", fontsize=10, loc="left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
