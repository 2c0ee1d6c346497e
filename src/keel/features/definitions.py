"""Feature definitions in plain Python: Entity, Source, FeatureView, OnDemandFeatureView, FeatureService.

A project keeps them in one module (``features.py``, see ``settings().features_module``)::

    customer = Entity("customer", join_keys=["customer_id"])
    usage_src = Source("usage", path="data/usage.parquet", created_timestamp_field="created_timestamp")
    usage = FeatureView("usage", entities=[customer], source=usage_src, ttl=timedelta(days=30),
                        schema=[Field("sessions", Int64), Field("minutes", Float64)])
    churn_v1 = FeatureService("churn_v1", features=[usage, profile[["plan", "tenure_months"]]])

Every object turns into a canonical JSON spec (:meth:`spec`); its sha256 is the
object's content hash, so a changed schema *or* changed transformation code makes
a new version at ``keel features apply``.
"""

from __future__ import annotations

import abc
import hashlib
import inspect
import json
import re
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from keel.errors import ValidationError

# Value types, as Feast spells them; the value is the DuckDB type name used for checks.
Int64 = "int64"
Int32 = "int32"
Float64 = "float64"
Float32 = "float32"
String = "string"
Bool = "bool"
UnixTimestamp = "timestamp"
DTYPES: dict[str, str] = {
    "int64": "BIGINT",
    "int32": "INTEGER",
    "float64": "DOUBLE",
    "float32": "FLOAT",
    "string": "VARCHAR",
    "bool": "BOOLEAN",
    "timestamp": "TIMESTAMP WITH TIME ZONE",
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValidationError(
            f"{kind} name {name!r} is not valid.",
            hint="Use a letter or '_' then letters, digits or '_' (at most 128 characters).",
        )
    return name


def _check_dtype(owner: str, column: str, dtype: str) -> str:
    if dtype not in DTYPES:
        from keel.errors import did_you_mean

        raise ValidationError(
            f"{owner}: column '{column}' has unknown type {dtype!r}." + did_you_mean(str(dtype), DTYPES),
            hint=f"Use one of {', '.join(DTYPES)} (keel.features.Int64, Float64, String, ...).",
        )
    return dtype


def _code_of(fn: Callable[..., Any]) -> str:
    """The source of a function, dedented; the transformation's identity for hashing."""
    try:
        return textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return getattr(fn, "__qualname__", repr(fn))


def content_hash(spec: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Field:
    """A typed column: ``Field("minutes", Float64, description="...")``."""

    name: str
    dtype: str
    description: str = ""

    def __post_init__(self) -> None:
        _check_name("Field", self.name)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "description": self.description}


class _Object(abc.ABC):
    kind: str = ""
    name: str
    description: str
    owner: str
    tags: dict[str, str]

    def _meta(self, description: str, owner: str, tags: Mapping[str, str] | None) -> None:
        self.description = description
        self.owner = owner
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}

    @abc.abstractmethod
    def spec(self) -> dict[str, Any]:
        """The definition as plain data: what is versioned and hashed."""

    @property
    def hash(self) -> str:
        return content_hash(self.spec())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Entity(_Object):
    """A thing features describe (customer, driver), identified by its join key(s)."""

    kind = "entity"

    def __init__(
        self,
        name: str,
        join_keys: Sequence[str] | None = None,
        value_type: str = Int64,
        *,
        description: str = "",
        owner: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.name = _check_name("Entity", name)
        self.join_keys = list(join_keys or [name])
        if not self.join_keys:
            raise ValidationError(f"Entity '{name}' has no join keys.", hint="Pass join_keys=['customer_id'].")
        for key in self.join_keys:
            _check_name(f"Entity '{name}' join key", key)
        self.value_type = _check_dtype(f"Entity '{name}'", self.join_keys[0], value_type)
        self._meta(description, owner, tags)

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "name": self.name, "join_keys": self.join_keys, "value_type": self.value_type,
            "description": self.description, "owner": self.owner, "tags": self.tags,
        }


class Source(_Object):
    """Where a view's rows come from: Parquet/CSV files or folders, a SQL query on PostgreSQL, or a DataFrame.

    ``timestamp_field`` is the event time; ``created_timestamp_field`` (optional) the
    time the row was ingested. Relative paths are relative to the project root.
    """

    kind = "source"

    def __init__(
        self,
        name: str,
        *,
        path: str | Path | None = None,
        query: str | None = None,
        connection: str | None = None,
        df: Any = None,
        timestamp_field: str = "event_timestamp",
        created_timestamp_field: str | None = None,
        file_format: str | None = None,
        description: str = "",
        owner: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.name = _check_name("Source", name)
        given = [x for x in (path, query, df) if x is not None]
        if len(given) != 1:
            raise ValidationError(
                f"Source '{name}' needs exactly one of path=, query= or df= (got {len(given)}).",
                hint="Point it at a Parquet/CSV file or folder, a SQL query with connection=, or a DataFrame.",
            )
        self.path = None if path is None else str(path)
        self.query = query
        self.connection = connection
        self.df = df
        if query is not None and not connection:
            raise ValidationError(
                f"Source '{name}' has a query but no connection.",
                hint="Pass connection='postgresql+psycopg://user@host/db'.",
            )
        if file_format is None and self.path is not None:
            file_format = "csv" if self.path.lower().endswith((".csv", ".csv.gz")) else "parquet"
        if file_format not in (None, "parquet", "csv"):
            raise ValidationError(f"Source '{name}' has file_format {file_format!r}.", hint="Use 'parquet' or 'csv'.")
        self.file_format = file_format
        self.timestamp_field = _check_name(f"Source '{name}' timestamp_field", timestamp_field)
        self.created_timestamp_field = (
            None if created_timestamp_field is None else _check_name(f"Source '{name}' created_timestamp_field", created_timestamp_field)
        )
        self._meta(description, owner, tags)

    @property
    def source_kind(self) -> str:
        if self.path is not None:
            return str(self.file_format)
        return "sql" if self.query is not None else "dataframe"

    def spec(self) -> dict[str, Any]:
        from keel.store.metadata import _redact

        return {
            "kind": self.kind, "name": self.name, "source_kind": self.source_kind, "path": self.path,
            "query": self.query, "connection": None if self.connection is None else _redact(self.connection),
            "timestamp_field": self.timestamp_field, "created_timestamp_field": self.created_timestamp_field,
            "description": self.description, "owner": self.owner, "tags": self.tags,
        }


class FeatureView(_Object):
    """A typed group of features of some entities, read from one source.

    ``transformation`` is written once and runs for training, materialization and
    push alike: a SQL ``SELECT`` over the table ``source`` (DuckDB dialect), or a
    function taking and returning a pandas DataFrame (``mode="pandas"``) or an
    Arrow table (``mode="arrow"``). It must be row-wise (one output row per input
    row) and keep the join keys and timestamp columns.

    With ``aggregations=[Aggregation(...)]`` the view's features are windowed
    aggregates of the (transformed) event rows, and ``schema`` names the input
    columns they read (see :mod:`keel.features.aggregations`). ``late_events``:
    ``"respect_created_time"`` (default) counts an event from the time it arrived,
    offline and online alike; ``"by_event_time"`` counts it as if it had arrived on time.
    """

    kind = "feature_view"

    def __init__(
        self,
        name: str,
        *,
        entities: Sequence[Entity],
        schema: Sequence[Field],
        source: Source,
        ttl: timedelta | None = None,
        transformation: str | Callable[[Any], Any] | None = None,
        mode: str | None = None,
        online: bool = True,
        aggregations: Sequence[Any] = (),
        late_events: str = "respect_created_time",
        description: str = "",
        owner: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.name = _check_name("FeatureView", name)
        if not entities:
            raise ValidationError(f"FeatureView '{name}' has no entities.", hint="Pass entities=[customer].")
        if not isinstance(source, Source):
            raise ValidationError(f"FeatureView '{name}': source must be a keel Source, got {type(source).__name__}.")
        self.entities = list(entities)
        self.schema = list(schema)
        if not self.schema:
            raise ValidationError(f"FeatureView '{name}' has an empty schema.", hint="List its features as Field(name, dtype).")
        seen: set[str] = set()
        for f in self.schema:
            _check_dtype(f"FeatureView '{name}'", f.name, f.dtype)
            if f.name in seen:
                raise ValidationError(f"FeatureView '{name}' lists feature '{f.name}' twice.", hint="Remove the duplicate Field.")
            seen.add(f.name)
        reserved = set(self.join_keys) | {source.timestamp_field, source.created_timestamp_field}
        clash = seen & reserved
        if clash:
            raise ValidationError(
                f"FeatureView '{name}': '{sorted(clash)[0]}' is a join key or timestamp column, not a feature.",
                hint="Remove it from schema=.",
            )
        self.source = source
        if ttl is not None and (not isinstance(ttl, timedelta) or ttl <= timedelta(0)):
            raise ValidationError(f"FeatureView '{name}' has ttl {ttl!r}.", hint="Use a positive datetime.timedelta, or None for no limit.")
        self.ttl = ttl
        if transformation is not None and not isinstance(transformation, str) and not callable(transformation):
            raise ValidationError(f"FeatureView '{name}': transformation must be SQL text or a function.")
        if mode is None:
            mode = None if transformation is None else ("sql" if isinstance(transformation, str) else "pandas")
        if transformation is not None and mode not in ("sql", "pandas", "arrow"):
            raise ValidationError(f"FeatureView '{name}' has mode {mode!r}.", hint="Use 'sql', 'pandas' or 'arrow'.")
        self.transformation = transformation
        self.mode = mode
        self.online = online
        from keel.features.aggregations import LATE_EVENTS, check_view

        self.aggregations = list(aggregations)
        check_view(name, {f.name: f.dtype for f in self.schema}, self.aggregations, ttl)
        if late_events not in LATE_EVENTS:
            raise ValidationError(f"FeatureView '{name}' has late_events={late_events!r}.", hint=f"Use one of {', '.join(LATE_EVENTS)}.")
        if late_events != LATE_EVENTS[0] and not self.aggregations:
            raise ValidationError(f"FeatureView '{name}': late_events= applies to views with aggregations.", hint="Drop late_events=.")
        self.late_events = late_events
        dtypes = {f.name: f.dtype for f in self.schema}
        self.outputs: list[Field] = (
            [Field(str(a.name), a.output_dtype(None if a.column is None else dtypes[a.column])) for a in self.aggregations]
            if self.aggregations
            else self.schema
        )
        self.projection: list[str] | None = None
        self._meta(description, owner, tags)

    @property
    def join_keys(self) -> list[str]:
        return [k for e in self.entities for k in e.join_keys]

    @property
    def features(self) -> list[Field]:
        if self.projection is None:
            return self.outputs
        return [f for f in self.outputs if f.name in self.projection]

    def __getitem__(self, names: Sequence[str]) -> FeatureView:
        """A projection of some features, for a FeatureService: ``usage[["minutes"]]``."""
        if isinstance(names, str):
            names = [names]
        known = {f.name for f in self.outputs}
        for n in names:
            if n not in known:
                from keel.errors import did_you_mean

                raise ValidationError(
                    f"FeatureView '{self.name}' has no feature '{n}'." + did_you_mean(n, known),
                    hint=f"Its features are: {', '.join(f.name for f in self.outputs)}.",
                )
        view = object.__new__(FeatureView)
        view.__dict__.update(self.__dict__)
        view.projection = list(names)
        return view

    def transformation_code(self) -> str | None:
        if self.transformation is None:
            return None
        if isinstance(self.transformation, str):
            return textwrap.dedent(self.transformation).strip()
        return _code_of(self.transformation)

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "name": self.name, "entities": [e.name for e in self.entities],
            "join_keys": self.join_keys, "schema": [f.spec() for f in self.schema], "source": self.source.name,
            "ttl_seconds": None if self.ttl is None else self.ttl.total_seconds(),
            "transformation": self.transformation_code(), "mode": self.mode, "online": self.online,
            "description": self.description, "owner": self.owner, "tags": self.tags,
            **(
                {"aggregations": [a.spec() for a in self.aggregations], "late_events": self.late_events}
                if self.aggregations
                else {}
            ),
        }


class OnDemandFeatureView(_Object):
    """Features computed at request time by one Python function, used offline and online alike.

    ``function`` takes a pandas DataFrame holding the ``request_schema`` columns and
    the features of ``sources`` and returns a DataFrame with the ``schema`` columns.
    It must be vectorized (column arithmetic), as it runs on whole training sets.
    """

    kind = "on_demand_feature_view"

    def __init__(
        self,
        name: str,
        *,
        sources: Sequence[FeatureView],
        schema: Sequence[Field],
        function: Callable[[Any], Any],
        request_schema: Sequence[Field] = (),
        description: str = "",
        owner: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.name = _check_name("OnDemandFeatureView", name)
        self.sources = list(sources)
        self.schema = list(schema)
        self.request_schema = list(request_schema)
        for f in [*self.schema, *self.request_schema]:
            _check_dtype(f"OnDemandFeatureView '{name}'", f.name, f.dtype)
        if not callable(function):
            raise ValidationError(f"OnDemandFeatureView '{name}': function must be callable.")
        self.function = function
        self.projection: list[str] | None = None
        self._meta(description, owner, tags)

    @property
    def features(self) -> list[Field]:
        if self.projection is None:
            return self.schema
        return [f for f in self.schema if f.name in self.projection]

    @property
    def input_features(self) -> list[str]:
        return [f.name for v in self.sources for f in v.features]

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "name": self.name,
            "sources": [{"view": v.name, "features": [f.name for f in v.features]} for v in self.sources],
            "schema": [f.spec() for f in self.schema], "request_schema": [f.spec() for f in self.request_schema],
            "function": _code_of(self.function), "description": self.description, "owner": self.owner, "tags": self.tags,
        }


def on_demand_feature_view(
    *, sources: Sequence[FeatureView], schema: Sequence[Field], request_schema: Sequence[Field] = (), **meta: Any
) -> Callable[[Callable[[Any], Any]], OnDemandFeatureView]:
    """Decorator form: ``@on_demand_feature_view(sources=[...], schema=[...])`` over the function."""

    def wrap(fn: Callable[[Any], Any]) -> OnDemandFeatureView:
        return OnDemandFeatureView(fn.__name__, sources=sources, schema=schema, request_schema=request_schema, function=fn, **meta)

    return wrap


@dataclass
class FeatureService(_Object):
    """The named, versioned set of features a model consumes."""

    name: str
    features: list[FeatureView | OnDemandFeatureView]
    description: str = ""
    owner: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    kind = "feature_service"

    def __post_init__(self) -> None:
        _check_name("FeatureService", self.name)
        if not self.features:
            raise ValidationError(f"FeatureService '{self.name}' lists no features.", hint="Pass features=[view, view[['a']]].")
        for item in self.features:
            if not isinstance(item, FeatureView | OnDemandFeatureView):
                raise ValidationError(
                    f"FeatureService '{self.name}': {item!r} is not a FeatureView or OnDemandFeatureView.",
                    hint="List views, or projections such as view[['a', 'b']].",
                )
        self.check_unique()

    def __hash__(self) -> int:
        return hash(("feature_service", self.name))

    def check_unique(self) -> None:
        owner: dict[str, str] = {}
        for item in self.features:
            for f in item.features:
                if f.name in owner and owner[f.name] != item.name:
                    raise ValidationError(
                        f"FeatureService '{self.name}': feature '{f.name}' comes from both "
                        f"'{owner[f.name]}' and '{item.name}'.",
                        hint=f"Project one of them away, e.g. {item.name}[[...]] without '{f.name}', or rename the column.",
                    )
                owner[f.name] = item.name

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "name": self.name,
            "features": [{"view": v.name, "kind": v.kind, "features": [f.name for f in v.features]} for v in self.features],
            "description": self.description, "owner": self.owner, "tags": self.tags,
        }


Definition = Entity | Source | FeatureView | OnDemandFeatureView | FeatureService
