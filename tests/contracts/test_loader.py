"""YAML contracts: the same objects as Python, and errors that point at the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.contracts import Column, Contract, load_contract, loads_contract
from keel.contracts import checks as c
from keel.errors import NotFoundError, ValidationError

GOOD = """\
contract: orders
columns:
  id: {type: int, nullable: false}
  amount:
    type: float
    checks:
      - min: 0
      - max: 1000
        mostly: 0.99
        severity: warn
      - psi: 0.2
  country:
    type: string
    checks:
      - allowed_values: [US, DE]
      - no_new_categories
checks:
  - row_count: {min: 10}
  - duplicate_keys: [id]
  - sql: "amount >= 0"
    name: amount_ok
"""


def test_yaml_and_python_build_the_same_contract(tmp_path: Path) -> None:
    path = tmp_path / "orders.yaml"
    path.write_text(GOOD)
    loaded = load_contract(path)
    built = Contract(
        "orders",
        columns={
            "id": Column("int", nullable=False),
            "amount": Column("float", checks=[c.min(0), c.max(1000, mostly=0.99, severity="warn"), c.psi(0.2)]),
            "country": Column("string", checks=[c.allowed_values(["US", "DE"]), c.no_new_categories()]),
        },
        checks=[c.row_count(min=10), c.duplicate_keys(["id"]), c.sql("amount >= 0", name="amount_ok")],
    )
    assert loaded.digest() == built.digest()
    where = {chk.id: chk.where for chk in loaded.checks}
    assert where["amount.max"] == f"{path}:8"
    assert where["amount_ok"] == f"{path}:20"
    assert loads_contract(loaded.to_yaml()).digest() == loaded.digest()


@pytest.mark.parametrize(
    ("old", "new", "line", "message"),
    [
        ("duplicate_keys: [id]", "duplicate_keys: [idd]", 19, "column 'idd'.*Did you mean 'id'"),
        ("- min: 0", "- minn: 0", 7, "unknown check 'minn'. Did you mean 'min'"),
        ("psi: 0.2", "psi: abc", 11, "'psi' max must be a number, got 'abc'"),
        ("amount >= 0", "amnt >= 0", 20, 'SQL check .*amnt.* not found'),
        ("- no_new_categories", "- row_count: 3", 16, "'row_count' is a table check"),
        ("allowed_values: [US, DE]", "allowed_values: [US, DE", 15, "not valid YAML"),
        ("mostly: 0.99", "mostly: 2", 8, "mostly must be a fraction"),
        ("- psi: 0.2", "- psi: 0.2\n        mostly: 0.5", 11, "'mostly' applies to row-level checks only"),
        ("- min: 0", "- regex: '(['", 7, "does not compile"),
        ("- min: 0", "- min: 0\n        max: 3", 8, "two rules, 'min' and 'max'"),
        ("type: float", "type: flot", 5, "unknown column type 'flot'.*Did you mean 'float'"),
        ("contract: orders", "contract: orders\nreferense: x", 2, "unknown contract key 'referense'.*Did you mean 'reference'"),
        ("- psi: 0.2", "- psi: 0.2\n        reference: last_acepted", 11, "Did you mean 'last_accepted'"),
        ("- min: 0", "- min: 0\n        severity: fatal", 7, "severity must be 'error' or 'warn'"),
    ],
)
def test_bad_contracts_are_rejected_with_file_and_line(tmp_path: Path, old: str, new: str, line: int, message: str) -> None:
    path = tmp_path / "bad.yaml"
    assert old in GOOD
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(ValidationError, match=message) as exc:
        load_contract(path)
    assert f"{path}:{line}" in str(exc.value)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        load_contract(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ValidationError, match="empty"):
        load_contract(tmp_path / "empty.yaml")


def test_python_api_rejects_bad_checks() -> None:
    with pytest.raises(ValidationError, match="fraction"):
        c.min(0, mostly=1.5)
    with pytest.raises(ValidationError, match=r"does not declare.*Did you mean 'amount'"):
        Contract("x", columns={"amount": "float"}, checks=[c.duplicate_keys(["amont"])])
    with pytest.raises(ValidationError, match="is a column check"):
        Contract("x", checks=[c.not_null()])
    with pytest.raises(ValidationError, match="two checks have the id"):
        Contract("x", columns={"a": Column("int", checks=[c.min(0), c.min(1)])})


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        # an unclosed brace is noticed a line later: the line to fix is where it opened
        ("contract: x\ncolumns:\n  a: {type: int\n  b:\n    type: int\n", 3, "flow mapping that starts here is not closed"),
        # a bad indent is at the line itself, not at the mapping it breaks
        ("contract: x\ncolumns:\n  a:\n    type: int\n   checks:\n      - min: 0\n", 5, "Check the indentation"),
        ("contract: x\ncolumns:\n  a:\n    description: \"abc\n    type: int\n", 4, "quoted scalar that starts here is not closed"),
    ],
)
def test_yaml_syntax_errors_point_at_the_line_to_fix(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ValidationError, match=message) as exc:
        load_contract(path)
    assert str(exc.value).startswith(f"{path}:{line}: not valid YAML")


def test_data_location_round_trips_and_is_not_part_of_the_digest() -> None:
    with_data = loads_contract(GOOD.replace("contract: orders\n", "contract: orders\ndata: data/orders.parquet\n"))
    assert with_data.data == "data/orders.parquet"
    assert loads_contract(with_data.to_yaml()).data == "data/orders.parquet"
    assert with_data.digest() == loads_contract(GOOD).digest()
