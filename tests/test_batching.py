"""take_batch bounds a batch by size and by time, not by what one fetch brought."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer
from tests.conftest import run

from tessera.schemas.topics import topic_spec
from tessera.streams.admin import ensure_topics
from tessera.streams.batching import take_batch
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
