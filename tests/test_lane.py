"""The batch lane (streams.lane) on the real broker: it reads exactly the partitions its
app owns of the followed topic, hands them on at a rebalance with its offsets committed,
and a successor resumes after them (nothing lost, nothing handled twice)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import TopicPartition
from tests.conftest import run

from tessera.streams.admin import ensure_topics
from tessera.streams.lane import PartitionLane
from tessera.streams.produce import producer_for

pytestmark = pytest.mark.kafka


class FakeApp:
    """The two signals a Faust app sends at a rebalance, sent by the test."""

    class _Signal:
        def __init__(self) -> None:
            self.receivers = []

        def connect(self, fn):
            self.receivers.append(fn)

        async def send(self, tps):
            for fn in self.receivers:
                await fn(self, tps)

    def __init__(self) -> None:
        self.on_partitions_assigned, self.on_partitions_revoked = self._Signal(), self._Signal()
        self.in_recovery = False


def test_the_lane_follows_the_apps_partitions_and_hands_them_on(settings):
    source = settings.topic("health.v1")
    follow = settings.topic("resources.v1")
    group = f"lane-test-{uuid.uuid4().hex[:6]}"

    async def until(pred, timeout=30.0):
        deadline = time.monotonic() + timeout
        while not pred() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return pred()

    async def scenario():
        await ensure_topics(settings)
        producer = producer_for(settings)
        await producer.start()
        try:
            # 10 records on each of the 6 partitions, values "p:i".
            await asyncio.gather(*[await producer.send(source, f"{p}:{i}".encode(), partition=p)
                                   for p in range(6) for i in range(10)])
            seen: list[tuple[str, list[str]]] = []

            def lane_for(name):
                async def handle(records):
                    seen.append((name, [r.value.decode() for r in records]))
                return PartitionLane(settings, source=source, follow=follow, group_id=group, handle=handle)

            app_a = FakeApp()
            a = lane_for("a")
            a.attach(app_a)
            task_a = asyncio.create_task(a.run())
            await app_a.on_partitions_assigned.send({TopicPartition(follow, 0), TopicPartition(follow, 2),
                                                     TopicPartition("elsewhere", 1)})
            assert await until(lambda: a.handled == 20)
            first = {v for _, vs in seen for v in vs}
            # A rebalance: A gives up 0 and 2 and takes 1.
            await app_a.on_partitions_revoked.send({TopicPartition(follow, 0), TopicPartition(follow, 2)})
            await app_a.on_partitions_assigned.send({TopicPartition(follow, 1)})
            assert await until(lambda: a.handled == 30)
            # More input on every partition, then A stops (its last revocation commits).
            await asyncio.gather(*[await producer.send(source, f"{p}:{i}".encode(), partition=p)
                                   for p in range(6) for i in range(10, 15)])
            assert await until(lambda: a.handled == 35)
            await app_a.on_partitions_revoked.send({TopicPartition(follow, 1)})
            task_a.cancel()
            await asyncio.gather(task_a, return_exceptions=True)
            # B owns everything: it resumes after what A committed, partitions 0 and 2 included.
            app_b = FakeApp()
            b = lane_for("b")
            b.attach(app_b)
            task_b = asyncio.create_task(b.run())
            await app_b.on_partitions_assigned.send({TopicPartition(follow, p) for p in range(6)})
            assert await until(lambda: b.handled == 90 - 35)
            await asyncio.sleep(1)
            task_b.cancel()
            await asyncio.gather(task_b, return_exceptions=True)
        finally:
            await producer.stop()
        return first, seen

    first, seen = run(scenario(), timeout=120)
    assert first == {f"{p}:{i}" for p in (0, 2) for i in range(10)}           # only what A owned
    handled = [v for _, vs in seen for v in vs]
    assert sorted(handled) == sorted(f"{p}:{i}" for p in range(6) for i in range(15))   # each once
    by_a = {v for name, vs in seen if name == "a" for v in vs}
    assert by_a == {f"{p}:{i}" for p in (0, 2) for i in range(10)} | {f"1:{i}" for i in range(15)}
