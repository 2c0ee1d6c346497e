"""The ``live`` gate kind: promote a challenger only once its live comparison with the champion passes.

A promotion policy gate such as::

    registry:
      policies:
        churn:
          gates: ["live: not worse than champion on >= 200 labelled within 0.01"]

passes when the deployment that runs the version as its challenger (or the one
named with ``in NAME``) recommends ``promote`` on at least N labelled requests
(:func:`keel.deployments.compare.compare`: paired for a shadow, unpaired for a
canary); fewer labels or a worse challenger fail it, with the numbers.
Registered with the registry when :mod:`keel.deployments` is imported.
"""

from __future__ import annotations

import re
from typing import Any

from keel.errors import ConfigError
from keel.registry.gates import GateResult, register_gate_kind

_ARG = re.compile(
    r"^(?:not\s+worse(?:\s+than\s+(?:the\s+)?champion)?)?\s*"
    r"(?:on\s*>=?\s*(?P<n>\d+)\s+labell?ed(?:\s+requests)?)?\s*"
    r"(?:within\s+(?P<margin>[0-9.]+))?\s*"
    r"(?:since\s+(?P<since>\d+[smhdw]))?\s*"
    r"(?:in\s+(?P<deployment>[A-Za-z0-9][A-Za-z0-9_.\-]*))?\s*$"
)


def _deployment_of(mv: Any, named: str | None) -> str | None:
    from keel.deployments.specs import list_deployments
    from keel.registry.versions import resolve_version

    for dep in list_deployments():
        if named and dep.name != named:
            continue
        ch = dep.spec.challenger
        if ch is None or ch.model != mv.model:
            continue
        if resolve_version(ch.model, int(ch.ref) if ch.ref.isdigit() else ch.ref).version == mv.version:
            return dep.name
    return None


def live_gate(mv: Any, env: str, arg: str) -> GateResult:
    from keel.deployments.compare import compare

    m = _ARG.match(arg)
    name = f"live: {arg}"
    if not m:
        raise ConfigError(f"Gate {name!r} is not understood.",
                          hint="Write 'live: not worse than champion on >= 200 labelled [within 0.01] [since 30d] [in DEPLOYMENT]'.")
    n = int(m["n"] or 100)
    dep = _deployment_of(mv, m["deployment"])
    if dep is None:
        return GateResult(name, "fail", f"{mv.model} v{mv.version} is not the challenger of any deployment"
                          + (f" named {m['deployment']!r}" if m["deployment"] else "") + "; deploy it as a shadow or canary first")
    c = compare(dep, since=m["since"] or "30d", min_labels=n, margin=float(m["margin"] or 0.0))
    q = c.get("quality")
    if q is None:
        return GateResult(name, "fail", f"deployment {dep}: no labelled requests yet (need {n})")
    labelled = q["labelled"] if isinstance(q["labelled"], int) else min(q["labelled"].values())
    detail = (f"deployment {dep}: {q['metric']} challenger {q['challenger']:.4f} vs champion {q['champion']:.4f} "
              f"({q['difference']:+.4f}, [{q['low']:+.4f}, {q['high']:+.4f}]) on {labelled} labelled; {c['recommendation']}")
    status = "pass" if c["recommendation"] == "promote" else "fail"
    return GateResult(name, status, detail, value=q["challenger"], champion=q["champion"], low=q["low"], high=q["high"])


register_gate_kind("live", live_gate)
