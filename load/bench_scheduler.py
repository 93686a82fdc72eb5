"""Benchmark: requests through real Kafka to allocation events, open loop.

Starts `tessera scheduler` as its own process against the broker, registers resources,
then for each offered rate publishes workload requests on a fixed schedule (open loop:
each request has an intended send time; a late sender does not slow the schedule down)
and measures request-to-allocation latency from the *intended* send time to the moment
the placed/rejected event is read (read_committed), so queueing behind a slow producer
is counted (no coordinated omission). Requests carry a short expected duration so
capacity is released and the run is steady.

Run:  python -m load.bench_scheduler [--rates 250,500,1000,2000] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from load.machine import machine
from schemas import Capacity, ResourceDiscovered, ResourceSpec, WorkloadRequest, decode, encode
from schemas.topics import topic_spec
from streams.admin import ensure_topics
from tessera.config import load_settings
from tessera.produce import producer_for, send_events

RESULTS = Path(__file__).resolve().parent / "results"
GIB = 1 << 30
TIERS = ("platinum", "gold", "silver", "bronze")


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


async def run_rate(settings, rate: int, seconds: float, run: str) -> dict:
    topic = topic_spec("requests").full_name(settings.topic_prefix)
    allocs = topic_spec("allocations").full_name(settings.topic_prefix)
    consumer = AIOKafkaConsumer(allocs, bootstrap_servers=settings.bootstrap_servers, group_id=None,
                                auto_offset_reset="latest", isolation_level="read_committed")
    await consumer.start()
    await consumer.seek_to_end()
    producer = producer_for(settings, linger_ms=2)
    await producer.start()
    intended: dict[str, float] = {}
    latencies: list[float] = []
    n = int(rate * seconds)
    done = asyncio.Event()

    async def read() -> None:
        while len(latencies) < n:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.perf_counter()
            for recs in batch.values():
                for rec in recs:
                    e = decode(rec.value)
                    if e.event_type in ("allocation.placed", "allocation.rejected") and e.request_id in intended:
                        latencies.append(now - intended.pop(e.request_id))
            if done.is_set() and time.perf_counter() > deadline:
                break

    start = time.perf_counter() + 0.2
    deadline = start + seconds + 30
    reader = asyncio.create_task(read())
    for i in range(n):
        t = start + i / rate
        delay = t - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        rid = f"{run}-{rate}-{i}"
        intended[rid] = t
        req = WorkloadRequest(request_id=rid, tenant="bench", sla_tier=TIERS[i % 4], expected_duration_seconds=2.0,
                              per_replica=Capacity(vcpu=0.5 + (i % 4) * 0.5, memory_bytes=(1 + i % 4) * GIB))
        await producer.send(topic, encode(req), key=req.key())
    await producer.flush()
    sent_s = time.perf_counter() - start
    done.set()
    await reader
    await producer.stop()
    await consumer.stop()
    answered = len(latencies)
    return {"offered_per_s": rate, "sent": n, "send_seconds": round(sent_s, 2), "answered": answered,
            "achieved_per_s": round(answered / max(sent_s, 1e-9), 1),
            "p50_ms": round(_pct(latencies, 0.50) * 1000, 1), "p99_ms": round(_pct(latencies, 0.99) * 1000, 1),
            "p999_ms": round(_pct(latencies, 0.999) * 1000, 1), "max_ms": round(max(latencies or [0]) * 1000, 1)}


async def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="250,500,1000,2000")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--resources", type=int, default=400)
    ap.add_argument("--out", default=str(RESULTS / "scheduler_kafka.json"))
    args = ap.parse_args(argv)
    run = uuid.uuid4().hex[:8]
    settings = load_settings(topic_prefix=f"bsch-{run}", app_id=f"bsch-{run}", metrics_port=0)
    await ensure_topics(settings)
    p = producer_for(settings)
    await p.start()
    res = [ResourceDiscovered(resource_id=f"own/n{i}", spec=ResourceSpec(
        provider="own", region="dc1", capacity=Capacity(vcpu=64, memory_bytes=256 * GIB),
        price_per_hour=Decimal("0.49"))) for i in range(args.resources)]
    await send_events(p, settings, "resources", res)
    await p.stop()
    env = dict(os.environ, TESSERA_TOPIC_PREFIX=settings.topic_prefix, TESSERA_APP_ID=settings.app_id,
               TESSERA_METRICS_PORT="0", TESSERA_KAFKA_BOOTSTRAP=settings.bootstrap_servers)
    sched = subprocess.Popen([sys.executable, "-m", "tessera.cli", "scheduler", "--batch-wait-ms", "10"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await asyncio.sleep(8.0)  # process start, JIT cache load, recovery
        results = []
        for rate in [int(x) for x in args.rates.split(",")]:
            r = await run_rate(settings, rate, args.seconds, run)
            print(json.dumps(r), file=sys.stderr)
            results.append(r)
            await asyncio.sleep(3.0)
    finally:
        sched.terminate()
        sched.wait(timeout=30)
    report = {"benchmark": "requests -> allocation events through Kafka (open loop, latency from intended send time)",
              "scheduler": "tessera scheduler in its own process; 1 domain; transactions per batch",
              "resources": args.resources, "results": results, "machine": machine(),
              "broker": "Apache Kafka 4.1.1 single node on the same machine",
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    asyncio.run(main())
