"""take_batch bounds a batch by size and by time, not by what one fetch brought."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from tests.conftest import run

from tessera.schemas.topics import topic_spec
from tessera.streams.admin import ensure_topics
from tessera.streams.batching import in_time_order, take_batch
from tessera.streams.produce import producer_for


def test_a_batch_gathers_records_arriving_over_its_window_up_to_its_size(settings):
    topic = topic_spec("usage").full_name(settings.topic_prefix)

    async def go():
        await ensure_topics(settings)
        producer = producer_for(settings, linger_ms=0)
        await producer.start()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.bootstrap_servers, group_id=None,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            idle = await take_batch(consumer, 100, within_s=1.0, idle_s=0.3)   # returns, empty

            async def trickle():   # 10 records, one every 50 ms: many fetches
                for i in range(10):
                    await producer.send_and_wait(topic, b"%d" % i, key=b"k")
                    await asyncio.sleep(0.05)

            sender = asyncio.create_task(trickle())
            spread = await take_batch(consumer, 100, within_s=2.0, idle_s=5.0)
            await sender
            for i in range(10, 20):
                await producer.send_and_wait(topic, b"%d" % i, key=b"k")
            capped = await take_batch(consumer, 4, within_s=2.0, idle_s=5.0)
            rest = await take_batch(consumer, 100, within_s=0.5, idle_s=5.0)
        finally:
            await consumer.stop()
            await producer.stop()
        return idle, spread, capped, rest

    idle, spread, capped, rest = run(go())
    assert idle == []
    assert [r.value for r in spread] == [b"%d" % i for i in range(10)], "one batch, not one per fetch"
    assert [r.value for r in capped] == [b"%d" % i for i in range(10, 14)]
    assert [r.value for r in rest] == [b"%d" % i for i in range(14, 20)]


def test_records_interleave_by_time_but_each_partition_keeps_its_offset_order():
    from hypothesis import given
    from hypothesis import strategies as st

    @dataclass(frozen=True)
    class Rec:
        topic: str
        partition: int
        offset: int
        timestamp: int

    @given(st.lists(st.tuples(st.sampled_from(["feed", "usage"]), st.integers(0, 2), st.integers(0, 50)),
                    max_size=60))
    def check(raw):
        offsets: dict = {}
        records = []
        for topic, part, ts in raw:     # timestamps need not rise within a partition
            offsets[(topic, part)] = offsets.get((topic, part), -1) + 1
            records.append(Rec(topic, part, offsets[(topic, part)], ts))
        out = in_time_order(records)
        assert sorted(out, key=id) == sorted(records, key=id)
        for key in offsets:
            assert [r.offset for r in out if (r.topic, r.partition) == key] == list(range(offsets[key] + 1))

    check()
