"""Fused evaluation: every check of a contract in one aggregate scan.

Each check becomes one or a few aggregate expressions (``count_if(<fails>)``,
``min``, ``avg``, bin counts against the reference's edges...). All of them go
into a single ``SELECT ... FROM t``, so DuckDB reads each column once, in
parallel, whatever the number of checks, and every failure is found in the same
pass. A few checks cannot be a plain aggregate and run as their own query:
uniqueness and duplicate keys (one hash group-by each), monotonic order (one
column fetched in order), referential checks (an anti-join), KS (a bounded
sample) and Python functions. Failed checks cost one more small query each for
a capped sample of failing values (``LIMIT``).

Two cheap steps come first. A pre-scan takes row and null counts, and min and
max of every column with a range check (DuckDB answers it from Parquet
statistics without reading the data); a range check whose observed range lies
inside its bounds passes without a per-row predicate. And the reference
profile, or a probe of the first rows, tells which string columns repeat few
distinct values: their regex and length checks run once per distinct value
over a GROUP BY of the column, weighted by the counts, instead of once per
row, and an allowed-values check counts only the rows a filter keeps (DuckDB
evaluates the list on Parquet dictionaries). A range check the statistics show
failing is counted by a filtered query, which reads only the row groups whose
statistics allow failing values. Histograms run apart from the fused scan (beside
plain aggregates they slow it down), and the columns that uniqueness, order
and KS checks need are fetched on a second connection while it runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from keel.contracts.columns import NumericColumns
from keel.contracts.fused import FusedQuery
from keel.contracts.model import Check, Contract
from keel.contracts.profile import (
    CATEGORICAL,
    NUMERIC,
    Profile,
    bin_count_exprs,
    bin_counts,
    ks_2samp,
    psi,
    valid_expr,
)
from keel.contracts.report import SAMPLE_SIZE, CheckResult
from keel.contracts.rules import TYPE_FAMILIES
from keel.contracts.source import Source, fetch_arrow, isnan_sql, lit, q

_EPS = 1e-12
RANGE_KINDS = ("min", "max", "between", "positive")
GROUPED_KINDS = ("allowed_values", "regex", "length")
PROBE_ROWS = 100_000  # rows read to judge a string column's number of distinct values
GROUPED_MAX_SHARE = 0.5  # distinct values per row in the probe at or below which checks run per value
_COUNT = "__keel_count"


def evaluate(
    contract: Contract,
    src: Source,
    references: dict[str, tuple[str, Profile | None]] | None = None,
    *,
    now: datetime | None = None,
    resolve_source: Callable[[str], Any] | None = None,
) -> tuple[int, list[CheckResult]]:
    """Run every check of ``contract`` on ``src``; returns (row count, results).

    ``references`` maps a reference spec (``last_accepted``...) to a
    (description, profile) pair; relative checks without a profile are skipped.
    """
    return _Evaluation(contract, src, references or {}, now or datetime.now(UTC), resolve_source).run()


class _Evaluation:
    def __init__(
        self,
        contract: Contract,
        src: Source,
        refs: dict[str, tuple[str, Profile | None]],
        now: datetime,
        resolve_source: Callable[[str], Any] | None,
    ) -> None:
        self.contract = contract
        self.src = src
        self.refs = refs
        self.now = now
        self.resolve_source = resolve_source
        self.query = FusedQuery()
        self.n = 0
        self.nonnull: dict[str, int] = {}
        self.results: dict[int, CheckResult] = {}
        self.pending: list[tuple[int, Callable[[tuple[Any, ...], int], CheckResult]]] = []
        self.later: list[tuple[int, Callable[[int], CheckResult]]] = []
        self.fam = src.families
        self.columns = NumericColumns(src)  # values for uniqueness, order and KS checks
        self.bounds: dict[str, tuple[Any, Any]] = {}
        self.grouped: dict[str, int] = {}  # string column -> distinct values seen in the probe
        self.tabled: set[str] = set()  # grouped columns that get a value table
        self._groups: dict[str, str] = {}

    # -- helpers ----------------------------------------------------------
    def result(self, chk: Check, status: str, observed: Any = None, **kw: Any) -> CheckResult:
        return CheckResult(chk.id, chk.kind, chk.column, chk.severity, status, chk.describe(), observed, **kw)

    def row_result(self, chk: Check, failing: int, denom: int, observed: Any, sample: Callable[[], list[Any]]) -> CheckResult:
        """The result of a check that counts failing rows out of ``denom``; ``sample`` is called only on failure."""
        frac = failing / denom if denom else 0.0
        ok = _passes(chk, frac)
        res = self.result(chk, "pass" if ok else "fail", observed, failing_count=failing, failing_fraction=frac)
        if failing and not ok:
            res.sample = sample()
        return res

    def nulls(self, col: str) -> int:
        """Index in the fused row of the column's missing values (nulls from the pre-scan, plus NaN)."""
        base = self.n - self.nonnull[col]
        if self.fam[col] == "float":
            return self.query.plus(base, f"count_if({isnan_sql(q(col))})")
        return self.query.const(base)

    def v(self, col: str) -> str:
        return valid_expr(col, self.fam[col])

    def rowwise(
        self,
        chk: Check,
        fail_pred: str,
        denominator: str,
        observed: Callable[[tuple[Any, ...]], Any] | None = None,
        *,
        failing_index: int | None = None,
    ) -> None:
        """A check that counts failing rows; ``denominator`` is 'rows' or 'nonnull'."""
        fi = self.query.add(f"count_if({fail_pred})") if failing_index is None else failing_index
        ni = self.nulls(chk.column) if denominator == "nonnull" and chk.column else None
        # String checks carry their sample in the fused query: DuckDB evaluates the
        # shared predicate once, so it costs nothing, where a later LIMIT query
        # would re-run an expensive predicate (a regex) over the whole column.
        si = None
        if chk.column and chk.kind != "not_null" and self.fam.get(chk.column) == "string":
            si = self.query.add(f"min({q(chk.column)}, {SAMPLE_SIZE}) FILTER (WHERE {fail_pred})")

        def finish(row: tuple[Any, ...], n: int) -> CheckResult:
            def sample() -> list[Any]:
                if chk.kind == "not_null":
                    return []
                return list(row[si] or []) if si is not None else self.sample_where(fail_pred, chk.column)

            denom = n - int(row[ni]) if ni is not None else n
            return self.row_result(chk, int(row[fi]), denom, observed(row) if observed else None, sample)

        self.pending.append((self._slot, finish))

    def sample_where(self, pred: str, column: str | None) -> list[Any]:
        if column is None:
            sql = f"SELECT 'row ' || CAST(rowid_ AS VARCHAR) FROM (SELECT row_number() OVER () - 1 AS rowid_, * FROM t) WHERE {pred} LIMIT {SAMPLE_SIZE}"
        elif self.fam.get(column) in NUMERIC:
            sql = f"SELECT CAST({q(column)} AS DOUBLE) FROM t WHERE {pred} LIMIT {SAMPLE_SIZE}"
        else:
            sql = f"SELECT CAST({q(column)} AS VARCHAR) FROM t WHERE {pred} LIMIT {SAMPLE_SIZE}"
        try:
            return [r[0] for r in self.src.con.execute(sql).fetchall()]
        except Exception:
            return []

    # -- main -------------------------------------------------------------
    def run(self) -> tuple[int, list[CheckResult]]:
        out_first: list[CheckResult] = self.schema_results()
        checks = self.contract.checks
        self.prescan(checks)
        for slot, chk in enumerate(checks):
            self._slot = slot
            missing = [c for c in chk.columns() if c not in self.src.types]
            if missing:
                optional = all(c in self.contract.columns and not self.contract.columns[c].required for c in missing)
                status = "skip" if optional else "error"
                self.results[slot] = self.result(chk, status, message=f"column {', '.join(map(repr, missing))} is missing from the data")
                continue
            try:
                self.plan(chk)
            except _Invalid as exc:
                self.results[slot] = self.result(chk, "error", message=str(exc))
        prefetch = self.columns.start_prefetch()
        row = self.query.run(self.src.con)
        if prefetch is not None:
            prefetch.join()
        n = self.n
        for slot, finish in self.pending:
            try:
                self.results[slot] = finish(row, n)
            except _Invalid as exc:
                self.results[slot] = self.result(checks[slot], "error", message=str(exc))
        for slot, run in self.later:
            try:
                self.results[slot] = run(n)
            except _Invalid as exc:
                self.results[slot] = self.result(checks[slot], "error", message=str(exc))
        for name in self._groups.values():
            self.src.con.execute(f"DROP TABLE {name}")
        return n, out_first + [self.results[i] for i in range(len(checks))]

    def prescan(self, checks: list[Check]) -> None:
        """Row and null counts, min/max of range-checked columns, which string columns to check per value.

        Counts, min and max come from column statistics where the source has
        them (Parquet metadata), so this reads no data there.
        """
        present = [(c.kind, c.column) for c in checks if c.column is not None and c.column in self.src.types]
        counted = sorted({col for c in checks for col in c.columns() if col in self.src.types})
        ranged = sorted({col for kind, col in present if kind in RANGE_KINDS and self.fam[col] in NUMERIC} | {
            col for kind, col in present if kind == "unique" and self.fam[col] == "int"})
        exprs = ["count(*)", *(f"count({q(c)})" for c in counted), *(f"min({q(c)}), max({q(c)})" for c in ranged)]
        with self.src.statistics():
            row = self.src.con.execute(f"SELECT {', '.join(exprs)} FROM t").fetchall()[0]
        self.n = int(row[0])
        self.nonnull = {c: int(row[1 + i]) for i, c in enumerate(counted)}
        at = 1 + len(counted)
        self.bounds = {c: (row[at + 2 * i], row[at + 2 * i + 1]) for i, c in enumerate(ranged)}
        self.columns.bounds = self.bounds
        strings = sorted({col for kind, col in present if kind in GROUPED_KINDS and self.src.types[col] == "VARCHAR"})
        # A reference profile of the column already tells how many distinct values it holds.
        for col in list(strings):
            known = [cp for _, prof in self.refs.values() if prof is not None and (cp := prof.columns.get(col)) is not None and cp.distinct is not None and cp.count]
            if known:
                strings.remove(col)
                distinct = int(known[0].distinct or 0)
                if distinct <= GROUPED_MAX_SHARE * known[0].count:
                    self.grouped[col] = distinct
        if strings:
            cols = ", ".join(q(c) for c in strings)
            probe = ", ".join(f"count(DISTINCT {q(c)}), count({q(c)})" for c in strings)
            row = self.src.con.execute(f"SELECT {probe} FROM (SELECT {cols} FROM t LIMIT {PROBE_ROWS})").fetchall()[0]
            self.grouped.update({c: int(row[2 * i]) for i, c in enumerate(strings) if row[2 * i] <= GROUPED_MAX_SHARE * max(row[2 * i + 1], 1)})
        # Few-valued columns whose checks need every value and its count get a value table
        # (see value_table); an allowed-values check alone filters instead (see filtered).
        self.tabled = {
            col for kind, col in present
            if col in self.grouped and (kind in ("regex", "length", "category_share", "no_new_categories") or (kind == "psi" and self.fam[col] in CATEGORICAL))
        }

    def inside(self, col: str, lo: Any, hi: Any, strict: bool) -> bool | None:
        """Whether the pre-scanned range of ``col`` lies inside [lo, hi]; None when unknown."""
        mn, mx = self.bounds.get(col, (None, None))
        if mn is None or mx is None or mn != mn or mx != mx:  # no values, or NaN (unknown)
            return None
        ok_lo = lo is None or (mn > lo if strict else mn >= lo)
        ok_hi = hi is None or (mx < hi if strict else mx <= hi)
        return bool(ok_lo and ok_hi)

    def value_table(self, col: str) -> str:
        """A temp table of the column's distinct non-null values and their counts (one GROUP BY, made once)."""
        name = self._groups.get(col)
        if name is None:
            name = self._groups[col] = f"keel_values_{len(self._groups)}"
            self.src.con.execute(f"CREATE TEMP TABLE {name} AS SELECT {q(col)}, count(*) AS {_COUNT} FROM t WHERE {q(col)} IS NOT NULL GROUP BY ALL")
        return name

    def per_value(self, chk: Check, fail_pred: str) -> None:
        """A string check evaluated once per distinct value of the column, weighted by its count.

        The sample lists distinct failing values, the most frequent first.
        """
        col = q(chk.column or "")
        self.counted(chk, lambda: (
            f"SELECT coalesce(sum({_COUNT}) FILTER (WHERE {fail_pred}), 0), "
            f"list({col} ORDER BY {_COUNT} DESC, {col}) FILTER (WHERE {fail_pred})[1:{SAMPLE_SIZE}] FROM {self.value_table(chk.column or '')}"
        ))

    def counted(self, chk: Check, sql: Callable[[], str], observed: Callable[[tuple[Any, ...]], Any] | None = None) -> None:
        """A row-level check whose (failing rows, sample) comes from a query of its own, run after the scan."""
        ni = self.nulls(chk.column or "")

        def finish(row: tuple[Any, ...], n: int) -> CheckResult:
            failing, sample = self.src.con.execute(sql()).fetchall()[0]
            return self.row_result(chk, int(failing), n - int(row[ni]), observed(row) if observed else None, lambda: list(sample or []))

        self.pending.append((self._slot, finish))

    def schema_results(self) -> list[CheckResult]:
        cols = self.contract.columns
        if not cols:
            return []
        out = []
        missing = [c for c, spec in cols.items() if spec.required and c not in self.src.types]
        out.append(
            CheckResult(
                "schema.required_columns", "schema", None, "error", "fail" if missing else "pass",
                f"columns {', '.join(c for c, s in cols.items() if s.required)} present",
                observed=f"missing: {', '.join(missing)}" if missing else "all present",
                failing_count=len(missing) or None,
                message=_did_you_mean_all(missing, [c for c in self.src.types if c not in cols]),
            )
        )
        if self.contract.unexpected_columns != "ignore":
            extra = [c for c in self.src.types if c not in cols]
            out.append(
                CheckResult(
                    "schema.unexpected_columns", "schema", None, self.contract.unexpected_columns,
                    "fail" if extra else "pass", "no columns beyond those declared",
                    observed=f"unexpected: {', '.join(extra)}" if extra else "none",
                    failing_count=len(extra) or None,
                    sample=extra[:SAMPLE_SIZE],
                )
            )
        return out

    def plan(self, chk: Check) -> None:
        k, a = chk.kind, chk.args
        col: str = chk.column or ""
        fam = self.fam.get(col, "") if col else ""
        v = self.v(col) if col else ""
        if k == "type":
            want = TYPE_FAMILIES[a["type"]]
            ok = not want or fam in want
            self.results[self._slot] = self.result(chk, "pass" if ok else "fail", self.src.types[col])
        elif k == "not_null":
            self.rowwise(chk, _null_pred(col, fam), "rows", failing_index=self.nulls(col))
        elif k == "max_null_fraction":
            ni = self.nulls(col)

            def finish(row: tuple[Any, ...], n: int) -> CheckResult:
                frac = int(row[ni]) / n if n else 0.0
                return self.result(chk, "pass" if frac <= a["max"] + _EPS else "fail", frac, failing_count=int(row[ni]), failing_fraction=frac)

            self.pending.append((self._slot, finish))
        elif k in ("min", "max", "between", "positive"):
            self.numeric_or_time(chk, fam)
            lo = a.get("min") if k == "between" else a.get("value") if k == "min" else 0 if k == "positive" else None
            hi = a.get("max") if k == "between" else a.get("value") if k == "max" else None
            strict = a.get("strict", False) or k == "positive"
            # Compare the raw column (fast, statistics-friendly); NULL never matches and
            # NaN, which DuckDB sorts above +inf, is excluded only on rows that match.
            x = q(col)
            if fam == "int":  # compare ints with ints: no per-row cast, and Parquet statistics can prune
                lo, hi = _int_bound(lo), _int_bound(hi)
            preds = []
            if lo is not None:
                preds.append(f"{x} {'<=' if strict else '<'} {lit(lo)}")
            if hi is not None:
                preds.append(f"{x} {'>=' if strict else '>'} {lit(hi)}")
            pred = f"({' OR '.join(preds)})"
            if fam == "float":
                pred += f" AND NOT {isnan_sql(x)}"
            inside = self.inside(col, lo, hi, strict)
            if inside:  # the pre-scan proves no row fails: no per-row predicate
                bmin, bmax = self.bounds[col]
                observed_range = bmin if k in ("min", "positive") else bmax if k == "max" else f"[{_fmt(bmin)}, {_fmt(bmax)}]"
                self.results[self._slot] = self.result(chk, "pass", observed_range, failing_count=0, failing_fraction=0.0)
                return
            bmin, bmax = self.bounds[col]

            def observed(row: tuple[Any, ...]) -> Any:
                if k in ("min", "positive"):
                    return bmin
                if k == "max":
                    return bmax
                return f"[{_fmt(bmin)}, {_fmt(bmax)}]"

            if inside is False and self.src.parquet:
                # Values out of bounds exist: a filtered count reads only the row groups whose
                # statistics allow them (zone maps), where the fused scan would read them all.
                self.counted(chk, lambda: (
                    f"SELECT (SELECT count(*) FROM t WHERE {pred}), "
                    f"(SELECT list(v) FROM (SELECT CAST({x} AS DOUBLE) AS v FROM t WHERE {pred} LIMIT {SAMPLE_SIZE}))"
                ), observed)
                return
            self.rowwise(chk, pred, "nonnull", observed)
        elif k == "allowed_values":
            values = a["values"]
            if fam == "string":
                inlist = ", ".join(lit(str(x)) for x in values)
                pred = f"{v} NOT IN ({inlist})" if self.src.types[col] == "VARCHAR" else f"CAST({v} AS VARCHAR) NOT IN ({inlist})"
            else:
                inlist = ", ".join(lit(x) for x in values)
                pred = f"{v} NOT IN ({inlist})"
            self.string_check(chk, pred)
        elif k == "regex":
            self.need(chk, fam in ("string",), "a string column")
            self.string_check(chk, f"NOT {_regex_sql(v, a['pattern'])}")
        elif k == "length":
            self.need(chk, fam in ("string", "binary"), "a string column")
            preds = []
            if a.get("min") is not None:
                preds.append(f"length({v}) < {int(a['min'])}")
            if a.get("max") is not None:
                preds.append(f"length({v}) > {int(a['max'])}")
            self.string_check(chk, " OR ".join(preds))
        elif k == "unique":
            # A hash group-by of its own: a DISTINCT aggregate inside the fused query
            # would push the whole query off DuckDB's fast ungrouped-aggregate path.
            ni = self.nulls(col)

            numeric_unique = fam in ("int", "float", "timestamp", "timestamp_tz", "date") and self.src.types[col] not in ("HUGEINT", "UHUGEINT", "UBIGINT")
            if numeric_unique:
                self.columns.want(col, fam, unique=True)

            def finish_unique(row: tuple[Any, ...], n: int) -> CheckResult:
                nonnull = n - int(row[ni])
                if numeric_unique:
                    failing, repeated, sample = self.columns.duplicates(col, fam)
                else:
                    failing, repeated, sample = self.duplicates([col], f"{v} IS NOT NULL")
                frac = failing / nonnull if nonnull else 0.0
                ok = _passes(chk, frac)
                return self.result(chk, "pass" if ok else "fail", f"{repeated:,} repeated values", failing_count=failing, failing_fraction=frac, sample=sample if not ok else [])

            self.pending.append((self._slot, finish_unique))
        elif k == "duplicate_keys":
            cols = a["columns"]

            def finish_keys(row: tuple[Any, ...], n: int) -> CheckResult:
                failing, repeated, sample = self.duplicates(cols, "TRUE")
                frac = failing / n if n else 0.0
                return self.result(chk, "fail" if failing else "pass", f"{repeated:,} repeated keys", failing_count=failing, failing_fraction=frac, sample=sample)

            self.pending.append((self._slot, finish_keys))
        elif k == "monotonic":
            self.numeric_or_time(chk, fam)
            self.columns.want(col, fam)
            self.later.append((self._slot, lambda n: self.monotonic(chk, fam)))
        elif k == "freshness":
            self.need(chk, fam in ("timestamp", "timestamp_tz", "date"), "a timestamp or date column")
            if fam == "timestamp":
                raise _Invalid(
                    f"column {col!r} holds timestamps without a time zone, so their age is ambiguous; "
                    "store them as UTC-aware (pandas: df[col].dt.tz_localize('UTC'); SQL: TIMESTAMPTZ)"
                )
            newest_sql = f"CAST(max({q(col)}) AS TIMESTAMP)" if fam == "date" else f"max({q(col)})"
            mi = self.query.add(f"epoch_ms({newest_sql})")

            def finish(row: tuple[Any, ...], n: int) -> CheckResult:
                if row[mi] is None:
                    return self.result(chk, "fail", None, message="the column has no values")
                newest = datetime.fromtimestamp(row[mi] / 1000, tz=UTC)
                age = (self.now - newest).total_seconds()
                ok = age <= a["max_age"]
                return self.result(chk, "pass" if ok else "fail", f"{newest.isoformat()} ({_age_text(age)} old)")

            self.pending.append((self._slot, finish))
        elif k == "row_count":
            def finish(row: tuple[Any, ...], n: int) -> CheckResult:
                ok = (a["min"] is None or n >= a["min"]) and (a["max"] is None or n <= a["max"])
                return self.result(chk, "pass" if ok else "fail", n)

            self.pending.append((self._slot, finish))
        elif k == "referential":
            self.later.append((self._slot, lambda n: self.referential(chk, n)))
        elif k in ("sql", "custom"):
            expr = a["expr"] if k == "sql" else None
            if k == "custom":
                from keel.contracts.custom import get_check

                try:
                    custom = get_check(a["check"])
                except Exception as exc:
                    raise _Invalid(str(exc)) from None
                if custom.fn is not None:
                    self.later.append((self._slot, lambda n: self.python_check(chk, custom.fn, n)))
                    return
                expr = custom.sql_for(a["params"])
            try:
                self.src.con.execute(f"SELECT count_if(NOT ({expr})) FROM t LIMIT 0").fetchall()
            except Exception as exc:
                raise _Invalid(f"the SQL expression {expr!r} does not run on this data: {str(exc).splitlines()[0]}") from None
            self.rowwise(chk, f"NOT coalesce(({expr}), TRUE)", "rows")
        elif chk.rule.relative:
            self.relative(chk, fam)
        else:  # pragma: no cover - every rule is handled above
            raise _Invalid(f"no evaluator for {k!r}")

    def string_check(self, chk: Check, fail_pred: str) -> None:
        if chk.column not in self.grouped:
            self.rowwise(chk, fail_pred, "nonnull")
        elif chk.kind == "allowed_values" and chk.column not in self.tabled:
            self.filtered(chk, fail_pred)
        else:
            self.per_value(chk, fail_pred)

    def filtered(self, chk: Check, fail_pred: str) -> None:
        """Allowed values of a few-valued column: count only the rows the predicate keeps.

        DuckDB evaluates an IN list pushed into a Parquet scan on each row group's
        dictionary, so the passing rows are never materialized; the failing ones are
        grouped for their counts and a sample (most frequent first).
        """
        col = q(chk.column or "")
        self.counted(chk, lambda: (
            f"SELECT coalesce(sum(n), 0), list(v ORDER BY n DESC, v)[1:{SAMPLE_SIZE}] FROM "
            f"(SELECT {col} AS v, count(*) AS n FROM t WHERE {col} IS NOT NULL AND ({fail_pred}) GROUP BY ALL)"
        ))

    def need(self, chk: Check, ok: bool, what: str) -> None:
        if not ok:
            raise _Invalid(f"'{chk.kind}' needs {what}; {chk.column!r} is {self.src.types.get(chk.column or '', '?')}")

    def numeric_or_time(self, chk: Check, fam: str) -> None:
        if chk.kind == "monotonic":
            self.need(chk, fam in NUMERIC or fam in ("timestamp", "timestamp_tz", "date"), "a numeric, date or timestamp column")
        else:
            self.need(chk, fam in NUMERIC, "a numeric column")

    # -- checks that need their own query ---------------------------------
    def duplicates(self, cols: list[str], where: str) -> tuple[int, int, list[Any]]:
        """(rows whose key occurs more than once, surplus rows, a sample of such keys)."""
        keys = ", ".join(q(c) for c in cols)
        shown = " || ', ' || ".join(f"coalesce(CAST({q(c)} AS VARCHAR), 'NULL')" for c in cols)
        sql = (
            f"WITH g AS MATERIALIZED (SELECT {keys}, count(*) AS cnt FROM t WHERE {where} GROUP BY ALL HAVING count(*) > 1) "
            f"SELECT (SELECT coalesce(sum(cnt), 0) FROM g), (SELECT count(*) FROM g), "
            f"(SELECT list(k) FROM (SELECT {shown} AS k FROM g ORDER BY cnt DESC LIMIT {SAMPLE_SIZE}))"
        )
        row = self.src.con.execute(sql).fetchall()[0]
        failing, groups = int(row[0]), int(row[1])
        return failing, failing - groups, list(row[2] or [])

    def monotonic(self, chk: Check, fam: str) -> CheckResult:
        import numpy as np

        values = self.columns.values(chk.column or "", fam)
        d = np.diff(values)
        if chk.args["direction"] == "decreasing":
            d = -d
        bad = d <= 0 if chk.args["strict"] else d < 0
        failing = int(bad.sum())
        steps = len(d)
        frac = failing / steps if steps else 0.0
        ok = _passes(chk, frac)
        res = self.result(chk, "pass" if ok else "fail", f"{failing:,} out-of-order steps", failing_count=failing, failing_fraction=frac)
        if failing and not ok:
            at = np.flatnonzero(bad)[:SAMPLE_SIZE]
            res.sample = [f"{_fmt(values[i])} -> {_fmt(values[i + 1])}" for i in at]
        return res

    def referential(self, chk: Check, n: int) -> CheckResult:
        a = chk.args
        ref_data = self.resolve_source(a["source"]) if self.resolve_source else a["source"]
        with Source(ref_data) as ref:
            if a["ref_column"] not in ref.types:
                from keel.errors import did_you_mean

                raise _Invalid(f"{a['source']!r} has no column {a['ref_column']!r}.{did_you_mean(a['ref_column'], ref.types)}")
            keys = fetch_arrow(ref.con, f"SELECT DISTINCT {q(a['ref_column'])} AS k FROM t WHERE {q(a['ref_column'])} IS NOT NULL")
        con = self.src.con
        con.register("ref_keys", keys)
        try:
            col = q(a["column"])
            pred = f"{col} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ref_keys WHERE ref_keys.k = t.{col})"
            row = con.execute(f"SELECT count_if({pred}), count({col}) FROM t").fetchall()[0]
            assert row is not None
            failing, nonnull = int(row[0]), int(row[1])
            frac = failing / nonnull if nonnull else 0.0
            res = self.result(chk, "pass" if not failing else "fail", f"{failing:,} values not found", failing_count=failing, failing_fraction=frac)
            if failing:
                cast = "DOUBLE" if self.fam.get(a["column"]) in NUMERIC else "VARCHAR"
                res.sample = [r[0] for r in con.execute(f"SELECT CAST({col} AS {cast}) FROM t WHERE {pred} LIMIT {SAMPLE_SIZE}").fetchall()]
            return res
        finally:
            con.unregister("ref_keys")

    def python_check(self, chk: Check, fn: Any, n: int) -> CheckResult:
        import numpy as np

        if self.src.kind == "pandas":
            df = self.src.data.copy(deep=True)  # the function cannot touch the caller's frame
        else:
            df = fetch_arrow(self.src.con, "SELECT * FROM t").to_pandas()
        try:
            out = fn(df, **chk.args["params"])
        except Exception as exc:
            raise _Invalid(f"custom check {chk.args['check']!r} raised {type(exc).__name__}: {exc}") from None
        if isinstance(out, bool | np.bool_):
            return self.result(chk, "pass" if out else "fail", bool(out))
        passed = np.asarray(out, dtype=bool)
        if passed.shape != (n,):
            raise _Invalid(f"custom check {chk.args['check']!r} returned {passed.shape} values for {n} rows; return one bool per row or a single bool")
        failing = int((~passed).sum())
        frac = failing / n if n else 0.0
        ok = _passes(chk, frac)
        res = self.result(chk, "pass" if ok else "fail", None, failing_count=failing, failing_fraction=frac)
        if failing and not ok:
            res.sample = [f"row {i}" for i in np.flatnonzero(~passed)[:SAMPLE_SIZE]]
        return res

    # -- relative checks --------------------------------------------------
    def relative(self, chk: Check, fam: str) -> None:
        spec = chk.reference or self.contract.reference
        desc, profile = self.refs.get(spec, (spec, None))
        a, col, k = chk.args, chk.column, chk.kind
        if profile is None:
            self.results[self._slot] = self.result(chk, "skip", message=f"no reference yet ({desc})")
            return
        if k == "row_count_change":
            def finish_rc(row: tuple[Any, ...], n: int) -> CheckResult:
                ref_n = profile.num_rows
                change = (n - ref_n) / ref_n * 100 if ref_n else math.inf
                ok = abs(change) <= a["max_pct"] + _EPS
                return self.result(chk, "pass" if ok else "fail", f"{n:,} rows (ref {ref_n:,}, {change:+.2f}%)")

            self.pending.append((self._slot, finish_rc))
            return
        assert col is not None
        ref = profile.columns.get(col)
        if ref is None:
            self.results[self._slot] = self.result(chk, "skip", message=f"the reference ({desc}) has no profile of {col!r}")
            return
        v = self.v(col)
        if k == "null_rate_increase":
            ni = self.nulls(col)

            def finish_nr(row: tuple[Any, ...], n: int) -> CheckResult:
                rate = int(row[ni]) / n if n else 0.0
                diff = (rate - ref.null_rate) * 100
                ok = diff <= a["max_points"] + _EPS
                return self.result(chk, "pass" if ok else "fail", f"{rate:.2%} null (ref {ref.null_rate:.2%}, {diff:+.2f} points)", failing_count=int(row[ni]), failing_fraction=rate)

            self.pending.append((self._slot, finish_nr))
        elif k == "mean_change":
            self.need(chk, fam in NUMERIC, "a numeric column")
            mi = self.query.add(f"avg(CAST({v} AS DOUBLE))")

            def finish_mean(row: tuple[Any, ...], n: int) -> CheckResult:
                cur, base = row[mi], ref.mean
                if cur is None or base is None:
                    return self.result(chk, "skip", cur, message="no values to average")
                change = (cur - base) / abs(base) * 100 if base else (0.0 if cur == base else math.inf)
                ok = abs(change) <= a["max_pct"] + _EPS
                return self.result(chk, "pass" if ok else "fail", f"{cur:.6g} (ref {base:.6g}, {change:+.2f}%)")

            self.pending.append((self._slot, finish_mean))
        elif k == "psi":
            self.need(chk, fam in NUMERIC or fam in CATEGORICAL, "a numeric or categorical column")
            if fam in NUMERIC:
                if ref.bin_edges is None or ref.bin_counts is None:
                    raise _Invalid(f"the reference ({desc}) has no bins for {col!r}")
                # the values below each edge; the number of values is the non-null count less NaN
                idx = [self.query.add(e) for e in bin_count_exprs(col, fam, ref.bin_edges)[:-1]]
                valid = self.nonnull[col]
                idx.append(self.query.plus(valid, f"count_if({isnan_sql(q(col))})", -1) if fam == "float" else self.query.const(valid))

                def finish_psi(row: tuple[Any, ...], n: int) -> CheckResult:
                    assert ref.bin_counts is not None
                    value = psi(ref.bin_counts, bin_counts([row[i] for i in idx]))
                    ok = not math.isnan(value) and value < a["max"]
                    return self.result(chk, "pass" if ok else "fail", value)

                self.pending.append((self._slot, finish_psi))
            else:
                hi = self.hist(col, ref, desc)

                def finish_psi_cat(row: tuple[Any, ...], n: int) -> CheckResult:
                    assert ref.categories is not None
                    cur = _hist(row[hi])
                    keys = sorted(set(ref.categories) | set(cur))
                    value = psi([ref.categories.get(x, 0) for x in keys], [cur.get(x, 0) for x in keys])
                    ok = not math.isnan(value) and value < a["max"]
                    return self.result(chk, "pass" if ok else "fail", value)

                self.pending.append((self._slot, finish_psi_cat))
        elif k == "ks":
            self.need(chk, fam in NUMERIC, "a numeric column")
            if not ref.sample:
                raise _Invalid(f"the reference ({desc}) has no sample of {col!r}")
            sample = ref.sample

            self.columns.ks_columns.add(col)

            def run_ks(n: int) -> CheckResult:
                cur = self.columns.sample(col)
                import numpy as np

                d, p = ks_2samp(cur, np.asarray(sample))
                ok = not math.isnan(p) and p > a["min_pvalue"]
                return self.result(chk, "pass" if ok else "fail", p, message=f"D={d:.4f}" if not ok else "")

            self.later.append((self._slot, run_ks))
        elif k in ("category_share", "no_new_categories"):
            hi = self.hist(col, ref, desc)

            def finish_cat(row: tuple[Any, ...], n: int) -> CheckResult:
                assert ref.categories is not None
                cur = _hist(row[hi])
                if k == "no_new_categories":
                    new = sorted(set(cur) - set(ref.categories), key=lambda x: -cur[x])
                    failing = sum(cur[x] for x in new)
                    total = sum(cur.values())
                    return self.result(
                        chk, "fail" if new else "pass", f"{len(new)} new categories",
                        failing_count=failing, failing_fraction=failing / total if total else 0.0, sample=new[:SAMPLE_SIZE],
                    )
                tot_c, tot_r = sum(cur.values()), sum(ref.categories.values())
                keys = a["values"] if a.get("values") else sorted(set(ref.categories) | set(cur))
                moves = {}
                for key in map(str, keys):
                    sc = cur.get(key, 0) / tot_c if tot_c else 0.0
                    sr = ref.categories.get(key, 0) / tot_r if tot_r else 0.0
                    moves[key] = (sc - sr) * 100
                worst = max(moves, key=lambda x: abs(moves[x])) if moves else None
                bad = [f"{x}: {moves[x]:+.2f} pts" for x in sorted(moves, key=lambda x: -abs(moves[x])) if abs(moves[x]) > a["max_points"] + _EPS]
                observed = f"largest move {worst}: {moves[worst]:+.2f} points" if worst is not None else "no values"
                return self.result(chk, "fail" if bad else "pass", observed, failing_count=len(bad) or None, sample=bad[:SAMPLE_SIZE])

            self.pending.append((self._slot, finish_cat))
        else:  # pragma: no cover
            raise _Invalid(f"no evaluator for {k!r}")

    def hist(self, col: str, ref: Any, desc: str) -> int:
        """Index of the column's {value: count}: from its value table when string checks use one, else a histogram."""
        if ref.categories is None:
            raise _Invalid(f"the reference ({desc}) has too many distinct values in {col!r} to compare categories")
        if col in self.grouped:
            return self.query.later(
                f"values:{col}", lambda: dict(self.src.con.execute(f"SELECT {q(col)}, {_COUNT} FROM {self.value_table(col)}").fetchall())
            )
        return self.query.add(f"histogram({q(col)})")


class _Invalid(Exception):
    """A check cannot be evaluated on this data (reported as status 'error')."""


def _regex_sql(expr: str, pattern: str) -> str:
    """Search semantics; a pattern anchored at both ends becomes a (faster) full match."""
    inner = pattern[1:-1]
    if pattern.startswith("^") and pattern.endswith("$") and not pattern.endswith("\\$") and "|" not in inner:
        return f"regexp_full_match({expr}, {lit(inner)})"
    return f"regexp_matches({expr}, {lit(pattern)})"


def _int_bound(bound: Any) -> Any:
    """An integral float bound as an int, for comparing with an integer column (no per-row cast)."""
    return int(bound) if isinstance(bound, float) and bound.is_integer() else bound


def _passes(chk: Check, failing_fraction: float) -> bool:
    """Whether a check whose rows fail at ``failing_fraction`` passes, given its ``mostly`` tolerance."""
    return failing_fraction <= (1 - chk.mostly) + _EPS


def _null_pred(col: str, fam: str) -> str:
    qc = q(col)
    return f"({qc} IS NULL OR {isnan_sql(qc)})" if fam == "float" else f"{qc} IS NULL"


def _hist(value: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in (value or {}).items() if k is not None}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "0" if v == 0 else f"{v:.6g}"  # never '-0'
    return str(v)


def _age_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _did_you_mean_all(missing: list[str], extra: list[str]) -> str:
    from keel.errors import did_you_mean

    hints = [f"'{m}'?{did_you_mean(m, extra)}" for m in missing if did_you_mean(m, extra)]
    return " ".join(h.split("?", 1)[1].strip() for h in hints)

