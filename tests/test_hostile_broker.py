"""The hostile corpus on every input topic of a running pipeline (real broker, every
worker): no worker stops, every bad input is dead-lettered with a reason and its exact
origin, and valid requests sent around the bad ones are all answered."""

from __future__ import annotations

import asyncio
import time

import pytest
from tests.conftest import run

import tessera.schemas as s
from tessera.app.pipeline import DEMO_AGREEMENTS, pipeline, register
from tessera.pricing.agreements import parse_agreements
from tessera.streams.produce import send_events, started_producer

from .hostile import corpus

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(460)]   # past the scenario's 400 s

#: Topics a producer outside Tessera can reach (with security on, ACLs narrow this).
INPUT_TOPICS = ("requests", "resources", "health", "usage", "external-events", "agreements")
#: What a Kafka producer can send at all (max.request.size): larger inputs never arrive.
SENDABLE = 1_000_000 + 4096


def _resource(i: int) -> s.ResourceDiscovered:
    return s.ResourceDiscovered(resource_id=f"own/h{i}", spec=s.ResourceSpec(
        provider="own", region="dc", capacity=s.Capacity(vcpu=64, memory_bytes=256 << 30), price_per_hour="0.2"))


def _request(i: int) -> s.WorkloadRequest:
    return s.WorkloadRequest(request_id=f"ok-{i}", tenant="t", per_replica=s.Capacity(vcpu=1, memory_bytes=1 << 30),
                             expected_duration_seconds=5)


def test_the_hostile_corpus_on_every_input_topic_stops_no_worker(settings, consume_events):
    st = settings.replace(forecast_interval_s=2, forecast_season=10, forecast_horizon=3, forecast_grace_s=1.0)
    hostile = [(name, value) for name, value in corpus() if len(value) < SENDABLE]

    async def scenario():
        async with pipeline(st, parse_agreements(DEMO_AGREEMENTS), batch_wait_ms=30) as p:
            await register(st, [_resource(i) for i in range(3)])
            sent: dict[tuple[str, int, int], str] = {}
            async with started_producer(st, max_request_size=SENDABLE + 65536) as producer:
                await send_events(producer, st, "requests", [_request(i) for i in range(10)])
                for topic in INPUT_TOPICS:
                    full = s.topic_spec(topic).full_name(st.topic_prefix)
                    for name, value in hostile:
                        md = await producer.send_and_wait(full, value, key=b"hostile")
                        sent[(full, md.partition, md.offset)] = name
                await send_events(producer, st, "requests", [_request(i) for i in range(10, 20)])
            deadline = time.monotonic() + 120
            answered: set[str] = set()
            while time.monotonic() < deadline and len(answered) < 20:
                events = await consume_events(st, "allocations", 10_000, timeout=3, committed_only=True)
                answered = {e.request_id for e in events
                            if isinstance(e, (s.AllocationPlaced, s.AllocationRejected))}
            dead = []
            while time.monotonic() < deadline:
                dead = await consume_events(st, "dead-letters", 100_000, timeout=3)
                if {(d.source_topic, d.source_partition, d.source_offset) for d in dead} >= set(sent):
                    break
                await asyncio.sleep(1)
            # Still working after all of it: a valid resource reaches the live table and
            # ClickHouse, and the scheduler and billing workers are still running.
            late = _resource(99)
            await register(st, [late])
            live = p.app.tessera_resources
            table_ok = False
            while time.monotonic() < deadline and not table_ok:
                table_ok = live.get("own/h99") is not None
                await asyncio.sleep(0.5)
            db = p.store.database
            sink_ok = False
            while time.monotonic() < deadline and not sink_ok:
                rows = p.store.query(f"SELECT count() AS n FROM {db}.events WHERE event_id = '{late.event_id}'")
                sink_ok = int(rows[0]["n"]) == 1
                await asyncio.sleep(0.5)
            running = {t.get_name(): not t.done() for t in p.tasks}
        return sent, answered, dead, table_ok, sink_ok, running

    sent, answered, dead, table_ok, sink_ok, running = run(scenario(), timeout=400)
    assert answered == {f"ok-{i}" for i in range(20)}, "every valid request around the bad ones was answered"
    by_origin: dict[tuple, list[s.DeadLetter]] = {}
    for d in dead:
        by_origin.setdefault((d.source_topic, d.source_partition, d.source_offset), []).append(d)
    missing = [f"{sent[o]} on {o[0]}" for o in sent if o not in by_origin]
    assert not missing, f"{len(missing)} bad inputs were not dead-lettered: {missing[:10]}"
    assert all(d.reason for ds in by_origin.values() for d in ds)
    assert {d.consumer for ds in by_origin.values() for d in ds} >= {"event-log", "scheduler", "resources"}
    assert table_ok and sink_ok, "the resources agent and the sink still work"
    assert running == {"scheduler": True, "billing": True}, running
