"""Streaming benchmark: `keel stream` beside a hand-written redis-py loop, on Redis Streams and NATS JetStream.

    python benchmarks/bench_stream.py            # 200,000 events for throughput, 30 s at 10,000 events/s for lag
    python benchmarks/bench_stream.py --quick    # 20,000 events, 5 s of paced load

The model: scikit-learn LogisticRegression on 30 numeric features, registered in a throw-away keel project.
Events: JSON objects of the 30 inputs in an entry's `data` field, written by a producer in its own process.

Figures:
  throughput  the stream is filled first, then drained in micro-batches of 500: events/s per consumer
              (keel with the prediction log on and off; the hand-written XREADGROUP + predict_proba + XADD +
              XACK loop has no validation, no dedup and no log), one consumer beside two in a group
  lag         a producer process writes 10,000 events/s; lag = the output entry's time - the input entry's
              time (both are Redis entry ids, in ms; on NATS the output carries the input's publish time)
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

FEATURES = 30
REDIS = ("127.0.0.1", 6379)
NATS = "nats://127.0.0.1:4222"


def _rows(n: int, seed: int = 0) -> Any:
    import numpy as np

    return np.random.default_rng(seed).normal(size=(n, FEATURES)).round(6)


def setup_project(folder: Path) -> str:
    """A keel project with models:/bench@live registered; returns the model URI."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    os.chdir(folder)
    import keel
    from keel.config import init_project
    from keel.registry.transitions import set_alias

    init_project(folder)
    X = pd.DataFrame(_rows(20_000, 11), columns=[f"f{i}" for i in range(FEATURES)])
    y = (X.iloc[:, :5].sum(axis=1) + np.random.default_rng(1).normal(size=len(X)) > 0).astype(int)
    model = LogisticRegression(max_iter=500).fit(X, y)
    with keel.start_run():
        info = keel.log_model(model, input_example=X.head(5))
    v = keel.register_model(info.uri, "bench")
    set_alias("bench", "live", v.version)
    import pickle

    (folder / "model.pkl").write_bytes(pickle.dumps(model))
    return "models:/bench@live"


def produce_redis(stream: str, n: int, rate: float | None) -> None:
    import orjson
    import redis

    rows = _rows(min(n, 10_000))
    names = [f"f{i}" for i in range(FEATURES)]
    payloads = [orjson.dumps(dict(zip(names, r.tolist(), strict=True))) for r in rows]
    client = redis.Redis(*REDIS)
    batch = 500 if rate is None else max(1, int(rate / 100))
    start = time.perf_counter()
    sent = 0
    while sent < n:
        pipe = client.pipeline(transaction=False)
        for _ in range(min(batch, n - sent)):
            pipe.xadd(stream, {"data": payloads[sent % len(payloads)]})
            sent += 1
        pipe.execute()
        if rate is not None:
            ahead = sent / rate - (time.perf_counter() - start)
            if ahead > 0:
                time.sleep(ahead)
    client.close()


def hand_written(stream: str, sink: str, n: int, model_path: Path) -> float:
    """XREADGROUP 500 → orjson → NumPy → predict_proba → XADD (pipeline) → XACK; events/s."""
    import pickle

    import numpy as np
    import orjson
    import redis

    model = pickle.loads(model_path.read_bytes())
    names = [f"f{i}" for i in range(FEATURES)]
    client = redis.Redis(*REDIS)
    client.xgroup_create(stream, "hand", id="0", mkstream=True)
    done = 0
    start = time.perf_counter()
    while done < n:
        got = client.xreadgroup("hand", "c1", {stream: ">"}, count=500, block=100)
        if not got:
            continue
        entries = got[0][1]
        data = [orjson.loads(f[b"data"]) for _, f in entries]
        X = np.array([[d[k] for k in names] for d in data])
        scores = model.predict_proba(X)[:, 1]
        pipe = client.pipeline(transaction=False)
        for (eid, _), s in zip(entries, scores, strict=True):
            pipe.xadd(sink, {"id": eid, "prediction": str(int(s > 0.5)), "score": repr(float(s))})
        pipe.xack(stream, "hand", *[e for e, _ in entries])
        pipe.execute()
        done += len(entries)
    seconds = time.perf_counter() - start
    client.close()
    return n / seconds


def keel_consume(uri: str, source: str, sink: str, n: int, *, log: bool, consumers: int = 1) -> float:
    from keel.deployments.stream import StreamConsumer, StreamOptions

    async def main() -> float:
        cs = [StreamConsumer(uri, source=source, sink=sink, options=StreamOptions(group="bench", max_events=500, max_wait_ms=50, log=log),
                             metrics=False) for _ in range(consumers)]
        for i, c in enumerate(cs):
            c.source.consumer = f"c{i}"  # type: ignore[union-attr]
        start = time.perf_counter()
        await asyncio.gather(*[c.run(max_events=n // consumers if consumers > 1 else n, idle_exit_s=2.0) for c in cs])
        total = sum(c.stats.events for c in cs)
        return total / (time.perf_counter() - start - (2.0 if total < n else 0))

    return asyncio.run(main())


def lag_redis(uri: str, source: str, sink: str, seconds: float, rate: float) -> tuple[float, float, int]:
    """(p50, p99 lag in ms, events) with a producer process at ``rate`` events/s."""
    import redis

    from keel.deployments.stream import StreamConsumer, StreamOptions

    n = int(seconds * rate)
    producer = mp.get_context("spawn").Process(target=produce_redis, args=(source.rsplit("/", 1)[1], n, rate))
    consumer = StreamConsumer(uri, source=source, sink=sink, options=StreamOptions(group="lag", max_events=500, max_wait_ms=20),
                              metrics=False)
    producer.start()
    asyncio.run(consumer.run(max_events=n, idle_exit_s=5.0))
    producer.join()
    client = redis.Redis(*REDIS)
    lags = []
    for out_id, fields in client.xrange(sink.rsplit("/", 1)[1]):
        lags.append(int(out_id.split(b"-")[0]) - int(fields[b"id"].split(b"-")[0]))
    client.close()
    lags.sort()
    return statistics.median(lags), lags[int(len(lags) * 0.99) - 1], len(lags)


def nats_throughput(uri: str, n: int, consumers: int = 1) -> float:
    import nats
    import orjson

    from keel.deployments.stream import StreamConsumer, StreamOptions

    tag = f"bench_{uuid.uuid4().hex[:8]}"
    rows = _rows(min(n, 10_000))
    names = [f"f{i}" for i in range(FEATURES)]

    async def main() -> float:
        nc = await nats.connect(NATS)
        js = nc.jetstream()
        await js.add_stream(name=f"{tag}_IN", subjects=[f"{tag}.in"])
        await js.add_stream(name=f"{tag}_OUT", subjects=[f"{tag}.out"])
        for start in range(0, n, 1000):
            await asyncio.gather(*[js.publish(f"{tag}.in", orjson.dumps({"id": f"e{i}", "data": dict(zip(names, rows[i % len(rows)].tolist(), strict=True))}))
                                   for i in range(start, min(n, start + 1000))])
        cs = [StreamConsumer(uri, source=f"{NATS}/{tag}.in", sink=f"{NATS}/{tag}.out",
                             options=StreamOptions(group="bench", max_events=500, max_wait_ms=50, log=False), metrics=False)
              for _ in range(consumers)]
        t0 = time.perf_counter()
        await asyncio.gather(*[c.run(max_events=n // consumers, idle_exit_s=2.0) for c in cs])
        total = sum(c.stats.events for c in cs)
        rate = total / (time.perf_counter() - t0 - (2.0 if total < n else 0))
        for s in (f"{tag}_IN", f"{tag}_OUT"):
            await js.delete_stream(s)
        await nc.close()
        return rate

    return asyncio.run(main())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 20_000 if args.quick else 200_000
    lag_seconds = 5.0 if args.quick else 30.0
    import redis

    folder = Path(tempfile.mkdtemp(prefix="keel-bench-stream-"))
    uri = setup_project(folder)
    client = redis.Redis(*REDIS)
    tag = f"bench-{uuid.uuid4().hex[:8]}"
    results: dict[str, Any] = {}
    try:
        def fresh(name: str, count: int) -> tuple[str, str]:
            produce_redis(f"{tag}.{name}.in", count, None)
            return f"redis://{REDIS[0]}:{REDIS[1]}/0/{tag}.{name}.in", f"redis://{REDIS[0]}:{REDIS[1]}/0/{tag}.{name}.out"

        s, k = fresh("hand", n)
        results["hand"] = hand_written(s.rsplit("/", 1)[1], k.rsplit("/", 1)[1], n, folder / "model.pkl")
        s, k = fresh("nolog", n)
        results["keel_nolog"] = keel_consume(uri, s, k, n, log=False)
        s, k = fresh("log", n)
        results["keel_log"] = keel_consume(uri, s, k, n, log=True)
        s, k = fresh("two", n)
        results["keel_two"] = keel_consume(uri, s, k, n, log=False, consumers=2)
        s, k = f"redis://{REDIS[0]}:{REDIS[1]}/0/{tag}.lag.in", f"redis://{REDIS[0]}:{REDIS[1]}/0/{tag}.lag.out"
        results["lag"] = lag_redis(uri, s, k, lag_seconds, 10_000.0)
        try:
            results["nats_one"] = nats_throughput(uri, n // 4)
            results["nats_two"] = nats_throughput(uri, n // 4, consumers=2)
        except Exception as exc:  # NATS down: report, do not fail the Redis figures
            results["nats_error"] = f"{type(exc).__name__}: {exc}"
    finally:
        for key in client.scan_iter(match=f"*{tag}*", count=1000):
            client.delete(key)
        client.close()
    load = os.getloadavg()[0]
    print(f"\nStreaming, LogisticRegression on {FEATURES} features, micro-batches of 500, {n:,} events (load average {load:.1f})\n")
    print("| figure | events/s | vs hand-written loop |")
    print("|---|---|---|")
    hand = results["hand"]
    print(f"| hand-written redis-py loop (no validation, dedup or log) | {hand:,.0f} | 1.00 |")
    for key, label in (("keel_nolog", "keel stream, Redis, 1 consumer, log off"), ("keel_log", "keel stream, Redis, 1 consumer, log on"),
                       ("keel_two", "keel stream, Redis, 2 consumers in a group, log off (total)")):
        print(f"| {label} | {results[key]:,.0f} | {results[key] / hand:.2f} |")
    if "nats_one" in results:
        print(f"| keel stream, NATS JetStream, 1 consumer, log off | {results['nats_one']:,.0f} | {results['nats_one'] / hand:.2f} |")
        print(f"| keel stream, NATS JetStream, 2 consumers, log off (total) | {results['nats_two']:,.0f} | {results['nats_two'] / hand:.2f} |")
    else:
        print(f"| NATS | {results.get('nats_error')} | |")
    p50, p99, count = results["lag"]
    print(f"\nlag at 10,000 events/s for {lag_seconds:.0f} s (log on), Redis: p50 {p50:.0f} ms, p99 {p99:.0f} ms over {count:,} events")


if __name__ == "__main__":
    main()
