"""Windowed aggregations: ``Aggregation(column, function, window)`` features, defined once.

A feature view over an event source may list aggregations instead of row-wise
features; its ``schema`` then names the input columns they read::

    usage = FeatureView("usage", entities=[customer], source=events, ttl=timedelta(days=31),
                        schema=[Field("minutes", Float64)],
                        aggregations=[Aggregation("minutes", "sum", "30d"),
                                      Aggregation("minutes", "mean", timedelta(days=7)),
                                      Aggregation("minutes", "sum", "7d", calendar=True, timezone="Europe/Berlin"),
                                      Aggregation(None, "count", "1d", where="minutes > 0")])

Windows, as of a timestamp ``t``:

- sliding (default): events with ``t - window < event_time <= t``;
- calendar (``calendar=True, timezone=...``; whole days only): the ``N`` local calendar
  days ending with the local day that contains ``t``, that day counted up to ``t``:
  ``local_midnight(t) - (N - 1) days <= event_time <= t``, computed in the named zone,
  so a window across a daylight-saving change is 1 hour shorter or longer in UTC;
- tiled (``aggregation_interval="1h"``; the window a whole number ``N`` of tiles): time is cut
  into tiles of the interval aligned to the Unix epoch (UTC), and the window is the ``N``
  tiles ending with the tile that contains ``t``, that tile counted up to ``t``:
  ``tile_start(t) - (N - 1) * interval <= event_time <= t``. The window's far edge moves
  one tile at a time (it holds between ``window - interval`` and ``window`` of events), so
  the online state keeps one partial aggregate per tile instead of every event; offline
  and online use the same tiles and give the same values.

The offline path (:mod:`.aggregation_offline`) computes them in DuckDB for every
entity row; the online path (:mod:`.aggregation_online`) keeps the events of each
entity's longest window in the online store and computes the same numbers as of now.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from keel.errors import ValidationError

# function -> (needs a column, allowed input families, output dtype or None for "the column's")
FUNCTIONS: dict[str, tuple[bool, set[str], str | None]] = {
    "count": (False, {"num", "str", "bool", "time"}, "int64"),
    "sum": (True, {"num"}, None),
    "mean": (True, {"num"}, "float64"),
    "min": (True, {"num", "str", "time"}, None),
    "max": (True, {"num", "str", "time"}, None),
    "stddev": (True, {"num"}, "float64"),
    "stddev_pop": (True, {"num"}, "float64"),
    "count_distinct": (True, {"num", "str", "bool"}, "int64"),
    "time_since_last": (False, {"num", "str", "bool", "time"}, "float64"),
    "last_n": (True, {"num", "str", "bool"}, None),
}
MAX_LAST_N = 1_000
_FAMILY = {"int64": "num", "int32": "num", "float64": "num", "float32": "num", "string": "str", "bool": "bool", "timestamp": "time"}
_ZERO_OK = {"count", "sum", "count_distinct"}
_WINDOW = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

LATE_EVENTS = ("respect_created_time", "by_event_time")


def parse_window(window: timedelta | str, where: str) -> timedelta:
    """``timedelta`` or text such as "30m", "1h", "7d", "2w"."""
    if isinstance(window, timedelta):
        value = window
    elif isinstance(window, str) and _WINDOW.match(window):
        m = _WINDOW.match(window)
        assert m is not None
        value = timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    else:
        raise ValidationError(
            f"{where}: window {window!r} is not a duration.",
            hint="Use a datetime.timedelta or text such as '30m', '1h', '7d', '2w'.",
        )
    if value <= timedelta(0):
        raise ValidationError(f"{where}: window {window!r} is not positive.", hint="Use a positive duration, e.g. '7d'.")
    return value


def window_label(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass
class Aggregation:
    """One windowed aggregate of one column (or of the events, for ``count`` and ``time_since_last``).

    ``function``: count, sum, mean, min, max, stddev (sample), stddev_pop, count_distinct
    (exact), time_since_last (seconds from the window's last event to the row's time),
    last_n (a list of the ``n`` latest non-null values in the window, newest first; ties
    in event time go by created time, then by value).
    ``empty``: the value when no event is in the window, ``None`` (null) or ``0`` (count,
    sum and count_distinct only); count and count_distinct default to 0, the rest to null.
    ``where``: a DuckDB SQL condition on the view's input columns; only events meeting it count.
    ``aggregation_interval``: cut time into tiles of this length (see the module's docstring);
    every aggregation of a view has the same one. Changing it, like the window, is a breaking change.
    ``name`` defaults to ``<column>_<function>_<window>`` (``_cal`` appended for calendar windows;
    ``last_<n>`` for last_n).
    """

    column: str | None
    function: str
    window: timedelta | str
    name: str | None = None
    calendar: bool = False
    timezone: str | None = None
    where: str | None = None
    empty: int | str | None = "default"
    n: int | None = None
    aggregation_interval: timedelta | str | None = None

    def __post_init__(self) -> None:
        # A bad definition is reported by the view that lists it (check_view), so the
        # message names the view as well as the aggregation.
        self.problem: ValidationError | None = None
        self.span = timedelta(0)
        self.interval: timedelta | None = None
        try:
            self._check()
        except ValidationError as exc:
            self.problem = exc
            if self.name is None:
                self.name = f"{self.column or 'events'}_{self.function}_{self.window}"

    def _check(self) -> None:
        label = f"Aggregation({self.column!r}, {self.function!r}, {self.window!r})"
        if self.function not in FUNCTIONS:
            from keel.errors import did_you_mean

            raise ValidationError(
                f"{label}: unknown function {self.function!r}." + did_you_mean(str(self.function), FUNCTIONS),
                hint=f"Use one of {', '.join(FUNCTIONS)}.",
            )
        needs_column = FUNCTIONS[self.function][0]
        if needs_column and not self.column:
            raise ValidationError(f"{label}: {self.function} needs a column.", hint="Pass the input column's name first.")
        self.span = parse_window(self.window, label)
        if self.calendar:
            if self.span % timedelta(days=1):
                raise ValidationError(f"{label}: a calendar window must be whole days, not {self.window!r}.", hint="Use e.g. '7d'.")
            if not self.timezone:
                raise ValidationError(
                    f"{label}: a calendar window needs a timezone.",
                    hint="Pass timezone='Europe/Berlin' (an IANA name): calendar days are local days.",
                )
        if self.timezone is not None:
            check_timezone(self.timezone, label)
            if not self.calendar:
                raise ValidationError(f"{label}: timezone= applies to calendar windows only.", hint="Add calendar=True, or drop timezone=.")
        if self.function == "last_n":
            if isinstance(self.n, bool) or not isinstance(self.n, int) or not 1 <= self.n <= MAX_LAST_N:
                raise ValidationError(
                    f"{label}: last_n needs n= between 1 and {MAX_LAST_N}, not {self.n!r}.", hint="Pass e.g. n=5 (the 5 latest values)."
                )
        elif self.n is not None:
            raise ValidationError(f"{label}: n= applies to last_n only.", hint="Drop n=, or use function 'last_n'.")
        if self.aggregation_interval is not None:
            self.interval = parse_window(self.aggregation_interval, f"{label}, aggregation_interval")
            if self.calendar:
                raise ValidationError(
                    f"{label}: a calendar window cannot have an aggregation_interval (its tiles are the local days).",
                    hint="Drop aggregation_interval=, or calendar=True.",
                )
            if self.interval.total_seconds() % 1 or self.span % self.interval:
                raise ValidationError(
                    f"{label}: the window ({window_label(self.span)}) is not a whole number of "
                    f"aggregation_interval tiles ({window_label(self.interval)}).",
                    hint="Use an interval that divides the window, e.g. '1h' for '7d'.",
                )
        if self.empty == "default":
            self.empty = 0 if self.function in ("count", "count_distinct") else None
        if self.empty not in (None, 0):
            raise ValidationError(f"{label}: empty={self.empty!r} is not valid.", hint="Use None (null) or 0.")
        if self.empty == 0 and self.function not in _ZERO_OK:
            raise ValidationError(f"{label}: empty=0 applies to count, sum and count_distinct only.", hint="Use empty=None.")
        if self.name is None:
            base = self.column or "events"
            function = f"last_{self.n}" if self.function == "last_n" else self.function
            self.name = f"{base}_{function}_{window_label(self.span)}" + ("_cal" if self.calendar else "")
        from keel.features.definitions import _check_name

        _check_name("Aggregation", self.name)

    @property
    def days(self) -> int:
        return self.span // timedelta(days=1)

    @property
    def tiles(self) -> int:
        """How many aggregation_interval tiles the window spans (tiled windows only)."""
        assert self.interval is not None
        return self.span // self.interval

    def output_dtype(self, input_dtype: str | None) -> str:
        out = FUNCTIONS[self.function][2]
        if out is not None:
            return out
        assert input_dtype is not None
        if self.function == "last_n":
            return f"list<{input_dtype}>"
        if self.function == "sum":
            return "int64" if input_dtype in ("int64", "int32") else "float64"
        return input_dtype

    def check_input(self, view: str, dtype: str | None) -> None:
        """The column's type fits the function (named in the error with the fix)."""
        if dtype is None:
            return
        family = _FAMILY[dtype]
        if family not in FUNCTIONS[self.function][1]:
            fits = [f for f, (_, fam, _) in FUNCTIONS.items() if family in fam]
            raise ValidationError(
                f"FeatureView '{view}', aggregation '{self.name}': {self.function} does not fit column "
                f"'{self.column}' of type {dtype}.",
                hint=f"For {dtype} columns use {', '.join(fits)}; or aggregate a numeric column.",
            )

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name, "column": self.column, "function": self.function,
            "window_seconds": self.span.total_seconds(), "calendar": self.calendar, "timezone": self.timezone,
            "where": self.where, "empty": self.empty,
            # only when set, so the hashes of definitions written before these existed stay the same
            **({"n": self.n} if self.n is not None else {}),
            **({"interval_seconds": self.interval.total_seconds()} if self.interval is not None else {}),
        }


def check_timezone(name: str, where: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        from keel.errors import did_you_mean

        raise ValidationError(
            f"{where}: unknown timezone {name!r}." + did_you_mean(name, available_timezones()),
            hint="Use an IANA name such as 'Europe/Berlin' or 'America/New_York'.",
        ) from None


def aggregations_from_spec(items: Sequence[dict[str, Any]] | None) -> list[Aggregation]:
    """Rebuild aggregations from their stored specs."""
    return [
        Aggregation(
            a["column"], a["function"], timedelta(seconds=a["window_seconds"]), name=a["name"], calendar=a["calendar"],
            timezone=a["timezone"], where=a["where"], empty=a["empty"], n=a.get("n"),
            aggregation_interval=None if a.get("interval_seconds") is None else timedelta(seconds=a["interval_seconds"]),
        )
        for a in (items or [])
    ]


def check_view(name: str, schema: dict[str, str], aggregations: Sequence[Aggregation], ttl: timedelta | None) -> None:
    """What can be checked without data: columns exist and fit, names unique, windows within the TTL."""
    from keel.errors import did_you_mean

    seen: set[str] = set()
    tiled: Aggregation | None = None
    for agg in aggregations:
        if not isinstance(agg, Aggregation):
            raise ValidationError(f"FeatureView '{name}': {agg!r} is not an Aggregation.", hint="List Aggregation(column, function, window) objects.")
        if agg.problem is not None:
            raise ValidationError(f"FeatureView '{name}', {agg.problem.message}", hint=agg.problem.hint)
        tiled = tiled or agg
        if agg.interval != tiled.interval:
            raise ValidationError(
                f"FeatureView '{name}', aggregation '{agg.name}': its aggregation_interval ({_interval(agg)}) differs from "
                f"'{tiled.name}' ({_interval(tiled)}); the aggregations of one view share one set of tiles.",
                hint="Give every aggregation of the view the same aggregation_interval, or put them in two views.",
            )
        if agg.column is not None and agg.column not in schema:
            raise ValidationError(
                f"FeatureView '{name}', aggregation '{agg.name}': column '{agg.column}' is not in the view's schema."
                + did_you_mean(agg.column, schema),
                hint=f"Add Field('{agg.column}', ...) to schema= (the input columns of the aggregations).",
            )
        agg.check_input(name, None if agg.column is None else schema[agg.column])
        assert agg.name is not None
        if agg.name in seen or agg.name in schema:
            raise ValidationError(
                f"FeatureView '{name}': two features are named '{agg.name}'.", hint="Give one of the aggregations name='...'."
            )
        seen.add(agg.name)
        if ttl is not None and agg.span > ttl:
            raise ValidationError(
                f"FeatureView '{name}', aggregation '{agg.name}': its window ({window_label(agg.span)}) is longer than the "
                f"view's ttl ({window_label(ttl)}), so the online store would forget events still in the window.",
                hint=f"Raise ttl= to at least {window_label(agg.span)}, or shorten the window.",
            )


def _interval(agg: Aggregation) -> str:
    return "none" if agg.interval is None else window_label(agg.interval)


def reach(agg: Aggregation) -> timedelta:
    """How far back from ``t`` an event may still be in the window (calendar: the partial day and a DST hour)."""
    if agg.calendar:
        return agg.span + timedelta(days=1, hours=1)
    return agg.span


def check_filters(con: Any, view: str, relation: str, aggregations: Sequence[Aggregation]) -> None:
    """Each ``where`` parses and is a condition over the view's columns (DuckDB binds it, reads nothing)."""
    for agg in aggregations:
        if agg.where is None:
            continue
        try:
            con.sql(f"SELECT CAST(({agg.where}) AS BOOLEAN) FROM {relation} LIMIT 0").fetchall()
        except Exception as exc:
            raise ValidationError(
                f"FeatureView '{view}', aggregation '{agg.name}': the filter {agg.where!r} does not work: "
                f"{str(exc).splitlines()[0]}",
                hint="Write a DuckDB SQL condition on the view's schema columns, e.g. where=\"status = 'ok'\".",
            ) from None
