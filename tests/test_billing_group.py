"""Billing scaled by partner: two placement domains and two billing agents in one consumer
group on the real broker. Every request is answered once, nothing is over-committed, the
agents share the feed's shards without overlap, and when one agent stops the other takes
its shards over; the bills then hold exactly what one agent reading everything would bill,
none counted twice."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from collections import Counter
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from tests.conftest import run, service_process, until, vcpu_hours_billed, vcpu_hours_placed

import tessera.schemas as s
from tessera.agents.billing import BillingWorker
from tessera.agents.scheduler import SchedulerWorker
from tessera.billing.state import BillingState
from tessera.infra.kafka_broker import free_port
from tessera.pricing.agreements import parse_agreements
from tessera.scheduler.domains import parse_domains
from tessera.streams.admin import ensure_topics
from tessera.streams.billing_feed import shard_of
from tessera.streams.produce import publish
from tessera.streams.reader import read_to_end

pytestmark = pytest.mark.kafka
GIB = 1 << 30
DOMAINS = parse_domains({"eu": {"regions": ["europe-west4"]}, "us": {"regions": ["us-east1"]}})
PROVIDERS = ("own", "gcp", "do", "aws")
#: The agreements as `tessera bill` and `tessera billing --agreements` read them.
AGREEMENT_DOCS = [{"partner": p, "currency": "USD", "rates": {"vcpu_hour": rate}}
                  for p, rate in (("gcp", "0.05"), ("do", "0.03"), ("aws", "0.07"))]
AGREEMENTS = parse_agreements(AGREEMENT_DOCS)
N = 60


def _resources() -> list[s.ResourceDiscovered]:
    return [s.ResourceDiscovered(resource_id=f"{region}/{p}/n{i}", spec=s.ResourceSpec(
        provider=p, region=region, capacity=s.Capacity(vcpu=8, memory_bytes=32 * GIB),
        price_per_hour=Decimal("0.30") if p == "own" else Decimal("0.40")))
        for region in ("europe-west4", "us-east1") for i in range(8) for p in (PROVIDERS[i % 4],)]


def _requests() -> list[s.WorkloadRequest]:
    return [s.WorkloadRequest(request_id=f"g{i}", tenant=("acme", "globex")[i % 2],
                              allowed_regions=[] if i % 3 == 0 else ["us-east1"] if i % 3 == 1 else ["europe-west4"],
                              per_replica=s.Capacity(vcpu=1, memory_bytes=GIB), replicas=1 + i % 2)
            for i in range(N)]


async def _allocations(settings) -> list[s.Event]:
    topic = s.topic_spec("allocations").full_name(settings.topic_prefix)
    return [s.decode(r.value) for r in await read_to_end(settings, topic, 6, committed_only=True)]


@pytest.mark.timeout(480)     # past the scenario's own 420 s, so that one fails first and says where
def test_two_domains_and_two_billing_agents_bill_every_partner_exactly_once(settings):
    # The partners fall in different shards, so both agents have work.
    assert len({shard_of(p) for p in PROVIDERS}) == len(PROVIDERS)
    st = settings.replace(checkpoint_interval_s=1.0)

    async def scenario():
        await ensure_topics(st)
        await publish(st, "resources", _resources())
        stop, stop_b = asyncio.Event(), asyncio.Event()
        schedulers = [SchedulerWorker(st, domain=d, batch_max=8, domains=DOMAINS) for d in ("eu", "us")]
        bills = [BillingWorker(st, dict(AGREEMENTS)) for _ in range(2)]
        tasks = [asyncio.create_task(w.run(stop)) for w in schedulers]
        tasks.append(asyncio.create_task(bills[0].run(stop)))
        b_task = asyncio.create_task(bills[1].run(stop_b))

        async def shared() -> bool:      # the group split the shards between the two
            return all(b.shards for b in bills) and sum(len(b.shards) for b in bills) == 6

        split = await until(shared, 60)
        held = [set(b.shards) for b in bills]
        await publish(st, "requests", _requests())

        async def decided() -> bool:
            return len({e.request_id for e in await _allocations(st)
                        if e.event_type in ("allocation.placed", "allocation.rejected")}) >= N

        assert await until(decided, 90)
        await asyncio.sleep(3)                # the agents bill what runs; checkpoints are taken
        # One agent stops: the other must take its shards over and bill the releases.
        stop_b.set()
        await asyncio.wait_for(b_task, 60)
        await publish(st, "requests", [s.ReleaseRequested(request_id=f"g{i}", reason="done") for i in range(N)])

        async def released() -> bool:
            return sum(isinstance(e, s.AllocationReleased) for e in await _allocations(st)) >= N

        assert await until(released, 90)

        async def taken_over() -> bool:
            placed = {e.allocation_id for e in await _allocations(st) if isinstance(e, s.AllocationPlaced)}
            return len(bills[0].shards) == 6 and not (placed & bills[0].running())

        took_over = await until(taken_over, 180)
        if not took_over:     # say what is missing
            placed = {e.allocation_id for e in await _allocations(st) if isinstance(e, s.AllocationPlaced)}
            took_over_detail = (sorted(bills[0].shards), sorted(placed & bills[0].running())[:10], bills[0].attempts)
            print("take-over incomplete: shards held, still running, attempts:", took_over_detail)
            feed = s.topic_spec("billing-feed").full_name(st.topic_prefix)
            for r in await read_to_end(st, feed, 6, committed_only=True):
                e = s.decode(r.value)
                if getattr(e, "allocation_id", None) in placed & bills[0].running():
                    print("  feed", r.partition, r.offset, e.event_type, e.allocation_id)
            for p, sh in sorted(bills[0].shards.items()):
                print("  shard", p, "next", sh.next.get((feed, p)), "running", sorted(placed & set(sh.state.lifecycle.running)))
        stop.set()
        await asyncio.gather(*tasks)
        return await _allocations(st), bills, held, split, took_over

    events, bills, held, split, took_over = run(scenario(), timeout=420)
    finals = Counter(e.request_id for e in events if e.event_type in ("allocation.placed", "allocation.rejected"))
    assert len(finals) == N and set(finals.values()) == {1}, "every request answered exactly once"
    assert not [e for e in events if isinstance(e, s.AllocationRejected)], "room for all"
    used: Counter = Counter()
    for e in events:
        if isinstance(e, s.AllocationPlaced):
            for p in e.placements:
                used[p.resource_id] += e.per_replica.vcpu * p.replicas
    assert used and max(used.values()) <= 8, "nothing over-committed (nothing is released before all are placed)"
    assert split and not (held[0] & held[1]) and held[0] | held[1] == set(range(6)), "disjoint shards, all held"
    assert took_over, "the remaining agent took every shard over and billed every release"
    # The truth: one billing state reading every allocation event.
    truth = BillingState(dict(AGREEMENTS))
    truth.replay(e for e in events if isinstance(e, (s.AllocationPlaced, s.AllocationReleased)))
    got = bills[0].view()
    assert {k: v for k, v in truth.ledger.usage.items()} == dict(got.usage), "exactly the usage, none twice"
    partners = {p for p, _, _ in truth.ledger.usage}
    assert len(partners) >= 2, partners
    shards = {shard_of(p) for p in partners | {"own"}}
    assert shards & held[0] and shards & held[1], "both agents billed partners before one stopped"
    period = datetime.now(timezone.utc).strftime("%Y-%m")
    for partner in partners:
        assert got.invoice(partner, period).lines == truth.view().invoice(partner, period).lines
    own = {t: n for sh in bills[0].shards.values() for t, n in sh.state.own_costs(period).items()}
    assert own == truth.own_costs(period) and own, "own capacity's chargeback, once"


@pytest.mark.slow
@pytest.mark.timeout(660)     # past the scenario's own 600 s
def test_an_agent_dropped_from_the_group_while_stalled_bills_nothing_twice_when_it_wakes(settings, tmp_path):
    # Agent A, a `tessera billing` process, is frozen (SIGSTOP: a long pause, a VM
    # suspended) for longer than the group's 10 s session timeout. The group drops it and B
    # takes every shard over, starting producers with the shards' transactional ids, which
    # fences A's. B bills on. When A wakes, any shard it still holds is stale: what it
    # publishes for it is refused (fenced), it keeps nothing, and the shards it gets again
    # are recovered from B's newer checkpoints. The partners' bills on the topic (the latest
    # revision of each line, as a consumer keeps them) end exactly as the allocations say.
    st = settings.replace(checkpoint_interval_s=1.0)
    agreements = tmp_path / "agreements.json"
    agreements.write_text(json.dumps(AGREEMENT_DOCS))
    half = N // 2

    async def scenario():
        await ensure_topics(st)
        await publish(st, "resources", _resources())
        stop, b_stop = asyncio.Event(), asyncio.Event()
        schedulers = [SchedulerWorker(st, domain=d, batch_max=8, domains=DOMAINS) for d in ("eu", "us")]
        tasks = [asyncio.create_task(w.run(stop)) for w in schedulers]
        port = free_port()
        a = service_process(st, "billing", "--agreements", str(agreements), metrics_port=port)
        b = BillingWorker(st, dict(AGREEMENTS))
        b_task = asyncio.create_task(b.run(b_stop))
        try:
            async def split() -> bool:        # two members: what B does not hold, A does
                return 0 < len(b.shards) < 6

            async def a_ready() -> bool:      # A holds its shards, their producers started
                return await asyncio.to_thread(_ready, port)

            assert await until(split, 90) and await until(a_ready, 60), "both agents hold shards"
            requests = _requests()
            await publish(st, "requests", requests[:half])
            assert await until(lambda: _decided(st, half), 90)
            await asyncio.sleep(3)                             # billed, checkpoints taken
            os.kill(a.pid, signal.SIGSTOP)
            frozen_at = time.monotonic()

            async def b_has_all() -> bool:
                return len(b.shards) == 6

            assert await until(b_has_all, 60), "the group dropped A; B holds every shard"
            await publish(st, "requests", requests[half:])     # while A is frozen
            assert await until(lambda: _decided(st, N), 90)
            await publish(st, "requests", [s.ReleaseRequested(request_id=f"g{i}", reason="done")
                                           for i in range(half)])
            await asyncio.sleep(max(0.0, 15 - (time.monotonic() - frozen_at)))
            os.kill(a.pid, signal.SIGCONT)
            assert await until(split, 90), "A woke, rejoined and got shards again"
            await publish(st, "requests", [s.ReleaseRequested(request_id=f"g{i}", reason="done")
                                           for i in range(half, N)])

            async def released() -> bool:
                return sum(isinstance(e, s.AllocationReleased) for e in await _allocations(st)) >= N

            assert await until(released, 90)
            events = await _allocations(st)
            expected = {p: vcpu_hours_placed(events, p) for p in ("gcp", "do", "aws")}

            async def billed_exactly() -> bool:
                lines = await _lines(st)
                return all(abs(vcpu_hours_billed(lines, p) - v) <= Decimal("1e-8") for p, v in expected.items())

            billed = await until(billed_exactly, 120)
            got = {p: vcpu_hours_billed(await _lines(st), p) for p in expected}
            return events, expected, got, billed, a.poll(), Path(a.log_path).read_text()
        finally:
            if a.poll() is None:
                os.kill(a.pid, signal.SIGCONT)
                a.terminate()
                a.wait(30)
            b_stop.set()
            stop.set()
            await asyncio.gather(b_task, *tasks)

    events, expected, got, billed, exit_code, a_log = run(scenario(), timeout=600)
    assert exit_code is None, "A rode the fencing out without exiting"
    finals = Counter(e.request_id for e in events if e.event_type in ("allocation.placed", "allocation.rejected"))
    assert len(finals) == N and set(finals.values()) == {1}, "every request answered exactly once"
    assert sum(1 for v in expected.values() if v) >= 2, f"partners with work: {expected}"
    assert billed, f"the partners' vCPU-hours on the topic {got} are exactly the allocations' {expected}"
    # Which way A learnt it had been dropped depends on where its loop was frozen: holding
    # shards, its next publish (a batch or its hand-over checkpoints) was refused (fenced);
    # between a revocation and an assignment, it held nothing to publish. Either way the
    # bills above are exact; the log says which happened.
    print("A fenced on waking:", "ProducerFenced" in a_log)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return r.status == 200
    except OSError:          # not serving yet, or 503 (HTTPError is an OSError)
        return False


async def _decided(settings, n: int) -> bool:
    return len({e.request_id for e in await _allocations(settings)
                if e.event_type in ("allocation.placed", "allocation.rejected")}) >= n


async def _lines(settings) -> list[s.BillingLine]:
    spec = s.topic_spec("billing-lines")
    return [s.decode(r.value) for r in await read_to_end(settings, spec.full_name(settings.topic_prefix),
                                                         spec.partitions, committed_only=True)]
