"""``keel.search_runs``: find runs with a filter and read them as one pandas DataFrame.

One query selects the matching runs (the filter compiled to SQL, see
:mod:`keel.tracking._filter`), ordered and limited in the database; then one
UNION ALL query fetches the long rows (params, metrics, tags) of just those
runs, restricted to the keys asked for, and NumPy scatters them into columns.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from keel.config import settings
from keel.errors import NotFoundError, ValidationError, did_you_mean
from keel.store.metadata import get_metadata_store
from keel.store.schema import experiments, runs
from keel.tracking import _filter
from keel.tracking._filter import KINDS, PREFIX_OF, TABLES, Compiler, Ref, format_ref

if TYPE_CHECKING:
    import pandas as pd

SMALL_SCOPE = 2000  # run_keys: up to this many runs, read their rows; above, check each key of the index
ATTRIBUTE_COLUMNS = ["run_id", "experiment_id", "run_name", "status", "start_time", "end_time", "user", "parent_id"]


def search_runs(
    experiment: str | int | Sequence[str | int] | None = None,
    filter: str | None = None,
    order_by: Sequence[str] | None = None,
    max_results: int = 1000,
    columns: Sequence[str] | None = None,
    page_token: str | None = None,
) -> pd.DataFrame:
    """Runs matching ``filter``, one row each, as a DataFrame.

    ``experiment``: a name or id, or a list of them (default: the current experiment).
    ``filter``: e.g. ``"metrics.auc > 0.8 and (params.model = 'lgbm' or params.model = 'xgb')
    and tags.team = 'risk'"``; ``and``, ``or``, ``not``, parentheses, ``= != < <= > >=``,
    ``in (...)``, ``not in (...)``, ``like``/``ilike`` (``%`` and ``_``), ``is [not] null``,
    over ``metrics.<key>``, ``params.<key>``, ``tags.<key>`` and the attributes ``run_id``,
    ``run_name``, ``status``, ``start_time``, ``end_time``, ``user``, ``parent_id``,
    ``experiment_id``. Keys with spaces go in backticks: ``metrics.`val loss```.
    ``order_by``: e.g. ``["metrics.auc DESC", "start_time"]``; missing values sort last.
    Default: newest first.
    ``columns``: which params/metrics/tags to load, e.g. ``["metrics.auc", "params.*"]``;
    default all of them.

    The frame holds run_id, experiment_id, run_name, status, start_time, end_time (UTC),
    user, parent_id, then ``params.<key>`` (text), ``metrics.<key>`` (float, NaN kept) and
    ``tags.<key>`` columns.

    Pages: at most ``max_results`` runs come back; when more match,
    ``frame.attrs["next_page_token"]`` holds an opaque token (else None) and
    ``search_runs(..., page_token=token)`` returns the next page of the same
    query. The token is a position in the sort order (the last run's sort key),
    not an offset, so runs inserted meanwhile neither repeat nor shift a page.

    Example::

        page = keel.search_runs(filter="metrics.auc > 0.8", max_results=100)
        while page.attrs["next_page_token"]:
            page = keel.search_runs(filter="metrics.auc > 0.8", max_results=100, page_token=page.attrs["next_page_token"])
    """
    if isinstance(max_results, bool) or not isinstance(max_results, int) or max_results < 1:
        raise ValidationError(f"max_results must be a positive integer, got {max_results!r}.", hint="Pass e.g. max_results=100.")
    node = _filter.parse_filter(filter) if filter is not None else None
    orders = [_filter.parse_order_by(item) for item in _as_list(order_by, "order_by")]
    wanted = None if columns is None else [_filter.parse_column(item) for item in _as_list(columns, "columns")]

    from keel.store.remote import client

    if (remote := client()) is not None:
        from keel.tracking import remote as via

        return via.search_runs(remote, {
            "experiment": experiment if experiment is None or isinstance(experiment, str | int) else list(experiment),
            "filter": filter, "order_by": None if order_by is None else _as_list(order_by, "order_by"),
            "max_results": max_results, "columns": None if columns is None else _as_list(columns, "columns"), "page_token": page_token,
        })
    frame, _total = _search_local(experiment, filter, node, orders, wanted, max_results, page_token)
    return frame


def search_runs_page(
    experiment: str | int | Sequence[str | int] | None = None,
    filter: str | None = None,
    order_by: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[pd.DataFrame, int]:
    """One numbered page of :func:`search_runs` and how many runs match in all: (frame, total).

    For a table with page numbers (the web UI): ``offset`` runs are skipped in the sort
    order and at most ``limit`` come back; the same filter, ``order_by`` and ``columns``
    as :func:`search_runs`, on this process's store. Example::

        frame, total = search_runs_page("churn", "metrics.auc > 0.8", ["metrics.auc DESC"], offset=50, limit=50)
    """
    for name, value, least in (("offset", offset, 0), ("limit", limit, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValidationError(f"{name} must be an integer >= {least}, got {value!r}.")
    node = _filter.parse_filter(filter) if filter is not None else None
    orders = [_filter.parse_order_by(item) for item in _as_list(order_by, "order_by")]
    wanted = None if columns is None else [_filter.parse_column(item) for item in _as_list(columns, "columns")]
    frame, total = _search_local(experiment, filter, node, orders, wanted, limit, None, offset=offset, count=True)
    return frame, int(total or 0)


def run_keys(experiment: str | int | Sequence[str | int] | None = None) -> dict[str, list[str]]:
    """The param, metric and tag keys the runs of ``experiment`` (default: the current one) have:
    ``{"param": [...], "metric": [...], "tag": [...]}``, each sorted (e.g. to offer columns)."""
    store = get_metadata_store()
    from keel.tracking import _writer

    _writer.flush_all()
    out: dict[str, list[str]] = {kind: [] for kind in KINDS}
    with store.read() as conn:
        exp_ids, names = _experiment_ids(conn, experiment)
        if not exp_ids:
            return out
        whole = set(exp_ids) == set(names)
        n_runs = 0 if whole else int(conn.execute(sa.select(sa.func.count()).select_from(runs).where(_in_experiments(runs, exp_ids))).scalar() or 0)
        for kind in KINDS:
            t = TABLES[kind]
            if not whole and n_runs <= SMALL_SCOPE:  # a few runs: their rows, found by run id
                q = sa.select(t.c.key).distinct().select_from(t.join(runs, runs.c.id == t.c.run_id)).where(_in_experiments(runs, exp_ids))
                out[kind] = sorted(conn.execute(q).scalars())
                continue
            # many runs: every key from the (key, ...) index, then, unless the scope is the whole store,
            # which of them a run of the experiments has (EXISTS stops at the first)
            keys = sorted(conn.execute(sa.select(t.c.key).group_by(t.c.key)).scalars())
            if not whole:
                found = []
                for i in range(0, len(keys), 200):
                    part = keys[i:i + 200]
                    checks = []
                    for key in part:
                        a, r = t.alias(), runs.alias()
                        checks.append(sa.exists(sa.select(sa.literal(1)).select_from(a.join(r, r.c.id == a.c.run_id))
                                                .where(a.c.key == key, _in_experiments(r, exp_ids))))
                    row = conn.execute(sa.select(*[c.label(f"c{j}") for j, c in enumerate(checks)])).one()
                    found += [k for k, ok in zip(part, row, strict=True) if ok]
                keys = found
            out[kind] = keys
    return out


def _search_local(experiment: Any, filter: str | None, node: Any, orders: list[tuple[Ref, bool]], wanted: list[Ref] | None,
                  max_results: int, page_token: str | None, *, offset: int = 0, count: bool = False) -> tuple[pd.DataFrame, int | None]:
    """The search on this process's store: (frame, the number of runs matching when ``count``)."""
    from keel.tracking.runs import effective_status_sql

    store = get_metadata_store()
    from keel.tracking import _writer

    _writer.flush_all()  # this process's buffered values are part of the answer
    compiler = Compiler(store.dialect, effective_status_sql())
    where = compiler.where(node) if node is not None else None
    keys = [pair for ref, desc in orders for pair in compiler.order_columns(ref, desc)]
    if not orders:
        keys.append((runs.c.start_ms, True))
    keys.append((runs.c.id, False))  # a stable, total order for equal keys
    order_clauses = [(col.desc() if desc else col.asc()).nulls_last() for col, desc in keys]

    with store.read() as conn:
        exp_ids, exp_names = _experiment_ids(conn, experiment)
        query_id = _query_id(exp_ids, filter, [f"{r.label} {'DESC' if d else 'ASC'}" for r, d in orders])
        after = None if page_token is None else _page_after(keys, _decode_token(page_token, query_id, len(keys)))
        if not exp_ids:
            return _frame([], {}, wanted), 0
        column_refs = [r for r in wanted or [] if r.kind in KINDS and r.key != "*"]
        if not _check_keys(conn, exp_ids, exp_names, [*compiler.refs, *column_refs]):
            return _frame([], {}, wanted), 0
        stmt = (
            sa.select(
                runs.c.id, runs.c.experiment_id, runs.c.name, compiler.status.label("status"),
                runs.c.start_ms, runs.c.end_ms, runs.c.user, runs.c.parent_id,
                *[col.label(f"sort_{i}") for i, (col, _desc) in enumerate(keys)],
            )
            .select_from(compiler.from_clause())
            .where(_in_experiments(runs, exp_ids))
            .order_by(*order_clauses)
            .limit(max_results + 1)
        )
        if where is not None:
            stmt = stmt.where(where)
        if after is not None:
            stmt = stmt.where(after)
        if offset:
            stmt = stmt.offset(offset)
        total = None
        if count:
            counted = sa.select(sa.func.count()).select_from(runs).where(_in_experiments(runs, exp_ids))
            if where is not None:  # the filter's joins only when it has some (one row per run either way)
                counted = sa.select(sa.func.count()).select_from(compiler.from_clause()).where(_in_experiments(runs, exp_ids), where)
            total = int(conn.execute(counted).scalar() or 0)
        head = _fetch(conn, stmt)
        next_token = None
        if len(head) > max_results:
            head = head[:max_results]
            next_token = _encode_token(query_id, list(head[-1][8:]))
        long: dict[str, tuple[Any, ...]] = {}
        if head:
            long = _long_rows(conn, store.dialect, [row[0] for row in head], _kinds_to_load(wanted))
    frame = _frame(head, long, wanted)
    frame.attrs["next_page_token"] = next_token
    return frame, total


# -- pages ------------------------------------------------------------------------

def _query_id(exp_ids: list[int], filter: str | None, orders: list[str]) -> str:
    import hashlib

    text = json.dumps([sorted(exp_ids), filter, orders])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _encode_token(query_id: str, values: list[Any]) -> str:
    import base64

    body = json.dumps({"q": query_id, "after": values}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(body).decode().rstrip("=")


def _decode_token(token: Any, query_id: str, n_keys: int) -> list[Any]:
    import base64
    import binascii

    bad = ValidationError(
        f"page_token {str(token)[:40]!r} is not a token of this query.",
        hint="Pass the next_page_token of the previous page of the same search (same experiment, filter and order_by).",
    )
    if not isinstance(token, str) or not token:
        raise bad
    try:
        doc = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    if not isinstance(doc, dict) or doc.get("q") != query_id or not isinstance(doc.get("after"), list) or len(doc["after"]) != n_keys:
        raise bad
    return list(doc["after"])


def _page_after(keys: list[tuple[Any, bool]], values: list[Any]) -> sa.ColumnElement[bool]:
    """Rows after ``values`` in the order of ``keys`` (each ascending or descending, missing values last)."""
    terms = []
    equal: list[sa.ColumnElement[bool]] = []
    for (col, desc), v in zip(keys, values, strict=True):
        if v is not None:
            beyond = sa.or_(col < v if desc else col > v, col.is_(None))
            terms.append(sa.and_(*equal, beyond) if equal else beyond)
            equal.append(col == v)
        else:
            equal.append(col.is_(None))  # nothing sorts after a missing value on this key
    return sa.or_(*terms) if terms else sa.false()


def _as_list(value: Any, name: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return list(value)
    raise ValidationError(f"{name} must be a list of strings, got {type(value).__name__}.")


def _in_experiments(table: Any, exp_ids: list[int]) -> sa.ColumnElement[bool]:
    return table.c.experiment_id == exp_ids[0] if len(exp_ids) == 1 else table.c.experiment_id.in_(exp_ids)


def _fetch(conn: sa.Connection, stmt: Any) -> list[Any]:
    """Run a Core statement (compiled once, then from SQLAlchemy's cache) and return plain tuples.

    Building SQLAlchemy Row objects costs about as much as the query itself on
    the thousands of long rows a search returns, so the rows come straight from
    the driver's cursor.
    """
    result = conn.execute(stmt)
    try:
        return list(result.cursor.fetchall())
    finally:
        result.close()


def _ids_param(ids: list[str], dialect: str) -> Any:
    """One bound parameter holding every id (no 999/32766-variable limits, one cached plan)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return sa.bindparam("run_ids", ids, type_=ARRAY(sa.String))
    if dialect == "sqlite":
        return sa.bindparam("run_ids", json.dumps(ids))
    return sa.bindparam("run_ids", ids, expanding=True)


def _in_ids(column: Any, param: Any, dialect: str) -> sa.ColumnElement[bool]:
    if dialect == "postgresql":
        return column == sa.any_(param)
    if dialect == "sqlite":
        return column.in_(sa.select(sa.func.json_each(param).table_valued("value").c.value))
    return column.in_(param)


def _long_rows(
    conn: sa.Connection, dialect: str, ids: list[str], plan: dict[str, list[str] | None]
) -> dict[str, tuple[Any, ...]]:
    """(run_ids, keys, values) per kind for the runs ``ids``, in one UNION ALL round trip."""
    import numpy as np

    param = _ids_param(ids, dialect)
    parts = []
    for code, kind in enumerate(KINDS):
        keys = plan[kind]
        if keys == []:
            continue
        t = TABLES[kind]
        text = sa.cast(sa.null(), sa.Text) if kind == "metric" else t.c.value
        num = t.c.value if kind == "metric" else sa.cast(sa.null(), sa.Float)
        q = sa.select(
            sa.literal(code).label("kind"), t.c.run_id, t.c.key, text.label("text"), num.label("num")
        ).where(_in_ids(t.c.run_id, param, dialect))
        if keys is not None:
            q = q.where(t.c.key.in_(keys))
        parts.append(q)
    if not parts:
        return {}
    rows = _fetch(conn, sa.union_all(*parts) if len(parts) > 1 else parts[0])
    if not rows:
        return {}
    kind_col, run_col, key_col, text_col, num_col = (np.array(c, dtype=object) for c in zip(*rows, strict=True))
    codes = kind_col.astype("int64")
    out: dict[str, tuple[Any, ...]] = {}
    for code, kind in enumerate(KINDS):
        mask = codes == code
        if mask.any():
            out[kind] = (run_col[mask], key_col[mask], (num_col if kind == "metric" else text_col)[mask])
    return out


def _experiment_ids(conn: sa.Connection, experiment: Any) -> tuple[list[int], dict[int, str]]:
    """Resolve names/ids to ids; the implicit default experiment may not exist yet (no runs)."""
    rows = conn.execute(sa.select(experiments.c.id, experiments.c.name)).all()
    names = {int(i): str(n) for i, n in rows}
    by_name = {n: i for i, n in names.items()}
    if experiment is None:
        from keel.tracking import runs as runs_module

        default = runs_module._experiment_override or str(settings().experiment)
        return ([by_name[default]] if default in by_name else []), names
    refs = list(experiment) if isinstance(experiment, list | tuple | set) else [experiment]
    if not refs:
        raise ValidationError("experiment is an empty list.", hint="Pass a name, an id or a list of them, or None for the current experiment.")
    out: list[int] = []
    for ref in refs:
        if isinstance(ref, bool) or not isinstance(ref, int | str):
            raise ValidationError(f"experiment must be a name or an id, got {ref!r}.")
        if isinstance(ref, str) and ref in by_name:
            found = by_name[ref]
        elif isinstance(ref, int) or ref.isdigit():
            found = int(ref)
            if found not in names:
                raise NotFoundError(f"No experiment with id {ref}.", hint="List them with `keel experiments ls`.")
        else:
            raise NotFoundError(f"No experiment named {ref!r}." + did_you_mean(ref, by_name), hint="List them with `keel experiments ls`.")
        if found not in out:
            out.append(found)
    return out, names


def _check_keys(conn: sa.Connection, exp_ids: list[int], exp_names: dict[int, str], refs: list[Ref]) -> bool:
    """Raise for a key no run of the experiments has; False when the experiments have no runs."""
    unique: dict[tuple[str, str], Ref] = {}
    for ref in refs:
        unique.setdefault((ref.kind, ref.key), ref)
    if not unique:
        return True
    checks: list[Any] = [sa.exists(sa.select(sa.literal(1)).select_from(runs).where(_in_experiments(runs, exp_ids)))]
    for kind, key in unique:
        t, r = TABLES[kind].alias(), runs.alias()
        checks.append(
            sa.exists(sa.select(sa.literal(1)).select_from(t.join(r, r.c.id == t.c.run_id)).where(t.c.key == key, _in_experiments(r, exp_ids)))
        )
    found = conn.execute(sa.select(*[c.label(f"c{i}") for i, c in enumerate(checks)])).one()
    if not found[0]:
        return False
    missing = [ref for ref, ok in zip(unique.values(), found[1:], strict=True) if not ok]
    if missing:
        raise _unknown_key(conn, exp_ids, exp_names, missing[0])
    return True


def _unknown_key(conn: sa.Connection, exp_ids: list[int], exp_names: dict[int, str], ref: Ref) -> ValidationError:
    known: dict[str, list[str]] = {}
    for kind in KINDS:
        t = TABLES[kind]
        q = sa.select(t.c.key).distinct().select_from(t.join(runs, runs.c.id == t.c.run_id)).where(_in_experiments(runs, exp_ids))
        known[kind] = sorted(conn.execute(q).scalars())
    labels = [format_ref(ref.kind, k) for k in known[ref.kind]]
    other = [kind for kind in KINDS if kind != ref.kind and ref.key in known[kind]]
    if other:  # the right key under the wrong prefix
        suggestion = f" Did you mean '{format_ref(other[0], ref.key)}'?"
    else:
        suggestion = did_you_mean(ref.label, labels)
    where = ", ".join(repr(exp_names.get(i, str(i))) for i in exp_ids)
    listing = ", ".join(labels[:10]) + (", ..." if len(labels) > 10 else "") if labels else "none"
    return _filter.filter_error(
        ref.source,
        ref.pos,
        f"no run in experiment {where} has it.{suggestion} Known {PREFIX_OF[ref.kind]}: {listing}.",
        what=ref.what,
        headline=f"Unknown {ref.kind} '{ref.key}'",
        suggestion=suggestion[len(" Did you mean '") : -2] if suggestion else None,
    )


def _kinds_to_load(wanted: list[Ref] | None) -> dict[str, list[str] | None]:
    """Per kind, the keys to fetch: None for all of them, [] for none."""
    if wanted is None:
        return dict.fromkeys(KINDS)
    out: dict[str, list[str] | None] = {kind: [] for kind in KINDS}
    for ref in wanted:
        if ref.kind not in KINDS:
            continue  # attributes are always in the frame
        keys = out[ref.kind]
        if ref.key == "*":
            out[ref.kind] = None
        elif keys is not None and ref.key not in keys:
            keys.append(ref.key)
    return out


def _frame(head: Sequence[Any], long: dict[str, tuple[Any, ...]], wanted: list[Ref] | None) -> pd.DataFrame:
    """Assemble the frame: attribute columns from ``head``, one column per key from the long rows.

    The long rows (run_id, key, value) are scattered into a runs x keys array
    with NumPy (positions from Index.get_indexer), not pivoted row by row.
    """
    import numpy as np
    import pandas as pd

    cols = list(zip(*head, strict=True)) if head else [()] * 8
    run_ids = pd.Index(cols[0], dtype=object)
    n = len(run_ids)
    data: dict[str, Any] = {
        "run_id": np.array(cols[0], dtype=object),
        "experiment_id": np.array(cols[1], dtype="int64"),
        "run_name": np.array(cols[2], dtype=object),
        "status": np.array(cols[3], dtype=object),
        "start_time": pd.to_datetime(np.array(cols[4], dtype="float64"), unit="ms", utc=True),
        "end_time": pd.to_datetime(np.array(cols[5], dtype="float64"), unit="ms", utc=True),
        "user": np.array(cols[6], dtype=object),
        "parent_id": np.array(cols[7], dtype=object),
    }
    for kind, keys in _kinds_to_load(wanted).items():
        row_runs, row_keys, row_values = long.get(kind, ((), (), ()))
        names = sorted(set(row_keys)) if keys is None else sorted(keys)
        if kind == "metric":
            grid = np.full((n, len(names)), np.nan)
            values: Any = np.array(row_values, dtype="float64")  # None (NaN in the store) -> nan
        else:
            grid = np.full((n, len(names)), None, dtype=object)
            values = np.array(row_values, dtype=object)
        if len(row_runs):
            grid[run_ids.get_indexer(row_runs), pd.Index(names).get_indexer(row_keys)] = values
        prefix = PREFIX_OF[kind]
        for j, key in enumerate(names):
            data[f"{prefix}.{key}"] = grid[:, j]
    return pd.DataFrame(data)
