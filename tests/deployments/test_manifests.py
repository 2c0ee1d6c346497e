"""Kubernetes manifests load with the official client's models and carry the fields they rely on; the Dockerfile installs the lock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from keel.deployments.manifests import dockerfile, manifests, write_manifests
from keel.deployments.specs import build_spec, deploy
from keel.errors import ValidationError
from tests.deployments.test_specs import two  # noqa: F401  (fixture)

KINDS = {"ConfigMap": "V1ConfigMap", "Secret": "V1Secret", "PersistentVolumeClaim": "V1PersistentVolumeClaim", "Deployment": "V1Deployment",
         "Service": "V1Service", "HorizontalPodAutoscaler": "V2HorizontalPodAutoscaler"}


def load(obj: dict[str, Any]) -> Any:
    """``obj`` as the kubernetes client's model (its required fields and types checked)."""
    from kubernetes.client import ApiClient

    class Response:
        data = json.dumps(obj)

    return ApiClient().deserialize(Response(), KINDS[obj["kind"]])


def test_manifests_load_and_carry_probes_volume_and_autoscaling(two: tuple[Any, Any], tmp_path: Path,  # noqa: F811
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from keel import config

    monkeypatch.setenv("KEEL_ONLINE_URI", "redis://:s3cret@redis.internal:6379/0")  # not opened by manifests()
    config.reset()
    deploy(build_spec("churn-live", model="churn@production", canary="churn@challenger", weight=10))
    objects = manifests("churn-live", image="registry.example.com/churn:1", min_replicas=2, max_replicas=8,
                        stream_source="redis://redis.internal:6379/0/events", stream_sink="redis://redis.internal:6379/0/predictions")
    paths = write_manifests(objects, tmp_path / "k8s")
    kinds = [o["kind"] for o in objects]
    assert kinds == ["ConfigMap", "Secret", "PersistentVolumeClaim", "Deployment", "Service", "HorizontalPodAutoscaler", "Deployment", "ScaledObject"]
    models = {}
    for path in paths:
        obj = yaml.safe_load(path.read_text())
        if obj["kind"] == "ScaledObject":  # a KEDA custom resource: no client model
            assert obj["apiVersion"] == "keda.sh/v1alpha1" and obj["spec"]["scaleTargetRef"]["name"] == "keel-churn-live-stream"
            trig = obj["spec"]["triggers"][0]
            assert trig["type"] == "redis-streams" and trig["metadata"]["stream"] == "events" and trig["metadata"]["consumerGroup"] == "keel"
            continue
        models.setdefault(obj["kind"], []).append(load(obj))
    server = models["Deployment"][0]
    c = server.spec.template.spec.containers[0]
    assert c.image == "registry.example.com/churn:1" and c.command[:4] == ["keel", "serve", "--deployment", "churn-live"]
    assert c.readiness_probe.http_get.path == "/v2/health/ready" and c.liveness_probe.http_get.path == "/v2/health/live"
    assert c.resources.requests["cpu"] == "1" and c.resources.limits["memory"] == "1Gi"
    assert {e.config_map_ref.name for e in c.env_from if e.config_map_ref} == {"keel-churn-live-config"}
    assert c.volume_mounts[0].mount_path == "/var/lib/keel/predictions"
    vol = server.spec.template.spec.volumes[0]
    pvc = models["PersistentVolumeClaim"][0]
    assert vol.persistent_volume_claim.claim_name == pvc.metadata.name and pvc.spec.access_modes == ["ReadWriteMany"]
    hpa = models["HorizontalPodAutoscaler"][0]
    assert hpa.spec.scale_target_ref.name == server.metadata.name and (hpa.spec.min_replicas, hpa.spec.max_replicas) == (2, 8)
    assert hpa.spec.metrics[0].resource.target.average_utilization == 70
    svc = models["Service"][0]
    assert svc.spec.selector == server.spec.selector.match_labels and svc.spec.ports[0].target_port == 8000
    secret = models["Secret"][0]
    text = "\n".join(p.read_text() for p in paths)
    assert "s3cret" not in text and "redis.internal" in secret.string_data["KEEL_ONLINE_URI"]
    assert secret.string_data["KEEL_METADATA_URI"] == "FILL-IN"  # this machine's SQLite file means nothing in a pod
    consumer = models["Deployment"][1].spec.template.spec.containers[0]
    assert consumer.command[:2] == ["keel", "stream"] and "--source" in consumer.command


def test_rps_autoscaling_and_nats_keda_trigger(two: tuple[Any, Any]) -> None:  # noqa: F811
    deploy(build_spec("live", model="churn@production"))
    objects = manifests("live", autoscale="rps", target_rps=300, secret="team-stores",
                        stream_source="nats://nats.internal:4222/events", stream_sink="nats://nats.internal:4222/out")
    hpa = load(next(o for o in objects if o["kind"] == "HorizontalPodAutoscaler"))
    assert hpa.spec.metrics[0].pods.metric.name == "keel_requests_per_second" and hpa.spec.metrics[0].pods.target.average_value == "300"
    assert not any(o["kind"] == "Secret" for o in objects)  # an existing Secret is referenced, none written
    assert next(o for o in objects if o["kind"] == "ScaledObject")["spec"]["triggers"][0]["type"] == "nats-jetstream"
    with pytest.raises(ValidationError, match="cpu or rps"):
        manifests("live", autoscale="memory")
    with pytest.raises(ValidationError, match="both --stream-source and --stream-sink"):
        manifests("live", stream_source="redis://h:6379/0/x")


def test_dockerfile_installs_the_champions_recorded_lock(two: tuple[Any, Any], tmp_path: Path) -> None:  # noqa: F811
    deploy(build_spec("live", model="churn@production"))
    text, lock = dockerfile("live")
    assert "pip install -r /app/requirements.lock" in text and '"--deployment", "live"' in text
    assert "scikit-learn==" in lock
    out = CliRunner().invoke(__import__("keel.cli.main", fromlist=["app"]).app, ["deploy", "dockerfile", "live", "-o", str(tmp_path / "Dockerfile")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "requirements.lock").read_text() == lock
    out = CliRunner().invoke(__import__("keel.cli.main", fromlist=["app"]).app, ["deploy", "manifests", "live", "-o", str(tmp_path / "k8s"), "--json"])
    assert out.exit_code == 0 and len(json.loads(out.output)) == 6
