"""The producer client against a running scheduler: submit, read outcomes (committed
only), release work with no expected duration, withdraw a request that still waits."""

from __future__ import annotations

import asyncio

import pytest
from tests.conftest import run

import tessera.schemas as s
from tessera.agents.scheduler import SchedulerWorker
from tessera.client import TesseraClient
from tessera.streams.admin import ensure_topics
from tessera.streams.produce import publish

pytestmark = pytest.mark.kafka


def test_submit_outcome_release_and_withdraw(settings):
    node = s.ResourceDiscovered(resource_id="own/c1", spec=s.ResourceSpec(
        provider="own", region="dc", capacity=s.Capacity(vcpu=8, memory_bytes=32 << 30), price_per_hour="0.2"))

    async def scenario():
        await ensure_topics(settings)
        await publish(settings, "resources", [node])
        stop = asyncio.Event()
        scheduler = asyncio.create_task(SchedulerWorker(settings, batch_wait_ms=20).run(stop))
        try:
            await asyncio.sleep(2)        # the scheduler tails resources before requests arrive
            async with TesseraClient(settings) as tessera:
                events = tessera.outcomes()
                first = asyncio.create_task(events.__anext__())
                job = await tessera.submit(TesseraClient.request("job-1", tenant="acme", vcpu=6, memory_gib=8))
                placed = await tessera.outcome(job, timeout=30)
                big = await tessera.submit(TesseraClient.request("job-2", tenant="acme", vcpu=6, memory_gib=8))
                impossible = await tessera.submit(TesseraClient.request("job-3", tenant="acme", vcpu=1,
                                                                        tags=["nowhere"]))
                rejected = await tessera.outcome(impossible, timeout=30)
                await tessera.release(big)                          # still waiting: withdrawn
                withdrawn = await tessera.outcome(big, timeout=30)
                seen = [await asyncio.wait_for(first, 10)]
                await tessera.release(job)                          # running: released
                while not any(isinstance(e, s.AllocationReleased) for e in seen):
                    seen.append(await asyncio.wait_for(events.__anext__(), 30))
                await events.aclose()
            async with TesseraClient(settings) as later:            # an outcome from before it started
                again = await later.outcome("job-1", timeout=30)
        finally:
            stop.set()
            await asyncio.wait_for(scheduler, 30)
        return placed, rejected, withdrawn, seen, again

    placed, rejected, withdrawn, seen, again = run(scenario(), timeout=180)
    assert isinstance(placed, s.AllocationPlaced) and placed.placements[0].resource_id == "own/c1"
    assert isinstance(rejected, s.AllocationRejected) and rejected.code is s.RejectReason.no_matching_resource
    assert isinstance(withdrawn, s.AllocationRejected) and withdrawn.code is s.RejectReason.withdrawn
    released = [e for e in seen if isinstance(e, s.AllocationReleased)]
    assert released and released[0].allocation_id == "alloc:job-1"
    assert again.event_id == placed.event_id
