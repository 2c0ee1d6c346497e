"""Validate data against contracts: on demand (:func:`validate`) and at each stage (:func:`enforce`)."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keel.contracts.model import Contract
from keel.contracts.report import Report, describe_failure
from keel.errors import ContractViolation, ValidationError


def validate(
    data: Any,
    contract: Contract | str | Path | list[Contract] | None = None,
    *,
    target: str | None = None,
    stage: str | None = "manual",
    run_id: str | None = None,
    store: bool = True,
    dataset_fingerprint: str | None = None,
    now: datetime | None = None,
) -> Report:
    """Check ``data`` against ``contract`` and return the :class:`Report` (never raises on failed checks).

    ``data``: a pandas DataFrame, a pyarrow Table, or a Parquet/CSV path (file,
    folder or glob); it is read in place and never modified.
    ``contract``: a Contract, a contract file, or None for the contracts attached to ``target``.
    ``target``: the name history and references are kept under (default: the contract's name).
    ``store``: keep the result (and, when it passes, the batch's profile for
    ``last_accepted`` references) in the metadata store.
    ``now``: the batch time (default: now); relative checks resolve their references as of it.
    """
    from keel.contracts.engine import evaluate
    from keel.contracts.source import Source

    contracts = _contracts(contract, target)
    tgt = target or contracts[0].name
    when = now or datetime.now(UTC)
    if when.tzinfo is None:
        raise ValidationError(
            f"now={when!r} has no time zone.", hint="Pass an aware datetime, e.g. datetime.now(timezone.utc)."
        )
    started = time.perf_counter()
    results = []
    n = 0
    profile = None
    with Source(data) as src:
        for c in contracts:
            refs = _references(c, tgt, when)
            n, res = evaluate(c, src, refs, now=when, resolve_source=_resolve_source)
            if len(contracts) > 1:
                for r in res:
                    r.check_id = f"{c.name}:{r.check_id}"
            results.extend(res)
        report = Report(
            contract=",".join(c.name for c in contracts),
            target=tgt,
            contract_hash=contracts[0].digest() if len(contracts) == 1 else _combined_hash(contracts),
            num_rows=n,
            results=results,
            stage=stage,
            run_id=run_id,
            reference=None,
        )
        if store and report.passed:
            cols = sorted({chk.column for c in contracts for chk in c.relative_checks if chk.column and chk.column in src.types})
            if any(c.relative_checks for c in contracts):
                from keel.contracts.profile import compute_profile

                profile = compute_profile(src, cols)
        report.duration_s = time.perf_counter() - started
        source = str(data) if isinstance(data, str | Path) else src.label
    if store:
        from keel.contracts.history import save_report

        save_report(report, dataset_fingerprint=dataset_fingerprint, source=source, profile=profile, batch_time=now,
                    owners={c.name: c.owners for c in contracts})
    else:
        report.created = datetime.now(UTC)
    return report


def enforce(target: str, data: Any, *, stage: str, run_id: str | None = None) -> Report | None:
    """Validate ``data`` with the contracts attached to ``target``; block on an error-level failure.

    Returns None when no contract is attached, the stored :class:`Report`
    otherwise (warnings included); raises :class:`~keel.errors.ContractViolation`
    (``.report`` holds the report) when an ``error`` check fails. Called by the
    feature store before a training set is built (stage ``training_set``) and
    before materialization (``materialize``), by tracking when a dataset is
    logged (``log_dataset``), and by serving on requests (``serving``).
    """
    from keel.contracts.targets import attached_contracts

    contracts = attached_contracts(target)
    if not contracts:
        return None
    report = validate(data, contracts, target=target, stage=stage, run_id=run_id)
    raise_for_errors(report)
    return report


def raise_for_errors(report: Report) -> None:
    """Raise :class:`ContractViolation` carrying ``report`` if an error-level check failed."""
    if report.passed:
        return
    errors = report.errors
    shown = "; ".join(describe_failure(r) for r in errors[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    raise ContractViolation(
        f"Data for {report.target!r} broke {len(errors)} error-level check(s) of contract {report.contract!r}: {shown}{more}.",
        report=report,
        hint=f"Fix the data or the contract; `keel contracts history {report.target}` shows when each check started failing.",
    )


def pin_snapshot(name: str, data: Any, *, target: str | None = None, columns: list[str] | None = None) -> int:
    """Profile ``data`` and store it as the snapshot ``name`` (``reference: snapshot:NAME``)."""
    from keel.contracts.history import save_profile
    from keel.contracts.profile import compute_profile
    from keel.contracts.source import Source

    with Source(data) as src:
        profile = compute_profile(src, columns)
    return save_profile(target or name, profile, kind="snapshot", name=name)


def _contracts(contract: Contract | str | Path | list[Contract] | None, target: str | None) -> list[Contract]:
    from keel.contracts.loader import load_contract

    if isinstance(contract, Contract):
        return [contract]
    if isinstance(contract, list):
        if not contract or not all(isinstance(c, Contract) for c in contract):
            raise ValidationError("contract must be a Contract, a file path, or a non-empty list of Contracts.")
        return contract
    if isinstance(contract, str | Path):
        return [load_contract(contract)]
    if contract is None and target is not None:
        from keel.contracts.targets import attached_contracts

        found = attached_contracts(target)
        if found:
            return found
        raise ValidationError(
            f"No contract is attached to {target!r}.",
            hint=f"Pass one (--contract FILE), add contracts/{target}.yaml, or map it under 'contracts:' in keel.yaml.",
        )
    raise ValidationError("validate() needs a contract, or a target with an attached contract.")


def _references(contract: Contract, target: str, now: datetime) -> dict[str, Any]:
    from keel.contracts.reference import resolve

    specs = {chk.reference or contract.reference for chk in contract.relative_checks}
    return {spec: resolve(spec, target, now) for spec in specs}


def _resolve_source(name: str) -> Any:
    from keel.contracts.targets import resolve_data

    return resolve_data(name)


def _combined_hash(contracts: list[Contract]) -> str:
    return hashlib.sha256("".join(c.digest() for c in contracts).encode()).hexdigest()
