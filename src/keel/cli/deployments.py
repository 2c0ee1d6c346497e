"""``keel stream``: a model (or deployment) consuming one stream and writing predictions to another."""

from __future__ import annotations

import typer

from keel.cli._common import JSON_OPTION, console, print_json, run_guarded
from keel.cli.serving import _defaults


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


def register(app: typer.Typer) -> None:
    app.command()(stream)
