"""The migration agent on the real broker, as a separate process: a node fails, the agent
evacuates the live key-value service from it, is killed with SIGKILL mid-migration,
restarts and finishes: every step published once, no acked write lost, and the
scheduler's and billing's views of the moved allocation right."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from decimal import Decimal

import pytest
from tests.conftest import run
from tests.test_migration_executor import Workload

import tessera.schemas as s
from tessera.agents.scheduler import SchedulerWorker
from tessera.billing.state import BillingState
from tessera.migration.kvstore import read_log
from tessera.pricing.agreements import parse_agreements
from tessera.streams.admin import ensure_topics
from tessera.streams.produce import producer_for, send_events

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
GIB = 1 << 30


def _agent(settings, workdir, control) -> subprocess.Popen:
    env = dict(os.environ, TESSERA_KAFKA_BOOTSTRAP=settings.kafka_bootstrap, TESSERA_TOPIC_PREFIX=settings.topic_prefix,
               TESSERA_APP_ID=settings.app_id, TESSERA_DATA_DIR=settings.data_dir, TESSERA_METRICS_PORT="0")
    return subprocess.Popen([sys.executable, "-m", "tessera.app.cli.main", "migrate", "run", "--executor", "process",
                             "--workdir", str(workdir), "--proxy-control", control, "--consolidate-every", "0",
                             "--step-pause", "1.5"], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)


def test_kill_9_mid_migration_resumes_without_running_a_step_twice(settings, consume_events, tmp_path):
    workload = Workload(tmp_path)

    async def scenario():
        await ensure_topics(settings)
        producer = producer_for(settings)
        await producer.start()
        try:
            specs = {"own/n1": ("own", "0.10"), "gcp/n2": ("gcp", "0.40")}
            await send_events(producer, settings, "resources", [
                s.ResourceDiscovered(resource_id=rid, spec=s.ResourceSpec(
                    provider=prov, region="eu", capacity=s.Capacity(vcpu=8, memory_bytes=32 * GIB),
                    price_per_hour=Decimal(price), pricing_model=s.PricingModel.own if prov == "own" else
                    s.PricingModel.on_demand)) for rid, (prov, price) in specs.items()])
            # The scheduler places the workload on own capacity (own nodes fill first).
            await send_events(producer, settings, "requests", [s.WorkloadRequest(
                request_id="kv", tenant="t", sla_tier="gold", per_replica=s.Capacity(vcpu=2, memory_bytes=4 * GIB))])
            stop = asyncio.Event()
            sched = SchedulerWorker(settings)
            task = asyncio.create_task(sched.run(stop))
            for _ in range(100):
                await asyncio.sleep(0.2)
                if "alloc:kv" in sched.core.allocations:
                    break
            source = sched.core.allocations["alloc:kv"].placements[0][0]
            assert source == "own/n1"
            # The workload itself: a key-value service on the source, clients through the proxy.
            executor = await workload.start("alloc:kv", source)
            writer = asyncio.create_task(workload.write())
            agent = _agent(settings, tmp_path, executor.proxy_control)
            await asyncio.sleep(3)
            await send_events(producer, settings, "health", [s.HealthChanged(
                resource_id=source, status=s.HealthStatus.unhealthy, reason="no heartbeat for 60s")])
            # Kill -9 once the sync step is committed, before the cut-over.
            steps = []
            for _ in range(120):
                steps = await consume_events(settings, "migrations", 10, timeout=0.5, committed_only=True)
                if any(getattr(e, "step", "") == "sync" for e in steps):
                    break
            agent.send_signal(signal.SIGKILL)
            agent.wait(10)
            killed_after = [getattr(e, "step", e.event_type) for e in steps]
            agent = _agent(settings, tmp_path, executor.proxy_control)
            for _ in range(120):
                events = await consume_events(settings, "migrations", 10, timeout=0.5, committed_only=True)
                if any(isinstance(e, s.MigrationDone) for e in events):
                    break
            await asyncio.sleep(2)    # the scheduler tails the migration
            agent.send_signal(signal.SIGTERM)
            agent.wait(20)
            workload.stop.set()
            await writer
            reg = executor.registry("alloc:kv")
            log = await read_log(reg["addr"])
            stop.set()
            await task
            return sched, events, killed_after, reg, log
        finally:
            await producer.stop()

    try:
        sched, events, killed_after, reg, log = run(scenario(), timeout=240)
    finally:
        workload.close()
    assert killed_after[-1] == "sync" and "cut_over" not in killed_after
    steps = Counter((e.migration_id, getattr(e, "step", e.event_type)) for e in events)
    assert set(v for v in steps.values()) == {1}, f"a step published twice: {steps}"
    assert [k[1] for k in steps] == ["migration.planned", "reserve_target", "sync", "cut_over", "release_source",
                                     "migration.done"]
    assert all(e.reason == "evacuation" for e in events if isinstance(e, s.MigrationPlanned))
    # The workload moved, with every acknowledged write.
    assert reg["resource"] == "gcp/n2"
    held = {k: v for _, k, v in log}
    assert workload.acked and all(held.get(k) == v for k, v in workload.acked.items())
    assert workload.failed == 0
    # The live scheduler holds the allocation on the target only.
    a = sched.core.allocations["alloc:kv"]
    assert a.placements == [("gcp/n2", 1)]
    assert sched.core.resources["own/n1"].used[0] == 0 and sched.core.resources["gcp/n2"].used[0] == 2
    # A scheduler recovering from the topics agrees.
    again = SchedulerWorker(settings)
    run(again.recover(), timeout=60)
    assert again.core.allocations["alloc:kv"].placements == [("gcp/n2", 1)]
    # Billing follows the same events: the partner is billed from the reservation on.
    billing = BillingState(parse_agreements([{"partner": "gcp", "currency": "USD", "rates": {"vcpu_hour": "0.04"}}]))
    placed = run(consume_events(settings, "allocations", 10, timeout=3, committed_only=True))
    for e in sorted(placed + events, key=lambda e: e.event_time):
        billing.apply(e)
    segments = billing.lifecycle.running["alloc:kv"]
    assert [(seg.resource_id, seg.partner) for seg in segments] == [("gcp/n2", "gcp")]
