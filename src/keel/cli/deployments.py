"""``keel deploy ...`` (deployments: shadow, canary, A/B) and ``keel stream`` (streaming inference)."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from keel.cli._common import JSON_OPTION, console, fail, print_json, run_guarded, table
from keel.cli.serving import _defaults


class _DeployGroup(TyperGroup):
    """``keel deploy NAME --model ...`` creates or replaces NAME; ``keel deploy ls|status|...`` are commands."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["create", *args]
        return super().parse_args(ctx, args)


deploy_app = typer.Typer(
    cls=_DeployGroup, no_args_is_help=True,
    help="Deployments: a champion with a shadow, a canary or an A/B split, stored and audited.\n\n"
         "Example: keel deploy churn-live --model churn@production --shadow churn@challenger\n\n"
         "Run it (a `keel worker` starts and supervises the model servers): keel deploy start churn-live --replicas 2 --port 8100; "
         "keel deploy status churn-live; keel deploy stop churn-live",
)

MODEL = typer.Option(None, "--model", help="The champion: NAME@ALIAS or NAME/VERSION (e.g. churn@production).")
SHADOW = typer.Option(None, "--shadow", help="A challenger that sees every request off the request path and never answers.")
CANARY = typer.Option(None, "--canary", help="A challenger that answers --weight percent of requests.")
WEIGHT = typer.Option(None, "--weight", help="The canary's share of requests, in percent (default 10).")
AB = typer.Option(None, "--ab", help="An A/B split: NAME/VERSION=WEIGHT,... (weights add up to 100).")
STICKY = typer.Option(None, "--sticky-by", help="Keep each caller on one route: an input column (customer_id) or header:NAME.")
MAX_ERR = typer.Option(None, "--max-error-rate", help="Roll the canary back when its error rate exceeds this share (e.g. 0.02).")
MAX_P99 = typer.Option(None, "--max-p99-ms", help="Roll the canary back when its p99 latency exceeds this (ms).")
MIN_REQ = typer.Option(100, "--min-requests", help="Requests the canary answers before its objectives are judged.")
REASON = typer.Option(None, "--reason", help="Why (recorded with the change).")


def _show(dep: Any) -> None:
    s = dep.spec
    console.print(f"[bold]{dep.name}[/] revision {dep.revision} ({s.mode}), changed by {dep.updated_by}", highlight=False)
    console.print(table(None, ["route", "model", "share", "uri"],
                        [(r.name, r.label(), "shadow" if r.shadow else f"{r.weight:g}%", r.uri) for r in s.routes]))
    o = s.objectives
    extras = [f"sticky by {s.sticky_by}"] if s.sticky_by else []
    if o.max_error_rate is not None or o.max_p99_ms is not None:
        extras.append(f"canary objectives: error rate <= {o.max_error_rate}, p99 <= {o.max_p99_ms} ms after {o.min_requests} requests")
    for e in extras:
        console.print("  " + e, highlight=False)


def create(
    name: str = typer.Argument(..., help="The deployment's name, e.g. churn-live."),
    model: str = MODEL, shadow: str = SHADOW, canary: str = CANARY, weight: float = WEIGHT, ab: str = AB,
    sticky_by: str = STICKY, max_error_rate: float = MAX_ERR, max_p99_ms: float = MAX_P99, min_requests: int = MIN_REQ,
    reason: str = REASON, json: bool = JSON_OPTION,
) -> None:
    """Create or replace a deployment (checked against the registry before anything is written).

    Example: keel deploy churn-live --model churn@production --canary churn/7 --weight 10 --max-error-rate 0.02
    """
    from keel.deployments.specs import build_spec, deploy

    if name in deploy_app_commands():
        fail(f"{name!r} is a keel deploy command, not a deployment name; pick another name.")
    dep = run_guarded(lambda: deploy(build_spec(name, model=model, shadow=shadow, canary=canary, weight=weight, ab=ab, sticky_by=sticky_by,
                                                max_error_rate=max_error_rate, max_p99_ms=max_p99_ms, min_requests=min_requests),
                                     reason=reason))
    if json:
        print_json(dep.to_dict())
        return
    _show(dep)


def deploy_app_commands() -> set[str]:
    return {"create", "ls", "status", "compare", "set", "promote", "rollback", "history", "delete", "apply", "manifests", "dockerfile",
            "start", "stop"}


def ls(json: bool = JSON_OPTION) -> None:
    """List the deployments.

    Example: keel deploy ls
    """
    from keel.deployments.specs import list_deployments

    deps = run_guarded(list_deployments)
    if json:
        print_json([d.to_dict() for d in deps])
        return
    console.print(table("deployments", ["name", "mode", "routes", "revision", "changed by"],
                        [(d.name, d.spec.mode, d.spec.describe(), d.revision, d.updated_by) for d in deps]))


def _compare_table(c: dict[str, Any]) -> None:
    rows = []
    for name, r in c["routes"].items():
        rows.append((name, f"{r['model']}/{','.join(map(str, r['versions'])) or r['ref']}", "shadow" if r["shadow"] else f"{r['weight']:g}%",
                     r["requests"], r["errors"], "" if r["latency_p50_ms"] is None else f"{r['latency_p50_ms']:.1f}",
                     "" if r["latency_p99_ms"] is None else f"{r['latency_p99_ms']:.1f}", r["labelled"]))
    console.print(table(f"{c['deployment']} since {c['since'][:19]}", ["route", "version", "share", "requests", "errors", "p50 ms", "p99 ms", "labelled"], rows))
    sh = c.get("shadow")
    if sh:
        line = f"shadow: {sh['paired_requests']} paired requests"
        if "agreement" in sh:
            line += f", agreement {sh['agreement']:.1%}"
        if "score_difference" in sh:
            d = sh["score_difference"]
            line += f", score difference mean {d['mean']:+.4f} (p5 {d['p5']:+.4f}, p95 {d['p95']:+.4f})"
        console.print(line, highlight=False)
    q = c.get("quality")
    if q:
        console.print(f"quality ({'paired' if q['paired'] else 'unpaired'}, {q['labelled']} labelled): {q['metric']} champion {q['champion']:.4f}, "
                      f"challenger {q['challenger']:.4f}, difference {q['difference']:+.4f} "
                      f"[{q['low']:+.4f}, {q['high']:+.4f}] at {q['confidence']:.0%}", highlight=False)
    console.print(f"[bold]recommendation:[/] {c['recommendation']}", highlight=False)


def status(name: str = typer.Argument(..., help="Deployment name."), since: str = typer.Option("1d", "--since", help="Window of the prediction log (e.g. 1h, 7d)."),
           json: bool = JSON_OPTION) -> None:
    """A deployment's routes and, per route, traffic, errors and latency (and the shadow's agreement).

    Example: keel deploy status churn-live --since 1h
    """
    from keel.deployments.compare import compare
    from keel.deployments.services import find_service
    from keel.deployments.specs import get_deployment

    dep = run_guarded(lambda: get_deployment(name))
    c = run_guarded(lambda: compare(name, since=since))
    svc = run_guarded(lambda: find_service(name))
    if json:
        print_json({"deployment": dep.to_dict(), "comparison": c, "service": None if svc is None else svc.to_dict()})
        return
    _show(dep)
    if svc is not None:
        _show_service(svc)
    _compare_table(c)


def _show_service(svc: Any) -> None:
    held = f"worker {svc.owner}" if svc.held else "no worker holds it (start one: keel worker)"
    console.print(f"service: {svc.state} ({svc.desired} wanted by {svc.requested_by}; {held})", highlight=False)
    console.print(table(None, ["replica", "address", "state", "pid", "restarts", "last error", "log"],
                        [(r.index, f"{svc.host}:{r.port}", r.state, r.pid or "", r.restarts, r.last_error or "", r.log or "")
                         for r in svc.replica_state]))


def start(name: str = typer.Argument(..., help="Deployment name."),
          replicas: int = typer.Option(1, "--replicas", help="Model-server processes (1 to 64)."),
          port: int = typer.Option(None, "--port", help="Port of the first replica; the others take the next ones (default: free ports)."),
          host: str = typer.Option("127.0.0.1", "--host", help="Interface the replicas bind (0.0.0.0 for every interface)."),
          reason: str = REASON, json: bool = JSON_OPTION) -> None:
    """Run the deployment's model servers: a `keel worker` starts them, restarts them if they crash, and keeps them running.

    This only records what is wanted; any `keel worker` on the same stores (in the project
    folder) takes it up. Put a load balancer in front of the replicas' ports.

    Example: keel deploy start churn-live --replicas 2 --port 8100 && keel worker
    """
    from keel.deployments.services import start_service

    svc = run_guarded(lambda: start_service(name, replicas=replicas, port=port, host=host, reason=reason))
    if json:
        print_json(svc.to_dict())
        return
    console.print(f"{name}: {svc.replicas} replica(s) wanted on {', '.join(f'{svc.host}:{p}' for p in svc.ports)}; "
                  f"a keel worker starts them (see keel deploy status {name})", highlight=False)


def stop(name: str = typer.Argument(..., help="Deployment name."), reason: str = REASON, json: bool = JSON_OPTION) -> None:
    """Stop the deployment's model servers: its worker drains them (SIGTERM: requests in flight finish, the prediction log is flushed).

    Example: keel deploy stop churn-live --reason "replaced by churn-v2"
    """
    from keel.deployments.services import stop_service

    svc = run_guarded(lambda: stop_service(name, reason=reason))
    if json:
        print_json(svc.to_dict())
        return
    console.print(f"{name}: stop recorded; {'worker ' + str(svc.owner) + ' drains' if svc.held else 'no worker runs'} its replicas",
                  highlight=False)


def compare_cmd(name: str = typer.Argument(..., help="Deployment name."),
                since: str = typer.Option("7d", "--since", help="Window of the prediction log (e.g. 1d, 30d)."),
                min_labels: int = typer.Option(100, "--min-labels", help="Labelled requests needed before recommending."),
                margin: float = typer.Option(0.0, "--margin", help="How much worse the challenger may be and still be promoted."),
                confidence: float = typer.Option(0.95, "--confidence", help="Confidence of the interval of the difference."),
                json: bool = JSON_OPTION) -> None:
    """Champion vs challenger: traffic, latency, errors, agreement and, with labels, quality with an interval and a recommendation.

    Example: keel deploy compare churn-live --since 30d --min-labels 200
    """
    from keel.deployments.compare import compare

    c = run_guarded(lambda: compare(name, since=since, min_labels=min_labels, margin=margin, confidence=confidence))
    if json:
        print_json(c)
        return
    _compare_table(c)


def set_cmd(
    name: str = typer.Argument(..., help="Deployment name."),
    model: str = MODEL, shadow: str = SHADOW, canary: str = CANARY, weight: float = WEIGHT, ab: str = AB,
    sticky_by: str = STICKY, max_error_rate: float = MAX_ERR, max_p99_ms: float = MAX_P99,
    single: bool = typer.Option(False, "--single", help="Drop the challenger: the champion answers everything."),
    reason: str = REASON, json: bool = JSON_OPTION,
) -> None:
    """Change a deployment (what is not given stays); every change is recorded with who and why.

    Example: keel deploy set churn-live --weight 25 --reason "canary looks healthy"
    """
    from keel.deployments.specs import set_deployment

    changes = {k: v for k, v in {"model": model, "shadow": shadow, "canary": canary, "weight": weight, "ab": ab, "sticky_by": sticky_by,
                                 "max_error_rate": max_error_rate, "max_p99_ms": max_p99_ms}.items() if v is not None}
    dep = run_guarded(lambda: set_deployment(name, reason=reason, single=single, **changes))
    if json:
        print_json(dep.to_dict())
        return
    _show(dep)


def promote(name: str = typer.Argument(..., help="Deployment name."),
            to: str = typer.Option("production", "--to", help="Environment the challenger's version moves into."),
            data: str = typer.Option(None, "--data", help="Evaluation data for the gates."),
            target: str = typer.Option(None, "--target", help="Target column of --data."),
            force: bool = typer.Option(False, "--force", help="Admins: past failing gates (needs --reason)."),
            reason: str = REASON, json: bool = JSON_OPTION) -> None:
    """Promote the challenger through the registry (gates and approvals apply) and make it the champion.

    Example: keel deploy promote churn-live --to production --reason "shadow agreed on 98%"
    """
    from keel.deployments.specs import promote_deployment

    out = run_guarded(lambda: promote_deployment(name, to=to, reason=reason, force=force, data=data, target=target))
    if json:
        print_json(out)
        return
    t = out["transition"]
    console.print(f"{t['model']} v{t['to_version']} -> {t['environment']}: {t['status']}"
                  + (f" (approval request {t['request_id']}; promote again once approved)" if t["status"] == "pending" else ""), highlight=False)


def rollback(name: str = typer.Argument(..., help="Deployment name."), reason: str = REASON, json: bool = JSON_OPTION) -> None:
    """Restore the spec the last change replaced.

    Example: keel deploy rollback churn-live --reason "canary errors"
    """
    from keel.deployments.specs import rollback_deployment

    dep = run_guarded(lambda: rollback_deployment(name, reason=reason))
    if json:
        print_json(dep.to_dict())
        return
    _show(dep)


def history_cmd(name: str = typer.Argument(..., help="Deployment name."), json: bool = JSON_OPTION) -> None:
    """Every change of a deployment: who, what, why.

    Example: keel deploy history churn-live
    """
    from keel.deployments.specs import DeploymentSpec, history

    events = run_guarded(lambda: history(name))
    if json:
        print_json(events)
        return
    from datetime import UTC, datetime

    rows = [(e["revision"], datetime.fromtimestamp(e["time_ms"] / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S"), e["action"], e["user"],
             "" if e["after"] is None else DeploymentSpec.from_dict(e["after"]).describe(), e["reason"] or "") for e in events]
    console.print(table(f"{name}: history", ["rev", "time (UTC)", "action", "user", "routes after", "reason"], rows))


def delete(name: str = typer.Argument(..., help="Deployment name."), reason: str = REASON) -> None:
    """Delete a deployment (its history stays).

    Example: keel deploy delete churn-live --reason "replaced by churn-v2"
    """
    from keel.deployments.specs import delete_deployment

    run_guarded(lambda: delete_deployment(name, reason=reason))
    console.print(f"deleted deployment {name}", highlight=False)


def apply(reason: str = REASON, json: bool = JSON_OPTION) -> None:
    """Create or update the deployments declared in keel.yaml's deployments: block.

    Example: keel deploy apply
    """
    from keel.deployments.specs import apply_config

    deps = run_guarded(lambda: apply_config(reason=reason))
    if json:
        print_json([d.to_dict() for d in deps])
        return
    for d in deps:
        console.print(f"{d.name}: revision {d.revision} ({d.spec.describe()})", highlight=False)


def stream(
    model: str = typer.Argument(..., help="Model URI, e.g. models:/churn@production."),
    source: str = typer.Option(..., "--source", help="Events: redis://HOST:PORT/DB/STREAM or nats://HOST:PORT/SUBJECT."),
    sink: str = typer.Option(..., "--sink", help="Predictions: redis://HOST:PORT/DB/STREAM or nats://HOST:PORT/SUBJECT."),
    group: str = typer.Option("keel", "--group", help="Consumer group: consumers of one group share the stream."),
    max_events: int = typer.Option(500, "--max-events", min=1, help="Events per micro-batch."),
    max_wait_ms: float = typer.Option(50.0, "--max-wait-ms", help="Longest wait for a micro-batch to fill."),
    dead_letter: str = typer.Option(None, "--dead-letter", help="Stream for events that cannot be scored (default: <source>.dead)."),
    claim_idle_ms: int = typer.Option(30_000, "--claim-idle-ms", help="Claim events another consumer left pending this long (a crashed consumer)."),
    missing_features: str = typer.Option("default", "--missing-features", help="Events whose features are missing: default (null or --default) or reject (dead-letter)."),
    default: list[str] = typer.Option([], "--default", help="NAME=VALUE given to a feature that is missing (repeatable)."),
    no_log: bool = typer.Option(False, "--no-log", help="Do not write the prediction log."),
    metrics_port: int = typer.Option(0, "--metrics-port", help="Serve Prometheus /metrics on 127.0.0.1:PORT (0: off)."),
    stop_after: int = typer.Option(0, "--stop-after", help="Stop after this many events (0: run until interrupted)."),
    idle_exit: float = typer.Option(0.0, "--idle-exit", help="Stop after this many seconds without an event (0: never)."),
    json: bool = JSON_OPTION,
) -> None:
    """Score events from a Redis stream or NATS JetStream subject and write one prediction per event id.

    At least once in, exactly one output per event id; bad events go to the dead-letter
    stream with the reason; every prediction goes to the prediction log.

    Example: keel stream models:/churn@production --source redis://127.0.0.1:6379/0/events --sink redis://127.0.0.1:6379/0/predictions
    """
    import asyncio
    import signal

    from keel.deployments.stream import StreamConsumer, StreamOptions

    options = StreamOptions(group=group, max_events=max_events, max_wait_ms=max_wait_ms, dead_letter=dead_letter,
                            claim_idle_ms=claim_idle_ms, log=not no_log, missing_features=missing_features,
                            defaults=_defaults(default))
    consumer = run_guarded(lambda: StreamConsumer(model, source=source, sink=sink, options=options))
    if metrics_port and consumer.metrics is not None:
        import prometheus_client as pc

        pc.start_http_server(metrics_port, addr="127.0.0.1", registry=consumer.metrics.registry)
    if not json:
        console.print(f"[bold]keel stream[/] {consumer.predictor.name} v{consumer.predictor.version}: {source} → {sink} "
                      f"(group {group}, batches of {max_events}; dead letters → {consumer.dead_uri})", highlight=False)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def show(s: object) -> None:
            if not json:
                d = consumer.stats
                console.print(f"  {d.events} events, {d.outputs} outputs, {d.dead_lettered} dead-lettered, lag {d.lag}", highlight=False)

        await consumer.run(stop=stop, max_events=stop_after or None, idle_exit_s=idle_exit or None,
                           progress=None if json else show)

    asyncio.run(main())
    stats = consumer.stats.to_dict()
    if json:
        print_json(stats)
        return
    console.print(f"done: {stats['events']} events, {stats['outputs']} outputs ({stats['duplicates']} redelivered, not written again), "
                  f"{stats['dead_lettered']} dead-lettered, {stats['broker_errors']} broker errors retried", highlight=False)


def manifests_cmd(
    name: str = typer.Argument(..., help="Deployment name."),
    output: str = typer.Option("k8s", "--output", "-o", help="Folder to write the YAML files into."),
    image: str = typer.Option(None, "--image", help="Container image (default keel-NAME:latest, see keel deploy dockerfile)."),
    min_replicas: int = typer.Option(2, "--min-replicas", help="Fewest model-server pods."),
    max_replicas: int = typer.Option(10, "--max-replicas", help="Most model-server pods."),
    autoscale: str = typer.Option("cpu", "--autoscale", help="Scale on cpu (utilization) or rps (requests per second per pod)."),
    target_cpu: int = typer.Option(70, "--target-cpu", help="CPU utilization the autoscaler aims at, in percent."),
    target_rps: int = typer.Option(200, "--target-rps", help="Requests per second per pod the autoscaler aims at."),
    cpu: str = typer.Option("1", "--cpu", help="CPU request per pod."),
    memory: str = typer.Option("1Gi", "--memory", help="Memory request and limit per pod."),
    volume_size: str = typer.Option("5Gi", "--volume-size", help="Size of the prediction log's volume."),
    storage_class: str = typer.Option(None, "--storage-class", help="StorageClass of the volume (ReadWriteMany)."),
    secret: str = typer.Option(None, "--secret", help="An existing Secret with the KEEL_*_URI settings (else a template is written)."),
    namespace: str = typer.Option(None, "--namespace", help="Namespace of every object."),
    stream_source: str = typer.Option(None, "--stream-source", help="Also a stream consumer: its source (redis://... or nats://...)."),
    stream_sink: str = typer.Option(None, "--stream-sink", help="The stream consumer's sink."),
    json: bool = JSON_OPTION,
) -> None:
    """Write Kubernetes manifests for a deployment: ConfigMap, Secret template, volume, Deployment, Service, HPA (and KEDA for streams).

    Example: keel deploy manifests churn-live -o k8s/ --image registry.example.com/churn:1 --max-replicas 8
    """
    from pathlib import Path

    from keel.deployments.manifests import manifests, write_manifests

    objects = run_guarded(lambda: manifests(name, image=image, min_replicas=min_replicas, max_replicas=max_replicas, autoscale=autoscale,
                                            target_cpu=target_cpu, target_rps=target_rps, cpu=cpu, memory=memory, volume_size=volume_size,
                                            storage_class=storage_class, secret=secret, namespace=namespace, stream_source=stream_source,
                                            stream_sink=stream_sink))
    paths = write_manifests(objects, Path(output))
    if json:
        print_json([str(p) for p in paths])
        return
    for p, obj in zip(paths, objects, strict=True):
        console.print(f"{obj['kind']:<24} {obj['metadata']['name']:<32} {p}", highlight=False)
    if secret is None:
        console.print("[yellow]fill in the store URIs in the Secret[/] (passwords are masked), or pass --secret NAME of an existing one", highlight=False)


def dockerfile_cmd(
    name: str = typer.Argument(..., help="Deployment name."),
    output: str = typer.Option("Dockerfile", "--output", "-o", help="Where to write the Dockerfile (requirements.lock goes beside it)."),
    base: str = typer.Option("python:3.11-slim", "--base", help="Base image."),
) -> None:
    """Write a Dockerfile (and requirements.lock) that installs the champion's recorded packages and serves the deployment.

    Example: keel deploy dockerfile churn-live -o Dockerfile && docker build -t keel-churn-live .
    """
    from pathlib import Path

    from keel.deployments.manifests import dockerfile

    text, lock = run_guarded(lambda: dockerfile(name, base=base))
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    (path.parent / "requirements.lock").write_text(lock)
    console.print(f"wrote {path} and {path.parent / 'requirements.lock'} ({lock.count(chr(10))} packages)", highlight=False)


def register(app: typer.Typer) -> None:
    deploy_app.command("create")(create)
    deploy_app.command("ls")(ls)
    deploy_app.command("status")(status)
    deploy_app.command("compare")(compare_cmd)
    deploy_app.command("set")(set_cmd)
    deploy_app.command("promote")(promote)
    deploy_app.command("rollback")(rollback)
    deploy_app.command("history")(history_cmd)
    deploy_app.command("delete")(delete)
    deploy_app.command("apply")(apply)
    deploy_app.command("manifests")(manifests_cmd)
    deploy_app.command("dockerfile")(dockerfile_cmd)
    deploy_app.command("start")(start)
    deploy_app.command("stop")(stop)
    app.add_typer(deploy_app, name="deploy")
    app.command()(stream)
