"""The quickstart: a churn project from raw data to tracked, compared models."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from keel import config

EXPERIMENT = "churn-quickstart"

# (name, estimator factory key, params): the candidates the quickstart compares
CANDIDATES: list[tuple[str, str, dict[str, Any]]] = [
    ("logreg-C0.1", "logreg", {"C": 0.1}),
    ("logreg-C1", "logreg", {"C": 1.0}),
    ("forest-d6", "forest", {"n_estimators": 150, "max_depth": 6}),
    ("lgbm-15", "lgbm", {"num_leaves": 15, "learning_rate": 0.05, "n_estimators": 200}),
    ("lgbm-31", "lgbm", {"num_leaves": 31, "learning_rate": 0.05, "n_estimators": 200}),
]


@dataclass
class QuickstartResult:
    folder: Path
    runs: Any = None  # DataFrame of the compared runs
    best_run: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


@contextmanager
def _stage(console: Console, result: QuickstartResult, title: str) -> Iterator[None]:
    start = time.perf_counter()
    with console.status(f"[bold]{title}[/] ..."):
        yield
    result.timings[title] = time.perf_counter() - start
    console.print(f"[green]✓[/] {title} [dim]({result.timings[title]:.1f}s)[/]")


def _estimator(kind: str, params: dict[str, Any]) -> Any:
    if kind == "logreg":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, **params))
    if kind == "forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(random_state=0, n_jobs=1, **params)
    import lightgbm

    return lightgbm.LGBMClassifier(random_state=0, verbose=-1, n_jobs=1, **params)


def ensure_project(folder: Path) -> Path:
    folder = folder.resolve()
    if not (folder / config.CONFIG_FILE).exists():
        config.init_project(folder)
        with (folder / config.CONFIG_FILE).open("a") as f:
            f.write("# created by keel quickstart\n")
    os.chdir(folder)
    config.reset()
    return folder


def training_table(data_dir: Path) -> Any:
    """Labels joined with customer attributes and the 30 days of usage before each label."""
    import duckdb

    con = duckdb.connect()
    sql = f"""
        WITH l AS (SELECT * FROM read_parquet('{data_dir / "labels.parquet"}')),
        u AS (SELECT * FROM read_parquet('{data_dir / "usage.parquet"}')),
        c AS (SELECT * FROM read_parquet('{data_dir / "customers.parquet"}'))
        SELECT l.customer_id, l.event_timestamp, c.plan, c.region, c.tenure_months, c.monthly_fee,
               sum(u.sessions) AS sessions_30d, sum(u.minutes) AS minutes_30d,
               sum(u.support_tickets) AS tickets_30d, sum(u.payment_failures) AS failures_30d,
               l.churned
        FROM l JOIN c USING (customer_id)
        LEFT JOIN u ON u.customer_id = l.customer_id
             AND u.event_timestamp <= l.event_timestamp
             AND u.event_timestamp > l.event_timestamp - INTERVAL 30 DAY
             AND u.created_timestamp <= l.event_timestamp
        GROUP BY ALL
        ORDER BY l.event_timestamp, l.customer_id
    """
    return con.sql(sql).df()


def _xy(df: Any) -> tuple[Any, Any]:
    import pandas as pd

    x = df.drop(columns=["customer_id", "event_timestamp", "churned"])
    x = pd.get_dummies(x, columns=[c for c in ("plan", "region") if c in x.columns], dtype="float64").fillna(0.0)
    return x, df["churned"].to_numpy()


def train_candidates(train: Any, valid: Any, console: Console) -> list[str]:
    import numpy as np
    from rich.progress import Progress
    from sklearn import metrics as skm

    import keel

    keel.set_experiment(EXPERIMENT)
    x_train, y_train = _xy(train)
    x_valid, y_valid = _xy(valid)
    x_valid = x_valid.reindex(columns=x_train.columns, fill_value=0.0)
    run_ids = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("training candidates", total=len(CANDIDATES))
        for name, kind, params in CANDIDATES:
            keel.seed(0)
            with keel.start_run(name=name) as run:
                keel.log_params({"model": kind, **params})
                keel.set_tag("stage", "quickstart")
                keel.log_dataset(train, name="train", context="training")
                keel.log_dataset(valid, name="valid", context="validation")
                model = _estimator(kind, params)
                if kind == "lgbm":
                    import inspect

                    if "eval_X" in inspect.signature(model.fit).parameters:  # lightgbm >= 4.6
                        model.fit(x_train, y_train, eval_X=(x_valid,), eval_y=(y_valid,), eval_metric="auc")
                    else:
                        model.fit(x_train, y_train, eval_set=[(x_valid, y_valid)], eval_metric="auc")
                    for step, (auc, loss) in enumerate(zip(model.evals_result_["valid_0"]["auc"], model.evals_result_["valid_0"]["binary_logloss"], strict=True)):
                        keel.log_metrics({"valid_auc": auc, "valid_logloss": loss}, step=step)
                else:
                    model.fit(x_train, y_train)
                proba = model.predict_proba(x_valid)[:, 1]
                keel.log_metrics(
                    {
                        "roc_auc": skm.roc_auc_score(y_valid, proba),
                        "pr_auc": skm.average_precision_score(y_valid, proba),
                        "log_loss": skm.log_loss(y_valid, np.clip(proba, 1e-7, 1 - 1e-7)),
                        "accuracy": skm.accuracy_score(y_valid, proba >= 0.5),
                    },
                    step=0,
                )
                _log_pickled_model(model, list(x_train.columns))
                run_ids.append(run.id)
            progress.advance(task)
    return run_ids


def _log_pickled_model(model: Any, feature_names: list[str]) -> None:
    import pickle
    import tempfile

    import keel

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        folder.mkdir()
        (folder / "model.pkl").write_bytes(pickle.dumps(model))
        keel.log_dict({"feature_names": feature_names, "class": f"{type(model).__module__}.{type(model).__name__}"}, "model/meta.json")
        keel.log_artifact(folder / "model.pkl", name="model/model.pkl")


def run_quickstart(folder: Path, console: Console | None = None, n_customers: int = 3_000) -> QuickstartResult:
    from keel.quickstart import data as qdata

    console = console or Console()
    start = time.perf_counter()
    result = QuickstartResult(ensure_project(folder))
    console.print(f"[bold]keel quickstart[/] in {result.folder}")
    data_dir = result.folder / "data"
    with _stage(console, result, "Generate the churn data set"):
        if not (data_dir / "labels.parquet").exists():
            qdata.write(qdata.generate(n_customers=n_customers), data_dir)
    with _stage(console, result, "Build the training table (30 days of usage before each label)"):
        table = training_table(data_dir)
        cut = table["event_timestamp"].quantile(0.75)
        train, valid = table[table["event_timestamp"] < cut], table[table["event_timestamp"] >= cut]
    with _stage(console, result, f"Train and track {len(CANDIDATES)} candidate models"):
        ids = train_candidates(train, valid, console)
    import keel

    runs = keel.search_runs(EXPERIMENT, filter="tags.stage = 'quickstart' and status = 'finished'", order_by=["metrics.roc_auc DESC"], max_results=len(ids) * 10)
    runs = runs[runs["run_id"].isin(ids)]
    result.runs = runs
    result.best_run = str(runs.iloc[0]["run_id"]) if len(runs) else None
    _print_comparison(console, runs)
    s = config.settings()
    console.print(
        f"\nStored: metadata [bold]{s.metadata_uri}[/]\n        artifacts [bold]{s.artifacts_uri}[/]\n        data [bold]{data_dir}[/]"
        f"\nBest run: [bold]{result.best_run}[/]. Next: keel runs show {str(result.best_run)[:8]} · keel runs ls -o 'metrics.roc_auc DESC'"
    )
    result.timings["total"] = time.perf_counter() - start
    return result


def _print_comparison(console: Console, runs: Any) -> None:
    from rich.table import Table

    t = Table(title="Candidates on the validation window (best first)", header_style="bold")
    for col in ("run", "model", "roc_auc", "pr_auc", "log_loss", "accuracy", "run id"):
        t.add_column(col)
    for _, r in runs.iterrows():
        t.add_row(str(r["run_name"]), str(r.get("params.model", "")), *(f"{r.get(f'metrics.{m}', float('nan')):.4f}" for m in ("roc_auc", "pr_auc", "log_loss", "accuracy")), str(r["run_id"])[:12])
    console.print(t)
