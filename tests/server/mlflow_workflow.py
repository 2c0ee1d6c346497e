"""An unchanged MLflow 3 client script, run with the real mlflow client against a tracking server.

    python mlflow_workflow.py http://127.0.0.1:5000 OUT.json

Trains on scikit-learn's bundled breast-cancer data (no download), logs and
registers the model, moves an alias, loads the model back by alias, searches,
reads a metric history, provokes an error and autologs a second run. Writes
what it saw as JSON, with ids and timestamps dropped, so the output of two
servers can be compared.
"""

import json
import sys

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

uri, out_path = sys.argv[1], sys.argv[2]
mlflow.set_tracking_uri(uri)
mlflow.set_experiment("bc")
X, y = load_breast_cancer(return_X_y=True, as_frame=True)
X = X.iloc[:, :6]
X.columns = [c.replace(" ", "_") for c in X.columns]

with mlflow.start_run(run_name="train") as run:
    model = LogisticRegression(max_iter=2000).fit(X, y)
    mlflow.log_params({"C": 1.0, "max_iter": 2000})
    mlflow.log_metric("acc", float(model.score(X, y)))
    for i in range(5):
        mlflow.log_metric("loss", 1.0 / (i + 1), step=i)
    mlflow.set_tag("team", "risk")
    mlflow.log_dict({"threshold": 0.5}, "config/threshold.json")
    info = mlflow.sklearn.log_model(model, name="model", registered_model_name="bc", input_example=X.head(3))

client = MlflowClient()
client.set_registered_model_alias("bc", "champion", info.registered_model_version)
loaded = mlflow.pyfunc.load_model("models:/bc@champion")
predictions = [int(p) for p in loaded.predict(X.head(20))]

found = mlflow.search_runs(experiment_names=["bc"], filter_string="metrics.acc > 0.5 and params.C = '1.0' and tags.team = 'risk'")
none_found = mlflow.search_runs(experiment_names=["bc"], filter_string="metrics.acc > 2")
history = client.get_metric_history(run.info.run_id, "loss")
mv = client.get_model_version_by_alias("bc", "champion")
rm = client.get_registered_model("bc")
got = client.get_run(run.info.run_id)
artifacts = sorted(f.path for f in client.list_artifacts(run.info.run_id, "config"))
threshold = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/config/threshold.json")

errors = {}
try:
    client.get_run("0" * 32)
except MlflowException as exc:
    errors["get_missing_run"] = exc.error_code
try:
    client.get_registered_model("no-such-model")
except MlflowException as exc:
    errors["get_missing_model"] = exc.error_code
try:
    client.create_registered_model("bc")
except MlflowException as exc:
    errors["create_existing_model"] = exc.error_code
try:
    client.log_param(run.info.run_id, "C", "2.0")
except MlflowException as exc:
    errors["change_param"] = exc.error_code
try:
    client.get_model_version_by_alias("bc", "no-such-alias")
except MlflowException as exc:
    errors["missing_alias"] = exc.error_code

mlflow.autolog(log_input_examples=False, log_datasets=True)
with mlflow.start_run(run_name="auto") as auto:
    LogisticRegression(max_iter=3000, C=0.5).fit(X, y)
auto_run = client.get_run(auto.info.run_id)
mlflow.autolog(disable=True)

result = {
    "run": {
        "name": got.info.run_name, "status": got.info.status,
        "params": got.data.params, "metrics": got.data.metrics,
        "tags": {k: v for k, v in got.data.tags.items() if k in ("team", "mlflow.runName", "mlflow.user", "mlflow.source.type")},
        "outputs": len(got.outputs.model_outputs) if got.outputs else 0,
    },
    "predictions": predictions,
    "search": sorted(found["tags.mlflow.runName"].tolist()),
    "search_none": len(none_found),
    "history": [(m.step, m.value) for m in history],
    "version": {"version": mv.version, "aliases": sorted(mv.aliases), "status": mv.status,
                "source_is_logged_model": str(mv.source).startswith("models:/m-"), "run_matches": mv.run_id == run.info.run_id},
    "registered_model": {"name": rm.name, "aliases": dict(rm.aliases)},
    "artifacts": artifacts,
    "threshold": threshold,
    "errors": errors,
    "autolog": {
        "params": {k: v for k, v in auto_run.data.params.items() if k in ("C", "max_iter", "penalty")},
        "metric_keys": sorted(auto_run.data.metrics),
        "datasets": len(auto_run.inputs.dataset_inputs),
        "model_outputs": len(auto_run.outputs.model_outputs) if auto_run.outputs else 0,
    },
    "ids": {"run": run.info.run_id, "auto_run": auto.info.run_id, "model_version": mv.version},
}
with open(out_path, "w") as f:
    json.dump(result, f, indent=1, sort_keys=True)
