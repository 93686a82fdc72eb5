"""Batched sends land where per-record sends do, in order, and commit with a transaction."""

from __future__ import annotations

from collections import defaultdict

from tests.conftest import run

from tessera.schemas.topics import topic_spec
from tessera.streams.admin import ensure_topics
from tessera.streams.produce import producer_for, send_batched


def test_batched_records_land_on_the_partitions_send_picks_in_order(settings, consume):
    requests = topic_spec("requests").full_name(settings.topic_prefix)
    allocations = topic_spec("allocations").full_name(settings.topic_prefix)
    # More than one batch's worth per partition (16 KiB each), and several keys per partition.
    records = [(requests if i % 3 else allocations, f"key-{i % 97}".encode(), b"%06d" % i + b"x" * 400)
               for i in range(3000)]

    async def go():
        await ensure_topics(settings)
        p = producer_for(settings)
        await p.start()
        try:
            for f in await send_batched(p, records):
                await f
            reference = {}
            for topic in (requests, allocations):
                for key in {k for t, k, _ in records if t == topic}:
                    reference[(topic, key)] = (await (await p.send(topic, b"ref", key=key))).partition
        finally:
            await p.stop()
        expected = {t: sum(t == topic for topic, _, _ in records) + sum(t == topic for topic, _ in reference)
                    for t in (requests, allocations)}
        return reference, [r for t, n in expected.items() for r in await consume(settings, t, n)]

    reference, got = run(go())
    sent = [r for r in got if r.value != b"ref"]
    assert sorted(r.value for r in sent) == sorted(v for _, _, v in records)     # each exactly once
    by_partition = defaultdict(list)
    for r in sent:
        assert r.partition == reference[(r.topic, r.key)], r.key      # where send() puts that key
        by_partition[(r.topic, r.partition)].append(r.value)
    for values in by_partition.values():                                 # and in the order given
        assert values == sorted(values)


def test_batched_records_are_invisible_to_read_committed_until_the_transaction_commits(settings, consume):
    topic = topic_spec("allocations").full_name(settings.topic_prefix)

    async def go():
        await ensure_topics(settings)
        p = producer_for(settings, transactional_id=f"{settings.app_id}-test-batched")
        await p.start()
        try:
            await p.begin_transaction()
            await send_batched(p, [(topic, b"a", b"aborted-1"), (topic, b"b", b"aborted-2")])
            await p.abort_transaction()
            async with p.transaction():
                await send_batched(p, [(topic, b"a", b"kept-1"), (topic, b"b", b"kept-2")])
        finally:
            await p.stop()
        return await consume(settings, topic, 2, committed_only=True)

    assert sorted(r.value for r in run(go())) == [b"kept-1", b"kept-2"]
