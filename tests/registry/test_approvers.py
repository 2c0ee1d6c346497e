"""The four-eyes rule on approvals and who may force a promotion (SQLite and PostgreSQL).

The approver is neither the requester nor the version's trainer; with users
defined, the approver role (global or on the model) is needed to approve and
the admin role to force. The rule lives in the registry library, so the CLI,
the API and the UI all get it; the acting user comes from ``keel.config.acting_as``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import keel
from keel import registry
from keel.config import acting_as
from keel.errors import ForbiddenError
from keel.store import users as U

pytestmark = pytest.mark.slow  # trains and registers models, on SQLite and PostgreSQL


def _trained_by(user: str, train: Callable[..., Any], **kw: Any) -> Any:
    with acting_as(user):
        return train(**kw)


def test_the_trainer_cannot_approve_even_without_users(proj: Path, train: Callable[..., Any], configure: Callable[..., None]) -> None:
    configure({"require_approval": ["production"]})
    mv = _trained_by("tina", train)
    with acting_as("bob"):
        t = keel.promote("churn", mv.version, to="production", reason="first model")
    assert t.status == "pending"
    with acting_as("bob"), pytest.raises(ForbiddenError, match=r"requested #\d+ and cannot approve it too"):
        registry.approve(t.request_id, "mine")  # type: ignore[arg-type]
    with acting_as("tina"), pytest.raises(ForbiddenError, match=r"'tina' trained the version of churn"):
        registry.approve(t.request_id, "I trained it")  # type: ignore[arg-type]
    refused = [e for e in registry.history("churn") if e["action"] == "approve" and e["outcome"] == "refused"]
    assert [e["user"] for e in refused] == ["bob", "tina"]  # each refused approval is in the model's audit log
    assert registry.get_model("churn").environments == {}
    with acting_as("carol"):
        done = registry.approve(t.request_id, "reviewed")  # type: ignore[arg-type]
    assert done.to_version == mv.version and registry.get_model("churn").environments == {"production": mv.version}


def test_with_users_an_approval_needs_the_approver_role(proj: Path, train: Callable[..., Any], configure: Callable[..., None]) -> None:
    configure({"require_approval": ["production"]})
    for name, role in [("tina", "member"), ("bob", "member"), ("mia", "member"), ("ann", "approver"), ("vic", "viewer")]:
        U.add_user(name, role=role)
    mv = _trained_by("tina", train)
    with acting_as("bob"):
        t = keel.promote("churn", mv.version, to="production", reason="ready")
    for who in ("mia", "vic"):
        with acting_as(who), pytest.raises(ForbiddenError, match=rf"'{who}' \((member|viewer)\) may not approve promotions of churn"):
            registry.approve(t.request_id, "looks fine")  # type: ignore[arg-type]
    with acting_as("stranger"), pytest.raises(ForbiddenError, match=r"no such user"):
        registry.approve(t.request_id, "looks fine")  # type: ignore[arg-type]
    U.grant("mia", "approver", model="churn")  # a per-model approver may approve this model's promotions
    with acting_as("mia"):
        assert registry.approve(t.request_id, "reviewed the evaluation").status == "applied"  # type: ignore[arg-type]
    mv2 = _trained_by("ann", train, C=0.3)  # an approver who trained the version cannot approve it either
    with acting_as("bob"):
        t2 = keel.promote("churn", mv2.version, to="production", reason="better", policy={"smoke": True})
    with acting_as("ann"), pytest.raises(ForbiddenError, match=r"trained the version"):
        registry.approve(t2.request_id, "mine")  # type: ignore[arg-type]


def test_force_needs_the_admin_role_and_a_reason(proj: Path, train: Callable[..., Any], data: pd.DataFrame) -> None:
    U.add_user("root", role="admin")
    U.add_user("ann", role="approver")
    train(columns=("a", "b"))
    train(columns=("a",))  # worse: the default gate refuses it
    keel.promote("churn", 1, to="production")
    with acting_as("ann"), pytest.raises(ForbiddenError, match=r"'ann' may not force a promotion of churn"):
        keel.promote("churn", 2, to="production", data=data, target="y", force=True, reason="hotfix")
    with acting_as("root"), pytest.raises(keel.KeelError, match=r"needs a reason"):
        keel.promote("churn", 2, to="production", data=data, target="y", force=True)
    with acting_as("root"):
        t = keel.promote("churn", 2, to="production", data=data, target="y", force=True, reason="known regression, hotfix")
    assert t.status == "forced"
    last = registry.history("churn")[-1]
    assert (last["user"], last["outcome"], last["reason"]) == ("root", "forced", "known regression, hotfix")
