"""The scheduler worker on the real broker: placements under a restart in the middle of
a stream with redelivered requests; no double placement, no lost request, no over-commit."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from decimal import Decimal

import pytest
from tests.conftest import run

import tessera.schemas as s
from tessera.agents.scheduler import SchedulerWorker
from tessera.streams.admin import ensure_topics
from tessera.streams.produce import producer_for, send_events, send_raw

pytestmark = pytest.mark.kafka
GIB = 1 << 30


def _resources(n=6):
    out = []
    for i in range(n):
        provider = "own" if i % 2 == 0 else "gcp"
        spec = s.ResourceSpec(provider=provider, region="eu", capacity=s.Capacity(vcpu=16, memory_bytes=64 * GIB),
                              price_per_hour=Decimal("0.49") if provider == "own" else Decimal("0.80"))
        out.append(s.ResourceDiscovered(resource_id=f"{provider}/n{i}", spec=spec))
    return out


def _requests(lo, hi):
    tiers = ["platinum", "gold", "silver", "bronze"]
    return [s.WorkloadRequest(request_id=f"r{i}", tenant="t", sla_tier=tiers[i % 4],
                              per_replica=s.Capacity(vcpu=1 + i % 3, memory_bytes=2 * GIB), replicas=1 + i % 2)
            for i in range(lo, hi)]


def test_restart_mid_stream_no_double_placement_no_loss(settings, consume):
    n = 120

    async def scenario():
        await ensure_topics(settings)
        producer = producer_for(settings)
        await producer.start()
        try:
            await send_events(producer, settings, "resources", _resources(30))
            await send_events(producer, settings, "requests", _requests(0, n // 2))
            await send_raw(producer, settings, "requests", [b"not json"], key=b"bad")

            stop = asyncio.Event()
            w1 = SchedulerWorker(settings, batch_max=16)
            task = asyncio.create_task(w1.run(stop))
            await asyncio.sleep(4.0)
            task.cancel()  # a crash: no clean shutdown
            try:
                await task
            except asyncio.CancelledError:
                pass
            # The rest arrive, plus every first-half request again (a producer replay).
            await send_events(producer, settings, "requests", _requests(n // 2, n) + _requests(0, n // 2))
            stop2 = asyncio.Event()
            w2 = SchedulerWorker(settings, batch_max=16)
            task2 = asyncio.create_task(w2.run(stop2))
            for _ in range(100):
                await asyncio.sleep(0.3)
                if len(w2.core.decided) + len(w2.core.queue) >= n and not len(w2.core.queue):
                    break
            stop2.set()
            await task2
            return w1, w2
        finally:
            await producer.stop()

    w1, w2 = run(scenario(), timeout=180)
    allocations = s.topic_spec("allocations").full_name(settings.topic_prefix)
    # Consumers of allocation events read committed transactions only (the aborted batch
    # of the crashed worker is invisible to them).
    records = run(consume(settings, allocations, 10_000, timeout=8, committed_only=True))
    events = [s.decode(r.value) for r in records]
    final = Counter(e.request_id for e in events if isinstance(e, (s.AllocationPlaced, s.AllocationRejected)))
    assert set(final) == {f"r{i}" for i in range(n)}, "every request has an outcome"
    assert max(final.values()) == 1, "no request decided twice (redelivery, restart)"
    used = defaultdict(float)
    for e in events:
        if isinstance(e, s.AllocationPlaced):
            for p in e.placements:
                used[p.resource_id] += p.replicas * e.per_replica.vcpu
    assert all(v <= 16 + 1e-9 for v in used.values()), f"over-committed: {dict(used)}"
    assert len(w1.core.decided) > 0, "the first worker decided some before the crash"

    dead = run(consume(settings, s.topic_spec("dead-letters").full_name(settings.topic_prefix), 1, timeout=5,
                       committed_only=True))
    assert dead and s.decode(dead[0].value).consumer == "scheduler"


def test_release_timers_come_back_after_a_restart(settings, consume):
    """An allocation with an expected duration is released on time even when the scheduler
    that placed it died: the deadline travels in the placed event (expires_at)."""

    async def scenario():
        await ensure_topics(settings)
        producer = producer_for(settings)
        await producer.start()
        try:
            await send_events(producer, settings, "resources", _resources(3))
            req = s.WorkloadRequest(request_id="timed-1", tenant="t", per_replica=s.Capacity(vcpu=1),
                                    expected_duration_seconds=4.0)
            await send_events(producer, settings, "requests", [req])
            stop = asyncio.Event()
            task = asyncio.create_task(SchedulerWorker(settings).run(stop))
            await asyncio.sleep(2.5)
            task.cancel()                     # dies before the allocation expires
            try:
                await task
            except asyncio.CancelledError:
                pass
            stop2 = asyncio.Event()
            w2 = SchedulerWorker(settings)
            task2 = asyncio.create_task(w2.run(stop2))
            await asyncio.sleep(5.0)
            stop2.set()
            await task2
        finally:
            await producer.stop()
        records = await consume(settings, s.topic_spec("allocations").full_name(settings.topic_prefix), 100,
                                timeout=5, committed_only=True)
        return [s.decode(r.value) for r in records]

    events = run(scenario(), timeout=120)
    placed = [e for e in events if isinstance(e, s.AllocationPlaced)]
    released = [e for e in events if isinstance(e, s.AllocationReleased)]
    assert len(placed) == 1 and placed[0].expires_at is not None
    assert [e.allocation_id for e in released] == [placed[0].allocation_id]
    assert released[0].event_time >= placed[0].expires_at


def test_a_forecast_beyond_capacity_in_service_publishes_a_provisioning_hint(settings, consume_events):
    from datetime import timedelta

    from tests.samples import T0

    forecast = s.Forecast(series="pool=default/tier=platinum/dim=vcpu", interval_seconds=300, model="test",
                          horizons=[s.HorizonForecast(step=k + 1, interval_start=T0 + timedelta(minutes=5 * k),
                                                      quantiles={"0.05": 10.0, "0.5": 20.0, "0.95": 30.0})
                                    for k in range(3)])

    async def scenario():
        await ensure_topics(settings)
        producer = producer_for(settings)
        await producer.start()
        try:
            await send_events(producer, settings, "resources", _resources(6))
            await send_events(producer, settings, "requests", _requests(0, 1))     # one resource in service
            stop = asyncio.Event()
            worker = SchedulerWorker(settings, batch_max=16)
            task = asyncio.create_task(worker.run(stop))
            for _ in range(50):
                await asyncio.sleep(0.2)
                if worker.core.decided:
                    break
            await send_events(producer, settings, "forecasts", [forecast])
            await asyncio.sleep(3)
            stop.set()
            await task
        finally:
            await producer.stop()
        return await consume_events(settings, "provisioning", 10, timeout=5, committed_only=True)

    (hint,) = run(scenario(), timeout=120)
    assert hint.needed_by == T0 and hint.shortfall_vcpu > 50     # ~90 vCPU over 3 steps vs ~15 free
    assert hint.suggested and hint.suggested[0].resource_id.startswith("own/")   # 0.49 beats 0.80 per 16 vCPU


def test_the_tuner_publishes_its_choices_and_rewards_and_keeps_them_across_a_restart(settings, consume):
    """Learning-driven tuning in the live worker: each window's choice and the reward of the
    one before go to the tuning topic (and from there to ClickHouse's v_tuning); a restarted
    worker learns again from them."""
    topic = s.topic_spec("tuning").full_name(settings.topic_prefix)

    async def scenario():
        await ensure_topics(settings)
        producer = producer_for(settings)
        await producer.start()
        try:
            await send_events(producer, settings, "resources", _resources(4))
            await send_events(producer, settings, "requests", _requests(0, 8))
        finally:
            await producer.stop()
        stop = asyncio.Event()
        worker = SchedulerWorker(settings, tuning_interval_s=1.0)
        task = asyncio.create_task(worker.run(stop))
        await asyncio.sleep(4.0)
        stop.set()
        await task
        decisions = [s.decode(r.value) for r in await consume(settings, topic, 100, timeout=3, committed_only=True)]
        again = SchedulerWorker(settings, tuning_interval_s=1.0)
        await again.recover()
        return decisions, again.core.tuner

    decisions, tuner = run(scenario(), timeout=120)
    assert len(decisions) >= 2 and all(isinstance(d, s.TuningDecision) for d in decisions)
    assert decisions[0].reward is None
    assert all(d.reward is not None and d.reward <= 0 and d.previous_arm for d in decisions[1:])
    learned = sum(sum(p._counts.values()) for p in tuner.policies.values())
    assert learned == len(decisions) - 1
