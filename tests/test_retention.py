"""State outlives retention: the scheduler and the billing agent restart from their
checkpoints after the broker deleted every record of their (non-compacted) input topics,
and hold the same state as before; a worker with no checkpoint shows what was lost."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from tests.conftest import run, run_for

import tessera.schemas as s
from tessera.agents.billing import BillingWorker
from tessera.agents.scheduler import SchedulerWorker
from tessera.pricing.agreements import parse_agreements
from tessera.streams.admin import ensure_topics
from tessera.streams.produce import producer_for, send_events

pytestmark = pytest.mark.kafka
GIB = 1 << 30
AGREEMENTS = parse_agreements([{"partner": "gcp", "currency": "USD", "rates": {"vcpu_hour": "0.05"}}])


def _resources(n: int) -> list[s.ResourceDiscovered]:
    out = []
    for i in range(n):
        provider = "own" if i % 2 == 0 else "gcp"
        spec = s.ResourceSpec(provider=provider, region="eu", capacity=s.Capacity(vcpu=8, memory_bytes=32 * GIB),
                              price_per_hour=Decimal("0.20") if provider == "own" else Decimal("0.40"))
        out.append(s.ResourceDiscovered(resource_id=f"{provider}/n{i}", spec=spec))
    return out


def _requests(lo: int, hi: int) -> list[s.WorkloadRequest]:
    # Long-running work: a week, so the allocations are live whatever the retention.
    return [s.WorkloadRequest(request_id=f"w{i}", tenant="t", sla_tier=("gold", "silver", "bronze")[i % 3],
                              per_replica=s.Capacity(vcpu=1 + i % 3, memory_bytes=2 * GIB), replicas=1 + i % 2,
                              expected_duration_seconds=7 * 86400)
            for i in range(lo, hi)]


def _scheduler_state(w: SchedulerWorker) -> tuple:
    core = w.core
    return ({a.allocation_id: sorted(a.placements) for a in core.allocations.values()},
            {r: tuple(round(u, 6) for u in st.used) for r, st in core.resources.items()},
            set(core.decided))


def _billing_state(w: BillingWorker) -> tuple:
    states = [sh.state for sh in w.shards.values()]
    return ({k: v for st in states for k, v in st.ledger.usage.items()}, w.running(),
            {k: v for st in states for k, v in st.revisions.items()})


async def _truncate(settings, names: list[str]) -> int:
    """Delete every record of these topics, as retention would after a long enough time."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    consumer = __import__("aiokafka").AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    await consumer.start()
    try:
        tps = [TopicPartition(s.topic_spec(n).full_name(settings.topic_prefix), p)
               for n in names for p in range(s.topic_spec(n).partitions)]
        ends = await consumer.end_offsets(tps)
        await admin.delete_records({tp: RecordsToDelete(before_offset=end) for tp, end in ends.items() if end})
        firsts = await consumer.beginning_offsets(tps)
        assert firsts == ends, "every record is gone"
        return sum(ends.values())
    finally:
        await consumer.stop()
        await admin.close()


def test_a_restart_after_retention_deleted_the_history_holds_the_same_state(settings, consume_events):
    st = settings.replace(checkpoint_interval_s=1.0)
    n = 60

    async def scenario():
        await ensure_topics(st)
        producer = producer_for(st)
        await producer.start()
        try:
            await send_events(producer, st, "resources", _resources(16))
            await send_events(producer, st, "requests", _requests(0, n))
            w1, b1 = SchedulerWorker(st, batch_max=16), BillingWorker(st, dict(AGREEMENTS))

            async def release_some():     # finished work: final usage in the ledger
                await asyncio.sleep(4)
                await send_events(producer, st, "requests",
                                  [s.ReleaseRequested(request_id=f"w{i}", reason="done") for i in range(0, n, 4)])

            await asyncio.gather(run_for(w1, 9), run_for(b1, 9), release_some())
            before = _scheduler_state(w1), _billing_state(b1)
            assert len(before[0][0]) >= n // 2 and w1.checkpoint_id > 0 and any(sh.checkpoint_id for sh in b1.shards.values())
            # Retention passes over every input and output that is not compacted: requests,
            # allocations, health, billing lines ... (resources and agreements are compacted).
            deleted = await _truncate(st, ["requests", "allocations", "health", "billing-lines", "alerts",
                                           "migrations", "usage", "billing-feed"])
            assert deleted >= 2 * n
            w2, b2 = SchedulerWorker(st, batch_max=16), BillingWorker(st, dict(AGREEMENTS))
            await asyncio.gather(w2.recover(), b2.recover())
            after = _scheduler_state(w2), _billing_state(b2)
            # Without a checkpoint (another domain: none saved), the live allocations are gone.
            blind = SchedulerWorker(st, domain="no-checkpoint")
            await blind.recover()
            # Go on after the restart: more requests are placed beside the recovered ones.
            await send_events(producer, st, "requests", _requests(n, n + 20))
            w3 = SchedulerWorker(st, batch_max=16)
            await run_for(w3, 6)
            return before, after, blind, w3
        finally:
            await producer.stop()

    before, after, blind, w3 = run(scenario(), timeout=240)
    assert after[0] == before[0], "the scheduler holds the same allocations, capacity in use and decisions"
    assert after[1] == before[1], "billing holds the same ledger, running allocations and revisions"
    assert before[1][0] and before[1][1], "some usage was billed, some is running"
    assert len(blind.core.resources) == 16 and not blind.core.allocations    # compacted resources stay
    # After the restart: the new work placed, nothing placed twice, nothing over-committed.
    assert len(w3.core.allocations) > len(before[0][0])
    assert set(before[0][0]) <= set(w3.core.allocations)
    for st_ in w3.core.resources.values():
        assert all(u <= c + 1e-9 for u, c in zip(st_.used, st_.capacity))
