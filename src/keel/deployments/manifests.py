"""Kubernetes manifests and a Dockerfile for a deployment, so nobody writes the YAML by hand.

    keel deploy manifests churn-live -o k8s/ --image registry.example.com/churn:1 --max-replicas 8
    keel deploy dockerfile churn-live -o Dockerfile

For the model servers (``keel serve --deployment NAME``):

- a ConfigMap with the deployment's name and the non-secret settings, and a
  Secret template with the store URIs (their passwords masked: fill them in, or
  point ``--secret`` at an existing Secret — no credential is ever written);
- a Deployment: the image, ``keel serve --deployment NAME --host 0.0.0.0``,
  readiness and liveness probes on the Open Inference Protocol's health endpoints,
  CPU/memory requests and limits, and the prediction log's local segments on a
  PersistentVolumeClaim (ReadWriteMany) that outlives any pod — each pod writes its
  own segments and a restarted pod adopts what a dead one left, so a pod's death
  loses nothing it answered;
- a Service on port 80 and a HorizontalPodAutoscaler (autoscaling/v2) on CPU
  utilization or on requests per second (a Pods metric from the Prometheus adapter).

With ``--stream-source`` / ``--stream-sink`` also a stream consumer Deployment
(``keel stream``) and a KEDA ScaledObject that scales it on the stream's lag
(the ``redis-streams`` or ``nats-jetstream`` trigger).

The Dockerfile installs the champion's recorded package lock (the run's
``keel/requirements.lock``), so the image runs what the model was trained with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keel.deployments.specs import get_deployment, validate
from keel.errors import ValidationError

SEGMENTS = "/var/lib/keel/predictions"
PORT = 8000
_SECRET_SETTINGS = ("metadata_uri", "artifacts_uri", "lake_uri", "online_uri", "s3_endpoint_url")


def _labels(name: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "keel", "app.kubernetes.io/instance": name, "app.kubernetes.io/component": component}


def _resources(cpu: str, memory: str) -> dict[str, Any]:
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}}


def _stream_trigger(uri: str, group: str) -> dict[str, Any]:
    from keel.store.streams import parse_stream_uri

    addr = parse_stream_uri(uri, what="--stream-source")
    if addr.scheme == "redis":
        return {"type": "redis-streams", "metadata": {"address": f"{addr.host}:{addr.port}", "stream": addr.name,
                                                      "consumerGroup": group, "lagCount": "1000", "databaseIndex": str(addr.db)}}
    return {"type": "nats-jetstream", "metadata": {"natsServerMonitoringEndpoint": f"{addr.host}:8222", "account": "$G",
                                                   "stream": "KEEL_" + addr.name.replace(".", "_"), "consumer": group, "lagThreshold": "1000"}}


def manifests(
    name: str,
    *,
    image: str | None = None,
    replicas: int = 2,
    min_replicas: int = 2,
    max_replicas: int = 10,
    autoscale: str = "cpu",
    target_cpu: int = 70,
    target_rps: int = 200,
    cpu: str = "1",
    memory: str = "1Gi",
    volume_size: str = "5Gi",
    storage_class: str | None = None,
    secret: str | None = None,
    namespace: str | None = None,
    stream_source: str | None = None,
    stream_sink: str | None = None,
    stream_group: str = "keel",
) -> list[dict[str, Any]]:
    """The Kubernetes objects of deployment ``name`` (plain dicts, in apply order)."""
    from keel.config import redact, settings

    dep = get_deployment(name)
    validate(dep.spec)
    if autoscale not in ("cpu", "rps"):
        raise ValidationError(f"--autoscale {autoscale!r} is not cpu or rps.", hint="Use --autoscale cpu (utilization) or rps (requests per second).")
    if not 1 <= min_replicas <= max_replicas:
        raise ValidationError(f"Replicas {min_replicas}..{max_replicas} are not a range.", hint="e.g. --min-replicas 2 --max-replicas 10.")
    if bool(stream_source) != bool(stream_sink):
        raise ValidationError("A stream consumer needs both --stream-source and --stream-sink.")
    image = image or f"keel-{name}:latest"
    meta = lambda kind, component: {"name": f"keel-{name}" + ("" if component == "server" else f"-{component}"),  # noqa: E731
                                    "labels": _labels(name, component), **({"namespace": namespace} if namespace else {})}
    s = settings()
    config_name = f"keel-{name}-config"
    secret_name = secret or f"keel-{name}-stores"
    out: list[dict[str, Any]] = []
    out.append({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": config_name, "labels": _labels(name, "config"), **({"namespace": namespace} if namespace else {})},
                "data": {"KEEL_DEPLOYMENT": name, "KEEL_ENGINE": str(s.get("engine")), "KEEL_EXPERIMENT": str(s.get("experiment"))}})
    if secret is None:
        values = {}
        for key in _SECRET_SETTINGS:
            value = str(s.get(key) or "")
            if value.startswith(("sqlite:", "memory:", "file:")) or (value and "://" not in value):
                value = ""  # a file or folder of this machine means nothing in a pod: the team fills in a shared store
            values["KEEL_" + key.upper()] = redact(value) or "FILL-IN"
        out.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": {"name": secret_name, "labels": _labels(name, "stores"), **({"namespace": namespace} if namespace else {})},
                    "stringData": values})
    pvc_name = f"keel-{name}-predictions"
    pvc: dict[str, Any] = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                           "metadata": {"name": pvc_name, "labels": _labels(name, "predictions"), **({"namespace": namespace} if namespace else {})},
                           "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": volume_size}}}}
    if storage_class:
        pvc["spec"]["storageClassName"] = storage_class
    out.append(pvc)
    env_from = [{"configMapRef": {"name": config_name}}, {"secretRef": {"name": secret_name}}]
    volume = {"name": "predictions", "persistentVolumeClaim": {"claimName": pvc_name}}
    mount = {"name": "predictions", "mountPath": SEGMENTS}
    env = [{"name": "KEEL_PREDICTION_LOG_DIR", "value": SEGMENTS}]

    def probe(path: str, delay: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": PORT}, "initialDelaySeconds": delay, "periodSeconds": 10, "timeoutSeconds": 3,
                "failureThreshold": 3}

    server = {
        "name": "keel-serve", "image": image, "imagePullPolicy": "IfNotPresent",
        "command": ["keel", "serve", "--deployment", name, "--host", "0.0.0.0", "--port", str(PORT)],
        "ports": [{"name": "http", "containerPort": PORT}], "envFrom": env_from, "env": env,
        "readinessProbe": probe("/v2/health/ready", 5), "livenessProbe": probe("/v2/health/live", 15),
        "resources": _resources(cpu, memory), "volumeMounts": [mount],
    }
    selector = _labels(name, "server")
    out.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("Deployment", "server"),
                "spec": {"replicas": max(replicas, min_replicas), "selector": {"matchLabels": selector},
                         "template": {"metadata": {"labels": selector, "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(PORT),
                                                                                        "prometheus.io/path": "/metrics"}},
                                      "spec": {"terminationGracePeriodSeconds": 40, "containers": [server], "volumes": [volume]}}}})
    out.append({"apiVersion": "v1", "kind": "Service", "metadata": meta("Service", "server"),
                "spec": {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": PORT}]}})
    if autoscale == "cpu":
        metrics = [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target_cpu}}}]
    else:
        metrics = [{"type": "Pods", "pods": {"metric": {"name": "keel_requests_per_second"},
                                              "target": {"type": "AverageValue", "averageValue": str(target_rps)}}}]
    out.append({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": meta("HorizontalPodAutoscaler", "server"),
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"keel-{name}"},
                         "minReplicas": min_replicas, "maxReplicas": max_replicas, "metrics": metrics}})
    if stream_source and stream_sink:
        consumer_labels = _labels(name, "stream")
        consumer = {
            "name": "keel-stream", "image": image, "imagePullPolicy": "IfNotPresent",
            "command": ["keel", "stream", dep.spec.champion.uri, "--source", stream_source, "--sink", stream_sink, "--group", stream_group,
                        "--metrics-port", "9100"],
            "ports": [{"name": "metrics", "containerPort": 9100}], "envFrom": env_from, "env": env,
            "resources": _resources(cpu, memory), "volumeMounts": [mount],
        }
        out.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("Deployment", "stream"),
                    "spec": {"replicas": 1, "selector": {"matchLabels": consumer_labels},
                             "template": {"metadata": {"labels": consumer_labels},
                                          "spec": {"terminationGracePeriodSeconds": 40, "containers": [consumer], "volumes": [volume]}}}})
        out.append({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": meta("ScaledObject", "stream"),
                    "spec": {"scaleTargetRef": {"name": f"keel-{name}-stream"}, "minReplicaCount": 1, "maxReplicaCount": max_replicas,
                             "triggers": [_stream_trigger(stream_source, stream_group)]}})
    return out


def write_manifests(objects: list[dict[str, Any]], folder: Path) -> list[Path]:
    """One YAML file per object (``<kind>-<name>.yaml``) in ``folder``."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, obj in enumerate(objects):
        path = folder / f"{i:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(obj, sort_keys=False))
        paths.append(path)
    return paths


def dockerfile(name: str, *, base: str = "python:3.11-slim") -> tuple[str, str]:
    """(Dockerfile, requirements lock) for deployment ``name``: the champion's recorded lock, then the project."""
    from keel.registry.versions import resolve_version
    from keel.store.blobs import get_artifact_store
    from keel.tracking.artifacts import list_artifacts
    from keel.tracking.environment import LOCK_ARTIFACT

    dep = get_deployment(name)
    champ = dep.spec.champion
    mv = resolve_version(champ.model, int(champ.ref) if champ.ref.isdigit() else champ.ref)
    rows = [a for a in list_artifacts(mv.run_id) if a["path"] == LOCK_ARTIFACT]
    if rows:
        lock = get_artifact_store().get_bytes(rows[0]["digest"], what=f"{LOCK_ARTIFACT} of run {mv.run_id}").decode()
    else:
        raise ValidationError(f"The run of {mv.model} v{mv.version} ({mv.run_id}) recorded no package lock.",
                              hint="Train with capture_environment on (the default) so the image can install what the model was trained with.")
    text = f"""# keel deployment {name}: {dep.spec.describe()}
# The champion ({mv.model} v{mv.version}) was trained with the packages in requirements.lock (run {mv.run_id}).
FROM {base}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 keel && mkdir -p {SEGMENTS} && chown keel {SEGMENTS}
WORKDIR /app
COPY requirements.lock /app/requirements.lock
RUN pip install -r /app/requirements.lock
COPY . /app
USER keel
EXPOSE {PORT}
CMD ["keel", "serve", "--deployment", "{name}", "--host", "0.0.0.0", "--port", "{PORT}"]
"""
    return text, lock
