"""The live resource table on the real broker: rows from resource events, recovery from
the changelog after a restart, health verdicts with hysteresis and heartbeat expiry."""

from __future__ import annotations

import asyncio
import time

import pytest
from tests.conftest import run
from tests.samples import SPEC

import tessera.schemas as s
from tessera.agents.worker import running_worker
from tessera.resources.table import ResourceFilter
from tessera.streams.produce import send_events, started_producer

pytestmark = pytest.mark.kafka


def _resource(i: int, **spec_changes) -> s.ResourceDiscovered:
    spec = SPEC.model_copy(update={"instance_type": f"type-{i % 3}", **spec_changes})
    return s.ResourceDiscovered(resource_id=f"gcp/r{i}", spec=spec)


async def _until(pred, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


def test_table_fills_and_survives_a_restart_from_its_changelog(settings):
    async def scenario():
        async with started_producer(settings) as producer:
            async with running_worker(settings, ["resources"]) as app:
                await send_events(producer, settings, "resources", [_resource(i) for i in range(40)])
                await send_events(producer, settings, "resources",
                                  [s.ResourceRemoved(resource_id="gcp/r7", provider="gcp"),
                                   s.ResourceUpdated(resource_id="gcp/r8", spec=SPEC.model_copy(
                                       update={"region": "us-east1"}))])
                live = app.tessera_resources
                assert await _until(lambda: len(live) == 39 and live.get("gcp/r8").spec.region == "us-east1")
                before = {v.resource_id: v for v in live.available(ResourceFilter(healthy_only=False))}
            # A new worker in the same group: no new input, the rows come back from the changelog.
            async with running_worker(settings, ["resources"]) as app2:
                live2 = app2.tessera_resources
                await _until(lambda: len(live2) == 39)
                after = {v.resource_id: v for v in live2.available(ResourceFilter(healthy_only=False))}
        return before, after

    before, after = run(scenario(), timeout=180)
    assert len(before) == 39 and "gcp/r7" not in before
    assert after == before
    assert after["gcp/r8"].spec.region == "us-east1"

    # `tessera resources list` reads the same table from the changelog, without a worker.
    from tessera.app.cli.resources import read_table

    rows = read_table(settings)
    assert set(rows) == set(before) and rows["gcp/r8"]["spec"]["region"] == "us-east1"


def test_health_hysteresis_and_missing_heartbeats(settings, consume):
    settings = settings.replace(health_heartbeat_timeout_s=2.0, health_check_interval_s=0.3)

    def hb(rid, good=True, n=1):
        return [s.HealthSample(resource_id=rid, ready=good,
                               status=s.HealthStatus.healthy if good else s.HealthStatus.unhealthy)
                for _ in range(n)]

    async def scenario():
        async with started_producer(settings) as producer:
            async with running_worker(settings, ["resources"]) as app:
                await send_events(producer, settings, "resources", [_resource(i) for i in range(3)])
                flapping = [x for i in range(10) for x in hb("gcp/r1", good=i % 2 == 0)]
                # r0 heartbeats then goes silent; r1 flaps; r2 fails 3x then recovers 3x.
                await send_events(producer, settings, "health",
                                  hb("gcp/r0", n=3) + flapping + hb("gcp/r2", False, 3) + hb("gcp/r2", True, 3))
                live = app.tessera_resources

                def r0_expired():
                    v = live.get("gcp/r0")
                    return v is not None and not v.healthy

                # Keep r1 (still flapping) and r2 alive while r0 stays silent past its timeout,
                # then for several more timer ticks (no repeated verdicts).
                extra = 0
                deadline = time.monotonic() + 30
                while extra < 8 and time.monotonic() < deadline:
                    await send_events(producer, settings, "health",
                                      [hb("gcp/r1", i % 2 == 0)[0] for i in range(2)] + hb("gcp/r2"))
                    await asyncio.sleep(0.3)
                    extra += r0_expired()
                views = {r: live.get(r) for r in ("gcp/r0", "gcp/r1", "gcp/r2")}
                placeable = {v.resource_id for v in live.available()}
        return views, placeable

    views, placeable = run(scenario(), timeout=120)
    assert not views["gcp/r0"].healthy and views["gcp/r1"].healthy and views["gcp/r2"].healthy
    assert placeable == {"gcp/r1", "gcp/r2"}, "unhealthy resources are excluded from placement"

    topic = s.topic_spec("health").full_name(settings.topic_prefix)
    records = run(consume(settings, topic, 10_000, timeout=5))
    verdicts = [v for v in (s.decode(r.value) for r in records) if isinstance(v, s.HealthChanged)]
    by_resource = {}
    for v in verdicts:
        by_resource.setdefault(v.resource_id, []).append(v.status.value)
    assert by_resource == {"gcp/r0": ["unhealthy"], "gcp/r2": ["unhealthy", "healthy"]}
    assert "no heartbeat" in next(v.reason for v in verdicts if v.resource_id == "gcp/r0")


def test_allocated_capacity_follows_allocation_events_once(settings):
    per = s.Capacity(vcpu=1.5, memory_bytes=2 << 30)
    placed = s.AllocationPlaced(request_id="q1", allocation_id="alloc:q1", per_replica=per, placements=[
        s.Placement(resource_id="gcp/r0", provider="gcp", replicas=2, price_per_hour="0.1"),
        s.Placement(resource_id="gcp/r1", provider="gcp", replicas=1, price_per_hour="0.1")])
    released = s.AllocationReleased(request_id="q1", allocation_id="alloc:q1", per_replica=per,
                                    placements=placed.placements)

    async def scenario():
        async with started_producer(settings) as producer:
            async with running_worker(settings, ["resources"]) as app:
                live = app.tessera_resources
                await send_events(producer, settings, "resources", [_resource(0), _resource(1)])
                await send_events(producer, settings, "allocations", [placed, placed])  # a duplicate too
                await _until(lambda: live.get("gcp/r1") is not None and live.get("gcp/r1").allocated.vcpu > 0)
                await asyncio.sleep(1.0)
                during = (live.get("gcp/r0").allocated.vcpu, live.get("gcp/r0").free.vcpu,
                          live.get("gcp/r1").allocated.memory_bytes)
                await send_events(producer, settings, "allocations", [released])
                await _until(lambda: live.get("gcp/r0").allocated.vcpu == 0)
                after = live.get("gcp/r0").allocated.vcpu
        return during, after

    during, after = run(scenario(), timeout=120)
    # r0 has 2 vCPU and was given 3 here (no scheduler in this test): free is floored at 0.
    assert during == (3.0, 0.0, 2 << 30)
    assert after == 0.0


def test_placements_of_an_aborted_scheduler_transaction_are_not_allocated(settings):
    per = s.Capacity(vcpu=1.0, memory_bytes=1 << 30)

    def placed(q: str, rid: str) -> s.AllocationPlaced:
        return s.AllocationPlaced(request_id=q, allocation_id=f"alloc:{q}", per_replica=per, placements=[
            s.Placement(resource_id=rid, provider="gcp", replicas=1, price_per_hour="0.1")])

    topic = s.topic_spec("allocations").full_name(settings.topic_prefix)

    async def scenario():
        async with started_producer(settings) as producer, \
                started_producer(settings, transactional_id=f"{settings.app_id}-test-scheduler") as scheduler, \
                running_worker(settings, ["resources"]) as app:
            live = app.tessera_resources
            await send_events(producer, settings, "resources", [_resource(0), _resource(1)])
            await _until(lambda: live.get("gcp/r1") is not None)
            await scheduler.begin_transaction()          # a scheduler that dies mid-batch
            e = placed("lost", "gcp/r0")
            await scheduler.send(topic, s.encode(e), key=e.key())
            await scheduler.abort_transaction()
            async with scheduler.transaction():
                e = placed("kept", "gcp/r1")
                await scheduler.send(topic, s.encode(e), key=e.key())
            await _until(lambda: live.get("gcp/r1").allocated.vcpu > 0)
            await asyncio.sleep(1.0)   # room for the aborted one to (wrongly) arrive
            return live.get("gcp/r0").allocated.vcpu, live.get("gcp/r1").allocated.vcpu

    assert run(scenario(), timeout=120) == (0.0, 1.0)
