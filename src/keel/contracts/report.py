"""Validation reports: every check's outcome, what was seen against what was expected."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

# pass: the check holds; fail: it does not; error: it could not be evaluated
# (a missing column, a failing custom function) and counts as a failure;
# skip: a relative check without a reference yet (the first batch).
STATUSES = ("pass", "fail", "error", "skip")
SAMPLE_SIZE = 5


@dataclass
class CheckResult:
    check_id: str
    kind: str
    column: str | None
    severity: str
    status: str
    expected: str
    observed: Any = None
    failing_count: int | None = None
    failing_fraction: float | None = None
    sample: list[Any] = field(default_factory=list)
    message: str = ""

    @property
    def failed(self) -> bool:
        return self.status in ("fail", "error")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["observed"] = _jsonable(self.observed)
        d["sample"] = [_jsonable(v) for v in self.sample]
        d["failing_fraction"] = _jsonable(self.failing_fraction)
        return d


@dataclass
class Report:
    """The outcome of validating one batch of data against one contract."""

    contract: str
    target: str
    contract_hash: str
    num_rows: int
    results: list[CheckResult]
    stage: str | None = None
    run_id: str | None = None
    validation_id: str | None = None
    created: datetime | None = None
    reference: str | None = None
    duration_s: float = 0.0

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.failed]

    @property
    def errors(self) -> list[CheckResult]:
        """Failed checks of severity ``error``: these block."""
        return [r for r in self.failures if r.severity == "error"]

    @property
    def warnings(self) -> list[CheckResult]:
        return [r for r in self.failures if r.severity == "warn"]

    @property
    def passed(self) -> bool:
        """True when no error-level check failed (warnings allowed)."""
        return not self.errors

    def __getitem__(self, check_id: str) -> CheckResult:
        for r in self.results:
            if r.check_id == check_id:
                return r
        from keel.errors import NotFoundError, did_you_mean

        raise NotFoundError(f"The report has no check {check_id!r}.{did_you_mean(check_id, [r.check_id for r in self.results])}")

    def summary(self) -> str:
        head = (
            f"Contract '{self.contract}' on {self.target}: {self.num_rows:,} rows, "
            f"{len(self.results)} checks, {len(self.errors)} error(s), {len(self.warnings)} warning(s)"
        )
        lines = [head]
        for r in self.failures:
            lines.append("  " + describe_failure(r))
        return "\n".join(lines)

    __str__ = summary

    def to_dict(self) -> dict[str, Any]:
        return {
            "contract": self.contract,
            "target": self.target,
            "contract_hash": self.contract_hash,
            "validation_id": self.validation_id,
            "stage": self.stage,
            "run_id": self.run_id,
            "created": self.created.isoformat() if self.created else None,
            "num_rows": self.num_rows,
            "passed": self.passed,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "duration_s": round(self.duration_s, 4),
            "results": [r.to_dict() for r in self.results],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def rich_table(self, *, failures_only: bool = False) -> Any:
        """A rich Table, one row per check (failed checks first)."""
        from rich.table import Table

        t = Table(title=self.summary().splitlines()[0], header_style="bold", show_lines=False)
        for col in ("status", "severity", "check", "column", "expected", "observed", "failing", "sample"):
            t.add_column(col, overflow="fold")
        order = {"error": 0, "fail": 0, "skip": 1, "pass": 2}
        rows = sorted(self.results, key=lambda r: (order[r.status], r.severity != "error"))
        for r in rows:
            if failures_only and not r.failed:
                continue
            style = {"fail": "red", "error": "red", "skip": "yellow", "pass": "green"}[r.status]
            if r.failed and r.severity == "warn":
                style = "yellow"
            failing = "" if r.failing_count is None else f"{r.failing_count:,} ({_pct(r.failing_fraction)})"
            t.add_row(
                f"[{style}]{r.status}[/]",
                r.severity,
                r.check_id,
                r.column or "",
                r.expected,
                format_value(r.observed) + (f" - {r.message}" if r.message and r.status != "pass" else ""),
                failing,
                ", ".join(format_value(v) for v in r.sample),
            )
        return t


def describe_failure(r: CheckResult) -> str:
    head = f"[{r.severity}] {r.check_id}: expected {r.expected}"
    if r.observed is not None and r.observed != "":
        head += f", observed {format_value(r.observed)}"
    parts = [head]
    if r.failing_count is not None:
        parts.append(f"{r.failing_count:,} failing ({_pct(r.failing_fraction)})")
    if r.sample:
        parts.append("e.g. " + ", ".join(format_value(v) for v in r.sample))
    if r.message:
        parts.append(r.message)
    return "; ".join(parts)


def _pct(frac: float | None) -> str:
    if frac is None or (isinstance(frac, float) and math.isnan(frac)):
        return "-"
    return f"{frac * 100:.3g}%"


def format_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "0" if v == 0 else f"{v:.6g}"  # never '-0'
    if isinstance(v, dict):
        return ", ".join(f"{k}: {format_value(x)}" for k, x in list(v.items())[:6]) + (", ..." if len(v) > 6 else "")
    if isinstance(v, list):
        return "[" + ", ".join(format_value(x) for x in v[:6]) + (", ...]" if len(v) > 6 else "]")
    return str(v)


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        return None if math.isnan(v) or math.isinf(v) else v
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, datetime):
        return v.isoformat()
    if hasattr(v, "item"):
        return _jsonable(v.item())
    return str(v)
