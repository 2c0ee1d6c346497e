"""Promotion gates: what a version must pass to enter an environment.

A policy (keel.yaml ``registry.policies.<model>`` or :class:`Policy` in code)::

    gates:                         # metric gates, as text
      - roc_auc >= 0.80            # absolute threshold
      - roc_auc >= champion + 0.005   # vs the version in the target environment (absolute margin)
      - rmse <= champion * 1.02       # relative margin
    confidence: 0.95               # champion gates must hold on the paired-bootstrap bound
    slices: [region]               # evaluate per slice ...
    max_slice_drop: 0.02           # ... and fail when any slice is worse than the champion's by more
    contracts: [customers]         # data contracts that the evaluation data must pass
    smoke: true                    # predict on the packaged input example
    latency_ms: 20                 # p95 of a one-row prediction on the packaged model

Without a policy the gate is "not worse than the version it replaces on the
task's primary metric" (ROC AUC for binary, RMSE for regression).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.errors import ConfigError, ValidationError, did_you_mean
from keel.evaluation import metrics as M

_GATE = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_.\-]*)\s*(?P<op>>=|<=|>|<)\s*"
    r"(?:(?P<champ>champion)\s*(?:(?P<sign>[+\-*])\s*(?P<amount>[0-9.eE+\-]+)(?P<pct>%)?)?|(?P<value>[+\-]?[0-9.eE+\-]+))\s*$"
)
_POLICY_KEYS = {
    "gates", "data", "target", "task", "threshold", "confidence", "bootstrap", "slices", "max_slice_drop", "slice_metric",
    "min_slice_rows", "contracts", "smoke", "latency_ms", "environments", "custom_metrics",
}


@dataclass(frozen=True)
class MetricGate:
    text: str
    metric: str
    op: str
    value: float | None = None  # absolute threshold
    champion: bool = False
    sign: str | None = None  # '+', '-', '*'
    amount: float = 0.0

    def required(self, champion_value: float) -> float:
        if self.sign == "*":
            return champion_value * self.amount
        if self.sign == "-":
            return champion_value - self.amount
        return champion_value + self.amount


def parse_gate(text: str) -> MetricGate:
    m = _GATE.match(str(text))
    if not m:
        raise ConfigError(
            f"Gate {text!r} is not understood.",
            hint="Write '<metric> >= <number>' or '<metric> >= champion [+|-|*] <number>[%]', e.g. 'roc_auc >= champion + 0.005'.",
        )
    if m["champ"]:
        amount = float(m["amount"] or 0.0)
        sign = m["sign"]
        if m["pct"]:
            if sign == "*":
                raise ConfigError(f"Gate {text!r}: use 'champion + 1%' or 'champion * 1.01', not both.")
            sign, amount = "*", 1 + (amount / 100 if sign != "-" else -amount / 100)
        return MetricGate(str(text), m["metric"], m["op"], champion=True, sign=sign, amount=amount)
    return MetricGate(str(text), m["metric"], m["op"], value=float(m["value"]))


# Gate kinds registered by the layers above (the registry imports nothing above it): a gate
# written "<kind>: <argument>" is evaluated by the kind's function
# ``fn(model_version, environment, argument) -> GateResult``.
GateKindFn = Callable[[Any, str, str], "GateResult"]
_KINDS: dict[str, GateKindFn] = {}
_KIND_TEXT = re.compile(r"^\s*(?P<kind>[A-Za-z_][A-Za-z0-9_]*)\s*:\s*(?P<arg>.*)$")
KIND_HINTS = {"live": "keel.deployments"}  # where the built-in kinds are registered


def register_gate_kind(kind: str, fn: GateKindFn) -> None:
    """Evaluate gates written ``"<kind>: <argument>"`` with ``fn`` (deployments registers ``live``)."""
    _KINDS[kind] = fn


def kind_of(text: str) -> tuple[str, str] | None:
    """(kind, argument) when ``text`` is a gate of a kind (registered or not), else None."""
    m = _KIND_TEXT.match(str(text))
    if not m:
        return None
    kind = m["kind"]
    if kind not in _KINDS:
        where = KIND_HINTS.get(kind)
        raise ConfigError(f"Gate {text!r} is of kind {kind!r}, which is not registered." + did_you_mean(kind, list(_KINDS) + list(KIND_HINTS)),
                          hint=f"Import {where} first (the keel CLI and server do)." if where else "Register it with keel.registry.gates.register_gate_kind.")
    return kind, m["arg"].strip()


def kind_results(policy: Policy, mv: Any, env: str) -> list[GateResult]:
    return [_KINDS[kind](mv, env, arg) for kind, arg in policy.kind_gates()]


def _compare(a: float, op: str, b: float) -> bool:
    return {">=": a >= b, "<=": a <= b, ">": a > b, "<": a < b}[op]


GateFn = Callable[[Any, Any], Any]


@dataclass
class Policy:
    """A promotion policy (see the module docstring); ``gates`` may include functions
    ``fn(candidate_result, champion_result) -> bool | (bool, detail)``."""

    gates: list[Any] = field(default_factory=list)
    data: Any = None
    target: str | None = None
    task: str | None = None
    threshold: float = 0.5
    confidence: float | None = None
    bootstrap: int = 1000
    slices: list[Any] = field(default_factory=list)
    max_slice_drop: float | None = None
    slice_metric: str | None = None
    min_slice_rows: int = 30
    contracts: Any = None
    smoke: bool = True
    latency_ms: float | None = None
    environments: list[str] | None = None
    custom_metrics: dict[str, Any] = field(default_factory=dict)
    default: bool = False  # True: the built-in "not worse than the champion" policy

    @classmethod
    def from_dict(cls, data: dict[str, Any], model: str = "") -> Policy:
        unknown = [k for k in data if k not in _POLICY_KEYS]
        if unknown:
            raise ConfigError(
                f"Unknown key {unknown[0]!r} in the promotion policy of {model!r}." + did_you_mean(unknown[0], _POLICY_KEYS),
                hint=f"Keys: {', '.join(sorted(_POLICY_KEYS))}.",
            )
        gates = data.get("gates") or []
        if isinstance(gates, str):
            gates = [gates]
        p = cls(**{k: v for k, v in data.items() if k != "gates"}, gates=list(gates))
        p.metric_gates()  # parse now: a bad gate is a config error before any promotion
        if p.confidence is not None and not 0 < float(p.confidence) < 1:
            raise ConfigError(f"Policy of {model!r}: confidence {p.confidence!r} is not between 0 and 1.", hint="Use e.g. 0.95.")
        return p

    def metric_gates(self) -> list[MetricGate]:
        return [parse_gate(g) for g in self.gates if isinstance(g, str) and kind_of(g) is None]

    def kind_gates(self) -> list[tuple[str, str]]:
        """(kind, argument) of each gate of a registered kind, e.g. ("live", "not worse on >= 200 labelled")."""
        return [k for g in self.gates if isinstance(g, str) and (k := kind_of(g)) is not None]

    def function_gates(self) -> list[GateFn]:
        out = []
        for g in self.gates:
            if callable(g):
                out.append(g)
            elif not isinstance(g, str):
                raise ConfigError(f"Gate {g!r} is neither text nor a function.", hint="e.g. 'roc_auc >= 0.8'.")
        return out


@dataclass
class GateResult:
    name: str
    status: str  # pass | fail | skip
    detail: str
    value: float | None = None
    required: float | None = None
    champion: float | None = None
    low: float | None = None
    high: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class GateReport:
    model: str
    version: int
    environment: str
    champion_version: int | None
    results: list[GateResult]
    policy: str  # "default", "keel.yaml" or "code"
    evaluation: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return all(r.status != "fail" for r in self.results)

    @property
    def failures(self) -> list[GateResult]:
        return [r for r in self.results if r.status == "fail"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "version": self.version, "environment": self.environment, "champion_version": self.champion_version,
            "passed": self.passed, "policy": self.policy, "results": [r.to_dict() for r in self.results],
        }


def policy_for(model: str, env: str, policy: Any = None) -> tuple[Policy, str]:
    """The policy that applies to ``model`` entering ``env``: given in code, keel.yaml, or the default."""
    from keel.registry.config import policy_config

    source = "code"
    if policy is None:
        conf = policy_config(model)
        if conf is not None:
            policy, source = Policy.from_dict(conf, model), "keel.yaml"
    elif isinstance(policy, dict):
        policy = Policy.from_dict(policy, model)
    if policy is not None and not isinstance(policy, Policy):
        raise ValidationError(f"policy= got a {type(policy).__name__}.", hint="Pass a keel.registry.Policy or a dict.")
    if policy is None or (policy.environments is not None and env not in policy.environments):
        return Policy(default=True), "default"
    return policy, source


def _fmt(v: float | None) -> str:
    return "n/a" if v is None or v != v else f"{v:.4g}"


_SYNONYMS = {"auc": "roc_auc", "auroc": "roc_auc", "rocauc": "roc_auc", "ap": "pr_auc", "average_precision": "pr_auc",
             "logloss": "log_loss", "cross_entropy": "log_loss", "acc": "accuracy", "f1_score": "f1", "calibration_error": "ece"}


def check_metric_names(policy: Policy, task: str) -> None:
    """A gate on a metric the evaluation does not compute is bad input: fail before anything runs."""
    known = list(M.METRICS[task]) + list(policy.custom_metrics)
    names = [g.metric for g in policy.metric_gates()]
    if policy.max_slice_drop is not None and policy.slice_metric:
        names.append(policy.slice_metric)
    for name in names:
        if name not in known:
            synonym = _SYNONYMS.get(name.lower())
            hint = f" Did you mean '{synonym}'?" if synonym in known else did_you_mean(name, known)
            raise ValidationError(
                f"The promotion policy gates on metric {name!r}, which a {task} evaluation does not compute." + hint,
                hint=f"Use one of {', '.join(known)}, or add it as a custom metric (custom_metrics: {{{name}: fn}}).",
            )


def metric_results(policy: Policy, cand: Any, champ: Any, ci: dict[str, dict[str, float]], champion_version: int | None, env: str) -> list[GateResult]:
    out: list[GateResult] = []
    conf = policy.confidence
    for g in policy.metric_gates():
        value = cand.metrics.get(g.metric)
        if not g.champion:
            assert g.value is not None
            ok = value is not None and value == value and _compare(value, g.op, g.value)
            out.append(GateResult(g.text, "pass" if ok else "fail", f"{g.metric} = {_fmt(value)}, needs {g.op} {_fmt(g.value)}", value, g.value))
            continue
        if champ is None:
            out.append(GateResult(g.text, "pass", f"no version in {env}: nothing to compare with", value))
            continue
        cv = champ.metrics.get(g.metric)
        need = g.required(cv) if cv is not None else None
        if conf and g.metric in ci and need is not None and cv is not None:
            margin = need - cv
            bound = ci[g.metric]["low"] if g.op in (">=", ">") else ci[g.metric]["high"]
            ok = bound == bound and _compare(bound, g.op, margin)
            detail = (
                f"{g.metric} = {_fmt(value)} vs champion v{champion_version} {_fmt(cv)}: difference {_fmt(value - cv if value is not None else None)}, "
                f"{int(conf * 100)}% interval [{_fmt(ci[g.metric]['low'])}, {_fmt(ci[g.metric]['high'])}] must be {g.op} {_fmt(margin)}"
            )
            out.append(GateResult(g.text, "pass" if ok else "fail", detail, value, need, cv, ci[g.metric]["low"], ci[g.metric]["high"]))
        else:
            ok = value is not None and need is not None and value == value and _compare(value, g.op, need)
            out.append(GateResult(g.text, "pass" if ok else "fail", f"{g.metric} = {_fmt(value)}, needs {g.op} {_fmt(need)} (champion v{champion_version}: {_fmt(cv)})", value, need, cv))
    return out


def slice_results(policy: Policy, cand: Any, champ: Any, task: str) -> list[GateResult]:
    if policy.max_slice_drop is None:
        return []
    metric = policy.slice_metric or M.PRIMARY[task]
    name = f"no slice worse by > {policy.max_slice_drop} {metric}"
    if champ is None:
        return [GateResult(name, "pass", "no champion: nothing to compare slices with")]
    if not cand.slices:
        return [GateResult(name, "fail", "no slices were evaluated: set slices: [column] in the policy")]
    gib = cand.greater_is_better.get(metric, True)
    base = {s["slice"]: s for s in champ.slices}
    worst: tuple[float, str] | None = None
    for s in cand.slices:
        b = base.get(s["slice"])
        if b is None or s["num_rows"] < policy.min_slice_rows:
            continue
        cv, bv = s["metrics"].get(metric), b["metrics"].get(metric)
        if cv is None or bv is None or cv != cv or bv != bv:
            continue
        drop = (bv - cv) if gib else (cv - bv)
        if worst is None or drop > worst[0]:
            worst = (drop, s["slice"])
    if worst is None:
        return [GateResult(name, "skip", f"no slice has {policy.min_slice_rows}+ rows and a defined {metric}")]
    ok = worst[0] <= float(policy.max_slice_drop)
    return [GateResult(name, "pass" if ok else "fail", f"worst slice {worst[1]}: {metric} worse by {_fmt(worst[0])}", worst[0], float(policy.max_slice_drop))]


def contract_results(policy: Policy, frame: Any) -> list[GateResult]:
    if not policy.contracts:
        return [GateResult("data contracts", "skip", "not configured (no contracts in the policy)")]
    import importlib

    try:
        module = importlib.import_module("keel.contracts")
    except ImportError:
        module = None
    enforce = getattr(module, "enforce", None)
    if enforce is None:
        return [GateResult("data contracts", "skip", "not configured: keel.contracts.enforce is not available")]
    if frame is None:
        return [GateResult("data contracts", "fail", "no evaluation data to check: pass --data PATH --target COL")]
    names = [policy.contracts] if isinstance(policy.contracts, str) else (list(policy.contracts) if isinstance(policy.contracts, list | tuple) else [None])
    out = []
    from keel.errors import ContractViolation

    for name in names:
        label = f"contract {name}" if name else "data contracts"
        try:
            enforce(name, frame, stage="promote")
        except ContractViolation as exc:
            out.append(GateResult(label, "fail", str(exc).splitlines()[0]))
            continue
        out.append(GateResult(label, "pass", "passed"))
    return out


def smoke_result(model: Any) -> GateResult:
    example = getattr(model, "input_example", None)
    if example is None or len(example) == 0:
        return GateResult("smoke prediction", "skip", "no input example was logged with the model")
    try:
        out = model.predict(example)
    except Exception as exc:
        return GateResult("smoke prediction", "fail", f"{type(exc).__name__}: {exc}")
    import numpy as np

    arr = np.asarray(out)
    if len(arr) != len(example):
        return GateResult("smoke prediction", "fail", f"{len(arr)} predictions for {len(example)} rows")
    return GateResult("smoke prediction", "pass", f"{len(arr)} prediction(s) on the input example")


def latency_result(model: Any, budget_ms: float, frame: Any) -> GateResult:
    import numpy as np

    row = model.input_example.head(1) if getattr(model, "input_example", None) is not None else (frame.head(1) if frame is not None else None)
    name = f"latency p95 <= {budget_ms:g} ms"
    if row is None:
        return GateResult(name, "fail", "no input example or evaluation data to time a prediction on")
    for _ in range(3):
        model.predict(row)
    times = []
    for _ in range(30):
        t0 = time.perf_counter()
        model.predict(row)
        times.append((time.perf_counter() - t0) * 1000)
    p95 = float(np.percentile(times, 95))
    return GateResult(name, "pass" if p95 <= budget_ms else "fail", f"one-row predict p95 {p95:.3f} ms over 30 calls", p95, float(budget_ms))


def function_results(policy: Policy, cand: Any, champ: Any) -> list[GateResult]:
    out = []
    for fn in policy.function_gates():
        name = getattr(fn, "__name__", "custom gate")
        try:
            verdict = fn(cand, champ)
        except Exception as exc:
            out.append(GateResult(name, "fail", f"{type(exc).__name__}: {exc}"))
            continue
        ok, detail = (verdict if isinstance(verdict, tuple) else (bool(verdict), ""))
        out.append(GateResult(name, "pass" if ok else "fail", str(detail)))
    return out


def default_results(task: str, cand: Any, champ: Any, champion_version: int | None, env: str, stored: tuple[dict[str, Any], dict[str, Any]] | None) -> list[GateResult]:
    metric = M.PRIMARY[task]
    op = ">=" if M.GREATER_IS_BETTER[metric] else "<="
    name = f"{metric} {op} champion (default gate)"
    if champion_version is None:
        value = None if cand is None else cand.metrics.get(metric)
        return [GateResult(name, "pass", f"no version in {env}: nothing to compare with", value)]
    if cand is not None and champ is not None:
        v, c = cand.metrics.get(metric), champ.metrics.get(metric)
    elif stored is not None:
        v, c = stored[0].get(metric), stored[1].get(metric)
    else:
        return [GateResult(name, "fail", f"no evaluation data to compare with v{champion_version}: pass --data PATH --target COL (or set data: in the model's policy)")]
    ok = v is not None and c is not None and v == v and _compare(v, op, c)
    return [GateResult(name, "pass" if ok else "fail", f"{metric} = {_fmt(v)} vs champion v{champion_version} {_fmt(c)}", v, c, c)]


def infer_task(y: Any) -> str:
    import pandas as pd

    if pd.api.types.is_float_dtype(y) and not (y.dropna() == y.dropna().round()).all():
        return "regression"
    n = y.nunique()
    if n <= 2:
        return "binary"
    if pd.api.types.is_numeric_dtype(y) and n > 20:
        return "regression"
    return "multiclass"


def names(results: Sequence[GateResult]) -> list[str]:
    return [r.name for r in results]
