"""Benchmark: publishing a batch of decisions, per-record ``send`` against ``send_batched``.

The scheduler publishes each batch's decisions in one Kafka transaction. Both ways run
side by side in this process against the local broker, on the same records (allocation
events of ~450 bytes keyed by request id, 300 per transaction, as the scheduler sends at
a few thousand requests/s), alternating rounds; the figure is the client's CPU per record
(``time.process_time``: the broker's work is not in it), best round of each, with the
median beside it. Both land every key on the same partition (``tests/test_produce.py``).
Run:  python -m load.bench_produce [--records 30000] [--rounds 5]   (a broker must be
running: ``tessera infra up``)   -> load/results/produce.json
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from load.machine import machine, save_result

from tessera.config import load_settings
from tessera.schemas.topics import topic_spec
from tessera.streams.admin import ensure_topics
from tessera.streams.produce import producer_for, send_batched

PER_TRANSACTION = 300


async def bench(records: int, rounds: int) -> dict:
    run = uuid.uuid4().hex[:8]
    settings = load_settings(topic_prefix=f"bprod-{run}", app_id=f"bprod-{run}", metrics_port=0)
    await ensure_topics(settings)
    topic = topic_spec("allocations").full_name(settings.topic_prefix)
    producer = producer_for(settings, transactional_id=f"bprod-{run}", linger_ms=2)
    await producer.start()
    value = b'{"event_type":"allocation.placed",' + b'"pad":"' + b"x" * 400 + b'"}'
    msgs = [(topic, f"req-{run}-{i:08d}".encode(), value) for i in range(records)]

    async def per_record(chunk):
        async with producer.transaction():
            for t, k, v in chunk:
                await producer.send(t, v, key=k)

    async def batched(chunk):
        async with producer.transaction():
            await send_batched(producer, chunk)

    ways = {"send per record (aiokafka)": per_record, "send_batched (Tessera)": batched}
    cpu: dict[str, list[float]] = {name: [] for name in ways}
    try:
        await per_record(msgs[:PER_TRANSACTION])     # warm: metadata, connections, the txn coordinator
        await batched(msgs[:PER_TRANSACTION])
        for _ in range(rounds):
            for name, way in ways.items():
                c0 = time.process_time()
                for j in range(0, records, PER_TRANSACTION):
                    await way(msgs[j:j + PER_TRANSACTION])
                cpu[name].append((time.process_time() - c0) / records * 1e6)
    finally:
        await producer.stop()
    per, bat = (min(cpu[n]) for n in ways)
    return {"benchmark": f"client CPU per record, {PER_TRANSACTION} records of {len(value)} bytes per transaction, "
                         f"{records} records per round, best of {rounds} alternating rounds",
            "machine": machine(),
            "us_per_record_best": {n: round(min(v), 2) for n, v in cpu.items()},
            "us_per_record_median": {n: round(statistics.median(v), 2) for n, v in cpu.items()},
            "us_per_record_runs": {n: [round(x, 2) for x in v] for n, v in cpu.items()},
            "speedup_best": round(per / bat, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=30_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    out = asyncio.run(bench(args.records, args.rounds))
    save_result("produce", out, ("us_per_record_best", "us_per_record_median", "speedup_best"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
