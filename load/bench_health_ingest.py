"""Benchmark: health-sample ingest through real Kafka into the live resource table.

Pre-publishes N health samples for M resources to a fresh health topic, then lets two
consumers read the same input, one after the other, in this process:

* ``tessera``  the resources agent (agents/resources.py): batched decode, hysteresis,
               rows coalesced per batch (one changelog write per resource per batch);
* ``baseline`` the textbook Faust agent: one event at a time, decode, update the row,
               one table write (and changelog message) per sample.

For context it also measures two ceilings on the same input: a bare Faust agent that
does nothing per event (Faust's own per-event cost) and a raw aiokafka ``getmany`` loop
(what the broker and client can deliver). Reports samples/s for each and the ratio. Run:  python -m load.bench_health_ingest [--samples N]
The broker is the local one (`tessera infra up`) or TESSERA_KAFKA_BOOTSTRAP.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from load.machine import machine
from prometheus_client import REGISTRY

from tessera.agents.worker import build_worker_app
from tessera.config import load_settings
from tessera.resources import health
from tessera.resources.table import decode_row, encode_row, new_row, set_reported_free
from tessera.schemas import HealthSample, HealthStatus, decode
from tessera.streams.admin import ensure_topics
from tessera.streams.produce import producer_for
from tessera.streams.runner import running

RESULTS = Path(__file__).resolve().parent / "results"


async def publish(settings: Any, n: int, resources: int) -> float:
    from tessera.schemas import Capacity, encode
    from tessera.schemas.topics import topic_spec

    topic = topic_spec("health").full_name(settings.topic_prefix)
    producer = producer_for(settings, linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    t0 = time.perf_counter()
    try:
        free = Capacity(vcpu=3.5, memory_bytes=12 << 30)
        pending = []
        for i in range(n):
            rid = f"own/node-{i % resources:05d}"
            e = HealthSample(resource_id=rid, status=HealthStatus.healthy, free=free)
            pending.append(await producer.send(topic, encode(e), key=rid.encode()))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
                print(f"\r  published {i + 1}/{n}", end="", file=sys.stderr, flush=True)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    print(file=sys.stderr)
    return n / (time.perf_counter() - t0)


def register_baseline(app: Any, topics: Any, settings: Any, store: Any = None) -> dict[str, int]:
    """One event at a time, one table write per sample: the straightforward Faust agent."""
    table = app.Table(f"{settings.topic_prefix}.baseline-resources", default=None, partitions=6,
                      key_type=bytes, value_type=bytes)
    policy = health.HealthPolicy()
    seen = {"n": 0}

    @app.agent(topics["health"], name=f"{settings.topic_prefix}.agent.baseline")
    async def baseline(stream: Any) -> None:
        async for event in stream.events():
            e = decode(event.value)
            row = decode_row(table.get(event.key)) or new_row(e.resource_id)
            set_reported_free(row, e)
            health.observe(row["health"], e, policy)
            table[event.key] = encode_row(row)
            seen["n"] += 1

    return seen


async def measure(settings: Any, n: int, which: str) -> dict[str, float]:
    app_id = f"{settings.app_id}-{which}"
    if which == "tessera":
        app, _ = build_worker_app(settings, ["resources"], app_id=app_id)
        labels = {"agent": "resources", "topic": "health"}

        def count() -> float:
            return REGISTRY.get_sample_value("tessera_events_consumed_total", labels) or 0.0

        base = count()
        consumed = lambda: count() - base  # noqa: E731
    else:
        from tessera.streams.app import create_app
        from tessera.streams.topics import declare_topics

        app = create_app(settings, app_id=app_id)
        topics = declare_topics(app, settings)
        app.tessera_settings = settings
        seen = register_baseline(app, topics, settings)
        consumed = lambda: seen["n"]  # noqa: E731
    async with running(app):
        t0 = None
        deadline = time.monotonic() + 600
        while consumed() < n and time.monotonic() < deadline:
            if t0 is None and consumed() > 0:
                t0 = time.perf_counter()
            await asyncio.sleep(0.02)
            print(f"\r  {which}: {int(consumed())}/{n}", end="", file=sys.stderr, flush=True)
        elapsed = time.perf_counter() - (t0 or time.perf_counter())
    print(file=sys.stderr)
    return {"samples": int(consumed()), "seconds": round(elapsed, 3), "samples_per_s": round(consumed() / elapsed, 1)}


async def ceiling_faust(settings: Any, n: int) -> dict[str, float]:
    from tessera.streams.app import create_app
    from tessera.streams.topics import declare_topics

    app = create_app(settings, app_id=f"{settings.app_id}-bare")
    topics = declare_topics(app, settings)
    app.tessera_settings = settings
    seen = {"n": 0}

    @app.agent(topics["health"], name=f"{settings.topic_prefix}.agent.bare")
    async def bare(stream: Any) -> None:
        async for _value in stream:
            seen["n"] += 1

    async with running(app):
        t0 = None
        deadline = time.monotonic() + 600
        while seen["n"] < n and time.monotonic() < deadline:
            if t0 is None and seen["n"]:
                t0 = time.perf_counter()
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - (t0 or time.perf_counter())
    return {"samples": seen["n"], "seconds": round(elapsed, 3), "samples_per_s": round(seen["n"] / elapsed, 1)}


async def ceiling_aiokafka(settings: Any, n: int) -> dict[str, float]:
    from aiokafka import AIOKafkaConsumer

    from tessera.schemas.topics import topic_spec

    c = AIOKafkaConsumer(topic_spec("health").full_name(settings.topic_prefix),
                         bootstrap_servers=settings.bootstrap_servers, auto_offset_reset="earliest", group_id=None)
    await c.start()
    got, t0 = 0, time.perf_counter()
    try:
        while got < n:
            for records in (await c.getmany(timeout_ms=500, max_records=5000)).values():
                got += len(records)
    finally:
        await c.stop()
    elapsed = time.perf_counter() - t0
    return {"samples": got, "seconds": round(elapsed, 3), "samples_per_s": round(got / elapsed, 1)}


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=200_000)
    ap.add_argument("--resources", type=int, default=2_000)
    ap.add_argument("--out", default=str(RESULTS / "health_ingest.json"))
    args = ap.parse_args(argv)
    run_id = uuid.uuid4().hex[:8]
    settings = load_settings(topic_prefix=f"bench-{run_id}", app_id=f"bench-{run_id}",
                             clickhouse_database=f"bench_{run_id}", metrics_port=0)
    await ensure_topics(settings)
    print(f"publishing {args.samples} health samples for {args.resources} resources", file=sys.stderr)
    publish_rate = await publish(settings, args.samples, args.resources)
    results = {"tessera": await measure(settings, args.samples, "tessera"),
               "baseline": await measure(settings, args.samples, "baseline"),
               "ceiling_bare_faust_agent": await ceiling_faust(settings, args.samples),
               "ceiling_raw_aiokafka_getmany": await ceiling_aiokafka(settings, args.samples)}
    report = {
        "benchmark": "health-sample ingest into the live resource table (real Kafka, in-process Faust worker)",
        "samples": args.samples, "resources": args.resources, "publish_rate_per_s": round(publish_rate, 1),
        "results": results,
        "ratio_tessera_vs_baseline": round(results["tessera"]["samples_per_s"] / results["baseline"]["samples_per_s"], 2),
        "machine": machine(), "broker": "Apache Kafka 4.1.1 single node on the same machine",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    asyncio.run(main())
