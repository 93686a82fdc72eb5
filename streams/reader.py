"""Read a topic from its beginning up to its current end (state rebuilds, table reads)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

from tessera.config import Settings

from .security import aiokafka_security_kwargs

log = logging.getLogger(__name__)


def groupless_consumer(settings: Settings, *topics: str, committed_only: bool = True, **kw: Any) -> AIOKafkaConsumer:
    """A consumer outside any consumer group (the caller assigns partitions, or names
    ``topics``), committing nothing, with the configured security. ``committed_only``
    reads with read_committed: a transaction that aborted stays invisible."""
    return AIOKafkaConsumer(*topics, bootstrap_servers=settings.bootstrap_servers, group_id=None,
                            enable_auto_commit=False,
                            isolation_level="read_committed" if committed_only else "read_uncommitted",
                            **aiokafka_security_kwargs(settings), **kw)


async def seek_on(consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition],
                  positions: dict[tuple[str, int], int]) -> None:
    """Point an assigned tail at ``positions`` (next offset per (topic, partition), where a
    recovery read stopped: nothing in between is missed), and the partitions not in it at
    their end."""
    for tp in tps:
        if (tp.topic, tp.partition) in positions:
            consumer.seek(tp, positions[(tp.topic, tp.partition)])
    await consumer.seek_to_end(*(tp for tp in tps if (tp.topic, tp.partition) not in positions))


async def read_to_end(settings: Settings, topic: str, partitions: int | Sequence[int], *,
                      committed_only: bool = False, timeout: float | None = None) -> list[Any]:
    """Every record of ``topic`` up to the end offsets seen at the start: of all its
    partitions (``partitions``, a count), or of the ones listed.

    Outside any consumer group. ``committed_only`` reads with read_committed (aborted
    transactions stay invisible). A missing topic reads as empty. With a ``timeout`` the
    read stops there, possibly short of the end; without one it reads to the end.
    """
    records, _ = await read_span(settings, topic, partitions, committed_only=committed_only, timeout=timeout)
    return records


async def read_span(settings: Settings, topic: str, partitions: int | Sequence[int], *,
                    start: dict[int, int] | None = None, committed_only: bool = False,
                    timeout: float | None = None) -> tuple[list[Any], dict[int, int]]:
    """Like ``read_to_end``, from ``start`` (next offset per partition; a partition not in it
    reads from its beginning), and with the next offset per partition where the read
    stopped, for a tail to go on from without a gap.

    A start offset that retention already deleted reads from the oldest record left, and
    logs how many records were lost to retention."""
    c = groupless_consumer(settings, committed_only=committed_only)
    records: list[Any] = []
    try:
        await c.start()         # inside the try: a start that fails (broker away) leaks no connection
        if topic not in await c.topics():
            return records, {}
        tps = [TopicPartition(topic, p) for p in (range(partitions) if isinstance(partitions, int) else partitions)]
        c.assign(tps)
        first = await c.beginning_offsets(tps)
        start = start or {}
        for tp in tps:
            at = start.get(tp.partition, 0)
            if at < first[tp]:
                if tp.partition in start:
                    log.warning("%s[%d]: records %d..%d were deleted by retention before they were read",
                                tp.topic, tp.partition, at, first[tp] - 1)
                at = first[tp]
            c.seek(tp, at)
        end = await c.end_offsets(tps)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout

        async def behind() -> bool:
            return any([await c.position(tp) < end[tp] for tp in tps])

        while await behind() and (deadline is None or loop.time() < deadline):
            for recs in (await c.getmany(timeout_ms=200, max_records=10_000)).values():
                records.extend(recs)
        return records, {tp.partition: await c.position(tp) for tp in tps}
    finally:
        await c.stop()
