"""A Faust agent on the real broker: valid events reach ClickHouse, invalid ones the
dead-letter topic (with reason and origin) while valid ones keep flowing; restarts and
redeliveries neither lose nor double count."""

from __future__ import annotations

import asyncio
import base64
import time
from decimal import Decimal

import orjson
import pytest
from tests.conftest import run
from tests.samples import CAP

import tessera.schemas as s
from tessera.agents.worker import running_worker
from tessera.streams.produce import publish, send_events, started_producer

pytestmark = pytest.mark.kafka


def _requests(prefix: str, n: int, start: int = 0) -> list[s.WorkloadRequest]:
    return [s.WorkloadRequest(event_id=f"{prefix}-{i}", request_id=f"{prefix}-{i}", tenant="acme", per_replica=CAP,
                              max_price_per_hour=Decimal("0.25"))
            for i in range(start, start + n)]


async def _wait_for(fn, want, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got >= want or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.2)


async def _event_ids_written(settings, want: int) -> list[str]:
    """Run the event-log worker until ``want`` events are written, and a little longer
    (room for any that should not be there to arrive); the ids written, sorted."""
    async with running_worker(settings, ["event-log"]) as app:
        store = app.tessera_store
        await _wait_for(lambda: _count(store, "events"), want)
        await asyncio.sleep(2.0)
        rows = store.query(f"SELECT event_id FROM {store.database}.events FINAL")
    return sorted(r["event_id"] for r in rows)


def _count(store, table, final=True, where="1"):
    f = " FINAL" if final else ""
    return int(store.query(f"SELECT count() AS n FROM {store.database}.{table}{f} WHERE {where}")[0]["n"])


def test_valid_events_flow_and_invalid_ones_are_dead_lettered(settings, consume):
    requests_topic = s.topic_spec("requests").full_name(settings.topic_prefix)
    dlq_topic = s.topic_spec("dead-letters").full_name(settings.topic_prefix)
    wrong_schema = orjson.dumps({"schema_version": 1, "event_type": "workload.request", "event_id": "bad-1",
                                 "event_time": "2026-01-01T00:00:00Z", "request_id": "r", "tenant": "t",
                                 "per_replica": {"vcpu": "lots"}})
    wrong_topic = s.encode(s.ResourceRemoved(resource_id="x", provider="own"))
    broken = {b"\x00\x01 not json at all": "not valid JSON", wrong_schema: "per_replica.vcpu",
              wrong_topic: "does not belong on this topic"}

    async def scenario():
        async with running_worker(settings, ["event-log"]) as app:
            store = app.tessera_store
            async with started_producer(settings) as producer:
                await send_events(producer, settings, "requests", _requests("a", 20))
                origins = {}
                for raw in broken:
                    md = await producer.send_and_wait(requests_topic, raw, key=b"k")
                    origins[raw] = (md.partition, md.offset)
                await send_events(producer, settings, "requests", _requests("b", 20))
            n = await _wait_for(lambda: _count(store, "events"), 40)
            d = await _wait_for(lambda: _count(store, "dead_letters"), 3)
        return store, origins, n, d

    store, origins, n, d = run(scenario())
    assert n == 40, "every valid event, before and after the bad ones, reached ClickHouse"
    assert d == 3

    records = run(consume(settings, dlq_topic, 3))
    assert len(records) == 3
    by_original = {}
    for rec in records:
        dl = s.decode(rec.value)
        assert isinstance(dl, s.DeadLetter) and rec.key == requests_topic.encode()
        by_original[base64.b64decode(dl.original_b64)] = dl
    assert set(by_original) == set(broken)
    for raw, words in broken.items():
        dl = by_original[raw]
        assert words in dl.reason
        assert (dl.source_topic, dl.source_partition, dl.source_offset) == (requests_topic, *origins[raw])
        assert dl.consumer == "event-log"
    assert by_original[wrong_schema].field == "per_replica.vcpu"


def test_restart_and_redelivery_neither_lose_nor_double_count(settings):
    n_events = 300

    async def scenario():
        async with started_producer(settings) as producer:
            async with running_worker(settings, ["event-log"]) as app:
                store = app.tessera_store
                await send_events(producer, settings, "requests", _requests("r", n_events))
                # Stop the worker part-way: some events written, the rest not yet consumed/acked.
                await _wait_for(lambda: _count(store, "events", final=False), 1)
            first_run = _count(store, "events")
            # The same events delivered again (a producer retry or a replayed topic).
            await send_events(producer, settings, "requests", _requests("r", 50))
            async with running_worker(settings, ["event-log"]):
                final = await _wait_for(lambda: _count(store, "events"), n_events)
                await asyncio.sleep(1.0)  # let any straggling redelivery land
                final = _count(store, "events")
        distinct = int(store.query(f"SELECT uniqExact(event_id) AS n FROM {store.database}.events")[0]["n"])
        return first_run, final, distinct

    first_run, final, distinct = run(scenario(), timeout=180)
    assert 0 < first_run <= n_events
    assert distinct == n_events, "no event lost across the restart"
    assert final == n_events, "queries with FINAL count every event exactly once"


def test_clickhouse_outage_loses_nothing_and_counts_nothing_twice(settings, sql_server):
    """The sink writes through clickhouse-connect to `tessera sql serve`; the server goes
    away mid-stream and comes back on the same port: every event lands exactly once."""
    from tessera.app.sqlserver import SqlServer
    from tessera.storage.store import ServerStore

    async def scenario():
        server = SqlServer(sql_server.engine.store, port=0, allow_writes=True).start()
        url_settings = settings.replace(clickhouse_url=server.url)
        port = server.port
        async with running_worker(url_settings, ["event-log"]) as app, started_producer(url_settings) as producer:
            store = app.tessera_store
            assert isinstance(store, ServerStore)
            try:
                await send_events(producer, url_settings, "requests", _requests("out-a", 50))
                assert await _wait_for(lambda: _count(store, "events"), 50) == 50
                server.stop()                                            # ClickHouse is gone
                await send_events(producer, url_settings, "requests", _requests("out-b", 80))
                await asyncio.sleep(3)                                   # the agent retries meanwhile
                server = SqlServer(sql_server.engine.store, port=port, allow_writes=True).start()   # back, same address
                got = await _wait_for(lambda: _count(store, "events"), 130, timeout=90)
                # Redeliver a slice too (a producer retry): still once per event id in views.
                await send_events(producer, url_settings, "requests", _requests("out-b", 20))
                await asyncio.sleep(2)
                distinct = int(store.query(f"SELECT uniqExact(event_id) AS n FROM {store.database}.events")[0]["n"])
                final = _count(store, "events")
            finally:
                server.stop()
        return got, distinct, final

    got, distinct, final = run(scenario(), timeout=240)
    assert got == 130 and distinct == 130 and final == 130


def test_the_sink_restarts_after_an_unexpected_failure_and_loses_nothing(settings, monkeypatch):
    from tessera.agents.event_log import EventLogSink

    failures = []
    write = EventLogSink._write

    async def fail_once(self, records):
        if not failures:
            failures.append(len(records))
            raise RuntimeError("a bug in the sink")
        await write(self, records)

    monkeypatch.setattr(EventLogSink, "_write", fail_once)

    async def scenario():
        async with running_worker(settings, ["event-log"]) as app:
            await publish(settings, "requests", _requests("f", 40))
            return await _wait_for(lambda: _count(app.tessera_store, "events"), 40)

    assert run(scenario(), timeout=120) == 40, "the failed batch was read again after the restart"
    assert failures and failures[0] > 0


def test_events_of_an_aborted_transaction_never_reach_clickhouse(settings):
    """The scheduler publishes in transactions; one that aborts (a fenced or crashed
    scheduler) decided nothing, so the sink reads committed records only."""
    topic = s.topic_spec("requests").full_name(settings.topic_prefix)
    aborted, kept = _requests("aborted", 5), _requests("kept", 5)

    async def scenario():
        from tessera.streams.admin import ensure_topics

        await ensure_topics(settings)
        async with started_producer(settings, transactional_id=f"{settings.app_id}-test-aborted") as p:
            await p.begin_transaction()
            for e in aborted:
                await p.send(topic, s.encode(e), key=e.key())
            await p.abort_transaction()
            async with p.transaction():
                for e in kept:
                    await p.send(topic, s.encode(e), key=e.key())
        return await _event_ids_written(settings, 5)

    assert run(scenario(), timeout=120) == sorted(e.event_id for e in kept)
