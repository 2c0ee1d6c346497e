"""The whole lifecycle clicked through in a browser, on a store filled by ``keel quickstart``.

Shared by ``tests/ui/test_browser_walkthrough.py`` (which asserts on every page) and
``docs/screenshots.py`` (which saves the README's screenshots from the same walk).

- :func:`prepare` (before ``keel server --auth`` starts): the users (an admin, a member who
  requests the promotion, an approver, a viewer) made through ``keel users add`` with the
  password on stdin, as a person would, and ``registry.require_approval: [staging]`` added
  to the project's keel.yaml (its gate policy kept), so a promotion to staging waits for an
  approver.
- :func:`walk` ``(page, url, shoot)``: runs → compare 2 runs → the model → request promotion
  (member) → the request seen and the approval refused (viewer) → approve (approver) → the
  deployment → monitoring → an alert, acknowledged → the lineage of a prediction.
  ``shoot(name)`` is called once per page, after its asserts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

USERS = {  # name: (role, password)
    "ada": ("admin", "ada-password-1"),
    "mia": ("member", "mia-password-1"),
    "bob": ("approver", "bob-password-1"),
    "val": ("viewer", "val-password-1"),
}
SRC = str(Path(__file__).resolve().parents[2] / "src")


def _env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env["PYTHONPATH"] = os.pathsep.join([SRC, str(folder)])
    return env


def prepare(folder: Path) -> None:
    """Users and the approval rule in the quickstart project ``folder`` (no server running yet)."""
    import yaml

    for name, (role, password) in USERS.items():
        done = subprocess.run([sys.executable, "-c", "from keel.cli.main import main; main()", "users", "add", name, "--role", role],
                              cwd=folder, env=_env(folder), input=f"{password}\n{password}\n", capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and f"Added user {name} ({role})" in done.stdout, done.stdout + done.stderr
    path = folder / "keel.yaml"
    doc = yaml.safe_load(path.read_text()) or {}
    doc.setdefault("registry", {})["require_approval"] = ["staging"]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def sign_in(page: Any, url: str, user: str) -> None:
    page.goto(url + "/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(USERS[user][1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(url + "/")
    assert f"{user} · {USERS[user][0]}" in page.inner_text("header")


def sign_out(page: Any, url: str) -> None:
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(url + "/login")


def _nav(page: Any, name: str) -> None:
    page.get_by_role("navigation", name="Sections").get_by_role("link", name=name).click()


def _number(text: str) -> float:
    return float(text.replace(",", "").strip())


def holdout(folder: Path) -> str:
    """The quickstart's fresh holdout (``data/holdout-RUN.parquet``): the evaluation data a promotion's gates need."""
    (path,) = sorted(folder.glob("data/holdout-*.parquet"))
    return str(path.relative_to(folder))


def walk(page: Any, url: str, shoot: Callable[[str], None], *, data: str) -> dict[str, Any]:
    """Click through the lifecycle (``data``: the evaluation data of the promotion, a project file);
    returns what it saw (run names, the request, the alert, a prediction) for the caller's own checks."""
    seen: dict[str, Any] = {}
    sign_in(page, url, "mia")
    overview = page.get_by_role("main").inner_text()
    assert "churn" in overview  # the latest registry events name the model
    shoot("overview")

    # -- runs: the experiment's table, filtered to the tuning trials, sorted by the validation AUC
    _nav(page, "Runs")
    page.wait_for_url(url + "/experiments")
    page.get_by_role("link", name="churn", exact=True).click()
    page.wait_for_url("**/runs?experiment=*")
    page.get_by_role("textbox", name="Filter", exact=True).fill("tags.`keel.kind` = 'trial'")
    page.get_by_role("textbox", name="Sort", exact=True).fill("metrics.valid_roc_auc DESC")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**sort=metrics.valid_roc_auc*")
    assert "Runs 1 to 12 of 12" in page.get_by_role("main").inner_text()  # the quickstart's 12 tuning trials
    table = page.get_by_role("table", name="Runs of churn", exact=False)
    rows = table.locator("tbody tr")
    assert rows.count() == 12
    header = table.locator("thead th").all_inner_texts()
    auc_col = header.index("metrics.valid_roc_auc") + 1
    names = table.locator("tbody tr td:nth-child(2) a:first-child").all_inner_texts()
    aucs = [_number(t) for t in table.locator(f"tbody tr td:nth-child({auc_col})").all_inner_texts()]
    assert aucs == sorted(aucs, reverse=True) and 0.5 < aucs[-1] <= aucs[0] < 1.0, aucs
    assert all(n.startswith("train-trial-") for n in names), names
    seen["best_runs"] = names[:2]
    shoot("runs")

    # -- compare the two best trials
    page.get_by_label(f"Select run {names[0]}").check()
    page.get_by_label(f"Select run {names[1]}").check()
    page.get_by_role("button", name="Compare").click()
    page.wait_for_url("**/compare?runs=**")
    assert page.get_by_role("heading", name="Compare 2 runs").is_visible()
    main = page.get_by_role("main")
    for name in names[:2]:
        assert main.get_by_role("link", name=name).first.is_visible()
    diff = page.get_by_role("table", name="Params of the runs", exact=False)
    differs = " ".join(diff.locator("tr.differs th").all_inner_texts())
    assert "≠ learning_rate" in differs and "≠ num_leaves" in differs, differs  # the trials' tuned params
    metrics = page.get_by_role("table", name="Latest metric values of the runs").inner_text()
    for a in aucs[:2]:
        assert f"{a:.4g}" in metrics, (a, metrics)
    shoot("compare")

    # -- the model: production holds the loop's version; the member asks for it in staging
    _nav(page, "Models")
    page.wait_for_url(url + "/models")
    page.get_by_role("link", name="churn", exact=True).click()
    page.wait_for_url(url + "/models/churn")
    model_text = page.get_by_role("main").inner_text()
    assert "production" in model_text and "staging" in model_text
    page.get_by_role("link", name="v2", exact=True).first.click()
    page.wait_for_url(url + "/models/churn/2")
    assert "production" in page.get_by_role("heading", level=1).inner_text()
    assert "roc_auc" in page.get_by_role("main").inner_text()  # the evaluation's metrics
    shoot("model")
    page.get_by_label("Environment").select_option("staging")
    page.get_by_label("Reason", exact=True).fill("stage the retrained model")
    page.get_by_label("Evaluation data", exact=False).fill(data)
    page.get_by_label("Target column").fill("churned")
    page.get_by_role("button", name="Request promotion").click()
    page.wait_for_url(url + "/models/churn?*")
    assert "waits for an approver" in page.get_by_role("status").inner_text()
    assert page.get_by_role("button", name="Approve").count() == 0  # a member may not approve
    pending = page.locator("#requests ~ .card").first.inner_text()
    assert "v2 → staging" in pending and "requested by mia" in pending and "stage the retrained model" in pending
    request_id = int(pending.split(":", 1)[0].strip().lstrip("#"))
    seen["request_id"] = request_id
    sign_out(page, url)

    # -- the viewer sees the request, no button, and is refused when it posts the approval anyway
    sign_in(page, url, "val")
    page.goto(url + "/models/churn")
    assert f"#{request_id}" in page.get_by_role("main").inner_text()
    assert page.get_by_role("button", name="Approve").count() == 0
    assert page.get_by_role("button", name="Request promotion").count() == 0
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "keel_csrf")
    refused = page.request.post(f"{url}/models/churn/requests/{request_id}/approve",
                                form={"csrf_token": csrf, "reason": "viewer tries"}, max_redirects=0)
    assert refused.status == 403, refused.status
    page.reload()
    assert "Waiting for an approver." in page.get_by_role("main").inner_text()  # still pending
    sign_out(page, url)

    # -- the approver approves, with a reason; staging holds v2 and the audit trail says who and why
    sign_in(page, url, "bob")
    page.goto(url + "/models/churn")
    page.get_by_label(f"Reason for #{request_id}").fill("slices checked")
    page.get_by_role("button", name="Approve").click()
    page.wait_for_url(url + "/models/churn?*")
    assert f"Approved #{request_id}" in page.get_by_role("status").inner_text()
    audit = page.get_by_role("table", name="Every registry event of churn, newest first")
    first = audit.get_by_role("row").nth(1).inner_text()
    assert "approve → staging" in first and "bob" in first and "slices checked" in first, first
    shoot("approved")

    # -- the deployment: its route answers with the production version; the latest requests lead to their lineage
    _nav(page, "Deployments")
    page.wait_for_url(url + "/deployments")
    page.get_by_role("link", name="churn-live").click()
    page.wait_for_url(url + "/deployments/churn-live")
    assert page.get_by_role("heading", name="Deployment churn-live").is_visible()
    routes = page.get_by_role("table", name="Routes of churn-live").inner_text()
    assert "champion" in routes and "churn v2" in routes, routes
    page.locator("select#window").select_option("24h")
    page.wait_for_url("**/deployments/churn-live?window=24h")
    logged = int(page.locator("form.toolbar .muted").inner_text().split()[0].replace(",", ""))
    champion = page.get_by_role("table", name="Routes of churn-live").locator("tbody tr").first.locator("td")
    assert logged > 100 and _number(champion.nth(3).inner_text()) == logged, logged  # the loop's live traffic, all on one route now
    assert page.get_by_role("img", name="Requests per minute, per route").is_visible()
    latest = page.get_by_role("table", name="The last 10 requests of the window", exact=False)
    assert latest.locator("tbody tr").count() == 10
    request = latest.locator("tbody tr td:nth-child(2) a").first.inner_text()
    assert latest.locator("tbody tr").first.locator("td").nth(4).inner_text() == "ok"
    seen["prediction"] = request
    seen["prediction_by"] = latest.locator("tbody tr").first.locator("td").nth(3).inner_text()  # e.g. churn v1
    shoot("deployment")

    # -- monitoring: the daily monitor's drift heat map and the drifted feature's distribution
    _nav(page, "Monitoring")
    page.wait_for_url(url + "/monitoring")
    page.get_by_role("link", name="churn-daily").first.click()
    page.wait_for_url(url + "/monitoring/churn-daily")
    assert page.get_by_role("img", name="Drift of churn-daily", exact=False).is_visible()
    page.locator("select#feature").select_option("minutes_30d")
    page.wait_for_url("**feature=minutes_30d**")
    assert page.get_by_role("img", name="minutes_30d: reference vs current", exact=False).is_visible()
    shoot("monitoring")

    # -- the open alert: the drifted feature, its numbers and top segments; acknowledged by the approver
    page.get_by_role("main").get_by_role("listitem").get_by_role("link", name="minutes_30d").first.click()
    page.wait_for_url("**/alerts/*")
    alert_id = int(page.url.rsplit("/", 1)[-1].split("?")[0])
    assert "minutes_30d" in page.get_by_role("heading", level=1).inner_text()
    context = page.get_by_role("table", name="What the monitor saw").inner_text()
    statistic = _number(context.split("statistic")[1].split()[0])
    threshold = _number(context.split("threshold")[1].split()[0])
    assert statistic > threshold > 0, context
    assert "plan = basic" in page.get_by_role("table", name="The segments that moved the distribution most").inner_text()
    page.get_by_role("button", name="Acknowledge").click()
    page.wait_for_url(f"**/alerts/{alert_id}?flash=*")
    assert "acknowledged by bob" in page.get_by_role("status").inner_text()
    assert page.get_by_role("button", name="Acknowledge").count() == 0
    seen["alert"] = alert_id
    shoot("alert")

    # -- the lineage of a prediction: pasted into the lineage form, as from an API answer
    _nav(page, "Lineage")
    page.wait_for_url(url + "/lineage")
    page.get_by_label("Request id").fill(request)
    page.get_by_role("button", name="Trace the prediction").click()
    page.wait_for_url("**/lineage/predictions/*")
    graph = page.get_by_role("figure", name="Lineage graph")
    assert graph.locator("svg rect").count() >= 5
    tree = page.locator("ul.tree").inner_text()
    assert f"prediction {request}" in tree and "deployment churn-live" in tree and "churn v" in tree, tree
    assert f"{seen['prediction_by']} via champion at " in tree, tree  # the logged row, as it reads
    shoot("lineage")
    return seen
