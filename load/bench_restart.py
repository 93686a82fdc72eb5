"""Benchmark: restart time against history length, full replay against checkpoint + tail.

History is allocation events on the local broker: placements and their releases (finished
work) plus a fixed set of live allocations, grown level by level. At each level, side by
side in this process:

* full replay (the baseline, how the workers started before checkpoints): a scheduler and a
  billing agent with no checkpoint read every record of their input topics;
* checkpoint: the same workers load their newest checkpoint (saved at this level) and read
  only what came after it, a fixed 1,000 events here (a minute of a busy system).

The figure is the wall time of ``recover()`` (consumer start-ups and broker fetches
included), best of ``--rounds``. Flat is the aim: it must not grow with history.
Run:  python -m load.bench_restart [--levels 5000,20000,80000] [--rounds 3]
(a broker must be running: ``tessera infra up``)   -> load/results/restart.json
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from load.machine import machine, save_result

from tessera.agents.billing import BillingWorker
from tessera.agents.scheduler import SchedulerWorker
from tessera.config import load_settings
from tessera.pricing.agreements import parse_agreements
from tessera.schemas import (
    AllocationPlaced,
    AllocationReleased,
    Capacity,
    Placement,
    ResourceDiscovered,
    ResourceSpec,
    topic_spec,
)
from tessera.streams.admin import ensure_topics
from tessera.streams.billing_feed import feed_records
from tessera.streams.checkpoint import checkpoint_events
from tessera.streams.produce import event_record, producer_for, send_batched

GIB = 1 << 30
LIVE = 500
AFTER_CHECKPOINT = 1000
AGREEMENTS = parse_agreements([{"partner": "gcp", "currency": "USD", "rates": {"vcpu_hour": "0.034"}}])
T0 = datetime(2026, 11, 2, tzinfo=timezone.utc)


def _resources() -> list[ResourceDiscovered]:
    return [ResourceDiscovered(resource_id=f"{p}/n{i}", spec=ResourceSpec(
        provider=p, region="eu", capacity=Capacity(vcpu=10_000, memory_bytes=40_000 * GIB),
        price_per_hour=Decimal("0.40"))) for i in range(32) for p in (("own", "gcp")[i % 2],)]


def _placed(i: int) -> AllocationPlaced:
    p = ("own", "gcp")[i % 2]
    return AllocationPlaced(event_time=T0 + timedelta(seconds=i), request_id=f"h{i}", allocation_id=f"a{i}",
                            per_replica=Capacity(vcpu=1, memory_bytes=GIB),
                            placements=[Placement(resource_id=f"{p}/n{i % 32}", provider=p, replicas=1,
                                                  price_per_hour=Decimal("0.034"))])


def _released(i: int) -> AllocationReleased:
    placed = _placed(i)
    return AllocationReleased(event_time=T0 + timedelta(seconds=i + 30), request_id=f"h{i}", allocation_id=f"a{i}",
                              placements=placed.placements)


class History:
    """Allocation events appended to the allocations topic and the billing feed, as the
    scheduler writes them: pairs of placed + released, counted."""

    def __init__(self, settings, producer) -> None:  # noqa: ANN001
        self.settings, self.producer, self.next, self.events = settings, producer, 0, 0
        self.topic = topic_spec("allocations").full_name(settings.topic_prefix)

    async def finished(self, events: int) -> None:
        out = []
        for _ in range(events // 2):
            i = self.next = self.next + 1
            out += [_placed(i), _released(i)]
        for j in range(0, len(out), 5000):
            await self._send(out[j:j + 5000])
        self.events += len(out)

    async def live(self, n: int) -> None:
        out = []
        for _ in range(n):
            self.next += 1
            out.append(_placed(self.next))
        await self._send(out)
        self.events += len(out)

    async def _send(self, events) -> None:  # noqa: ANN001
        prefix = self.settings.topic_prefix
        records = [r for e in events for r in (event_record(self.topic, e), *feed_records(prefix, e))]
        for f in await send_batched(self.producer, records):
            await f


async def _timed(make, rounds: int) -> tuple[float, object]:  # noqa: ANN001
    best, worker = float("inf"), None
    for _ in range(rounds):
        worker = make()
        t0 = time.perf_counter()
        await worker.recover()
        best = min(best, time.perf_counter() - t0)
    return best, worker


async def bench(levels: list[int], rounds: int) -> dict:
    run = uuid.uuid4().hex[:8]
    settings = load_settings(topic_prefix=f"brst-{run}", app_id=f"brst-{run}", metrics_port=0)
    await ensure_topics(settings)
    producer = producer_for(settings, linger_ms=5)
    await producer.start()
    ck_topic = topic_spec("checkpoints").full_name(settings.topic_prefix)
    rows = []
    try:
        for f in await send_batched(producer, [event_record(topic_spec("resources").full_name(settings.topic_prefix),
                                                            e) for e in _resources()]):
            await f
        history = History(settings, producer)
        await history.live(LIVE)
        for level in levels:
            await history.finished(level - history.events)
            events = history.events
            # Baseline: no checkpoint for these owners, every record read.
            full_s, full_w = await _timed(lambda: SchedulerWorker(settings, domain=f"full-{level}"), rounds)
            bill_full_s, bill_w = await _timed(lambda: _billing(settings, f"billing-full-{level}"), rounds)
            # Save checkpoints of that state, then a minute's worth of events after them.
            sched_ck = SchedulerWorker(settings, domain=f"ck-{level}")
            await sched_ck.recover()
            saved = sched_ck.checkpoint()
            bill_ck = _billing(settings, f"billing-ck-{level}")
            for shard in await bill_ck.recover_shards(list(range(topic_spec("billing-feed").partitions))):
                saved += checkpoint_events(bill_ck.owner_of(shard.partition), 1, shard.state, shard.next)
            for f in await send_batched(producer, [event_record(ck_topic, e) for e in saved]):
                await f
            await history.finished(AFTER_CHECKPOINT)
            ck_s, ck_w = await _timed(lambda: SchedulerWorker(settings, domain=f"ck-{level}"), rounds)
            bill_ck_s, _ = await _timed(lambda: _billing(settings, f"billing-ck-{level}"), rounds)
            assert set(ck_w.core.allocations) == set(full_w.core.allocations), "both hold the live allocations"
            assert len(ck_w.core.allocations) == LIVE
            row = {"history_events": events, "live_allocations": LIVE,
                   "events_after_checkpoint": AFTER_CHECKPOINT,
                   "checkpoint_bytes": {"scheduler": sum(len(e.payload_b64) for e in saved if
                                                         e.owner == sched_ck.owner) * 3 // 4,
                                        "billing": sum(len(e.payload_b64) for e in saved if
                                                       e.owner.startswith(bill_ck.owner + "/")) * 3 // 4},
                   "scheduler_s": {"full replay": round(full_s, 3), "checkpoint": round(ck_s, 3)},
                   "billing_s": {"full replay": round(bill_full_s, 3), "checkpoint": round(bill_ck_s, 3)},
                   "speedup": {"scheduler": round(full_s / ck_s, 2), "billing": round(bill_full_s / bill_ck_s, 2)}}
            rows.append(row)
            print(row, flush=True)
    finally:
        await producer.stop()
    return {"benchmark": f"recover() wall time, best of {rounds}; {LIVE} live allocations, history of finished "
                         f"allocations (placed + released) grown level by level, {AFTER_CHECKPOINT} events after "
                         "the checkpoint", "machine": machine(), "levels": rows}


def _billing(settings, owner: str) -> BillingWorker:  # noqa: ANN001
    worker = BillingWorker(settings, dict(AGREEMENTS))
    worker.owner = owner
    return worker


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="5000,20000,80000", help="history lengths in events, ascending")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    out = asyncio.run(bench([int(x) for x in args.levels.split(",")], args.rounds))
    save_result("restart", out, ("levels",))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
