"""What changed between two runs: params, metrics, code, data, packages, platform."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from keel.store.blobs import get_artifact_store
from keel.tracking.environment import LOCK_ARTIFACT
from keel.tracking.query import RunInfo, get_run


@dataclass
class RunDiff:
    a: str
    b: str
    params: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    metrics: list[tuple[str, float | None, float | None]] = field(default_factory=list)
    code: list[tuple[str, Any, Any]] = field(default_factory=list)
    data: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    packages: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    platform: list[tuple[str, Any, Any]] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not (self.params or self.metrics or self.code or self.data or self.packages or self.platform)

    def to_dict(self) -> dict[str, Any]:
        def rows(items: list[tuple[str, Any, Any]]) -> list[dict[str, Any]]:
            return [{"key": k, "a": a, "b": b} for k, a, b in items]

        return {
            "a": self.a, "b": self.b, "params": rows(self.params), "metrics": rows(self.metrics), "code": rows(self.code),
            "data": rows(self.data), "packages": rows(self.packages), "platform": rows(self.platform),
        }


def _changed(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        same = va == vb or (isinstance(va, float) and isinstance(vb, float) and math.isnan(va) and math.isnan(vb))
        if not same:
            out.append((k, va, vb))
    return out


def _lock(run: RunInfo) -> dict[str, str]:
    for art in run.artifacts:
        if art["path"] == LOCK_ARTIFACT:
            text = get_artifact_store().get_bytes(art["digest"], what=f"package lock of run {run.id}").decode()
            return dict(line.split("==", 1) for line in text.splitlines() if "==" in line)
    return {}


def diff_runs(a_ref: str, b_ref: str) -> RunDiff:
    """Compare two runs (ids, id prefixes or names)."""
    a, b = get_run(a_ref), get_run(b_ref)
    d = RunDiff(a.id, b.id)
    d.params = _changed(a.params, b.params)
    d.metrics = _changed(a.metrics, b.metrics)
    ga, gb = a.env.get("git", {}), b.env.get("git", {})
    d.code = _changed(
        {k: ga.get(k) for k in ("commit", "branch", "dirty", "diff_sha256")} | {"entry_point": a.env.get("entry_point"), "argv": " ".join(a.env.get("argv", []))},
        {k: gb.get(k) for k in ("commit", "branch", "dirty", "diff_sha256")} | {"entry_point": b.env.get("entry_point"), "argv": " ".join(b.env.get("argv", []))},
    )
    d.data = _changed(
        {f"{x['context']}:{x['name']}": x["fingerprint"] for x in a.datasets},
        {f"{x['context']}:{x['name']}": x["fingerprint"] for x in b.datasets},
    )
    if a.env.get("lock_sha256") != b.env.get("lock_sha256"):
        d.packages = _changed(_lock(a), _lock(b))
    d.platform = _changed(
        {k: a.env.get(k) for k in ("python", "platform", "machine")}, {k: b.env.get(k) for k in ("python", "platform", "machine")}
    )
    return d
