"""Data contracts: declare what data must look like, check it at every stage.

::

    import keel
    from keel.contracts import Column, Contract, checks as c

    contract = Contract("transactions", columns={"amount": Column("float", checks=[c.min(0)])})
    report = keel.validate(df, contract)       # a Report; never raises on failed checks
    keel.contracts.enforce("transactions", df, stage="training_set")  # raises ContractViolation

See docs/contracts.md.
"""

from keel.contracts import checks
from keel.contracts.api import enforce, pin_snapshot, raise_for_errors, validate
from keel.contracts.custom import register_check, unregister_check
from keel.contracts.history import load_report
from keel.contracts.loader import load_contract, loads_contract
from keel.contracts.model import Check, Column, Contract
from keel.contracts.reference import register_reference_resolver
from keel.contracts.report import CheckResult, Report
from keel.contracts.targets import attached_contracts, register_target_resolver, resolve_data

__all__ = [
    "Check",
    "CheckResult",
    "Column",
    "Contract",
    "Report",
    "attached_contracts",
    "checks",
    "enforce",
    "load_contract",
    "load_report",
    "loads_contract",
    "pin_snapshot",
    "raise_for_errors",
    "register_check",
    "register_reference_resolver",
    "register_target_resolver",
    "resolve_data",
    "suggest",
    "unregister_check",
    "validate",
]


def __getattr__(name: str) -> object:
    if name == "suggest":
        from keel.contracts.suggest import suggest

        return suggest
    raise AttributeError(f"module 'keel.contracts' has no attribute {name!r}")
