"""Find the project's feature definitions: the module named by ``settings().features_module``.

The module is a Python file (relative to the project root) or an importable
dotted name. Every Entity, Source, FeatureView, OnDemandFeatureView and
FeatureService at its top level is a definition; objects a view refers to
(its entities and source) count too.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from keel.errors import ConfigError, NotFoundError, ValidationError, did_you_mean
from keel.features.definitions import (
    Definition,
    Entity,
    FeatureService,
    FeatureView,
    OnDemandFeatureView,
    Source,
    content_hash,
)

KINDS = ("entity", "source", "feature_view", "on_demand_feature_view", "feature_service")


@dataclass
class Selection:
    """What a training set or online lookup asks for, resolved against the definitions."""

    views: list[FeatureView]  # projected to the requested features
    on_demand: list[OnDemandFeatureView]
    service: FeatureService | None
    features: list[str]  # output feature names, in order
    # feature views needed only as inputs of on-demand views (their features are not output)
    hidden: dict[str, list[str]] = field(default_factory=dict)

    @property
    def join_keys(self) -> list[str]:
        keys: list[str] = []
        for v in self.views:
            keys.extend(k for k in v.join_keys if k not in keys)
        return keys

    @property
    def request_fields(self) -> list[str]:
        return [f.name for o in self.on_demand for f in o.request_schema]


class Definitions:
    """Every definition of a project, by kind and name."""

    def __init__(self, objects: Iterable[Definition], origin: str = "<memory>") -> None:
        self.origin = origin
        self.by_kind: dict[str, dict[str, Definition]] = {k: {} for k in KINDS}
        for obj in objects:
            self._add(obj)
        for view in list(self.views.values()):
            for e in view.entities:
                self._add(e)
            self._add(view.source)
        for odfv in list(self.on_demand.values()):
            for v in odfv.sources:
                self._add(v)
        for svc in list(self.services.values()):
            for item in svc.features:
                if item.name not in self.by_kind[item.kind]:
                    raise ValidationError(
                        f"FeatureService '{svc.name}' uses {item.kind} '{item.name}', which {origin} does not define at top level.",
                        hint=f"Define '{item.name}' as a module-level name in {origin}.",
                    )

    def _add(self, obj: Definition) -> None:
        if isinstance(obj, FeatureView) and obj.projection is not None:
            return
        space = self.by_kind[obj.kind]
        have = space.get(obj.name)
        if have is not None and have is not obj and have.hash != obj.hash:
            raise ValidationError(
                f"Two different {obj.kind.replace('_', ' ')}s are named '{obj.name}' in {self.origin}.",
                hint="Give each definition its own name.",
            )
        space.setdefault(obj.name, obj)

    @property
    def entities(self) -> dict[str, Entity]:
        return self.by_kind["entity"]  # type: ignore[return-value]

    @property
    def sources(self) -> dict[str, Source]:
        return self.by_kind["source"]  # type: ignore[return-value]

    @property
    def views(self) -> dict[str, FeatureView]:
        return self.by_kind["feature_view"]  # type: ignore[return-value]

    @property
    def on_demand(self) -> dict[str, OnDemandFeatureView]:
        return self.by_kind["on_demand_feature_view"]  # type: ignore[return-value]

    @property
    def services(self) -> dict[str, FeatureService]:
        return self.by_kind["feature_service"]  # type: ignore[return-value]

    def objects(self) -> list[Definition]:
        return [obj for kind in KINDS for obj in self.by_kind[kind].values()]

    def hashes(self) -> dict[str, str]:
        """{"kind:name": content hash} of every object."""
        return {f"{o.kind}:{o.name}": o.hash for o in self.objects()}

    @property
    def hash(self) -> str:
        return content_hash(self.hashes())

    def view(self, name: str) -> FeatureView:
        if name not in self.views:
            raise NotFoundError(f"No feature view named '{name}' in {self.origin}." + did_you_mean(name, self.views))
        return self.views[name]

    def service(self, name: str) -> FeatureService:
        if name not in self.services:
            raise NotFoundError(
                f"No feature service named '{name}' in {self.origin}." + did_you_mean(name, self.services),
                hint="Run `keel features ls` to list them.",
            )
        return self.services[name]

    def select(self, what: str | FeatureService | Sequence[str]) -> Selection:
        """Resolve a service (object or name) or a list of "view:feature" references."""
        if isinstance(what, FeatureService):
            svc = self.service(what.name)
            return self._from_items(svc.features, svc)
        if isinstance(what, str):
            if ":" not in what:
                svc = self.service(what)
                return self._from_items(svc.features, svc)
            what = [what]
        items: dict[str, list[str]] = {}
        for ref in what:
            if not isinstance(ref, str) or ":" not in ref:
                raise ValidationError(f"Feature reference {ref!r} is not 'view:feature'.", hint="Write e.g. 'usage:minutes'.")
            view, feat = ref.split(":", 1)
            items.setdefault(view, []).append(feat)
        chosen: list[FeatureView | OnDemandFeatureView] = []
        for view, feats in items.items():
            if view in self.views:
                chosen.append(self.views[view][feats])
            elif view in self.on_demand:
                odfv = self.on_demand[view]
                known = {f.name for f in odfv.schema}
                for f in feats:
                    if f not in known:
                        raise ValidationError(f"OnDemandFeatureView '{view}' has no feature '{f}'." + did_you_mean(f, known))
                proj = object.__new__(OnDemandFeatureView)
                proj.__dict__.update(odfv.__dict__)
                proj.projection = feats
                chosen.append(proj)
            else:
                raise NotFoundError(
                    f"No feature view named '{view}' in {self.origin}." + did_you_mean(view, [*self.views, *self.on_demand])
                )
        tmp = FeatureService.__new__(FeatureService)
        tmp.name, tmp.features = "<features>", chosen
        tmp.check_unique()
        return self._from_items(chosen, None)

    def _from_items(self, items: Sequence[FeatureView | OnDemandFeatureView], svc: FeatureService | None) -> Selection:
        views: dict[str, FeatureView] = {}
        odfvs: list[OnDemandFeatureView] = []
        features: list[str] = []
        for item in items:
            if isinstance(item, FeatureView):
                views[item.name] = item
            else:
                odfvs.append(item)
            features.extend(f.name for f in item.features)
        hidden: dict[str, list[str]] = {}
        for odfv in odfvs:
            for src in odfv.sources:
                needed = [f.name for f in src.features]
                if src.name in views:
                    have = {f.name for f in views[src.name].features}
                    missing = [n for n in needed if n not in have]
                    if missing:
                        views[src.name] = self.view(src.name)[[*(f.name for f in views[src.name].features), *missing]]
                        hidden.setdefault(src.name, []).extend(missing)
                else:
                    views[src.name] = self.view(src.name)[needed]
                    hidden.setdefault(src.name, []).extend(needed)
        return Selection(list(views.values()), odfvs, svc, features, hidden)


# -- loading the project module -------------------------------------------------------
_cache: dict[tuple[str, str], Definitions] = {}
_quick: dict[tuple[str, int, int], Definitions] = {}
_lock = threading.Lock()


def module_path() -> Path | str:
    """The features module: a file path under the project root, or a dotted module name."""
    from keel.config import settings

    s = settings()
    name = str(s.features_module)
    path = (s.root / name) if not Path(name).is_absolute() else Path(name)
    if path.suffix == ".py" or path.exists():
        return path
    return name


def _import_file(path: Path) -> ModuleType:
    mod_name = f"keel_features_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"Cannot load the features module {path}.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except ValidationError:
        raise
    except Exception as exc:
        sys.modules.pop(mod_name, None)
        raise ConfigError(
            f"Importing the features module {path} failed: {type(exc).__name__}: {exc}",
            hint="Fix the error in that file (run `python " + str(path) + "` to see the traceback).",
        ) from exc
    return module


def definitions_from_module(module: ModuleType, origin: str | None = None) -> Definitions:
    objs: list[Definition] = []
    for value in vars(module).values():
        is_view = isinstance(value, FeatureView) and value.projection is None
        if is_view or isinstance(value, Entity | Source | OnDemandFeatureView | FeatureService):
            objs.append(value)
    return Definitions(objs, origin or getattr(module, "__file__", module.__name__) or module.__name__)


def load_definitions(where: str | Path | None = None) -> Definitions:
    """The definitions of the current project (re-read when the file changes)."""
    target = module_path() if where is None else where
    if isinstance(target, Path) or (isinstance(target, str) and target.endswith(".py")):
        path = Path(target)
        if not path.is_file():
            from keel.config import settings

            raise NotFoundError(
                f"The features module {path} does not exist.",
                hint=f"Create it, or set features_module in {settings().root / 'keel.yaml'}.",
            )
        import hashlib

        st = path.stat()
        quick = (str(path), st.st_mtime_ns, st.st_size)
        hit = _quick.get(quick)
        if hit is not None:
            return hit
        key = (str(path.resolve()), hashlib.sha256(path.read_bytes()).hexdigest())
        with _lock:
            if key not in _cache:
                _cache[key] = definitions_from_module(_import_file(path), str(path))
            _quick[quick] = _cache[key]
            return _cache[key]
    try:
        module = importlib.import_module(str(target))
    except ImportError as exc:
        raise ConfigError(f"Cannot import the features module '{target}': {exc}", hint="Set features_module in keel.yaml.") from None
    return definitions_from_module(module, str(target))


def clear_cache() -> None:
    with _lock:
        _cache.clear()
        _quick.clear()


def as_definitions(obj: Any) -> Definitions:
    return obj if isinstance(obj, Definitions) else load_definitions(obj)
