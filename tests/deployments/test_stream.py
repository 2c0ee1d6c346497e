"""keel stream: micro-batches through the Predictor, one output per event id, dead letters, restarts."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from keel.deployments.stream import StreamConsumer, StreamOptions
from keel.errors import ValidationError
from keel.store.streams import parse_stream_uri
from tests.deployments.conftest import Broker


def events(n: int, start: int = 0, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed + start)
    a, b = rng.normal(size=n), rng.normal(size=n)
    plans = rng.choice(["basic", "pro"], n)
    return [{"a": float(a[i]), "b": float(b[i]), "plan": str(plans[i])} for i in range(n)]


def redis_client(uri: str) -> Any:
    import redis

    addr = parse_stream_uri(uri)
    return redis.Redis(host=addr.host, port=addr.port, db=addr.db), addr.name


def xadd(uri: str, rows: list[dict[str, Any]], start: int = 0) -> None:
    client, name = redis_client(uri)
    pipe = client.pipeline(transaction=False)
    for i, row in enumerate(rows):
        pipe.xadd(name, {"id": f"e{start + i}", "data": orjson.dumps(row)})
    pipe.execute()
    client.close()


def outputs(uri: str) -> list[dict[str, str]]:
    client, name = redis_client(uri)
    out = [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in client.xrange(name)]
    client.close()
    return out


def consume(model_uri: str, source: str, sink: str, **kw: Any) -> StreamConsumer:
    opts = StreamOptions(group=kw.pop("group", "scorers"), max_events=kw.pop("max_events", 100), max_wait_ms=20, **kw)
    return StreamConsumer(model_uri, source=source, sink=sink, options=opts)


def run(consumer: StreamConsumer, **kw: Any) -> Any:
    kw.setdefault("idle_exit_s", 1.0)
    return asyncio.run(consumer.run(**kw))


def test_redis_stream_scores_every_event_once_and_logs_it(model: Any, redis_streams: tuple[str, str]) -> None:
    import keel
    from keel.serving.predictor import Predictor

    source, sink = redis_streams
    rows = events(1_000)
    xadd(source, rows)
    stats = run(consume("models:/churn@live", source, sink))
    assert stats.events == 1_000 and stats.outputs == 1_000 and stats.dead_lettered == 0
    out = outputs(sink)
    assert len(out) == 1_000 and len({o["id"] for o in out}) == 1_000
    assert {o["model"] for o in out} == {"churn"} and {o["version"] for o in out} == {str(model.version)}
    # the same answers as the predictor gives in-process
    expected = Predictor("models:/churn@live", log=False).predict(rows)
    by_id = {o["id"]: o for o in out}
    assert [json.loads(by_id[f"e{i}"]["prediction"]) for i in range(1_000)] == expected.predictions
    assert [float(by_id[f"e{i}"]["score"]) for i in range(1_000)] == pytest.approx(expected.scores)
    # the event id is the prediction log's request id
    logged = keel.predictions("churn")
    assert set(logged["request_id"]) == {f"e{i}" for i in range(1_000)}


def test_poison_events_go_to_the_dead_letter_stream_and_the_stream_goes_on(model: Any, redis_streams: tuple[str, str]) -> None:
    source, sink = redis_streams
    client, name = redis_client(source)
    good = events(10)
    for i, row in enumerate(good[:5]):
        client.xadd(name, {"id": f"g{i}", "data": orjson.dumps(row)})
    client.xadd(name, {"id": "bad-json", "data": b"{not json"})
    client.xadd(name, {"id": "no-data", "other": b"1"})
    client.xadd(name, {"id": "bad-type", "data": orjson.dumps({"a": "abc", "b": 1.0, "plan": "pro"})})
    client.xadd(name, {"id": "a-list", "data": orjson.dumps([1, 2])})
    for i, row in enumerate(good[5:]):
        client.xadd(name, {"id": f"g{i + 5}", "data": orjson.dumps(row)})
    client.close()
    stats = run(consume("models:/churn@live", source, sink))
    assert stats.events == 14 and stats.outputs == 10 and stats.dead_lettered == 4
    assert sorted(o["id"] for o in outputs(sink)) == sorted(f"g{i}" for i in range(10))
    dead = {d["id"]: d for d in outputs(source + ".dead")}
    assert set(dead) == {"bad-json", "no-data", "bad-type", "a-list"}
    assert "not JSON" in dead["bad-json"]["reason"] and "no 'data'" in dead["no-data"]["reason"]
    assert "'a'" in dead["bad-type"]["reason"] and dead["bad-json"]["data"] == "{not json"
    # nothing is left pending: dead letters are acknowledged too
    c2, _ = redis_client(source)
    assert c2.xpending(name, "scorers")["pending"] == 0
    c2.close()


def test_a_redelivered_event_never_gets_a_second_output(model: Any, redis_streams: tuple[str, str]) -> None:
    source, sink = redis_streams
    xadd(source, events(300))
    first = consume("models:/churn@live", source, sink)
    first.source.consumer = "worker-1"

    async def no_ack(evts: Any) -> None:  # the consumer dies after writing, before acknowledging
        raise SystemExit

    first.source.ack = no_ack  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        run(first)
    assert len(outputs(sink)) == 100  # one batch written, not acknowledged
    again = consume("models:/churn@live", source, sink)
    again.source.consumer = "worker-1"  # restarted under its name: its pending entries come first
    stats = run(again)
    assert stats.events == 300 and stats.duplicates == 100 and stats.outputs == 200
    out = outputs(sink)
    assert len(out) == 300 and len({o["id"] for o in out}) == 300


def test_a_crashed_consumers_pending_events_are_claimed_by_another(model: Any, redis_streams: tuple[str, str]) -> None:
    source, sink = redis_streams
    xadd(source, events(250))
    dead = consume("models:/churn@live", source, sink, claim_idle_ms=300)
    dead.source.consumer = "dies"
    got = asyncio.run(dead.source.read(100, 20))  # read a batch, then crash without acknowledging it
    assert len(got) == 100
    asyncio.run(dead.close())
    other = consume("models:/churn@live", source, sink, claim_idle_ms=300)
    other.source.consumer = "survivor"
    time.sleep(0.4)
    stats = run(other, idle_exit_s=1.5)
    assert stats.events == 250
    out = outputs(sink)
    assert len(out) == 250 and len({o["id"] for o in out}) == 250


def test_two_consumers_in_a_group_share_the_stream(model: Any, redis_streams: tuple[str, str]) -> None:
    source, sink = redis_streams
    xadd(source, events(2_000))

    async def both() -> list[Any]:
        a = consume("models:/churn@live", source, sink, max_events=50)
        b = consume("models:/churn@live", source, sink, max_events=50)
        a.source.consumer, b.source.consumer = "a", "b"
        return list(await asyncio.gather(a.run(idle_exit_s=1.0), b.run(idle_exit_s=1.0)))

    sa, sb = asyncio.run(both())
    assert sa.events + sb.events == 2_000 and sa.events > 0 and sb.events > 0
    out = outputs(sink)
    assert len(out) == 2_000 and len({o["id"] for o in out}) == 2_000


@pytest.mark.slow
def test_a_redis_restart_mid_stream_loses_nothing_and_duplicates_nothing(model: Any, private_redis: Broker) -> None:
    url = f"redis://127.0.0.1:{private_redis.port}/0"
    source, sink = f"{url}/events", f"{url}/predictions"
    total = 3_000
    consumer = consume("models:/churn@live", source, sink, max_events=50)
    stop = asyncio.Event()

    def produce() -> None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=private_redis.port)
        i = 0
        while i < total:
            try:
                client.xadd("events", {"id": f"e{i}", "data": orjson.dumps(events(1, start=i)[0])})
                i += 1
            except redis.ConnectionError:
                time.sleep(0.05)
            if i == total // 2 and not restarted.is_set():
                private_redis.kill()  # SIGKILL; appendfsync always keeps every acknowledged write
                private_redis.start()
                restarted.set()
        client.close()

    restarted = threading.Event()

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        producer = loop.run_in_executor(None, produce)
        task = asyncio.create_task(consumer.run(stop=stop))
        await producer
        deadline = loop.time() + 60
        while consumer.stats.events < total and loop.time() < deadline:
            await asyncio.sleep(0.1)
        stop.set()
        return await task

    stats = asyncio.run(main())
    assert restarted.is_set() and stats.events == total  # redis-py reconnects; a failed call is retried by the loop
    out = outputs(sink)
    ids = [o["id"] for o in out]
    assert len(set(ids)) == total, f"lost {total - len(set(ids))}"
    assert len(ids) == total, f"{len(ids) - len(set(ids))} duplicate outputs"


def test_nats_jetstream_scores_every_event_once(model: Any, nats_subjects: tuple[str, str]) -> None:
    import nats

    source, sink = nats_subjects
    src_subject, sink_subject = parse_stream_uri(source).name, parse_stream_uri(sink).name
    rows = events(500)

    async def main() -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
        nc = await nats.connect(source.rsplit("/", 1)[0])
        js = nc.jetstream()
        await js.add_stream(name=f"S_{src_subject.replace('.', '_')}", subjects=[src_subject])
        for i, row in enumerate(rows):
            await js.publish(src_subject, orjson.dumps({"id": f"e{i}", "data": row}))
        await js.publish(src_subject, b"{broken")
        await js.publish(src_subject, orjson.dumps({"id": "bad", "data": {"a": "x", "b": 1, "plan": "pro"}}))
        consumer = consume("models:/churn@live", source, sink)
        stats = await consumer.run(idle_exit_s=1.5)
        # read back what was written
        got = []
        sub = await js.subscribe(sink_subject, ordered_consumer=True)
        dsub = await js.subscribe(src_subject + ".dead", ordered_consumer=True)
        dead = []
        for s, acc, n in ((sub, got, 500), (dsub, dead, 2)):
            while len(acc) < n:
                msg = await s.next_msg(timeout=5)
                acc.append(orjson.loads(msg.data))
        await nc.close()
        return stats, got, dead

    stats, got, dead = asyncio.run(main())
    assert stats.events == 502 and stats.outputs == 500 and stats.dead_lettered == 2
    assert len({g["id"] for g in got}) == 500 and {g["model"] for g in got} == {"churn"}
    assert {d["id"] for d in dead} >= {"bad"} and any("not JSON" in d["reason"] for d in dead)


@pytest.mark.slow
def test_a_nats_restart_mid_stream_loses_nothing_and_duplicates_nothing(model: Any, private_nats: Broker) -> None:
    import nats

    url = f"nats://127.0.0.1:{private_nats.port}"
    total = 1_500

    async def main() -> tuple[Any, list[str]]:
        nc = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        js = nc.jetstream()
        await js.add_stream(name="EVENTS", subjects=["events"])
        await js.add_stream(name="PREDICTIONS", subjects=["predictions"], duplicate_window=600.0)
        consumer = consume("models:/churn@live", f"{url}/events", f"{url}/predictions", max_events=50, claim_idle_ms=2_000)
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop=stop))
        i = 0
        while i < total:
            try:
                await js.publish("events", orjson.dumps({"id": f"e{i}", "data": events(1, start=i)[0]}), timeout=2)
                i += 1
            except Exception:
                await asyncio.sleep(0.1)
                continue
            if i == total // 2:
                # a restart (SIGTERM): NATS 2.9 syncs JetStream files every 2 minutes, so a SIGKILL can lose
                # messages the broker had acknowledged — a property of the broker, not of the consumer
                private_nats.kill(signal.SIGTERM)
                private_nats.start()
        deadline = asyncio.get_running_loop().time() + 60
        while consumer.stats.events < total and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
        stop.set()
        stats = await task
        sub = await js.subscribe("predictions", ordered_consumer=True)
        ids = []
        info = await js.stream_info("PREDICTIONS")
        for _ in range(info.state.messages):
            ids.append(orjson.loads((await sub.next_msg(timeout=5)).data)["id"])
        await nc.close()
        return stats, ids

    stats, ids = asyncio.run(main())
    assert stats.events >= total
    assert len(set(ids)) == total, f"lost {total - len(set(ids))}"
    assert len(ids) == total, f"{len(ids) - len(set(ids))} duplicate outputs"


@pytest.mark.parametrize("uri, fragment", [
    ("kafka://host/topic", "not a stream URI"),
    ("redis://127.0.0.1:6379/events", "must name a database and a stream"),
    ("redis://127.0.0.1:6379/0/a b", "not a valid stream"),
    ("nats://127.0.0.1:4222/a/b", "one subject"),
])
def test_bad_stream_uris_are_refused_with_the_fix(uri: str, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        parse_stream_uri(uri)


def test_cli_stream_scores_and_reports(model: Any, redis_streams: tuple[str, str], project: Path) -> None:
    from typer.testing import CliRunner

    from keel.cli.main import app

    source, sink = redis_streams
    xadd(source, events(120))
    result = CliRunner().invoke(app, ["stream", "models:/churn@live", "--source", source, "--sink", sink,
                                      "--stop-after", "120", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["outputs"] == 120
    bad = CliRunner().invoke(app, ["stream", "models:/churn@live", "--source", "kafka://x/y", "--sink", sink])
    assert bad.exit_code != 0 and "not a stream URI" in bad.output and "Traceback" not in bad.output
