"""Benchmark: the ClickHouse sink, rows per second through real Kafka into the embedded engine.

Publishes N usage samples to a fresh usage topic, then measures how fast the event-log
agent (one insert with a deduplication token per batch) lands
them in ``events`` (counted with FINAL), against the textbook sink in the same process:
a Faust agent inserting each event as it comes (on a smaller input: it is slow).
Run: python -m load.bench_sink [--events N]   (local broker or TESSERA_KAFKA_BOOTSTRAP)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from typing import Any

from load.machine import machine, save_result

from tessera.agents.worker import build_worker_app
from tessera.config import load_settings
from tessera.schemas import Capacity, UsageSample, decode, encode
from tessera.schemas.topics import topic_spec
from tessera.storage.rows import event_row
from tessera.streams.admin import ensure_topics
from tessera.streams.produce import producer_for
from tessera.streams.runner import running


async def publish(settings: Any, n: int) -> None:
    topic = topic_spec("usage").full_name(settings.topic_prefix)
    producer = producer_for(settings, linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    try:
        pending = []
        used = Capacity(vcpu=1.5, memory_bytes=6 << 30)
        for i in range(n):
            rid = f"own/node-{i % 500:04d}"
            pending.append(await producer.send(topic, encode(UsageSample(resource_id=rid, interval_seconds=60,
                                                                           used=used)), key=rid.encode()))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def register_per_event_sink(app: Any, topics: Any, settings: Any, store: Any) -> None:
    @app.agent(topics["usage"], name=f"{settings.topic_prefix}.agent.per-event-sink")
    async def per_event(stream: Any) -> None:
        async for event in stream.events():
            m = event.message
            e = decode(event.value)
            row = event_row(e, topic=m.topic, partition=m.partition, offset=m.offset, key=m.key)
            await asyncio.to_thread(store.insert, f"{store.database}.events", [row])


async def measure(settings: Any, n: int, which: str) -> dict[str, float]:
    agents = ["event-log"] if which == "tessera" else []
    app, topics = build_worker_app(settings, agents, app_id=f"{settings.app_id}-{which}")
    store = app.tessera_store
    if which == "baseline":
        register_per_event_sink(app, topics, settings, store)
    t0 = time.perf_counter()
    async with running(app, ready_timeout=120):
        while True:
            got = int(store.query(f"SELECT count() AS n FROM {store.database}.events FINAL")[0]["n"])
            print(f"\r  {which}: {got}/{n}", end="", file=sys.stderr, flush=True)
            if got >= n:
                break
            await asyncio.sleep(0.5)
    elapsed = time.perf_counter() - t0
    print(file=sys.stderr)
    return {"rows": n, "seconds": round(elapsed, 2), "rows_per_s": round(n / elapsed, 1)}


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--baseline-events", type=int, default=3_000)
    args = ap.parse_args(argv)
    results = {}
    for which, n in (("tessera", args.events), ("baseline", args.baseline_events)):
        run_id = uuid.uuid4().hex[:8]
        settings = load_settings(topic_prefix=f"sink-{run_id}", app_id=f"sink-{run_id}",
                                 clickhouse_database=f"sink_{run_id}", metrics_port=0)
        await ensure_topics(settings)
        await publish(settings, n)
        results[which] = await measure(settings, n, which)
    report = {
        "benchmark": "event sink: Kafka usage topic -> ClickHouse events (embedded chdb), time until all rows "
                     "are counted with FINAL (includes worker start-up)",
        "results": results,
        "ratio_tessera_vs_baseline": round(results["tessera"]["rows_per_s"] / results["baseline"]["rows_per_s"], 1),
        "machine": machine(), "broker": "Apache Kafka 4.1.1 single node on the same machine",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    save_result("sink", report)
    return report


if __name__ == "__main__":
    asyncio.run(main())
