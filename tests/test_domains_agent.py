"""Two placement domains on the real broker: each scheduler places only the requests routed
to it, only on its own resources; every request is answered once; nothing over-committed."""

from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal

import pytest
from tests.conftest import run

import tessera.schemas as s
from tessera.agents.scheduler import SchedulerWorker
from tessera.scheduler.domains import parse_domains
from tessera.streams.admin import ensure_topics
from tessera.streams.produce import publish
from tessera.streams.reader import read_to_end

pytestmark = pytest.mark.kafka
GIB = 1 << 30
DOMAINS = parse_domains({"eu": {"regions": ["europe-west4"]}, "us": {"regions": ["us-east1"]}})


def _resources() -> list[s.ResourceDiscovered]:
    return [s.ResourceDiscovered(resource_id=f"{region}/{p}/n{i}", spec=s.ResourceSpec(
        provider=p, region=region, capacity=s.Capacity(vcpu=8, memory_bytes=32 * GIB),
        price_per_hour=Decimal("0.30")))
        for region in ("europe-west4", "us-east1") for i in range(4) for p in (("own", "gcp")[i % 2],)]


def _requests() -> list[s.WorkloadRequest]:
    out = []
    for i in range(60):
        regions = [] if i % 3 == 0 else ["us-east1"] if i % 3 == 1 else ["europe-west4"]
        out.append(s.WorkloadRequest(request_id=f"d{i}", tenant="t", allowed_regions=regions,
                                     per_replica=s.Capacity(vcpu=1, memory_bytes=GIB)))
    out.append(s.WorkloadRequest(request_id="d-asia", tenant="t", allowed_regions=["asia-east1"],
                                 per_replica=s.Capacity(vcpu=1, memory_bytes=GIB)))
    return out


def test_two_domains_place_each_request_once_on_their_own_resources(settings):
    region_of = {r.resource_id: r.spec.region for r in _resources()}

    async def scenario():
        await ensure_topics(settings)
        await publish(settings, "resources", _resources())
        stop = asyncio.Event()
        workers = [SchedulerWorker(settings, domain=d, batch_max=8, domains=DOMAINS) for d in ("eu", "us")]
        tasks = [asyncio.create_task(w.run(stop)) for w in workers]
        await asyncio.sleep(3)
        await publish(settings, "requests", _requests())
        topic = s.topic_spec("allocations").full_name(settings.topic_prefix)
        events: list[s.Event] = []
        for _ in range(60):
            events = [s.decode(r.value) for r in await read_to_end(settings, topic, 6, committed_only=True)]
            if len({e.request_id for e in events if e.event_type in ("allocation.placed", "allocation.rejected")}) >= 61:
                break
            await asyncio.sleep(1)
        stop.set()
        await asyncio.gather(*tasks)
        return events, workers

    events, workers = run(scenario(), timeout=180)
    finals = Counter(e.request_id for e in events if e.event_type in ("allocation.placed", "allocation.rejected"))
    assert len(finals) == 61 and set(finals.values()) == {1}, "every request answered exactly once"
    rejected = [e for e in events if isinstance(e, s.AllocationRejected)]
    assert [(e.request_id, e.code) for e in rejected] == [("d-asia", s.RejectReason.no_domain)]
    by_domain = {w.domain: set(w.core.allocations) for w in workers}
    used: Counter = Counter()
    for e in events:
        if isinstance(e, s.AllocationPlaced):
            home = DOMAINS.route(e.request_id, next(r.allowed_regions for r in _requests()
                                                     if r.request_id == e.request_id), [], "default")
            assert e.allocation_id in by_domain[home]                     # placed by its home domain
            assert {region_of[p.resource_id] for p in e.placements} == {"europe-west4" if home == "eu" else "us-east1"}
            for p in e.placements:
                used[p.resource_id] += p.replicas
    assert by_domain["eu"] and by_domain["us"]
    assert max(used.values()) <= 8, "nothing over-committed"
    assert {r for w in workers for r in w.core.resources} == set(region_of)
    assert not set(workers[0].core.resources) & set(workers[1].core.resources), "each resource has one owner"
